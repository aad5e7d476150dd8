//! fleet.yaml: every malformed case gets its own clear error naming the file, line and field.

use crate::{legionc, TempDir};
use legionc::fleet;
use std::path::Path;

const GOOD: &str = "\
fleet: t
model: vgg16-tiny
coordinator: a
defaults:
  user: legion
  target: raspberry-pi-4
network:
  bandwidth_mbps: 100
  latency_ms: 1
boards:
  - name: a
    emulated: firefly-rk3399
  - name: b
    emulated: {speed: 0.5, link: {bandwidth_mbps: 50, latency_ms: 2}}
  - name: c
    host: 10.0.0.3
    port: 2222
";

fn parse(text: &str) -> anyhow::Result<fleet::Fleet> {
    fleet::parse(text, Path::new("fleet.yaml"), None)
}

fn err(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

#[test]
fn a_good_fleet_resolves_defaults_and_targets() {
    let f = parse(GOOD).unwrap();
    assert_eq!(f.boards.len(), 3);
    let a = &f.boards[0];
    assert!(a.is_emulated());
    assert_eq!(a.nominal_speed(), 0.094);
    assert_eq!(a.link.bandwidth_mbps, 100.0, "the fleet's network overrides the twin's link");
    let b = &f.boards[1];
    assert_eq!((b.nominal_speed(), b.link.bandwidth_mbps, b.link.latency_ms), (0.5, 50.0, 2.0));
    match &f.boards[2].kind {
        fleet::BoardKind::Ssh { host, user, port, .. } => assert_eq!((host.as_str(), user.as_str(), *port), ("10.0.0.3", "legion", 2222)),
        k => panic!("{k:?}"),
    }
    assert_eq!(f.boards[2].triple(), "aarch64-unknown-linux-gnu");
    assert_eq!(f.boards[1].runtime_port, 27001);
    assert_eq!(f.output, Path::new("out/t"));
}

#[test]
fn unknown_key() {
    let e = err(&GOOD.replace("    port: 2222", "    prot: 2222"));
    assert!(e.starts_with("fleet.yaml:17") && e.contains("unknown field `prot`"), "{e}");
}

#[test]
fn wrong_type() {
    let e = err(&GOOD.replace("bandwidth_mbps: 100", "bandwidth_mbps: fast"));
    assert!(e.starts_with("fleet.yaml:8") && e.contains("bandwidth_mbps") && e.contains("invalid type"), "{e}");
}

#[test]
fn missing_board() {
    let e = err(&GOOD.replace("coordinator: a", "coordinator: z"));
    assert!(e.starts_with("fleet.yaml:3") && e.contains("coordinator") && e.contains("no board is named 'z'"), "{e}");
    let e = err("fleet: t\nmodel: vgg16-tiny\nboards: []\n");
    assert!(e.starts_with("fleet.yaml:3") && e.contains("at least one board"), "{e}");
    let e = err("fleet: t\nmodel: vgg16-tiny\n");
    assert!(e.contains("missing field `boards`"), "{e}");
}

#[test]
fn duplicate_board_name() {
    let e = err(&GOOD.replace("  - name: b\n", "  - name: a\n"));
    assert!(e.starts_with("fleet.yaml:13") && e.contains("duplicate board name 'a'"), "{e}");
}

#[test]
fn unknown_target() {
    let e = err(&GOOD.replace("emulated: firefly-rk3399", "emulated: firefly-rk3388"));
    assert!(e.starts_with("fleet.yaml:12") && e.contains("unknown target 'firefly-rk3388'") && e.contains("odroid-xu4"), "{e}");
    let e = err(&GOOD.replace("  target: raspberry-pi-4", "  target: pi5"));
    assert!(e.starts_with("fleet.yaml:6") && e.contains("unknown target 'pi5'"), "{e}");
}

#[test]
fn board_needs_host_or_emulated_and_no_password() {
    let e = err(&GOOD.replace("    host: 10.0.0.3\n", ""));
    assert!(e.starts_with("fleet.yaml:15") && e.contains("missing field 'host'"), "{e}");
    let e = err(&GOOD.replace("    port: 2222", "    password: hunter2"));
    assert!(e.contains("unknown field `password`"), "{e}");
}

#[test]
fn names_and_hosts_that_would_break_generated_code_are_refused() {
    let e = err(&GOOD.replace("  - name: b\n", "  - name: b\"x\n"));
    assert!(e.starts_with("fleet.yaml:13") && e.contains("not a valid name"), "{e}");
    let e = err(&GOOD.replace("host: 10.0.0.3", "host: \"10.0.0.3\\\"; rm\""));
    assert!(e.contains("board 'c': host") && e.contains("not a host name"), "{e}");
    let e = err(&GOOD.replace("fleet: t", "fleet: my fleet"));
    assert!(e.starts_with("fleet.yaml:1") && e.contains("field 'fleet'"), "{e}");
    let e = err(&GOOD.replace("  target: raspberry-pi-4", "  target: raspberry-pi-4\n  runtime_port: 65534"));
    assert!(e.contains("past port 65535"), "{e}");
}

#[test]
fn the_cli_names_the_file_and_writes_nothing() {
    let dir = TempDir::new("badfleet");
    let path = dir.path("bad.yaml");
    std::fs::write(&path, GOOD.replace("coordinator: a", "coordinator: z")).unwrap();
    let out = legionc().arg("compile").arg(&path).arg("--out").arg(dir.path("out")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("bad.yaml:3") && e.contains("no board is named 'z'"), "{e}");
    assert!(!dir.path("out").exists(), "a failed compile wrote output");
}

#[test]
fn every_target_file_parses() {
    let t = fleet::targets().unwrap();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["firefly-rk3399", "odroid-xu4", "raspberry-pi-4", "x86_64-host"]);
    assert!(t.iter().all(|t| t.emulated.speed > 0.0 && t.emulated.link.bandwidth_mbps > 0.0));
}

