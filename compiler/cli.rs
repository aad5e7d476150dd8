//! The `legionc` command line (clap): every command, its arguments and their `--help`.
//! `main.rs` parses it and calls the library; nothing here computes.

use crate::model;
use crate::solve::Fusion;
use crate::fleet::{StrategyRun, Topology};
use crate::strategy::Strategy;
use crate::fleet;
use crate::model::zoo;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "legionc",
    version,
    about = "Legion plan compiler: split one CNN inference across a fleet of edge boards",
    after_help = "Exit codes: 0 success, 1 error, 2 bad usage, 3 --offline and the profile cache lacks a measurement."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct ModelArg {
    /// A zoo model name (see `legionc zoo --list`) or the path of an ONNX file
    pub model: String,
    /// Input shape for a model that leaves it open, e.g. 1,3,224,224
    #[arg(long, value_delimiter = ',')]
    pub input_shape: Option<Vec<usize>>,
}

impl ModelArg {
    pub fn load(&self) -> Result<model::LoadedModel> {
        model::load(&self.model, self.input_shape.as_deref())
    }
}

#[derive(Args)]
pub struct FleetArg {
    /// The fleet file (see README: fleet.yaml)
    pub fleet: PathBuf,
    /// Output directory of the compiled fleet (overrides the file's `output`)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl FleetArg {
    pub fn load(&self) -> Result<fleet::Fleet> {
        fleet::load(&self.fleet, self.out.as_deref())
    }
}

#[derive(Args)]
pub struct ProfilingArgs {
    /// How the plan is found (overrides the fleet file's `strategy`)
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// How group outputs travel, star or mesh (overrides the fleet file's `topology`)
    #[arg(long)]
    pub topology: Option<Topology>,
    /// What the plan optimises (overrides the fleet file's `objective`): `latency` (every frame
    /// split over every board), `throughput` (the most frames per second: the fleet may be
    /// partitioned into lanes that are dealt whole frames, with frames in flight), or
    /// `latency_at_fps=R` (the lowest latency that still answers R frames per second)
    #[arg(long, value_name = "OBJECTIVE")]
    pub objective: Option<crate::fleet::Objective>,
    /// Profile cache directory (default: $LEGION_CACHE_DIR, else ~/.cache/legionc)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Measure again what the profile cache already holds
    #[arg(long, conflicts_with = "offline")]
    pub refresh: bool,
    /// Never connect to a board: fail if the profile cache lacks a measurement
    #[arg(long)]
    pub offline: bool,
    /// Learn the host key of a board that known_hosts does not know yet
    #[arg(long)]
    pub accept_new_host_keys: bool,
}

