//! The probe: the microbenchmark legionc runs on every board before it plans.
//!
//! A job is one band of one group of the model: `from..to` between cut points, output rows
//! `out`. A single-layer job (a segment between two consecutive cut points) gives the E matrix;
//! a whole fused group on a board's band is what the full search and the wild card measure.
//! The probe receives the model's structure only (a model file without weights) and fills the
//! weights of the layers it runs with fixed values: run time does not depend on them.
//!
//! Output is JSON lines on stdout, one per finished job (jobs are measured a chunk at a time),
//! so that what was measured before a crash is kept. An emulated board's probe runs on this
//! machine and reports its twin's time, CPU time ÷ speed, without sleeping it out.

use crate::exec::Runnable;
use crate::halo::{group_band, Group, Rows};
use crate::ir::Model;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_core::internal::*;

pub const PROBE_VERSION: &str = concat!("legion-probe ", env!("CARGO_PKG_VERSION"));

/// One measurement to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The caller's name for the result (its cache key).
    pub id: String,
    pub group: Group,
    /// Output rows of the band; empty: the section unsplit (the tail, on the coordinator).
    pub out: Rows,
}

/// How to measure, and what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFile {
    pub warmup: usize,
    pub repeats: usize,
    pub threads: usize,
    /// CPUs to pin the probe to (a real board's target's `cores`, where its runtime runs).
    #[serde(default)]
    pub cores: Vec<usize>,
    /// An emulated twin's speed: report CPU time ÷ speed instead of wall time.
    pub speed: Option<f64>,
    pub jobs: Vec<Job>,
}

/// What the probe can tell about the board it runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// `arch-os`, e.g. `aarch64-linux`.
    pub arch: String,
    pub cpu_model: String,
    pub cores: usize,
    pub governor: Option<String>,
    pub temperature_c: Option<f64>,
    /// CPU quota of the probe's cgroup, in cores (containers, cgroup-limited hosts).
    pub cpu_quota: Option<f64>,
    pub probe_version: String,
}

/// One job's timing, seconds (twin time on an emulated board).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub id: String,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// (max − min) ÷ median.
    pub spread: f64,
    pub repeats: usize,
    /// Time the board spent on the job, warm-up included.
    pub board_seconds: f64,
    /// The probe's peak resident memory so far (VmHWM), MB.
    #[serde(default)]
    pub peak_rss_mb: Option<f64>,
    /// Bytes the job's runnables hold (tract's copy of its weights, its plan), MB; the sum
    /// over its parts. None unless the probe counts its allocations.
    #[serde(default)]
    pub build_mb: Option<f64>,
    /// Most bytes a run of the job holds at once (input, values, output, scratch), MB.
    #[serde(default)]
    pub work_mb: Option<f64>,
    /// Most bytes building a part of the job held for a while beyond its weights and what it
    /// keeps (tract's unpacked copy of a layer's weights), MB.
    #[serde(default)]
    pub build_extra_mb: Option<f64>,
    /// The probe's resident memory before it built any job (the binary, its libraries, the
    /// allocator's own), MB: what a board process holds before its model.
    #[serde(default)]
    pub base_mb: Option<f64>,
}

/// A line of the probe's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Facts(Facts),
    Measurement(Measurement),
    /// The TCP port the echo server listens on.
    Listening(u16),
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// This board's facts.
pub fn facts() -> Facts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Hardware") || l.starts_with("CPU part"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Facts {
        arch: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        cpu_model,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        governor: read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        temperature_c: read_trimmed("/sys/class/thermal/thermal_zone0/temp").and_then(|t| t.parse::<f64>().ok()).map(|t| t / 1000.0),
        cpu_quota: cpu_quota(),
        probe_version: PROBE_VERSION.into(),
    }
}

