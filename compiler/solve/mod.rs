//! Plans without profiles: fused-layer configurations and row splits from nominal speeds.
//! Pure: takes values, returns a [`Plan`]. (The cost-model solver, FSS and the wild card plug
//! in here later.)

use crate::model::Model;
use anyhow::{ensure, Result};
use legion_runtime::plan::{Plan, PlanGroup, PLAN_VERSION};

/// How consecutive layers are fused into groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fusion {
    /// One group per segment between consecutive cut points (layer-wise where the model allows).
    Layerwise,
    /// A group ends at the first cut point of every lower resolution (VGG blocks, ResNet stages).
    Blocks,
    /// All splittable layers in one group.
    One,
}

/// Split `total` rows in proportion to `speeds` (largest remainder, ties to the first board).
pub fn proportional_rows(total: usize, speeds: &[f64]) -> Vec<usize> {
    let sum: f64 = speeds.iter().sum();
    let exact: Vec<f64> = speeds.iter().map(|s| total as f64 * s / sum).collect();
    let mut rows: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = total - rows.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..speeds.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        rows[i] += 1;
        left -= 1;
    }
    rows
}

/// Group boundaries (cut points, input excluded) of a fusion scheme.
pub fn fused_groups(model: &Model, fusion: Fusion) -> Vec<usize> {
    let cuts = model.split_cut_points();
    let end = model.split_end();
    let mut ends: Vec<usize> = match fusion {
        Fusion::Layerwise => cuts.iter().copied().filter(|&c| c > 0).collect(),
        Fusion::One => vec![end],
        Fusion::Blocks => {
            let mut rows = model.rows(0);
            cuts.iter()
                .copied()
                .filter(|&c| {
                    let keep = c > 0 && model.rows(c) < rows;
                    if keep {
                        rows = model.rows(c);
                    }
                    keep
                })
                .collect()
        }
    };
    if ends.last() != Some(&end) {
        ends.retain(|&c| c < end);
        ends.push(end);
    }
    ends.retain(|&c| c > 0);
    ends
}

/// A plan from group ends and board speeds.
pub fn plan_from(model: &Model, model_sha256: &str, boards: &[(String, f64)], ends: &[usize], topology: legion_runtime::plan::Topology) -> Result<Plan> {
    ensure!(!boards.is_empty(), "a plan needs at least one board");
    ensure!(model.split_end() > 0, "model {} has no row-splittable layers", model.name);
    let speeds: Vec<f64> = boards.iter().map(|b| b.1).collect();
    let mut from = 0;
    let mut groups = Vec::new();
    for &to in ends {
        groups.push(PlanGroup { from, to, rows: proportional_rows(model.rows(to), &speeds), edges_first: false });
        from = to;
    }
    let plan = Plan {
        version: PLAN_VERSION,
        model_sha256: model_sha256.into(),
        boards: boards.iter().map(|b| b.0.clone()).collect(),
        groups,
        topology,
        tail: vec![],
        deployment: None,
        lanes: vec![],
        in_flight: 1,
        fallbacks: vec![],
    };
    plan.validate(model)?;
    Ok(plan)
}

// ---------------------------------------------------------------- the cost-model solver

use crate::cost::{CostModel, GroupCost};
use legion_runtime::halo::Group;

/// Exact integer min–max row split: rows per board (summing to `total`) that minimise the
/// largest `costs[b][rows_b]`. Each `costs[b]` has `total + 1` entries, starts at 0 and must be
/// nondecreasing. A board gets zero rows when using it does not pay. Returns the rows and the
/// minimal maximum.
///
/// The optimum is one of the table's values: binary search on it, a deadline T being feasible
/// when the most rows every board can do within T add up to `total`.
pub fn min_max_rows(costs: &[Vec<f64>], total: usize) -> (Vec<usize>, f64) {
    min_max_rows_loaded(costs, total, &vec![0.0; costs.len()])
}

