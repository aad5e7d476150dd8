//! fleet.yaml: the fleet, its model, its network and where the output goes.
//!
//! Parsed in two layers: raw serde types full of `Option`s that reject unknown keys, then
//! resolved into a [`Fleet`] with nothing left open (defaults applied, targets looked up, every
//! cross-reference checked). Every error names the file, the line and the field.

use crate::embedded;
use anyhow::{anyhow, bail, ensure, Context, Result};
use legion_runtime::link::LinkSpec;
pub use legion_runtime::plan::Topology;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------- targets

/// A board kind (`targets/<name>.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    /// Rust target triple.
    pub triple: String,
    /// Linker for cross-compiling (Debian's gcc cross packages).
    pub linker: String,
    pub rustflags: Vec<String>,
    /// qemu-user command line to run a binary of this triple here (tests).
    pub qemu: Vec<String>,
    /// CPUs a board's runtime and probe are pinned to (e.g. the big cores of big.LITTLE).
    pub cores: Vec<usize>,
    /// Threads tract may use.
    pub threads: usize,
    /// The emulated twin.
    pub emulated: Twin,
    /// RAM of the board, MB (from its specification; a fleet's board may override it). None:
    /// not limited (the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<f64>,
    /// What a plan must leave free of it: the operating system, sshd, page cache, MB.
    #[serde(default)]
    pub memory_reserve_mb: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Twin {
    /// Speed relative to one core of this machine.
    pub speed: f64,
    /// Default link.
    pub link: LinkSpec,
}

/// Every target legionc knows (embedded at build time from `targets/`).
pub fn targets() -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for (name, bytes) in embedded::dir("targets") {
        if !name.ends_with(".yaml") {
            continue;
        }
        let t: Target = serde_yaml::from_slice(bytes).with_context(|| format!("targets/{name}"))?;
        out.push(t);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The host's own triple (emulated boards run here).
pub const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

// ---------------------------------------------------------------- strategies

/// How the plan is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Single-layer profiles, FLC by dynamic programming, min–max rows, then the wild card.
    Legion,
    /// Full search: every contiguous group measured on every board, DP on the measurements.
    Fss,
    /// No fusion: every segment between cut points is its own group (min–max rows).
    Layerwise,
    /// All splittable layers in one group (min–max rows).
    OneGroup,
    /// FLC by DP, but every board gets the same rows (ignores heterogeneity).
    EqualSplit,
    /// No profiling: one group per resolution, rows in proportion to nominal speeds.
    Proportional,
    /// The baseline: the whole model on the one board predicted fastest (one group, no split).
    Single,
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Legion => "legion",
            Strategy::Fss => "fss",
            Strategy::Layerwise => "layerwise",
            Strategy::OneGroup => "one-group",
            Strategy::EqualSplit => "equal-split",
            Strategy::Proportional => "proportional",
            Strategy::Single => "single",
        }
    }
}

/// A strategy as `bench --strategies` and `suite --strategies` take it: `legion`, or with the
/// topology named, `legion-star` / `legion-mesh` (without: the fleet's topology, or
/// `--topology`), and after it `-edges` (edges first where the cost model predicts a gain) or
/// `-whole` (every band whole); without: as the fleet file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrategyRun {
    pub strategy: Strategy,
    pub topology: Option<Topology>,
    /// Named with `-edges` (Some(true)) or `-whole` (Some(false)): edges first where it pays,
    /// or every band whole.
    pub edges_first: Option<bool>,
}

impl StrategyRun {
    /// The name it was given by (`legion`, `legion-star`).
    pub fn name(&self) -> String {
        let name = match self.topology {
            None => self.strategy.name().into(),
            Some(t) => format!("{}-{}", self.strategy.name(), t),
        };
        match self.edges_first {
            Some(true) => format!("{name}-edges"),
            Some(false) => format!("{name}-whole"),
            None => name,
        }
    }
    /// The fleet as this run plans it: its topology if it names one.
    pub fn fleet(&self, fleet: &Fleet) -> Fleet {
        let mut f = fleet.clone();
        if let Some(t) = self.topology {
            f.topology = t;
        }
        if let Some(e) = self.edges_first {
            f.edges_first = e;
        }
        f
    }
}

