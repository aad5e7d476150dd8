//! From a fleet and a model to a plan, by strategy: profile what the strategy needs (through
//! the cache), build the cost model, solve. The solving itself is pure (`solve`, `cost`); this
//! module does the profiling around it.

use crate::cost::{row_points, CostModel, Fit, GroupCost};
use crate::fleet::Fleet;
use crate::model::LoadedModel;
use crate::profile::{self, Options, Stats, Want};
use crate::solve::{self, Split};
use anyhow::Result;
use legion_runtime::halo::{bands, Group, Rows};
use legion_runtime::plan::Plan;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

pub use crate::fleet::Strategy;

/// What the wild card did.
#[derive(Clone, Debug, Serialize)]
pub struct WildCard {
    /// The two groups it considered merging (cut points).
    pub pair: (Group, Group),
    pub merged: Group,
    pub predicted_pair_s: f64,
    pub predicted_merged_s: f64,
    pub measured_pair_s: f64,
    pub measured_merged_s: f64,
    pub merged_kept: bool,
}

/// A solved plan and how it was found.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    pub strategy: Strategy,
    #[serde(skip)]
    pub plan: Plan,
    pub plan_hash: String,
    pub predicted_latency_s: f64,
    pub groups: Vec<GroupCost>,
    pub tail_s: f64,
    pub wild_card: Option<WildCard>,
    /// Prediction and DP, without profiling or the wild card's runs.
    pub solve_seconds: f64,
    pub profiling: Stats,
}

/// A centred band of r rows of h.
fn centred(h: usize, r: usize) -> Rows {
    let s = (h - r) / 2;
    Rows::new(s, s + r)
}

/// Profile the segments (E) and the tail, and build the cost model.
pub fn cost_model(fleet: &Fleet, m: &LoadedModel, opts: &Options) -> Result<(CostModel, Stats)> {
    let ir = &m.ir;
    let cuts = ir.split_cut_points();
    let mut wants = Vec::new();
    for b in 0..fleet.boards.len() {
        for k in 0..cuts.len() - 1 {
            let h = ir.rows(cuts[k + 1]);
            for r in row_points(h) {
                wants.push(Want { board: b, kind: "segment", group: Group { from: cuts[k], to: cuts[k + 1] }, out: centred(h, r) });
            }
        }
    }
    let tail = ir.split_end() < ir.output();
    if tail {
        wants.push(Want { board: fleet.coordinator, kind: "tail", group: Group { from: ir.split_end(), to: ir.output() }, out: Rows::new(0, 0) });
    }
    // The tail's Dense layers, timed as slices of their output features on every board.
    let dense_nodes = splittable_dense(ir);
    for &d in &dense_nodes {
        for b in 0..fleet.boards.len() {
            for f in row_points(ir.nodes[d].shape[1]) {
                wants.push(Want { board: b, kind: "dense", group: Group { from: d - 1, to: d }, out: Rows::new(0, f) });
            }
        }
    }
    let measured = profile::measure(fleet, m, &wants, opts)?;
    let mut points: HashMap<(usize, usize), Vec<(usize, f64)>> = HashMap::new();
    let mut tail_s = 0.0;
    let mut dense_points: HashMap<(usize, usize), Vec<(usize, f64)>> = HashMap::new();
    for (w, r) in wants.iter().zip(&measured.results) {
        if w.kind == "tail" {
            tail_s = r.median_s;
            continue;
        }
        if w.kind == "dense" {
            dense_points.entry((w.board, w.group.to)).or_default().push((w.out.len(), r.median_s));
            continue;
        }
        let k = cuts.iter().position(|&c| c == w.group.from).unwrap();
        points.entry((w.board, k)).or_default().push((w.out.len(), r.median_s));
    }
    let dense = dense_nodes
        .iter()
        .map(|&d| crate::cost::DenseCost {
            node: d,
            inputs: ir.nodes[d - 1].shape.iter().product(),
            outputs: ir.nodes[d].shape[1],
            e: (0..fleet.boards.len()).map(|b| Fit::from_points(&dense_points[&(b, d)])).collect(),
        })
        .collect();
    let boards = fleet
        .boards
        .iter()
        .enumerate()
        .map(|(b, board)| crate::cost::BoardCost {
            name: board.name.clone(),
            link: measured.links[b].link,
            e: (0..cuts.len() - 1).map(|k| Fit::from_points(&points[&(b, k)])).collect(),
        })
        .collect();
    Ok((CostModel { model: ir.clone(), cuts, boards, coordinator: fleet.coordinator, tail_s, group_e: None, topology: fleet.topology, dense }, measured.stats))
}

/// The tail's Dense layers that may be split by output features: those of its chain (each
/// reads the value just before it).
pub fn splittable_dense(ir: &legion_runtime::ir::Model) -> Vec<usize> {
    (ir.split_end() + 1..=ir.output()).filter(|&id| matches!(ir.nodes[id].op, legion_runtime::ir::Op::Dense { .. }) && ir.nodes[id].inputs == [id - 1] && ir.nodes[id].shape.len() == 2).collect()
}

