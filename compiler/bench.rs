//! Benchmarks: commands that measure in one run and print ratios (never timed assertions).

use crate::model::{group_band, reference, Group, LoadedModel, Rows};
use anyhow::{bail, ensure, Context, Result};
use legion_runtime::exec::BandExecutor;
use legion_runtime::stats::{mean_sd, median, median_by, min_max};
use prost::Message;
use std::collections::HashSet;
use std::time::Instant;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

/// The ONNX sub-model computing one band of `group` with tract-onnx directly: the group's
/// nodes, its input of `input_rows` rows, vertical padding removed (the band reads real rows
/// above and below, as a middle band does).
pub fn band_onnx(m: &LoadedModel, group: Group, input_rows: usize) -> Result<Vec<u8>> {
    let mut proto = ModelProto::decode(m.onnx.as_slice())?;
    let graph = proto.graph.as_mut().context("no graph")?;
    let made: HashSet<&str> = graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)).chain(graph.input.iter().map(|i| i.name.as_str())).collect();
    if let Some(v) = std::iter::once(group.from).chain(group.layers()).find(|&v| !made.contains(m.tensor_names[v].as_str())) {
        bail!("group {}..{}: value {v} ({}) is not in the ONNX file: legionc's front end made it to carry a side value (model::carry); pick a group without it", group.from, group.to, m.ir.nodes[v].name);
    }
    let keep: HashSet<&str> = group.layers().map(|v| m.tensor_names[v].as_str()).collect();
    graph.node.retain(|n| n.output.first().is_some_and(|o| keep.contains(o.as_str())));
    for n in &mut graph.node {
        for a in &mut n.attribute {
            if a.name == "pads" && a.ints.len() == 4 {
                a.ints[0] = 0;
                a.ints[2] = 0;
            }
        }
    }
    let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.clone()).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    let mut shape = m.ir.nodes[group.from].shape.clone();
    shape[2] = input_rows;
    let mut input = graph.input[0].clone();
    input.name = m.tensor_names[group.from].clone();
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        if let Some(s) = t.shape.as_mut() {
            for (d, v) in s.dim.iter_mut().zip(&shape) {
                d.value = Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(*v as i64));
            }
        }
    }
    graph.input = vec![input];
    let mut output = graph.output[0].clone();
    output.name = m.tensor_names[group.to].clone();
    output.r#type = None;
    graph.output = vec![output];
    Ok(proto.encode_to_vec())
}


/// What `bench drift` measured: the same whole-model run, timed by its raw CPU time and by
/// the drift-corrected time emulated boards use (`legion_runtime::link::drift`).
pub struct DriftBench {
    pub runs: usize,
    pub raw_median_s: f64,
    pub corrected_median_s: f64,
    /// Coefficients of variation (standard deviation ÷ mean).
    pub raw_cv: f64,
    pub corrected_cv: f64,
    /// The same correction from the reference before the run only (what a short computation
    /// gets), to show what timing it after a long one as well adds.
    pub before_only_cv: f64,
    /// Was every run long enough to be bracketed by the reference?
    pub bracketed: bool,
    /// Pearson correlation of the raw time with the reference time measured around it.
    pub correlation: f64,
    /// Coefficient of variation of the reference time itself.
    pub reference_cv: f64,
    pub calibrated_reference_s: f64,
}


/// Run the whole of `m` `runs` times on one thread with `pause` between runs (so that the runs
/// span the machine's slow and fast spells), each time as an emulated board does: the
/// reference convolution, the model, timed by CPU time, and (the model being long) the
/// reference again ([`drift::timed`]).
pub fn drift(m: &LoadedModel, runs: usize, pause: std::time::Duration) -> Result<DriftBench> {
    use legion_runtime::exec::{run, runnable, section_graph};
    use legion_runtime::link::drift;
    ensure!(runs >= 3, "--runs must be at least 3");
    let plan = runnable(section_graph(&m.ir, 0, m.ir.output())?)?;
    let input = reference::random_input(&m.ir.nodes[0].shape, 7);
    run(&plan, input.clone())?;
    let cal = drift::calibrated();
    let (mut raw, mut corrected, mut before_only, mut inverse) = (vec![], vec![], vec![], vec![]);
    let mut bracketed = true;
    for _ in 0..runs {
        std::thread::sleep(pause);
        let timed = drift::timed(true, || run(&plan, input.clone()));
        timed.result?;
        let t = timed.cpu.as_secs_f64();
        raw.push(t);
        corrected.push(t * timed.scale);
        before_only.push(t * drift::scale_for(cal, timed.before));
        inverse.push(1.0 / timed.scale);
        bracketed &= timed.after.is_some();
    }
    let (mr, sr) = mean_sd(&raw);
    let (mc, sc) = mean_sd(&corrected);
    let (mb, sb) = mean_sd(&before_only);
    let (mi, si) = mean_sd(&inverse);
    let cov = raw.iter().zip(&inverse).map(|(a, b)| (a - mr) * (b - mi)).sum::<f64>() / runs as f64;
    Ok(DriftBench {
        runs,
        raw_cv: sr / mr,
        corrected_cv: sc / mc,
        before_only_cv: sb / mb,
        bracketed,
        correlation: if sr > 0.0 && si > 0.0 { cov / (sr * si) } else { 0.0 },
        reference_cv: si / mi,
        raw_median_s: median(&raw),
        corrected_median_s: median(&corrected),
        calibrated_reference_s: cal,
    })
}

