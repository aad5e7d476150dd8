//! `legionc run`: frames through a running fleet, the latency breakdown, the speedup over the
//! single-board baseline, and (with --verify) the comparison with tract's single run; and
//! `legionc verify`: a plan run in-process against tract's single run.

use crate::fleet::{Fleet, Strategy};
use crate::model::{reference, LoadedModel};
use crate::profile::{self, Want};
use crate::{solve, strategy};
use legion_runtime::halo::{Group, Rows};
use anyhow::{anyhow, bail, ensure, Context, Result};
use legion_runtime::board::{BandTiming, FrameReport};
use legion_runtime::exec::{run, runnable, section_graph};
use legion_runtime::link::{compute_warm, twin_time, wall_time};
use legion_runtime::plan::{to_nchw, Plan};
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

/// Where a frame's input comes from.
pub enum InputSpec<'a> {
    File(&'a Path),
    Random(u64),
}

/// Read a `.npy` file of float32 (C order) with npyz.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_npy(&bytes).with_context(|| format!("{}", path.display()))
}

/// A `.npy` file's float32 tensor (C order).
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(bytes).context("not a .npy file")?;
    ensure!(npy.order() == npyz::Order::C, "only C-order arrays are supported");
    let shape: Vec<usize> = npy.shape().iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().context("a dimension does not fit")?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n.saturating_mul(4) <= bytes.len()).ok_or_else(|| anyhow::anyhow!("shape {shape:?} needs more values than the file holds"))?;
    let dtype = npy.dtype().descr();
    let data: Vec<f32> = npy.into_vec().with_context(|| format!("only float32 arrays are supported (this one is {dtype})"))?;
    ensure!(data.len() == n, "{} values for shape {shape:?}", data.len());
    Tensor::from_shape(&shape, &data)
}

/// Write a `.npy` file of f32 (C order), atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    use npyz::WriterBuilder;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let mut bytes = Vec::new();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut bytes).begin_nd()?;
    w.extend(t.to_plain_array_view::<f32>()?.iter().copied())?;
    w.finish()?;
    crate::write_atomic(path, &bytes)
}

/// An image resized to the model's input and normalised with the fleet's mean and std.
fn read_image(path: &Path, fleet: &Fleet, m: &LoadedModel) -> Result<Tensor> {
    let img = image::open(path).with_context(|| format!("reading image {}", path.display()))?.to_rgb8();
    let s = &m.ir.nodes[0].shape; // NCHW
    ensure!(s[1] == 3, "model {} takes {} channels; images are RGB (give a .npy tensor instead)", m.ir.name, s[1]);
    let (h, w) = (s[2] as u32, s[3] as u32);
    let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let mut data = vec![0f32; 3 * (h * w) as usize];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = p[c] as f32 / 255.0;
            data[c * (h * w) as usize + (y * w + x) as usize] = (v - fleet.model.mean[c]) / fleet.model.std[c];
        }
    }
    let t = Tensor::from_shape(&[1, 3, h as usize, w as usize], &data)?;
    Ok(match m.ir.input_layout {
        legion_runtime::ir::InputLayout::Nchw => t,
        legion_runtime::ir::InputLayout::Nhwc => t.permute_axes(&[0, 2, 3, 1])?,
    })
}

pub fn load_input(spec: &InputSpec, fleet: &Fleet, m: &LoadedModel) -> Result<Tensor> {
    let t = match spec {
        InputSpec::Random(seed) => reference::random_input(&m.ir.user_input_shape(), *seed),
        InputSpec::File(p) => {
            let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            match ext.as_str() {
                "npy" => read_npy(p)?,
                "png" | "jpg" | "jpeg" => read_image(p, fleet, m)?,
                _ => bail!("input {}: give a .png, .jpg or .npy file", p.display()),
            }
        }
    };
    ensure!(t.shape() == m.ir.user_input_shape().as_slice(), "input has shape {:?}, model {} takes {:?}", t.shape(), m.ir.name, m.ir.user_input_shape());
    Ok(t)
}

/// The single-board latency a fleet's is compared with, and where it comes from.
pub struct Baseline {
    pub board: String,
    pub seconds: f64,
    pub how: String,
}

/// The baseline of `fleet`. An emulated fleet: the whole model in this process at the fastest
/// twin's speed, as an emulated board computes. A fleet with real boards: the whole model on
/// the board predicted fastest from the profiles (the `single` strategy), measured there by the
/// probe and kept in the profile cache like any profile (a rerun makes no connection).
pub fn baseline(fleet: &Fleet, m: &LoadedModel, x: &Tensor, opts: &profile::Options) -> Result<Baseline> {
    if fleet.boards.iter().all(|b| b.is_emulated()) {
        return emulated_baseline(fleet, m, x);
    }
    let single = strategy::plan(fleet, m, Strategy::Single, opts).context("choosing the fastest board")?;
    let b = single.plan.groups[0].rows.iter().position(|&r| r > 0).expect("the single plan has rows on one board");
    let whole = Want { board: b, kind: "whole", group: Group { from: 0, to: m.ir.output() }, out: Rows::new(0, 0) };
    let measured = profile::measure(fleet, m, &[whole], opts).with_context(|| format!("measuring the whole model on board {}", fleet.boards[b].name))?;
    let r = &measured.results[0];
    let how = format!("the whole model measured on the board by the probe: median of {} runs{}", r.repeats, if measured.stats.measured == 0 { ", from the profile cache" } else { "" });
    Ok(Baseline { board: fleet.boards[b].name.clone(), seconds: r.median_s, how })
}

