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
