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

use crate::exec::BandExecutor;
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

/// Give every layer of `group` weights (the file carries the structure only).
fn fill_weights(model: &mut Model, group: Group) {
    for id in group.layers() {
        for w in model.nodes[id].op.weights_mut() {
            if w.data.len() != w.volume() {
                let n = w.volume();
                w.data = Arc::new((0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.02).collect());
            }
        }
    }
}

/// Is value `v` a Dense layer's output (a job on it is a slice of its output features)?
fn is_dense(model: &Model, v: usize) -> bool {
    matches!(model.nodes[v].op, crate::ir::Op::Dense { .. })
}

/// Jobs measured together: their repeats are interleaved (see [`run_jobs`]).
pub const CHUNK: usize = 16;

/// A job made ready to run: its runnable built, its input allocated.
struct Ready {
    whole: Option<crate::exec::Runnable>,
    input: Tensor,
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
pub fn run_jobs(model: Model, file: &JobFile, mut emit: impl FnMut(Measurement) -> Result<()>) -> Result<()> {
    ensure!(file.repeats > 0, "repeats must be at least 1");
    let mut model = model;
    for j in &file.jobs {
        ensure!(j.group.from < j.group.to && j.group.to < model.nodes.len(), "job {}: no group {:?} in model {}", j.id, j.group, model.name);
        let height = || if is_dense(&model, j.group.to) { model.nodes[j.group.to].shape[1] } else { model.rows(j.group.to) };
        ensure!(j.out.is_empty() || j.out.end <= height(), "job {}: rows {} outside value {}", j.id, j.out, j.group.to);
        fill_weights(&mut model, j.group);
    }
    let mut exec = BandExecutor::with_threads(Arc::new(model), file.threads.max(1));
    for chunk in file.jobs.chunks(CHUNK) {
        let mut ready = Vec::with_capacity(chunk.len());
        for j in chunk {
            let mut shape = exec.model().nodes[j.group.from].shape.clone();
            let whole = if j.out.is_empty() {
                Some(crate::exec::runnable(crate::exec::section_graph(exec.model(), j.group.from, j.group.to)?)?)
            } else if is_dense(exec.model(), j.group.to) {
                // A slice of a Dense layer of the tail: `out` are its output features.
                Some(crate::exec::dense_slice(exec.model(), j.group.to, j.out).with_context(|| format!("job {}", j.id))?)
            } else {
                shape[2] = group_band(exec.model(), j.group, j.out).input.len();
                exec.prepare(j.group, j.out).with_context(|| format!("job {}", j.id))?;
                None
            };
            let input = Tensor::from_shape(&shape, &vec![0.5f32; shape.iter().product()])?;
            ready.push(Ready { whole, input, times: Vec::with_capacity(file.repeats), total: 0.0 });
        }
        for round in 0..file.warmup + file.repeats {
            for (j, r) in chunk.iter().zip(ready.iter_mut()) {
                // An emulated board's run is timed as the board's runtime times it.
                let job = || match &r.whole {
                    Some(w) => crate::exec::run(w, r.input.clone()).map(|_| ()),
                    None => exec.run_band(j.group, j.out, r.input.clone()).map(|_| ()),
                };
                let (done, t) = crate::link::measure(file.speed, job);
                let t = t.as_secs_f64();
                done.with_context(|| format!("job {}", j.id))?;
                r.total += t;
                if round >= file.warmup {
                    r.times.push(t);
                }
            }
        }
        for (j, r) in chunk.iter().zip(ready) {
            let median = crate::stats::median(&r.times);
            let (min, max) = crate::stats::min_max(&r.times);
            emit(Measurement {
                id: j.id.clone(),
                median_s: median,
                min_s: min,
                max_s: max,
                spread: if median > 0.0 { (max - min) / median } else { 0.0 },
                repeats: r.times.len(),
                board_seconds: r.total,
                peak_rss_mb: crate::mem::peak_rss_mb(),
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