/// The baseline of an emulated fleet: the whole model in this process at the fastest twin's
/// speed, as an emulated board computes.
pub fn emulated_baseline(fleet: &Fleet, m: &LoadedModel, x: &Tensor) -> Result<Baseline> {
    let fastest = fleet.boards.iter().max_by(|a, b| a.nominal_speed().total_cmp(&b.nominal_speed())).expect("a fleet has boards");
    let (_, seconds) = single_board(m, x, fastest.nominal_speed())?;
    Ok(Baseline { board: fastest.name.clone(), seconds, how: format!("emulated here at the twin's speed {}", fastest.nominal_speed()) })
}

/// How a stream of frames is sent.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Frames to send (each one's latency is printed).
    pub frames: usize,
    /// Frames per second the stream arrives at (None: each frame as soon as fewer than
    /// `in_flight` are in flight).
    pub rate: Option<f64>,
    /// Drop a frame that arrives while `in_flight` frames are in flight, instead of letting it
    /// wait.
    pub drop: bool,
    /// Frames in flight at most per lane (the stream's memory bound): each is sent as soon as
    /// it arrives, while fewer are in flight. None: what the plan was chosen for.
    pub in_flight: Option<usize>,
    /// Check every K-th frame's output (frames K, 2K, …) against tract.
    pub verify_every: Option<usize>,
}

/// How `legionc run` runs.
pub struct RunOptions<'a> {
    /// A file (every frame), a directory of images and tensors (frame k: its k-th file, in
    /// name order, cycling), or a seeded random image (every frame).
    pub input: InputSpec<'a>,
    pub stream: StreamOptions,
    /// Check the last frame's output against tract.
    pub verify: bool,
    /// Print the stream's summary as JSON on stdout (everything else on stderr).
    pub json: bool,
    pub save: Option<&'a Path>,
    /// Measure the single-board baseline and print the speedup.
    pub baseline: bool,
    /// For the baseline of a fleet with real boards.
    pub profile: profile::Options,
}

/// `legionc run`: frames through the running fleet; prints the output, the last frame's
/// breakdown, every frame's latency, the baseline and (with `verify`) the comparison.
pub fn run_frames(fleet: &Fleet, o: &RunOptions, out: &mut dyn std::io::Write) -> Result<()> {
    // The compiled plan, refused if fleet.yaml changed since (the boards would not take it).
    let plan = crate::deploy::current_plan(fleet)?;
    let m = crate::model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
    if m.sha256 != plan.model_sha256 {
        bail!("model {} has changed since the fleet was compiled (sha256 {} vs {}): run `legionc compile` again", fleet.model.source, &m.sha256[..16], &plan.model_sha256[..16]);
    }
    let inputs = load_inputs(&o.input, fleet, &m)?;
    let mut json_out = None;
    let out: &mut dyn std::io::Write = if o.json {
        json_out = Some(out);
        &mut std::io::stderr()
    } else {
        out
    };
    let stream = stream_frames(fleet, &plan, &m, &inputs, &o.stream, out)?;
    let frames = &stream.answered;
    let (y, report) = (&stream.last_output, &frames.last().expect("at least one frame answered").report);
    let x = &inputs[frames.last().expect("answered").input].1;

    writeln!(out, "fleet {}, model {}, plan {}", fleet.name, m.ir.name, &plan.hash()[..16])?;
    writeln!(out, "{}", describe_outputs(&m.outputs, y)?)?;
    let lanes = fleet.lanes(&plan)?;
    let last_lane = frames.last().expect("answered").lane;
    if lanes.len() > 1 {
        let dealt: Vec<String> = stream.summary.lanes.iter().zip(&lanes).map(|((c, n), (f, _))| format!("{n} to the lane of {c} ({} boards)", f.boards.len())).collect();
        writeln!(out, "frames dealt among {} lanes: {}; the last frame's breakdown (lane of {}):", lanes.len(), dealt.join(", "), lanes[last_lane].0.coordinator().name)?;
    }
    write!(out, "{}", breakdown(report, &lanes[last_lane].1))?;
    if !report.peak_rss_mb.is_empty() {
        // Kept by the plan its boards ran (the lane's), which `explain` looks up.
        crate::strategy::record_measured_memory(fleet, &lanes[last_lane].1.hash(), &report.peak_rss_mb)?;
    }
    // In the coordinator: from the whole input there to the output computed, as a single board
    // would take it (end to end adds sending the input to the coordinator and the output back).
    let in_coordinator: Vec<f64> = frames.iter().map(|f| f.report.total_s).collect();
    if frames.len() > 1 {
        let end_to_end: Vec<f64> = frames.iter().map(|f| f.end_to_end.as_secs_f64()).collect();
        let (later, later_c) = (legion_runtime::stats::median(&end_to_end[1..]), legion_runtime::stats::median(&in_coordinator[1..]));
        writeln!(
            out,
            "first frame {:.1} ms end to end, {:.1} ms in the coordinator; later frames (median of {}) {:.1} ms, {:.1} ms: first / later = {:.2}, {:.2}",
            end_to_end[0] * 1e3,
            in_coordinator[0] * 1e3,
            frames.len() - 1,
            later * 1e3,
            later_c * 1e3,
            end_to_end[0] / later,
            in_coordinator[0] / later_c
        )?;
    }
    if let Some(p) = o.save {
        if m.outputs.len() > 1 {
            // One file per output: out.npy → out.0.npy, out.1.npy, …
            for (i, t) in crate::model::onnx::unpack(&m.outputs, y)?.iter().enumerate() {
                let file = p.with_extension(format!("{i}.npy"));
                write_npy(&file, t)?;
                writeln!(out, "output {} saved to {}", m.outputs[i].name, file.display())?;
            }
        } else {
            write_npy(p, y)?;
        }
    }
    if o.verify {
        let a = reference::check(y, &reference::run(&m.onnx, x)?, "the fleet's output")?;
        writeln!(out, "verified against tract's single run: max |diff| {:.2e} (max |output| {:.2e})", a.diff, a.scale)?;
    }
    writeln!(out, "{}", stream.summary)?;
    if let Some(j) = json_out {
        serde_json::to_writer_pretty(&mut *j, &stream.summary)?;
        writeln!(j)?;
    }
    if o.baseline {
        // The frames were answered: a baseline that cannot be measured is said, not an error.
        let typical = legion_runtime::stats::median(&in_coordinator);
        match baseline(fleet, &m, x, &o.profile) {
            Ok(b) => writeln!(out, "single board {}: {:.1} ms ({}) -> speedup {:.2}x (against the fleet's {:.1} ms in the coordinator)", b.board, b.seconds * 1e3, b.how, b.seconds / typical, typical * 1e3)?,
            Err(e) if profile::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) => return Err(e),
            Err(e) => writeln!(out, "single-board baseline not measured (no speedup): {e:#}")?,
        }
    }
    Ok(())
}

