//! A board's process: the worker loop (receive a band, run the group, send the band back) and,
//! on the coordinator, the frame loop (split, scatter, gather, tail, answer).

use crate::exec::{run, runnable, section_graph, BandExecutor, Runnable};
use crate::ir::Model;
use crate::link::{compute_accounted, compute_warm, twin_time, wall_time, Computed, Link, LinkSpec};
use crate::halo::{Group, Rows};
use crate::mesh::{assemble, band_parts, expected, part_input, part_pieces, redistribution, tail_gather, Redistribution};
use crate::plan::{concat_features, gather, hex, scatter, tail_stages, to_nchw, Deployment, Plan, TailStage, Topology};
use crate::wire::{plan_bytes, Conn, Key, Kind, Message};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tract_core::internal::*;

pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A board of the fleet as every board knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    /// `host:port` its worker listens on.
    pub addr: String,
    pub link: LinkSpec,
    /// Threads tract may use on it.
    #[serde(default = "one")]
    pub threads: usize,
    /// Its emulated twin's speed; none for a real board.
    #[serde(default)]
    pub speed: Option<f64>,
}

fn one() -> usize {
    1
}

/// Everything a board's binary knows: rendered into its crate as constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    pub board: String,
    /// This board's index in the plan's board order.
    pub index: usize,
    pub plan: Plan,
    /// The fleet, in plan order (the coordinator uses the addresses).
    pub peers: Vec<Peer>,
    pub coordinator: usize,
    /// Emulated twin's speed relative to the machine's core; none on a real board.
    pub speed: Option<f64>,
    /// Threads tract may use for this board's matrix products.
    pub threads: usize,
    /// CPUs the runtime is pinned to (a real board's target's `cores`); none for an emulated
    /// board.
    pub cores: Vec<usize>,
    /// sha256 of the model file this board must load.
    pub model_sha256: String,
    /// Deadline on every read, write and connect.
    pub deadline_ms: u64,
    /// The coordinator takes a worker that has not answered its heartbeat for this long as
    /// lost (none: no heartbeat).
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
}

impl BoardConfig {
    pub fn is_coordinator(&self) -> bool {
        self.index == self.coordinator
    }
    /// How long a frame's message may take, on the wall clock: stretched with the emulation's
    /// [`crate::link::time_scale`], like the computations and transfers it waits for.
    fn deadline(&self) -> Duration {
        wall_time(Duration::from_millis(self.deadline_ms))
    }

    /// The fleet's configuration as the plan hash covers it.
    pub fn deployment(&self) -> Deployment {
        Deployment { coordinator: self.coordinator, deadline_ms: self.deadline_ms, heartbeat_ms: self.heartbeat_ms, boards: self.peers.clone() }
    }

    /// Give the plan this board's deployment, or check the one it has: a board runs a plan
    /// only with the configuration its hash covers.
    pub fn deploy_plan(&mut self) -> Result<()> {
        let own = self.peers.get(self.index).ok_or_else(|| anyhow!("board {}: index {} is not one of the fleet's {} boards", self.board, self.index, self.peers.len()))?;
        ensure!(self.coordinator < self.peers.len(), "board {}: the coordinator's index {} is not one of the fleet's {} boards", self.board, self.coordinator, self.peers.len());
        ensure!(own.speed == self.speed && own.threads == self.threads, "board {}: its speed and threads ({:?}, {}) differ from the fleet's entry ({:?}, {})", self.board, self.speed, self.threads, own.speed, own.threads);
        let mine = self.deployment();
        match &self.plan.deployment {
            None => self.plan.deployment = Some(mine),
            Some(d) => ensure!(*d == mine, "board {}: the plan is deployed as {}, this board is configured as {}", self.board, serde_json::to_string(d)?, serde_json::to_string(&mine)?),
        }
        Ok(())
    }
}

/// A board's configuration as compile-time constants (what `plan.rs.tera` renders).
pub struct StaticConfig {
    pub plan_hash: &'static str,
    pub plan_version: u32,
    pub model_sha256: &'static str,
    pub board: &'static str,
    pub index: usize,
    pub coordinator: usize,
    pub speed: Option<f64>,
    pub threads: usize,
    pub cores: &'static [usize],
    pub deadline_ms: u64,
    pub heartbeat_ms: Option<u64>,
    /// Default model file (next to the binary, else in the working directory).
    pub model_file: &'static str,
    pub model_file_sha256: &'static str,
    pub boards: &'static [StaticBoard],
    pub groups: &'static [StaticGroup],
    /// `star` or `mesh`.
    pub topology: &'static str,
    /// Dense layers of the tail split by output features.
    pub tail: &'static [StaticTail],
    /// Plans for the fleet without one of its workers.
    pub fallbacks: &'static [StaticFallback],
}

pub struct StaticFallback {
    pub lost: &'static [usize],
    pub groups: &'static [StaticGroup],
    pub tail: &'static [StaticTail],
}

pub struct StaticTail {
    pub node: usize,
    pub cols: &'static [usize],
}

pub struct StaticBoard {
    pub name: &'static str,
    pub addr: &'static str,
    pub bandwidth_mbps: f64,
    pub latency_ms: f64,
    pub threads: usize,
    pub speed: Option<f64>,
}

pub struct StaticGroup {
    pub from: usize,
    pub to: usize,
    pub rows: &'static [usize],
    pub edges_first: bool,
}

