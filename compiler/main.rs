//! The `legionc` command line: parses it (`legionc::cli`), calls the library, prints.
//! Exit codes: 0 success, 1 failure (the error is printed once, with its causes), 2 bad usage
//! (clap), 3 `--offline` and the profile cache lacks a measurement.

use anyhow::{bail, Result};
use clap::Parser;
use legionc::cli::{BenchArgs, BenchCommand, Cli, Command, Measuring};
use legionc::model::{self, zoo};
use legionc::{bench, cargo_build, codegen, compile, deploy, fleet, profile, run, strategy, suite, write_atomic};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.is::<profile::MissingProfiles>()) {
                return ExitCode::from(profile::EXIT_MISSING_PROFILES);
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Compile { fleet, no_build, target_dir, check, json, profiling } => {
            let mut fleet = fleet.load()?;
            fleet.topology = profiling.topology.unwrap_or(fleet.topology);
            fleet.objective = profiling.objective.unwrap_or(fleet.objective);
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let target_dir = target_dir.unwrap_or_else(|| cargo_build::default_target_dir(&fleet));
            let o = compile::CompileOptions { strategy: profiling.strategy, no_build, check, profile: profiling.options(&target_dir) };
            // A directory that is not a compiled fleet's is refused before the lock is put in it.
            let _lock = if check { None } else { codegen::check_out_dir(fleet.out()).and_then(|()| legionc::OutLock::acquire(fleet.out(), true))? };
            if json {
                // The report goes to stderr, the summary alone to stdout.
                let summary = compile::compile(&fleet, &m, &o, &mut std::io::stderr())?;
                serde_json::to_writer_pretty(&mut out, &summary)?;
                writeln!(out)?;
            } else {
                compile::compile(&fleet, &m, &o, &mut out)?;
            }
        }
        Command::CacheKey { fleet, strategy, objective } => {
            let mut fleet = fleet.load()?;
            fleet.objective = objective.unwrap_or(fleet.objective);
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            writeln!(out, "{}", profile::cache_key(&fleet, &m, strategy.unwrap_or(fleet.strategy))?)?;
        }
        Command::Up { fleet } => {
            let fleet = fleet.load()?;
            let _lock = legionc::OutLock::acquire(fleet.out(), false)?;
            for line in deploy::up(&fleet, false)? {
                writeln!(out, "{line}")?;
            }
            let plan = codegen::compiled_plan(&fleet)?;
            writeln!(out, "fleet {} is up: {} boards answer with plan {}", fleet.name, fleet.boards.len(), &plan.hash()[..16])?;
        }
        Command::Status { fleet } => {
            let fleet = fleet.load()?;
            let (report, down) = deploy::status(&fleet);
            write!(out, "{report}")?;
            if down > 0 {
                bail!("{down} of {} boards do not answer", fleet.boards.len());
            }
        }
        Command::Deploy { fleet, accept_new_host_keys } => {
            let fleet = fleet.load()?;
            let _lock = legionc::OutLock::acquire(fleet.out(), false)?;
            deploy::deploy(&fleet, accept_new_host_keys, false)?;
            let plan = codegen::compiled_plan(&fleet)?;
            writeln!(out, "fleet {} deployed: {} boards answer with plan {}", fleet.name, fleet.boards.len(), &plan.hash()[..16])?;
        }
        Command::Rollback { fleet, accept_new_host_keys } => {
            let fleet = fleet.load()?;
            let _lock = legionc::OutLock::acquire(fleet.out(), false)?;
            deploy::rollback(&fleet, accept_new_host_keys, false)?;
            writeln!(out, "fleet {}: real boards rolled back to their previous version", fleet.name)?;
        }
        Command::Down { fleet } => {
            let fleet = fleet.load()?;
            let _lock = legionc::OutLock::acquire(fleet.out(), false)?;
            let stopped = deploy::down_all(&fleet)?;
            let names = if stopped.is_empty() { String::new() } else { format!(" ({})", stopped.join(", ")) };
            writeln!(out, "fleet {}: stopped {} boards{names}", fleet.name, stopped.len())?;
        }
        Command::Run { fleet, input, random, frames, in_flight, rate, drop, verify, verify_every, json, save, up, no_baseline, cache_dir, accept_new_host_keys } => {
            let fleet = fleet.load()?;
            let _lock = legionc::OutLock::acquire(fleet.out(), false)?;
            let _guard = if up { Some(deploy::UpGuard::start(&fleet)?) } else { None };
            let input = match (&input, random) {
                (Some(p), _) => run::InputSpec::File(p),
                (None, Some(seed)) => run::InputSpec::Random(seed),
                _ => unreachable!("clap requires one"),
            };
            let profile = profile::Options { accept_new_host_keys, ..profile::Options::new(cache_dir, &cargo_build::default_target_dir(&fleet)) };
            let o = run::RunOptions {
                input,
                stream: run::StreamOptions { frames: frames as usize, rate, drop, in_flight: in_flight.map(|k| k as usize), verify_every: verify_every.map(|k| k as usize) },
                verify,
                json,
                save: save.as_deref(),
                baseline: !no_baseline,
                profile,
            };
            run::run_frames(&fleet, &o, &mut out)?;
        }
        Command::Explain { fleet, cache_dir, plan } => {
            let fleet = fleet.load()?;
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let opts = profile::Options::new(cache_dir, &cargo_build::default_target_dir(&fleet));
            write!(out, "{}", strategy::explain(&fleet, &m, plan.as_deref(), &opts)?)?;
        }
        Command::Zoo { list, name, output, seed } => {
            if list {
                for (n, d) in zoo::MODELS {
                    writeln!(out, "{n:<14} {d}")?;
                }
                return Ok(());
            }
            let (name, output) = (name.expect("clap requires it"), output.expect("clap requires it"));
            let bytes = zoo::build(&name, seed)?;
            write_atomic(&output, &bytes)?;
            writeln!(out, "wrote {} ({:.1} MB)", output.display(), bytes.len() as f64 / 1e6)?;
        }
        Command::Inspect { model, json } => {
            let r = model::report(&model.load()?);
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
            let r = run::verify_in_process(&m, &speeds, fusion, seed)?;
            if let Some(p) = plan_out {
                write_atomic(&p, &serde_json::to_vec_pretty(&r.plan)?)?;
            }
            write!(out, "{} {r}", m.ir.name)?;
            r.agreement.ensure_within("the split output")?;
            writeln!(out, "verified")?;
        }
        Command::Suite { quick, fleets, models, strategies, topology, frames, measuring: Measuring { rounds, time_scale }, candidates, out: out_dir, work_dir, target_dir, port, cache_dir, readme } => {
            set_time_scale(time_scale);
            let models = models.unwrap_or_else(|| (if quick { suite::QUICK_MODELS } else { suite::MODELS }).iter().map(|m| m.to_string()).collect());
            let o = suite::SuiteOptions { quick, fleets, models, strategies, topology, frames, rounds, candidates, out: out_dir.clone(), work_dir, port, profile: profile::Options::new(cache_dir, &target_dir.or_else(cargo_build::own_target_dir).unwrap_or_else(|| "target/boards".into())) };
            let s = suite::run(&o)?;
            if let Some(r) = readme {
                suite::update_readme(&r, &s, &out_dir)?;
            }
            write!(out, "{}", suite::markdown(&s, ""))?;
            writeln!(out, "written: {}/suite.json, suite.md, speedup-*.svg, throughput-*.svg, gantt.svg", out_dir.display())?;
        }
        Command::Bench(args) => bench_command(args, &mut out)?,
    }
    Ok(())
}

