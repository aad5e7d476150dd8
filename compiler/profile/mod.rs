//! Profiling: the probe's measurements on every board, kept in the hash-keyed cache.
//!
//! A caller asks for bands of groups on boards ([`Want`]); what the cache holds for the board's
//! identity is answered from it, the rest is measured by the probe, boards in parallel (at most
//! 4 at once, one progress bar each). Boards with the same identity share records, and a
//! measurement two boards of one identity need is made once, by the less loaded one. Emulated
//! boards run the probe as a local process (twin time, not slept out); real boards over SSH, in
//! a temporary folder removed afterwards, also after an error or Ctrl-C, through `crate::ssh`.

pub mod cache;

use crate::fleet::{Board, BoardKind, Fleet};
use crate::model::LoadedModel;
use crate::{codegen, parallel};
use crate::ssh;
use anyhow::{anyhow, bail, Context, Result};
use cache::{Cache, RecordId, Settings};
use indicatif::ProgressBar;
use legion_runtime::halo::{Group, Rows};
use legion_runtime::ir::Model;
use legion_runtime::link::LinkSpec;
use legion_runtime::plan::hex;
use legion_runtime::probe::{Facts, Job, JobFile, Line, Measurement};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Set by Ctrl-C while profiling: every board stops, cleans up and reports `interrupted`.
pub static INTERRUPTED: std::sync::LazyLock<std::sync::Arc<AtomicBool>> = std::sync::LazyLock::new(Default::default);

/// True while no profiling runs: Ctrl-C then ends legionc at once, as by default.
static IDLE: std::sync::LazyLock<std::sync::Arc<AtomicBool>> = std::sync::LazyLock::new(|| std::sync::Arc::new(AtomicBool::new(true)));

/// Ctrl-C caught while this lives, so that profiling can remove its temporary files on the
/// boards; a second Ctrl-C ends legionc at once, and so does one when nothing is profiled.
pub struct Interrupts(());

pub fn catch_interrupts() -> Interrupts {
    use signal_hook::{consts::SIGINT, flag};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Actions run in the order registered: the default action (the process ends by the
        // signal, as the shell expects) when idle or already interrupted, else only the flag.
        for r in [flag::register_conditional_default(SIGINT, IDLE.clone()), flag::register_conditional_default(SIGINT, INTERRUPTED.clone()), flag::register(SIGINT, INTERRUPTED.clone())] {
            if let Err(e) = r {
                eprintln!("warning: Ctrl-C cannot be caught ({e}): an interrupted profiling run leaves its temporary files on the boards");
            }
        }
    });
    IDLE.store(false, Ordering::SeqCst);
    Interrupts(())
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        IDLE.store(true, Ordering::SeqCst);
    }
}

/// `--offline` and the profile cache lacks a measurement: its own error, so that the command
/// line exits with its own code ([`EXIT_MISSING_PROFILES`]) and a CI workflow can fall back to a
/// profiling job that reaches the boards.
#[derive(Debug)]
pub struct MissingProfiles(pub String);

impl std::fmt::Display for MissingProfiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MissingProfiles {}

/// The exit code of a command that failed with [`MissingProfiles`].
pub const EXIT_MISSING_PROFILES: u8 = 3;

/// How to profile.
#[derive(Clone, Debug)]
pub struct Options {
    pub cache_dir: PathBuf,
    /// Measure again even what the cache holds.
    pub refresh: bool,
    /// Fail instead of measuring what the cache does not hold.
    pub offline: bool,
    pub accept_new_host_keys: bool,
    pub quiet: bool,
    /// Shared cargo target directory (the probe is built there, once per triple).
    pub target_dir: PathBuf,
}

impl Options {
    /// Measure what the cache lacks, with the cache in `cache_dir` (default: `$LEGION_CACHE_DIR`,
    /// else `~/.cache/legionc`) and the probe built in `target_dir`.
    pub fn new(cache_dir: Option<PathBuf>, target_dir: &std::path::Path) -> Options {
        Options { cache_dir: cache_dir.unwrap_or_else(cache::default_dir), refresh: false, offline: false, accept_new_host_keys: false, quiet: false, target_dir: target_dir.to_path_buf() }
    }
}