pub struct BandBench {
    pub group: Group,
    pub band: Rows,
    pub input_rows: usize,
    /// Medians.
    pub executor_s: f64,
    pub tract_s: f64,
    /// Fastest runs (least disturbed by other load on the machine).
    pub executor_min_s: f64,
    pub tract_min_s: f64,
    pub max_abs_diff: f32,
    /// Median of the executor's runs each after `legion_runtime::link::evict_caches` (what a run
    /// from memory costs here; emulated boards are timed warm: `link::twin_caches`), and the
    /// bytes that wrote.
    pub executor_evicted_s: f64,
    pub evicted_bytes: usize,
}

/// Run one middle band of `group` (board `board` of `boards` equal bands) through legionc's
/// executor and through tract-onnx on the same rows, single-threaded, interleaved.
pub fn band_vs_tract(m: &LoadedModel, group: Group, boards: usize, board: usize, repeats: usize) -> Result<BandBench> {
    let h = m.ir.rows(group.to);
    ensure!(board > 0 && board + 1 < boards, "pick a middle band: board must be in 1..{}", boards - 1);
    let per = h / boards;
    ensure!(per > 0, "value {} has {h} rows: too few for {boards} bands (--boards)", group.to);
    let band = Rows::new(board * per, (board + 1) * per);
    let gb = group_band(&m.ir, group, band);
    ensure!(gb.layers.iter().all(|l| l.pad_top == 0 && l.pad_bottom == 0), "band {band} touches an image border");
    let mut exec = BandExecutor::new(m.ir.clone());
    exec.prepare(group, band)?;
    let mut shape = m.ir.nodes[group.from].shape.clone();
    shape[2] = gb.input.len();
    let direct = reference::plan(&band_onnx(m, group, gb.input.len())?, &shape)?;
    let input = reference::random_input(&shape, 7);
    let a = exec.run_band(group, band, input.clone())?;
    let b = direct.run(tvec!(input.clone().into()))?.remove(0).into_tensor();
    let (max_abs_diff, _) = reference::compare(&a, &b)?;
    let (mut te, mut tt, mut tc) = (vec![], vec![], vec![]);
    for _ in 0..repeats {
        let t = Instant::now();
        exec.run_band(group, band, input.clone())?;
        te.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        direct.run(tvec!(input.clone().into()))?;
        tt.push(t.elapsed().as_secs_f64());
        legion_runtime::link::evict_caches();
        let t = Instant::now();
        exec.run_band(group, band, input.clone())?;
        tc.push(t.elapsed().as_secs_f64());
    }
    Ok(BandBench {
        group,
        band,
        input_rows: gb.input.len(),
        executor_min_s: min_max(&te).0,
        tract_min_s: min_max(&tt).0,
        executor_s: median(&te),
        tract_s: median(&tt),
        max_abs_diff,
        executor_evicted_s: median(&tc),
        evicted_bytes: legion_runtime::link::evict_bytes(),
    })
}

/// What the plan predicts from the emulation parameters, seconds.
pub struct FleetPrediction {
    pub groups: Vec<f64>,
    pub tail: f64,
    pub total: f64,
}

/// CPU seconds of one run of `f` on this thread, warm (after one untimed run) as the probe
/// times an emulated board (`legion_runtime::link::twin_caches`).
fn cpu_seconds(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let t = legion_runtime::link::thread_cpu_time();
    f()?;
    Ok(legion_runtime::link::thread_cpu_time().saturating_sub(t).as_secs_f64())
}