impl StaticConfig {
    /// The configuration as values; fails if the constants do not hash to `plan_hash`.
    pub fn resolve(&self) -> Result<BoardConfig> {
        let groups = |gs: &[StaticGroup]| gs.iter().map(|g| crate::plan::PlanGroup { from: g.from, to: g.to, rows: g.rows.to_vec(), edges_first: g.edges_first }).collect();
        let tail = |ts: &[StaticTail]| ts.iter().map(|t| crate::plan::TailSplit { node: t.node, cols: t.cols.to_vec() }).collect();
        let plan = Plan {
            version: self.plan_version,
            model_sha256: self.model_sha256.into(),
            boards: self.boards.iter().map(|b| b.name.to_string()).collect(),
            groups: groups(self.groups),
            topology: self.topology.parse().map_err(|e: String| anyhow!(e))?,
            tail: tail(self.tail),
            deployment: None,
            lanes: vec![],
            in_flight: 1,
            fallbacks: self.fallbacks.iter().map(|f| crate::plan::Fallback { lost: f.lost.to_vec(), groups: groups(f.groups), tail: tail(f.tail) }).collect(),
        };
        let mut cfg = BoardConfig {
            board: self.board.into(),
            index: self.index,
            plan,
            peers: self
                .boards
                .iter()
                .map(|b| Peer {
                    name: b.name.into(),
                    addr: b.addr.into(),
                    link: LinkSpec { bandwidth_mbps: b.bandwidth_mbps, latency_ms: b.latency_ms },
                    threads: b.threads,
                    speed: b.speed,
                })
                .collect(),
            coordinator: self.coordinator,
            speed: self.speed,
            threads: self.threads,
            cores: self.cores.to_vec(),
            model_sha256: self.model_file_sha256.into(),
            deadline_ms: self.deadline_ms,
            heartbeat_ms: self.heartbeat_ms,
        };
        cfg.deploy_plan()?;
        ensure!(cfg.plan.hash() == self.plan_hash, "the plan constants hash to {}, not {}", cfg.plan.hash(), self.plan_hash);
        Ok(cfg)
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Read the model file at `path` as board `cfg` runs it under plan `p` of its variants
/// ([`Plan::variants`]: 0 the plan, then its fallbacks), streamed from the file (a board never
/// holds the whole file). For the plan: the weights of every layer it computes under any of
/// them, but of each split tail layer only its slice under the plan; for a fallback: only its
/// slices of the fallback's split layers (the rest is the plan's). Split layers are cut from
/// what the file holds (whole, or [`Plan::held_features`]) to the slice. With `sha256`, the
/// file must have it; otherwise the layers must all have their weights in it.
fn read_for_board(cfg: &BoardConfig, path: &std::path::Path, sha256: Option<&str>, p: usize) -> Result<Model> {
    let plans = cfg.plan.variants();
    let plan = plans.get(p).with_context(|| format!("board {} has no plan {p}", cfg.board))?;
    let (b, coordinator) = (cfg.index, cfg.index == cfg.coordinator);
    let split = |id: usize| plan.tail.iter().find(|t| t.node == id).map(|t| t.cols[b] > 0);
    let keep = |id: usize| match (split(id), p) {
        (Some(has), _) => has,
        (None, 0) => cfg.plan.board_needs(b, coordinator, id),
        (None, _) => false,
    };
    let file = std::fs::File::open(path).with_context(|| format!("reading model file {}", path.display()))?;
    let mut r = Hashing { inner: std::io::BufReader::with_capacity(1 << 20, file), hash: Sha256::new() };
    let mut model = crate::modelfile::read_from(&mut r, &keep).with_context(|| format!("model file {}", path.display()))?;
    let rest = std::io::copy(&mut r, &mut std::io::sink()).with_context(|| format!("reading model file {}", path.display()))?;
    ensure!(rest == 0, "model file {} has {rest} bytes past its weights", path.display());
    if let Some(want) = sha256 {
        let got = hex(&r.hash.finalize());
        ensure!(got == want, "model file {} has sha256 {got}, board {} was built for {want}", path.display(), cfg.board);
    }
    for (id, n) in model.nodes.iter().enumerate() {
        if keep(id) {
            let missing = n.op.weights().iter().any(|w| w.len() != w.volume());
            ensure!(!missing, "model file {} lacks the weights of node {id}, which board {} computes with", path.display(), cfg.board);
        }
    }
    for t in &plan.tail {
        let cols = t.bands()[b];
        let out = model.nodes[t.node].shape[1];
        let held = cfg.plan.held_features(b, t.node);
        if let crate::ir::Op::Dense { weight, bias } = &mut model.nodes[t.node].op {
            if cols.is_empty() || weight.len() != weight.volume() {
                continue;
            }
            let at = if weight.shape[1] == out { 0 } else { held.start };
            ensure!(weight.shape[1] == out || weight.shape[1] == held.len(), "model file {}: node {} holds {} features, neither all {out} nor the {held} board {} holds", path.display(), t.node, weight.shape[1], cfg.board);
            if (at, weight.shape[1]) != (cols.start, cols.len()) {
                (*weight, *bias) = crate::ir::dense_columns(weight, bias, cols.start - at..cols.end - at);
            }
        }
    }
    Ok(model)
}

/// Where a board's model file is, and the sha256 it must have (None: a model file given with
/// another plan).
#[derive(Clone, Debug)]
pub struct ModelFile {
    pub path: std::path::PathBuf,
    pub sha256: Option<String>,
}

/// Load and check a board's model file.
pub fn load_model(cfg: &BoardConfig, path: &std::path::Path) -> Result<Model> {
    read_for_board(cfg, path, Some(&cfg.model_sha256), 0)
}

/// The model board `cfg` runs plan `p` of its variants with ([`Plan::variants`]): the plan's
/// ([`load_model`]), or a fallback's ([`fallback_model`]).
pub fn load_model_for(cfg: &BoardConfig, file: &ModelFile, p: usize) -> Result<Model> {
    let main = read_for_board(cfg, &file.path, file.sha256.as_deref(), 0)?;
    if p == 0 {
        Ok(main)
    } else {
        fallback_model(cfg, &main, file, p)
    }
}

/// The model board `cfg` runs fallback `p` with: the plan's, with the fallback's slices of its
/// split layers read again from the model file.
fn fallback_model(cfg: &BoardConfig, main: &Model, file: &ModelFile, p: usize) -> Result<Model> {
    let slices = read_for_board(cfg, &file.path, file.sha256.as_deref(), p)?;
    let mut model = main.clone();
    for t in &cfg.plan.variants()[p].tail {
        model.nodes[t.node] = slices.nodes[t.node].clone();
    }
    Ok(model)
}

/// Timing of one board's part of one group, seconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BandTiming {
    pub board: String,
    pub rows: (usize, usize),
    /// Until the input band arrived: the scatter (star), or the wait for the rows from the
    /// other boards (mesh).
    pub send_s: f64,
    pub compute_s: f64,
    /// Gather: from the end of compute until the output band arrived (mesh: last group only).
    pub recv_s: f64,
    /// Mesh: the boards this board sent rows of this band to, and the rows.
    #[serde(default)]
    pub sent_to: Vec<(String, (usize, usize))>,
    /// Mesh: for each of `sent_to`, how long after the band's computation started the rows
    /// left (its compute time so far: the whole band's, or its parts' up to the one with the
    /// rows when it computes its edges first).
    #[serde(default)]
    pub sent_after_s: Vec<f64>,
    /// Emulated boards: time the computation waited for one of this machine's compute slots
    /// (hidden inside the twin's time unless it overran).
    #[serde(default)]
    pub slot_wait_s: f64,
    /// Emulated boards: real time beyond the twin's time (what the emulation could not hide).
    #[serde(default)]
    pub overrun_s: f64,
    /// The board process's peak resident memory (VmHWM) when it had computed this, MB.
    #[serde(default)]
    pub peak_rss_mb: f64,
}

impl BandTiming {
    /// The computation's time, slot wait and overrun.
    /// Adds to the timing (a band computed in parts adds each part).
    pub fn account(&mut self, c: &Computed) {
        self.compute_s += c.took.as_secs_f64();
        self.slot_wait_s += c.slot_wait.as_secs_f64();
        self.overrun_s += c.overrun.as_secs_f64();
        self.peak_rss_mb = crate::mem::peak_rss_mb().unwrap_or(0.0);
    }
}

/// The coordinator's report of one frame.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FrameReport {
    pub frame: u64,
    pub plan: String,
    #[serde(default)]
    pub topology: Topology,
    /// Per group, per board with rows.
    pub groups: Vec<Vec<BandTiming>>,
    /// Wall time of each group (scatter to gather).
    pub group_s: Vec<f64>,
    pub tail_s: f64,
    /// Per split Dense layer of the tail, per board with features: its slice's timing
    /// (`rows`: its features).
    #[serde(default)]
    pub tail_split: Vec<Vec<BandTiming>>,
    /// Mesh: the first split layer took its input from the boards' last bands (each board's
    /// timing in `tail_split[0]`: waiting for the bands, its slice, and until the coordinator
    /// had it), not from the coordinator; `tail_s` is the rest of the tail.
    #[serde(default)]
    pub tail_gathered: bool,
    pub total_s: f64,
    /// The coordinator's own work outside bands (split, gather, concatenation), charged at
    /// its twin's speed on an emulated board.
    #[serde(default)]
    pub coordinator_s: f64,
    /// Over every computation of the frame (bands, slices, the tail, the coordinator's work):
    /// time spent waiting for a compute slot, and overruns (see [`BandTiming`]).
    #[serde(default)]
    pub slot_wait_s: f64,
    #[serde(default)]
    pub overrun_s: f64,
    /// Per board that computed in the frame (and the coordinator): its process's peak
    /// resident memory (VmHWM), MB, in plan order.
    #[serde(default)]
    pub peak_rss_mb: Vec<(String, f64)>,
    /// The boards lost that the plan the frame was answered on is without (empty: the plan
    /// itself; `plan` is then a fallback's hash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
    /// Why each earlier attempt at the frame failed (it was then computed again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<String>,
    /// Unix time, seconds, at which the coordinator found the latest of `lost` lost (a failed
    /// frame, or a heartbeat not answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at_unix_s: Option<f64>,
}

impl FrameReport {
    /// Add up the slot waits and overruns of every timing in the report.
    fn account(&mut self, own: &[Computed]) {
        let timings = self.groups.iter().chain(&self.tail_split).flatten();
        let (mut wait, mut over) = timings.fold((0.0, 0.0), |(w, o), t| (w + t.slot_wait_s, o + t.overrun_s));
        for c in own {
            wait += c.slot_wait.as_secs_f64();
            over += c.overrun.as_secs_f64();
        }
        (self.slot_wait_s, self.overrun_s) = (wait, over);
    }

    /// Every board's peak resident memory from its timings; the coordinator's (`me`) read now.
    fn peaks(&mut self, boards: &[Peer], me: usize) {
        let timings: Vec<&BandTiming> = self.groups.iter().chain(&self.tail_split).flatten().collect();
        self.peak_rss_mb = boards
            .iter()
            .enumerate()
            .filter_map(|(b, p)| {
                let seen = timings.iter().filter(|t| t.board == p.name).map(|t| t.peak_rss_mb).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
                let peak = if b == me { crate::mem::peak_rss_mb().or(seen) } else { seen };
                peak.map(|mb| (p.name.clone(), mb))
            })
            .collect();
    }
}

/// What the compute thread runs: this board's band of a group, a section of the tail (the
/// coordinator), or its slice of a split Dense layer of the tail.
/// `plan`: the index of the plan among the board's plans ([`Plan::variants`]: 0 the plan, then
/// its fallbacks).
enum Work {
    /// Rows `part` (the board's band, or a part of it) of a group, from their input.
    Band { plan: usize, group: usize, part: Rows, input: Tensor },
    /// Stage `stage` of [`tail_stages`] (a `Local` one).
    Tail { plan: usize, stage: usize, input: Tensor },
    /// This board's slice of plan.tail[split].
    Slice { plan: usize, split: usize, input: Tensor },
}

type Done = Result<(Tensor, Computed)>;

/// Work for the compute thread: of which frame, the work, where its result goes.
struct ComputeJob {
    frame: u64,
    /// Order of arrival, among one frame's jobs.
    seq: u64,
    work: Work,
    reply: std::sync::mpsc::Sender<Done>,
}