/// [`min_max_rows`], the rows beyond the total taken first from the boards with the most
/// `load` (work they have before this split) plus cost: among the splits with the least
/// maximum, one that evens out the boards' loads.
pub fn min_max_rows_loaded(costs: &[Vec<f64>], total: usize, load: &[f64]) -> (Vec<usize>, f64) {
    let most = |t: f64| -> Vec<usize> { costs.iter().map(|c| c.partition_point(|&x| x <= t) - 1).collect() };
    let mut cands: Vec<f64> = costs.iter().flat_map(|c| c.iter().copied()).collect();
    cands.sort_by(f64::total_cmp);
    cands.dedup();
    let (mut lo, mut hi) = (0, cands.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if most(cands[mid]).iter().sum::<usize>() >= total {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let t = cands[lo];
    let mut rows = most(t);
    let mut surplus = rows.iter().sum::<usize>() - total;
    // Take the surplus from the most loaded boards first.
    while surplus > 0 {
        let loaded = |b: usize| load[b] + costs[b][rows[b]];
        let b = (0..rows.len()).filter(|&b| rows[b] > 0).max_by(|&x, &y| loaded(x).total_cmp(&loaded(y)).then(y.cmp(&x))).unwrap();
        rows[b] -= 1;
        surplus -= 1;
    }
    let worst = rows.iter().enumerate().map(|(b, &r)| costs[b][r]).fold(0.0, f64::max);
    (rows, worst)
}

/// How rows are split inside a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Exact min–max on the predicted costs.
    MinMax,
    /// The same number of rows for every board (ignores heterogeneity).
    Equal,
    /// Every row on one board (the single-board baseline).
    One(usize),
}

/// A group's best split and its predicted latency (star).
pub fn solve_group(cm: &CostModel, group: Group, split: Split) -> GroupCost {
    let rows = split_rows(cm, group, split, None);
    cm.group_cost(group, &rows)
}

/// A group's rows: star tables, or the mesh's with whether the group reads the input and is
/// the last (`mesh: Some((first, last))`).
pub fn split_rows(cm: &CostModel, group: Group, split: Split, mesh: Option<(bool, bool)>) -> Vec<usize> {
    let h = cm.model.rows(group.to);
    match split {
        Split::MinMax => {
            let tables = match mesh {
                None => cm.cost_tables(group),
                Some((first, last)) => cm.mesh_tables(group, first, last),
            };
            min_max_rows(&tables, h).0
        }
        Split::Equal => proportional_rows(h, &vec![1.0; cm.boards.len()]),
        Split::One(b) => (0..cm.boards.len()).map(|i| if i == b { h } else { 0 }).collect(),
    }
}

/// Fused-layer configuration by dynamic programming over the cut points, in the cost model's
/// topology. `allowed(i, j)` limits the groups considered (cut indices).
pub fn flc(cm: &CostModel, split: Split, allowed: &dyn Fn(usize, usize) -> bool) -> Vec<GroupCost> {
    match cm.topology {
        legion_runtime::plan::Topology::Star => flc_star(cm, split, allowed),
        legion_runtime::plan::Topology::Mesh => flc_mesh(cm, split, allowed),
    }
}

/// The mesh's DP. A group's cost depends on how the previous group split its output (which
/// rows change boards), so the state is the last group, (i, j) in cut indices: its cost is
/// [`CostModel::mesh_step`] after the previous group (h, i). Each group's rows are its own
/// min–max ([`split_rows`] with the mesh's tables), so the DP is exact for the sum of steps;
/// the plan's latencies are then those of the simulated timeline.
pub fn flc_mesh(cm: &CostModel, split: Split, allowed: &dyn Fn(usize, usize) -> bool) -> Vec<GroupCost> {
    let k = cm.cuts.len() - 1;
    let group = |i: usize, j: usize| Group { from: cm.cuts[i], to: cm.cuts[j] };
    let mut rows: std::collections::HashMap<(usize, usize), Vec<usize>> = std::collections::HashMap::new();
    for i in 0..k {
        for j in i + 1..=k {
            if allowed(i, j) {
                rows.insert((i, j), split_rows(cm, group(i, j), split, Some((i == 0, j == k))));
            }
        }
    }
    // best[(i, j)]: the least sum of steps of a plan of the cuts 0..j whose last group is (i, j).
    let mut best: std::collections::HashMap<(usize, usize), (f64, Option<usize>)> = std::collections::HashMap::new();
    for j in 1..=k {
        for i in 0..j {
            let Some(r) = rows.get(&(i, j)) else { continue };
            let last = j == k;
            let found = if i == 0 {
                Some((cm.mesh_step(None, group(0, j), r, last), None))
            } else {
                (0..i)
                    .filter_map(|h| best.get(&(h, i)).map(|&(c, _)| (h, c)))
                    .map(|(h, c)| (c + cm.mesh_step(Some(&rows[&(h, i)]), group(i, j), r, last), Some(h)))
                    .min_by(|a, b| a.0.total_cmp(&b.0))
            };
            if let Some(f) = found {
                best.insert((i, j), f);
            }
        }
    }
    let mut at = (0..k).filter_map(|i| best.get(&(i, k)).map(|&(c, _)| (c, i))).min_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, i)| (i, k)).expect("every cut point is reachable");
    let mut chosen = vec![(group(at.0, at.1), rows[&at].clone())];
    while let Some(h) = best[&at].1 {
        at = (h, at.0);
        chosen.push((group(at.0, at.1), rows[&at].clone()));
    }
    chosen.reverse();
    cm.groups_cost(&chosen)
}