/// Groups split as given, measured: each board runs its own band through the probe (as a
/// job of `kind`). Returns the cost model with these measurements in place of its fits for
/// these groups and boards: the groups' costs under it are predicted from the measured compute
/// times, transfers as the cost model has them.
fn measure_groups(fleet: &Fleet, m: &LoadedModel, cm: &CostModel, groups: &[(Group, Vec<usize>)], kind: &'static str, opts: &Options) -> Result<(CostModel, Stats)> {
    let mut wants = Vec::new();
    for (g, rows) in groups {
        for (b, out) in bands(rows).into_iter().enumerate() {
            if !out.is_empty() {
                wants.push(Want { board: b, kind, group: *g, out });
            }
        }
    }
    let measured = profile::measure(fleet, m, &wants, opts)?;
    let mut with = cm.clone();
    let fits = with.group_e.get_or_insert_with(HashMap::new);
    for (w, r) in wants.iter().zip(&measured.results) {
        // One point: at these rows, exactly the measurement.
        fits.insert((w.group, w.board), Fit::from_points(&[(w.out.len(), r.median_s)]));
    }
    Ok((with, measured.stats))
}

/// Profile the full search's groups: every contiguous group on every board at the row points.
/// Measured run time of every contiguous group on every board (by board index).
type GroupFits = HashMap<(Group, usize), Fit>;

fn fss_group_e(fleet: &Fleet, m: &LoadedModel, cm: &CostModel, opts: &Options) -> Result<(GroupFits, Stats)> {
    let mut wants = Vec::new();
    for i in 0..cm.cuts.len() {
        for j in i + 1..cm.cuts.len() {
            let g = Group { from: cm.cuts[i], to: cm.cuts[j] };
            let h = m.ir.rows(g.to);
            for b in 0..fleet.boards.len() {
                for r in row_points(h) {
                    wants.push(Want { board: b, kind: "group", group: g, out: centred(h, r) });
                }
            }
        }
    }
    let measured = profile::measure(fleet, m, &wants, opts)?;
    let mut points: HashMap<(Group, usize), Vec<(usize, f64)>> = HashMap::new();
    for (w, r) in wants.iter().zip(&measured.results) {
        points.entry((w.group, w.board)).or_default().push((w.out.len(), r.median_s));
    }
    Ok((points.into_iter().map(|(k, p)| (k, Fit::from_points(&p))).collect(), measured.stats))
}

impl Planned {
    /// Every group's rows and predicted latency, the wild card's measurements, the prediction.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, g) in self.plan.groups.iter().enumerate() {
            let pred = self.groups.get(i).map(|c| format!("  predicted {:.1} ms", c.latency_s * 1e3)).unwrap_or_default();
            s += &format!("  group {i:>2}: values {:>3}..{:<3} rows {:?}{pred}\n", g.from, g.to, g.rows);
        }
        if let Some(w) = &self.wild_card {
            s += &format!(
                "wild card: merging {}..{} and {}..{}: measured {:.1} ms merged vs {:.1} ms apart -> {}\n",
                w.pair.0.from,
                w.pair.0.to,
                w.pair.1.from,
                w.pair.1.to,
                w.measured_merged_s * 1e3,
                w.measured_pair_s * 1e3,
                if w.merged_kept { "merged" } else { "kept apart" }
            );
        }
        for t in &self.plan.tail {
            s += &format!("  tail layer {:>3} split by output features {:?}\n", t.node, t.cols);
        }
        if self.predicted_latency_s.is_finite() {
            s += &format!("predicted latency {:.1} ms (tail {:.1} ms); solved in {:.1} ms\n", self.predicted_latency_s * 1e3, self.tail_s * 1e3, self.solve_seconds * 1e3);
        }
        s
    }
}