/// Predict a plan's latency on an emulated fleet from the emulation's parameters: every
/// band's compute (and every slice of a split tail layer, and the coordinator's tail) is its
/// CPU time here ÷ the twin's speed; transfers and their order are the cost model's, in the
/// plan's topology (`cost::CostModel` with these times as its measurements: the one network
/// model the emulation runs too).
pub fn predict_fleet_latency(fleet: &crate::fleet::Fleet, m: &LoadedModel, plan: &legion_runtime::plan::Plan) -> Result<FleetPrediction> {
    use crate::cost::{BoardCost, CostModel, DenseCost, Fit};
    use legion_runtime::exec::{dense_slice, run, runnable, section_graph};
    let c = fleet.coordinator;
    let mut exec = BandExecutor::new(m.ir.clone());
    let mut group_e = std::collections::HashMap::new();
    for (gi, g) in plan.groups.iter().enumerate() {
        for (b, out) in g.bands().into_iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            // The band whole, and its parts where the group computes its edges first.
            let mut points = Vec::new();
            let mut timed = vec![out];
            timed.extend(legion_runtime::mesh::group_parts(&m.ir, &plan.groups, gi, b)?.into_iter().filter(|&p| p != out));
            for rows in timed {
                let band = exec.prepare(g.group(), rows)?.0.clone();
                let mut shape = m.ir.nodes[g.from].shape.clone();
                shape[2] = band.input.len();
                let input = reference::random_input(&shape, 1);
                let cpu = cpu_seconds(|| exec.run_band(g.group(), rows, input.clone()).map(|_| ()))?;
                points.push((rows.len(), cpu / fleet.boards[b].nominal_speed()));
            }
            group_e.insert((g.group(), b), Fit::from_points(&points));
        }
    }
    let end = m.ir.split_end();
    let tail_s = if end < m.ir.output() {
        let t = runnable(section_graph(&m.ir, end, m.ir.output())?)?;
        let x = reference::random_input(&m.ir.nodes[end].shape, 1);
        cpu_seconds(|| run(&t, x.clone()).map(|_| ()))? / fleet.boards[c].nominal_speed()
    } else {
        0.0
    };
    // The plan's split tail layers: each board's slice timed, and the layer whole on the
    // coordinator (what the tail's time holds of it).
    let mut dense = Vec::new();
    for t in &plan.tail {
        let x = reference::random_input(&m.ir.nodes[t.node - 1].shape, 1);
        let whole = legion_runtime::halo::Rows::new(0, m.ir.nodes[t.node].shape[1]);
        let mut e = Vec::new();
        for (b, cols) in t.bands().into_iter().enumerate() {
            // Each board's slice; the coordinator's also the layer whole.
            let mut timed = vec![cols];
            if b == c && cols != whole {
                timed.push(whole);
            }
            let mut points = Vec::new();
            for cols in timed.into_iter().filter(|c| !c.is_empty()) {
                let r = dense_slice(&m.ir, t.node, cols)?;
                points.push((cols.len(), cpu_seconds(|| run(&r, x.clone()).map(|_| ()))? / fleet.boards[b].nominal_speed()));
            }
            e.push(Fit::from_points(&points));
        }
        dense.push(DenseCost { node: t.node, inputs: m.ir.nodes[t.node - 1].shape.iter().product(), outputs: m.ir.nodes[t.node].shape[1], e });
    }
    let cm = CostModel {
        model: m.ir.clone(),
        cuts: m.ir.split_cut_points(),
        boards: fleet.boards.iter().map(|b| BoardCost { name: b.name.clone(), link: b.link, e: vec![] }).collect(),
        coordinator: c,
        tail_s,
        group_e: Some(group_e),
        topology: plan.topology,
        dense,
        memory: None,
        edges_first: vec![],
    }
    .for_plan(plan);
    let chosen: Vec<(Group, Vec<usize>)> = plan.groups.iter().map(|g| (g.group(), g.rows.clone())).collect();
    let groups: Vec<f64> = cm.groups_cost(&chosen).iter().map(|g| g.latency_s).collect();
    let tail = cm.plan_tail_cost(&chosen, &plan.tail);
    let total = groups.iter().sum::<f64>() + tail;
    Ok(FleetPrediction { groups, tail, total })
}

/// What `bench fleet` measured on a running emulated fleet.
pub struct FleetBench {
    pub frames: usize,
    pub measured_s: f64,
    pub predicted: FleetPrediction,
    pub single_s: f64,
    /// Σ speeds ÷ the fastest: the speedup if nothing but compute counted.
    pub ideal: f64,
}

/// Run `frames` frames (after a warm-up) through the running emulated fleet and compare the
/// median with the latency its plan predicts from the emulation parameters and with the
/// fastest single board.
pub fn fleet(fleet: &crate::fleet::Fleet, m: &LoadedModel, plan: &legion_runtime::plan::Plan, frames: usize) -> Result<FleetBench> {
    let x = reference::random_input(&m.ir.user_input_shape(), 1);
    crate::run::infer(fleet, plan, &x)?; // warm-up frame
    let lat: Vec<f64> = (0..frames.max(1)).map(|_| crate::run::infer(fleet, plan, &x).map(|r| r.2.as_secs_f64())).collect::<Result<_>>()?;
    let fastest = fleet.boards.iter().map(|b| b.nominal_speed()).fold(0.0, f64::max);
    Ok(FleetBench {
        frames: lat.len(),
        measured_s: median(&lat),
        predicted: predict_fleet_latency(fleet, m, plan)?,
        single_s: crate::run::emulated_baseline(fleet, m, &x)?.seconds,
        ideal: fleet.boards.iter().map(|b| b.nominal_speed()).sum::<f64>() / fastest,
    })
}

