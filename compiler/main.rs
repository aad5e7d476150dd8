//! The `legionc` command line. Exit codes: 0 success, 1 failure (the error is printed once,
//! with its causes), 2 bad usage.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use legionc::model::{self, reference, zoo, Group};
use legionc::{cargo_build, codegen, deploy, fleet, write_atomic};
use legionc::runtime::plan::LocalFleet;
use legionc::solve::{self, Fusion};
use legionc::strategy::Strategy;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "legionc", version, about = "Legion plan compiler: split one CNN inference across a fleet of edge boards")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ModelArg {
    /// A zoo model name (see `legionc zoo --list`) or the path of an ONNX file
    model: String,
    /// Input shape for a model that leaves it open, e.g. 1,3,224,224
    #[arg(long, value_delimiter = ',')]
    input_shape: Option<Vec<usize>>,
}

impl ModelArg {
    fn load(&self) -> Result<model::LoadedModel> {
        model::load(&self.model, self.input_shape.as_deref())
    }
}

#[derive(Args)]
struct FleetArg {
    /// The fleet file (see README: fleet.yaml)
    fleet: PathBuf,
    /// Output directory of the compiled fleet (overrides the file's `output`)
    #[arg(long)]
    out: Option<PathBuf>,
}

impl FleetArg {
    fn load(&self) -> Result<fleet::Fleet> {
        fleet::load(&self.fleet, self.out.as_deref())
    }
}

#[derive(Args)]
struct ProfilingArgs {
    /// How the plan is found (overrides the fleet file's `strategy`)
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
    /// Profile cache directory (default: $LEGION_CACHE_DIR, else ~/.cache/legionc)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Measure again what the profile cache already holds
    #[arg(long, conflicts_with = "offline")]
    refresh: bool,
    /// Never connect to a board: fail if the profile cache lacks a measurement
    #[arg(long)]
    offline: bool,
    /// Learn the host key of a board that known_hosts does not know yet
    #[arg(long)]
    accept_new_host_keys: bool,
}