/// `--time-scale K` of `bench` and `suite`: the emulated boards they start (and this process's
/// timings) run K times slower than the twins (`legion_runtime::link::time_scale`). Set before
/// anything reads it.
fn set_time_scale(k: f64) {
    if k != 1.0 {
        std::env::set_var("LEGION_TIME_SCALE", k.to_string());
    }
}

fn bench_command(args: BenchArgs, out: &mut dyn Write) -> Result<()> {
    match args {
        BenchArgs { command: None, fleet: Some(path), strategies, topology, frames, measuring: Measuring { rounds, time_scale }, json, cache_dir, target_dir } => {
            set_time_scale(time_scale);
            let mut fleet = fleet::load(&path, None)?;
            fleet.topology = topology.unwrap_or(fleet.topology);
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let target_dir = target_dir.unwrap_or_else(|| cargo_build::default_target_dir(&fleet));
            let opts = profile::Options { quiet: json, ..profile::Options::new(cache_dir, &target_dir) };
            let (rows, single) = bench::strategies(&fleet, &m, &strategies, frames, rounds, &opts, bench::Boards::Compiled)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &rows)?;
                writeln!(out)?;
            } else {
                writeln!(out, "fleet {}, model {}, {} boards, {} frames per strategy{}", fleet.name, m.ir.name, fleet.boards.len(), frames * rounds.max(1), if rounds > 1 { format!(" in {rounds} rounds") } else { String::new() })?;
                write!(out, "{}", bench::format_strategies(&rows, single))?;
            }
        }
        BenchArgs { command: None, .. } => bail!("bench needs a fleet file or a subcommand (see `legionc bench --help`)"),
        BenchArgs { command: Some(BenchCommand::Fleet { fleet, frames, up }), .. } => {
            let fleet = fleet.load()?;
            fleet.require_emulated("bench fleet")?;
            let _guard = if up { Some(deploy::UpGuard::start(&fleet)?) } else { None };
            let plan = codegen::compiled_plan(&fleet)?;
            let m = model::load(&fleet.model.source, fleet.model.input_shape.as_deref())?;
            let r = bench::fleet(&fleet, &m, &plan, frames)?;
            writeln!(out, "fleet {}, model {}, {} boards, plan {} ({} groups)", fleet.name, m.ir.name, fleet.boards.len(), &plan.hash()[..16], plan.groups.len())?;
            write!(out, "{r}")?;
        }
        BenchArgs { command: Some(BenchCommand::Band { model, group, boards, board, repeats }), .. } => {
            let m = model::load(&model, None)?;
            let group = bench::band_group(&m, group.as_deref())?;
            let r = bench::band_vs_tract(&m, group, boards, board, repeats)?;
            write!(out, "model {}, {repeats} runs each, {r}", m.ir.name)?;
        }
        BenchArgs { command: Some(BenchCommand::Drift { model, runs, pause_ms }), .. } => {
            let m = model::load(&model, None)?;
            let r = bench::drift(&m, runs, std::time::Duration::from_millis(pause_ms))?;
            writeln!(out, "model {}, whole model on one thread, {} runs {} ms apart", m.ir.name, r.runs, pause_ms)?;
            write!(out, "{r}")?;
        }
    }
    Ok(())
}