/// What a profiling pass did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Results answered from the cache.
    pub cached: usize,
    /// Jobs the probe measured now.
    pub measured: usize,
    /// Probe runs now (warm-up and repeats of every measured job).
    pub probe_runs: usize,
    /// Board time spent measuring now (an emulated board's in twin time).
    pub board_seconds: f64,
    /// Board time the cached results had cost when they were measured.
    pub cached_board_seconds: f64,
    /// SSH connections opened.
    pub ssh_connections: usize,
    /// Corrupt cache lines found (and measured again).
    pub corrupt_records: usize,
}

impl Stats {
    /// Measurements the plan rests on, cached or not.
    pub fn trials(&self) -> usize {
        self.cached + self.measured
    }
    /// Board time of those measurements, whenever they were made.
    pub fn total_board_seconds(&self) -> f64 {
        self.board_seconds + self.cached_board_seconds
    }
    /// What `compile` prints of a profiling pass.
    pub fn describe(&self, cache_dir: &Path) -> String {
        let mut s = format!(
            "profiling: {} measurements ({} cached, {} measured now: {} probe runs, {:.1} board-s), {} SSH connections, cache {}\n",
            self.trials(),
            self.cached,
            self.measured,
            self.probe_runs,
            self.board_seconds,
            self.ssh_connections,
            cache_dir.join("profiles.jsonl").display()
        );
        if self.corrupt_records > 0 {
            s += &format!("profiling: {} corrupt cache records were dropped and measured again\n", self.corrupt_records);
        }
        s
    }
    pub fn add(&mut self, o: &Stats) {
        self.cached += o.cached;
        self.measured += o.measured;
        self.probe_runs += o.probe_runs;
        self.board_seconds += o.board_seconds;
        self.cached_board_seconds += o.cached_board_seconds;
        self.ssh_connections += o.ssh_connections;
        self.corrupt_records += o.corrupt_records;
    }
}

/// A band of a group to time on a board: `segment` jobs are single layers between consecutive
/// cut points (the E matrix); `group` jobs are fused groups (full search, wild card).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Want {
    pub board: usize,
    pub kind: &'static str,
    pub group: Group,
    pub out: Rows,
}

/// Signature of a group: the shapes and parameters of its layers and of its input, not their
/// names or weights, so VGG's repeated convolutions share one.
pub fn signature(model: &Model, group: Group) -> String {
    let nodes: Vec<_> = group
        .layers()
        .map(|id| {
            let n = &model.nodes[id];
            let ins: Vec<usize> = n.inputs.iter().map(|&v| v - group.from).collect();
            (&n.op, ins, &n.shape)
        })
        .collect();
    let text = serde_json::to_vec(&(&model.nodes[group.from].shape, nodes)).expect("the IR serialises");
    hex(&Sha256::digest(text))[..32].to_string()
}

/// The version of what [`cache_key`] is made of: raised when its inputs change meaning.
const CACHE_KEY_VERSION: u32 = 1;