/// The inputs of a stream: (what it is, tensor). A directory gives its `.png`, `.jpg`, `.jpeg`
/// and `.npy` files in name order.
pub fn load_inputs(spec: &InputSpec, fleet: &Fleet, m: &LoadedModel) -> Result<Vec<(String, Tensor)>> {
    match spec {
        InputSpec::File(dir) if dir.is_dir() => {
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("reading input directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| ["png", "jpg", "jpeg", "npy"].contains(&e.to_string_lossy().to_lowercase().as_str())))
                .collect();
            files.sort();
            ensure!(!files.is_empty(), "input directory {} holds no .png, .jpg or .npy file", dir.display());
            files.iter().map(|p| Ok((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), load_input(&InputSpec::File(p), fleet, m)?))).collect()
        }
        InputSpec::File(p) => Ok(vec![(p.file_name().unwrap_or_default().to_string_lossy().into_owned(), load_input(spec, fleet, m)?)]),
        InputSpec::Random(seed) => Ok(vec![(format!("random {seed}"), load_input(spec, fleet, m)?)]),
    }
}

/// A frame the fleet answered (its output is not kept: a stream holds one output at a time).
pub struct Answered {
    /// Index into the stream's inputs.
    pub input: usize,
    /// The lane that answered it (index into the plan's lanes; 0 without lanes).
    pub lane: usize,
    pub report: FrameReport,
    /// From the request to the answer.
    pub end_to_end: Duration,
    /// When it was answered, Unix time (s).
    pub answered_unix_s: f64,
}

/// A change of the plan frames are answered on: a lane's first frame on a fallback plan (or
/// on the plan again, once the board lost is back).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanChange {
    /// Frame number, from 1.
    pub frame: usize,
    pub lane: usize,
    /// The boards the plan it was answered on is without (empty: the plan itself).
    pub lost: Vec<String>,
    /// When the coordinator found the loss, and when the frame was answered (Unix time, s).
    pub lost_at_unix_s: Option<f64>,
    pub answered_unix_s: f64,
}

/// A stream's figures (`run --json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamSummary {
    /// Frames of the stream, answered or dropped.
    pub frames: usize,
    pub answered: usize,
    /// Frames dropped (`--drop`) because they arrived while the fleet answered an earlier one.
    pub dropped: usize,
    /// Frames that arrived while `in_flight` frames were in flight and waited for room.
    pub waited: usize,
    /// The bound on frames in flight per lane (`--in-flight`), and the most that were in
    /// flight at once (all lanes).
    pub in_flight: usize,
    pub peak_in_flight: usize,
    /// Frames answered by each lane of the plan, by its coordinator (one lane: the whole
    /// fleet), and each lane's median latency (s; None if it answered none).
    pub lanes: Vec<(String, usize)>,
    pub lane_latency_p50_s: Vec<Option<f64>>,
    /// Requested arrival rate, frames per second (None: as fast as the fleet answers).
    pub rate_fps: Option<f64>,
    /// Frames answered per second, from the first frame's arrival to the last answer.
    pub throughput_fps: f64,
    /// Frames answered per second while the fleet was kept busy: per lane, its answers after
    /// its first one and up to when the last frame was sent, over that time (without the
    /// stream's start, when no frame is done yet, and its end, when lanes run out of frames);
    /// the lanes' sum. None unless every lane answered twice in that window.
    pub steady_fps: Option<f64>,
    /// Latency from a frame's arrival (its due time at `--rate`, else its request) to its
    /// answer, including any wait: nearest-rank percentiles.
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    pub latency_p99_s: f64,
    /// Frames checked against tract (`--verify-every`), and the largest max |diff| ÷ max |output|.
    pub verified: usize,
    pub max_rel_diff: Option<f32>,
    /// Per frame: (frame number from 1, latency s, or null if dropped).
    pub latencies_s: Vec<(usize, Option<f64>)>,
    /// Emulated boards, over the frames answered: time computations waited for a compute
    /// slot of this machine, and time they took beyond their twins' (the emulation could not
    /// hide it: latencies are that much longer than the twins' would be).
    pub slot_wait_s: f64,
    pub overrun_s: f64,
    /// Frames answered on a fallback plan (a worker lost), frames computed again after an
    /// attempt failed, and every change of plan.
    pub on_fallback: usize,
    pub computed_again: usize,
    pub plan_changes: Vec<PlanChange>,
}