impl std::fmt::Display for FleetBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.predicted;
        let speedup = self.single_s / self.measured_s;
        writeln!(f, "measured latency   {:>9.1} ms (median of {} frames)", self.measured_s * 1e3, self.frames)?;
        writeln!(f, "predicted latency  {:>9.1} ms (groups {}; tail {:.1})", p.total * 1e3, p.groups.iter().map(|g| format!("{:.1}", g * 1e3)).collect::<Vec<_>>().join(" + "), p.tail * 1e3)?;
        writeln!(f, "measured / predicted = {:.3}", self.measured_s / p.total)?;
        writeln!(f, "single fastest board {:>9.1} ms -> speedup {:.2}x", self.single_s * 1e3, speedup)?;
        writeln!(f, "ideal bound (sum of speeds / fastest) = {:.2}x; speedup / ideal = {:.3}", self.ideal, speedup / self.ideal)
    }
}

impl std::fmt::Display for BandBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "group {}..{}, output rows {} (input rows {}), single thread", self.group.from, self.group.to, self.band, self.input_rows)?;
        writeln!(f, "legionc executor  {:>9.2} ms median, {:>9.2} ms fastest", self.executor_s * 1e3, self.executor_min_s * 1e3)?;
        writeln!(f, "tract-onnx direct {:>9.2} ms median, {:>9.2} ms fastest", self.tract_s * 1e3, self.tract_min_s * 1e3)?;
        writeln!(f, "max |diff| {:.2e}", self.max_abs_diff)?;
        writeln!(f, "ratio executor / tract = {:.3} median, {:.3} fastest (goal <= 1.05)", self.executor_s / self.tract_s, self.executor_min_s / self.tract_min_s)?;
        writeln!(
            f,
            "legionc executor from evicted caches ({} MiB written before each run; emulated boards and their probe time runs warm, back to back): {:.2} ms median, {:.2} x back to back",
            self.evicted_bytes >> 20,
            self.executor_evicted_s * 1e3,
            self.executor_evicted_s / self.executor_s
        )
    }
}

impl std::fmt::Display for DriftBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "calibrated reference {:>9.3} ms", self.calibrated_reference_s * 1e3)?;
        writeln!(f, "raw CPU time       {:>9.1} ms median, coefficient of variation {:.1} %", self.raw_median_s * 1e3, self.raw_cv * 1e2)?;
        let how = if self.bracketed { "reference before and after each run" } else { "reference before each run (runs too short to bracket)" };
        writeln!(f, "drift-corrected    {:>9.1} ms median, coefficient of variation {:.1} % ({how})", self.corrected_median_s * 1e3, self.corrected_cv * 1e2)?;
        if self.bracketed {
            writeln!(f, "  from the reference before each run only: coefficient of variation {:.1} %", self.before_only_cv * 1e2)?;
        }
        writeln!(f, "reference time: coefficient of variation {:.1} %; correlation of the run with it: {:.2}", self.reference_cv * 1e2, self.correlation)?;
        writeln!(f, "variation corrected / raw = {:.2}", self.corrected_cv / self.raw_cv)
    }
}

/// The group `bench band` times: `FROM..TO` between cut points of the splittable part, or
/// the first fused block.
pub fn band_group(m: &LoadedModel, spec: Option<&str>) -> Result<Group> {
    use crate::solve::{fused_groups, Fusion};
    let group = match spec {
        Some(g) => {
            let (a, b) = g.split_once("..").context("--group takes FROM..TO")?;
            Group { from: a.parse().context("--group: FROM")?, to: b.parse().context("--group: TO")? }
        }
        None => Group { from: 0, to: fused_groups(&m.ir, Fusion::Blocks)[0] },
    };
    let cuts = m.ir.split_cut_points();
    ensure!(cuts.contains(&group.from) && cuts.contains(&group.to) && group.from < group.to, "group {}..{} is not between cut points of the splittable part {:?}", group.from, group.to, cuts);
    Ok(group)
}

// ---------------------------------------------------------------- strategies compared

