//! `legionc compile`: find the fleet's plan, render one crate per board, write them, build
//! them. Reports what it does as it goes.

use crate::fleet::{Fleet, Strategy};
use crate::model::LoadedModel;
use crate::profile::Options;
use crate::{cargo_build, codegen, strategy};
use anyhow::{bail, Result};
use std::io::Write;

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

/// Compile `fleet` for model `m`, printing the plan and what was done to `out`.
pub fn compile(fleet: &Fleet, m: &LoadedModel, o: &CompileOptions, out: &mut dyn Write) -> Result<()> {
    let out_dir = fleet.out();
    let mut opts = o.profile.clone();
    opts.offline |= o.check;
    if !o.check {
        codegen::check_out_dir(out_dir)?;
    }
    let strategy = o.strategy.unwrap_or(fleet.strategy);
    let planned = strategy::plan(fleet, m, strategy, &opts)?;
    let plan = &planned.plan;
    let files = codegen::render(fleet, m, plan)?;
    if o.check {
        let stale = codegen::stale(out_dir, &files);
        if !stale.is_empty() {
            let list: Vec<String> = stale.iter().map(|p| format!("  {}", p.display())).collect();
            bail!("{} is stale, these files differ from what `legionc compile` generates:\n{}", out_dir.display(), list.join("\n"));
        }
        writeln!(out, "{}: up to date (plan {})", out_dir.display(), &plan.hash()[..16])?;
        return Ok(());
    }
    codegen::write(out_dir, &files)?;
    // How the plan was found (predictions, wild card, profiling cost): not part of what
    // `--check` compares, as profiling counts differ between cold and warm runs.
    crate::write_atomic(&out_dir.join("plan-report.json"), &[serde_json::to_vec_pretty(&planned)?, b"\n".to_vec()].concat())?;
    writeln!(out, "fleet {}: model {} ({}), {} boards, coordinator {}", fleet.name, m.ir.name, &m.sha256[..16], fleet.boards.len(), fleet.coordinator().name)?;
    if strategy != Strategy::Proportional {
        write!(out, "{}", planned.profiling.describe(&opts.cache_dir))?;
    }
    writeln!(out, "plan {} ({}, {} groups) -> {}", &plan.hash()[..16], strategy.name(), plan.groups.len(), out_dir.join("plan.json").display())?;
    write!(out, "{}", planned.describe())?;
    if !o.no_build {
        out.flush()?;
        let bin_dir = cargo_build::build(fleet, &opts.target_dir, false)?;
        writeln!(out, "built {} board binaries -> {}", fleet.boards.len(), bin_dir.display())?;
    }
    Ok(())
}
