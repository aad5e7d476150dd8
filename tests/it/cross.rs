//! Board crates cross-built for the paper's boards (aarch64, armv7) run under qemu-user and
//! answer a distributed frame that matches tract. Needs the cross toolchains: LEGION_CROSS=1
//! (CI installs them; see .ci/run).

use crate::fleet_run::{cross_target_dir, TestFleet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn cross_built_boards_answer_under_qemu() {
    if std::env::var("LEGION_CROSS").map_or(true, |v| v != "1") {
        eprintln!("skipped: set LEGION_CROSS=1 (needs gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, qemu-user and the rustup targets)");
        return;
    }
    let f = TestFleet::write(
        "cross",
        "fleet: cross\nmodel: vgg16-tiny\nstrategy: proportional\ndefaults:\n  user: legion\n  runtime_port: 28500\nnetwork:\n  bandwidth_mbps: 1000\n  latency_ms: 0.1\n  deadline_s: 120\noutput: out\nboards:\n  - name: rk\n    host: 127.0.0.1\n    target: firefly-rk3399\n  - name: xu4\n    host: 127.0.0.1\n    target: odroid-xu4\n",
    );
    // Built at opt-level 0: tract cross-builds in about a quarter of the time it takes at
    // opt-level 1 (the critical path of CI's tests), and the tiny model still answers in well
    // under a second under qemu.
    let o = crate::legionc()
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .args(["compile", f.yaml.to_str().unwrap(), "--target-dir", cross_target_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let fleet = f.fleet();
    let mut children = Kill(vec![]);
    for b in &fleet.boards {
        let bin = legionc::cargo_build::installed_binary(&fleet, b);
        let file = Command::new("file").arg(&bin).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let arch = if b.name == "rk" { "aarch64" } else { "ARM" };
        assert!(file.is_empty() || file.contains(arch), "{} is not an {arch} binary: {file}", bin.display());
        let qemu = &b.target.as_ref().unwrap().qemu;
        let child = Command::new(&qemu[0])
            .args(&qemu[1..])
            .arg(&bin)
            .arg("serve")
            .arg("--key")
            .arg(legionc::deploy::key_path(&fleet))
            // The targets' big cores (CPUs 4–7) are not this machine's.
            .args(["--cores", "none"])
            .arg("--model")
            .arg(f.out().join(b.slug()).join("model.bin"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting qemu");
        children.0.push(child);
    }
    let t = Instant::now();
    for b in &fleet.boards {
        while legionc::deploy::health(&fleet, b).is_err() {
            assert!(t.elapsed() < Duration::from_secs(120), "board {} under qemu never answered", b.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // No baseline: it would be measured on a board over SSH, and these boards have no sshd.
    let o = f.legionc(&["run", "--random", "5", "--verify", "--no-baseline"]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    assert!(text.contains("verified against tract's single run"), "{text}");
    eprintln!("{text}");
}