/// A short stable key for the profiles `fleet`'s compile with `strategy` uses, for a CI cache
/// to restore exactly those (`legionc cache-key`). Made of what profile records are keyed by,
/// known before any board is reached:
/// - per board: an emulated board's identity (its twin's target or speed, this machine's CPU
///   model and calibrated reference: profiles of emulated boards hold for this machine only);
///   a real board's SSH address (its identity comes from facts cached by address), target,
///   threads and cores; its measurement settings and the probe's hash for its triple;
/// - the coordinator's entry (the tail is measured there);
/// - the model's structure: every layer's op, parameters and shapes, not its weights (a model
///   retrained on other data keeps its profiles);
/// - the strategy (it decides which groups are measured).
///
/// The boards' entries are sorted, so the order of the boards, their names and their runtime
/// ports do not enter: profiles do not depend on them.
pub fn cache_key(fleet: &Fleet, model: &LoadedModel, strategy: crate::fleet::Strategy) -> Result<String> {
    let entry = |b: &Board| -> Result<String> {
        let who = match (&b.kind, &b.target) {
            (BoardKind::Emulated { speed }, _) => emulated_identity(b, *speed),
            (BoardKind::Ssh { .. }, t) => format!("{} target {} threads {} cores {:?}", address(b), t.as_ref().map_or("-", |t| t.name.as_str()), b.threads, b.cores()),
        };
        Ok(format!("{who} | settings {} | probe {}", serde_json::to_string(&settings(b))?, codegen::probe_sha256(b.triple())?))
    };
    let mut lines = fleet.boards.iter().map(entry).collect::<Result<Vec<_>>>()?;
    lines.sort();
    lines.push(format!("coordinator {}", entry(fleet.coordinator())?));
    lines.push(format!("model {}", signature(&model.ir, Group { from: 0, to: model.ir.output() })));
    lines.push(format!("strategy {} version {CACHE_KEY_VERSION}", strategy.name()));
    if fleet.objective != crate::fleet::Objective::Latency {
        // The objective's search plans lanes led by other boards: their tails are measured too.
        lines.push("lanes".into());
    }
    Ok(format!("legionc-profiles-{}", &hex(&Sha256::digest(lines.join("\n")))[..20]))
}

/// How measurements are made on a board.
pub fn settings(b: &Board) -> Settings {
    Settings { warmup: 1, repeats: 3, threads: if b.is_emulated() { 1 } else { b.threads }, cores: b.cores() }
}

/// The identity of an emulated board: its twin on this machine's CPU, at the machine's
/// calibrated speed, and how its runs are timed (a new calibration or the drift correction
/// turned off measures again).
fn emulated_identity(b: &Board, speed: f64) -> String {
    use legion_runtime::link::{drift, twin_caches};
    let f = legion_runtime::probe::facts();
    let drift = if drift::enabled() { format!("reference {:.0} ns", drift::calibrated() * 1e9) } else { "no drift correction".into() };
    format!("emulated twin {} speed {speed:?} on {} ({}, {drift}, {})", b.target.as_ref().map(|t| t.name.as_str()).unwrap_or("custom"), f.cpu_model, f.arch, twin_caches())
}

/// The identity of a real board, from its probe's facts.
fn facts_identity(f: &Facts) -> String {
    let quota = f.cpu_quota.map(|q| format!(", CPU quota {q:.2} cores")).unwrap_or_default();
    format!("{} ({}, {} cores{quota}, {})", f.cpu_model, f.arch, f.cores, f.probe_version)
}

fn address(b: &Board) -> String {
    match &b.kind {
        BoardKind::Ssh { host, user, port, .. } => format!("ssh://{user}@{host}:{port}"),
        BoardKind::Emulated { .. } => format!("emulated://{}", b.name),
    }
}

fn facts_id(b: &Board, probe: &str) -> RecordId {
    RecordId { kind: "facts".into(), identity: address(b), probe: probe.into(), signature: String::new(), rows: (0, 0), settings: settings(b) }
}

fn link_id(b: &Board, probe: &str) -> RecordId {
    RecordId { kind: "link".into(), identity: address(b), probe: probe.into(), signature: String::new(), rows: (0, 0), settings: settings(b) }
}

/// The measured link of a real board (from legionc's host), or the twin's link.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LinkFit {
    pub link: LinkSpec,
    pub measured: bool,
}

/// The results of one profiling pass.
pub struct Measured {
    /// Per want, in order.
    pub results: Vec<Measurement>,
    pub identities: Vec<String>,
    /// Per board: its link.
    pub links: Vec<LinkFit>,
    pub stats: Stats,
}

/// Work for one board in a pass.
#[derive(Default)]
struct BoardWork {
    facts: bool,
    link: bool,
    jobs: Vec<(RecordId, Group, Rows)>,
}