/// One strategy's plan, run for real on an emulated fleet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StrategyRow {
    pub strategy: String,
    pub plan_hash: String,
    pub groups: usize,
    /// Median over the frames.
    pub measured_latency_s: f64,
    /// None for a strategy without a cost model (`proportional`).
    pub predicted_latency_s: Option<f64>,
    /// predicted ÷ measured.
    pub prediction_ratio: Option<f64>,
    /// The fastest single board's latency ÷ measured.
    pub speedup: f64,
    /// measured ÷ the full search's measured latency (when fss is among the strategies).
    pub ratio_to_fss: Option<f64>,
    /// Measurements the plan rests on (cached or not) and their board time.
    pub profiling_trials: usize,
    pub profiling_board_seconds: f64,
    pub solve_seconds: f64,
    /// How the boards ran the plan.
    pub plan_mode: &'static str,
    /// The coordinator's report of the median frame (per group and board: receive, compute,
    /// send back).
    #[serde(skip)]
    pub frame: legion_runtime::board::FrameReport,
    /// The plan's output against tract's single run: max |diff| ÷ max |output| (checked ≤ 1e-4).
    pub max_rel_diff: f32,
    /// The median frame's overruns (real time beyond the twins' times) ÷ its latency: what the
    /// emulation could not hide. Figures above [`OVERRUN_MARK`] are marked.
    pub overrun_share: f64,
    /// The median frame's total wait for compute slots (hidden inside the twins' times).
    pub slot_wait_s: f64,
    /// Per board: its process's peak resident memory (VmHWM) at the median frame, MB.
    pub peak_rss_mb: std::collections::BTreeMap<String, f64>,
    /// Frames per second with [`PIPELINED`] frames in flight, measured over as many frames as
    /// the latency (after them), and predicted (None without a cost model).
    pub measured_pipelined_fps: f64,
    pub predicted_pipelined_fps: Option<f64>,
    /// Rounds over the strategies the frames were measured in, and the frames the median is
    /// taken over (`--frames` per round).
    pub rounds: usize,
    pub frames: usize,
    /// How many times slower than the twins the boards ran on the wall clock (times are
    /// reported in the twins' time: `--time-scale`).
    pub time_scale: f64,
}

/// Frames in flight when the bench measures throughput.
pub const PIPELINED: usize = 2;

/// Overruns above this share of a frame's latency mark its figures.
pub const OVERRUN_MARK: f64 = 0.02;

/// Which binaries run the plans being compared.
#[derive(Clone, Copy)]
pub enum Boards<'a> {
    /// The compiled fleet's board binaries, loading each plan from plan.json.
    Compiled,
    /// The generic board binary (`legion-board`): no compiled fleet needed. The model file
    /// with every weight is kept in `models` (shared by the fleets of a suite).
    Generic { exe: &'a std::path::Path, models: &'a std::path::Path },
}

