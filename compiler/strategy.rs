//! From a fleet and a model to a plan, by strategy: profile what the strategy needs (through
//! the cache), build the cost model, solve. The solving itself is pure (`solve`, `cost`); this
//! module does the profiling around it.

use crate::cost::{row_points, CostModel, Fit, GroupCost};
use crate::fleet::Fleet;
use crate::model::LoadedModel;
use crate::profile::{self, Options, Stats, Want};
use crate::solve::{self, Split};
use anyhow::{Context, Result};
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
    /// Mesh, when some group computes its edges first: the plan's predicted latency with every
    /// band computed whole instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_bands_latency_s: Option<f64>,
    pub groups: Vec<GroupCost>,
    pub tail_s: f64,
    pub wild_card: Option<WildCard>,
    /// Prediction and DP, without profiling or the wild card's runs.
    pub solve_seconds: f64,
    pub profiling: Stats,
    /// Every board's predicted peak memory (None without the probe's memory measurements).
    pub memory: Option<Vec<crate::cost::BoardMemory>>,
    /// What a frame keeps each board busy with (empty without a cost model): with frames in
    /// flight, the busiest bounds the frames per second.
    pub busy: Vec<crate::cost::Busy>,
    /// A plan that deals whole frames among lanes: each lane's plan (empty: one lane, this
    /// plan).
    pub lanes: Vec<Planned>,
    /// The objective's search (`objective` other than latency): every partition of the fleet
    /// into lanes it predicted, the chosen one marked.
    pub candidates: Vec<Candidate>,
    /// The fallback plans carried (`compile`): one per worker with work, for the fleet
    /// without it; and the workers without one, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<FallbackPlanned>,
    /// Every board's predicted peak memory once it has run a fallback (the plan's weights and
    /// the fallback's slices; one plan's runnables at a time), the worst over the fallbacks
    /// (None: no fallbacks, or no memory measurements).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_after_loss: Option<Vec<crate::cost::BoardMemory>>,
}

/// A fallback plan as `compile` solved it.
#[derive(Clone, Debug, Serialize)]
pub struct FallbackPlanned {
    /// The boards it is without.
    pub lost: String,
    pub plan_hash: String,
    pub predicted_latency_s: Option<f64>,
    /// Why there is none (then the loss of this board stops the fleet).
    pub missing: Option<String>,
}

/// A partition of the fleet into lanes (each splitting the frames it is dealt over its
/// boards), with frames in flight per lane, as the objective's search predicts it.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// Each lane's boards.
    pub lanes: Vec<Vec<String>>,
    pub in_flight: usize,
    /// Frames per second: the lanes' sum.
    pub throughput_fps: f64,
    /// A frame's latency alone (the slowest lane's).
    pub latency_s: f64,
    /// A frame's latency in a stream that keeps every lane busy: per lane the larger of its
    /// latency and in_flight ÷ its frames per second (the wait behind the frames ahead); the
    /// slowest lane's.
    pub stream_latency_s: f64,
    pub chosen: bool,
}

impl Candidate {
    pub fn describe(&self) -> String {
        let lanes: Vec<String> = self.lanes.iter().map(|l| format!("[{}]", l.join(" "))).collect();
        format!(
            "{:<44} {:>2} in flight {:>7.3} frames/s  latency {:>8.1} ms alone, {:>8.1} ms in a busy stream{}",
            lanes.join(""),
            self.in_flight,
            self.throughput_fps,
            self.latency_s * 1e3,
            self.stream_latency_s * 1e3,
            if self.chosen { "  <- chosen" } else { "" }
        )
    }
}

impl Planned {
    /// Predicted frames per second with `in_flight` frames in flight (per lane; None without
    /// a cost model).
    pub fn throughput_fps(&self, in_flight: usize) -> Option<f64> {
        if !self.lanes.is_empty() {
            return self.lanes.iter().map(|l| l.throughput_fps(in_flight)).sum();
        }
        (self.predicted_latency_s.is_finite() && !self.busy.is_empty()).then(|| crate::cost::throughput_fps(self.predicted_latency_s, &self.busy, in_flight))
    }