/// The compute thread takes the oldest frame's work first (then in order of arrival): with
/// several frames in flight, a board finishes frame k before it starts frame k + 1's next
/// band, so that frame k's latency is not stretched by the frames behind it.
impl Ord for ComputeJob {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.frame, other.seq).cmp(&(self.frame, self.seq))
    }
}
impl PartialOrd for ComputeJob {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for ComputeJob {
    fn eq(&self, other: &Self) -> bool {
        (self.frame, self.seq) == (other.frame, other.seq)
    }
}
impl Eq for ComputeJob {}

/// Where work is handed to the compute thread.
type ComputeQueue = std::sync::mpsc::Sender<ComputeJob>;

/// What a board runs of the tail: the coordinator its sections (by stage), every board with
/// features in a split layer its slice (by split); each with the shape of its input.
#[derive(Default)]
struct BoardTail {
    sections: HashMap<usize, (Runnable, Vec<usize>)>,
    slices: HashMap<usize, (Runnable, Vec<usize>)>,
}

impl BoardTail {
    /// Board `index`'s part of `plan`'s tail (the plan or one of its fallbacks), from a model
    /// whose split layers hold the board's slices under `plan` (see [`read_for_board`]).
    fn new(plan: &Plan, index: usize, coordinator: bool, model: &Model) -> Result<BoardTail> {
        let mut t = BoardTail::default();
        for (i, stage) in tail_stages(model, plan).into_iter().enumerate() {
            match stage {
                TailStage::Local { from, to } if coordinator => {
                    t.sections.insert(i, (runnable(section_graph(model, from, to)?)?, model.nodes[from].shape.clone()));
                }
                TailStage::Local { .. } => {}
                TailStage::Split(k) => {
                    let split = &plan.tail[k];
                    let cols = split.bands()[index];
                    if !cols.is_empty() {
                        let r = crate::exec::dense_slice_of(model, split.node, cols, cols).with_context(|| format!("the slice {cols} of node {}", split.node))?;
                        t.slices.insert(k, (r, model.nodes[split.node - 1].shape.clone()));
                    }
                }
            }
        }
        Ok(t)
    }
}

/// The board's compute thread: every band and the tail run on it, one at a time, for as long
/// as the board serves. tract keeps scratch buffers per thread; on a thread started for each
/// band they were allocated and page-faulted in again every time, which made the
/// coordinator's own bands 1.3–1.8× slower than the same bands on a worker (whose connection
/// thread lives on) and than the probe measured them.
///
/// Before it takes work, the thread builds and runs once every band this board has in the plan
/// and its part of the tail (on zeros), so that tract's lazily made state (scratch buffers,
/// packed weights, the pages behind them) exists before the first frame: the first frame then
/// costs what the next ones do. Returns once that is done, with how long it took.
fn spawn_compute(cfg: &BoardConfig, model: &Arc<Model>, tail: BoardTail, file: ModelFile) -> Result<(ComputeQueue, Duration)> {
    let (tx, rx) = std::sync::mpsc::channel::<ComputeJob>();
    let plans = cfg.plan.variants();
    let config = cfg.clone();
    let (index, speed) = (cfg.index, cfg.speed);
    let (model, threads) = (model.clone(), cfg.threads);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Duration>>();
    std::thread::Builder::new().name("compute".into()).spawn(move || {
        let t = Instant::now();
        let mut exec = BandExecutor::with_threads(model.clone(), threads);
        let warm = warm_up(&mut exec, &model, &plans[0].groups, index, &tail, speed.is_some());
        let failed = warm.is_err();
        let _ = ready_tx.send(warm.map(|()| t.elapsed()));
        if failed {
            return;
        }
        // The tail of the plan the board last ran (built when first needed: a tail's slices
        // are copies of the weights).
        let mut tails: Vec<Option<BoardTail>> = (0..plans.len()).map(|_| None).collect();
        tails[0] = Some(tail);
        let mut current = 0;
        let mut waiting = std::collections::BinaryHeap::new();
        loop {
            if waiting.is_empty() {
                match rx.recv() {
                    Ok(job) => waiting.push(job),
                    Err(_) => return,
                }
            }
            waiting.extend(rx.try_iter());
            let ComputeJob { work, reply, .. } = waiting.pop().expect("one job at least");
            // Work of another plan than the last (a fallback after a loss, the plan when the
            // board lost is back): the other plan's runnables are dropped first, so that a
            // board holds one plan's at a time (the next ones are built on their first use).
            let p = match &work {
                Work::Band { plan, .. } | Work::Tail { plan, .. } | Work::Slice { plan, .. } => *plan,
            };
            if p != current && p < plans.len() {
                // A band's runnables: the band's, or its parts'.
                let mine: Vec<(Group, Rows)> = plans[p].groups.iter().map(|g| (g.group(), g.bands()[index])).collect();
                exec.retain(|g, r| mine.iter().any(|&(m, band)| m == g && r.start >= band.start && r.end <= band.end));
                for (i, t) in tails.iter_mut().enumerate() {
                    if i != p {
                        *t = None;
                    }
                }
                current = p;
            }
            let done = match work {
                Work::Band { plan, group, part, input } => match plans.get(plan).and_then(|p| p.groups.get(group)) {
                    Some(g) if crate::mesh::intersect(part, g.bands()[index]) == part => {
                        let (out, took) = compute_warm(speed, input, |x| exec.run_band(g.group(), part, x));
                        out.map(|y| (y, took))
                    }
                    Some(g) => Err(anyhow!("rows {part} of group {group} are not in this board's band {}", g.bands()[index])),
                    None => Err(anyhow!("plan {plan} has no group {group}")),
                },
                Work::Tail { plan, stage, input } => match tail_for(&mut tails, &config, &file, plan, &model).map(|t| t.sections.get(&stage)) {
                    Ok(Some((r, _))) => run_tail(speed, r, input),
                    Ok(None) => Err(anyhow!("this board has no stage {stage} of the tail")),
                    Err(e) => Err(e),
                },
                Work::Slice { plan, split, input } => match tail_for(&mut tails, &config, &file, plan, &model).map(|t| t.slices.get(&split)) {
                    Ok(Some((r, _))) => run_tail(speed, r, input),
                    Ok(None) => Err(anyhow!("this board has no slice of split layer {split} of the tail")),
                    Err(e) => Err(e),
                },
            };
            let _ = reply.send(done);
        }
    })?;
    let took = ready_rx.recv().map_err(|_| anyhow!("board {}: the compute thread stopped while warming up", cfg.board))??;
    Ok((tx, took))
}

/// The board's part of the tail of plan `p` of its variants, built when first needed (a
/// fallback's from its slices read again from the model file).
fn tail_for<'a>(tails: &'a mut [Option<BoardTail>], cfg: &BoardConfig, file: &ModelFile, p: usize, model: &Model) -> Result<&'a BoardTail> {
    ensure!(p < tails.len(), "the board has no plan {p}");
    if tails[p].is_none() {
        let plan = &cfg.plan.variants()[p];
        let built = if p == 0 {
            BoardTail::new(plan, cfg.index, cfg.is_coordinator(), model)
        } else {
            fallback_model(cfg, model, file, p).and_then(|m| BoardTail::new(plan, cfg.index, cfg.is_coordinator(), &m))
        };
        tails[p] = Some(built.with_context(|| format!("the tail of the fallback without {}", cfg.plan.fallbacks.get(p.wrapping_sub(1)).map_or(String::new(), |f| f.lost.iter().map(|&b| cfg.peers[b].name.clone()).collect::<Vec<_>>().join(", "))))?);
    }
    Ok(tails[p].as_ref().expect("built above"))
}

/// A section or slice of the tail, computed as the board's twin would.
fn run_tail(speed: Option<f64>, r: &Runnable, input: Tensor) -> Done {
    let (y, took) = compute_warm(speed, input, |x| run(r, x));
    y.map(|y| (y, took))
}

/// Build and run once, on zeros, every band of board `index` in `groups` and its part of the
/// tail. An emulated board warms up holding a compute slot, as its computations do.
fn warm_up(exec: &mut BandExecutor, model: &Model, groups: &[crate::plan::PlanGroup], index: usize, tail: &BoardTail, emulated: bool) -> Result<()> {
    let _slot = if emulated { crate::link::emulation_slot() } else { None };
    let zeros = |shape: &[usize]| Tensor::zero::<f32>(shape);
    let mut mine = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for part in crate::mesh::group_parts(model, groups, gi, index)? {
            mine.push((g, part));
        }
    }
    let mut inputs = Vec::with_capacity(mine.len());
    for &(g, band) in &mine {
        let mut shape = model.nodes[g.from].shape.clone();
        shape[2] = exec.prepare(g.group(), band)?.0.input.len();
        inputs.push(shape);
    }
    // Everything is built (the tail before this thread started): frames reuse the heap.
    crate::link::allocator_for_frames();
    for (&(g, band), shape) in mine.iter().zip(inputs) {
        exec.run_band(g.group(), band, zeros(&shape)?).with_context(|| format!("warming up group {}..{} rows {band}", g.from, g.to))?;
    }
    for (r, shape) in tail.sections.values().chain(tail.slices.values()) {
        run(r, zeros(shape)?).context("warming up the tail")?;
    }
    Ok(())
}

/// One of the plans a board runs: the plan itself, or one of its fallbacks.
struct Variant {
    plan: Plan,
    hash: [u8; 32],
    /// The boards it is without, in plan order (empty: the plan itself).
    lost: Vec<usize>,
    /// Mesh: the exchange before each group (None before the first), then, when the plan
    /// [gathers the tail](Plan::gathers_tail), the one before the tail's first split layer.
    exchanges: Vec<Option<Redistribution>>,
}

impl Variant {
    /// The exchange before the tail's first split layer, if the boards gather its input.
    fn tail_gather(&self) -> Option<&Redistribution> {
        self.exchanges.get(self.plan.groups.len()).and_then(Option::as_ref)
    }
}

/// A worker the coordinator takes as lost: since when, and why.
type Lost = std::collections::BTreeMap<usize, (std::time::SystemTime, String)>;

struct Board {
    cfg: BoardConfig,
    /// The plan (0) and its fallbacks, as [`Plan::variants`] orders them.
    variants: Vec<Variant>,
    model: Arc<Model>,
    compute: ComputeQueue,
    link: Link,
    /// The coordinator's idle connections to the workers, by board: a frame in flight holds
    /// one connection per worker, taken here (or opened) and put back when its exchange is
    /// complete, so that frames in flight do not wait for each other's connections.
    conns: Mutex<HashMap<usize, Vec<Conn>>>,
    /// Mesh: connections to the other boards for pieces (one-way), one per board.
    piece_conns: Mutex<HashMap<usize, Arc<Mutex<Conn>>>>,
    /// The fleet's key: every connection is authenticated with it.
    key: Key,
    /// The largest payload a connection takes: the plan's largest tensor, and room for a report.
    max_payload: u64,
    /// Mesh: pieces received, by (frame, group).
    mailbox: Mailbox,
    frames: AtomicU64,
    /// Coordinator: the workers lost; every frame runs on the plan without them.
    lost: Mutex<Lost>,
    /// Coordinator: the connections each frame in flight holds to each worker, shut down when
    /// that worker is found lost (so that the frame fails at once and is computed again).
    watched: Mutex<HashMap<u64, Vec<(usize, TcpStream)>>>,
    /// Jobs handed to the compute thread so far (their order of arrival).
    jobs: AtomicU64,
}

/// Pieces of group inputs received from other boards, routed by (frame, group), and the boards
/// whose piece connection closed.
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    changed: Condvar,
}

/// Pieces of one group's input: (sender, rows, tensor).
type Pieces = Vec<(usize, Rows, Tensor)>;

#[derive(Default)]
struct MailboxState {
    /// By (frame, group): when the first piece arrived, and the pieces.
    pieces: HashMap<(u64, usize), (Instant, Pieces)>,
    /// Board index → when and why its piece connection closed (cleared when it sends again).
    lost: HashMap<usize, (Instant, String)>,
    /// Frames the coordinator gave up.
    aborted: std::collections::HashSet<u64>,
}