/// The CPU quota of this process's cgroup in cores, when one is set and readable (cgroup v2
/// `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
fn cpu_quota() -> Option<f64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            let max = read_trimmed(&format!("/sys/fs/cgroup{path}/cpu.max"))?;
            let (q, p) = max.split_once(' ')?;
            return Some(q.parse::<f64>().ok()? / p.parse::<f64>().ok()?);
        }
        if controllers.split(',').any(|c| c == "cpu") {
            let q: f64 = read_trimmed(&format!("/sys/fs/cgroup/cpu{path}/cpu.cfs_quota_us"))?.parse().ok()?;
            let p: f64 = read_trimmed(&format!("/sys/fs/cgroup/cpu{path}/cpu.cfs_period_us"))?.parse().ok()?;
            return (q > 0.0).then_some(q / p);
        }
    }
    None
}

/// Most weights one part of a job holds. A larger Dense layer (VGG-16's first holds 411 MB) is
/// timed a slice of its output features at a time and the slices' times are added: on one
/// vector a Dense layer streams its weights once, so its time is linear in its features.
pub const PART_WEIGHT_BYTES: usize = 32 << 20;

/// Most weights the jobs of one chunk hold at once. A job holding more on its own is built
/// part by part for every run, each part dropped once run.
pub const CHUNK_WEIGHT_BYTES: usize = 64 << 20;

/// Jobs measured together: their repeats are interleaved (see [`run_jobs`]).
pub const CHUNK: usize = 16;

/// Is value `v` a Dense layer's output (a job on it is a slice of its output features)?
fn is_dense(model: &Model, v: usize) -> bool {
    matches!(model.nodes[v].op, crate::ir::Op::Dense { .. })
}

/// A unit of a job's work, built and run on its own; a job's time is the sum of its parts'.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// Output rows of a group.
    Band(Group, Rows),
    /// Values `from` (exclusive) to `to`, unsplit.
    Section(usize, usize),
    /// Output features of a Dense layer.
    Dense(usize, Rows),
}

fn weight_bytes(model: &Model, layers: impl Iterator<Item = usize>) -> usize {
    layers.map(|id| model.nodes[id].op.weights().iter().map(|w| w.volume() * 4).sum::<usize>()).sum()
}

/// Filler weights: run time does not depend on their values. Layers of one size share one
/// (YOLOv2's 1024-channel convolutions: one 38 MB filler instead of one each).
fn filler(n: usize) -> Arc<Vec<f32>> {
    thread_local! {
        static MADE: std::cell::RefCell<std::collections::HashMap<usize, std::sync::Weak<Vec<f32>>>> = Default::default();
    }
    MADE.with(|made| {
        let mut made = made.borrow_mut();
        if let Some(f) = made.get(&n).and_then(std::sync::Weak::upgrade) {
            return f;
        }
        let f = Arc::new((0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.02).collect::<Vec<f32>>());
        made.retain(|_, w| w.strong_count() > 0);
        made.insert(n, Arc::downgrade(&f));
        f
    })
}

impl Part {
    fn weight_bytes(&self, model: &Model) -> usize {
        match *self {
            Part::Band(g, _) => weight_bytes(model, g.layers()),
            Part::Section(from, to) => weight_bytes(model, from + 1..=to),
            Part::Dense(node, cols) => (model.nodes[model.nodes[node].inputs[0]].shape.iter().product::<usize>() + 1) * cols.len() * 4,
        }
    }

    fn input_shape(&self, model: &Model) -> Vec<usize> {
        match *self {
            Part::Band(g, out) => {
                let mut shape = model.nodes[g.from].shape.clone();
                shape[2] = group_band(model, g, out).input.len();
                shape
            }
            Part::Section(from, _) => model.nodes[from].shape.clone(),
            Part::Dense(node, _) => model.nodes[model.nodes[node].inputs[0]].shape.clone(),
        }
    }