/// Find the plan of `strategy` for the fleet.
pub fn plan(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options) -> Result<Planned> {
    let names: Vec<String> = fleet.boards.iter().map(|b| b.name.clone()).collect();
    if strategy == Strategy::Proportional {
        let boards: Vec<(String, f64)> = fleet.boards.iter().map(|b| (b.name.clone(), b.nominal_speed())).collect();
        let plan = solve::plan_from(&m.ir, &m.sha256, &boards, &solve::fused_groups(&m.ir, solve::Fusion::Blocks), fleet.topology)?;
        return Ok(Planned {
            strategy,
            plan_hash: plan.hash(),
            plan,
            predicted_latency_s: f64::NAN,
            groups: vec![],
            tail_s: f64::NAN,
            wild_card: None,
            solve_seconds: 0.0,
            profiling: Stats::default(),
        });
    }
    let (mut cm, mut stats) = cost_model(fleet, m, opts)?;
    if strategy == Strategy::Fss {
        // The full search does not use the single-segment profiles: count only its own.
        let (e, s) = fss_group_e(fleet, m, &cm, opts)?;
        stats = s;
        cm.group_e = Some(e);
    }
    let k = cm.cuts.len() - 1;
    let t = Instant::now();
    let mut groups = match strategy {
        Strategy::Legion | Strategy::Fss => solve::flc(&cm, Split::MinMax, &|_, _| true),
        Strategy::EqualSplit => solve::flc(&cm, Split::Equal, &|_, _| true),
        Strategy::Layerwise => solve::flc(&cm, Split::MinMax, &|i, j| j == i + 1),
        Strategy::OneGroup => solve::flc(&cm, Split::MinMax, &|i, j| i == 0 && j == k),
        Strategy::Single => (0..fleet.boards.len())
            .map(|b| solve::flc(&cm, Split::One(b), &|i, j| i == 0 && j == k))
            .min_by(|a, b| a.iter().map(|g| g.latency_s).sum::<f64>().total_cmp(&b.iter().map(|g| g.latency_s).sum::<f64>()))
            .expect("a fleet has boards"),
        Strategy::Proportional => unreachable!(),
    };
    let solve_seconds = t.elapsed().as_secs_f64();
    if strategy == Strategy::Fss {
        // The search picks, among its many noisy measurements, the groups whose measurement
        // happened to be fast, so their sum predicts its plan low (the winner's curse: 0.67–0.88
        // of the measured latency on the quick grid). Its chosen groups, split as chosen, are
        // measured once more, and its plan is predicted from these measurements.
        let chosen: Vec<(Group, Vec<usize>)> = groups.iter().map(|g| (g.group, g.rows.clone())).collect();
        let (measured, s) = measure_groups(fleet, m, &cm, &chosen, "fss-check", opts)?;
        stats.add(&s);
        groups = measured.groups_cost(&chosen);
    }
    let mut wild_card = None;
    if strategy == Strategy::Legion {
        if let Some((i, merged)) = solve::wild_card_candidate(&cm, &groups) {
            let pair = [(groups[i].group, groups[i].rows.clone()), (groups[i + 1].group, groups[i + 1].rows.clone()), (merged.group, merged.rows.clone())];
            let (measured, s) = measure_groups(fleet, m, &cm, &pair, "group", opts)?;
            stats.add(&s);
            let apart: Vec<f64> = measured.groups_cost(&pair[..2]).iter().map(|g| g.latency_s).collect();
            let lat = [apart[0], apart[1], measured.groups_cost(&pair[2..]).iter().map(|g| g.latency_s).sum()];
            let keep = lat[2] < lat[0] + lat[1];
            wild_card = Some(WildCard {
                pair: (groups[i].group, groups[i + 1].group),
                merged: merged.group,
                predicted_pair_s: groups[i].latency_s + groups[i + 1].latency_s,
                predicted_merged_s: merged.latency_s,
                measured_pair_s: lat[0] + lat[1],
                measured_merged_s: lat[2],
                merged_kept: keep,
            });
            if keep {
                groups.splice(i..=i + 1, [merged]);
            }
        }
    }
    // The groups' latencies in the topology (a merge changes the mesh's neighbours).
    let chosen: Vec<(Group, Vec<usize>)> = groups.iter().map(|g| (g.group, g.rows.clone())).collect();
    if strategy != Strategy::Fss {
        groups = cm.groups_cost(&chosen);
    }
    // The tail's Dense layers split where that pays (not for the single-board baseline).
    let tail = if strategy == Strategy::Single { vec![] } else { solve::tail_splits(&cm) };
    let tail_s = cm.tail_cost(&tail);
    let mut plan = solve::plan_from_groups(&m.ir, &m.sha256, &names, &groups, cm.topology)?;
    plan.tail = tail;
    plan.validate(&m.ir)?;
    Ok(Planned {
        strategy,
        plan_hash: plan.hash(),
        plan,
        predicted_latency_s: groups.iter().map(|g| g.latency_s).sum::<f64>() + tail_s,
        groups,
        tail_s,
        wild_card,
        solve_seconds,
        profiling: stats,
    })
}

/// `legionc explain`: `plan` (the compiled one if None) predicted from the cached profiles,
/// per group and board.
pub fn explain(fleet: &Fleet, m: &LoadedModel, plan: Option<&std::path::Path>, opts: &Options) -> Result<String> {
    use anyhow::Context;
    let plan = match plan {
        None => crate::codegen::compiled_plan(fleet)?,
        Some(p) => crate::codegen::plan_for(fleet, m, p)?,
    };
    let opts = Options { offline: true, quiet: true, ..opts.clone() };
    let (mut cm, _) = cost_model(fleet, m, &opts).context("the cost model needs the profiles `legionc compile` measured")?;
    cm.topology = plan.topology;
    let groups: Vec<_> = plan.groups.iter().map(|g| (g.group(), g.rows.clone())).collect();
    let text = cm.explain(&groups, &plan.tail);
    Ok(format!("fleet {}, model {}, plan {} ({} groups)\n{}", fleet.name, m.ir.name, &plan.hash()[..16], plan.groups.len(), text))
}