/// An emulated board computes on one thread: `defaults.threads` is for real boards, and an
/// emulated board asking for more is refused (tract's other threads would compute uncounted).
#[test]
fn emulated_boards_compute_on_one_thread() {
    let f = parse(&GOOD.replace("  target: raspberry-pi-4\n", "  target: raspberry-pi-4\n  threads: 3\n")).unwrap();
    assert_eq!(f.boards.iter().map(|b| b.threads).collect::<Vec<_>>(), vec![1, 1, 3]);
    let e = err(&GOOD.replace("    emulated: firefly-rk3399\n", "    emulated: firefly-rk3399\n    threads: 2\n"));
    assert!(e.starts_with("fleet.yaml:11") && e.contains("board 'a': threads: 2") && e.contains("one thread"), "{e}");
}

/// Image normalisation takes one mean and one std per RGB channel: anything else is refused
/// at parse time, naming the field (a short list would have panicked on the first image).
#[test]
fn mean_and_std_have_three_usable_values() {
    let full = GOOD.replace("model: vgg16-tiny\n", "model:\n  source: vgg16-tiny\n  mean: [0.5, 0.5]\n  std: [0.2, 0.2, 0.2]\n");
    let e = err(&full);
    assert!(e.starts_with("fleet.yaml:4") && e.contains("model.mean") && e.contains("2 values"), "{e}");
    let e = err(&full.replace("mean: [0.5, 0.5]", "mean: [0.5, 0.5, 0.5]").replace("std: [0.2, 0.2, 0.2]", "std: [0.2, 0.0, 0.2]"));
    assert!(e.contains("model.std") && e.contains("positive"), "{e}");
    assert!(parse(&full.replace("mean: [0.5, 0.5]", "mean: [0.5, 0.5, 0.5]")).is_ok());
}

/// A board's memory: its target's RAM less the target's reserve, or what the fleet gives it;
/// nonsense refused naming the board.
#[test]
fn memory_comes_from_the_target_or_the_board() {
    let f = parse(GOOD).unwrap();
    let t = f.boards[0].target.as_ref().unwrap();
    assert_eq!(t.name, "firefly-rk3399");
    assert_eq!(f.boards[0].memory_mb, t.memory_mb);
    assert_eq!(f.boards[0].memory_limit_mb(), Some(t.memory_mb.unwrap() - t.memory_reserve_mb));
    assert!(t.memory_reserve_mb > 0.0);
    let given = GOOD.replace("    emulated: firefly-rk3399\n", "    emulated: firefly-rk3399\n    memory_mb: 768\n");
    let f = parse(&given).unwrap();
    assert_eq!(f.boards[0].memory_limit_mb(), Some(768.0 - t.memory_reserve_mb));
    let e = err(&GOOD.replace("    emulated: firefly-rk3399\n", "    emulated: firefly-rk3399\n    memory_mb: -5\n"));
    assert!(e.contains("board 'a'") && e.contains("memory_mb must be positive"), "{e}");
    // Every target of a board states its RAM and reserve.
    for t in fleet::targets().unwrap().into_iter().filter(|t| t.name != "x86_64-host") {
        assert!(t.memory_mb.is_some_and(|m| m > t.memory_reserve_mb), "{}", t.name);
    }
}

/// `objective`: latency by default, `throughput`, or `{latency_at_fps: R}`; the same words on
/// the command line; nonsense refused naming the field.
#[test]
fn the_objective_is_latency_throughput_or_a_rate() {
    use legionc::fleet::Objective;
    assert_eq!(parse(GOOD).unwrap().objective, Objective::Latency);
    assert_eq!(parse(&format!("objective: throughput\n{GOOD}")).unwrap().objective, Objective::Throughput);
    assert_eq!(parse(&format!("objective: {{latency_at_fps: 2.5}}\n{GOOD}")).unwrap().objective, Objective::LatencyAtFps(2.5));
    let e = err(&format!("objective: fastest\n{GOOD}"));
    assert!(e.contains("fleet.yaml") && e.contains("objective"), "{e}");
    let e = err(&format!("objective: {{latency_at_fps: -1}}\n{GOOD}"));
    assert!(e.contains("fleet.yaml") && e.contains("latency_at_fps") && e.contains("positive"), "{e}");
    for (text, want) in [("latency", Objective::Latency), ("throughput", Objective::Throughput), ("latency_at_fps=2", Objective::LatencyAtFps(2.0))] {
        assert_eq!(text.parse::<Objective>().unwrap(), want);
        assert_eq!(want.to_string().parse::<Objective>().unwrap(), want, "Display and FromStr agree");
    }
    for bad in ["fast", "latency_at_fps=0", "latency_at_fps=x"] {
        assert!(bad.parse::<Objective>().unwrap_err().contains("unknown objective"), "{bad}");
    }
}