/// Measure `wants`, answering from the cache what it holds. Real boards' links are fitted by
/// echo (and cached) along the way.
pub fn measure(fleet: &Fleet, model: &LoadedModel, wants: &[Want], opts: &Options) -> Result<Measured> {
    let cache = Cache::open(&opts.cache_dir)?;
    let mut stats = Stats { corrupt_records: cache.corrupt, ..Default::default() };
    let probes: Vec<String> = fleet.boards.iter().map(|b| codegen::probe_sha256(b.triple())).collect::<Result<_>>()?;
    let mut work: Vec<BoardWork> = fleet.boards.iter().map(|_| BoardWork::default()).collect();
    // Phase 1: identities. A real board's comes from its facts, cached by address.
    let mut identities: Vec<Option<String>> = vec![None; fleet.boards.len()];
    for (i, b) in fleet.boards.iter().enumerate() {
        match b.kind {
            BoardKind::Emulated { speed } => identities[i] = Some(emulated_identity(b, speed)),
            BoardKind::Ssh { .. } => {
                let cached = if opts.refresh { None } else { cache.get(&facts_id(b, &probes[i])) };
                match cached {
                    Some(r) => identities[i] = Some(facts_identity(&serde_json::from_value(r.value)?)),
                    None => work[i].facts = true,
                }
                work[i].link = opts.refresh || cache.get(&link_id(b, &probes[i])).is_none();
            }
        }
    }
    if work.iter().any(|w| w.facts) {
        let missing: Vec<&str> = fleet.boards.iter().zip(&work).filter(|(_, w)| w.facts).map(|(b, _)| b.name.as_str()).collect();
        if opts.offline {
            return Err(MissingProfiles(format!("--offline: the profile cache {} has no facts for board(s) {}: run once without --offline", cache.path().display(), missing.join(", "))).into());
        }
        let s = run_boards(fleet, model, &work, &probes, &cache, opts, "facts")?;
        stats.add(&s);
        for (i, b) in fleet.boards.iter().enumerate() {
            if work[i].facts {
                let r = cache.get(&facts_id(b, &probes[i])).ok_or_else(|| anyhow!("board {}: the probe gave no facts", b.name))?;
                identities[i] = Some(facts_identity(&serde_json::from_value(r.value)?));
                work[i].facts = false;
                work[i].link = false;
            }
        }
    }
    let identities: Vec<String> = identities.into_iter().map(|i| i.expect("every identity is known")).collect();
    // Phase 2: the jobs, answered from the cache or given to the least loaded board of the
    // identity.
    let ids: Vec<RecordId> = wants
        .iter()
        .map(|w| RecordId {
            kind: w.kind.into(),
            identity: identities[w.board].clone(),
            probe: probes[w.board].clone(),
            signature: signature(&model.ir, w.group),
            rows: (w.out.start, w.out.end),
            settings: settings(&fleet.boards[w.board]),
        })
        .collect();
    let mut assigned: HashMap<String, usize> = HashMap::new();
    for (w, id) in wants.iter().zip(&ids) {
        let key = id.key();
        if assigned.contains_key(&key) {
            continue;
        }
        if !opts.refresh {
            if let Some(r) = cache.get(id) {
                let m: Measurement = serde_json::from_value(r.value)?;
                stats.cached += 1;
                stats.cached_board_seconds += m.board_seconds;
                assigned.insert(key, usize::MAX);
                continue;
            }
        }
        let same = (0..fleet.boards.len()).filter(|&i| identities[i] == identities[w.board] && probes[i] == probes[w.board] && settings(&fleet.boards[i]) == id.settings);
        let b = same.min_by_key(|&i| work[i].jobs.len()).unwrap_or(w.board);
        work[b].jobs.push((id.clone(), w.group, w.out));
        assigned.insert(key, b);
    }
    let to_measure: usize = work.iter().map(|w| w.jobs.len() + w.link as usize).sum();
    if to_measure > 0 {
        if opts.offline {
            let n: usize = work.iter().map(|w| w.jobs.len()).sum();
            let boards: Vec<&str> = fleet.boards.iter().zip(&work).filter(|(_, w)| !w.jobs.is_empty() || w.link).map(|(b, _)| b.name.as_str()).collect();
            return Err(MissingProfiles(format!("--offline: the profile cache {} lacks {n} measurement(s) (boards {}): run once without --offline", cache.path().display(), boards.join(", "))).into());
        }
        let s = run_boards(fleet, model, &work, &probes, &cache, opts, "profiling")?;
        stats.add(&s);
    }
    let results = ids
        .iter()
        .map(|id| {
            let r = cache.get(id).ok_or_else(|| anyhow!("no measurement for {} {} rows {:?}", id.kind, id.signature, id.rows))?;
            Ok(serde_json::from_value(r.value)?)
        })
        .collect::<Result<Vec<Measurement>>>()?;
    let links = fleet
        .boards
        .iter()
        .enumerate()
        .map(|(i, b)| match b.kind {
            BoardKind::Emulated { .. } => Ok(LinkFit { link: b.link, measured: false }),
            BoardKind::Ssh { .. } => {
                let r = cache.get(&link_id(b, &probes[i])).ok_or_else(|| anyhow!("board {}: no link measurement", b.name))?;
                Ok(LinkFit { link: serde_json::from_value(r.value)?, measured: true })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Measured { results, identities, links, stats })
}

/// Run every board's work, at most [`parallel::AT_ONCE`] boards at once, one progress bar each.
fn run_boards(fleet: &Fleet, model: &LoadedModel, work: &[BoardWork], probes: &[String], cache: &Cache, opts: &Options, what: &str) -> Result<Stats> {
    let busy: Vec<usize> = (0..fleet.boards.len()).filter(|&i| work[i].facts || work[i].link || !work[i].jobs.is_empty()).collect();
    // Build the probe for every triple that needs it.
    let mut binaries: BTreeMap<String, (PathBuf, Vec<u8>)> = BTreeMap::new();
    let out = fleet.out();
    for &i in &busy {
        let b = &fleet.boards[i];
        if !binaries.contains_key(b.triple()) {
            let p = crate::cargo_build::build_probe(out, &opts.target_dir, b)?;
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            binaries.insert(b.triple().into(), (p, bytes));
        }
    }
    let header = legion_runtime::modelfile::write(&model.ir, &|_| false);
    let style = parallel::style("{spinner} {prefix:<14} [{bar:20}] {pos}/{len} {msg} ({elapsed})");
    let bar = |&i: &usize| ProgressBar::new(work[i].jobs.len() as u64).with_style(style.clone()).with_prefix(fleet.boards[i].name.clone());
    let interrupts = catch_interrupts();
    let stats = Mutex::new(Stats::default());
    let r = parallel::each(&busy, what, opts.quiet, &bar, &|&i, bar| {
        let b = &fleet.boards[i];
        let w = &work[i];
        let mut board = BoardRun { fleet, board: b, probe: &probes[i], cache, bar, stats: Stats::default(), measured_here: AtomicUsize::new(0) };
        let r = match b.kind {
            BoardKind::Emulated { speed } => board.emulated(speed, &binaries[b.triple()].0, &header, w),
            BoardKind::Ssh { .. } => board.ssh(&binaries[b.triple()].1, &header, w, opts),
        };
        stats.lock().unwrap().add(&board.stats);
        r
    });
    drop(interrupts);
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: profiling stopped, temporary files removed; the {} records measured so far are kept in {}", stats.lock().unwrap().measured, cache.path().display());
    }
    r.map(|()| stats.into_inner().unwrap())
}

struct BoardRun<'a> {
    fleet: &'a Fleet,
    board: &'a Board,
    probe: &'a str,
    cache: &'a Cache,
    bar: &'a ProgressBar,
    stats: Stats,
    measured_here: AtomicUsize,
}

