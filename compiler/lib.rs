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

/// A command's hold on an output directory: an exclusive flock on `OUT/.lock`, which holds the
/// holder's pid while held (emptied when released, so that two compiles one after the other
/// leave identical trees). A second legionc on the same directory fails, naming the first.
pub struct OutLock {
    file: std::fs::File,
}

impl OutLock {
    /// Take the lock on `out`. A directory that does not exist yet is created only when
    /// `create` (compile); otherwise there is nothing to hold and None is returned.
    pub fn acquire(out: &std::path::Path, create: bool) -> anyhow::Result<Option<OutLock>> {
        use anyhow::Context;
        use std::io::Write;
        if !out.is_dir() {
            if !create {
                return Ok(None);
            }
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        }
        let path = out.join(".lock");
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                anyhow::bail!("another legionc (pid {}) holds {}", if holder.is_empty() { "unknown" } else { holder }, out.display());
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Some(OutLock { file }))
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

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