impl ProfilingArgs {
    fn options(&self, target_dir: &std::path::Path) -> legionc::profile::Options {
        legionc::profile::Options {
            refresh: self.refresh,
            offline: self.offline,
            accept_new_host_keys: self.accept_new_host_keys,
            ..legionc::profile::Options::new(self.cache_dir.clone(), target_dir)
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Compile a fleet: plan, one runtime crate per board (plan hard-coded), build them
    Compile {
        #[command(flatten)]
        fleet: FleetArg,
        /// Render the crates only, do not build them
        #[arg(long)]
        no_build: bool,
        /// Shared cargo target directory of the board crates (default: OUT/target)
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Fail (listing the files) if the compiled output on disk differs from what would be
        /// generated, writing nothing (profiles come from the cache only)
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        profiling: ProfilingArgs,
    },
    /// Start a compiled fleet (local processes for emulated boards) and wait until it answers
    Up {
        #[command(flatten)]
        fleet: FleetArg,
    },
    /// Send one image through the running fleet: output, latency, breakdown, speedup
    Run {
        #[command(flatten)]
        fleet: FleetArg,
        /// A PNG/JPEG image (resized and normalised) or a .npy tensor
        #[arg(long, conflicts_with = "random", required_unless_present = "random")]
        input: Option<PathBuf>,
        /// A seeded random input instead of a file
        #[arg(long)]
        random: Option<u64>,
        /// Compare the fleet's output with tract's single run of the whole model
        #[arg(long)]
        verify: bool,
        /// Save the output tensor as .npy
        #[arg(long)]
        save: Option<PathBuf>,
        /// Start the fleet first if it is not running, stop it afterwards
        #[arg(long)]
        up: bool,
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
        /// A subset: 4 fleets (2F, 1F+1O, 2F+2O, 4F+2O), VGG-16 and ResNet-18 (about 30 min with a cold profile cache, most of it the full search on VGG-16)
        #[arg(long)]
        quick: bool,
        /// Fleets to run instead of the grid's, e.g. 2F,1F+1O (F: Firefly-RK3399 twin, O: Odroid-XU4 twin)
        #[arg(long, value_delimiter = ',')]
        fleets: Option<Vec<legionc::suite::Mix>>,
        /// Models to run (default: the grid's four, or VGG-16 and ResNet-18 with --quick)
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Strategies to compare, in order
        #[arg(long, value_enum, value_delimiter = ',', default_value = "legion,fss,layerwise,one-group,equal-split,single")]
        strategies: Vec<Strategy>,
        /// Frames per plan after a warm-up (the median is reported)
        #[arg(long, default_value_t = 5)]
        frames: usize,
        /// Where suite.json, suite.md and the figures go
        #[arg(long, default_value = "plans/suite")]
        out: PathBuf,
        /// Fleet files, board logs, plan and model files of the runs
        #[arg(long, default_value = "target/legion-suite")]
        work_dir: PathBuf,
        /// Shared cargo target directory (the probe and the generic board binary are built there)
        #[arg(long, default_value = "target/boards")]
        target_dir: PathBuf,
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
struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// A compiled, emulated fleet (not running) whose plans to compare
    fleet: Option<PathBuf>,
    /// Strategies to compare, in order
    #[arg(long, value_enum, value_delimiter = ',', default_value = "legion,fss,layerwise,one-group,equal-split,proportional")]
    strategies: Vec<Strategy>,
    /// Frames per strategy after a warm-up (the median is reported)
    #[arg(long, default_value_t = 3)]
    frames: usize,
    /// One JSON object per strategy instead of the table
    #[arg(long)]
    json: bool,
    /// Profile cache directory (default: $LEGION_CACHE_DIR, else ~/.cache/legionc)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Shared cargo target directory (where the probe is built; default OUT/target)
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCommand {
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
    /// single-threaded; prints the time ratio (goal ≤ 1.05)
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Compile { fleet, no_build, target_dir, check, profiling } => {
            let fleet = fleet.load()?;
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let out_dir = fleet.out().to_path_buf();
            let target_dir = target_dir.unwrap_or_else(|| out_dir.join("target"));
            let mut opts = profiling.options(&target_dir);
            opts.offline |= check;
            if !check {
                codegen::check_out_dir(&out_dir)?;
            }
            let strategy = profiling.strategy.unwrap_or(fleet.strategy);
            let planned = legionc::strategy::plan(&fleet, &m, strategy, &opts)?;
            let plan = planned.plan.clone();
            let files = codegen::render(&fleet, &m, &plan)?;
            if check {
                let stale = codegen::stale(&out_dir, &files);
                if !stale.is_empty() {
                    let list: Vec<String> = stale.iter().map(|p| format!("  {}", p.display())).collect();
                    bail!("{} is stale, these files differ from what `legionc compile` generates:\n{}", out_dir.display(), list.join("\n"));
                }
                writeln!(out, "{}: up to date (plan {})", out_dir.display(), &plan.hash()[..16])?;
                return Ok(());
            }
            codegen::write(&out_dir, &files)?;
            // How the plan was found (predictions, wild card, profiling cost): not part of
            // what `--check` compares, as profiling counts differ between cold and warm runs.
            write_atomic(&out_dir.join("plan-report.json"), &[serde_json::to_vec_pretty(&planned)?, b"\n".to_vec()].concat())?;
            writeln!(out, "fleet {}: model {} ({}), {} boards, coordinator {}", fleet.name, m.ir.name, &m.sha256[..16], fleet.boards.len(), fleet.coordinator().name)?;
            let st = &planned.profiling;
            if strategy != Strategy::Proportional {
                writeln!(
                    out,
                    "profiling: {} measurements ({} cached, {} measured now: {} probe runs, {:.1} board-s), {} SSH connections, cache {}",
                    st.trials(),
                    st.cached,
                    st.measured,
                    st.probe_runs,
                    st.board_seconds,
                    st.ssh_connections,
                    opts.cache_dir.join("profiles.jsonl").display()
                )?;
                if st.corrupt_records > 0 {
                    writeln!(out, "profiling: {} corrupt cache records were dropped and measured again", st.corrupt_records)?;
                }
            }
            writeln!(out, "plan {} ({}, {} groups) -> {}", &plan.hash()[..16], strategy.name(), plan.groups.len(), out_dir.join("plan.json").display())?;
            for (i, g) in plan.groups.iter().enumerate() {
                let pred = planned.groups.get(i).map(|c| format!("  predicted {:.1} ms", c.latency_s * 1e3)).unwrap_or_default();
                writeln!(out, "  group {i:>2}: values {:>3}..{:<3} rows {:?}{pred}", g.from, g.to, g.rows)?;
            }
            if let Some(w) = &planned.wild_card {
                writeln!(
                    out,
                    "wild card: merging {}..{} and {}..{}: measured {:.1} ms merged vs {:.1} ms apart -> {}",
                    w.pair.0.from,
                    w.pair.0.to,
                    w.pair.1.from,
                    w.pair.1.to,
                    w.measured_merged_s * 1e3,
                    w.measured_pair_s * 1e3,
                    if w.merged_kept { "merged" } else { "kept apart" }
                )?;
            }
            if planned.predicted_latency_s.is_finite() {
                writeln!(out, "predicted latency {:.1} ms (tail {:.1} ms); solved in {:.1} ms", planned.predicted_latency_s * 1e3, planned.tail_s * 1e3, planned.solve_seconds * 1e3)?;
            }
            if !no_build {
                out.flush()?;
                cargo_build::build(&fleet, &target_dir, false)?;
                let bin_dir = out_dir.join("bin");
                std::fs::create_dir_all(&bin_dir)?;
                for b in &fleet.boards {
                    let src = cargo_build::binary_path(&target_dir, &fleet, b);
                    let dst = deploy::binary(&fleet, b);
                    let tmp = dst.with_extension("tmp~");
                    std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
                    std::fs::rename(&tmp, &dst)?;
                }
                writeln!(out, "built {} board binaries -> {}", fleet.boards.len(), bin_dir.display())?;
            }
        }
        Command::Up { fleet } => {
            let fleet = fleet.load()?;
            deploy::up(&fleet, false)?;
            let plan = deploy::compiled_plan(&fleet)?;
            writeln!(out, "fleet {} is up: {} boards answer with plan {}", fleet.name, fleet.boards.len(), &plan.hash()[..16])?;
        }
        Command::Status { fleet } => {
            let fleet = fleet.load()?;
            let plan = deploy::compiled_plan(&fleet).ok();
            let mut down = 0;
            for b in &fleet.boards {
                match deploy::health(b) {
                    Ok((_, version, hash)) => {
                        let same = plan.as_ref().is_some_and(|p| p.hash() == hash);
                        writeln!(out, "{:<16} {:<22} up, runtime {version}, plan {}{}", b.name, b.addr(), &hash[..16], if same { "" } else { " (not the compiled plan)" })?;
                    }
                    Err(_) => {
                        down += 1;
                        writeln!(out, "{:<16} {:<22} down", b.name, b.addr())?;
                    }
                }
            }
            if down > 0 {
                bail!("{down} of {} boards do not answer", fleet.boards.len());
            }
        }
        Command::Deploy { fleet, accept_new_host_keys } => {
            let fleet = fleet.load()?;
            deploy::deploy(&fleet, accept_new_host_keys, false)?;
            let plan = deploy::compiled_plan(&fleet)?;
            writeln!(out, "fleet {} deployed: {} boards answer with plan {}", fleet.name, fleet.boards.len(), &plan.hash()[..16])?;
        }
        Command::Rollback { fleet, accept_new_host_keys } => {
            let fleet = fleet.load()?;
            deploy::rollback(&fleet, accept_new_host_keys, false)?;
            writeln!(out, "fleet {}: real boards rolled back to their previous version", fleet.name)?;
        }
        Command::Down { fleet } => {
            let fleet = fleet.load()?;
            let mut stopped = if fleet.boards.iter().any(|b| !b.is_emulated()) { deploy::down_real(&fleet, false)? } else { vec![] };
            stopped.extend(deploy::down(&fleet)?);
            writeln!(out, "fleet {}: stopped {} boards{}", fleet.name, stopped.len(), if stopped.is_empty() { String::new() } else { format!(" ({})", stopped.join(", ")) })?;
        }
        Command::Run { fleet, input, random, verify, save, up } => {
            let fleet = fleet.load()?;
            let _guard = if up { Some(deploy::UpGuard::start(&fleet)?) } else { None };
            let plan = deploy::compiled_plan(&fleet)?;
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            if m.sha256 != plan.model_sha256 {
                bail!("model {} has changed since the fleet was compiled (sha256 {} vs {}): run `legionc compile` again", fleet.model.source, &m.sha256[..16], &plan.model_sha256[..16]);
            }
            let spec = match (&input, random) {
                (Some(p), _) => legionc::run::InputSpec::File(p),
                (None, Some(seed)) => legionc::run::InputSpec::Random(seed),
                _ => unreachable!("clap requires one"),
            };
            let x = legionc::run::load_input(&spec, &fleet, &m)?;
            let (y, report, wall) = legionc::run::infer(&fleet, &plan, &x)?;
            writeln!(out, "fleet {}, model {}, plan {}", fleet.name, m.ir.name, &plan.hash()[..16])?;
            writeln!(out, "{}", legionc::run::describe_output(&y)?)?;
            write!(out, "{}", legionc::run::breakdown(&report, &plan))?;
            let fastest = fleet.boards.iter().max_by(|a, b| a.nominal_speed().total_cmp(&b.nominal_speed())).unwrap();
            let (_, single) = legionc::run::single_board(&m, &x, fastest.nominal_speed())?;
            writeln!(out, "latency {:.1} ms end to end ({:.1} ms in the coordinator)", wall.as_secs_f64() * 1e3, report.total_s * 1e3)?;
            writeln!(out, "single emulated board ({}, speed {}): {:.1} ms -> speedup {:.2}x", fastest.name, fastest.nominal_speed(), single * 1e3, single / wall.as_secs_f64())?;
            if let Some(p) = save {
                legionc::run::write_npy(&p, &y)?;
            }
            if verify {
                let expected = reference::run(&m.onnx, &x)?;
                let (diff, scale) = reference::compare(&y, &expected)?;
                if diff > 1e-4 * scale {
                    bail!("verify failed: the fleet's output differs from tract's single run (max |diff| {diff:e} > 1e-4 x max |output| {scale:e})");
                }
                writeln!(out, "verified against tract's single run: max |diff| {diff:.2e} (max |output| {scale:.2e})")?;
            }
        }
        Command::Explain { fleet, cache_dir, plan } => {
            let fleet = fleet.load()?;
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let plan = match plan {
                None => deploy::compiled_plan(&fleet)?,
                Some(p) => {
                    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                    let plan: legionc::runtime::plan::Plan = serde_json::from_slice(&bytes).with_context(|| format!("{}: not a plan", p.display()))?;
                    let names: Vec<&String> = fleet.boards.iter().map(|b| &b.name).collect();
                    if plan.boards.iter().collect::<Vec<_>>() != names {
                        bail!("{}: a plan for boards {:?}, the fleet has {:?}", p.display(), plan.boards, names);
                    }
                    if plan.model_sha256 != m.sha256 {
                        bail!("{}: a plan for another model (sha256 {}); {} has {}", p.display(), plan.model_sha256, fleet.model.source, m.sha256);
                    }
                    plan
                }
            };
            let opts = legionc::profile::Options { offline: true, quiet: true, ..legionc::profile::Options::new(cache_dir, &fleet.out().join("target")) };
            let (cm, _) = legionc::strategy::cost_model(&fleet, &m, &opts).context("the cost model needs the profiles `legionc compile` measured")?;
            let groups: Vec<_> = plan.groups.iter().map(|g| (g.group(), g.rows.clone())).collect();
            writeln!(out, "fleet {}, model {}, plan {} ({} groups)", fleet.name, m.ir.name, &plan.hash()[..16], plan.groups.len())?;
            write!(out, "{}", cm.explain(&groups))?;
        }
        Command::Zoo { list, name, output, seed } => {
            if list {
                for (n, d) in zoo::MODELS {
                    writeln!(out, "{n:<14} {d}")?;
                }
                return Ok(());
            }
            let (name, output) = (name.unwrap(), output.unwrap());
            let bytes = zoo::build(&name, seed)?;
            write_atomic(&output, &bytes)?;
            writeln!(out, "wrote {} ({:.1} MB)", output.display(), bytes.len() as f64 / 1e6)?;
        }
        Command::Inspect { model, json } => {
            let m = model.load()?;
            let r = model::report(&m);
            if json {
                serde_json::to_writer_pretty(&mut out, &r)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", model::format_report(&r))?;
            }
        }
        Command::Verify { model, boards, speeds, fusion, seed, plan_out } => {
            let m = model.load()?;
            let speeds = speeds.unwrap_or_else(|| vec![1.0; boards]);
            if speeds.len() != boards {
                bail!("--speeds gives {} values for {boards} boards", speeds.len());
            }
            let fleet: Vec<(String, f64)> = speeds.iter().enumerate().map(|(i, &s)| (format!("board{i}"), s)).collect();
            let ends = solve::fused_groups(&m.ir, fusion);
            let plan = solve::plan_from(&m.ir, &m.sha256, &fleet, &ends)?;
            if let Some(p) = plan_out {
                write_atomic(&p, &serde_json::to_vec_pretty(&plan)?)?;
            }
            let input = reference::random_input(&m.ir.user_input_shape(), seed);
            let t = Instant::now();
            let expected = reference::run(&m.onnx, &input)?;
            let t_ref = t.elapsed();
            let mut local = LocalFleet::new(m.ir.clone(), plan.clone())?;
            let t = Instant::now();
            let got = local.infer(input)?;
            let t_split = t.elapsed();
            let (diff, scale) = reference::compare(&got, &expected)?;
            writeln!(out, "model {} on {boards} boards, {} groups, plan {}", m.ir.name, plan.groups.len(), &plan.hash()[..16])?;
            for (i, g) in plan.groups.iter().enumerate() {
                writeln!(out, "  group {i}: values {}..{} rows {:?}", g.from, g.to, g.rows)?;
            }
            writeln!(out, "tract single run {:.1} ms; split in-process (first run, builds bands) {:.1} ms", t_ref.as_secs_f64() * 1e3, t_split.as_secs_f64() * 1e3)?;
            writeln!(out, "max |diff| {diff:.3e}, max |output| {scale:.3e}, ratio {:.3e} (limit 1e-4)", diff / scale.max(f32::MIN_POSITIVE))?;
            if diff > 1e-4 * scale {
                bail!("split output differs from tract's single run: max |diff| {diff:e} > 1e-4 × {scale:e}");
            }
            writeln!(out, "verified")?;
        }
        Command::Bench(BenchArgs { command: None, fleet: Some(path), strategies, frames, json, cache_dir, target_dir }) => {
            let fleet = fleet::load(&path, None)?;
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let opts = legionc::profile::Options { quiet: json, ..legionc::profile::Options::new(cache_dir, &target_dir.unwrap_or_else(|| fleet.out().join("target"))) };
            let (rows, single) = legionc::bench::strategies(&fleet, &m, &strategies, frames, &opts, legionc::bench::Boards::Compiled)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                writeln!(out, "fleet {}, model {}, {} boards, {} frames per strategy", fleet.name, m.ir.name, fleet.boards.len(), frames)?;
                write!(out, "{}", legionc::bench::format_strategies(&rows, single))?;
            }
        }
        Command::Suite { quick, fleets, models, strategies, frames, out: out_dir, work_dir, target_dir, port, cache_dir, readme } => {
            let models = models.unwrap_or_else(|| (if quick { legionc::suite::QUICK_MODELS } else { legionc::suite::MODELS }).iter().map(|m| m.to_string()).collect());
            let o = legionc::suite::SuiteOptions { quick, fleets, models, strategies, frames, out: out_dir.clone(), work_dir, port, profile: legionc::profile::Options::new(cache_dir, &target_dir) };
            let suite = legionc::suite::run(&o)?;
            if let Some(r) = readme {
                legionc::suite::update_readme(&r, &suite, &out_dir)?;
            }
            write!(out, "{}", legionc::suite::markdown(&suite, ""))?;
            writeln!(out, "written: {}/suite.json, suite.md, speedup-*.svg, gantt.svg", out_dir.display())?;
        }
        Command::Bench(BenchArgs { command: None, .. }) => bail!("bench needs a fleet file or a subcommand (see `legionc bench --help`)"),
        Command::Bench(BenchArgs { command: Some(BenchCommand::Fleet { fleet, frames, up }), .. }) => {
            let fleet = fleet.load()?;
            fleet.require_emulated("bench fleet")?;
            let _guard = if up { Some(deploy::UpGuard::start(&fleet)?) } else { None };
            let plan = deploy::compiled_plan(&fleet)?;
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let x = reference::random_input(&m.ir.user_input_shape(), 1);
            let mut lat = Vec::new();
            let mut coord = Vec::new();
            legionc::run::infer(&fleet, &plan, &x)?; // warm-up frame
            for _ in 0..frames.max(1) {
                let (_, report, wall) = legionc::run::infer(&fleet, &plan, &x)?;
                lat.push(wall.as_secs_f64());
                coord.push(report.total_s);
            }
            lat.sort_by(f64::total_cmp);
            let measured = lat[lat.len() / 2];
            let pred = legionc::bench::predict_fleet_latency(&fleet, &m, &plan)?;
            let fastest = fleet.boards.iter().map(|b| b.nominal_speed()).fold(0.0, f64::max);
            let (_, single) = legionc::run::single_board(&m, &x, fastest)?;
            let speedup = single / measured;
            let ideal = fleet.boards.iter().map(|b| b.nominal_speed()).sum::<f64>() / fastest;
            writeln!(out, "fleet {}, model {}, {} boards, plan {} ({} groups), {} frames", fleet.name, m.ir.name, fleet.boards.len(), &plan.hash()[..16], plan.groups.len(), lat.len())?;
            writeln!(out, "measured latency   {:>9.1} ms (median)", measured * 1e3)?;
            writeln!(out, "predicted latency  {:>9.1} ms (groups {}; tail {:.1})", pred.total * 1e3, pred.groups.iter().map(|g| format!("{:.1}", g * 1e3)).collect::<Vec<_>>().join(" + "), pred.tail * 1e3)?;
            writeln!(out, "measured / predicted = {:.3}", measured / pred.total)?;
            writeln!(out, "single fastest board {:>9.1} ms -> speedup {:.2}x", single * 1e3, speedup)?;
            writeln!(out, "ideal bound (sum of speeds / fastest) = {:.2}x; speedup / ideal = {:.3}", ideal, speedup / ideal)?;
        }
        Command::Bench(BenchArgs { command: Some(BenchCommand::Band { model, group, boards, board, repeats }), .. }) => {
            let m = model::load(&model, None)?;
            let group = match group {
                Some(g) => {
                    let (a, b) = g.split_once("..").context("--group takes FROM..TO")?;
                    Group { from: a.parse()?, to: b.parse()? }
                }
                None => Group { from: 0, to: solve::fused_groups(&m.ir, Fusion::Blocks)[0] },
            };
            let cuts = m.ir.split_cut_points();
            if !cuts.contains(&group.from) || !cuts.contains(&group.to) || group.from >= group.to {
                bail!("group {}..{} is not between cut points of the splittable part {:?}", group.from, group.to, cuts);
            }
            let r = legionc::bench::band_vs_tract(&m, group, boards, board, repeats)?;
            writeln!(out, "model {}, group {}..{}, output rows {} (input rows {}), {repeats} runs each, single thread", m.ir.name, group.from, group.to, r.band, r.input_rows)?;
            writeln!(out, "legionc executor  {:>9.2} ms median, {:>9.2} ms fastest", r.executor_s * 1e3, r.executor_min_s * 1e3)?;
            writeln!(out, "tract-onnx direct {:>9.2} ms median, {:>9.2} ms fastest", r.tract_s * 1e3, r.tract_min_s * 1e3)?;
            writeln!(out, "max |diff| {:.2e}", r.max_abs_diff)?;
            writeln!(out, "ratio executor / tract = {:.3} median, {:.3} fastest (goal <= 1.05)", r.executor_s / r.tract_s, r.executor_min_s / r.tract_min_s)?;
        }
        Command::Bench(BenchArgs { command: Some(BenchCommand::Drift { model, runs, pause_ms }), .. }) => {
            let m = model::load(&model, None)?;
            let r = legionc::bench::drift(&m, runs, std::time::Duration::from_millis(pause_ms))?;
            writeln!(out, "model {}, whole model on one thread, {} runs {} ms apart", m.ir.name, r.runs, pause_ms)?;
            writeln!(out, "calibrated reference {:>9.3} ms", r.calibrated_reference_s * 1e3)?;
            writeln!(out, "raw CPU time       {:>9.1} ms median, coefficient of variation {:.1} %", r.raw_median_s * 1e3, r.raw_cv * 1e2)?;
            let how = if r.bracketed { "reference before and after each run" } else { "reference before each run (runs too short to bracket)" };
            writeln!(out, "drift-corrected    {:>9.1} ms median, coefficient of variation {:.1} % ({how})", r.corrected_median_s * 1e3, r.corrected_cv * 1e2)?;
            if r.bracketed {
                writeln!(out, "  from the reference before each run only: coefficient of variation {:.1} %", r.before_only_cv * 1e2)?;
            }
            writeln!(out, "reference time: coefficient of variation {:.1} %; correlation of the run with it: {:.2}", r.reference_cv * 1e2, r.correlation)?;
            writeln!(out, "variation corrected / raw = {:.2}", r.corrected_cv / r.raw_cv)?;
        }
    }
    Ok(())
}