impl std::fmt::Display for StreamSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.rate_fps.map_or(String::new(), |r| format!(" arriving at {r} frames/s,"));
        write!(
            f,
            "stream:{rate} {} of {} frames answered, up to {} in flight ({} dropped, {} waited for room): {:.2} frames/s{}; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
            self.answered,
            self.frames,
            self.peak_in_flight,
            self.dropped,
            self.waited,
            self.throughput_fps,
            self.steady_fps.map_or(String::new(), |s| format!(" ({s:.2} while every lane was busy)")),
            self.latency_p50_s * 1e3,
            self.latency_p95_s * 1e3,
            self.latency_p99_s * 1e3
        )?;
        if self.verified > 0 {
            write!(f, "; {} frames verified against tract (largest max |diff| ÷ max |output| {:.1e})", self.verified, self.max_rel_diff.unwrap_or(0.0))?;
        }
        if self.overrun_s > 0.0005 {
            write!(f, "; emulation overran the twins by {:.1} ms in all ({:.1} ms waiting for a core)", self.overrun_s * 1e3, self.slot_wait_s * 1e3)?;
        }
        if self.on_fallback + self.computed_again > 0 {
            write!(f, "; {} frames answered on a fallback plan, {} computed again", self.on_fallback, self.computed_again)?;
        }
        for c in &self.plan_changes {
            let lost = if c.lost.is_empty() { "the plan again (every board back)".to_string() } else { format!("the fallback without {}", c.lost.join(", ")) };
            let since = c.lost_at_unix_s.map_or(String::new(), |l| format!(", {:.0} ms after the loss was found", (c.answered_unix_s - l) * 1e3));
            write!(f, "\n  from frame {}: {lost}{since}", c.frame)?;
        }
        Ok(())
    }
}

/// What a stream gave: the answered frames, the last one's output and the summary.
pub struct Stream {
    pub answered: Vec<Answered>,
    pub last_output: Tensor,
    pub summary: StreamSummary,
}

