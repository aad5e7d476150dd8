//! Building the board crates: `cargo build --release`, one shared target directory, each
//! board's triple, cross linkers from the target files. tract is built once per triple.

use crate::fleet::{Board, Fleet, HOST_TRIPLE};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The shared cargo target directory of a fleet's board crates (and of the probe and the
/// generic board) when `--target-dir` is not given: legionc's own when it runs from a cargo
/// target dir (`cargo run`, a checkout's `target/release/legionc`), so that host board crates
/// share legionc's build of tract (same profile, same features: see `codegen::RELEASE_PROFILE`
/// and legion-runtime's Cargo.toml); else `OUT/target`.
pub fn default_target_dir(fleet: &Fleet) -> PathBuf {
    own_target_dir().unwrap_or_else(|| fleet.out().join("target"))
}

/// The cargo target directory legionc's binary was built in, if it runs from one (cargo marks
/// its target dirs with `CACHEDIR.TAG`).
pub fn own_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).take(3).find(|d| d.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf)
}

/// Name of a board's binary: unique per fleet and board, as board crates share a target dir.
pub fn binary_name(fleet: &Fleet, board: &Board) -> String {
    format!("legion-{}-{}", crate::fleet::slug(&fleet.name), board.slug())
}

/// Where cargo puts a board's binary.
pub fn binary_path(target_dir: &Path, fleet: &Fleet, board: &Board) -> PathBuf {
    let triple = board.triple();
    let dir = if triple == HOST_TRIPLE { target_dir.join("release") } else { target_dir.join(triple).join("release") };
    dir.join(binary_name(fleet, board))
}

fn env_key(triple: &str) -> String {
    triple.to_uppercase().replace('-', "_")
}

/// Is everything needed to build for `triple` installed? A clear error if not.
fn check_toolchain(board: &Board) -> Result<()> {
    let triple = board.triple();
    if triple == HOST_TRIPLE {
        return Ok(());
    }
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if let Ok(o) = installed {
        if !String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == triple) {
            bail!("board '{}' needs the Rust standard library for {triple}: run `rustup target add {triple}`", board.name);
        }
    }
    let linker = &board.target.as_ref().expect("a cross board has a target").linker;
    if Command::new(linker).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        let pkg = match triple {
            "aarch64-unknown-linux-gnu" => "gcc-aarch64-linux-gnu",
            "armv7-unknown-linux-gnueabihf" => "gcc-arm-linux-gnueabihf",
            _ => "a cross gcc",
        };
        bail!("board '{}' needs the linker {linker} for {triple}: install {pkg} (apt-get install {pkg})", board.name);
    }
    Ok(())
}

/// The cargo command that builds one board crate.
pub fn cargo_command(out: &Path, target_dir: &Path, board: &Board) -> Command {
    crate_command(&out.join(board.slug()).join("Cargo.toml"), target_dir, board)
}

/// The cargo command that builds the crate at `manifest` for `board`'s triple.
fn crate_command(manifest: &Path, target_dir: &Path, board: &Board) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build").arg("--release").arg("--manifest-path").arg(manifest);
    cmd.arg("--target-dir").arg(target_dir);
    let triple = board.triple();
    if triple != HOST_TRIPLE {
        let t = board.target.as_ref().expect("a cross board has a target");
        cmd.arg("--target").arg(triple);
        cmd.env(format!("CARGO_TARGET_{}_LINKER", env_key(triple)), &t.linker);
        if !t.rustflags.is_empty() {
            cmd.env(format!("CARGO_TARGET_{}_RUSTFLAGS", env_key(triple)), t.rustflags.join(" "));
        }
    }
    // A legionc started by cargo must not hand its own build settings down.
    for var in ["RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "CARGO_MANIFEST_DIR"] {
        cmd.env_remove(var);
    }
    cmd
}

/// A board's built binary in the compiled fleet: `OUT/bin/<binary name>`.
pub fn installed_binary(fleet: &Fleet, b: &Board) -> PathBuf {
    fleet.out().join("bin").join(binary_name(fleet, b))
}

/// Build every board's crate and copy the binaries into `OUT/bin/` (each atomically);
/// returns that folder. Output of cargo goes to `OUT/build.log`.
pub fn build(fleet: &Fleet, target_dir: &Path, quiet: bool) -> Result<PathBuf> {
    build_crates(fleet, target_dir, quiet)?;
    let bin_dir = fleet.out().join("bin");
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    for b in &fleet.boards {
        let src = binary_path(target_dir, fleet, b);
        let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let dst = installed_binary(fleet, b);
        crate::write_atomic(&dst, &bytes)?;
        std::fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Ok(bin_dir)
}

fn build_crates(fleet: &Fleet, target_dir: &Path, quiet: bool) -> Result<()> {
    let out = fleet.out();
    for b in &fleet.boards {
        check_toolchain(b)?;
    }
    let log_path = out.join("build.log");
    let mut log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(fleet.boards.len() as u64) };
    bar.set_style(ProgressStyle::with_template("{spinner} building [{bar:20}] {pos}/{len} {msg} ({elapsed})").unwrap().progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    for b in &fleet.boards {
        bar.set_message(format!("{} ({})", b.name, b.triple()));
        writeln!(log, "==== board {} ({})", b.name, b.triple())?;
        let status = cargo_command(out, target_dir, b)
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bar.abandon();
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("building board '{}' for {} failed (full log: {}):\n{}", b.name, b.triple(), log_path.display(), tail.join("\n"));
        }
        bar.inc(1);
    }
    bar.finish_with_message("done");
    Ok(())
}

/// Build the probe for `board`'s triple; returns the binary's path. Its crate is generated
/// into `target_dir/legion-probe/` (rewritten only when its sources change, so that cargo
/// finds it fresh for every fleet sharing the target dir). Cargo's output is appended to
/// `OUT/build.log`.
pub fn build_probe(out: &Path, target_dir: &Path, board: &Board) -> Result<PathBuf> {
    build_shared(out, target_dir, board, "legion-probe", crate::codegen::render_probe()?)
}

/// Build the generic board binary (fleet and plan read at start) for `board`'s triple, the
/// same way as the probe.
pub fn build_generic_board(out: &Path, target_dir: &Path, board: &Board) -> Result<PathBuf> {
    build_shared(out, target_dir, board, "legion-board", crate::codegen::render_generic_board()?)
}

fn build_shared(out: &Path, target_dir: &Path, board: &Board, name: &str, files: Vec<crate::codegen::OutFile>) -> Result<PathBuf> {
    check_toolchain(board)?;
    // legionc processes sharing the target dir (tests, a suite beside a compile) take turns:
    // one replacing the crate while another builds it would fail both.
    std::fs::create_dir_all(target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
    let lock_path = target_dir.join(format!("{name}.lock"));
    let lock = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&lock_path).with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    if !crate::codegen::stale(target_dir, &files).is_empty() {
        crate::codegen::write(target_dir, &files)?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let log_path = out.join("build.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    let status = crate_command(&target_dir.join(name).join("Cargo.toml"), target_dir, board)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building {name} for {} failed (log: {})", board.triple(), log_path.display());
    }
    let triple = board.triple();
    let dir = if triple == HOST_TRIPLE { target_dir.join("release") } else { target_dir.join(triple).join("release") };
    Ok(dir.join(name))
}