impl std::str::FromStr for StrategyRun {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<StrategyRun, String> {
        use clap::ValueEnum;
        let (s, edges_first) = match (s.strip_suffix("-edges"), s.strip_suffix("-whole")) {
            (Some(rest), _) => (rest, Some(true)),
            (_, Some(rest)) => (rest, Some(false)),
            _ => (s, None),
        };
        let (name, topology) = match s.rsplit_once('-') {
            Some((n, "star")) => (n, Some(Topology::Star)),
            Some((n, "mesh")) => (n, Some(Topology::Mesh)),
            _ => (s, None),
        };
        let strategy = Strategy::from_str(name, false).map_err(|_| {
            let all: Vec<&str> = Strategy::value_variants().iter().map(|v| v.name()).collect();
            format!("unknown strategy '{name}' (one of {}, optionally ending in -star or -mesh, then -edges or -whole)", all.join(", "))
        })?;
        Ok(StrategyRun { strategy, topology, edges_first })
    }
}

/// What the plan optimises (`objective` in fleet.yaml: `latency`, `throughput` or
/// `{latency_at_fps: R}`; `--objective`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(try_from = "RawObjective")]
pub enum Objective {
    /// The lowest latency of one frame (every frame split over all boards).
    #[default]
    Latency,
    /// The most frames per second.
    Throughput,
    /// The lowest latency whose frames per second reach this rate.
    LatencyAtFps(f64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawObjective {
    Word(String),
    Rate { latency_at_fps: f64 },
}

impl TryFrom<RawObjective> for Objective {
    type Error = String;
    fn try_from(raw: RawObjective) -> std::result::Result<Objective, String> {
        match raw {
            RawObjective::Word(w) if w.starts_with("latency_at_fps") => Err(format!("unknown objective '{w}' (write it as {{latency_at_fps: R}})")),
            RawObjective::Word(w) => w.parse(),
            RawObjective::Rate { latency_at_fps: r } if r.is_finite() && r > 0.0 => Ok(Objective::LatencyAtFps(r)),
            RawObjective::Rate { latency_at_fps: r } => Err(format!("objective latency_at_fps must be a positive number of frames per second, not {r}")),
        }
    }
}

impl Serialize for Objective {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Objective::Latency => f.write_str("latency"),
            Objective::Throughput => f.write_str("throughput"),
            Objective::LatencyAtFps(r) => write!(f, "latency_at_fps={r}"),
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Objective, String> {
        match s {
            "latency" => Ok(Objective::Latency),
            "throughput" => Ok(Objective::Throughput),
            _ => {
                let bad = || format!("unknown objective '{s}' (latency, throughput, or latency_at_fps=R with R frames per second > 0)");
                let r = s.strip_prefix("latency_at_fps=").or_else(|| s.strip_prefix("latency_at_fps:")).ok_or_else(bad)?;
                let r: f64 = r.trim().parse().map_err(|_| bad())?;
                if r.is_finite() && r > 0.0 { Ok(Objective::LatencyAtFps(r)) } else { Err(bad()) }
            }
        }
    }
}

// ---------------------------------------------------------------- raw YAML

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    fleet: String,
    model: RawModel,
    coordinator: Option<String>,
    #[serde(default)]
    defaults: RawDefaults,
    network: Option<RawNetwork>,
    output: Option<String>,
    /// How the plan is found (default `legion`).
    strategy: Option<Strategy>,
    /// How group outputs travel: `star` or `mesh` (default).
    topology: Option<Topology>,
    /// Mesh: bands computed edges first where the cost model predicts it pays (true), or
    /// every band whole (false, the default).
    edges_first: Option<bool>,
    /// `latency` (default), `throughput` or `{latency_at_fps: R}`.
    objective: Option<Objective>,
    /// Fallback plans for up to this many lost workers: `false` (0), `true` (1, the
    /// default) or 2.
    fallbacks: Option<RawFallbacks>,
    boards: Vec<RawBoard>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawModel {
    Name(String),
    Full(RawModelFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelFull {
    source: String,
    input_shape: Option<Vec<usize>>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    user: Option<String>,
    port: Option<u16>,
    key_file: Option<String>,
    target: Option<String>,
    runtime_port: Option<u16>,
    threads: Option<usize>,
    known_hosts: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFallbacks {
    Switch(bool),
    Count(usize),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bandwidth_mbps: f64,
    latency_ms: f64,
    deadline_s: Option<f64>,
    heartbeat_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: String,
    host: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    key_file: Option<String>,
    target: Option<String>,
    emulated: Option<RawEmulated>,
    runtime_port: Option<u16>,
    threads: Option<usize>,
    memory_mb: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawEmulated {
    Twin(String),
    Explicit(RawExplicitTwin),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExplicitTwin {
    speed: f64,
    link: Option<LinkSpec>,
}

// ---------------------------------------------------------------- resolved

/// How a board is reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BoardKind {
    /// A local process emulating a twin.
    Emulated { speed: f64 },
    /// A real host over SSH.
    Ssh { host: String, user: String, port: u16, key_file: Option<PathBuf> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Board {
    pub name: String,
    pub kind: BoardKind,
    /// Board kind (for an emulated board: the kind its twin stands for, if any).
    pub target: Option<Target>,
    pub link: LinkSpec,
    /// Port its runtime listens on.
    pub runtime_port: u16,
    pub threads: usize,
    /// RAM, MB: the fleet's `memory_mb` for the board, else its target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<f64>,
}

impl Board {
    /// What a plan may use of the board's memory, MB: its RAM less its target's reserve.
    pub fn memory_limit_mb(&self) -> Option<f64> {
        self.memory_mb.map(|m| m - self.target.as_ref().map_or(0.0, |t| t.memory_reserve_mb))
    }
    pub fn is_emulated(&self) -> bool {
        matches!(self.kind, BoardKind::Emulated { .. })
    }
    /// Speed used for planning: the twin's speed, or the target's twin figure for a real board.
    pub fn nominal_speed(&self) -> f64 {
        match (&self.kind, &self.target) {
            (BoardKind::Emulated { speed }, _) => *speed,
            (_, Some(t)) => t.emulated.speed,
            _ => 1.0,
        }
    }
    /// CPUs a real board's runtime and probe are pinned to (its target's `cores`); none for an
    /// emulated board, whose twin's cores are not this machine's.
    pub fn cores(&self) -> Vec<usize> {
        match (&self.kind, &self.target) {
            (BoardKind::Ssh { .. }, Some(t)) => t.cores.clone(),
            _ => vec![],
        }
    }
    /// Triple its binary is built for: the host's for an emulated board.
    pub fn triple(&self) -> &str {
        match (&self.kind, &self.target) {
            (BoardKind::Ssh { .. }, Some(t)) => &t.triple,
            _ => HOST_TRIPLE,
        }
    }
    /// `host:port` its runtime answers on.
    pub fn addr(&self) -> String {
        match &self.kind {
            BoardKind::Emulated { .. } => format!("127.0.0.1:{}", self.runtime_port),
            BoardKind::Ssh { host, .. } => format!("{host}:{}", self.runtime_port),
        }
    }
    /// A name usable in crate and file names.
    pub fn slug(&self) -> String {
        slug(&self.name)
    }
    /// Its emulated twin's speed; none for a real board.
    pub fn speed(&self) -> Option<f64> {
        match self.kind {
            BoardKind::Emulated { speed } => Some(speed),
            _ => None,
        }
    }
}

/// Names end up in crate names, file names and Rust string literals.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name.len() <= 40
}

pub fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Zoo name or ONNX path (resolved against the fleet file's folder).
    pub source: String,
    pub input_shape: Option<Vec<usize>>,
    /// Image normalisation (per channel), used for PNG/JPEG inputs.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub name: String,
    /// The fleet file.
    pub file: PathBuf,
    pub model: ModelSpec,
    pub boards: Vec<Board>,
    /// Index of the coordinator in `boards`.
    pub coordinator: usize,
    pub deadline_s: f64,
    /// A worker that has not answered the coordinator's heartbeat for this long is lost, ms.
    pub heartbeat_ms: u64,
    pub output: PathBuf,
    /// Host keys of the real boards (default `~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
    /// How `compile` finds the plan.
    pub strategy: Strategy,
    /// How the plan's group outputs travel (default mesh).
    pub topology: Topology,
    /// Mesh: a group's boards may compute first the rows the others need, where the cost
    /// model predicts it pays (`edges_first: true`; default false: every band whole).
    pub edges_first: bool,
    /// What the plan optimises (default latency).
    pub objective: Objective,
    /// `compile` adds a fallback plan for every set of up to this many lost workers (the
    /// fleet without them): 0, 1 or 2.
    pub fallbacks: usize,
}

// ---------------------------------------------------------------- loading

/// 1-based line of the `nth` (0-based) line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> Option<usize> {
    text.lines().enumerate().filter(|(_, l)| l.contains(needle)).nth(nth).map(|(i, _)| i + 1)
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    /// An error at the line where `needle` appears (the `nth` time).
    fn err(&self, needle: &str, nth: usize, msg: String) -> anyhow::Error {
        match line_of(self.text, needle, nth) {
            Some(l) => anyhow!("{}:{l}: {msg}", self.file.display()),
            None => anyhow!("{}: {msg}", self.file.display()),
        }
    }
}

/// Read and resolve a fleet file. `out` overrides its `output`.
pub fn load(path: &Path, out: Option<&Path>) -> Result<Fleet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading fleet file {}", path.display()))?;
    parse(&text, path, out)
}

pub fn parse(text: &str, path: &Path, out: Option<&Path>) -> Result<Fleet> {
    let raw: RawFleet = serde_yaml::from_str(text).map_err(|e| {
        let at = e.location().map(|l| format!(":{}", l.line())).unwrap_or_default();
        // serde_yaml's message names the field path and the column.
        anyhow!("{}{at}: {e}", path.display())
    })?;
    let cx = Ctx { file: path, text };
    if !valid_name(&raw.fleet) {
        return Err(cx.err("fleet:", 0, format!("field 'fleet': '{}' is not a valid name (letters, digits, '.', '_', '-'; at most 40, starting with a letter or digit)", raw.fleet)));
    }
    let targets = targets()?;
    let find_target = |name: &str, board: &str| -> Result<Target> {
        targets.iter().find(|t| t.name == name).cloned().ok_or_else(|| {
            let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            cx.err(name, 0, format!("board '{board}': unknown target '{name}' (known targets: {})", known.join(", ")))
        })
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let model = match raw.model {
        RawModel::Name(source) => ModelSpec { source, input_shape: None, mean: vec![], std: vec![] },
        RawModel::Full(m) => ModelSpec { source: m.source, input_shape: m.input_shape, mean: m.mean.unwrap_or_default(), std: m.std.unwrap_or_default() },
    };
    let model = ModelSpec {
        source: resolve_model_path(&model.source, dir),
        mean: if model.mean.is_empty() { vec![0.485, 0.456, 0.406] } else { model.mean },
        std: if model.std.is_empty() { vec![0.229, 0.224, 0.225] } else { model.std },
        ..model
    };
    for (field, values) in [("mean", &model.mean), ("std", &model.std)] {
        if values.len() != 3 {
            return Err(cx.err(&format!("{field}:"), 0, format!("field 'model.{field}': {} values; images are normalised per RGB channel, so give 3", values.len())));
        }
    }
    if model.std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
        return Err(cx.err("std:", 0, format!("field 'model.std': {:?}: every value must be positive", model.std)));
    }
    if raw.boards.is_empty() {
        return Err(cx.err("boards", 0, "field 'boards': a fleet needs at least one board".into()));
    }
    let d = &raw.defaults;
    let base_port = d.runtime_port.unwrap_or(27000);
    let mut boards = Vec::new();
    for (i, b) in raw.boards.iter().enumerate() {
        let needle = format!("name: {}", b.name);
        if !valid_name(&b.name) {
            return Err(cx.err("name:", i, format!("boards[{i}].name: '{}' is not a valid name (letters, digits, '.', '_', '-'; at most 40, starting with a letter or digit)", b.name)));
        }
        if let Some(h) = &b.host {
            if h.is_empty() || !h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
                return Err(cx.err(&needle, 0, format!("board '{}': host '{h}' is not a host name or an IP address", b.name)));
            }
        }
        if let Some(prev) = raw.boards[..i].iter().position(|p| p.name == b.name) {
            return Err(cx.err(&needle, 1, format!("boards[{i}].name: duplicate board name '{}' (also boards[{prev}])", b.name)));
        }
        if raw.boards[..i].iter().any(|p| slug(&p.name) == slug(&b.name)) {
            return Err(cx.err(&needle, 0, format!("boards[{i}].name: '{}' is too close to another board's name (file names would clash)", b.name)));
        }
        let target_name = b.target.clone().or_else(|| d.target.clone());
        let network_link = raw.network.as_ref().map(|n| LinkSpec { bandwidth_mbps: n.bandwidth_mbps, latency_ms: n.latency_ms });
        let runtime_port = match b.runtime_port {
            Some(p) => p,
            None => base_port.checked_add(i as u16).ok_or_else(|| cx.err("runtime_port:", 0, format!("defaults.runtime_port {base_port} + board index {i} is past port 65535")))?,
        };
        let (kind, target, link) = match (&b.host, &b.emulated) {
            (Some(_), Some(_)) => return Err(cx.err(&needle, 0, format!("board '{}': give either host (a real board) or emulated, not both", b.name))),
            (None, None) => return Err(cx.err(&needle, 0, format!("board '{}': missing field 'host' (a real board) or 'emulated'", b.name))),
            (None, Some(RawEmulated::Twin(t))) => {
                let target = find_target(t, &b.name)?;
                let link = network_link.unwrap_or(target.emulated.link);
                (BoardKind::Emulated { speed: target.emulated.speed }, Some(target), link)
            }
            (None, Some(RawEmulated::Explicit(e))) => {
                if !(e.speed > 0.0 && e.speed.is_finite()) {
                    return Err(cx.err(&needle, 0, format!("board '{}': emulated.speed must be positive, got {}", b.name, e.speed)));
                }
                let target = target_name.as_deref().map(|t| find_target(t, &b.name)).transpose()?;
                let link = e.link.or(network_link).or(target.as_ref().map(|t| t.emulated.link)).unwrap_or(LinkSpec { bandwidth_mbps: 100.0, latency_ms: 0.5 });
                (BoardKind::Emulated { speed: e.speed }, target, link)
            }
            (Some(host), None) => {
                let tname = target_name.ok_or_else(|| cx.err(&needle, 0, format!("board '{}': missing field 'target' (on the board or in defaults)", b.name)))?;
                let target = find_target(&tname, &b.name)?;
                let user = b.user.clone().or_else(|| d.user.clone()).ok_or_else(|| cx.err(&needle, 0, format!("board '{}': missing field 'user' (on the board or in defaults)", b.name)))?;
                let key_file = b.key_file.clone().or_else(|| d.key_file.clone()).map(|k| expand_home(&k, dir));
                let link = network_link.unwrap_or(target.emulated.link);
                (BoardKind::Ssh { host: host.clone(), user, port: b.port.or(d.port).unwrap_or(22), key_file }, Some(target), link)
            }
        };
        if link.bandwidth_mbps <= 0.0 || link.latency_ms < 0.0 {
            return Err(cx.err(&needle, 0, format!("board '{}': link needs a positive bandwidth and a non-negative latency", b.name)));
        }
        // An emulated board's time is its compute thread's CPU time: tract's extra threads
        // would compute uncounted, making the twin faster than it is. One thread, always.
        let threads = match &kind {
            BoardKind::Emulated { .. } => match b.threads {
                Some(t) if t != 1 => {
                    return Err(cx.err(&needle, 0, format!("board '{}': threads: {t}: an emulated board computes on one thread (its time is that thread's CPU time, scaled to the twin); remove the field", b.name)));
                }
                _ => 1,
            },
            _ => b.threads.or(d.threads).unwrap_or(target.as_ref().map_or(1, |t| t.threads)),
        };
        if let Some(m) = b.memory_mb {
            if !(m > 0.0 && m.is_finite()) {
                return Err(cx.err(&needle, 0, format!("board '{}': memory_mb must be positive, got {m}", b.name)));
            }
        }
        let memory_mb = b.memory_mb.or(target.as_ref().and_then(|t| t.memory_mb));
        boards.push(Board { name: b.name.clone(), kind, target, link, runtime_port, threads, memory_mb });
    }
    let coordinator = match &raw.coordinator {
        None => 0,
        Some(c) => boards.iter().position(|b| &b.name == c).ok_or_else(|| {
            cx.err("coordinator:", 0, format!("field 'coordinator': no board is named '{c}'"))
        })?,
    };
    let output = match out {
        Some(o) => o.to_path_buf(),
        None => dir.join(raw.output.unwrap_or_else(|| format!("out/{}", slug(&raw.fleet)))),
    };
    let deadline_s = raw.network.as_ref().and_then(|n| n.deadline_s).unwrap_or(60.0);
    let heartbeat_ms = raw.network.as_ref().and_then(|n| n.heartbeat_ms).unwrap_or(500);
    if !(20..=(deadline_s * 1000.0) as u64).contains(&heartbeat_ms) {
        return Err(cx.err("heartbeat_ms:", 0, format!("field 'network.heartbeat_ms': {heartbeat_ms} ms; give 20 ms up to the deadline ({} ms)", (deadline_s * 1000.0) as u64)));
    }
    let known_hosts = d.known_hosts.as_deref().map(|k| expand_home(k, dir)).unwrap_or_else(crate::ssh::default_known_hosts);
    let strategy = raw.strategy.unwrap_or(Strategy::Legion);
    let topology = raw.topology.unwrap_or(Topology::Mesh);
    let objective = raw.objective.unwrap_or_default();
    let fallbacks = match raw.fallbacks {
        None | Some(RawFallbacks::Switch(true)) => 1,
        Some(RawFallbacks::Switch(false)) => 0,
        Some(RawFallbacks::Count(n)) if n <= 2 => n,
        Some(RawFallbacks::Count(n)) => return Err(cx.err("fallbacks:", 0, format!("field 'fallbacks': {n} lost workers; give false, true (one), 1 or 2"))),
    };
    Ok(Fleet { name: raw.fleet, file: path.to_path_buf(), model, boards, coordinator, deadline_s, heartbeat_ms, output, known_hosts, strategy, topology, edges_first: raw.edges_first.unwrap_or(false), objective, fallbacks })
}

fn expand_home(p: &str, dir: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    dir.join(p)
}

fn resolve_model_path(source: &str, dir: &Path) -> String {
    if crate::model::zoo::is_zoo_name(source) {
        return source.to_string();
    }
    let p = Path::new(source);
    if p.is_absolute() { source.to_string() } else { dir.join(p).to_string_lossy().into_owned() }
}

impl Fleet {
    /// How the fleet runs a plan (addresses and ports, links, threads, twin speeds, the
    /// coordinator, the deadline): what the plan hash covers beside the plan.
    pub fn deployment(&self) -> legion_runtime::plan::Deployment {
        legion_runtime::plan::Deployment {
            coordinator: self.coordinator,
            deadline_ms: (self.deadline_s * 1000.0) as u64,
            heartbeat_ms: Some(self.heartbeat_ms),
            boards: self
                .boards
                .iter()
                .map(|b| legion_runtime::board::Peer { name: b.name.clone(), addr: b.addr(), link: b.link, threads: b.threads, speed: b.speed() })
                .collect(),
        }
    }

    /// `plan` as this fleet runs it: with the fleet's [`Fleet::deployment`] (replacing any other).
    pub fn deployed(&self, plan: &legion_runtime::plan::Plan) -> legion_runtime::plan::Plan {
        legion_runtime::plan::Plan { deployment: Some(self.deployment()), ..plan.clone() }
    }

    pub fn coordinator(&self) -> &Board {
        &self.boards[self.coordinator]
    }

    /// The sub-fleet of boards `members` (indices, in fleet order), as a lane of a plan that
    /// deals frames: its coordinator is the fleet's if it is a member, else its fastest board
    /// (nominal speed; the first of equals). Everything else is the fleet's.
    pub fn lane(&self, members: &[usize]) -> Fleet {
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        let coordinator = members.iter().position(|&i| i == self.coordinator).unwrap_or_else(|| {
            (0..members.len()).fold(0, |best, j| if self.boards[members[j]].nominal_speed() > self.boards[members[best]].nominal_speed() { j } else { best })
        });
        Fleet { boards: members.iter().map(|&i| self.boards[i].clone()).collect(), coordinator, ..self.clone() }
    }

    /// The lanes of `plan`, each as its sub-fleet with its plan as that sub-fleet runs it. A
    /// plan without lanes is one lane: the whole fleet.
    pub fn lanes(&self, plan: &legion_runtime::plan::Plan) -> Result<Vec<(Fleet, legion_runtime::plan::Plan)>> {
        if plan.lanes.is_empty() {
            // Boards run a plan for one frame at a time; how many the stream keeps in flight is
            // the client's.
            return Ok(vec![(self.clone(), legion_runtime::plan::Plan { in_flight: 1, ..self.deployed(plan) })]);
        }
        plan.lanes
            .iter()
            .map(|lane| {
                let members = lane.boards.iter().map(|n| self.boards.iter().position(|b| &b.name == n).ok_or_else(|| anyhow!("the plan's lane names board '{n}', which fleet {} does not have", self.name))).collect::<Result<Vec<_>>>()?;
                let sub = self.lane(&members);
                let names: Vec<&String> = sub.boards.iter().map(|b| &b.name).collect();
                ensure!(names == lane.boards.iter().collect::<Vec<_>>(), "a lane's boards {:?} are not in the fleet's order", lane.boards);
                let deployed = sub.deployed(lane);
                Ok((sub, deployed))
            })
            .collect()
    }

    /// The plan hash every board answers with when it runs `plan` (its lane's), in fleet order.
    pub fn board_hashes(&self, plan: &legion_runtime::plan::Plan) -> Result<Vec<String>> {
        (0..self.boards.len()).map(|i| Ok(self.board_lane(plan, i)?.1.hash())).collect()
    }

    /// Board `index`'s lane in `plan`: its sub-fleet, its plan as deployed, and the board's
    /// index in it.
    pub fn board_lane(&self, plan: &legion_runtime::plan::Plan, index: usize) -> Result<(Fleet, legion_runtime::plan::Plan, usize)> {
        let name = &self.boards[index].name;
        for (sub, p) in self.lanes(plan)? {
            if let Some(i) = sub.boards.iter().position(|b| &b.name == name) {
                return Ok((sub, p, i));
            }
        }
        bail!("board {name} is in no lane of the plan")
    }
    /// The directory of the compiled fleet.
    pub fn out(&self) -> &Path {
        &self.output
    }
    /// Deadline on every read, write and connect.
    pub fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.deadline_s)
    }
    pub fn board(&self, name: &str) -> Result<&Board> {
        self.boards.iter().find(|b| b.name == name).ok_or_else(|| anyhow!("fleet {} has no board '{name}'", self.name))
    }
    /// How to reach a real board over SSH (None for an emulated one).
    pub fn ssh_target(&self, b: &Board, accept_new_host_keys: bool) -> Option<crate::ssh::Target> {
        match &b.kind {
            BoardKind::Ssh { host, user, port, key_file } => Some(crate::ssh::Target {
                board: b.name.clone(),
                host: host.clone(),
                port: *port,
                user: user.clone(),
                key_file: key_file.clone(),
                known_hosts: self.known_hosts.clone(),
                accept_new_host_keys,
                deadline: self.deadline(),
            }),
            BoardKind::Emulated { .. } => None,
        }
    }
    /// Fail unless every board is emulated (what up/run can start locally).
    pub fn require_emulated(&self, what: &str) -> Result<()> {
        if let Some(b) = self.boards.iter().find(|b| !b.is_emulated()) {
            bail!("board '{}' is a real host: `legionc {what}` starts emulated boards only (deploy real boards with `legionc deploy`)", b.name);
        }
        Ok(())
    }
}