/// Each strategy's plan on the emulated fleet: plan every strategy, then in `rounds` rounds
/// start the boards with each plan in turn (`boards`: the compiled binaries load it from
/// plan.json, or the generic binary its fleet and plan from a JSON file; a model file holds
/// every weight, so no rebuild per plan), run `frames` frames after a warm-up, stop. The
/// rounds visit the strategies forward, then backward, and so on, so that a machine whose
/// speed drifts during the run slows every plan alike instead of the last ones; each
/// strategy's latency is the median of all its frames. Also returns the single-board latency
/// the speedups are relative to: the `single` strategy's measured latency when it is in
/// `list`, else the fastest board's whole model in this process at its twin's speed.
#[allow(clippy::too_many_arguments)]
pub fn strategies(
    fleet: &crate::fleet::Fleet,
    m: &LoadedModel,
    list: &[crate::fleet::StrategyRun],
    frames: usize,
    rounds: usize,
    opts: &crate::profile::Options,
    boards: Boards,
) -> Result<(Vec<StrategyRow>, f64)> {
    use crate::{deploy, run, strategy};
    fleet.require_emulated("bench")?;
    for b in &fleet.boards {
        ensure!(deploy::health(&fleet, b).is_err(), "board {} ({}) is running: run `legionc down` first", b.name, b.addr());
        if let Boards::Compiled = boards {
            ensure!(crate::cargo_build::installed_binary(fleet, b).exists(), "board {} has no binary: run `legionc compile` first", b.name);
        }
    }
    let dir = fleet.out().join("bench");
    std::fs::create_dir_all(&dir)?;
    let (model_file, model_sha) = model_file(m, &dir, boards)?;
    let x = reference::random_input(&m.ir.user_input_shape(), 1);
    let expected = reference::run(&m.onnx, &x)?;
    // Every plan first (profiling and the wild card use the boards), then the rounds.
    struct Measuring {
        name: String,
        planned: strategy::Planned,
        plan_file: std::path::PathBuf,
        frames: Vec<(f64, legion_runtime::board::FrameReport)>,
        fps: f64,
        max_rel_diff: f32,
    }
    let mut runs = Vec::new();
    for &s in list {
        let planned = strategy::plan(&s.fleet(fleet), m, s.strategy, opts)?;
        let plan_file = dir.join(format!("{}.plan.json", s.name()));
        crate::write_atomic(&plan_file, &serde_json::to_vec_pretty(&planned.plan)?)?;
        runs.push(Measuring { name: s.name(), planned, plan_file, frames: vec![], fps: f64::NAN, max_rel_diff: 0.0 });
    }
    let rounds = rounds.max(1);
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 { (0..runs.len()).collect() } else { (0..runs.len()).rev().collect() };
        for i in order {
            let r = &mut runs[i];
            let launch = launch(boards, &r.plan_file, &model_file, &model_sha);
            let up = deploy::up_emulated_with(fleet, &r.planned.plan, &launch, opts.quiet);
            let measured = up.and_then(|_| {
                // The warm-up frame's output is checked against tract's single run.
                let (y, _, _) = run::infer(fleet, &r.planned.plan, &x)?;
                let diff = reference::check(&y, &expected, "the fleet's output")?.ratio();
                let lat: Vec<(f64, legion_runtime::board::FrameReport)> =
                    (0..frames.max(1)).map(|_| run::infer(fleet, &r.planned.plan, &x).map(|r| (r.2.as_secs_f64(), r.1))).collect::<Result<_>>()?;
                // Frames per second in the first round only.
                let fps = if round == 0 {
                    let o = run::StreamOptions { frames: frames.max(PIPELINED), rate: None, drop: false, in_flight: Some(PIPELINED), verify_every: None };
                    Some(run::stream_frames(fleet, &r.planned.plan, m, &[("random 1".into(), x.clone())], &o, &mut std::io::sink())?.summary.throughput_fps)
                } else {
                    None
                };
                Ok((diff, lat, fps))
            });
            deploy::down(fleet)?;
            let (diff, lat, fps) = measured.with_context(|| if rounds > 1 { format!("strategy {}, round {}", r.name, round + 1) } else { format!("strategy {}", r.name) })?;
            r.max_rel_diff = r.max_rel_diff.max(diff);
            r.frames.extend(lat);
            if let Some(fps) = fps {
                r.fps = fps;
            }
        }
    }
    let mut rows = Vec::new();
    for r in runs {
        let frames = r.frames.len();
        let (measured, frame) = median_by(r.frames, |f| f.0).expect("at least one frame");
        let planned = r.planned;
        let predicted = planned.predicted_latency_s.is_finite().then_some(planned.predicted_latency_s);
        rows.push(StrategyRow {
            strategy: r.name,
            plan_hash: planned.plan_hash.clone(),
            groups: planned.plan.groups.len(),
            measured_latency_s: measured,
            predicted_latency_s: predicted,
            prediction_ratio: predicted.map(|p| p / measured),
            speedup: f64::NAN,
            ratio_to_fss: None,
            profiling_trials: planned.profiling.trials(),
            profiling_board_seconds: planned.profiling.total_board_seconds(),
            solve_seconds: planned.solve_seconds,
            plan_mode: match boards {
                Boards::Compiled => "plan.json loaded by the compiled board binaries",
                Boards::Generic { .. } => "fleet and plan loaded from JSON by the generic board binary",
            },
            overrun_share: frame.overrun_s / measured,
            slot_wait_s: frame.slot_wait_s,
            peak_rss_mb: frame.peak_rss_mb.iter().cloned().collect(),
            measured_pipelined_fps: r.fps,
            predicted_pipelined_fps: planned.throughput_fps(PIPELINED),
            frame,
            max_rel_diff: r.max_rel_diff,
            rounds,
            frames,
            time_scale: legion_runtime::link::time_scale(),
        });
    }
    let single = match rows.iter().find(|r| r.strategy == "single") {
        Some(r) => r.measured_latency_s,
        None => {
            run::emulated_baseline(fleet, m, &x)?.seconds
        }
    };
    for r in &mut rows {
        r.speedup = single / r.measured_latency_s;
    }
    if let Some(fss) = rows.iter().find(|r| r.strategy == "fss").map(|r| r.measured_latency_s) {
        for r in &mut rows {
            r.ratio_to_fss = Some(r.measured_latency_s / fss);
        }
    }
    Ok((rows, single))
}

/// How the boards are started with a plan file.
fn launch<'a>(boards: Boards<'a>, plan_file: &'a std::path::Path, model_file: &'a std::path::Path, model_sha: &'a str) -> crate::deploy::Launch<'a> {
    match boards {
        Boards::Compiled => crate::deploy::Launch::PlanFile { plan: plan_file, model: model_file },
        Boards::Generic { exe, .. } => crate::deploy::Launch::Generic { exe, model: model_file, model_sha },
    }
}

