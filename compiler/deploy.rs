//! Starting and stopping a compiled fleet. Emulated boards are local processes: their pid and
//! log live under `OUT/run/`.

use crate::fleet::{Board, Fleet};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use legion_runtime::plan::Plan;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The plan of a compiled fleet.
pub fn compiled_plan(fleet: &Fleet) -> Result<Plan> {
    let p = fleet.out().join("plan.json");
    let bytes = std::fs::read(&p).with_context(|| format!("{} is not compiled: no {} (run `legionc compile` first)", fleet.name, p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", p.display()))
}

/// A board's built binary in the compiled fleet.
pub fn binary(fleet: &Fleet, b: &Board) -> PathBuf {
    fleet.out().join("bin").join(crate::cargo_build::binary_name(fleet, b))
}

fn run_dir(fleet: &Fleet) -> PathBuf {
    fleet.out().join("run")
}

fn pid_file(fleet: &Fleet, b: &Board) -> PathBuf {
    run_dir(fleet).join(format!("{}.pid", b.slug()))
}

pub fn log_file(fleet: &Fleet, b: &Board) -> PathBuf {
    run_dir(fleet).join(format!("{}.log", b.slug()))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Is a board answering with this plan? (name, runtime version, plan hash)
pub fn health(b: &Board) -> Result<(String, String, String)> {
    legion_runtime::board::hello(&b.addr(), Duration::from_secs(2)).with_context(|| format!("board {} ({})", b.name, b.addr()))
}

/// Start every emulated board of a compiled fleet and wait until each answers with the plan.
pub fn up(fleet: &Fleet, quiet: bool) -> Result<()> {
    fleet.require_emulated("up")?;
    let plan = compiled_plan(fleet)?;
    let hash = plan.hash();
    std::fs::create_dir_all(run_dir(fleet))?;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(fleet.boards.len() as u64) };
    bar.set_style(ProgressStyle::with_template("{spinner} starting [{bar:20}] {pos}/{len} {msg}").unwrap().progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut started = Vec::new();
    for b in &fleet.boards {
        bar.set_message(b.name.clone());
        if let Ok((_, _, h)) = health(b) {
            if h == hash {
                bar.inc(1);
                continue;
            }
            bail!("board {} ({}) is already running another plan ({}); run `legionc down` first", b.name, b.addr(), &h[..16]);
        }
        let bin = binary(fleet, b);
        if !bin.exists() {
            bail!("board {}: no binary at {} (run `legionc compile` without --no-build)", b.name, bin.display());
        }
        let log = std::fs::File::create(log_file(fleet, b))?;
        let model = fleet.out().join(b.slug()).join("model.bin");
        let child = Command::new(&bin)
            .arg("serve")
            .arg("--model")
            .arg(&model)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting board {} ({})", b.name, bin.display()))?;
        std::fs::write(pid_file(fleet, b), format!("{}\n", child.id()))?;
        started.push((b, child.id() as i32));
    }
    // Wait for every started board to answer (it builds its bands before listening).
    let deadline = Instant::now() + fleet.deadline().max(Duration::from_secs(30));
    for (b, pid) in started {
        loop {
            match health(b) {
                Ok((_, _, h)) if h == hash => break,
                Ok((_, _, h)) => bail!("board {} answers with plan {}, expected {}", b.name, &h[..16], &hash[..16]),
                Err(_) if alive(pid) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    let log = std::fs::read_to_string(log_file(fleet, b)).unwrap_or_default();
                    bail!("board {} did not come up: {e:#}\n{}", b.name, log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_with_message("all boards answer");
    Ok(())
}

/// Stop every board of the fleet started by `up`. Returns the names of the boards stopped.
pub fn down(fleet: &Fleet) -> Result<Vec<String>> {
    let mut stopped = Vec::new();
    for b in &fleet.boards {
        let pf = pid_file(fleet, b);
        let Some(pid) = read_pid(&pf) else { continue };
        if alive(pid) {
            // SAFETY: plain signals to a process this fleet started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let t = Instant::now();
            while alive(pid) && t.elapsed() < Duration::from_secs(3) {
                reap(pid);
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            reap(pid);
            stopped.push(b.name.clone());
        }
        let _ = std::fs::remove_file(pf);
    }
    Ok(stopped)
}

fn reap(pid: i32) {
    // SAFETY: non-blocking wait on a child of ours (fails harmlessly for a non-child).
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
}

/// Kill one board's process (tests of failure handling).
pub fn kill_board(fleet: &Fleet, name: &str) -> Result<()> {
    let b = fleet.board(name)?;
    let pid = read_pid(&pid_file(fleet, b)).with_context(|| format!("board {name} has no pid file"))?;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    Ok(())
}

/// Starts a fleet that is not running yet and stops it again when dropped.
pub struct UpGuard<'a> {
    fleet: &'a Fleet,
    started: bool,
}

impl<'a> UpGuard<'a> {
    pub fn start(fleet: &'a Fleet) -> Result<UpGuard<'a>> {
        let plan = compiled_plan(fleet)?.hash();
        let running = fleet.boards.iter().all(|b| health(b).is_ok_and(|(_, _, h)| h == plan));
        if !running {
            // Stop what may be left over, so that a failure here leaves nothing running.
            if let Err(e) = up(fleet, false) {
                let _ = down(fleet);
                return Err(e);
            }
        }
        Ok(UpGuard { fleet, started: !running })
    }
}

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        if self.started {
            let _ = down(self.fleet);
        }
    }
}
