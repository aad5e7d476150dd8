//! legionc, the Legion plan compiler: splits the inference of one CNN across a fleet of
//! heterogeneous edge boards. See ARCHITECTURE.md for the code map.

pub mod bench;
pub mod cost;
pub mod cargo_build;
pub mod codegen;
pub mod deploy;
pub mod embedded;
pub mod figures;
pub mod fleet;
pub mod model;
pub mod profile;
pub mod run;

pub use legion_runtime as runtime;
pub mod solve;
pub mod strategy;
pub mod suite;

/// Write `bytes` to `path` through a temporary name beside it, renamed into place: a failure
/// leaves the old file or none, never half of the new one.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