/// The model file with every weight the benchmarks' boards load, and its sha256 (what the
/// generic board checks; empty for the compiled boards).
fn model_file(m: &LoadedModel, dir: &std::path::Path, boards: Boards) -> Result<(std::path::PathBuf, String)> {
    // The model file with every weight, named after what it is made from (the ONNX file, the
    // input shape, this legionc): written once, not on every call (550 MB for VGG-16).
    let key = format!("{} {:?} {}", m.sha256, m.ir.user_input_shape(), env!("CARGO_PKG_VERSION"));
    let name = format!("{}-{}.bin", m.ir.name, &legion_runtime::plan::hex(&<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()))[..16]);
    let model_file = match boards {
        Boards::Compiled => dir.join(name),
        Boards::Generic { models, .. } => models.join(name),
    };
    if !model_file.exists() {
        let parent = model_file.parent().unwrap();
        std::fs::create_dir_all(parent)?;
        if let Boards::Compiled = boards {
            // One model per fleet: an earlier model's file goes.
            for e in std::fs::read_dir(parent)?.flatten() {
                if e.path().extension().is_some_and(|x| x == "bin") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        crate::write_atomic(&model_file, &legion_runtime::modelfile::write(&m.ir, &|_| true))?;
    }
    // The generic board checks its model file against the sha256 in its configuration. The
    // file's hash is kept beside it, so that it is read once, not at every fleet start.
    let model_sha = match boards {
        Boards::Compiled => String::new(),
        Boards::Generic { .. } => {
            let side = model_file.with_extension("sha256");
            match std::fs::read_to_string(&side).ok().filter(|t| t.trim().len() == 64) {
                Some(t) => t.trim().to_string(),
                None => {
                    let bytes = std::fs::read(&model_file).with_context(|| format!("reading {}", model_file.display()))?;
                    let sha = legion_runtime::plan::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                    crate::write_atomic(&side, format!("{sha}\n").as_bytes())?;
                    sha
                }
            }
        }
    };
    Ok((model_file, model_sha))
}

// ---------------------------------------------------------------- the objective's candidates

/// One candidate of the objective's search (a partition of the fleet into lanes, frames in
/// flight per lane), its plan run as a stream on the emulated fleet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CandidateRow {
    /// Each lane's boards.
    pub lanes: Vec<Vec<String>>,
    pub in_flight: usize,
    pub plan_hash: String,
    /// The objectives that choose this candidate (`latency`, `throughput`).
    pub chosen_by: Vec<String>,
    pub predicted_fps: f64,
    /// A frame's predicted latency in a stream that keeps every lane busy.
    pub predicted_latency_s: f64,
    /// Frames of the stream, and frames per second over it (first arrival to last answer)
    /// and while every lane was busy (`steady_fps` of `run --json`).
    pub frames: usize,
    pub measured_fps: f64,
    pub measured_steady_fps: Option<f64>,
    /// Latency from a frame's request to its answer: median and p99.
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    /// The stream's last frame against tract's single run: max |diff| ÷ max |output|.
    pub max_rel_diff: f32,
    /// What the emulation could not hide, over the stream: overruns ÷ the lanes' busy time
    /// (frames × median latency), and the compute slots' waits (s).
    pub overrun_share: f64,
    pub slot_wait_s: f64,
}

/// `[a b][c]×1`: lanes of boards and frames in flight per lane.
fn lanes_label(lanes: &[Vec<String>], in_flight: usize) -> String {
    let lanes: String = lanes.iter().map(|l| format!("[{}]", l.join(" "))).collect();
    format!("{lanes}×{in_flight}")
}

impl CandidateRow {
    /// `[a b][c]×1`: the lanes and frames in flight per lane.
    pub fn label(&self) -> String {
        lanes_label(&self.lanes, self.in_flight)
    }

    /// `2+1 ×1`: each lane's number of boards and frames in flight per lane (the figures' label).
    pub fn short_label(&self) -> String {
        let sizes: Vec<String> = self.lanes.iter().map(|l| l.len().to_string()).collect();
        format!("{} ×{}", sizes.join("+"), self.in_flight)
    }
}