/// Mesh: the plan `groups` with each group's rows split again in order, by the same min–max
/// (the same largest band cost), the rows beyond it taken from the boards that have computed
/// the most so far ([`min_max_rows_loaded`]). Where whole rows cannot be split evenly (14 rows
/// on 6 boards), the extra rows then go to different boards in different groups instead of
/// the same ones every time: in the mesh, whose boards run on their own clocks between
/// exchanges (more so with edges first), it is a board's sum over the groups that counts.
pub fn balance_rows(cm: &CostModel, groups: &[(Group, Vec<usize>)]) -> Vec<(Group, Vec<usize>)> {
    let n = cm.boards.len();
    let mut load = vec![0.0; n];
    let last = groups.len().saturating_sub(1);
    groups
        .iter()
        .enumerate()
        .map(|(gi, (g, _))| {
            let tables = cm.mesh_tables(*g, gi == 0, gi == last);
            let (rows, _) = min_max_rows_loaded(&tables, cm.model.rows(g.to), &load);
            // A board's clock: its computing, and for the first group the wait for its input
            // band (the boards farther down the coordinator's queue start later).
            for (b, out) in legion_runtime::halo::bands(&rows).into_iter().enumerate() {
                let c = cm.band_cost(b, *g, out);
                load[b] += c.compute_s + if gi == 0 { c.send_s } else { 0.0 };
            }
            (*g, rows)
        })
        .collect()
}

/// Mesh: the groups of the plan `groups` whose boards should compute first the rows the
/// others need ([`legion_runtime::mesh::band_parts`]), greedily from the first group: one is
/// kept when the simulated timeline with it is shorter. The parts recompute their halos, so
/// a group with small bands or little to wait for is left whole. Empty for a star.
pub fn edges_first(cm: &CostModel, groups: &[(Group, Vec<usize>)]) -> Vec<Group> {
    if cm.topology != legion_runtime::plan::Topology::Mesh {
        return vec![];
    }
    let mut cm = CostModel { edges_first: vec![], ..cm.clone() };
    let mut best = cm.mesh_timeline(groups).total_s;
    for (g, _) in groups.iter().take(groups.len().saturating_sub(1)) {
        cm.edges_first.push(*g);
        let t = cm.mesh_timeline(groups).total_s;
        if t < best {
            best = t;
        } else {
            cm.edges_first.pop();
        }
    }
    cm.edges_first
}

/// The mesh's sum of steps of a plan (what [`flc_mesh`] minimises).
pub fn mesh_steps(cm: &CostModel, groups: &[(Group, Vec<usize>)]) -> f64 {
    groups.iter().enumerate().map(|(i, (g, r))| cm.mesh_step(i.checked_sub(1).map(|p| groups[p].1.as_slice()), *g, r, i + 1 == groups.len())).sum()
}

/// The star's DP: the groups that minimise the sum of predicted group latencies; the latency
/// of every allowed group is computed once.
pub fn flc_star(cm: &CostModel, split: Split, allowed: &dyn Fn(usize, usize) -> bool) -> Vec<GroupCost> {
    let k = cm.cuts.len() - 1;
    let mut best: Vec<(f64, usize, Option<GroupCost>)> = vec![(f64::INFINITY, 0, None); k + 1];
    best[0].0 = 0.0;
    for j in 1..=k {
        for i in 0..j {
            if !allowed(i, j) || !best[i].0.is_finite() {
                continue;
            }
            let g = solve_group(cm, Group { from: cm.cuts[i], to: cm.cuts[j] }, split);
            let total = best[i].0 + g.latency_s;
            if total < best[j].0 {
                best[j] = (total, i, Some(g));
            }
        }
    }
    let mut groups = Vec::new();
    let mut j = k;
    while j > 0 {
        let (_, i, g) = best[j].clone();
        groups.push(g.expect("every cut point is reachable"));
        j = i;
    }
    groups.reverse();
    groups
}