    /// The board and what of it bounds pipelined frames: (board, "compute" | "send" |
    /// "receive", seconds per frame).
    pub fn bottleneck(&self) -> Option<(&str, &'static str, f64)> {
        let b = self.busy.iter().chain(self.lanes.iter().flat_map(|l| &l.busy)).max_by(|a, b| a.max_s().total_cmp(&b.max_s()))?;
        let what = if b.max_s() == b.compute_s { "compute" } else if b.max_s() == b.send_s { "send" } else { "receive" };
        Some((&b.board, what, b.max_s()))
    }
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
    // (seconds, kept MB, building's extra MB, a run's MB) per measured point.
    type Point = (usize, [Option<f64>; 4]);
    let mut points: HashMap<(usize, usize), Vec<Point>> = HashMap::new();
    let mut dense_points: HashMap<(usize, usize), Vec<Point>> = HashMap::new();
    let mut tail_point = None;
    let mut base_mb: Vec<Option<f64>> = vec![None; fleet.boards.len()];
    for (w, r) in wants.iter().zip(&measured.results) {
        base_mb[w.board] = base_mb[w.board].or(r.base_mb);
        let point = (w.out.len(), [Some(r.median_s), r.build_mb, r.build_extra_mb, r.work_mb]);
        match w.kind {
            "tail" => tail_point = Some((1, point.1)),
            "dense" => dense_points.entry((w.board, w.group.to)).or_default().push(point),
            _ => points.entry((w.board, cuts.iter().position(|&c| c == w.group.from).unwrap())).or_default().push(point),
        }
    }
    // The fit of one measured quantity, None if a point lacks it (a probe that does not count).
    let fit = |points: &[Point], i: usize| -> Option<Fit> { points.iter().map(|&(r, v)| v[i].map(|v| (r, v))).collect::<Option<Vec<_>>>().map(|p| Fit::from_points(&p)) };
    let mem_fit = |points: &[Point]| -> Option<crate::cost::MemFit> { Some(crate::cost::MemFit { build: fit(points, 1)?, extra: fit(points, 2)?, work: fit(points, 3)? }) };
    let tail_s = tail_point.map_or(0.0, |p| p.1[0].unwrap_or(0.0));
    let dense = dense_nodes
        .iter()
        .map(|&d| crate::cost::DenseCost {
            node: d,
            inputs: ir.nodes[d - 1].shape.iter().product(),
            outputs: ir.nodes[d].shape[1],
            e: (0..fleet.boards.len()).map(|b| fit(&dense_points[&(b, d)], 0).expect("timed")).collect(),
        })
        .collect();
    let boards = fleet
        .boards
        .iter()
        .enumerate()
        .map(|(b, board)| crate::cost::BoardCost {
            name: board.name.clone(),
            link: measured.links[b].link,
            e: (0..cuts.len() - 1).map(|k| fit(&points[&(b, k)], 0).expect("timed")).collect(),
        })
        .collect();
    let n = fleet.boards.len();
    let memory = (|| {
        let tail = match tail_point {
            Some(p) => mem_fit(&[p])?,
            None => crate::cost::MemFit { build: Fit::line(0.0, 0.0), extra: Fit::line(0.0, 0.0), work: Fit::line(0.0, 0.0) },
        };
        Some(crate::cost::MemoryCost {
            base_mb: base_mb.iter().copied().collect::<Option<Vec<f64>>>()?,
            segments: (0..n).map(|b| (0..cuts.len() - 1).map(|k| mem_fit(&points[&(b, k)])).collect::<Option<Vec<_>>>()).collect::<Option<Vec<_>>>()?,
            dense: dense_nodes.iter().map(|&d| (0..n).map(|b| mem_fit(&dense_points[&(b, d)])).collect::<Option<Vec<_>>>()).collect::<Option<Vec<_>>>()?,
            tail,
        })
    })();
    Ok((CostModel { model: ir.clone(), cuts, boards, coordinator: fleet.coordinator, tail_s, group_e: None, topology: fleet.topology, dense, memory, edges_first: vec![] }, measured.stats))
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
        if !self.lanes.is_empty() {
            s += &format!("whole frames dealt among {} lanes, up to {} in flight in each:\n", self.lanes.len(), self.plan.in_flight);
            for (i, l) in self.lanes.iter().enumerate() {
                let coordinator = l.plan.deployment.as_ref().map_or(l.plan.boards[0].clone(), |d| l.plan.boards[d.coordinator].clone());
                s += &format!("lane {i}: boards {} (coordinator {coordinator}), plan {}\n", l.plan.boards.join(", "), &l.plan_hash[..16]);
                for line in l.describe().lines() {
                    s += &format!("  {line}\n");
                }
            }
        } else if self.plan.in_flight > 1 {
            s += &format!("every frame split over the fleet, up to {} frames in flight:\n", self.plan.in_flight);
        }
        for (i, g) in self.plan.groups.iter().enumerate() {
            let pred = self.groups.get(i).map(|c| format!("  predicted {:.1} ms", c.latency_s * 1e3)).unwrap_or_default();
            let edges = if g.edges_first { "  edges first" } else { "" };
            s += &format!("  group {i:>2}: values {:>3}..{:<3} rows {:?}{pred}{edges}\n", g.from, g.to, g.rows);
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
        if let Some(m) = &self.memory {
            let peaks: Vec<String> = m.iter().map(|b| format!("{} {:.0} MB", b.board, b.peak_mb)).collect();
            s += &format!("predicted peak memory: {}\n", peaks.join(", "));
        }
        if self.predicted_latency_s.is_finite() && self.lanes.is_empty() {
            s += &format!("predicted latency {:.1} ms (tail {:.1} ms); solved in {:.1} ms\n", self.predicted_latency_s * 1e3, self.tail_s * 1e3, self.solve_seconds * 1e3);
        }
        if let Some(whole) = self.whole_bands_latency_s.filter(|_| self.lanes.is_empty()) {
            let n = self.plan.groups.iter().filter(|g| g.edges_first).count();
            s += &format!("edges first in {n} groups (each board computes the rows others need first, sends them, then the rest): predicted {:.1} ms, {:.1} ms with every band whole\n", self.predicted_latency_s * 1e3, whole * 1e3);
        }
        if let Some(m) = &self.memory_after_loss {
            let peaks: Vec<String> = m.iter().map(|b| format!("{} {:.0} MB", b.board, b.peak_mb)).collect();
            s += &format!("predicted peak memory after a loss (the fallback's slices read besides the plan's weights; one plan's runnables at a time), the worst: {}\n", peaks.join(", "));
        }
        for f in self.fallbacks.iter().filter(|_| self.lanes.is_empty()) {
            s += &match (&f.missing, f.predicted_latency_s) {
                (Some(why), _) => format!("no fallback without {}: {why}\n", f.lost),
                (None, Some(l)) => format!("fallback without {}: plan {}, predicted latency {:.1} ms\n", f.lost, &f.plan_hash[..16], l * 1e3),
                (None, None) => format!("fallback without {}: plan {}\n", f.lost, &f.plan_hash[..16]),
            };
        }
        if !self.candidates.is_empty() {
            s += &format!("the objective's candidates (lanes, frames in flight per lane: predicted frames per second and latency), {} tried:\n", self.candidates.len());
            let mut shown: Vec<&Candidate> = self.candidates.iter().collect();
            shown.sort_by(|a, b| b.throughput_fps.total_cmp(&a.throughput_fps));
            // The chosen one, the fastest few and the lowest-latency few.
            let mut by_latency = shown.clone();
            by_latency.sort_by(|a, b| a.stream_latency_s.total_cmp(&b.stream_latency_s));
            let mut list: Vec<&Candidate> = Vec::new();
            for c in shown.iter().take(4).chain(by_latency.iter().take(3)).chain(shown.iter().filter(|c| c.chosen)) {
                if !list.iter().any(|x| std::ptr::eq(*x, *c)) {
                    list.push(c);
                }
            }
            list.sort_by(|a, b| b.throughput_fps.total_cmp(&a.throughput_fps));
            for c in list {
                s += &format!("  {}\n", c.describe());
            }
        }
        if !self.lanes.is_empty() && self.predicted_latency_s.is_finite() {
            s += &format!("predicted latency {:.1} ms (the slowest lane); solved in {:.1} ms\n", self.predicted_latency_s * 1e3, self.solve_seconds * 1e3);
        }
        if let (Some(one), Some((board, what, per_frame))) = (self.throughput_fps(1), self.bottleneck()) {
            s += &format!(
                "predicted throughput {one:.2} frames/s with one frame in flight, {:.2} with frames pipelined (`run --in-flight 2`: {:.2}; bound: {board}'s {what}, {:.1} ms a frame)\n",
                self.throughput_fps(usize::MAX / 2).unwrap_or(one),
                self.throughput_fps(2).unwrap_or(one),
                per_frame * 1e3
            );
        }
        s
    }
}