/// Up to `count` of the objective's candidates for `fleet` (legion's plans, [`strategy::candidates`]),
/// taken along the predicted front of frames per second against latency
/// ([`strategy::frontier`]: the `latency` and `throughput` objectives' choices first), each
/// planned ([`strategy::plan_candidate`]), started on the emulated fleet, and run as a stream
/// with the candidate's frames in flight per lane: `frames` + 1 per lane and frame in flight
/// (`frames` at least 2), after a warm-up frame per lane; the last frame checked against
/// tract.
pub fn candidates(fleet: &crate::fleet::Fleet, m: &LoadedModel, count: usize, frames: usize, opts: &crate::profile::Options, boards: Boards) -> Result<Vec<CandidateRow>> {
    use crate::{deploy, run, strategy};
    fleet.require_emulated("bench")?;
    let dir = fleet.out().join("bench");
    std::fs::create_dir_all(&dir)?;
    let (model_file, model_sha) = model_file(m, &dir, boards)?;
    let (all, _) = strategy::candidates(fleet, m, strategy::Strategy::Legion, opts)?;
    let x = reference::random_input(&m.ir.user_input_shape(), 1);
    let expected = reference::run(&m.onnx, &x)?;
    let mut rows = Vec::new();
    for (i, chosen_by) in strategy::frontier(&all, count) {
        let c = &all[i];
        let planned = strategy::plan_candidate(fleet, m, strategy::Strategy::Legion, opts, c)?;
        let plan_file = dir.join(format!("candidate-{}.plan.json", rows.len() + 1));
        crate::write_atomic(&plan_file, &serde_json::to_vec_pretty(&planned.plan)?)?;
        let label = lanes_label(&c.lanes, c.in_flight);
        // One round more than asked, so that the busy window (after the first answer, up to
        // the last frame sent) holds `frames` rounds.
        let n = (frames.max(2) + 1) * c.lanes.len() * c.in_flight;
        let up = deploy::up_emulated_with(fleet, &planned.plan, &launch(boards, &plan_file, &model_file, &model_sha), opts.quiet);
        let measured = up.and_then(|_| {
            // A warm-up frame per lane (each lane's first frame builds its runnables).
            let warm = run::StreamOptions { frames: c.lanes.len(), rate: None, drop: false, in_flight: Some(1), verify_every: None };
            run::stream_frames(fleet, &planned.plan, m, &[("random 1".into(), x.clone())], &warm, &mut std::io::sink())?;
            let o = run::StreamOptions { frames: n, rate: None, drop: false, in_flight: Some(c.in_flight), verify_every: None };
            run::stream_frames(fleet, &planned.plan, m, &[("random 1".into(), x.clone())], &o, &mut std::io::sink())
        });
        deploy::down(fleet)?;
        let stream = measured.with_context(|| format!("candidate {label}"))?;
        let check = reference::check(&stream.last_output, &expected, &format!("candidate {label}'s output"))?;
        let s = &stream.summary;
        rows.push(CandidateRow {
            lanes: c.lanes.clone(),
            in_flight: c.in_flight,
            plan_hash: planned.plan_hash,
            chosen_by,
            predicted_fps: c.throughput_fps,
            predicted_latency_s: c.stream_latency_s,
            frames: n,
            measured_fps: s.throughput_fps,
            measured_steady_fps: s.steady_fps,
            latency_p50_s: s.latency_p50_s,
            latency_p99_s: s.latency_p99_s,
            max_rel_diff: check.ratio(),
            overrun_share: s.overrun_s / (s.answered as f64 * s.latency_p50_s).max(1e-9),
            slot_wait_s: s.slot_wait_s,
        });
    }
    Ok(rows)
}

/// The table of measured candidates the suite prints.
pub fn format_candidates(rows: &[CandidateRow]) -> String {
    let mut s = format!(
        "{:<40} {:>7} {:>22} {:>10} {:>24} {:>9}  {}\n",
        "lanes × in flight", "frames", "fps meas (steady)/pred", "meas/pred", "latency p50/p99/pred ms", "overrun", "chosen by"
    );
    for r in rows {
        let fps = r.measured_steady_fps.unwrap_or(r.measured_fps);
        s += &format!(
            "{:<40} {:>7} {:>22} {:>10.2} {:>24} {:>8.1}%  {}\n",
            r.label(),
            r.frames,
            format!("{:.3} ({}) / {:.3}", r.measured_fps, r.measured_steady_fps.map_or("-".into(), |v| format!("{v:.3}")), r.predicted_fps),
            fps / r.predicted_fps,
            format!("{:.0} / {:.0} / {:.0}", r.latency_p50_s * 1e3, r.latency_p99_s * 1e3, r.predicted_latency_s * 1e3),
            r.overrun_share * 100.0,
            r.chosen_by.join(", ")
        );
    }
    s
}

/// The table `legionc bench FLEET` prints.
pub fn format_strategies(rows: &[StrategyRow], single: f64) -> String {
    let mut s = format!("fastest single board: {:.1} ms\n", single * 1e3);
    s += &format!(
        "{:<13} {:>7} {:>12} {:>12} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>13} {:>9}\n",
        "strategy", "groups", "measured ms", "predicted ms", "pred/meas", "speedup", "vs fss", "trials", "board-s", "solve ms", "fps meas/pred", "overrun"
    );
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    for r in rows {
        s += &format!(
            "{:<13} {:>7} {:>12.1} {:>12} {:>8} {:>8.2} {:>8} {:>8} {:>10.1} {:>9.2} {:>13} {:>8.1}%{}\n",
            r.strategy,
            r.groups,
            r.measured_latency_s * 1e3,
            opt(r.predicted_latency_s, &|p| format!("{:.1}", p * 1e3)),
            opt(r.prediction_ratio, &|p| format!("{p:.3}")),
            r.speedup,
            opt(r.ratio_to_fss, &|p| format!("{p:.3}")),
            r.profiling_trials,
            r.profiling_board_seconds,
            r.solve_seconds * 1e3,
            format!("{:.2}/{}", r.measured_pipelined_fps, opt(r.predicted_pipelined_fps, &|p| format!("{p:.2}"))),
            r.overrun_share * 1e2,
            if r.overrun_share > OVERRUN_MARK { " (!)" } else { "" }
        );
    }
    s += &format!("fps: frames per second with {PIPELINED} frames in flight (`run --in-flight {PIPELINED}`)\n");
    if rows.iter().any(|r| r.overrun_share > OVERRUN_MARK) {
        s += &format!("(!) frames overran their twins' times by more than {:.0} % of the latency: this machine could not emulate the fleet faithfully\n", OVERRUN_MARK * 1e2);
    }
    s
}