impl Mailbox {
    fn put(&self, frame: u64, group: usize, from: usize, rows: Rows, t: Tensor) {
        let mut s = self.state.lock().unwrap();
        s.lost.remove(&from);
        s.pieces.entry((frame, group)).or_insert_with(|| (Instant::now(), Vec::new())).1.push((from, rows, t));
        self.changed.notify_all();
    }

    fn lose(&self, from: usize, why: String) {
        self.state.lock().unwrap().lost.insert(from, (Instant::now(), why));
        self.changed.notify_all();
    }

    fn abort(&self, frame: u64) {
        let mut s = self.state.lock().unwrap();
        s.aborted.insert(frame);
        s.pieces.retain(|k, _| k.0 != frame);
        self.changed.notify_all();
    }

    /// Wait until every expected piece (sender, rows) of (frame, group) is here, and take them.
    /// Fails naming the board when its connection was lost since `since` (the frame's start
    /// here: a board restarted before the frame is not taken as lost), or the deadline passes.
    fn take(&self, frame: u64, group: usize, want: &[(usize, Rows)], since: Instant, deadline: Duration, peers: &[Peer]) -> Result<Vec<(Rows, Tensor)>> {
        let until = Instant::now() + deadline;
        let mut s = self.state.lock().unwrap();
        loop {
            ensure!(!s.aborted.contains(&frame), "frame {frame} was given up by the coordinator");
            let have = s.pieces.get(&(frame, group)).map(|p| &p.1);
            let missing: Vec<(usize, Rows)> =
                want.iter().copied().filter(|&(from, rows)| !have.is_some_and(|h| h.iter().any(|p| p.0 == from && p.1 == rows))).collect();
            if missing.is_empty() {
                let mut all = s.pieces.remove(&(frame, group)).map(|p| p.1).unwrap_or_default();
                // Leftovers of frames given up are dropped once no frame in flight can still
                // want them (every wait ends at the deadline). Frames in flight are kept
                // whatever their age in frames.
                s.pieces.retain(|_, p| p.0.elapsed() < 4 * deadline);
                let taken = want
                    .iter()
                    .map(|&(from, rows)| {
                        let i = all.iter().position(|p| p.0 == from && p.1 == rows).expect("checked above");
                        let (_, r, t) = all.swap_remove(i);
                        (r, t)
                    })
                    .collect();
                return Ok(taken);
            }
            if let Some((from, why)) = missing.iter().find_map(|(from, _)| s.lost.get(from).filter(|l| l.0 >= since).map(|l| (*from, l.1.clone()))) {
                bail!("board {} ({}) is lost: {why}", peers[from].name, peers[from].addr);
            }
            let now = Instant::now();
            if now >= until {
                let (from, rows) = missing[0];
                bail!("rows {rows} of group {group} from board {} ({}) did not arrive within {:.1} s", peers[from].name, peers[from].addr, deadline.as_secs_f64());
            }
            s = self.changed.wait_timeout(s, until - now).unwrap().0;
        }
    }
}

/// The largest message payload a fleet running `model` sends: its largest tensor, and room
/// for a frame's report.
pub fn max_payload(model: &Model) -> u64 {
    model.nodes.iter().map(|n| 4 * n.shape.iter().product::<usize>() as u64).max().unwrap_or(0) + (1 << 20)
}

/// Serve on `listen` until an authenticated Shutdown message arrives.
pub fn serve(mut cfg: BoardConfig, model: Model, file: ModelFile, listen: &str, key: Key) -> Result<()> {
    cfg.deploy_plan()?;
    crate::pin::pin_to(&cfg.cores).with_context(|| format!("board {}", cfg.board))?;
    let model = Arc::new(model);
    cfg.plan.validate(&model)?;
    let hash = cfg.plan.hash();
    let tail = BoardTail::new(&cfg.plan, cfg.index, cfg.is_coordinator(), &model)?;
    // Every band this board has in the plan, and the tail, built and run once before serving.
    let (compute, warm) = spawn_compute(&cfg, &model, tail, file)?;
    let mut variants = Vec::new();
    let lost = std::iter::once(vec![]).chain(cfg.plan.fallbacks.iter().map(|f| f.lost.clone()));
    for (plan, lost) in cfg.plan.variants().into_iter().zip(lost) {
        let mut exchanges = vec![None];
        for w in plan.groups.windows(2) {
            exchanges.push(Some(redistribution(&model, &w[0].rows, w[1].group(), &w[1].rows)?));
        }
        if let (true, Some(last)) = (plan.gathers_tail(&model), plan.groups.last()) {
            exchanges.push(Some(tail_gather(&model, &last.rows, last.to, &plan.tail[0].cols)?));
        }
        variants.push(Variant { hash: plan_bytes(&plan.hash()), plan, lost, exchanges });
    }
    // Frame ids start from the clock, so that a restarted coordinator's frames never meet an
    // earlier process's leftovers in a worker's mailbox.
    let cap = max_payload(&model);
    let first_frame = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
    let board = Arc::new(Board {
        variants,
        compute,
        model,
        link: Link::new(cfg.peers[cfg.index].link),
        conns: Mutex::new(HashMap::new()),
        piece_conns: Mutex::new(HashMap::new()),
        key,
        max_payload: cap,
        mailbox: Mailbox::default(),
        frames: AtomicU64::new(first_frame),
        jobs: AtomicU64::new(0),
        lost: Mutex::new(Lost::new()),
        watched: Mutex::new(HashMap::new()),
        cfg,
    });
    if board.cfg.is_coordinator() && board.variants.len() > 1 {
        if let Some(ms) = board.cfg.heartbeat_ms {
            for b in board.workers(0) {
                let me = board.clone();
                std::thread::Builder::new().name(format!("heartbeat-{b}")).spawn(move || me.heartbeat(b, Duration::from_millis(ms)))?;
            }
        }
    }
    let listener = TcpListener::bind(listen).with_context(|| format!("board {}: listening on {listen}", board.cfg.board))?;
    let pinned = if board.cfg.cores.is_empty() { String::new() } else { format!(", pinned to CPUs {:?}", board.cfg.cores) };
    let fallbacks = match board.variants.len() - 1 {
        0 => String::new(),
        n => format!(", {n} fallback plans"),
    };
    eprintln!("legion board {} (plan {}{fallbacks}, runtime {}{pinned}) warmed up in {:.1} ms, listening on {listen}", board.cfg.board, &hash[..16], RUNTIME_VERSION, warm.as_secs_f64() * 1e3);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let b = board.clone();
        std::thread::spawn(move || {
            if let Err(e) = b.connection(stream) {
                eprintln!("board {}: {e:#}", b.cfg.board);
            }
        });
    }
    Ok(())
}

impl Board {
    /// Run `work` on the compute thread; returns its result and the emulated compute time.
    /// Frame `frame`'s work, taken oldest frame first.
    fn on_compute_thread(&self, frame: u64, work: Work) -> Done {
        let (reply, rx) = std::sync::mpsc::channel();
        let stopped = || anyhow!("board {}: the compute thread has stopped", self.cfg.board);
        let seq = self.jobs.fetch_add(1, Ordering::Relaxed);
        self.compute.send(ComputeJob { frame, seq, work, reply }).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }

    fn connection(&self, stream: TcpStream) -> Result<()> {
        // The board whose pieces arrive on this connection, if any: lost when it closes.
        let mut sender = None;
        let result = self.messages(stream, &mut sender);
        if let Some(b) = sender {
            let why = match &result {
                Ok(()) => "its connection closed".to_string(),
                Err(e) => format!("{e:#}"),
            };
            self.mailbox.lose(b, why);
        }
        result
    }

