//! scripts/testbed: real hosts (network namespaces with sshd, tc, CPU quotas) on one machine.
//! Root only: LEGION_TESTBED=1 (CI sets it).

use crate::TempDir;
use std::path::Path;
use std::process::Command;

fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{:?}: {}{}", cmd, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn testbed_hosts_answer_over_ssh_with_their_own_limits() {
    if std::env::var("LEGION_TESTBED").map_or(true, |v| v != "1") {
        eprintln!("skipped: set LEGION_TESTBED=1 (root, openssh-server, iproute2)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed");
    let tmp = TempDir::new("testbed");
    let dir = tmp.path("tb");
    let dir_s = dir.to_str().unwrap();
    let yaml = sh(Command::new(&script).args(["up", "3", "--dir", dir_s]));
    let teardown = || {
        let _ = Command::new(&script).args(["down", "--dir", dir_s]).output();
    };
    let result = std::panic::catch_unwind(|| {
        let f = legionc::fleet::parse(&yaml, Path::new("testbed.yaml"), None).unwrap();
        assert_eq!(f.boards.len(), 3);
        for (i, b) in f.boards.iter().enumerate() {
            let legionc::fleet::BoardKind::Ssh { host, user, key_file, .. } = &b.kind else { panic!("{b:?}") };
            let out = sh(Command::new("ssh")
                .arg("-i")
                .arg(key_file.as_ref().unwrap())
                .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={dir_s}/known_hosts"))
                .arg(format!("{user}@{host}"))
                .arg("cat /proc/self/cgroup; ip -4 -o addr show dev eth0"));
            let ns = format!("legion-h{}", i + 1);
            assert!(out.contains(&format!("/{ns}")), "{ns}: the session is not in its CPU cgroup: {out}");
            assert!(out.contains(host.as_str()), "{ns}: {out}");
            // its link is shaped
            let tc = sh(Command::new("tc").args(["qdisc", "show", "dev", &format!("lgn-h{}", i + 1)]));
            assert!(tc.contains("tbf") && tc.contains("100Mbit"), "{tc}");
        }
        // the hosts differ in speed
        let pct: Vec<String> = (1..=3).map(|i| std::fs::read_to_string(dir.join(format!("h{i}/cpu_percent"))).unwrap().trim().to_string()).collect();
        assert_eq!(pct, ["60", "30", "60"]);
        ssh_transport(&dir, &f);
        deployed_fleet(&yaml, &tmp);
        // an unknown host key is refused by a strict client
        let o = Command::new("ssh")
            .args(["-i", &format!("{dir_s}/id_ed25519"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/dev/null", "root@10.213.0.11", "true"])
            .output()
            .unwrap();
        assert!(!o.status.success());
    });
    teardown();
    let ns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!ns.contains("legion-h"), "namespaces left after down: {ns}");
    assert!(!dir.exists());
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// legionc's SSH transport against the testbed's real sshd: each error kind ends within its
/// deadline with its own message.
fn ssh_transport(dir: &Path, f: &legionc::fleet::Fleet) {
    use legionc::ssh::{Connection, SshError, Target};
    use std::time::{Duration, Instant};
    let legionc::fleet::BoardKind::Ssh { host, user, key_file, .. } = &f.boards[0].kind else { panic!() };
    let good = Target {
        board: "h1".into(),
        host: host.clone(),
        port: 22,
        user: user.clone(),
        key_file: key_file.clone(),
        known_hosts: dir.join("known_hosts"),
        accept_new_host_keys: false,
        deadline: Duration::from_secs(5),
    };
    let c = Connection::open(&good).unwrap();
    assert_eq!(c.exec("echo hi").unwrap(), "hi\n");
    // atomic upload, no temporary left behind
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    c.upload(&data, "/tmp/legionc-upload-test", 0o644).unwrap();
    assert_eq!(c.exec("sha256sum < /tmp/legionc-upload-test").unwrap().split_whitespace().next().unwrap(), {
        use sha2::Digest;
        legionc::runtime::plan::hex(&sha2::Sha256::digest(&data))
    });
    assert_eq!(c.exec("ls /tmp | grep -c legionc-tmp || true").unwrap().trim(), "0");
    // a command that fails, one that is killed, one that outlives its deadline
    let e = c.exec("echo oops >&2; exit 3").unwrap_err();
    assert!(matches!(e, SshError::RemoteFailed { .. }) && e.to_string().contains("exited with status 3") && e.to_string().contains("oops"), "{e}");
    let e = c.exec("kill -9 $$").unwrap_err();
    assert!(e.to_string().contains("killed by SIGKILL"), "{e}");
    drop(c);
    let quick = Target { deadline: Duration::from_secs(1), ..good.clone() };
    let c = Connection::open(&quick).unwrap();
    let t = Instant::now();
    let e = c.exec("sleep 30").unwrap_err();
    assert!(matches!(e, SshError::Timeout { .. }) && t.elapsed() < Duration::from_secs(3), "{e} after {:?}", t.elapsed());
    drop(c);
    // wrong key
    let other_key = dir.join("other_key");
    sh(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other_key));
    let e = Connection::open(&Target { key_file: Some(other_key), ..good.clone() }).err().unwrap();
    assert!(matches!(e, SshError::AuthFailed { .. }) && e.to_string().contains("authentication of root failed"), "{e}");
    // unknown host key, then learnt with accept_new_host_keys
    let fresh = dir.join("fresh_known_hosts");
    let e = Connection::open(&Target { known_hosts: fresh.clone(), ..good.clone() }).err().unwrap();
    assert!(matches!(e, SshError::UnknownHost { .. }) && e.to_string().contains("--accept-new-host-keys"), "{e}");
    Connection::open(&Target { known_hosts: fresh.clone(), accept_new_host_keys: true, ..good.clone() }).unwrap();
    assert!(std::fs::read_to_string(&fresh).unwrap().contains(host.as_str()));
    Connection::open(&Target { known_hosts: fresh, ..good.clone() }).unwrap();
    // changed host key: h2's key recorded for h1
    let h2_key = std::fs::read_to_string(dir.join("h2/ssh_host_ed25519_key.pub")).unwrap();
    let forged = dir.join("forged_known_hosts");
    std::fs::write(&forged, format!("{host} {}\n", h2_key.split_whitespace().take(2).collect::<Vec<_>>().join(" "))).unwrap();
    let e = Connection::open(&Target { known_hosts: forged, ..good.clone() }).err().unwrap();
    assert!(matches!(e, SshError::HostKeyMismatch { .. }) && e.to_string().contains("HOST KEY MISMATCH"), "{e}");
    // port closed
    let t = Instant::now();
    let e = Connection::open(&Target { port: 2, ..good.clone() }).err().unwrap();
    assert!(matches!(e, SshError::Unreachable { .. }) && t.elapsed() < Duration::from_secs(5), "{e}");
}

/// The fleet compiled for the testbed's hosts, deployed over SSH, answering a verified frame,
/// redeployed, rolled back and stopped.
fn deployed_fleet(yaml: &str, tmp: &TempDir) {
    use crate::fleet_run::boards_target_dir;
    let yaml = yaml.replace("  target: x86_64-host\n", "  target: x86_64-host\n  runtime_port: 28600\n") + "output: out\n";
    let path = tmp.path("testbed.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let run = |args: &[&str]| {
        let o = crate::legionc().arg(args[0]).arg(&path).args(&args[1..]).output().unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let cache = tmp.path("cache");
    let cache_s = cache.to_str().unwrap().to_string();
    let target = boards_target_dir();
    let compile = |extra: &[&str]| {
        let mut args = vec!["compile", "--target-dir", target.to_str().unwrap(), "--cache-dir", &cache_s];
        args.extend_from_slice(extra);
        run(&args)
    };
    // Cold: the probe measures every board over SSH, records are written.
    let (ok, t) = compile(&[]);
    assert!(ok, "{t}");
    let records = std::fs::read_to_string(cache.join("profiles.jsonl")).unwrap().lines().count();
    assert!(t.contains("SSH connections") && !t.contains(" 0 SSH connections") && !t.contains(" 0 measured now"), "{t}");
    assert!(records > 10, "{records} records");
    // The slower host (30 % quota) is a different identity from the 60 % ones.
    let c = legionc::profile::cache::Cache::open(&cache).unwrap();
    assert_eq!(c.corrupt, 0);
    let facts = std::fs::read_to_string(cache.join("profiles.jsonl")).unwrap();
    assert!(facts.contains("\"cpu_quota\":0.6") && facts.contains("\"cpu_quota\":0.3"), "facts lack the quotas");
    // Warm: nothing measured and no SSH connection made, as the hosts' sshd logs show.
    let logins = || -> usize {
        (1..=3).map(|i| std::fs::read_to_string(tmp.path(&format!("tb/h{i}/sshd.log"))).unwrap_or_default().matches("Accepted publickey").count()).sum()
    };
    let before = logins();
    let (ok, t) = compile(&[]);
    assert!(ok && t.contains(" 0 measured now") && t.contains(" 0 SSH connections"), "{t}");
    let (ok, t) = compile(&["--offline", "--no-build"]);
    assert!(ok, "{t}");
    assert_eq!(logins(), before, "a warm compile logged in to a board");
    assert_eq!(std::fs::read_to_string(cache.join("profiles.jsonl")).unwrap().lines().count(), records);
    // --offline with an empty cache fails without connecting.
    let (ok, t) = run(&["compile", "--no-build", "--offline", "--cache-dir", tmp.path("empty-cache").to_str().unwrap()]);
    assert!(!ok && t.contains("--offline") && t.contains("run once without --offline"), "{t}");
    assert_eq!(logins(), before);
    probe_killed_and_interrupted(&yaml, tmp);
    let (ok, t) = run(&["deploy"]);
    assert!(ok && t.contains("3 boards answer"), "{t}");
    let result = std::panic::catch_unwind(|| {
        let (ok, t) = run(&["run", "--random", "4", "--verify"]);
        assert!(ok && t.contains("verified against tract's single run"), "{t}");
        let (ok, t) = run(&["status"]);
        assert!(ok && t.matches(" up, ").count() == 3, "{t}");
        link_down_during_a_stream(tmp, &path, &compile, &run);
        deploy_with_a_host_unreachable(tmp, &run);
        // a second deploy keeps the first version for rollback
        let (ok, t) = run(&["deploy"]);
        assert!(ok, "{t}");
        let (ok, t) = run(&["rollback"]);
        assert!(ok && t.contains("rolled back"), "{t}");
        let (ok, t) = run(&["run", "--random", "4", "--verify"]);
        assert!(ok, "{t}");
    });
    let (ok, t) = run(&["down"]);
    assert!(ok && t.contains("stopped 3 boards"), "{t}");
    let (ok, t) = run(&["status"]);
    assert!(!ok && t.contains("3 of 3 boards do not answer"), "{t}");
    let _ = std::fs::remove_dir_all(std::path::Path::new(&std::env::var("HOME").unwrap()).join("legion/testbed"));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A probe killed on its board, and Ctrl-C during profiling: each ends with its own message,
/// the records complete before are kept (and sound), no temporary folder is left on the hosts.
fn probe_killed_and_interrupted(yaml: &str, tmp: &TempDir) {
    use std::time::{Duration, Instant};
    // A full-size model, so that profiling lasts long enough to be stopped midway.
    let yaml = yaml.replace("model: vgg16-tiny", "model: vgg16").replace("output: out", "output: out-big");
    assert!(yaml.contains("model: vgg16\n"), "{yaml}");
    let path = tmp.path("big.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let cache = tmp.path("cache-big");
    let lines = || std::fs::read_to_string(cache.join("profiles.jsonl")).map(|t| t.matches("\"kind\":\"segment\"").count()).unwrap_or(0);
    let target = crate::fleet_run::boards_target_dir();
    let probe_dirs = || sh(Command::new("sh").args(["-c", "ls -d /tmp/legion-probe.* 2>/dev/null | wc -l"])).trim().to_string();
    let dirs_before = probe_dirs();
    for (how, want) in [("kill", "the probe crashed"), ("interrupt", "interrupted")] {
        let start = lines();
        let child = crate::legionc()
            .arg("compile")
            .arg(&path)
            .args(["--no-build", "--refresh", "--target-dir", target.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        // a few measurements in
        while lines() < start + 3 {
            assert!(t.elapsed() < Duration::from_secs(300), "no measurements after 300 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        if how == "kill" {
            sh(Command::new("pkill").args(["-KILL", "-f", "/tmp/legion-probe.*/legion-probe run"]));
        } else {
            // SAFETY: signalling our own child.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
        }
        let t = Instant::now();
        let o = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!o.status.success() && text.contains(want), "{how}: {text}");
        assert!(t.elapsed() < Duration::from_secs(30), "{how}: took {:?} to stop", t.elapsed());
        if how == "kill" {
            assert!(text.contains("killed by SIGKILL") && text.contains("board h"), "{text}");
        }
        let c = legionc::profile::cache::Cache::open(&cache).unwrap();
        assert_eq!(c.corrupt, 0, "{how}: a torn record");
        assert!(lines() >= start + 3, "{how}: records lost");
        assert_eq!(probe_dirs(), dirs_before, "{how}: temporary folders left on the hosts");
        let running = Command::new("pgrep").args(["-f", "/tmp/legion-probe.*/legion-probe run"]).output().unwrap();
        assert!(!running.status.success(), "{how}: a probe still runs");
    }
}

/// Deploy with host 2's sshd stopped: it fails before any board is switched, names h2 and says
/// that every board is left as it was; the fleet keeps answering; sshd is started again (in
/// its host's namespace and CPU cgroup) for what follows.
fn deploy_with_a_host_unreachable(tmp: &TempDir, run: &dyn Fn(&[&str]) -> (bool, String)) {
    let h = tmp.path("tb/h2");
    let pid = std::fs::read_to_string(h.join("sshd.pid")).unwrap().trim().to_string();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cgroup = cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(|p| format!("/sys/fs/cgroup{p}/cgroup.procs"));
    sh(Command::new("kill").arg(&pid));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ok, t) = run(&["deploy"]);
    assert!(!ok, "{t}");
    assert!(t.contains("h2") && t.contains("deploy stopped before switching any board"), "{t}");
    for b in ["h1", "h2", "h3"] {
        assert!(t.contains(&format!("  {b}: unchanged (the version it ran before)")), "{b}: {t}");
    }
    let (ok, t) = run(&["run", "--random", "4", "--verify"]);
    assert!(ok && t.contains("verified"), "the fleet stopped answering after a failed deploy: {t}");
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    sh(Command::new("nsenter").arg("--net=/var/run/netns/legion-h2").arg(sshd).arg("-f").arg(h.join("sshd_config")).arg("-E").arg(h.join("sshd.log")));
    std::thread::sleep(std::time::Duration::from_millis(300));
    if let Some(procs) = cgroup {
        let new_pid = std::fs::read_to_string(h.join("sshd.pid")).unwrap();
        let _ = std::fs::write(procs, new_pid.trim());
    }
}

/// A worker's link taken down (in its namespace) during a stream: the coordinator's heartbeat
/// finds it lost, the frames go on on the fallback without it, every one verified; the link
/// back up, it is taken back.
fn link_down_during_a_stream(tmp: &TempDir, yaml: &Path, compile: &dyn Fn(&[&str]) -> (bool, String), run: &dyn Fn(&[&str]) -> (bool, String)) {
    let plan = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(tmp.path("out/plan.json")).unwrap()).unwrap() };
    let mut plan = plan();
    if plan["fallbacks"].as_array().is_none_or(|f| f.is_empty()) {
        // The plan leaves every worker out (the tiny model on these hosts): rows in proportion
        // to the hosts' speeds give every host work.
        let (ok, t) = compile(&["--strategy", "proportional"]);
        assert!(ok, "{t}");
        let (ok, t) = run(&["deploy"]);
        assert!(ok, "{t}");
        plan = serde_json::from_slice(&std::fs::read(tmp.path("out/plan.json")).unwrap()).unwrap();
    }
    let lost = plan["fallbacks"][0]["lost"][0].as_u64().expect("a fallback plan") as usize;
    let (name, ns) = (format!("h{}", lost + 1), format!("legion-h{}", lost + 1));
    let yaml = yaml.to_path_buf();
    // 100 frames arriving at 20 per second: a stream of 5 s.
    let runner = std::thread::spawn(move || crate::legionc().arg("run").arg(&yaml).args(["--random", "4", "--frames", "100", "--rate", "20", "--verify-every", "1", "--json", "--no-baseline"]).output().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    sh(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "down"]));
    let down_at = now();
    std::thread::sleep(std::time::Duration::from_millis(2000));
    sh(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "up"]));
    let o = runner.join().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["answered"].as_u64(), j["verified"].as_u64()), (Some(100), Some(100)), "{log}");
    let changes = j["plan_changes"].as_array().unwrap();
    // (A board the coordinator found not up yet after the deploy may be lost for the first
    // frames: only the changes after the link went down count here.)
    let after: Vec<&serde_json::Value> = changes.iter().filter(|c| c["lost_at_unix_s"].as_f64().is_none_or(|t| t >= down_at)).collect();
    let c = *after.iter().find(|c| c["lost"] == serde_json::json!([name])).unwrap_or_else(|| panic!("no frame on the fallback without {name}: {log}"));
    assert!(changes.last().is_some_and(|c| c["lost"] == serde_json::json!([])), "{name} not taken back once its link was up: {log}");
    eprintln!(
        "testbed: {name}'s link down at {down_at:.3}: found lost {:.0} ms later, first frame on the fallback answered {:.0} ms later; plan changes {}",
        (c["lost_at_unix_s"].as_f64().unwrap() - down_at) * 1e3,
        (c["answered_unix_s"].as_f64().unwrap() - down_at) * 1e3,
        serde_json::to_string(&j["plan_changes"]).unwrap()
    );
}