/// The wild card's candidate: the adjacent pair of groups whose merge has the best predicted
/// gain (the plan's predicted latency before minus after, the merged group with its own best
/// split). None when the plan has a single group.
pub fn wild_card_candidate(cm: &CostModel, groups: &[GroupCost]) -> Option<(usize, GroupCost)> {
    let plan: Vec<(Group, Vec<usize>)> = groups.iter().map(|g| (g.group, g.rows.clone())).collect();
    let now = cm.plan_cost(&plan);
    let mesh = cm.topology == legion_runtime::plan::Topology::Mesh;
    (0..groups.len().saturating_sub(1))
        .map(|i| {
            let g = Group { from: groups[i].group.from, to: groups[i + 1].group.to };
            let rows = split_rows(cm, g, Split::MinMax, mesh.then_some((i == 0, i + 2 == groups.len())));
            let mut merged_plan = plan.clone();
            merged_plan.splice(i..=i + 1, [(g, rows.clone())]);
            let gain = now - cm.plan_cost(&merged_plan);
            let merged = if mesh { cm.groups_cost(&merged_plan).swap_remove(i) } else { cm.group_cost(g, &rows) };
            (gain, i, merged)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, i, m)| (i, m))
}

/// A plan from solved groups.
pub fn plan_from_groups(model: &Model, model_sha256: &str, boards: &[String], groups: &[GroupCost], cm_topology: legion_runtime::plan::Topology) -> Result<Plan> {
    let plan = Plan {
        version: PLAN_VERSION,
        model_sha256: model_sha256.into(),
        boards: boards.to_vec(),
        groups: groups.iter().map(|g| PlanGroup { from: g.group.from, to: g.group.to, rows: g.rows.clone(), edges_first: false }).collect(),
        topology: cm_topology,
        tail: vec![],
        deployment: None,
        lanes: vec![],
        in_flight: 1,
        fallbacks: vec![],
    };
    plan.validate(model)?;
    Ok(plan)
}

/// The tail's Dense layers worth splitting: each candidate's features split by exact min–max
/// on [`CostModel::dense_tables`], kept when the split layer is predicted faster than the
/// layer whole on the coordinator.
pub fn tail_splits(cm: &CostModel) -> Vec<legion_runtime::plan::TailSplit> {
    tail_splits_within(cm, None).expect("without caps every layer fits")
}

/// [`tail_splits`] with at most `caps[i][b]` features of Dense layer `cm.dense[i]` on board
/// `b` (what fits its memory): a layer whose features do not fit on the coordinator whole is
/// split even where that is slower. None if some layer's features fit nowhere in all.
pub fn tail_splits_within(cm: &CostModel, caps: Option<&[Vec<usize>]>) -> Option<Vec<legion_runtime::plan::TailSplit>> {
    let c = cm.coordinator;
    let mut out = Vec::new();
    for (i, d) in cm.dense.iter().enumerate() {
        let cap = |b: usize| caps.map_or(usize::MAX, |caps| caps[i][b]);
        if (0..cm.boards.len()).map(|b| cap(b).min(d.outputs)).sum::<usize>() < d.outputs {
            return None;
        }
        let mut tables = cm.dense_tables(d);
        for (b, t) in tables.iter_mut().enumerate() {
            for x in t.iter_mut().skip(cap(b).saturating_add(1)) {
                *x = f64::INFINITY;
            }
        }
        let (cols, _) = min_max_rows(&tables, d.outputs);
        let whole_fits = cap(c) >= d.outputs;
        let faster = cm.split_cost(d, &cols) < d.e[c].at(d.outputs);
        if cols[c] < d.outputs && (faster || !whole_fits) {
            out.push(legion_runtime::plan::TailSplit { node: d.node, cols });
        }
    }
    Some(out)
}

/// A split layer's features per board (`cols`) with board `lost`'s handed over to its
/// nearest neighbours with features, in proportion to theirs (all to the one there is when
/// only one side has one). Bands stay contiguous in board order: each neighbour's band grows
/// towards the lost one's. None when no other board has features.
pub fn hand_over(cols: &[usize], lost: usize) -> Option<Vec<usize>> {
    let mut out = cols.to_vec();
    let give = std::mem::take(&mut out[lost]);
    let left = (0..lost).rev().find(|&i| out[i] > 0);
    let right = (lost + 1..out.len()).find(|&i| out[i] > 0);
    match (left, right) {
        (Some(l), Some(r)) => {
            let to_left = (give as f64 * out[l] as f64 / (out[l] + out[r]) as f64).round() as usize;
            out[l] += to_left;
            out[r] += give - to_left;
        }
        (Some(n), None) | (None, Some(n)) => out[n] += give,
        (None, None) => return None,
    }
    Some(out)
}