/// Find the plan of `strategy` for the fleet.
pub fn plan(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options) -> Result<Planned> {
    plan_with(fleet, m, strategy, opts, true)
}

/// [`plan`], with or without the wild card's measurements (the objective's search predicts its
/// candidates' lanes without them).
fn plan_with(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options, wild: bool) -> Result<Planned> {
    let names: Vec<String> = fleet.boards.iter().map(|b| b.name.clone()).collect();
    if strategy == Strategy::Proportional {
        let boards: Vec<(String, f64)> = fleet.boards.iter().map(|b| (b.name.clone(), b.nominal_speed())).collect();
        let plan = fleet.deployed(&solve::plan_from(&m.ir, &m.sha256, &boards, &solve::fused_groups(&m.ir, solve::Fusion::Blocks), fleet.topology)?);
        return Ok(Planned {
            strategy,
            plan_hash: plan.hash(),
            plan,
            predicted_latency_s: f64::NAN,
            whole_bands_latency_s: None,
            groups: vec![],
            tail_s: f64::NAN,
            wild_card: None,
            solve_seconds: 0.0,
            profiling: Stats::default(),
            busy: vec![],
            lanes: vec![],
            candidates: vec![],
            fallbacks: vec![],
            memory_after_loss: None,
            memory: None,
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
    if strategy == Strategy::Legion && wild {
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
    let mut chosen: Vec<(Group, Vec<usize>)> = groups.iter().map(|g| (g.group, g.rows.clone())).collect();
    let t = Instant::now();
    // Mesh: the same groups with their uneven rows spread over the boards, where the plan
    // (with edges first where it pays) is then predicted faster.
    if strategy == Strategy::Legion && cm.topology == legion_runtime::plan::Topology::Mesh {
        let balanced = solve::balance_rows(&cm, &chosen);
        let predicted = |groups: &[(Group, Vec<usize>)]| {
            let edges_first = if fleet.edges_first { solve::edges_first(&cm, groups) } else { vec![] };
            CostModel { edges_first, ..cm.clone() }.mesh_timeline(groups).total_s
        };
        if balanced != chosen && predicted(&balanced) < predicted(&chosen) {
            chosen = balanced;
        }
    }
    if strategy != Strategy::Fss {
        groups = cm.groups_cost(&chosen);
    }
    // The tail's Dense layers split where that pays (not for the single-board baseline), or
    // where the boards' memory asks for it.
    let mut tail = if strategy == Strategy::Single { vec![] } else { solve::tail_splits(&cm) };
    // Mesh: the groups whose boards compute first the rows others need, where that is
    // predicted faster and (with memory measured) fits the boards as well as the plan without.
    let mut whole_bands_latency_s = None;
    if strategy != Strategy::Fss && fleet.edges_first {
        cm.edges_first = solve::edges_first(&cm, &chosen);
        if !cm.edges_first.is_empty() {
            let limits: Vec<Option<f64>> = fleet.boards.iter().map(|b| b.memory_limit_mb()).collect();
            let over = |cm: &CostModel| cm.memory(&chosen, &tail).and_then(|m| crate::cost::overflow(&m, &limits)).map_or(0.0, |x| x.1);
            if over(&cm) > 0.0 && over(&CostModel { edges_first: vec![], ..cm.clone() }) < over(&cm) {
                cm.edges_first.clear();
            }
            if !cm.edges_first.is_empty() {
                whole_bands_latency_s = Some(groups.iter().map(|g| g.latency_s).sum::<f64>());
            }
            groups = cm.groups_cost(&chosen);
        }
    }
    let solve_seconds = solve_seconds + t.elapsed().as_secs_f64();
    let memory = match cm.memory(&chosen, &tail) {
        Some(memory) => Some(fit_memory(fleet, &cm, &chosen, &mut tail, memory, strategy)?),
        None => None,
    };
    let tail_s = cm.plan_tail_cost(&chosen, &tail);
    let mut plan = solve::plan_from_groups(&m.ir, &m.sha256, &names, &groups, cm.topology)?;
    for g in &mut plan.groups {
        g.edges_first = cm.edges_first.contains(&g.group());
    }
    plan.tail = tail;
    let plan = fleet.deployed(&plan);
    plan.validate(&m.ir)?;
    let busy = cm.busy(&chosen, &plan.tail);
    Ok(Planned {
        strategy,
        plan_hash: plan.hash(),
        plan,
        predicted_latency_s: groups.iter().map(|g| g.latency_s).sum::<f64>() + tail_s,
        whole_bands_latency_s: whole_bands_latency_s.map(|w| w + tail_s),
        busy,
        lanes: vec![],
        candidates: vec![],
        fallbacks: vec![],
        memory_after_loss: None,
        groups,
        tail_s,
        wild_card,
        solve_seconds,
        profiling: stats,
        memory,
    })
}

// ---------------------------------------------------------------- the objective

/// The partitions of boards 0..n into lanes (bitmasks) the objective's search considers:
/// every set partition up to 6 boards (203 for 6), beyond that the partitions into runs of
/// consecutive boards (2^(n-1)).
pub fn partitions(n: usize) -> Vec<Vec<u32>> {
    let mut all = Vec::new();
    if n == 0 {
        return all;
    }
    if n > 6 {
        for cuts in 0u32..(1 << (n - 1)) {
            let mut lanes = Vec::new();
            let mut lane = 1u32;
            for b in 1..n {
                if cuts & (1 << (b - 1)) != 0 {
                    lanes.push(lane);
                    lane = 0;
                }
                lane |= 1 << b;
            }
            lanes.push(lane);
            all.push(lanes);
        }
        return all;
    }
    // Restricted growth strings: board b joins one of the lanes so far or opens a new one.
    fn grow(b: usize, n: usize, lanes: &mut Vec<u32>, all: &mut Vec<Vec<u32>>) {
        if b == n {
            all.push(lanes.clone());
            return;
        }
        for i in 0..lanes.len() {
            lanes[i] |= 1 << b;
            grow(b + 1, n, lanes, all);
            lanes[i] &= !(1 << b);
        }
        lanes.push(1 << b);
        grow(b + 1, n, lanes, all);
        lanes.pop();
    }
    grow(0, n, &mut Vec::new(), &mut all);
    all
}

/// The frames in flight per lane the search tries.
const IN_FLIGHT_TRIED: [usize; 2] = [1, 2];

/// Pick among predicted candidates by the objective (pure): `latency`: the lowest latency in
/// a busy stream; `throughput`: the most frames per second (within 1 %, the lower latency);
/// `latency_at_fps`: the lowest latency among those reaching the rate. None if no candidate
/// reaches the rate.
pub fn choose(candidates: &[Candidate], objective: crate::fleet::Objective) -> Option<usize> {
    use crate::fleet::Objective;
    let by_latency = |a: &&(usize, &Candidate), b: &&(usize, &Candidate)| {
        a.1.stream_latency_s.total_cmp(&b.1.stream_latency_s).then(b.1.throughput_fps.total_cmp(&a.1.throughput_fps)).then(a.1.lanes.len().cmp(&b.1.lanes.len())).then(a.1.in_flight.cmp(&b.1.in_flight))
    };
    let all: Vec<(usize, &Candidate)> = candidates.iter().enumerate().collect();
    match objective {
        Objective::Latency => all.iter().min_by(by_latency).map(|c| c.0),
        Objective::Throughput => {
            let best = all.iter().map(|c| c.1.throughput_fps).fold(0.0, f64::max);
            all.iter().filter(|c| c.1.throughput_fps >= 0.99 * best).min_by(by_latency).map(|c| c.0)
        }
        Objective::LatencyAtFps(r) => all.iter().filter(|c| c.1.throughput_fps >= r).min_by(by_latency).map(|c| c.0),
    }
}

/// Up to `count` candidates to measure, along the predicted front of frames per second
/// against latency in a busy stream (pure): first the `latency` and the `throughput`
/// objectives' choices, then the candidates no other beats on both (ties: the first), evenly
/// spread from the lowest latency to the most frames per second. Each with the objectives
/// that choose it; in order of predicted frames per second.
pub fn frontier(candidates: &[Candidate], count: usize) -> Vec<(usize, Vec<String>)> {
    use crate::fleet::Objective;
    let mut picks: Vec<(usize, Vec<String>)> = Vec::new();
    for (objective, name) in [(Objective::Latency, "latency"), (Objective::Throughput, "throughput")] {
        if let Some(i) = choose(candidates, objective) {
            match picks.iter_mut().find(|p| p.0 == i) {
                Some(p) => p.1.push(name.into()),
                None => picks.push((i, vec![name.into()])),
            }
        }
    }
    picks.truncate(count);
    let beats = |a: &Candidate, b: &Candidate| {
        a.throughput_fps >= b.throughput_fps && a.stream_latency_s <= b.stream_latency_s && (a.throughput_fps > b.throughput_fps || a.stream_latency_s < b.stream_latency_s)
    };
    let mut front: Vec<usize> = (0..candidates.len())
        .filter(|&i| !candidates.iter().any(|d| beats(d, &candidates[i])))
        .filter(|&i| !(0..i).any(|j| candidates[j].throughput_fps == candidates[i].throughput_fps && candidates[j].stream_latency_s == candidates[i].stream_latency_s))
        .collect();
    front.sort_by(|&a, &b| candidates[a].throughput_fps.total_cmp(&candidates[b].throughput_fps));
    front.retain(|i| !picks.iter().any(|p| p.0 == *i));
    let more = count.saturating_sub(picks.len()).min(front.len());
    for j in 0..more {
        // Evenly spaced over the front's remaining points, both ends included.
        let at = if more == 1 { front.len() / 2 } else { j * (front.len() - 1) / (more - 1) };
        picks.push((front[at], vec![]));
    }
    picks.sort_by(|a, b| candidates[a.0].throughput_fps.total_cmp(&candidates[b.0].throughput_fps));
    picks
}

/// Every candidate partition of the fleet into lanes, predicted: each lane planned by
/// `strategy` on its sub-fleet (without the wild card; profiles through the cache, quietly),
/// with 1 and 2 frames in flight per lane. Lanes that cannot be planned (memory, profiles
/// missing offline) rule out their partitions; the reasons are returned.
pub fn candidates(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options) -> Result<(Vec<Candidate>, Vec<String>)> {
    let n = fleet.boards.len();
    let quiet = Options { quiet: true, ..opts.clone() };
    let mut lanes: HashMap<u32, Option<Planned>> = HashMap::new();
    let mut failures = Vec::new();
    let mut out = Vec::new();
    for partition in partitions(n) {
        let mut planned = Vec::new();
        for &mask in &partition {
            if !lanes.contains_key(&mask) {
                let members: Vec<usize> = (0..n).filter(|b| mask & (1 << b) != 0).collect();
                let sub = fleet.lane(&members);
                let p = match plan_with(&sub, m, strategy, &quiet, false) {
                    Ok(p) => Some(p),
                    Err(e) if crate::profile::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) => return Err(e),
                    Err(e) => {
                        let names: Vec<&str> = sub.boards.iter().map(|b| b.name.as_str()).collect();
                        failures.push(format!("lane [{}]: {}", names.join(" "), format!("{e:#}").lines().next().unwrap_or_default()));
                        None
                    }
                };
                lanes.insert(mask, p);
            }
            planned.push((mask, lanes[&mask].clone()));
        }
        if planned.iter().any(|p| p.1.is_none()) {
            continue;
        }
        for k in IN_FLIGHT_TRIED {
            let lanes_fps: Vec<(f64, f64)> = planned.iter().map(|(_, p)| {
                let p = p.as_ref().expect("checked");
                (p.throughput_fps(k).unwrap_or(1.0 / p.predicted_latency_s), p.predicted_latency_s)
            }).collect();
            if lanes_fps.iter().any(|(t, l)| !(t.is_finite() && l.is_finite())) {
                continue;
            }
            out.push(Candidate {
                lanes: planned.iter().map(|(mask, _)| (0..n).filter(|b| mask & (1 << b) != 0).map(|b| fleet.boards[b].name.clone()).collect()).collect(),
                in_flight: k,
                throughput_fps: lanes_fps.iter().map(|x| x.0).sum(),
                latency_s: lanes_fps.iter().map(|x| x.1).fold(0.0, f64::max),
                stream_latency_s: lanes_fps.iter().map(|&(t, l)| l.max(k as f64 / t)).fold(0.0, f64::max),
                chosen: false,
            });
        }
    }
    Ok((out, failures))
}

/// The plan for the fleet's objective. `latency`: [`plan`] (every frame split over every
/// board, one frame in flight). Otherwise every partition of the fleet into lanes is predicted
/// ([`candidates`]), the objective picks one, and its lanes are planned again with the wild
/// card: one lane gives a plan of the whole fleet with frames in flight; several give a plan
/// that deals whole frames among them.
pub fn plan_objective(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options) -> Result<Planned> {
    let mut planned = plan_for_objective(fleet, m, strategy, opts)?;
    if planned.lanes.is_empty() {
        planned.fallbacks = with_fallbacks(fleet, m, strategy, opts, &mut planned.plan)?;
        // A board's model file, and what it loads, also hold the layers it computes only in a
        // fallback (the split layers' fallback slices are read on a loss).
        if let Some(memory) = planned.memory.as_mut() {
            for (b, x) in memory.iter_mut().enumerate() {
                let extra = fallback_only_mb(&planned.plan, &m.ir, b, b == fleet.coordinator);
                x.weights_mb += extra;
                x.peak_mb += extra;
            }
        }
        if let Some(main) = planned.memory.clone() {
            planned.memory_after_loss = memory_after_loss(fleet, m, opts, &planned.plan, &main)?;
        }
    } else {
        for (lane, (sub, _)) in planned.lanes.iter_mut().zip(fleet.lanes(&planned.plan)?) {
            lane.fallbacks = with_fallbacks(&sub, m, strategy, opts, &mut lane.plan)?;
            lane.plan_hash = lane.plan.hash();
            planned.fallbacks.extend(lane.fallbacks.iter().cloned());
        }
        planned.plan.lanes = planned.lanes.iter().map(|l| l.plan.clone()).collect();
    }
    planned.plan.validate(&m.ir)?;
    planned.plan_hash = planned.plan.hash();
    Ok(planned)
}

/// Solve and add to `plan` (made for `fleet`, deployed) its fallbacks: for every set of up to
/// `fleet.fallbacks` workers with work (singles first), the plan for the fleet without them,
/// from the same cached profiles (no measurement: the full search falls back on legion's
/// single-layer model, and no wild card is played). The groups and rows are solved for the
/// smaller fleet; the tail keeps the plan's split layers, the lost boards' features handed
/// over to their neighbours ([`solve::hand_over`]), so that a board holds the weights of its
/// own slice and of a part of its neighbours' only. A loss whose fallback cannot be solved is
/// reported without one.
pub fn with_fallbacks(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options, plan: &mut Plan) -> Result<Vec<FallbackPlanned>> {
    let strategy = match strategy {
        Strategy::Fss => Strategy::Legion,
        s => s,
    };
    plan.fallbacks.clear();
    let n = fleet.boards.len();
    let works = |b: usize| plan.groups.iter().any(|g| g.rows[b] > 0) || plan.tail.iter().any(|t| t.cols[b] > 0);
    let workers: Vec<usize> = (0..n).filter(|&b| b != fleet.coordinator && works(b)).collect();
    let mut losses: Vec<Vec<usize>> = workers.iter().map(|&b| vec![b]).collect();
    if fleet.fallbacks >= 2 {
        for (i, &a) in workers.iter().enumerate() {
            losses.extend(workers[i + 1..].iter().map(|&b| vec![a, b]));
        }
    }
    if fleet.fallbacks == 0 {
        losses.clear();
    }
    let mut report = Vec::new();
    let mut fallbacks = Vec::new();
    for lost in losses {
        let name = lost.iter().map(|&b| fleet.boards[b].name.clone()).collect::<Vec<_>>().join(", ");
        let fallback = (|| -> Result<(legion_runtime::plan::Fallback, f64)> {
            let sub = fleet.lane(&(0..n).filter(|i| !lost.contains(i)).collect::<Vec<_>>());
            let p = plan_with(&sub, m, strategy, opts, false)?;
            let widen = |v: &[usize]| {
                let mut v = v.to_vec();
                for &b in &lost {
                    v.insert(b, 0);
                }
                v
            };
            let mut tail = plan.tail.clone();
            for t in &mut tail {
                for &b in &lost {
                    t.cols = solve::hand_over(&t.cols, b).with_context(|| format!("no other board has features of tail layer {}", t.node))?;
                }
            }
            let groups = p.plan.groups.iter().map(|g| legion_runtime::plan::PlanGroup { rows: widen(&g.rows), ..g.clone() }).collect();
            Ok((legion_runtime::plan::Fallback { lost: lost.clone(), groups, tail }, p.predicted_latency_s))
        })();
        match fallback {
            Ok((f, latency)) => {
                fallbacks.push(f);
                report.push(FallbackPlanned { lost: name, plan_hash: String::new(), predicted_latency_s: latency.is_finite().then_some(latency), missing: None });
            }
            Err(e) => report.push(FallbackPlanned { lost: name, plan_hash: String::new(), predicted_latency_s: None, missing: Some(format!("{e:#}")) }),
        }
    }
    plan.fallbacks = fallbacks;
    // Each fallback predicted as it runs: on the whole fleet's cost model, with its tail.
    let cm = if strategy == Strategy::Proportional || plan.fallbacks.is_empty() { None } else { Some(cost_model(fleet, m, opts)?.0) };
    for (r, p) in report.iter_mut().filter(|r| r.missing.is_none()).zip(plan.variants().into_iter().skip(1)) {
        r.plan_hash = p.hash();
        if let Some(cm) = &cm {
            r.predicted_latency_s = Some(predicted_latency(&cm.for_plan(&p), &p));
        }
    }
    plan.validate(&m.ir).context("the plan with its fallbacks")?;
    Ok(report)
}

/// Every board's predicted peak memory once it has run a fallback, the worst over the
/// fallbacks: a board keeps the plan's weights and reads the fallback's slices of the split
/// layers from its model file, and holds tract's runnables of one plan at a time (it drops the
/// plan's before it builds the fallback's); None without fallbacks or memory measurements.
pub fn memory_after_loss(fleet: &Fleet, m: &LoadedModel, opts: &Options, plan: &Plan, main: &[crate::cost::BoardMemory]) -> Result<Option<Vec<crate::cost::BoardMemory>>> {
    if plan.fallbacks.is_empty() || plan.lanes.len() > 1 {
        return Ok(None);
    }
    let (cm, _) = cost_model(fleet, m, opts)?;
    let mut worst: Vec<crate::cost::BoardMemory> = main.to_vec();
    for (f, p) in plan.fallbacks.iter().zip(plan.variants().into_iter().skip(1)) {
        let groups: Vec<(Group, Vec<usize>)> = p.groups.iter().map(|g| (g.group(), g.rows.clone())).collect();
        let Some(fm) = cm.for_plan(&p).memory(&groups, &p.tail) else { return Ok(None) };
        for (b, (a, x)) in main.iter().zip(&fm).enumerate().filter(|(b, _)| !f.lost.contains(b)) {
            let weights = a.weights_mb + slices_mb(&p, &m.ir, b);
            let (built, extra, work) = (a.built_mb.max(x.built_mb), a.build_extra_mb.max(x.build_extra_mb), a.work_mb.max(x.work_mb));
            let peak = a.base_mb + weights + built + extra + work;
            if peak > worst[b].peak_mb {
                worst[b] = crate::cost::BoardMemory { weights_mb: weights, built_mb: built, build_extra_mb: extra, work_mb: work, peak_mb: peak, ..a.clone() };
            }
        }
    }
    Ok(Some(worst))
}

/// The weights of the layers (but split tail layers) board `b` computes in a fallback of
/// `plan` and not in the plan itself, MB.
fn fallback_only_mb(plan: &Plan, model: &legion_runtime::ir::Model, b: usize, coordinator: bool) -> f64 {
    let alone = Plan { fallbacks: vec![], ..plan.clone() };
    let bytes: usize = model
        .nodes
        .iter()
        .enumerate()
        .filter(|(id, _)| !plan.tail.iter().any(|t| t.node == *id) && plan.board_needs(b, coordinator, *id) && !alone.board_needs(b, coordinator, *id))
        .map(|(_, n)| n.op.weights().iter().map(|w| w.volume() * 4).sum::<usize>())
        .sum();
    bytes as f64 / 1e6
}

/// The weights of board `b`'s slices of `plan`'s split tail layers, MB.
fn slices_mb(plan: &Plan, model: &legion_runtime::ir::Model, b: usize) -> f64 {
    plan.tail
        .iter()
        .map(|t| {
            let n = &model.nodes[t.node];
            let whole: usize = n.op.weights().iter().map(|w| w.volume() * 4).sum();
            (whole * t.cols[b] / n.shape[1].max(1)) as f64 / 1e6
        })
        .sum()
}

fn plan_for_objective(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options) -> Result<Planned> {
    use crate::fleet::Objective;
    let objective = fleet.objective;
    if objective == Objective::Latency || strategy == Strategy::Proportional {
        return plan(fleet, m, strategy, opts);
    }
    let t = Instant::now();
    let (mut candidates, failures) = candidates(fleet, m, strategy, opts)?;
    let search_s = t.elapsed().as_secs_f64();
    let Some(i) = choose(&candidates, objective) else {
        let best = candidates.iter().map(|c| c.throughput_fps).fold(0.0, f64::max);
        let why = if failures.is_empty() { String::new() } else { format!("; lanes that could not be planned: {}", failures.join("; ")) };
        anyhow::bail!("no plan of fleet {} reaches objective {objective}: the most frames per second predicted is {best:.3} ({} partitions of its boards into lanes tried){why}. Lower the rate, or add boards", fleet.name, candidates.len());
    };
    candidates[i].chosen = true;
    let mut planned = plan_candidate(fleet, m, strategy, opts, &candidates[i])?;
    planned.solve_seconds += search_s;
    planned.candidates = candidates;
    Ok(planned)
}

/// The plan of one candidate of the objective's search: one lane, the fleet's plan with the
/// candidate's frames in flight; several, each lane planned (with the wild card) on its
/// sub-fleet, frames dealt among them. Deployed and validated; without fallbacks.
pub fn plan_candidate(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, opts: &Options, chosen: &Candidate) -> Result<Planned> {
    let index_of = |name: &String| fleet.boards.iter().position(|b| &b.name == name).expect("a board of the fleet");
    let mut planned = if chosen.lanes.len() == 1 {
        let mut p = plan(fleet, m, strategy, opts)?;
        p.plan.in_flight = chosen.in_flight;
        p
    } else {
        let mut lanes = Vec::new();
        for lane in &chosen.lanes {
            let members: Vec<usize> = lane.iter().map(index_of).collect();
            let sub = fleet.lane(&members);
            let mut p = plan(&sub, m, strategy, opts).with_context(|| format!("lane [{}]", lane.join(" ")))?;
            p.plan = sub.deployed(&p.plan);
            lanes.push(p);
        }
        let mut stats = Stats::default();
        for l in &lanes {
            stats.add(&l.profiling);
        }
        let mut memory: Vec<crate::cost::BoardMemory> = lanes.iter().filter_map(|l| l.memory.clone()).flatten().collect();
        memory.sort_by_key(|b| fleet.boards.iter().position(|x| x.name == b.board));
        let plan = Plan {
            version: legion_runtime::plan::PLAN_VERSION,
            model_sha256: m.sha256.clone(),
            boards: fleet.boards.iter().map(|b| b.name.clone()).collect(),
            groups: vec![],
            topology: fleet.topology,
            tail: vec![],
            deployment: None,
            lanes: lanes.iter().map(|l| l.plan.clone()).collect(),
            in_flight: chosen.in_flight,
            fallbacks: vec![],
        };
        Planned {
            strategy,
            plan_hash: String::new(),
            plan,
            predicted_latency_s: lanes.iter().map(|l| l.predicted_latency_s).fold(0.0, f64::max),
            whole_bands_latency_s: None,
            groups: vec![],
            tail_s: f64::NAN,
            wild_card: None,
            solve_seconds: lanes.iter().map(|l| l.solve_seconds).sum(),
            profiling: stats,
            memory: (memory.len() == fleet.boards.len()).then_some(memory),
            busy: vec![],
            lanes,
            candidates: vec![],
            fallbacks: vec![],
            memory_after_loss: None,
        }
    };
    planned.plan = fleet.deployed(&planned.plan);
    planned.plan.validate(&m.ir)?;
    planned.plan_hash = planned.plan.hash();
    Ok(planned)
}

/// Make the plan fit every board's memory:/// Make the plan fit every board's memory: when a board's predicted peak exceeds its limit,
/// the tail's Dense layers are split within what each board can hold (the coordinator, which
/// holds the tail, is the usual one short). Returns the plan's predicted memory, or an error
/// naming the board that no plan fits and by how much.
fn fit_memory(fleet: &Fleet, cm: &CostModel, groups: &[(Group, Vec<usize>)], tail: &mut Vec<legion_runtime::plan::TailSplit>, memory: Vec<crate::cost::BoardMemory>, strategy: Strategy) -> Result<Vec<crate::cost::BoardMemory>> {
    let mut limits: Vec<Option<f64>> = fleet.boards.iter().map(|b| b.memory_limit_mb()).collect();
    let mut memory = memory;
    // A board over its limit after a split within the caps (the caps are a linear estimate)
    // has its limit lowered by what it is over, a few times.
    for _ in 0..4 {
        if crate::cost::overflow(&memory, &limits).is_none() || strategy == Strategy::Single || cm.dense.is_empty() {
            break;
        }
        let caps = cm.dense_caps(groups, &limits).expect("memory measured");
        match solve::tail_splits_within(cm, Some(&caps)) {
            Some(t) => *tail = t,
            None => break,
        }
        memory = cm.memory(groups, tail).expect("memory measured");
        if let Some((b, short)) = crate::cost::overflow(&memory, &limits) {
            limits[b] = limits[b].map(|l| l - short);
        }
    }
    let limits: Vec<Option<f64>> = fleet.boards.iter().map(|b| b.memory_limit_mb()).collect();
    if let Some((b, short)) = crate::cost::overflow(&memory, &limits) {
        let board = &fleet.boards[b];
        let m = &memory[b];
        let reserve = board.target.as_ref().map_or(0.0, |t| t.memory_reserve_mb);
        let what = if b == fleet.coordinator && !cm.dense.is_empty() { ", the tail's Dense layers spread over the fleet as far as its boards' memory allows" } else { "" };
        anyhow::bail!(
            "no plan fits board '{}': its predicted peak is {:.0} MB ({:.0} MB of weights, {:.0} MB in tract's runnables, {:.0} MB for a run, {:.0} MB for the process{what}), and it has {:.0} MB less a {:.0} MB reserve: {:.0} MB short. Give it more memory (memory_mb), remove it from the fleet, or make another board the coordinator",
            board.name,
            m.peak_mb,
            m.weights_mb,
            m.built_mb + m.build_extra_mb,
            m.work_mb,
            m.base_mb,
            board.memory_mb.unwrap_or(f64::NAN),
            reserve,
            short
        );
    }
    Ok(memory)
}

/// `legionc explain`: `plan` (the compiled one if None) predicted from the cached profiles,
/// per group and board.
pub fn explain(fleet: &Fleet, m: &LoadedModel, plan: Option<&std::path::Path>, opts: &Options) -> Result<String> {
    let plan = match plan {
        None => crate::codegen::compiled_plan(fleet)?,
        Some(p) => crate::codegen::plan_for(fleet, m, p)?,
    };
    let opts = Options { offline: true, quiet: true, ..opts.clone() };
    let mut text = String::new();
    let lanes = fleet.lanes(&plan)?;
    if lanes.len() > 1 {
        text += &format!("whole frames dealt among {} lanes, up to {} in flight in each\n", lanes.len(), plan.in_flight);
    } else if plan.in_flight > 1 {
        text += &format!("every frame split over the fleet, up to {} frames in flight\n", plan.in_flight);
    }
    for (i, (sub, lane)) in lanes.iter().enumerate() {
        if lanes.len() > 1 {
            let names: Vec<&str> = sub.boards.iter().map(|b| b.name.as_str()).collect();
            text += &format!("lane {i}: boards {} (coordinator {}), plan {}\n", names.join(", "), sub.coordinator().name, &lane.hash()[..16]);
        }
        text += &explain_lane(sub, m, lane, &opts)?;
    }
    // The objective's alternatives, from the cached profiles.
    let (mut alternatives, missing) = candidates(fleet, m, fleet.strategy, &opts)?;
    let ours: Vec<Vec<String>> = lanes.iter().map(|(sub, _)| sub.boards.iter().map(|b| b.name.clone()).collect()).collect();
    for c in &mut alternatives {
        c.chosen = c.lanes == ours && c.in_flight == plan.in_flight;
    }
    alternatives.sort_by(|a, b| b.throughput_fps.total_cmp(&a.throughput_fps));
    text += &format!("the alternatives (lanes, frames in flight per lane: predicted frames per second and latency; objective of fleet.yaml: {}):\n", fleet.objective);
    for c in &alternatives {
        text += &format!("  {}\n", c.describe().replace("<- chosen", "<- this plan"));
    }
    if !missing.is_empty() {
        text += &format!("  not predicted ({} lanes lack profiles: `legionc compile --objective throughput` measures them), e.g. {}\n", missing.len(), missing[0]);
    }
    Ok(format!("fleet {}, model {}, plan {} ({})\n{}", fleet.name, m.ir.name, &plan.hash()[..16], if lanes.len() > 1 { format!("{} lanes", lanes.len()) } else { format!("{} groups", plan.groups.len()) }, text))
}

/// One lane's plan explained: its cost model's prediction and every board's memory.
fn explain_lane(fleet: &Fleet, m: &LoadedModel, plan: &Plan, opts: &Options) -> Result<String> {
    let (mut cm, _) = cost_model(fleet, m, opts).context("the cost model needs the profiles `legionc compile` measured")?;
    cm.topology = plan.topology;
    let cm = cm.for_plan(plan);
    let groups: Vec<_> = plan.groups.iter().map(|g| (g.group(), g.rows.clone())).collect();
    let mut text = cm.explain(&groups, &plan.tail);
    let busy = cm.busy(&groups, &plan.tail);
    let latency = predicted_latency(&cm, plan);
    text += &format!(
        "predicted throughput {:.3} frames/s with one frame in flight, {:.3} with two, {:.3} pipelined without bound\n",
        crate::cost::throughput_fps(latency, &busy, 1),
        crate::cost::throughput_fps(latency, &busy, 2),
        crate::cost::throughput_fps(latency, &busy, usize::MAX / 2)
    );
    if let Some(memory) = cm.memory(&groups, &plan.tail) {
        let measured = measured_memory(fleet, &plan.hash());
        text += "memory per board (predicted peak: process, weights, tract's runnables, a run; measured by the last `legionc run` of this plan):\n";
        for (b, mb) in memory.iter().enumerate() {
            let seen = measured.as_ref().and_then(|m| m.get(&mb.board)).map_or("not run yet".to_string(), |x| format!("measured {x:.0} MB"));
            let limit = fleet.boards[b].memory_limit_mb().map_or(String::new(), |l| format!(", limit {l:.0} MB"));
            text += &format!(
                "  {:<14} {:.0} + {:.0} + {:.0} + {:.0} = predicted {:.0} MB; {seen}{limit}\n",
                mb.board,
                mb.base_mb,
                mb.weights_mb,
                mb.built_mb + mb.build_extra_mb,
                mb.work_mb,
                mb.peak_mb
            );
        }
    }
    for (f, p) in plan.fallbacks.iter().zip(plan.variants().into_iter().skip(1)) {
        let lost: Vec<&str> = f.lost.iter().map(|&b| plan.boards[b].as_str()).collect();
        let rows: Vec<String> = p.groups.iter().map(|g| format!("{:?}", g.rows)).collect();
        text += &format!("fallback without {} (plan {}): predicted latency {:.1} ms; rows {}\n", lost.join(", "), &p.hash()[..16], predicted_latency(&cm.for_plan(&p), &p) * 1e3, rows.join(" "));
    }
    Ok(text)
}

/// `plan`'s predicted latency under `cm` (its groups, then its tail).
fn predicted_latency(cm: &CostModel, plan: &Plan) -> f64 {
    let groups: Vec<_> = plan.groups.iter().map(|g| (g.group(), g.rows.clone())).collect();
    cm.groups_cost(&groups).iter().map(|g| g.latency_s).sum::<f64>() + cm.plan_tail_cost(&groups, &plan.tail)
}

/// Where `legionc run` keeps the boards' measured peak memory for `explain`.
fn measured_memory_path(fleet: &Fleet) -> std::path::PathBuf {
    fleet.output.join("run").join("memory.json")
}

/// Keep the boards' peak resident memory measured running plan `plan_hash` (MB by board).
pub fn record_measured_memory(fleet: &Fleet, plan_hash: &str, peaks: &[(String, f64)]) -> Result<()> {
    let path = measured_memory_path(fleet);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let peaks: std::collections::BTreeMap<&str, f64> = peaks.iter().map(|(b, mb)| (b.as_str(), *mb)).collect();
    crate::write_atomic(&path, &serde_json::to_vec_pretty(&serde_json::json!({ "plan": plan_hash, "peak_rss_mb": peaks }))?)
}

/// The boards' peak memory the last `run` of plan `plan_hash` measured, if any.
fn measured_memory(fleet: &Fleet, plan_hash: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(measured_memory_path(fleet)).ok()?).ok()?;
    (v["plan"] == plan_hash).then(|| serde_json::from_value(v["peak_rss_mb"].clone()).ok()).flatten()
}