    /// Build the part's runnable, its layers given filler weights for the time it takes (the
    /// model file the probe receives carries the structure only); the model is left as it was.
    /// Returns the runnable and the bytes the filler weights took meanwhile (counted).
    fn build(&self, model: &mut Model) -> Result<(Runnable, usize)> {
        use crate::ir::{Op, Weights};
        let before = crate::mem::live_bytes().unwrap_or(0);
        let filler_bytes = || crate::mem::live_bytes().unwrap_or(0).saturating_sub(before);
        if let Part::Dense(node, cols) = *self {
            let Op::Dense { weight, bias } = &mut model.nodes[node].op else { bail!("node {node} is not a Dense layer") };
            let k = weight.shape[0];
            let whole = (std::mem::replace(weight, Weights { shape: vec![k, cols.len()], data: filler(k * cols.len()) }), std::mem::replace(bias, Weights { shape: vec![cols.len()], data: filler(cols.len()) }));
            let fill = filler_bytes();
            let built = crate::exec::dense_slice(model, node, cols);
            let Op::Dense { weight, bias } = &mut model.nodes[node].op else { unreachable!() };
            (*weight, *bias) = whole;
            return built.map(|r| (r, fill));
        }
        let layers = match *self {
            Part::Band(g, _) => g.layers(),
            Part::Section(from, to) => from + 1..=to,
            Part::Dense(..) => unreachable!(),
        };
        let mut filled = Vec::new();
        for id in layers {
            for (i, w) in model.nodes[id].op.weights_mut().into_iter().enumerate() {
                if w.data.len() != w.volume() {
                    w.data = filler(w.volume());
                    filled.push((id, i));
                }
            }
        }
        let fill = filler_bytes();
        let built = match *self {
            Part::Band(g, out) => crate::exec::band_graph(model, &group_band(model, g, out)).and_then(crate::exec::runnable),
            Part::Section(from, to) => crate::exec::section_graph(model, from, to).and_then(crate::exec::runnable),
            Part::Dense(..) => unreachable!(),
        };
        for (id, i) in filled {
            model.nodes[id].op.weights_mut()[i].data = Arc::new(vec![]);
        }
        built.map(|r| (r, fill))
    }
}

/// The parts of `job`: its band; its section whole, or, when the section holds more than
/// [`PART_WEIGHT_BYTES`] and is a chain, cut around its large Dense layers, each timed in slices.
fn parts(model: &Model, job: &Job) -> Vec<Part> {
    let Group { from, to } = job.group;
    let slices = |node: usize, cols: Rows| -> Vec<Part> {
        let per_col = Part::Dense(node, Rows::new(0, 1)).weight_bytes(model);
        let n = (PART_WEIGHT_BYTES / per_col).max(1);
        (cols.start..cols.end).step_by(n).map(|c| Part::Dense(node, Rows::new(c, (c + n).min(cols.end)))).collect()
    };
    if !job.out.is_empty() {
        return if is_dense(model, to) { slices(to, job.out) } else { vec![Part::Band(job.group, job.out)] };
    }
    let chain = (from + 1..=to).all(|id| model.nodes[id].inputs == [id - 1]);
    if !chain || weight_bytes(model, from + 1..=to) <= PART_WEIGHT_BYTES {
        return vec![Part::Section(from, to)];
    }
    let mut out = Vec::new();
    let mut start = from;
    for id in from + 1..=to {
        if is_dense(model, id) && weight_bytes(model, id..=id) > PART_WEIGHT_BYTES {
            if start < id - 1 {
                out.push(Part::Section(start, id - 1));
            }
            out.extend(slices(id, Rows::new(0, model.nodes[id].shape[1])));
            start = id;
        }
    }
    if start < to {
        out.push(Part::Section(start, to));
    }
    out
}

/// A part of a job being measured: its runnable while held, and what it was measured to need.
struct Held {
    part: Part,
    built: Option<Runnable>,
    /// Bytes its runnable holds (tract's copy of its weights, packed, and its plan).
    build_bytes: Option<usize>,
    /// Most bytes building it held beyond its weights and `build_bytes`.
    build_extra_bytes: Option<usize>,
    /// Most bytes a run of it holds at once: input, intermediate values, output, scratch.
    work_bytes: Option<usize>,
}

/// A job being measured: its parts, kept built between runs unless `streamed`.
struct Ready {
    parts: Vec<Held>,
    streamed: bool,
    times: Vec<f64>,
    total: f64,
}