    fn messages(&self, stream: TcpStream, sender: &mut Option<usize>) -> Result<()> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(self.cfg.deadline()))?;
        let mut conn = Conn::accept(stream, self.key.clone(), self.max_payload)?;
        loop {
            // A connection may idle between frames; a message, once started, has a deadline.
            conn.stream().set_read_timeout(None)?;
            if conn.stream().peek(&mut [0u8; 1])? == 0 {
                return Ok(());
            }
            conn.stream().set_read_timeout(Some(self.cfg.deadline()))?;
            // A message that fails its authentication ends the connection unanswered.
            let peer = conn.stream().peer_addr().map_or_else(|_| "a peer".to_string(), |a| a.to_string());
            let Some(msg) = conn.recv().with_context(|| format!("refused {peer}"))? else { return Ok(()) };
            let h = &msg.header;
            let main = self.variants[0].hash;
            if h.kind == Kind::Hello {
                let text = format!("{} {} {}", self.cfg.board, RUNTIME_VERSION, self.cfg.plan.hash());
                conn.send(&Message::text(Kind::HelloReply, main, h.frame, &text))?;
                continue;
            }
            // The plan, or one of its fallbacks: the hash says which.
            let Some(v) = self.variants.iter().position(|p| p.hash == h.plan) else {
                let text = format!(
                    "plan mismatch: board {} runs plan {}, the request is for plan {}",
                    self.cfg.board,
                    self.cfg.plan.hash(),
                    hex(&h.plan)
                );
                conn.send(&Message::text(Kind::Error, main, h.frame, &text))?;
                continue;
            };
            let reply = match h.kind {
                Kind::Piece => {
                    let from = h.aux as usize;
                    ensure!(from < self.cfg.peers.len() && from != self.cfg.index, "a piece from board index {from}");
                    *sender = Some(from);
                    self.shape_receive(from, msg.wire_len());
                    self.mailbox.put(h.frame, h.group as usize, from, Rows::new(h.rows.0 as usize, h.rows.1 as usize), msg.to_tensor()?);
                    continue;
                }
                Kind::Band => self.band(v, &msg),
                Kind::TailSlice => self.slice(v, &msg),
                Kind::MeshFrame => self.mesh_frame(v, &msg, &mut conn).map(|()| vec![]),
                Kind::Infer if v == 0 => self.infer(&msg, &mut conn).map(|()| vec![]),
                Kind::Infer => Err(anyhow!("a frame is asked for with the plan's hash, not a fallback's")),
                Kind::Shutdown => {
                    eprintln!("board {}: shutdown requested", self.cfg.board);
                    let _ = conn.stream().shutdown(Shutdown::Both);
                    std::process::exit(0);
                }
                k => Err(anyhow!("unexpected {k:?} message")),
            };
            match reply {
                Ok(msgs) => {
                    for m in msgs {
                        conn.send(&m)?;
                    }
                }
                Err(e) => conn.send(&Message::text(Kind::Error, self.variants[v].hash, h.frame, &format!("board {}: {e:#}", self.cfg.board)))?,
            }
        }
    }

    /// Run one band (a worker's job) of plan `v` with the board's emulated speed.
    fn run_band(&self, v: usize, frame: u64, group: usize, part: Rows, input: Tensor) -> Done {
        self.on_compute_thread(frame, Work::Band { plan: v, group, part, input })
    }

    fn band(&self, v: usize, msg: &Message) -> Result<Vec<Message>> {
        let h = &msg.header;
        self.shape_receive(self.cfg.coordinator, msg.wire_len());
        let band = self.variants[v].plan.groups.get(h.group as usize).map(|g| g.bands()[self.cfg.index]).with_context(|| format!("no group {}", h.group))?;
        let (out, took) = self.run_band(v, h.frame, h.group as usize, band, msg.to_tensor()?)?;
        self.result_and_timing(v, h, &out, took)
    }

    /// A worker's answer to a band or a slice: the result (aux: compute time in µs), then its
    /// timing (compute, slot wait, overrun) as a report.
    fn result_and_timing(&self, v: usize, h: &crate::wire::Header, out: &Tensor, took: Computed) -> Result<Vec<Message>> {
        let hash = self.variants[v].hash;
        let mut reply = Message::tensor(Kind::BandResult, hash, h.frame, h.group, h.rows, out)?;
        reply.header.aux = took.took.as_micros() as u64;
        self.shape_send(self.cfg.coordinator, reply.wire_len());
        let mut t = BandTiming::default();
        t.account(&took);
        Ok(vec![reply, Message::text(Kind::Report, hash, h.frame, &serde_json::to_string(&t)?)])
    }

    /// A worker's slice of a split layer of the tail.
    fn slice(&self, v: usize, msg: &Message) -> Result<Vec<Message>> {
        let h = &msg.header;
        self.shape_receive(self.cfg.coordinator, msg.wire_len());
        let (out, took) = self.on_compute_thread(h.frame, Work::Slice { plan: v, split: h.group as usize, input: msg.to_tensor()? })?;
        self.result_and_timing(v, h, &out, took)
    }

    /// A split Dense layer of the tail: its input to every board with features, their slices
    /// back (the coordinator computes its own meanwhile), concatenated in board order.
    fn split_layer(&self, v: usize, frame: u64, k: usize, x: Tensor, report: &mut FrameReport, own: &mut Vec<Computed>) -> Result<Tensor> {
        let split = &self.variants[v].plan.tail[k];
        let results: Vec<Result<(Tensor, BandTiming)>> = std::thread::scope(|s| {
            let handles: Vec<_> = split
                .bands()
                .into_iter()
                .enumerate()
                .filter(|(_, c)| !c.is_empty())
                .map(|(b, cols)| {
                    let x = &x;
                    s.spawn(move || -> Result<(Tensor, BandTiming)> {
                        let mut t = BandTiming { board: self.cfg.peers[b].name.clone(), rows: (cols.start, cols.end), ..Default::default() };
                        let y = if b == self.cfg.index {
                            let (y, took) = self.on_compute_thread(frame, Work::Slice { plan: v, split: k, input: x.clone() })?;
                            t.account(&took);
                            y
                        } else {
                            self.remote(v, b, Kind::TailSlice, frame, k, (cols.start, cols.end), x, &mut t)?
                        };
                        Ok((y, t))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a slice thread panicked")))).collect()
        });
        let mut parts = Vec::new();
        let mut timings = Vec::new();
        for r in results {
            let (y, t) = r.with_context(|| format!("frame {frame}, tail layer {}", split.node))?;
            parts.push(y);
            timings.push(t);
        }
        report.tail_split.push(timings);
        self.charge(report, own, || concat_features(parts))
    }

    /// The coordinator's own work (split, gather, concatenation): on an emulated board,
    /// computed holding a slot and charged at its twin's speed, like any computation.
    fn charge<R>(&self, report: &mut FrameReport, own: &mut Vec<Computed>, f: impl FnOnce() -> R) -> R {
        let (r, c) = compute_accounted(self.cfg.speed, f);
        report.coordinator_s += c.took.as_secs_f64();
        own.push(c);
        r
    }

    /// An emulated board holds what it sends to board `to` until its port has let it go.
    fn shape_send(&self, to: usize, bytes: usize) {
        if self.cfg.speed.is_some() {
            self.link.send_to(&self.cfg.peers[to].link, bytes);
        }
    }

    /// An emulated board holds what it read from board `from` until its port would have
    /// delivered it.
    fn shape_receive(&self, from: usize, bytes: usize) {
        if self.cfg.speed.is_some() {
            self.link.receive_from(&self.cfg.peers[from].link, bytes);
        }
    }

    /// A worker's part of a mesh frame of plan `v`: its bands of every group, then its last
    /// band back to the coordinator with its timings.
    fn mesh_frame(&self, v: usize, msg: &Message, client: &mut Conn) -> Result<()> {
        let h = &msg.header;
        let hash = self.variants[v].hash;
        self.shape_receive(self.cfg.coordinator, msg.wire_len());
        let first = if msg.header.shape.is_empty() { None } else { Some(msg.to_tensor()?) };
        let (last, timings) = self.mesh_part(v, h.frame, first)?;
        let reply = match &last {
            Some((rows, t)) => Message::tensor(Kind::BandResult, hash, h.frame, h.group, (rows.start as u32, rows.end as u32), t)?,
            None => Message::text(Kind::BandResult, hash, h.frame, ""),
        };
        self.shape_send(self.cfg.coordinator, reply.wire_len());
        client.send(&reply)?;
        client.send(&Message::text(Kind::Report, hash, h.frame, &serde_json::to_string(&timings)?))
    }

    /// This board's bands of every group of a mesh frame of plan `v`: the first group's from
    /// `first`, the next ones from what it kept of its own output and the pieces the other
    /// boards send it; after each band, the pieces other boards need go out (on threads, while
    /// it waits for its own). Returns its band of the last group and per group its timing
    /// (None: no band).
    fn mesh_part(&self, v: usize, frame: u64, first: Option<Tensor>) -> Result<(Option<(Rows, Tensor)>, Vec<Option<BandTiming>>)> {
        let variant = &self.variants[v];
        let groups = &variant.plan.groups;
        let me = self.cfg.index;
        let mut timings = Vec::new();
        let mut held: Option<(Rows, Tensor)> = None;
        let mut kept: Vec<(Rows, Tensor)> = Vec::new();
        let started = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let mut sends = Vec::new();
            let mut ready = Instant::now();
            for (gi, g) in groups.iter().enumerate() {
                let out = g.bands()[me];
                let input = match &variant.exchanges[gi] {
                    None => first.clone(),
                    Some(r) if !r.needs[me].is_empty() => {
                        let mut got = self.mailbox.take(frame, gi, &expected(r, me), started, self.cfg.deadline(), &self.cfg.peers).with_context(|| format!("frame {frame}, group {gi}"))?;
                        got.append(&mut kept);
                        Some(crate::mesh::assemble(r.needs[me], got)?)
                    }
                    Some(_) => None,
                };
                let Some(input) = input else {
                    timings.push(None);
                    held = None;
                    continue;
                };
                let mut t = BandTiming { board: self.cfg.board.clone(), rows: (out.start, out.end), ..Default::default() };
                t.send_s = twin_time(ready.elapsed()).as_secs_f64();
                let next = variant.exchanges.get(gi + 1).and_then(Option::as_ref);
                // The band in parts when the group computes its edges first: each part's
                // pieces leave as soon as it is computed.
                let parts = match next {
                    Some(next) if g.edges_first => band_parts(next, me, out),
                    _ => vec![out],
                };
                let mut ys = Vec::with_capacity(parts.len());
                let mut input = Some(input);
                for &part in &parts {
                    let x = if part == out { input.take().context("a band in one part")? } else { part_input(&self.model, g.group(), out, input.as_ref().context("a band in parts")?, part)? };
                    let (y, took) = self.run_band(v, frame, gi, part, x)?;
                    t.account(&took);
                    if let Some(next) = next {
                        for (to, rows, piece) in part_pieces(next, me, part, &y)? {
                            t.sent_to.push((self.cfg.peers[to].name.clone(), (rows.start, rows.end)));
                            t.sent_after_s.push(t.compute_s);
                            sends.push(s.spawn(move || self.send_piece(v, to, frame, gi + 1, rows, &piece)));
                        }
                    }
                    ys.push((part, y));
                }
                ready = Instant::now();
                let band = (out, assemble(out, ys)?);
                if let Some(keep) = next.map(|r| r.keeps[me]).filter(|k| !k.is_empty()) {
                    kept.push((keep, band.1.slice(2, keep.start - out.start, keep.end - out.start)?));
                }
                timings.push(Some(t));
                held = Some(band);
            }
            if let Some(r) = variant.tail_gather() {
                // The tail's first split layer, on the last group's output gathered from every
                // board: this board's slice (if it has features) goes back instead of its band.
                held = None;
                let mut t = None;
                if !r.needs[me].is_empty() {
                    let mut got = self.mailbox.take(frame, groups.len(), &expected(r, me), started, self.cfg.deadline(), &self.cfg.peers).with_context(|| format!("frame {frame}, the tail's input"))?;
                    got.append(&mut kept);
                    let x = crate::mesh::flatten(crate::mesh::assemble(r.needs[me], got)?)?;
                    let cols = variant.plan.tail[0].bands()[me];
                    let mut timing = BandTiming { board: self.cfg.board.clone(), rows: (cols.start, cols.end), ..Default::default() };
                    timing.send_s = twin_time(ready.elapsed()).as_secs_f64();
                    let (y, took) = self.on_compute_thread(frame, Work::Slice { plan: v, split: 0, input: x })?;
                    timing.account(&took);
                    t = Some(timing);
                    held = Some((cols, y));
                }
                timings.push(t);
            }
            for h in sends {
                h.join().unwrap_or_else(|_| Err(anyhow!("a piece sender panicked")))?;
            }
            Ok(())
        })?;
        Ok((held, timings))
    }

    /// Send rows of group `group`'s input to board `to`, on this board's piece connection. A
    /// connection that fails is replaced once (the board may have restarted since it was
    /// opened).
    fn send_piece(&self, v: usize, to: usize, frame: u64, group: usize, rows: Rows, t: &Tensor) -> Result<()> {
        let peer = &self.cfg.peers[to];
        let mut msg = Message::tensor(Kind::Piece, self.variants[v].hash, frame, group as u32, (rows.start as u32, rows.end as u32), t)?;
        msg.header.aux = self.cfg.index as u64;
        self.shape_send(to, msg.wire_len());
        let mut result = Ok(());
        for _ in 0..2 {
            result = (|| -> Result<()> {
                let conn = self.connection_in(&self.piece_conns, to)?;
                let mut conn = conn.lock().unwrap();
                conn.send(&msg)
            })();
            if result.is_ok() {
                break;
            }
            self.piece_conns.lock().unwrap().remove(&to);
        }
        result.with_context(|| format!("sending rows {rows} of group {group} to board {} ({})", peer.name, peer.addr))
    }

    /// The coordinator's frame: on the plan without the boards lost (the plan itself while
    /// none is), the groups in its topology, then the tail; answers InferResult + Report. A
    /// frame that fails because a worker is lost is computed again on the fallback without it.
    fn infer(&self, msg: &Message, client: &mut Conn) -> Result<()> {
        ensure!(self.cfg.is_coordinator(), "board {} is not the coordinator", self.cfg.board);
        let x = to_nchw(&self.model, msg.to_tensor()?)?;
        let mut retried: Vec<String> = Vec::new();
        loop {
            let (v, lost_at) = self.current_variant()?;
            let frame = self.frames.fetch_add(1, Ordering::SeqCst);
            let attempt = self.attempt(v, frame, x.clone());
            self.watched.lock().unwrap().remove(&frame);
            match attempt {
                Ok((out, mut report)) => {
                    report.lost = self.variants[v].lost.iter().map(|&b| self.cfg.peers[b].name.clone()).collect();
                    report.retried = retried;
                    report.lost_at_unix_s = lost_at;
                    let hash = self.variants[0].hash;
                    client.send(&Message::tensor(Kind::InferResult, hash, frame, 0, (0, 0), &out)?)?;
                    client.send(&Message::text(Kind::Report, hash, frame, &serde_json::to_string(&report)?))?;
                    return Ok(());
                }
                Err(e) => {
                    // Without fallbacks a failed frame is an error; with them, the workers the
                    // frame used are asked whether they are there, and the frame is computed
                    // again if one is found lost (or, once, if none is: a connection to a
                    // board that came back may have been stale).
                    if self.variants.len() == 1 {
                        return Err(e);
                    }
                    let newly = self.check_workers(v);
                    let found = !newly.is_empty() || self.lost.lock().unwrap().keys().copied().collect::<Vec<_>>() != self.variants[v].lost;
                    let again = retried.len() < self.cfg.peers.len() && (found || !retried.iter().any(|r| r.starts_with("(no board lost)")));
                    if !again {
                        return Err(e);
                    }
                    eprintln!("board {}: frame {frame} failed ({e:#}); computed again", self.cfg.board);
                    retried.push(if found { format!("{e:#}") } else { format!("(no board lost) {e:#}") });
                }
            }
        }
    }

    /// Frame `frame` on plan `v`: its output and report.
    fn attempt(&self, v: usize, frame: u64, x: Tensor) -> Result<(Tensor, FrameReport)> {
        let t0 = Instant::now();
        let plan = &self.variants[v].plan;
        let mut report = FrameReport { frame, plan: hex(&self.variants[v].hash), topology: plan.topology, ..Default::default() };
        let mut own = Vec::new();
        let x = match plan.topology {
            Topology::Star => self.star_groups(v, frame, x, &mut report, &mut own)?,
            Topology::Mesh => self.mesh_groups(v, frame, x, t0, &mut report, &mut own)?,
        };
        let tt = Instant::now();
        let mut out = x;
        // Gathered on the boards, the tail's first split layer is done (with the Flatten before it).
        let stages = tail_stages(&self.model, plan);
        let done = if self.variants[v].tail_gather().is_some() { stages.iter().position(|s| matches!(s, TailStage::Split(0))).map_or(0, |i| i + 1) } else { 0 };
        for (stage, s) in stages.into_iter().enumerate().skip(done) {
            out = match s {
                TailStage::Local { .. } => {
                    let (y, c) = self.on_compute_thread(frame, Work::Tail { plan: v, stage, input: out })?;
                    own.push(c);
                    y
                }
                TailStage::Split(k) => self.split_layer(v, frame, k, out, &mut report, &mut own)?,
            };
        }
        report.tail_s = twin_time(tt.elapsed()).as_secs_f64();
        report.total_s = twin_time(t0.elapsed()).as_secs_f64();
        report.account(&own);
        report.peaks(&self.cfg.peers, self.cfg.index);
        Ok((out, report))
    }

    /// The plan for the workers lost now: (its index, when the latest loss was found).
    fn current_variant(&self) -> Result<(usize, Option<f64>)> {
        let lost = self.lost.lock().unwrap();
        let set: Vec<usize> = lost.keys().copied().collect();
        let at = lost.values().map(|l| l.0.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())).reduce(f64::max);
        match self.variants.iter().position(|p| p.lost == set) {
            Some(v) => Ok((v, at)),
            None => {
                let why: Vec<String> = lost.iter().map(|(&b, (_, why))| format!("board {} ({}): {why}", self.cfg.peers[b].name, self.cfg.peers[b].addr)).collect();
                let most = self.variants.iter().map(|v| v.lost.len()).max().unwrap_or(0);
                bail!("{} workers of the fleet are lost and the plan has no fallback without them (it has fallbacks for up to {most} lost workers): {}; compile the fleet without them", set.len(), why.join("; "))
            }
        }
    }

    /// The workers with work in plan `v` (not the coordinator).
    fn workers(&self, v: usize) -> Vec<usize> {
        let p = &self.variants[v].plan;
        (0..self.cfg.peers.len())
            .filter(|&b| b != self.cfg.index && (p.groups.iter().any(|g| g.rows[b] > 0) || p.tail.iter().any(|t| t.cols[b] > 0)))
            .collect()
    }

    /// How long a worker may take to answer a heartbeat or a check.
    fn heartbeat_deadline(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_ms.unwrap_or(2000))
    }

    /// Ask every worker of plan `v` not yet lost whether it is there (at once, each within the
    /// heartbeat deadline); those that do not answer with the plan are taken as lost. Returns
    /// them.
    fn check_workers(&self, v: usize) -> Vec<usize> {
        let known: Vec<usize> = self.lost.lock().unwrap().keys().copied().collect();
        let ask: Vec<usize> = self.workers(v).into_iter().filter(|b| !known.contains(b)).collect();
        let deadline = self.heartbeat_deadline();
        let answers: Vec<(usize, Result<()>)> = std::thread::scope(|s| {
            let handles: Vec<_> = ask.iter().map(|&b| (b, s.spawn(move || self.is_there(b, deadline)))).collect();
            handles.into_iter().map(|(b, h)| (b, h.join().unwrap_or_else(|_| Err(anyhow!("the check panicked"))))).collect()
        });
        let mut newly = Vec::new();
        for (b, answer) in answers {
            if let Err(e) = answer {
                self.mark_lost(b, format!("{e:#}"));
                newly.push(b);
            }
        }
        newly
    }

    /// Does worker `b` answer, within `deadline`, with the plan?
    fn is_there(&self, b: usize, deadline: Duration) -> Result<()> {
        let (_, _, hash) = hello(&self.cfg.peers[b].addr, &self.key, deadline)?;
        ensure!(plan_bytes(&hash) == self.variants[0].hash, "it answers with another plan ({})", &hash[..16.min(hash.len())]);
        Ok(())
    }

    /// Take worker `b` as lost: the frames holding connections to it fail at once, and the
    /// next frames run on the fallback without it.
    fn mark_lost(&self, b: usize, why: String) {
        let peer = &self.cfg.peers[b];
        {
            let mut lost = self.lost.lock().unwrap();
            if lost.contains_key(&b) {
                return;
            }
            lost.insert(b, (std::time::SystemTime::now(), why.clone()));
        }
        eprintln!("board {}: worker {} ({}) is lost: {why}", self.cfg.board, peer.name, peer.addr);
        self.forget(b);
        for streams in self.watched.lock().unwrap().values() {
            for (_, s) in streams.iter().filter(|(w, _)| *w == b) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Drop the idle connections to board `b` (it was lost, or it came back as a new process).
    fn forget(&self, b: usize) {
        self.conns.lock().unwrap().remove(&b);
        self.piece_conns.lock().unwrap().remove(&b);
    }

    /// The coordinator's heartbeat to worker `b`: every quarter of `deadline` a Hello; a worker
    /// that has not answered within the rest of it is lost. A lost worker that answers again
    /// with the plan is taken back: the next frame runs on the plan with it.
    fn heartbeat(&self, b: usize, deadline: Duration) {
        let period = deadline / 4;
        let wait = deadline - period;
        let peer = &self.cfg.peers[b];
        let mut conn: Option<Conn> = None;
        loop {
            std::thread::sleep(period);
            let answer = (|| -> Result<()> {
                if conn.is_none() {
                    conn = Some(connect_with(&peer.addr, &self.key, wait, 1 << 20)?);
                }
                let c = conn.as_mut().expect("connected above");
                c.stream().set_read_timeout(Some(wait))?;
                c.send(&Message::text(Kind::Hello, [0; 32], 0, ""))?;
                let reply = c.recv()?.ok_or_else(|| anyhow!("the connection closed"))?;
                ensure!(reply.header.kind == Kind::HelloReply, "it answered {:?}", reply.header.kind);
                let text = reply.as_text();
                let hash = text.split_whitespace().nth(2).unwrap_or_default();
                ensure!(plan_bytes(hash) == self.variants[0].hash, "it answers with another plan ({hash})");
                Ok(())
            })();
            let lost = self.lost.lock().unwrap().contains_key(&b);
            match answer {
                Ok(()) if lost => {
                    self.forget(b);
                    self.lost.lock().unwrap().remove(&b);
                    eprintln!("board {}: worker {} ({}) answers again: taken back from the next frame", self.cfg.board, peer.name, peer.addr);
                }
                Ok(()) => {}
                Err(e) => {
                    conn = None;
                    if !lost {
                        self.mark_lost(b, format!("no heartbeat answer within {} ms: {e:#}", deadline.as_millis()));
                    }
                }
            }
        }
    }

    /// Star: every group's bands out from the coordinator and back (split, scatter in
    /// parallel, gather).
    fn star_groups(&self, v: usize, frame: u64, mut x: Tensor, report: &mut FrameReport, own: &mut Vec<Computed>) -> Result<Tensor> {
        for (gi, g) in self.variants[v].plan.groups.iter().enumerate() {
            let tg = Instant::now();
            let inputs = self.charge(report, own, || scatter(&self.model, g, &x))?;
            let bands = g.bands();
            let results: Vec<Result<(Option<(Rows, Tensor)>, BandTiming)>> = std::thread::scope(|s| {
                let handles: Vec<_> = inputs
                    .into_iter()
                    .enumerate()
                    .filter_map(|(b, input)| input.map(|i| (b, i)))
                    .map(|(b, input)| {
                        let out = bands[b];
                        s.spawn(move || -> Result<(Option<(Rows, Tensor)>, BandTiming)> {
                            let mut t = BandTiming { board: self.cfg.peers[b].name.clone(), rows: (out.start, out.end), ..Default::default() };
                            let y = if b == self.cfg.index {
                                let (y, took) = self.run_band(v, frame, gi, out, input)?;
                                t.account(&took);
                                y
                            } else {
                                self.remote(v, b, Kind::Band, frame, gi, (out.start, out.end), &input, &mut t)?
                            };
                            Ok((Some((out, y)), t))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a band thread panicked")))).collect()
            });
            let mut parts = Vec::new();
            let mut timings = Vec::new();
            for r in results {
                let (y, t) = r.with_context(|| format!("frame {frame}, group {gi}"))?;
                parts.push(y);
                timings.push(t);
            }
            x = self.charge(report, own, || gather(parts))?;
            report.groups.push(timings);
            report.group_s.push(twin_time(tg.elapsed()).as_secs_f64());
        }
        Ok(x)
    }

    /// Mesh: every board's input band of the first group out from the coordinator; the boards
    /// exchange rows between groups themselves ([`Board::mesh_part`], the coordinator's own
    /// part included); their bands of the last group come back and are gathered. The first
    /// failure gives the frame up at once: the other boards' connections are shut down.
    fn mesh_groups(&self, v: usize, frame: u64, x: Tensor, t0: Instant, report: &mut FrameReport, own: &mut Vec<Computed>) -> Result<Tensor> {
        let groups = &self.variants[v].plan.groups;
        if groups.is_empty() {
            return Ok(x);
        }
        let me = self.cfg.index;
        let mut first = self.charge(report, own, || scatter(&self.model, &groups[0], &x))?;
        // The boards with rows, and those with features of a split layer gathered on the boards.
        let gathers = self.variants[v].tail_gather().map(|r| &r.needs);
        let active: Vec<usize> = (0..self.cfg.peers.len()).filter(|&b| groups.iter().any(|g| g.rows[b] > 0) || gathers.is_some_and(|n| !n[b].is_empty())).collect();
        type Part = (Option<(Rows, Tensor)>, Vec<Option<BandTiming>>, f64);
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Part>)>();
        let (mut conns, mut stops) = (HashMap::new(), Vec::new());
        for &b in active.iter().filter(|&&b| b != me) {
            let conn = self.checkout(b).with_context(|| format!("frame {frame}: board {} ({})", self.cfg.peers[b].name, self.cfg.peers[b].addr))?;
            self.watch(frame, b, &conn);
            stops.push(conn.stream().try_clone()?);
            conns.insert(b, conn);
        }
        let mut parts: Vec<Option<Part>> = (0..self.cfg.peers.len()).map(|_| None).collect();
        let mut failure: Option<anyhow::Error> = None;
        std::thread::scope(|s| {
            for &b in &active {
                let (tx, input) = (tx.clone(), first[b].take());
                let conn = conns.remove(&b);
                s.spawn(move || {
                    let part = match conn {
                        None => self.mesh_part(v, frame, input).map(|(last, t)| (last, t, twin_time(t0.elapsed()).as_secs_f64())),
                        Some(mut conn) => {
                            let part = self.remote_mesh(v, b, &mut conn, frame, input, t0);
                            if part.is_ok() {
                                self.idle(b, conn);
                            }
                            part
                        }
                    };
                    let _ = tx.send((b, part));
                });
            }
            drop(tx);
            for (b, part) in rx {
                match part {
                    Ok(p) => parts[b] = Some(p),
                    Err(e) if failure.is_none() => {
                        failure = Some(e.context(format!("frame {frame}")));
                        for stop in &stops {
                            let _ = stop.shutdown(Shutdown::Both);
                        }
                        self.mailbox.abort(frame);
                    }
                    Err(_) => {}
                }
            }
        });
        if let Some(e) = failure {
            // The connections of a frame given up were shut down; idle ones to those boards
            // may be stale too.
            let mut c = self.conns.lock().unwrap();
            for b in &active {
                c.remove(b);
            }
            return Err(e);
        }
        // A board's last band (or, gathering the tail, its slice) came back this long after it
        // was done (its waits and computes add up to when it was done).
        let gathered = self.variants[v].tail_gather().is_some();
        let steps = groups.len() + gathered as usize;
        let busy: Vec<f64> = parts.iter().map(|p| p.as_ref().map_or(0.0, |p| p.1.iter().flatten().map(|t| t.send_s + t.compute_s).sum())).collect();
        for gi in 0..steps {
            let mut timings = Vec::new();
            for (b, part) in parts.iter_mut().enumerate() {
                let Some(part) = part else { continue };
                let mut t = part.1.get_mut(gi).and_then(Option::take);
                if gi + 1 == steps {
                    if let Some(t) = t.as_mut() {
                        t.recv_s = (part.2 - busy[b]).max(0.0);
                    }
                }
                timings.extend(t);
            }
            if gi < groups.len() {
                report.group_s.push(timings.iter().map(|t| t.send_s + t.compute_s + t.recv_s).fold(0.0, f64::max));
                report.groups.push(timings);
            } else {
                report.tail_split.push(timings);
            }
        }
        report.tail_gathered = gathered;
        let last: Vec<Option<(Rows, Tensor)>> = parts.into_iter().flatten().map(|p| p.0).collect();
        if gathered {
            // The first split layer's slices, in board order.
            return self.charge(report, own, || concat_features(last.into_iter().flatten().map(|p| p.1).collect()));
        }
        self.charge(report, own, || gather(last))
    }

    /// Remember that frame `frame` holds `conn` to worker `b` (see [`Board::mark_lost`]).
    fn watch(&self, frame: u64, b: usize, conn: &Conn) {
        if let Ok(s) = conn.stream().try_clone() {
            self.watched.lock().unwrap().entry(frame).or_default().push((b, s));
        }
        // Found lost meanwhile: the frame must not wait for it.
        if self.lost.lock().unwrap().contains_key(&b) {
            let _ = conn.stream().shutdown(Shutdown::Both);
        }
    }

    /// The coordinator's side of a worker's mesh frame: its first input out, its last band and
    /// timings back (and when they arrived, seconds since `t0`).
    fn remote_mesh(&self, v: usize, b: usize, stream: &mut Conn, frame: u64, input: Option<Tensor>, t0: Instant) -> Result<(Option<(Rows, Tensor)>, Vec<Option<BandTiming>>, f64)> {
        let peer = &self.cfg.peers[b];
        let hash = self.variants[v].hash;
        let result = (|| {
            let msg = match &input {
                Some(t) => Message::tensor(Kind::MeshFrame, hash, frame, 0, (0, 0), t)?,
                None => Message::text(Kind::MeshFrame, hash, frame, ""),
            };
            self.shape_send(b, msg.wire_len());
            stream.send(&msg)?;
            let reply = stream.recv()?.ok_or_else(|| anyhow!("connection closed mid-frame"))?;
            if reply.header.kind == Kind::Error {
                bail!("{}", reply.as_text());
            }
            ensure!(reply.header.kind == Kind::BandResult && reply.header.frame == frame, "unexpected {:?} reply", reply.header.kind);
            self.shape_receive(b, reply.wire_len());
            let arrived = twin_time(t0.elapsed()).as_secs_f64();
            let rep = stream.recv()?.ok_or_else(|| anyhow!("connection closed mid-frame"))?;
            ensure!(rep.header.kind == Kind::Report, "unexpected {:?} instead of the report", rep.header.kind);
            let timings: Vec<Option<BandTiming>> = serde_json::from_slice(&rep.payload)?;
            let h = &reply.header;
            let last = if h.shape.is_empty() { None } else { Some((Rows::new(h.rows.0 as usize, h.rows.1 as usize), reply.to_tensor()?)) };
            Ok((last, timings, arrived))
        })();
        result.with_context(|| format!("board {} ({})", peer.name, peer.addr))
    }

    /// An idle connection to worker `b`, or a new one (authenticated); the frame holding it
    /// puts it back with [`Board::idle`] once its exchange is complete (a failed one is
    /// dropped, closed).
    fn checkout(&self, b: usize) -> Result<Conn> {
        if let Some(c) = self.conns.lock().unwrap().get_mut(&b).and_then(Vec::pop) {
            return Ok(c);
        }
        self.open(b)
    }

    /// A new authenticated connection to board `b`; none to a board the heartbeat found lost
    /// (it may be stopped, its port still accepting: the handshake would wait for it).
    fn open(&self, b: usize) -> Result<Conn> {
        ensure!(!self.lost.lock().unwrap().contains_key(&b), "the board is lost");
        Conn::connect(connect(&self.cfg.peers[b].addr, self.cfg.deadline())?, self.key.clone(), self.max_payload)
    }

    fn idle(&self, b: usize, conn: Conn) {
        self.conns.lock().unwrap().entry(b).or_default().push(conn);
    }

    /// The open connection to board `b` in `conns`, or a new one (authenticated).
    fn connection_in(&self, conns: &Mutex<HashMap<usize, Arc<Mutex<Conn>>>>, b: usize) -> Result<Arc<Mutex<Conn>>> {
        let mut conns = conns.lock().unwrap();
        if let Some(c) = conns.get(&b) {
            return Ok(c.clone());
        }
        let c = Arc::new(Mutex::new(self.open(b)?));
        conns.insert(b, c.clone());
        Ok(c)
    }

    /// A request to worker `b` (a band, or a slice of the tail, of plan `v`) and its result.
    #[allow(clippy::too_many_arguments)]
    fn remote(&self, v: usize, b: usize, kind: Kind, frame: u64, group: usize, rows: (usize, usize), input: &Tensor, t: &mut BandTiming) -> Result<Tensor> {
        let peer = &self.cfg.peers[b];
        let result = (|| -> Result<Tensor> {
            let mut stream = self.checkout(b)?;
            self.watch(frame, b, &stream);
            let msg = Message::tensor(kind, self.variants[v].hash, frame, group as u32, (rows.0 as u32, rows.1 as u32), input)?;
            let ts = Instant::now();
            self.shape_send(b, msg.wire_len());
            stream.send(&msg)?;
            t.send_s = twin_time(ts.elapsed()).as_secs_f64();
            let tr = Instant::now();
            let reply = stream.recv()?.ok_or_else(|| anyhow!("connection closed mid-frame"))?;
            if reply.header.kind == Kind::Error {
                bail!("{}", reply.as_text());
            }
            ensure!(reply.header.kind == Kind::BandResult && reply.header.frame == frame, "unexpected {:?} reply", reply.header.kind);
            let rep = stream.recv()?.ok_or_else(|| anyhow!("connection closed mid-frame"))?;
            ensure!(rep.header.kind == Kind::Report, "unexpected {:?} instead of the timing", rep.header.kind);
            let worker: BandTiming = serde_json::from_slice(&rep.payload)?;
            (t.compute_s, t.slot_wait_s, t.overrun_s, t.peak_rss_mb) = (worker.compute_s, worker.slot_wait_s, worker.overrun_s, worker.peak_rss_mb);
            self.shape_receive(b, reply.wire_len());
            t.recv_s = (twin_time(tr.elapsed()).as_secs_f64() - t.compute_s).max(0.0);
            self.idle(b, stream);
            reply.to_tensor()
        })();
        if result.is_err() {
            self.conns.lock().unwrap().remove(&b);
        }
        result.with_context(|| format!("board {} ({})", peer.name, peer.addr))
    }
}

/// Connect with a deadline on the connect and on every read and write.
pub fn connect(addr: &str, deadline: Duration) -> Result<TcpStream> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
    let stream = TcpStream::connect_timeout(&sock, deadline).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(deadline))?;
    stream.set_write_timeout(Some(deadline))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An authenticated connection to `addr` (client side; small replies).
pub fn connect_with(addr: &str, key: &Key, deadline: Duration, max_payload: u64) -> Result<Conn> {
    Conn::connect(connect(addr, deadline)?, key.clone(), max_payload).with_context(|| format!("{addr}"))
}

/// Ask a board who it is: (name, runtime version, plan hash). Only a holder of the fleet's
/// key is answered.
pub fn hello(addr: &str, key: &Key, deadline: Duration) -> Result<(String, String, String)> {
    let mut s = connect_with(addr, key, deadline, 1 << 20)?;
    s.send(&Message::text(Kind::Hello, [0; 32], 0, ""))?;
    let reply = s.recv()?.ok_or_else(|| anyhow!("{addr} closed the connection (another fleet key?)"))?;
    ensure!(reply.header.kind == Kind::HelloReply, "{addr} answered {:?}", reply.header.kind);
    let text = reply.as_text();
    let mut it = text.split_whitespace().map(String::from);
    match (it.next(), it.next(), it.next()) {
        (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
        _ => bail!("{addr} answered '{text}'"),
    }
}

/// Send one frame to the coordinator: its output and report. `max_payload`: the largest
/// answer taken (see [`max_payload`]).
pub fn infer(addr: &str, key: &Key, plan_hash: &str, input: &Tensor, deadline: Duration, max_payload: u64) -> Result<(Tensor, FrameReport)> {
    let mut s = connect_with(addr, key, deadline, max_payload)?;
    s.send(&Message::tensor(Kind::Infer, plan_bytes(plan_hash), 0, 0, (0, 0), input)?)?;
    let out = s.recv()?.ok_or_else(|| anyhow!("the coordinator closed the connection"))?;
    if out.header.kind == Kind::Error {
        bail!("{}", out.as_text());
    }
    ensure!(out.header.kind == Kind::InferResult, "the coordinator answered {:?}", out.header.kind);
    let rep = s.recv()?.ok_or_else(|| anyhow!("the coordinator closed the connection"))?;
    ensure!(rep.header.kind == Kind::Report, "the coordinator answered {:?}", rep.header.kind);
    Ok((out.to_tensor()?, serde_json::from_slice(&rep.payload)?))
}

/// Ask a board to stop.
pub fn shutdown(addr: &str, key: &Key, plan_hash: &str, deadline: Duration) -> Result<()> {
    let mut s = connect_with(addr, key, deadline, 1 << 20)?;
    s.send(&Message::text(Kind::Shutdown, plan_bytes(plan_hash), 0, ""))
}

/// The board binary's command line: `serve [--listen ADDR] [--model FILE] [--plan FILE]`,
/// `info`.
pub fn main_with(constants: &StaticConfig) -> std::process::ExitCode {
    crate::link::tune_allocator();
    exit_code((|| -> Result<()> {
        let mut cfg = constants.resolve()?;
        let usage = format!("legion-... (board {}) serve [--listen ADDR] [--model FILE] [--key FILE] [--plan PLAN.json] [--cores LIST|none] | info", cfg.board);
        let args = crate::args::Args::parse(&usage, &["serve", "info"], &["listen", "model", "key", "plan", "cores"])?;
        // Other CPUs than the target's (e.g. `none` under qemu-user on a machine without them).
        if let Some(c) = args.get("cores") {
            cfg.cores = parse_cores(c)?;
        }
        let beside_exe = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(constants.model_file)));
        let default_model = beside_exe.filter(|p| p.exists()).unwrap_or_else(|| constants.model_file.into());
        let model = args.path("model").unwrap_or(default_model);
        if args.command == "info" {
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            return Ok(());
        }
        let listen = args.get("listen").map(String::from).unwrap_or_else(|| cfg.peers[cfg.index].addr.clone());
        let sha256 = if args.path("plan").is_some() { None } else { Some(cfg.model_sha256.clone()) };
        let file = ModelFile { path: model.clone(), sha256 };
        let m = match args.path("plan") {
            // Another plan than the compiled one (benchmarks compare plans without a
            // rebuild): the model file must then hold every weight that plan needs.
            Some(p) => {
                let bytes = std::fs::read(&p).with_context(|| format!("reading plan {}", p.display()))?;
                let plan: Plan = serde_json::from_slice(&bytes).with_context(|| format!("plan {}", p.display()))?;
                ensure!(plan.boards.get(cfg.index).map(String::as_str) == Some(cfg.board.as_str()), "plan {} does not have board {} at index {}", p.display(), cfg.board, cfg.index);
                cfg.plan = plan;
                read_for_board(&cfg, &model, None, 0).with_context(|| format!("plan {}", p.display()))?
            }
            None => load_model(&cfg, &model)?,
        };
        let key = read_key(&cfg.board, args.path("key"))?;
        serve(cfg, m, file, &listen, key)
    })())
}

/// The fleet's key: `--key FILE`, else `fleet.key` beside the binary (where `deploy` puts it).
pub fn read_key(board: &str, given: Option<std::path::PathBuf>) -> Result<Key> {
    let path = given
        .or_else(|| std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("fleet.key"))))
        .ok_or_else(|| anyhow!("board {board}: no fleet key: give --key FILE"))?;
    Key::read(&path).with_context(|| format!("board {board}"))
}

/// A CPU list as `--cores` takes it: `4,5`, or `none`.
pub fn parse_cores(text: &str) -> Result<Vec<usize>> {
    if text == "none" {
        return Ok(vec![]);
    }
    text.split(',').map(|c| c.trim().parse::<usize>().with_context(|| format!("--cores: '{c}' is not a CPU number (give e.g. 4,5 or none)"))).collect()
}

/// The exit code of a runtime binary's `main`: the error printed once, with its causes.
pub fn exit_code(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