/// Send `o.frames` frames through the running fleet, up to `o.in_flight` of them in flight
/// at once (each on its own connection to the coordinator; the boards take the oldest frame's
/// work first). At `o.rate` frame k arrives at k ÷ rate; a frame arriving while `in_flight`
/// frames are in flight waits for one of them to be answered, or is dropped with `o.drop`;
/// each counted. The frames' lines come in frame order; every `verify_every`-th frame is
/// checked against tract (a failed check, or a failed frame, is an error naming the frame).
pub fn stream_frames(fleet: &Fleet, plan: &Plan, m: &LoadedModel, inputs: &[(String, Tensor)], o: &StreamOptions, out: &mut dyn std::io::Write) -> Result<Stream> {
    ensure!(o.rate.is_none_or(|r| r.is_finite() && r > 0.0), "--rate must be a positive number of frames per second");
    ensure!(o.verify_every.is_none_or(|k| k > 0), "--verify-every must be at least 1");
    let per_lane = o.in_flight.unwrap_or(plan.in_flight);
    ensure!(per_lane > 0, "--in-flight must be at least 1");
    let n = o.frames.max(1);
    // Frames are dealt among the plan's lanes (one lane: the whole fleet); each lane keeps up
    // to `per_lane` frames in flight; a lane takes the next frame when it has room, so faster
    // lanes take more.
    let lanes = fleet.lanes(plan)?;
    let bound = per_lane * lanes.len();
    // What a sender thread gives back: frame k, its input, its lane, and the fleet's answer.
    type Reply = (usize, usize, usize, Result<(Tensor, FrameReport, Duration)>, Instant);
    let (job_tx, job_rx) = std::sync::mpsc::channel::<(usize, usize)>();
    let job_rx = std::sync::Mutex::new(job_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Reply>();
    let t0 = Instant::now();
    let mut s = StreamState::new(n, o.verify_every, lanes.iter().map(|(f, _)| f.coordinator().name.clone()).collect());
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..per_lane.min(n) {
            for (l, (lane, lane_plan)) in lanes.iter().enumerate() {
                let (job_rx, done_tx) = (&job_rx, done_tx.clone());
                scope.spawn(move || loop {
                    let Ok((k, i)) = job_rx.lock().unwrap().recv() else { return };
                    let answer = infer(lane, lane_plan, &inputs[i].1);
                    if done_tx.send((k, i, l, answer, Instant::now())).is_err() {
                        return;
                    }
                });
            }
        }
        drop(done_tx);
        let result = (|| -> Result<()> {
            let mut in_flight = 0;
            for k in 0..n {
                let due = o.rate.map(|r| t0 + wall_time(Duration::from_secs_f64(k as f64 / r)));
                // Answers that come back before frame k is due are taken meanwhile.
                loop {
                    let now = Instant::now();
                    let wait = match due {
                        Some(d) if d > now => d - now,
                        _ => break,
                    };
                    match done_rx.recv_timeout(wait) {
                        Ok(reply) => {
                            in_flight -= 1;
                            s.take(reply, inputs)?;
                        }
                        Err(_) => break,
                    }
                }
                if due.is_none() && in_flight >= bound {
                    // Without a rate, a frame arrives when there is room for it.
                    let reply = done_rx.recv().context("the stream's senders stopped")?;
                    in_flight -= 1;
                    s.take(reply, inputs)?;
                }
                let arrival = due.unwrap_or_else(Instant::now);
                if in_flight >= bound {
                    if o.drop {
                        s.dropped(k, arrival);
                        continue;
                    }
                    s.waited += 1;
                    let reply = done_rx.recv().context("the stream's senders stopped")?;
                    in_flight -= 1;
                    s.take(reply, inputs)?;
                }
                let i = k % inputs.len();
                s.arrivals[k] = Some(arrival);
                job_tx.send((k, i)).map_err(|_| anyhow!("the stream's senders stopped"))?;
                s.last_sent = Some(Instant::now());
                in_flight += 1;
                // Answers are reported (and checked against tract) once the next frame is on
                // its way, so that the fleet never waits for the report.
                s.flush(m, inputs, out)?;
                s.peak_in_flight = s.peak_in_flight.max(in_flight);
            }
            while in_flight > 0 {
                let reply = done_rx.recv().context("the stream's senders stopped")?;
                in_flight -= 1;
                s.take(reply, inputs)?;
                s.flush(m, inputs, out)?;
            }
            s.flush(m, inputs, out)?;
            Ok(())
        })();
        // The senders end with the jobs (those in flight finish first).
        drop(job_tx);
        result
    })?;
    s.finish(o.rate, per_lane, &lanes, t0)
}

/// Frames per second while every lane was busy, from (lane, when) of each answer and when the
/// last frame was sent (seconds on one clock): Σ over lanes of the lane's answers after its
/// first one up to `until`, over that time. Per lane, so that lanes started together do not
/// count their first answers in a window that opens with the first of them. None unless every
/// lane answered twice by `until`.
pub fn steady_fps(answers: &[(usize, f64)], lanes: usize, until: f64) -> Option<f64> {
    let mut total = 0.0;
    for lane in 0..lanes {
        let times: Vec<f64> = answers.iter().filter(|(l, t)| *l == lane && *t <= until).map(|x| x.1).collect();
        let first = times.iter().copied().fold(f64::INFINITY, f64::min);
        let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if times.len() < 2 || last <= first {
            return None;
        }
        total += (times.len() - 1) as f64 / (last - first);
    }
    Some(total)
}

/// A stream's bookkeeping: answers taken as they come, reported in frame order.
struct StreamState {
    n: usize,
    verify_every: Option<usize>,
    /// Frame k's arrival (None: not sent, or dropped).
    arrivals: Vec<Option<Instant>>,
    /// Frames answered but not reported yet (an earlier one is still in flight): frame k →
    /// (input, lane, output, report, end to end, answered at).
    pending: std::collections::BTreeMap<usize, (usize, usize, Tensor, FrameReport, Duration, Instant)>,
    /// The next frame to report.
    next: usize,
    /// Frames dropped, with their line.
    dropped_frames: std::collections::BTreeMap<usize, String>,
    answered: Vec<Answered>,
    last_output: Option<Tensor>,
    latencies: Vec<(usize, Option<f64>)>,
    waited: usize,
    peak_in_flight: usize,
    verified: usize,
    max_rel: Option<f32>,
    references: std::collections::HashMap<usize, Tensor>,
    last_answer: Option<Instant>,
    /// When the last frame was sent, and by which lane and when each frame was answered (in
    /// the order of answers).
    last_sent: Option<Instant>,
    answer_times: Vec<(usize, Instant)>,
    /// Each lane's coordinator, and the frames each lane answered.
    lanes: Vec<String>,
    per_lane: Vec<usize>,
    lane_latencies: Vec<Vec<f64>>,
}

impl StreamState {
    fn new(n: usize, verify_every: Option<usize>, lanes: Vec<String>) -> StreamState {
        StreamState {
            per_lane: vec![0; lanes.len()],
            lane_latencies: vec![Vec::new(); lanes.len()],
            last_sent: None,
            answer_times: Vec::new(),
            lanes,
            n,
            verify_every,
            arrivals: vec![None; n],
            pending: Default::default(),
            next: 0,
            dropped_frames: Default::default(),
            answered: Vec::new(),
            last_output: None,
            latencies: Vec::new(),
            waited: 0,
            peak_in_flight: 0,
            verified: 0,
            max_rel: None,
            references: Default::default(),
            last_answer: None,
        }
    }

