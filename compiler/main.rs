//! The `legionc` command line. Exit codes: 0 success, 1 failure (the error is printed once,
//! with its causes), 2 bad usage.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use legionc::model::{self, reference, zoo, Group};
use legionc::runtime::plan::LocalFleet;
use legionc::solve::{self, Fusion};
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

#[derive(Subcommand)]
enum Command {
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
    /// Benchmarks (print measured ratios)
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
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

/// Write `bytes` to `path` atomically: a temporary file beside it, then a rename.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cli.command {
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
        Command::Bench(BenchCommand::Band { model, group, boards, board, repeats }) => {
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
            writeln!(out, "legionc executor  {:>9.2} ms (median)", r.executor_s * 1e3)?;
            writeln!(out, "tract-onnx direct {:>9.2} ms (median)", r.tract_s * 1e3)?;
            writeln!(out, "max |diff| {:.2e}", r.max_abs_diff)?;
            writeln!(out, "ratio executor / tract = {:.3} (goal <= 1.05)", r.executor_s / r.tract_s)?;
        }
    }
    Ok(())
}
