//! Starting and stopping a compiled fleet. Emulated boards are local processes: their pid and
//! log live under `OUT/run/`.

use crate::fleet::{Board, Fleet};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use legion_runtime::plan::Plan;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::codegen::compiled_plan;

use crate::cargo_build::installed_binary as binary;

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
    // No signal: only checks that the process exists.
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Where the fleet's key lives: `OUT/fleet.key`, mode 0600 (never in plan.json, the plan
/// hash, the rendered sources or a log).
pub fn key_path(fleet: &Fleet) -> PathBuf {
    fleet.out().join("fleet.key")
}

/// The fleet's key, created (random, mode 0600) if the output directory has none yet. A key
/// kept from an earlier compile is kept: running boards keep answering.
pub fn ensure_key(fleet: &Fleet) -> Result<legion_runtime::wire::Key> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = key_path(fleet);
    if path.exists() {
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).with_context(|| format!("making {} private", path.display()))?;
        }
        return legion_runtime::wire::Key::read(&path);
    }
    let key = legion_runtime::wire::Key::generate()?;
    std::fs::create_dir_all(fleet.out())?;
    let tmp = path.with_extension(format!("key.{}.tmp~", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, format!("{}\n", key.to_hex()).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok(key)
}

/// The fleet's key (`legionc compile` creates it).
pub fn fleet_key(fleet: &Fleet) -> Result<legion_runtime::wire::Key> {
    let path = key_path(fleet);
    if !path.exists() {
        bail!("fleet {} has no key at {} (run `legionc compile`)", fleet.name, path.display());
    }
    legion_runtime::wire::Key::read(&path)
}

/// Is a board answering with this plan? (name, runtime version, plan hash)
pub fn health(fleet: &Fleet, b: &Board) -> Result<(String, String, String)> {
    let key = fleet_key(fleet)?;
    legion_runtime::board::hello(&b.addr(), &key, Duration::from_secs(2)).with_context(|| format!("board {} ({})", b.name, b.addr()))
}

/// Which boards answer, with which plan: a line per board, and how many do not answer.
pub fn status(fleet: &Fleet) -> (String, usize) {
    let hashes = compiled_plan(fleet).ok().and_then(|p| fleet.board_hashes(&p).ok());
    let mut s = String::new();
    let mut down = 0;
    for (i, b) in fleet.boards.iter().enumerate() {
        match health(fleet, b) {
            Ok((_, version, hash)) => {
                let same = hashes.as_ref().is_some_and(|h| h[i] == hash);
                s += &format!("{:<16} {:<22} up, runtime {version}, plan {}{}\n", b.name, b.addr(), &hash[..16], if same { "" } else { " (not the compiled plan)" });
            }
            Err(_) => {
                down += 1;
                s += &format!("{:<16} {:<22} down\n", b.name, b.addr());
            }
        }
    }
    (s, down)
}

/// Stop the fleet: real boards over SSH, emulated ones started by `up`. Returns the names of
/// the boards stopped.
pub fn down_all(fleet: &Fleet) -> Result<Vec<String>> {
    let mut stopped = if fleet.boards.iter().any(|b| !b.is_emulated()) { down_real(fleet, false)? } else { vec![] };
    stopped.extend(down(fleet)?);
    Ok(stopped)
}

/// Start every emulated board of a compiled fleet and wait until each answers with the plan.
/// A board that runs another plan or configuration (and that `up` started) is restarted:
/// returns a line for each.
pub fn up(fleet: &Fleet, quiet: bool) -> Result<Vec<String>> {
    fleet.require_emulated("up")?;
    up_emulated(fleet, quiet)
}

fn up_emulated(fleet: &Fleet, quiet: bool) -> Result<Vec<String>> {
    up_emulated_with(fleet, &current_plan(fleet)?, &Launch::Compiled, quiet)
}

/// The compiled plan, if it was compiled for the fleet as fleet.yaml describes it now.
pub fn current_plan(fleet: &Fleet) -> Result<Plan> {
    let plan = compiled_plan(fleet)?;
    if plan.deployment.as_ref() != Some(&fleet.deployment()) {
        bail!(
            "{} was compiled for another configuration of fleet {} (addresses, ports, links, threads, twin speeds, coordinator or deadline differ from {}): run `legionc compile`",
            fleet.out().join("plan.json").display(),
            fleet.name,
            fleet.file.display()
        );
    }
    Ok(plan)
}

/// How an emulated board process gets its plan. The boards of `Compiled` (`legionc up`) run
/// on after legionc ends; the other two are a benchmark's, and end with the thread that started
/// them, so that an interrupted or killed `bench` or `suite` leaves no board running.
pub enum Launch<'a> {
    /// The compiled board binaries with their own model files (the compiled plan).
    Compiled,
    /// The compiled board binaries with another plan: `plan.json` and a model file holding
    /// every weight, so no rebuild per plan.
    PlanFile { plan: &'a Path, model: &'a Path },
    /// The generic board binary (`legion-board`), the fleet and plan of each board from a JSON
    /// configuration written into `OUT/run/`, and a model file holding every weight, with its
    /// sha256 (which the board checks): any emulated fleet without a compile.
    Generic { exe: &'a Path, model: &'a Path, model_sha: &'a str },
}

/// Start the emulated boards with `plan`, launched as `launch` says.
pub fn up_emulated_with(fleet: &Fleet, plan: &Plan, launch: &Launch, quiet: bool) -> Result<Vec<String>> {
    let hashes = fleet.board_hashes(plan)?;
    let mut restarted = Vec::new();
    std::fs::create_dir_all(run_dir(fleet))?;
    // Benchmarks start fleets that were never compiled: they get their key here.
    ensure_key(fleet)?;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(fleet.boards.len() as u64) };
    bar.set_style(ProgressStyle::with_template("{spinner} starting [{bar:20}] {pos}/{len} {msg}").unwrap().progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut started = Vec::new();
    for (i, b) in fleet.boards.iter().enumerate().filter(|(_, b)| b.is_emulated()) {
        let hash = &hashes[i];
        bar.set_message(b.name.clone());
        if let Ok((_, _, h)) = health(fleet, b) {
            if &h == hash {
                bar.inc(1);
                continue;
            }
            // Another plan, or this plan with another configuration: restart it if it is the
            // process `up` started for this board.
            if !stop_board(fleet, b)? {
                bail!("board {} ({}) is already running another plan ({}), and not as a process `legionc up` started: stop it first", b.name, b.addr(), &h[..16]);
            }
            restarted.push(format!("board {}: was running plan {} (another plan or configuration), restarted with {}", b.name, &h[..16], &hash[..16]));
        }
        let bin = match launch {
            Launch::Generic { exe, .. } => exe.to_path_buf(),
            _ => binary(fleet, b),
        };
        if !bin.exists() {
            bail!("board {}: no binary at {} (run `legionc compile` without --no-build)", b.name, bin.display());
        }
        let log = std::fs::File::create(log_file(fleet, b))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg("--key").arg(std::path::absolute(key_path(fleet))?);
        match launch {
            Launch::Compiled => cmd.arg("--model").arg(fleet.out().join(b.slug()).join("model.bin")),
            Launch::PlanFile { plan, model } => cmd.arg("--model").arg(model).arg("--plan").arg(plan),
            Launch::Generic { model, model_sha, .. } => {
                let (lane, lane_plan, index) = fleet.board_lane(plan, i)?;
                let cfg = run_dir(fleet).join(format!("{}.board.json", b.slug()));
                crate::write_atomic(&cfg, &serde_json::to_vec_pretty(&crate::codegen::board_config(&lane, &lane_plan, index, model_sha))?)?;
                cmd.arg("--config").arg(cfg).arg("--model").arg(model)
            }
        };
        if !matches!(launch, Launch::Compiled) {
            // SAFETY: between fork and exec only prctl(2) is called, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from));
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting board {} ({})", b.name, bin.display()))?;
        crate::write_atomic(&pid_file(fleet, b), format!("{}\n", child.id()).as_bytes())?;
        started.push((i, b, child.id() as i32));
    }
    // Wait for every started board to answer (it builds its bands before listening).
    let deadline = Instant::now() + fleet.deadline().max(Duration::from_secs(30));
    for (i, b, pid) in started {
        let hash = &hashes[i];
        loop {
            match health(fleet, b) {
                Ok((_, _, h)) if &h == hash => break,
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
    Ok(restarted)
}

/// Is process `pid` board `b`'s runtime as `up` starts it: `serve` with this fleet's key? The
/// key's path is compared as a file (a relative one from the process's working directory), so
/// the answer does not depend on how either side named the fleet.
fn is_board_process(fleet: &Fleet, pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&c| c == 0).collect();
    let Ok(key) = std::fs::canonicalize(key_path(fleet)) else { return false };
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    let same = |given: &[u8]| std::fs::canonicalize(cwd.join(Path::new(std::ffi::OsStr::from_bytes(given)))).is_ok_and(|p| p == key);
    args.get(1) == Some(&&b"serve"[..]) && args.windows(2).any(|w| w[0] == b"--key" && same(w[1]))
}

/// Stop board `b` if its pid file names its running process; the pid file is removed either
/// way. Whether a process was stopped. A pid that is now another process is left alone.
fn stop_board(fleet: &Fleet, b: &Board) -> Result<bool> {
    let pf = pid_file(fleet, b);
    let Some(pid) = read_pid(&pf) else { return Ok(false) };
    let ours = alive(pid) && is_board_process(fleet, pid);
    if ours {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let t = Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(3) {
            reap(pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) && is_board_process(fleet, pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        reap(pid);
    }
    let _ = std::fs::remove_file(pf);
    Ok(ours)
}

/// Stop every board of the fleet started by `up`. Returns the names of the boards stopped.
/// A pid file whose process is gone, or is now some other program, is removed without a
/// signal.
pub fn down(fleet: &Fleet) -> Result<Vec<String>> {
    let mut stopped = Vec::new();
    for b in &fleet.boards {
        if stop_board(fleet, b)? {
            stopped.push(b.name.clone());
        }
    }
    Ok(stopped)
}

fn reap(pid: i32) {
    // Non-blocking; fails harmlessly for a process that is not our child.
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

/// Kill one board's process (tests of failure handling).
pub fn kill_board(fleet: &Fleet, name: &str) -> Result<()> {
    let b = fleet.board(name)?;
    let pid = read_pid(&pid_file(fleet, b)).with_context(|| format!("board {name} has no pid file"))?;
    kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("killing board {name} (pid {pid})"))
}

/// Starts a fleet that is not running yet and stops it again when dropped.
pub struct UpGuard<'a> {
    fleet: &'a Fleet,
    started: bool,
}

impl<'a> UpGuard<'a> {
    pub fn start(fleet: &'a Fleet) -> Result<UpGuard<'a>> {
        let hashes = fleet.board_hashes(&current_plan(fleet)?)?;
        let running = fleet.boards.iter().zip(&hashes).all(|(b, want)| health(fleet, b).is_ok_and(|(_, _, h)| &h == want));
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

// ---------------------------------------------------------------- real boards over SSH

use crate::parallel;
use crate::ssh::{shell_quote, Connection};

/// Folder of a board's runtime on the board, relative to the user's home.
pub fn remote_dir(fleet: &Fleet, b: &Board) -> String {
    format!("legion/{}/{}", crate::fleet::slug(&fleet.name), b.slug())
}

/// Run `job` for every real board, at most [`parallel::AT_ONCE`] at once, one progress line
/// per board.
fn each_real_board(fleet: &Fleet, what: &str, quiet: bool, job: &(dyn Fn(&Board, &ProgressBar) -> Result<()> + Sync)) -> Result<()> {
    let boards: Vec<&Board> = fleet.boards.iter().filter(|b| !b.is_emulated()).collect();
    let bar = |b: &&Board| ProgressBar::new_spinner().with_style(parallel::style("{spinner} {prefix:<14} {msg}")).with_prefix(b.name.clone());
    parallel::each(&boards, what, quiet, &bar, &|b, bar| job(b, bar))
}

/// The shell command that (re)starts a board's runtime detached, its log beside it.
fn start_command(dir: &str) -> String {
    let d = shell_quote(dir);
    format!(
        "cd {d} && if [ -f board.pid ]; then kill $(cat board.pid) 2>/dev/null; sleep 0.2; fi; \
         nohup setsid ./legion-board serve --model model.bin > board.log 2>&1 < /dev/null & echo $! > board.pid"
    )
}

/// Wait until a board answers, with plan `hash` if one is given.
fn wait_healthy(fleet: &Fleet, b: &Board, hash: Option<&str>, deadline: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        match health(fleet, b) {
            Ok((_, _, h)) if hash.is_none_or(|want| h == want) => return Ok(()),
            Ok((_, _, h)) => {
                if t.elapsed() > deadline {
                    bail!("board {} answers with plan {}, not {}", b.name, &h[..16.min(h.len())], &hash.unwrap_or_default()[..16]);
                }
            }
            Err(e) if t.elapsed() > deadline => return Err(e.context(format!("board {} did not come up within {:.0} s", b.name, deadline.as_secs_f64()))),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deploy the compiled fleet, all or nothing. First every real board receives its binary,
/// model and key beside the ones it runs (`*.new`); if any upload fails, the staged files are
/// removed and every board keeps the version it runs. Then each board switches (the current
/// files kept as `*.prev` for `rollback`), restarts and must answer with the plan; if one
/// fails, the boards already switched are rolled back. The error names the board that failed
/// and the state every board is left in. Emulated boards of the fleet are started locally.
pub fn deploy(fleet: &Fleet, accept_new_host_keys: bool, quiet: bool) -> Result<()> {
    let plan = current_plan(fleet)?;
    let hashes = fleet.board_hashes(&plan)?;
    let hash_of = |b: &Board| hashes[fleet.boards.iter().position(|x| x.name == b.name).expect("a board of the fleet")].clone();
    let reals: Vec<&Board> = fleet.boards.iter().filter(|b| !b.is_emulated()).collect();
    let connect = |b: &Board| connect(fleet, b, accept_new_host_keys);
    // 1. Stage.
    let staged = std::sync::Mutex::new(Vec::<String>::new());
    let staging = each_real_board(fleet, "upload", quiet, &|b, bar| {
        bar.set_message("connecting");
        let c = connect(b)?;
        let dir = remote_dir(fleet, b);
        c.exec(&format!("mkdir -p {}", shell_quote(&dir)))?;
        staged.lock().unwrap().push(b.name.clone());
        let bin = std::fs::read(binary(fleet, b)).with_context(|| format!("board {}: no built binary (run `legionc compile`)", b.name))?;
        bar.set_message(format!("uploading binary ({:.1} MB)", bin.len() as f64 / 1e6));
        c.upload(&bin, &format!("{dir}/legion-board.new"), 0o755)?;
        let model = std::fs::read(fleet.out().join(b.slug()).join("model.bin"))?;
        bar.set_message(format!("uploading model ({:.1} MB)", model.len() as f64 / 1e6));
        c.upload(&model, &format!("{dir}/model.bin.new"), 0o644)?;
        bar.set_message("uploading the fleet key");
        let key = std::fs::read(key_path(fleet)).with_context(|| format!("board {}: no fleet key (run `legionc compile`)", b.name))?;
        c.upload(&key, &format!("{dir}/fleet.key.new"), 0o600)?;
        Ok(())
    });
    if let Err(e) = staging {
        let staged = staged.into_inner().unwrap();
        let _ = each_real_board(fleet, "cleanup", true, &|b, _| {
            if staged.contains(&b.name) {
                remove_staged(fleet, &connect(b)?, b)?;
            }
            Ok(())
        });
        let states: Vec<String> = reals.iter().map(|b| format!("  {}: unchanged (the version it ran before)", b.name)).collect();
        return Err(e.context(format!("deploy stopped before switching any board; every board is left as it was:\n{}", states.join("\n"))));
    }
    // 2. Switch.
    let switched = std::sync::Mutex::new(Vec::<String>::new());
    let switching = each_real_board(fleet, "switch", quiet, &|b, bar| {
        let c = connect(b)?;
        let dir = remote_dir(fleet, b);
        let d = shell_quote(&dir);
        bar.set_message("switching");
        c.exec(&format!(
            "cd {d} && for f in legion-board model.bin fleet.key; do if [ -f $f ]; then cp -p $f $f.prev; fi; done && \
             mv -f legion-board.new legion-board && mv -f model.bin.new model.bin && mv -f fleet.key.new fleet.key"
        ))?;
        switched.lock().unwrap().push(b.name.clone());
        bar.set_message("starting");
        c.exec(&start_command(&dir))?;
        bar.set_message("health check");
        wait_healthy(fleet, b, Some(&hash_of(b)), fleet.deadline().max(Duration::from_secs(30))).map_err(|e| {
            let log = c.exec(&format!("tail -n 5 {d}/board.log")).unwrap_or_default();
            e.context(format!("its log ends with:\n{log}"))
        })
    });
    if let Err(e) = switching {
        let switched = switched.into_inner().unwrap();
        let back = std::sync::Mutex::new(std::collections::HashMap::<String, String>::new());
        let _ = each_real_board(fleet, "rollback", quiet, &|b, _| {
            let state = if switched.contains(&b.name) {
                match restore_previous(fleet, b, accept_new_host_keys) {
                    Ok(()) => "rolled back to the version it ran before".to_string(),
                    Err(r) => format!("ROLLBACK FAILED, on the new version or stopped: {r:#}"),
                }
            } else {
                let _ = connect(b).and_then(|c| remove_staged(fleet, &c, b));
                "unchanged (the version it ran before)".to_string()
            };
            back.lock().unwrap().insert(b.name.clone(), state);
            Ok(())
        });
        let back = back.into_inner().unwrap();
        let states: Vec<String> = reals.iter().map(|b| format!("  {}: {}", b.name, back.get(&b.name).map_or("unknown", String::as_str))).collect();
        return Err(e.context(format!("deploy failed while switching; the boards are left:\n{}", states.join("\n"))));
    }
    if fleet.boards.iter().any(|b| b.is_emulated()) {
        for line in up_emulated(fleet, quiet)? {
            if !quiet {
                eprintln!("{line}");
            }
        }
    }
    Ok(())
}

/// An SSH session with real board `b`.
fn connect(fleet: &Fleet, b: &Board, accept_new_host_keys: bool) -> Result<Connection> {
    Ok(Connection::open(&fleet.ssh_target(b, accept_new_host_keys).context("not an SSH board")?)?)
}

/// Remove what `deploy` staged on board `b` (`*.new`).
fn remove_staged(fleet: &Fleet, c: &Connection, b: &Board) -> Result<()> {
    c.exec(&format!("cd {} && rm -f legion-board.new model.bin.new fleet.key.new", shell_quote(&remote_dir(fleet, b))))?;
    Ok(())
}

/// Put back a real board's previous binary, model and key and restart it.
fn restore_previous(fleet: &Fleet, b: &Board, accept_new_host_keys: bool) -> Result<()> {
    let c = connect(fleet, b, accept_new_host_keys)?;
    let dir = remote_dir(fleet, b);
    let d = shell_quote(&dir);
    c.exec(&format!(
        "cd {d} && [ -f legion-board.prev ] && [ -f model.bin.prev ] || {{ echo 'no previous version to roll back to' >&2; exit 1; }}; \
         mv -f legion-board.prev legion-board && mv -f model.bin.prev model.bin && if [ -f fleet.key.prev ]; then mv -f fleet.key.prev fleet.key; fi"
    ))?;
    c.exec(&start_command(&dir))?;
    // The previous version runs the previous plan, which this side no longer knows.
    wait_healthy(fleet, b, None, fleet.deadline().max(Duration::from_secs(30))).context("after the rollback")
}

/// Put back the previous binary, model and key of every real board and restart it.
pub fn rollback(fleet: &Fleet, accept_new_host_keys: bool, quiet: bool) -> Result<()> {
    each_real_board(fleet, "rollback", quiet, &|b, bar| {
        bar.set_message("restoring the previous version");
        restore_previous(fleet, b, accept_new_host_keys)
    })
}

/// Stop the runtime of every real board. Returns their names.
pub fn down_real(fleet: &Fleet, quiet: bool) -> Result<Vec<String>> {
    each_real_board(fleet, "down", quiet, &|b, _| {
        let c = Connection::open(&fleet.ssh_target(b, false).unwrap())?;
        let d = shell_quote(&remote_dir(fleet, b));
        c.exec(&format!("cd {d} 2>/dev/null && [ -f board.pid ] && kill $(cat board.pid) 2>/dev/null; rm -f board.pid; true"))?;
        Ok(())
    })?;
    Ok(fleet.boards.iter().filter(|b| !b.is_emulated()).map(|b| b.name.clone()).collect())
}