    fn dropped(&mut self, k: usize, arrival: Instant) {
        self.dropped_frames.insert(k, format!("frame {}: dropped (arrived {:.1} ms ago, while the frames in flight were at their bound)", k + 1, twin_time(arrival.elapsed()).as_secs_f64() * 1e3));
    }

    /// Take a sender's answer (a failed frame is an error naming it).
    fn take(&mut self, (k, i, lane, answer, at): (usize, usize, usize, Result<(Tensor, FrameReport, Duration)>, Instant), inputs: &[(String, Tensor)]) -> Result<()> {
        let (y, report, end_to_end) = answer.with_context(|| format!("frame {} ({})", k + 1, inputs[i].0))?;
        self.last_answer = Some(self.last_answer.map_or(at, |l| l.max(at)));
        self.answer_times.push((lane, at));
        self.pending.insert(k, (i, lane, y, report, end_to_end, at));
        Ok(())
    }

    /// Report every frame answered (or dropped) so far, in frame order.
    fn flush(&mut self, m: &LoadedModel, inputs: &[(String, Tensor)], out: &mut dyn std::io::Write) -> Result<()> {
        while self.next < self.n {
            if let Some(line) = self.dropped_frames.get(&self.next) {
                writeln!(out, "{line}")?;
                self.latencies.push((self.next + 1, None));
                self.next += 1;
                continue;
            }
            let Some((i, lane, y, report, end_to_end, at)) = self.pending.remove(&self.next) else { break };
            self.per_lane[lane] += 1;
            self.lane_latencies[lane].push(twin_time(at - self.arrivals[self.next].expect("a frame answered was sent")).as_secs_f64());
            let k = self.next;
            self.next += 1;
            let latency = twin_time(at - self.arrivals[k].expect("a frame answered was sent")).as_secs_f64();
            self.latencies.push((k + 1, Some(latency)));
            let mut line = format!(
                "frame {} ({}): latency {:.1} ms ({:.1} ms end to end, {:.1} ms in the coordinator)",
                k + 1,
                inputs[i].0,
                latency * 1e3,
                end_to_end.as_secs_f64() * 1e3,
                report.total_s * 1e3
            );
            if self.lanes.len() > 1 {
                line += &format!(", lane of {}", self.lanes[lane]);
            }
            if report.overrun_s > 0.0005 {
                line += &format!(", emulation overran by {:.1} ms", report.overrun_s * 1e3);
            }
            if !report.lost.is_empty() {
                line += &format!(", on the fallback plan without {}", report.lost.join(", "));
            }
            if let Some(why) = report.retried.last() {
                line += &format!(", computed again ({}× ; {why})", report.retried.len());
            }
            if self.verify_every.is_some_and(|e| (k + 1) % e == 0) {
                if !self.references.contains_key(&i) {
                    self.references.insert(i, reference::run(&m.onnx, &inputs[i].1)?);
                }
                let a = reference::check(&y, &self.references[&i], &format!("frame {}'s output", k + 1))?;
                self.verified += 1;
                self.max_rel = Some(self.max_rel.map_or(a.ratio(), |r| r.max(a.ratio())));
                line += &format!(", verified (max |diff| {:.1e})", a.diff);
            }
            writeln!(out, "{line}")?;
            let answered_unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()) - at.elapsed().as_secs_f64();
            self.answered.push(Answered { input: i, lane, report, end_to_end, answered_unix_s });
            self.last_output = Some(y);
        }
        Ok(())
    }

    fn steady_fps(&self) -> Option<f64> {
        let t0 = self.answer_times.iter().map(|x| x.1).min()?;
        let at = |t: Instant| twin_time(t.saturating_duration_since(t0)).as_secs_f64();
        let answers: Vec<(usize, f64)> = self.answer_times.iter().map(|&(l, t)| (l, at(t))).collect();
        steady_fps(&answers, self.lanes.len(), at(self.last_sent?))
    }

    fn finish(mut self, rate: Option<f64>, in_flight: usize, lanes: &[(Fleet, Plan)], t0: Instant) -> Result<Stream> {
        // Dropped frames after the last answered one.
        while self.next < self.n && self.dropped_frames.contains_key(&self.next) {
            self.latencies.push((self.next + 1, None));
            self.next += 1;
        }
        let steady_fps = self.steady_fps();
        let last_output = self.last_output.context("every frame was dropped")?;
        let done: Vec<f64> = self.latencies.iter().filter_map(|l| l.1).collect();
        let p = |q: f64| legion_runtime::stats::percentile(&done, q);
        let last = self.last_answer.unwrap_or(t0);
        let plan_changes = plan_changes(&self.answered, &self.latencies);
        let summary = StreamSummary {
            frames: self.n,
            answered: self.answered.len(),
            dropped: self.dropped_frames.len(),
            waited: self.waited,
            in_flight,
            peak_in_flight: self.peak_in_flight,
            lanes: lanes.iter().zip(&self.per_lane).map(|((f, _), &n)| (f.coordinator().name.clone(), n)).collect(),
            lane_latency_p50_s: self.lane_latencies.iter().map(|l| (!l.is_empty()).then(|| legion_runtime::stats::median(l))).collect(),
            rate_fps: rate,
            throughput_fps: self.answered.len() as f64 / twin_time(last - t0).as_secs_f64().max(1e-9),
            steady_fps,
            latency_p50_s: p(50.0),
            latency_p95_s: p(95.0),
            latency_p99_s: p(99.0),
            verified: self.verified,
            max_rel_diff: self.max_rel,
            latencies_s: self.latencies,
            slot_wait_s: self.answered.iter().map(|a| a.report.slot_wait_s).sum(),
            overrun_s: self.answered.iter().map(|a| a.report.overrun_s).sum(),
            on_fallback: self.answered.iter().filter(|a| !a.report.lost.is_empty()).count(),
            computed_again: self.answered.iter().filter(|a| !a.report.retried.is_empty()).count(),
            plan_changes,
        };
        Ok(Stream { answered: self.answered, last_output, summary })
    }
}