/// Run every job, calling `emit` with each result once its chunk is measured.
///
/// Jobs are measured [`CHUNK`] at a time, in rounds: each round runs every job of the chunk
/// once, warm-up rounds first. A job's repeats are thus spread over the chunk's whole
/// measuring time, so that a slow spell of the board (another process, a frequency drop)
/// weighs on every job of the chunk alike instead of on the one job it coincides with. And,
/// like a layer of a real run, each run starts with the caches the other jobs left: timing a
/// job back to back with itself measures it faster than it runs in a plan.
///
/// The probe's memory is bounded by its largest job, not by how many it runs: a chunk holds
/// at most [`CHUNK_WEIGHT_BYTES`] of weights (a larger job alone, built a part at a time), and
/// every chunk's runnables are dropped before the next is built. With [`crate::mem::Counting`]
/// as the allocator, each job also reports the bytes its runnable holds and the most a run of it
/// holds at once (the board's memory predicted from these, like its time from E).
pub fn run_jobs(model: Model, file: &JobFile, mut emit: impl FnMut(Measurement) -> Result<()>) -> Result<()> {
    ensure!(file.repeats > 0, "repeats must be at least 1");
    let mut model = model;
    for j in &file.jobs {
        ensure!(j.group.from < j.group.to && j.group.to < model.nodes.len(), "job {}: no group {:?} in model {}", j.id, j.group, model.name);
        let height = || if is_dense(&model, j.group.to) { model.nodes[j.group.to].shape[1] } else { model.rows(j.group.to) };
        ensure!(j.out.is_empty() || j.out.end <= height(), "job {}: rows {} outside value {}", j.id, j.out, j.group.to);
    }
    let base_mb = crate::mem::rss_mb();
    let threads = crate::exec::threads(file.threads.max(1));
    let mut rest = &file.jobs[..];
    while !rest.is_empty() {
        // The next chunk: up to CHUNK jobs holding up to CHUNK_WEIGHT_BYTES (at least one job).
        let mut ready: Vec<Ready> = Vec::new();
        let mut held = 0;
        for j in rest.iter().take(CHUNK) {
            let parts = parts(&model, j);
            let bytes: usize = parts.iter().map(|p| p.weight_bytes(&model)).sum();
            if !ready.is_empty() && held + bytes > CHUNK_WEIGHT_BYTES {
                break;
            }
            held += bytes;
            let streamed = bytes > CHUNK_WEIGHT_BYTES;
            let parts = parts.into_iter().map(|part| Held { part, built: None, build_bytes: None, build_extra_bytes: None, work_bytes: None }).collect();
            ready.push(Ready { parts, streamed, times: Vec::with_capacity(file.repeats), total: 0.0 });
        }
        let (chunk, next) = rest.split_at(ready.len());
        rest = next;
        for round in 0..file.warmup + file.repeats {
            for (j, r) in chunk.iter().zip(ready.iter_mut()) {
                let mut took = 0.0;
                for h in &mut r.parts {
                    if h.built.is_none() {
                        // Built as a board builds (what building leaves is returned whole),
                        // run as a board runs (its buffers reused from the heap).
                        crate::link::allocator_for_loading();
                        let before = crate::mem::reset_peak();
                        let (built, weights) = h.part.build(&mut model).with_context(|| format!("job {}", j.id))?;
                        h.built = Some(built);
                        crate::link::allocator_for_frames();
                        if h.build_bytes.is_none() {
                            let kept = before.zip(crate::mem::live_bytes()).map(|(b, a)| a.saturating_sub(b));
                            // Beyond the filler weights (a board holds its weights already) and
                            // what is kept: tract's copy before it is packed, the passes' graphs.
                            h.build_extra_bytes = before.zip(crate::mem::peak_bytes()).zip(kept).map(|((b, p), k)| p.saturating_sub(b + weights + k));
                            h.build_bytes = kept;
                        }
                    }
                    let plan = h.built.as_ref().expect("built above");
                    let before = crate::mem::reset_peak();
                    let shape = h.part.input_shape(&model);
                    let input = Tensor::from_shape(&shape, &vec![0.5f32; shape.iter().product()])?;
                    // An emulated board's run is timed as the board's runtime times it: warm,
                    // after an untimed run of the same computation (`link::twin_caches`).
                    let (done, t) = match h.part {
                        Part::Band(..) => crate::link::measure(file.speed, input, |x| threads.scope(|| crate::exec::run(plan, x))),
                        _ => crate::link::measure(file.speed, input, |x| crate::exec::run(plan, x)),
                    };
                    done.with_context(|| format!("job {}", j.id))?;
                    if h.work_bytes.is_none() {
                        h.work_bytes = before.zip(crate::mem::peak_bytes()).map(|(b, p)| p.saturating_sub(b));
                    }
                    took += t.as_secs_f64();
                    if r.streamed {
                        h.built = None;
                    }
                }
                r.total += took;
                if round >= file.warmup {
                    r.times.push(took);
                }
            }
        }
        for (j, r) in chunk.iter().zip(ready) {
            let median = crate::stats::median(&r.times);
            let (min, max) = crate::stats::min_max(&r.times);
            let mb = |b: usize| b as f64 / 1e6;
            let build: Option<usize> = r.parts.iter().map(|h| h.build_bytes).sum();
            let most = |f: fn(&Held) -> Option<usize>| r.parts.iter().map(f).try_fold(0, |m, w| w.map(|w| w.max(m)));
            let (work, extra) = (most(|h| h.work_bytes), most(|h| h.build_extra_bytes));
            drop(r.parts);
            emit(Measurement {
                id: j.id.clone(),
                median_s: median,
                min_s: min,
                max_s: max,
                spread: if median > 0.0 { (max - min) / median } else { 0.0 },
                repeats: r.times.len(),
                board_seconds: r.total,
                peak_rss_mb: crate::mem::peak_rss_mb(),
                build_mb: build.map(mb),
                work_mb: work.map(mb),
                build_extra_mb: extra.map(mb),
                base_mb,
            })?;
        }
    }
    Ok(())
}