impl ProfilingArgs {
    pub fn options(&self, target_dir: &std::path::Path) -> crate::profile::Options {
        crate::profile::Options {
            refresh: self.refresh,
            offline: self.offline,
            accept_new_host_keys: self.accept_new_host_keys,
            ..crate::profile::Options::new(self.cache_dir.clone(), target_dir)
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Compile a fleet: plan, one runtime crate per board (plan hard-coded), build them
    Compile {
        #[command(flatten)]
        fleet: FleetArg,
        /// Render the crates only, do not build them
        #[arg(long)]
        no_build: bool,
        /// Shared cargo target directory of the board crates (default: legionc's own target dir
        /// when it runs from one, sharing its build of tract; else OUT/target)
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Print one JSON object (plan hash, prediction, cache key, profiling counts, every
        /// board's binary with its sha256) on stdout for the next CI step; the report goes to
        /// stderr
        #[arg(long)]
        json: bool,
        /// Fail (listing the files) if the compiled output on disk differs from what would be
        /// generated, writing nothing (profiles come from the cache only)
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        profiling: ProfilingArgs,
    },
    /// Print the key of the profiles this fleet's compile uses, for a CI cache to restore
    /// (see README: legionc in your CI). The model's structure, the boards' kinds and
    /// identities, the probe and the strategy enter it; board names, order and runtime ports
    /// do not
    CacheKey {
        #[command(flatten)]
        fleet: FleetArg,
        /// The strategy of the compile (default: the fleet file's)
        #[arg(long, value_enum)]
        strategy: Option<Strategy>,
        /// The objective of the compile (default: the fleet file's): one other than latency
        /// also measures the tail on the boards that lead a lane
        #[arg(long, value_name = "OBJECTIVE")]
        objective: Option<crate::fleet::Objective>,
    },
    /// Start a compiled fleet (local processes for emulated boards) and wait until it answers
    Up {
        #[command(flatten)]
        fleet: FleetArg,
    },
    /// Send an image through the running fleet: output, latency, breakdown, speedup over the
    /// single-board baseline (emulated fleets: the fastest twin emulated here; real boards: the
    /// whole model measured by the probe on the board predicted fastest, cached)
    Run {
        #[command(flatten)]
        fleet: FleetArg,
        /// A PNG/JPEG image (resized and normalised) or a .npy tensor, sent as every frame; or a
        /// directory of them, sent in name order (cycling)
        #[arg(long, conflicts_with = "random", required_unless_present = "random")]
        input: Option<PathBuf>,
        /// A seeded random image instead of a file, sent as every frame
        #[arg(long)]
        random: Option<u64>,
        /// Frames to send (each one's latency is printed, in frame order, then the stream's
        /// summary: frames per second, latency p50/p95/p99; the speedup is the median's)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        frames: u64,
        /// Frames in flight at most, per lane of the plan: the fleet works on up to K frames at
        /// once (a board takes the oldest frame's work first), which raises frames per second
        /// when boards would otherwise wait for each other. K bounds the memory the stream
        /// holds. Default: what the plan was chosen for (1 for the latency objective)
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=64))]
        in_flight: Option<u64>,
        /// Frames arrive at this many per second (frame k at k ÷ rate); a frame arriving while
        /// K frames are in flight waits for one to be answered (counted), or is dropped with
        /// --drop. Latency is counted from arrival. Default: each frame as soon as fewer than K
        /// are in flight
        #[arg(long)]
        rate: Option<f64>,
        /// Drop frames that arrive while K frames are in flight (counted) instead of letting
        /// them wait
        #[arg(long, requires = "rate")]
        drop: bool,
        /// Compare the last frame's output with tract's single run of the whole model
        #[arg(long)]
        verify: bool,
        /// Compare every K-th frame's output (frames K, 2K, ...) with tract's single run
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
        verify_every: Option<u64>,
        /// Print the stream's summary as JSON on stdout (throughput_fps, latency_p50_s,
        /// latency_p95_s, latency_p99_s, dropped, ...); the report goes to stderr
        #[arg(long)]
        json: bool,
        /// Save the output tensor as .npy (a model with several outputs: FILE.0.npy, FILE.1.npy, … in
        /// the graph's order)
        #[arg(long)]
        save: Option<PathBuf>,
        /// Start the fleet first if it is not running, stop it afterwards
        #[arg(long)]
        up: bool,
        /// Do not measure the single-board baseline (no speedup is printed)
        #[arg(long)]
        no_baseline: bool,
        /// Profile cache directory, where the baseline of a fleet with real boards is kept
        /// (default: $LEGION_CACHE_DIR, else ~/.cache/legionc)
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Learn the host key of a board that known_hosts does not know yet (when the baseline
        /// is measured on a real board)
        #[arg(long)]
        accept_new_host_keys: bool,
    },
    /// Upload every real board's binary and model over SSH (keeping the previous ones), start
    /// it, check it answers; emulated boards of the fleet are started locally
    Deploy {
        #[command(flatten)]
        fleet: FleetArg,
        /// Learn the host key of a board that known_hosts does not know yet
        #[arg(long)]
        accept_new_host_keys: bool,
    },
    /// Put back the previous binary and model of every real board and restart it
    Rollback {
        #[command(flatten)]
        fleet: FleetArg,
        #[arg(long)]
        accept_new_host_keys: bool,
    },
    /// Stop the fleet: emulated boards started by `up`, real boards over SSH
    Down {
        #[command(flatten)]
        fleet: FleetArg,
    },
    /// Which boards answer, with which plan
    Status {
        #[command(flatten)]
        fleet: FleetArg,
    },
    /// Write a zoo model (seeded random weights) as an ONNX file
    Zoo {
        /// Model name
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// Output file
        #[arg(short, long, required_unless_present = "list")]
        output: Option<PathBuf>,
        /// Seed of the weights: same name and seed give a byte-identical file
        #[arg(long, default_value_t = zoo::DEFAULT_SEED)]
        seed: u64,
        /// List the zoo's models
        #[arg(long)]
        list: bool,
    },
    /// Print a model's layers, shapes, FLOPs, output bytes, receptive field and cut points
    Inspect {
        #[command(flatten)]
        model: ModelArg,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Run a model split over N in-process boards and compare with tract's single run
    Verify {
        #[command(flatten)]
        model: ModelArg,
        /// Number of boards
        #[arg(long, default_value_t = 4)]
        boards: usize,
        /// Relative speed of each board (rows are split in proportion), e.g. 1,1,2,2
        #[arg(long, value_delimiter = ',')]
        speeds: Option<Vec<f64>>,
        /// How layers are fused into groups
        #[arg(long, value_enum, default_value_t = Fusion::Blocks)]
        fusion: Fusion,
        /// Seed of the random input
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the plan as JSON to this file
        #[arg(long)]
        plan_out: Option<PathBuf>,
    },
    /// Explain the compiled plan's predicted latency from the cached profiles: per group and
    /// board the rows, the halo, S, every segment's E with its alpha, R; the tail
    Explain {
        #[command(flatten)]
        fleet: FleetArg,
        /// Profile cache directory (default: $LEGION_CACHE_DIR, else ~/.cache/legionc)
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Explain this plan.json instead of the compiled one (e.g. one that `bench` or `suite`
        /// wrote for a strategy); it must be a plan for the fleet's boards and model
        #[arg(long)]
        plan: Option<PathBuf>,
    },
    /// Benchmarks (print measured ratios). `legionc bench FLEET --strategies legion,fss,...`
    /// runs each strategy's plan on a compiled emulated fleet and compares them
    Bench(BenchArgs),
    /// The paper's grid on emulated fleets (Firefly ×1…6, Odroid ×1…3, mixes up to 6 boards;
    /// VGG-16, VGG-19, YOLOv2, ResNet-18): every strategy's plan measured, written to
    /// OUT/suite.json, OUT/suite.md and SVG figures. No board needed.
    Suite {
        /// A subset: 4 fleets (2F, 1F+1O, 2F+2O, 4F+2O), VGG-16 and ResNet-18 (about 30 min with a cold profile cache, most of it the full search on VGG-16, plus the candidates' streams)
        #[arg(long)]
        quick: bool,
        /// Fleets to run instead of the grid's, e.g. 2F,1F+1O (F: Firefly-RK3399 twin, O: Odroid-XU4 twin)
        #[arg(long, value_delimiter = ',')]
        fleets: Option<Vec<crate::suite::Mix>>,
        /// Models to run (default: the grid's four, or VGG-16 and ResNet-18 with --quick)
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Strategies to compare, in order; `legion-star`, `legion-mesh` name the topology, and `-edges` or `-whole` after it edges first (where it pays) or every band whole
        #[arg(long, value_delimiter = ',', default_value = "legion,fss,layerwise,one-group,equal-split,single")]
        strategies: Vec<StrategyRun>,
        /// Topology of the strategies that do not name one (default: mesh)
        #[arg(long)]
        topology: Option<Topology>,
        /// Frames per plan after a warm-up (the median is reported)
        #[arg(long, default_value_t = 5)]
        frames: usize,
        #[command(flatten)]
        measuring: Measuring,
        /// Per fleet, also measure this many of the objective's candidate plans (partitions of
        /// the fleet into lanes, frames in flight) as streams: the `latency` and `throughput`
        /// objectives' choices, then others along the predicted front; a latency-against-
        /// throughput figure per fleet and a throughput table. 0: none
        #[arg(long, default_value_t = 3)]
        candidates: usize,
        /// Where suite.json, suite.md and the figures go
        #[arg(long, default_value = "plans/suite")]
        out: PathBuf,
        /// Fleet files, board logs, plan and model files of the runs
        #[arg(long, default_value = "target/legion-suite")]
        work_dir: PathBuf,
        /// Shared cargo target directory (the probe and the generic board binary are built
        /// there; default: legionc's own, else target/boards)
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Port of each fleet's first board (the others listen on the next ones)
        #[arg(long, default_value_t = 27300)]
        port: u16,
        /// Profile cache directory (default: $LEGION_CACHE_DIR, else ~/.cache/legionc)
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Also replace the generated section of this README with the report
        #[arg(long)]
        readme: Option<PathBuf>,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// A compiled, emulated fleet (not running) whose plans to compare
    pub fleet: Option<PathBuf>,
    /// Strategies to compare, in order; `legion-star`, `legion-mesh` name the topology, and `-edges` or `-whole` after it edges first (where it pays) or every band whole
    #[arg(long, value_delimiter = ',', default_value = "legion,fss,layerwise,one-group,equal-split,proportional")]
    pub strategies: Vec<StrategyRun>,
    /// Topology of the strategies that do not name one (overrides the fleet file's)
    #[arg(long)]
    pub topology: Option<Topology>,
    /// Frames per strategy after a warm-up (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    #[command(flatten)]
    pub measuring: Measuring,
    /// One JSON object per strategy instead of the table
    #[arg(long)]
    pub json: bool,
    /// Profile cache directory (default: $LEGION_CACHE_DIR, else ~/.cache/legionc)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Shared cargo target directory (where the probe is built; default as for compile)
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// A running emulated fleet: measured latency ÷ the latency its plan predicts from the
    /// emulation parameters, and speedup ÷ the ideal bound (Σ speeds ÷ fastest)
    Fleet {
        #[command(flatten)]
        fleet: FleetArg,
        /// Frames to run (the median is reported)
        #[arg(long, default_value_t = 3)]
        frames: usize,
        /// Start the fleet first if it is not running, stop it afterwards
        #[arg(long)]
        up: bool,
    },
    /// One fused group's middle band through legionc's executor vs tract-onnx directly,
    /// single-threaded; prints the time ratio (goal ≤ 1.05), and the executor's time from
    /// evicted caches ÷ back to back (emulated boards and their probe time runs back to back)
    Band {
        /// Zoo model or ONNX file
        #[arg(long, default_value = "vgg16")]
        model: String,
        /// The group as FROM..TO cut points (see `legionc inspect`); default: the first block
        #[arg(long)]
        group: Option<String>,
        /// Number of equal bands
        #[arg(long, default_value_t = 4)]
        boards: usize,
        /// Which band to run (a middle one)
        #[arg(long, default_value_t = 1)]
        board: usize,
        #[arg(long, default_value_t = 9)]
        repeats: usize,
    },
    /// How well the emulation's drift correction works on this machine: the whole model run
    /// on one thread, each run timed by raw CPU time and by the corrected time emulated boards
    /// use; prints both coefficients of variation and their ratio
    Drift {
        /// Zoo model or ONNX file
        #[arg(long, default_value = "resnet18")]
        model: String,
        /// Runs (the statistics are over all of them)
        #[arg(long, default_value_t = 60)]
        runs: usize,
        /// Pause between runs, so that they span the machine's slow and fast spells
        #[arg(long, default_value_t = 500)]
        pause_ms: u64,
    },
}

/// How `bench` and `suite` measure the strategies' plans.
#[derive(Args, Clone, Copy)]
pub struct Measuring {
    /// Measure in this many rounds over the strategies (forward, backward, ...), `--frames`
    /// frames per plan each, and report the median of all: on a machine whose speed drifts
    /// by minutes, the plans compared then share its slow and fast spells
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Run the emulated boards K times slower than their twins on the wall clock and report
    /// wall time ÷ K (sets LEGION_TIME_SCALE for the boards): a fleet of more twins than
    /// this machine has cores then overruns its twins' times less (a short band waiting for
    /// the compute slot behind another's long one). 1: real time
    #[arg(long, default_value = "1", value_parser = time_scale_arg)]
    pub time_scale: f64,
}

/// `--time-scale K`: a number of at least 1 ([`legion_runtime::link::parse_time_scale`]).
fn time_scale_arg(v: &str) -> Result<f64, String> {
    legion_runtime::link::parse_time_scale(v).ok_or_else(|| format!("'{v}' is not a number of at least 1"))
}