/// Every frame (in frame order) whose lane answered it on another plan than that lane's
/// previous frame. `latencies`: (frame number, latency or None) of the frames in order.
fn plan_changes(answered: &[Answered], latencies: &[(usize, Option<f64>)]) -> Vec<PlanChange> {
    let numbers = latencies.iter().filter(|l| l.1.is_some()).map(|l| l.0);
    let mut last: std::collections::HashMap<usize, &Vec<String>> = Default::default();
    let mut changes = Vec::new();
    for (a, frame) in answered.iter().zip(numbers) {
        let before = last.insert(a.lane, &a.report.lost);
        if before.map_or(!a.report.lost.is_empty(), |b| *b != a.report.lost) {
            changes.push(PlanChange { frame, lane: a.lane, lost: a.report.lost.clone(), lost_at_unix_s: a.report.lost_at_unix_s, answered_unix_s: a.answered_unix_s });
        }
    }
    changes
}

/// What `legionc verify` found: a plan run in-process against tract's single run.
pub struct InProcess {
    pub plan: Plan,
    pub reference_s: f64,
    pub split_s: f64,
    pub agreement: reference::Agreement,
}

/// Split `m` over boards of relative `speeds` (rows in proportion, groups fused as `fusion`
/// says), run the plan in this process and compare with tract's single run on a seeded input.
/// The caller judges the agreement (`Agreement::ensure_within`), after printing the report.
pub fn verify_in_process(m: &LoadedModel, speeds: &[f64], fusion: solve::Fusion, seed: u64) -> Result<InProcess> {
    let fleet: Vec<(String, f64)> = speeds.iter().enumerate().map(|(i, &s)| (format!("board{i}"), s)).collect();
    let plan = solve::plan_from(&m.ir, &m.sha256, &fleet, &solve::fused_groups(&m.ir, fusion), legion_runtime::plan::Topology::Mesh)?;
    let input = reference::random_input(&m.ir.user_input_shape(), seed);
    let t = std::time::Instant::now();
    let expected = reference::run(&m.onnx, &input)?;
    let reference_s = t.elapsed().as_secs_f64();
    let mut local = legion_runtime::plan::LocalFleet::new(m.ir.clone(), plan.clone())?;
    let t = std::time::Instant::now();
    let got = local.infer(input)?;
    let split_s = t.elapsed().as_secs_f64();
    let (diff, scale) = reference::compare(&got, &expected)?;
    Ok(InProcess { plan, reference_s, split_s, agreement: reference::Agreement { diff, scale } })
}

impl std::fmt::Display for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model on {} boards, {} groups, plan {}", self.plan.boards.len(), self.plan.groups.len(), &self.plan.hash()[..16])?;
        for (i, g) in self.plan.groups.iter().enumerate() {
            writeln!(f, "  group {i}: values {}..{} rows {:?}", g.from, g.to, g.rows)?;
        }
        writeln!(f, "tract single run {:.1} ms; split in-process (first run, builds bands) {:.1} ms", self.reference_s * 1e3, self.split_s * 1e3)?;
        writeln!(f, "max |diff| {:.3e}, max |output| {:.3e}, ratio {:.3e} (limit {:e})", self.agreement.diff, self.agreement.scale, self.agreement.ratio(), reference::TOLERANCE)
    }
}

/// The whole model on one emulated board of `speed`, in this process, the way an emulated
/// board computes (CPU time stretched to the twin's speed). Returns output and seconds.
pub fn single_board(m: &LoadedModel, input: &Tensor, speed: f64) -> Result<(Tensor, f64)> {
    let plan = runnable(section_graph(&m.ir, 0, m.ir.output())?)?;
    let x = to_nchw(&m.ir, input.clone())?;
    // Timed warm, as the boards time their bands (`link::twin_caches`).
    let (y, took) = compute_warm(Some(speed), x, |x| run(&plan, x));
    Ok((y?, took.took.as_secs_f64()))
}

/// [`describe_output`] of a model's output, or of each of its outputs.
pub fn describe_outputs(parts: &[crate::model::onnx::OutputPart], y: &Tensor) -> Result<String> {
    if parts.len() <= 1 {
        return describe_output(y);
    }
    let each = crate::model::onnx::unpack(parts, y)?;
    Ok(parts.iter().zip(&each).map(|(p, t)| format!("output {}: {}", p.name, describe_output(t).unwrap_or_default())).collect::<Vec<_>>().join("\n"))
}