fn print_line(line: &Line) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Echo frames (u32 length + payload) back on one connection, then exit. Used by legionc to
/// fit the link's latency and bandwidth.
fn echo(listen: &str, deadline: Duration) -> Result<()> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("echo: binding {listen}"))?;
    print_line(&Line::Listening(listener.local_addr()?.port()))?;
    listener.set_nonblocking(true)?;
    let start = Instant::now();
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => bail!("echo: no connection within {:?}: {e}", deadline),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(deadline))?;
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    while stream.read_exact(&mut len).is_ok() {
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        stream.read_exact(&mut buf)?;
        stream.write_all(&len)?;
        stream.write_all(&buf)?;
    }
    Ok(())
}

/// The probe binary's command line:
/// `facts` | `run --model FILE --jobs FILE` | `echo [--listen ADDR] [--deadline-s S]`.
pub fn main() -> std::process::ExitCode {
    crate::link::tune_allocator();
    crate::board::exit_code((|| -> Result<()> {
        let usage = "legion-probe facts | run --model FILE --jobs FILE | echo [--listen ADDR] [--deadline-s S]";
        let args = crate::args::Args::parse(usage, &["facts", "run", "echo"], &["model", "jobs", "listen", "deadline-s"])?;
        match args.command.as_str() {
            "facts" => print_line(&Line::Facts(facts())),
            "run" => {
                let (m, j) = (args.required("model")?, args.required("jobs")?);
                let model = crate::modelfile::read(&std::fs::read(m).with_context(|| format!("reading {m}"))?)?;
                let jobs: JobFile = serde_json::from_slice(&std::fs::read(j).with_context(|| format!("reading {j}"))?).with_context(|| format!("job file {j}"))?;
                // A real board's probe runs where its runtime will: on the target's cores.
                crate::pin::pin_to(&jobs.cores)?;
                print_line(&Line::Facts(facts()))?;
                run_jobs(model, &jobs, |m| print_line(&Line::Measurement(m)))
            }
            _ => echo(args.get("listen").unwrap_or("0.0.0.0:0"), Duration::from_secs_f64(args.number("deadline-s")?.unwrap_or(30.0))),
        }
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{InputLayout, Node, Op, Weights};

    /// input [1, 8, 16, 16] → Flatten → Dense 2048 → 1200 (9.8 MB of weights, no data: the
    /// probe's model file carries the structure only).
    fn model() -> Model {
        let node = |name: &str, op: Op, inputs: Vec<usize>, shape: Vec<usize>| Node { name: name.into(), op, inputs, shape };
        let empty = |shape: Vec<usize>| Weights { shape, data: Arc::new(vec![]) };
        Model {
            name: "dense".into(),
            input_layout: InputLayout::Nchw,
            nodes: vec![
                node("input", Op::Input, vec![], vec![1, 8, 16, 16]),
                node("flatten", Op::Flatten, vec![0], vec![1, 2048]),
                node("fc", Op::Dense { weight: empty(vec![2048, 1200]), bias: empty(vec![1200]) }, vec![1], vec![1, 1200]),
            ],
        }
    }

    fn measure(model: Model, jobs: Vec<Job>) -> Vec<Measurement> {
        let file = JobFile { warmup: 0, repeats: 1, threads: 1, cores: vec![], speed: None, jobs };
        let mut out = Vec::new();
        run_jobs(model, &file, |m| Ok(out.push(m))).unwrap();
        out
    }

    #[test]
    fn a_large_dense_layer_is_timed_in_slices_and_its_memory_counted() {
        let m = model();
        let weights = 4 * (2048 * 1200 + 1200);
        // Within the part size: the tail and the slice are one part each.
        let tail = Job { id: "tail".into(), group: Group { from: 0, to: 2 }, out: Rows::new(0, 0) };
        let slice = Job { id: "slice".into(), group: Group { from: 1, to: 2 }, out: Rows::new(100, 1100) };
        assert_eq!(parts(&m, &tail).len(), 1, "a section within the part size is one part");
        let per_col = 4 * 2049;
        let before = crate::mem::live_bytes().unwrap();
        let got = measure(m, vec![tail, slice]);
        // What a run builds: tract's copy of the weights (with its packing), within 30 %.
        let built = got[0].build_mb.unwrap() * 1e6;
        assert!(built > 0.9 * weights as f64 && built < 1.3 * weights as f64, "built {built} for {weights} bytes of weights");
        let sliced = got[1].build_mb.unwrap() * 1e6;
        assert!(sliced > 0.9 * (1000 * per_col) as f64 && sliced < 1.3 * (1000 * per_col) as f64, "slice built {sliced}");
        // A run holds at least its input and output.
        assert!(got[0].work_mb.unwrap() * 1e6 >= 4.0 * (2048.0 + 1200.0));
        assert!(got[0].median_s > 0.0 && got[0].base_mb.is_some());
        // Nothing built is kept once measured (other tests' allocations aside).
        let after = crate::mem::live_bytes().unwrap();
        assert!(after < before + weights / 2, "{} bytes still live", after as i64 - before as i64);
    }

    #[test]
    fn parts_bound_what_is_held() {
        let mut m = model();
        // 4096 × 4096 inputs: 64 MB, over the part size.
        m.nodes[0].shape = vec![1, 16, 16, 16];
        m.nodes[1].shape = vec![1, 4096];
        m.nodes[2].op = Op::Dense { weight: Weights { shape: vec![4096, 4096], data: Arc::new(vec![]) }, bias: Weights { shape: vec![4096], data: Arc::new(vec![]) } };
        m.nodes[2].shape = vec![1, 4096];
        let tail = Job { id: "tail".into(), group: Group { from: 0, to: 2 }, out: Rows::new(0, 0) };
        let p = parts(&m, &tail);
        assert!(p.len() > 2, "{p:?}");
        let cols: usize = p.iter().map(|p| if let Part::Dense(_, c) = p { c.len() } else { 0 }).sum();
        assert_eq!(cols, 4096, "the slices cover the layer");
        assert!(p.iter().all(|p| p.weight_bytes(&m) <= PART_WEIGHT_BYTES + 4 * 4097), "{p:?}");
        assert!(matches!(p[0], Part::Section(0, 1)), "the flatten before the layer: {:?}", p[0]);
    }
}