impl BoardRun<'_> {
    fn job_file(&self, w: &BoardWork, speed: Option<f64>) -> JobFile {
        let s = settings(self.board);
        JobFile {
            warmup: s.warmup,
            repeats: s.repeats,
            threads: s.threads,
            cores: s.cores,
            speed,
            jobs: w.jobs.iter().map(|(id, g, out)| Job { id: id.key(), group: *g, out: *out }).collect(),
        }
    }

    /// Handle one line of the probe's output.
    fn line(&mut self, w: &BoardWork, text: &str) -> std::result::Result<(), String> {
        let line: Line = serde_json::from_str(text).map_err(|e| format!("the probe printed '{text}': {e}"))?;
        match line {
            Line::Facts(f) => {
                if w.facts {
                    self.cache.insert(facts_id(self.board, self.probe), serde_json::to_value(&f).unwrap()).map_err(|e| format!("{e:#}"))?;
                }
                Ok(())
            }
            Line::Measurement(m) => {
                let (id, _, _) = w.jobs.iter().find(|(id, _, _)| id.key() == m.id).ok_or_else(|| format!("the probe answered an unknown job {}", m.id))?;
                self.stats.measured += 1;
                self.stats.probe_runs += m.repeats + settings(self.board).warmup;
                self.stats.board_seconds += m.board_seconds;
                self.measured_here.fetch_add(1, Ordering::SeqCst);
                self.cache.insert(id.clone(), serde_json::to_value(&m).unwrap()).map_err(|e| format!("{e:#}"))?;
                self.bar.inc(1);
                Ok(())
            }
            Line::Listening(_) => Err("unexpected echo line".into()),
        }
    }

    /// An emulated board: the probe as a local process, twin time.
    fn emulated(&mut self, speed: f64, exe: &Path, header: &[u8], w: &BoardWork) -> Result<()> {
        // A folder of its own (two legionc on one output directory never share one), removed
        // on every way out.
        std::fs::create_dir_all(self.fleet.out())?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".probe-{}-", self.board.slug()))
            .tempdir_in(self.fleet.out())
            .with_context(|| format!("board {}: creating a probe folder in {}", self.board.name, self.fleet.out().display()))?;
        let dir = tmp.path().to_path_buf();
        let model = dir.join("model.lgn");
        let jobs = dir.join("jobs.json");
        std::fs::write(&model, header)?;
        std::fs::write(&jobs, serde_json::to_vec(&self.job_file(w, Some(speed)))?)?;
        self.bar.set_message("measuring");
        let mut child = std::process::Command::new(exe)
            .arg("run")
            .arg("--model")
            .arg(&model)
            .arg("--jobs")
            .arg(&jobs)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("board {}: starting the probe {}", self.board.name, exe.display()))?;
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let pid = child.id() as i32;
        let done = AtomicBool::new(false);
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let mut r = Ok(());
            for line in std::io::BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if let Err(e) = self.line(w, &l) {
                            r = Err(anyhow!(e));
                            break;
                        }
                    }
                    Err(e) => {
                        r = Err(e.into());
                        break;
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
            r
        });
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        let status = child.wait()?;
        r.with_context(|| format!("board {}", self.board.name))?;
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("board {}: interrupted", self.board.name);
        }
        if !status.success() {
            bail!("board {}: the probe crashed ({status}): {}; the {} measurements made before are kept", self.board.name, err.trim(), self.measured_here.load(Ordering::SeqCst));
        }
        Ok(())
    }

    /// A real board over SSH: upload the probe into a temporary folder, run it, remove it.
    fn ssh(&mut self, probe: &[u8], header: &[u8], w: &BoardWork, opts: &Options) -> Result<()> {
        let t = self.fleet.ssh_target(self.board, opts.accept_new_host_keys).expect("a real board");
        self.bar.set_message("connecting");
        let c = ssh::Connection::open(&t)?;
        self.stats.ssh_connections += 1;
        let dir = c.exec("mktemp -d /tmp/legion-probe.XXXXXX")?.trim().to_string();
        if !dir.starts_with("/tmp/legion-probe.") {
            bail!("board {}: mktemp answered '{dir}'", self.board.name);
        }
        let r = self.ssh_in(&c, &dir, probe, header, w);
        // Remove the temporary folder (and a probe still running in it), whatever happened.
        // (`[/]` keeps the pattern from matching this shell's own command line)
        let clean = format!("pkill -KILL -f {}; rm -rf {}", ssh::shell_quote(&format!("[/]{}/legion-probe", &dir[1..])), ssh::shell_quote(&dir));
        if c.exec(&clean).is_err() {
            if let Ok(c2) = ssh::Connection::open(&t) {
                self.stats.ssh_connections += 1;
                let _ = c2.exec(&clean);
            }
        }
        r
    }

    fn ssh_in(&mut self, c: &ssh::Connection, dir: &str, probe: &[u8], header: &[u8], w: &BoardWork) -> Result<()> {
        let q = ssh::shell_quote(dir);
        self.bar.set_message("uploading the probe");
        c.upload(probe, &format!("{dir}/legion-probe"), 0o755)?;
        let idle = self.fleet.deadline().max(Duration::from_secs(60));
        if w.facts || !w.jobs.is_empty() {
            c.upload(header, &format!("{dir}/model.lgn"), 0o644)?;
            c.upload(&serde_json::to_vec(&self.job_file(w, None))?, &format!("{dir}/jobs.json"), 0o644)?;
            self.bar.set_message("measuring");
            let cmd = format!("exec {d}/legion-probe run --model {d}/model.lgn --jobs {d}/jobs.json", d = q);
            let r = c.exec_lines(&cmd, idle, &INTERRUPTED, &mut |l| self.line(w, l));
            if let Err(e) = r {
                let n = self.measured_here.load(Ordering::SeqCst);
                return Err(match e {
                    ssh::SshError::RemoteFailed { status, stderr, .. } => {
                        anyhow!("board {}: the probe crashed ({status}){}; the {n} measurements made before are kept", self.board.name, if stderr.trim().is_empty() { String::new() } else { format!(": {}", stderr.trim()) })
                    }
                    e => anyhow!(e),
                });
            }
        }
        if w.link {
            self.bar.set_message("fitting the link");
            let host = match &self.board.kind {
                BoardKind::Ssh { host, .. } => host.clone(),
                _ => unreachable!(),
            };
            let mut fit = None;
            let cmd = format!("exec {q}/legion-probe echo --listen 0.0.0.0:0 --deadline-s {}", idle.as_secs());
            c.exec_lines(&cmd, idle, &INTERRUPTED, &mut |l| match serde_json::from_str::<Line>(l) {
                Ok(Line::Listening(port)) => {
                    fit = Some(echo_fit(&format!("{host}:{port}"), idle).map_err(|e| format!("{e:#}"))?);
                    Ok(())
                }
                _ => Err(format!("the probe printed '{l}'")),
            })?;
            let fit = fit.ok_or_else(|| anyhow!("board {}: the echo server did not start", self.board.name))?;
            self.cache.insert(link_id(self.board, self.probe), serde_json::to_value(fit)?)?;
        }
        Ok(())
    }
}

/// Fit a link's one-way latency and bandwidth from echoes of a few payload sizes: the round
/// trip of n bytes is 2·latency + 2·n / bandwidth (least squares on the fastest of 3 tries).
fn echo_fit(addr: &str, deadline: Duration) -> Result<LinkSpec> {
    let mut s = legion_runtime::board::connect(addr, deadline)?;
    let sizes = [1usize << 10, 64 << 10, 512 << 10, 2 << 20];
    let mut points = Vec::new();
    let mut back = Vec::new();
    for &n in &sizes {
        let payload = vec![0x5au8; n];
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            s.write_all(&(n as u32).to_le_bytes())?;
            s.write_all(&payload)?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len)?;
            back.resize(n, 0);
            s.read_exact(&mut back)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        points.push((n as f64, best));
    }
    let (a, b) = least_squares(&points);
    Ok(LinkSpec { bandwidth_mbps: if b > 0.0 { 2.0 * 8.0 / b / 1e6 } else { 1e4 }, latency_ms: (a / 2.0 * 1e3).max(0.0) })
}

/// y = a + b·x by least squares.
pub fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}