/// Top classes of a classifier output, or the output's shape.
pub fn describe_output(t: &Tensor) -> Result<String> {
    let v = t.to_plain_array_view::<f32>()?;
    if t.rank() == 2 && t.shape()[0] == 1 {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        let flat: Vec<f32> = v.iter().copied().collect();
        idx.sort_by(|&a, &b| flat[b].total_cmp(&flat[a]));
        let top: Vec<String> = idx.iter().take(5).map(|&i| format!("class {i}: {:.4}", flat[i])).collect();
        Ok(format!("top classes: {}", top.join(", ")))
    } else {
        Ok(format!("output shape {:?}", t.shape()))
    }
}

/// The per-group per-board time table of a frame.
pub fn breakdown(report: &FrameReport, plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "topology: {}{}", plan.topology, if plan.topology == legion_runtime::plan::Topology::Mesh { " (send: waiting for its input rows; recv: the last band's way back)" } else { "" });
    let _ = writeln!(s, "{:>5} {:>9} {:<14} {:>11} {:>9} {:>9} {:>9}", "group", "values", "board", "rows", "send ms", "comp ms", "recv ms");
    // One board's line: its part (rows, or f: features of a split tail layer) and times.
    let line = |s: &mut String, label: String, values: String, t: &BandTiming, part: String| {
        let _ = writeln!(s, "{label:>5} {values:>9} {:<14} {part:>11} {:>9.1} {:>9.1} {:>9.1}", t.board, t.send_s * 1e3, t.compute_s * 1e3, t.recv_s * 1e3);
    };
    for (gi, (g, timings)) in plan.groups.iter().zip(&report.groups).enumerate() {
        for (i, t) in timings.iter().enumerate() {
            let (group, values) = if i == 0 { (gi.to_string(), format!("{}..{}", g.from, g.to)) } else { (String::new(), String::new()) };
            line(&mut s, group, values, t, format!("{}..{}", t.rows.0, t.rows.1));
            if !t.sent_to.is_empty() {
                // Rows that left before the band was done (edges first) say when.
                let early = |i: usize| t.sent_after_s.get(i).filter(|&&a| a + 1e-6 < t.compute_s).map_or(String::new(), |a| format!(" after {:.1} ms", a * 1e3));
                let sent: Vec<String> = t.sent_to.iter().enumerate().map(|(i, (b, r))| format!("{b} rows {}..{}{}", r.0, r.1, early(i))).collect();
                let _ = writeln!(s, "{:>16} then sent to {}", "", sent.join(", "));
            }
        }
        let _ = writeln!(s, "{:>5} {:>9} {:<14} {:>11} group wall {:.1} ms", "", "", "", "", report.group_s[gi] * 1e3);
    }
    for (split, timings) in plan.tail.iter().zip(&report.tail_split) {
        for (i, t) in timings.iter().enumerate() {
            let (label, values) = if i == 0 { ("tail".to_string(), split.node.to_string()) } else { (String::new(), String::new()) };
            line(&mut s, label, values, t, format!("f{}..{}", t.rows.0, t.rows.1));
        }
    }
    let split = if plan.tail.is_empty() { String::new() } else { format!(" ({} layers split by output features, f: features)", plan.tail.len()) };
    if report.tail_gathered {
        let _ = writeln!(s, "tail layer {}: its input gathered on the boards from their last bands (send: waiting for them; recv: the slice's way back)", plan.tail[0].node);
    }
    let _ = writeln!(s, "tail on the coordinator{}: {:.1} ms{split}", if report.tail_gathered { " after it" } else { "" }, report.tail_s * 1e3);
    let _ = writeln!(
        s,
        "coordinator's own work (split, gather): {:.1} ms; waits for a compute slot: {:.1} ms; overruns: {:.1} ms ({:.2} % of the frame)",
        report.coordinator_s * 1e3,
        report.slot_wait_s * 1e3,
        report.overrun_s * 1e3,
        report.overrun_s / report.total_s.max(1e-9) * 1e2
    );
    if !report.peak_rss_mb.is_empty() {
        let peaks: Vec<String> = report.peak_rss_mb.iter().map(|(b, mb)| format!("{b} {mb:.0} MB")).collect();
        let _ = writeln!(s, "peak resident memory (VmHWM) of each board process: {}", peaks.join(", "));
    }
    s
}

/// The largest answer `run` takes from a coordinator (checked before it is read).
const CLIENT_MAX_PAYLOAD: u64 = 256 << 20;

/// One frame through the running fleet.
pub fn infer(fleet: &Fleet, plan: &Plan, input: &Tensor) -> Result<(Tensor, FrameReport, Duration)> {
    let t = std::time::Instant::now();
    let key = crate::deploy::fleet_key(fleet)?;
    let (out, report) = legion_runtime::board::infer(&fleet.coordinator().addr(), &key, &fleet.deployed(plan).hash(), input, wall_time(fleet.deadline()), CLIENT_MAX_PAYLOAD)
        .map_err(|e| {
            let refused = e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused));
            if refused { e.context("the coordinator does not answer: is the fleet up? (`legionc up`)") } else { e }
        })
        .with_context(|| format!("fleet {} (coordinator {} at {})", fleet.name, fleet.coordinator().name, fleet.coordinator().addr()))?;
    Ok((out, report, twin_time(t.elapsed())))
}
