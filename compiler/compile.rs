//! `legionc compile`: find the fleet's plan, render one crate per board, write them, build
//! them. Reports what it does as it goes.

use crate::fleet::{Fleet, Strategy};
use crate::model::LoadedModel;
use crate::profile::Options;
use crate::{cargo_build, codegen, strategy};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

/// How to compile.
pub struct CompileOptions {
    /// Overrides the fleet file's `strategy`.
    pub strategy: Option<Strategy>,
    /// Render and write the crates, do not build them.
    pub no_build: bool,
    /// Compare what would be generated with what is on disk, write nothing, measure nothing.
    pub check: bool,
    /// Profiling (its `target_dir` is where the board crates are built too).
    pub profile: Options,
}

/// What `compile --json` prints: one object for the next CI step. The field names are part of
/// legionc's interface: they change only with `version`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileSummary {
    /// Version of this summary's fields.
    pub version: u32,
    pub fleet: String,
    pub out_dir: PathBuf,
    pub strategy: String,
    pub plan_hash: String,
    /// None for a strategy without a cost model (`proportional`).
    pub predicted_latency_s: Option<f64>,
    /// `mesh` or `star`.
    pub topology: String,
    /// Fused groups, and Dense layers of the tail split by output features.
    pub groups: usize,
    pub tail_splits: usize,
    /// Each board's predicted peak memory, MB, in board order (None without memory
    /// measurements, e.g. `proportional`).
    pub predicted_peak_mb: Option<Vec<(String, f64)>>,
    /// The objective (`latency`, `throughput`, `latency_at_fps=R`), the lanes frames are dealt
    /// among (1: every frame split over the fleet) and the frames in flight per lane the plan
    /// was chosen for.
    pub objective: String,
    pub lanes: usize,
    pub in_flight: usize,
    /// Predicted frames per second with one frame in flight (per lane), and with frames
    /// pipelined (the busiest board's compute or port bounds it); None without a cost model.
    pub predicted_throughput_fps: Option<f64>,
    pub predicted_pipelined_fps: Option<f64>,
    /// `legionc cache-key` of this compile.
    pub cache_key: String,
    /// `compile --check` found the output up to date (false: the output was written).
    pub up_to_date: bool,
    pub profiling: ProfilingSummary,
    pub boards: Vec<BoardBinary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilingSummary {
    /// Measurements the plan rests on, answered from the cache.
    pub cached: usize,
    /// Measurements made now.
    pub measured_now: usize,
    pub probe_runs: usize,
    /// Board time spent measuring now.
    pub board_seconds: f64,
    pub ssh_connections: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardBinary {
    pub name: String,
    pub triple: String,
    /// `OUT/bin/…` (absolute), None when this compile built nothing (`--no-build`, `--check`).
    pub binary: Option<PathBuf>,
    pub sha256: Option<String>,
}

/// 2: `topology`, `groups`, `tail_splits` and `predicted_peak_mb` added. 3: `objective`,
/// `lanes`, `in_flight`, `predicted_throughput_fps` and `predicted_pipelined_fps`; `groups`
/// and `tail_splits` count every lane's.
pub const SUMMARY_VERSION: u32 = 3;

/// Compile `fleet` for model `m`, printing the plan and what was done to `out`; returns the
/// summary `--json` prints.
pub fn compile(fleet: &Fleet, m: &LoadedModel, o: &CompileOptions, out: &mut dyn Write) -> Result<CompileSummary> {
    let out_dir = fleet.out();
    let mut opts = o.profile.clone();
    opts.offline |= o.check;
    if !o.check {
        codegen::check_out_dir(out_dir)?;
    }
    let strategy = o.strategy.unwrap_or(fleet.strategy);
    let planned = strategy::plan_objective(fleet, m, strategy, &opts)?;
    let plan = &planned.plan;
    let files = codegen::render(fleet, m, plan)?;
    if o.check {
        let stale = codegen::stale(out_dir, &files);
        if !stale.is_empty() {
            let list: Vec<String> = stale.iter().map(|p| format!("  {}", p.display())).collect();
            bail!("{} is stale, these files differ from what `legionc compile` generates:\n{}", out_dir.display(), list.join("\n"));
        }
        writeln!(out, "{}: up to date (plan {})", out_dir.display(), &plan.hash()[..16])?;
        return summary(fleet, m, strategy, &planned, true, false);
    }
    codegen::write(out_dir, &files)?;
    // The fleet's key (kept from an earlier compile: running boards keep answering).
    crate::deploy::ensure_key(fleet)?;
    // How the plan was found (predictions, wild card, profiling cost): not part of what
    // `--check` compares, as profiling counts differ between cold and warm runs.
    crate::write_atomic(&out_dir.join("plan-report.json"), &[serde_json::to_vec_pretty(&planned)?, b"\n".to_vec()].concat())?;
    writeln!(out, "fleet {}: model {} ({}), {} boards, coordinator {}", fleet.name, m.ir.name, &m.sha256[..16], fleet.boards.len(), fleet.coordinator().name)?;
    if strategy != Strategy::Proportional {
        write!(out, "{}", planned.profiling.describe(&opts.cache_dir))?;
    }
    let shape = if plan.lanes.is_empty() { format!("{} groups", plan.groups.len()) } else { format!("{} lanes", plan.lanes.len()) };
    writeln!(out, "plan {} ({}, objective {}, {shape}) -> {}", &plan.hash()[..16], strategy.name(), fleet.objective, out_dir.join("plan.json").display())?;
    write!(out, "{}", planned.describe())?;
    for (b, m) in fleet.boards.iter().zip(planned.memory_after_loss.iter().flatten()) {
        if let Some(limit) = b.memory_limit_mb().filter(|&l| m.peak_mb > l) {
            writeln!(out, "warning: board {}: predicted peak after a loss {:.0} MB, over its {limit:.0} MB (set `fallbacks: false`, or give it more memory)", b.name, m.peak_mb)?;
        }
    }
    // What each board carries: the weights of the layers (and slices) it computes.
    let sizes: Vec<String> = fleet
        .boards
        .iter()
        .filter_map(|b| files.iter().find(|f| f.path == std::path::Path::new(&b.name).join("model.bin")).map(|f| format!("{} {:.1} MB", b.name, f.bytes.len() as f64 / 1e6)))
        .collect();
    writeln!(out, "model files (the weights each board computes with): {}", sizes.join(", "))?;
    if !o.no_build {
        out.flush()?;
        let bin_dir = cargo_build::build(fleet, &opts.target_dir, false)?;
        writeln!(out, "built {} board binaries -> {}", fleet.boards.len(), bin_dir.display())?;
    }
    summary(fleet, m, strategy, &planned, false, !o.no_build)
}

fn summary(fleet: &Fleet, m: &LoadedModel, strategy: Strategy, planned: &strategy::Planned, up_to_date: bool, built: bool) -> Result<CompileSummary> {
    let st = &planned.profiling;
    let boards = fleet
        .boards
        .iter()
        .map(|b| {
            let bin = cargo_build::installed_binary(fleet, b);
            // Only what this compile installed: OUT/bin may hold an earlier plan's binaries.
            let sha = if built {
                let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
                Some(legion_runtime::plan::hex(&Sha256::digest(bytes)))
            } else {
                None
            };
            let binary = sha.as_ref().map(|_| std::path::absolute(&bin)).transpose()?;
            Ok(BoardBinary { name: b.name.clone(), triple: b.triple().into(), binary, sha256: sha })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CompileSummary {
        version: SUMMARY_VERSION,
        fleet: fleet.name.clone(),
        out_dir: std::path::absolute(fleet.out())?,
        strategy: strategy.name().into(),
        plan_hash: planned.plan_hash.clone(),
        predicted_latency_s: planned.predicted_latency_s.is_finite().then_some(planned.predicted_latency_s),
        topology: planned.plan.topology.name().into(),
        groups: planned.plan.groups.len() + planned.plan.lanes.iter().map(|l| l.groups.len()).sum::<usize>(),
        tail_splits: planned.plan.tail.len() + planned.plan.lanes.iter().map(|l| l.tail.len()).sum::<usize>(),
        objective: fleet.objective.to_string(),
        lanes: planned.plan.lanes.len().max(1),
        in_flight: planned.plan.in_flight,
        predicted_peak_mb: planned.memory.as_ref().map(|m| m.iter().map(|b| (b.board.clone(), b.peak_mb)).collect()),
        predicted_throughput_fps: planned.throughput_fps(1),
        predicted_pipelined_fps: planned.throughput_fps(usize::MAX / 2),
        cache_key: crate::profile::cache_key(fleet, m, strategy)?,
        up_to_date,
        profiling: ProfilingSummary { cached: st.cached, measured_now: st.measured, probe_runs: st.probe_runs, board_seconds: st.board_seconds, ssh_connections: st.ssh_connections },
        boards,
    })
}
