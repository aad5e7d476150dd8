//! legionc, the Legion plan compiler: splits the inference of one CNN across a fleet of
//! heterogeneous edge boards. See ARCHITECTURE.md for the code map.

pub mod bench;
pub mod cargo_build;
pub mod cli;
pub mod codegen;
pub mod compile;
pub mod cost;
pub mod deploy;
pub mod embedded;
pub mod figures;
pub mod fleet;
pub mod model;
pub mod parallel;
pub mod profile;
pub mod run;
pub mod solve;
pub mod ssh;
pub mod strategy;
pub mod suite;

pub use legion_runtime as runtime;

/// Write `bytes` to `path` through a temporary file beside it (a fresh name, so concurrent
/// writers never share one), renamed into place: a failure leaves the old file or none, never
/// half of the new one.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    // The file keeps its permissions; a new one is readable by all, as `std::fs::write` makes it
    // (tempfile's own default, 0600, would hide a README or a model from other users).
    let mode = std::fs::metadata(path).map(|m| m.permissions()).unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = tempfile::Builder::new()
        .prefix(".legionc-")
        .suffix(".tmp")
        .permissions(mode)
        .tempfile_in(dir)
        .with_context(|| format!("writing {}: creating a temporary file in {}", path.display(), dir.display()))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_data()).with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
