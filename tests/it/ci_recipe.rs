//! The CI recipe of `examples/ci/`, its commands in order on an emulated fleet in a fresh HOME:
//! the cache key, a cold offline compile that asks for profiling (exit code 3), the profiling
//! compile, the cache saved as a tarball and restored, then the offline compile: nothing
//! measured, the same plan and the same binaries.

use crate::fleet_run::boards_target_dir;
use crate::TempDir;
use legionc::compile::CompileSummary;
use std::path::Path;
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const FLEET: &str = "fleet: ci\nmodel: vgg16-tiny\ndefaults:\n  runtime_port: 28700\noutput: out\nboards:\n  - name: rk-1\n    emulated: firefly-rk3399\n  - name: xu4-1\n    emulated: odroid-xu4\n";

/// legionc with HOME and the profile cache in `d`, to be run in `d`.
fn command(d: &Path) -> Command {
    let mut c = crate::legionc();
    c.current_dir(d).env("HOME", d.join("home")).env("LEGION_CACHE_DIR", d.join("cache"));
    c
}

/// [`command`] run with `args`.
fn legionc(d: &Path, args: &[&str]) -> Output {
    command(d).args(args).output().unwrap()
}

fn summary(o: &Output) -> CompileSummary {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not a compile summary ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn sh(d: &Path, script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).current_dir(d).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

#[test]
fn a_restored_profile_cache_compiles_offline_to_the_same_plan_and_binaries() {
    let d = TempDir::new("ci-recipe");
    std::fs::create_dir_all(d.path("home")).unwrap();
    std::fs::write(d.path("fleet.yaml"), FLEET).unwrap();
    let target = boards_target_dir();
    let target = target.to_str().unwrap();
    let key = |d: &Path| {
        let o = legionc(d, &["cache-key", "fleet.yaml"]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let k1 = key(&d.0);
    assert!(k1.starts_with("legionc-profiles-") && k1.len() == "legionc-profiles-".len() + 20, "{k1}");
    // Cold cache: the offline compile says profiles are missing, with its own exit code.
    let o = legionc(&d.0, &["compile", "fleet.yaml", "--offline", "--json", "--target-dir", target]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("--offline") && o.stdout.is_empty(), "{}", text(&o));
    // The profiling job: measures, builds; the summary names every binary.
    let first = summary(&legionc(&d.0, &["compile", "fleet.yaml", "--json", "--target-dir", target]));
    assert!(first.profiling.measured_now > 0 && first.profiling.probe_runs > 0 && first.profiling.ssh_connections == 0, "{first:?}");
    assert_eq!(first.cache_key, k1);
    // Profiling's scratch folders are gone, whatever their names.
    let leftovers: Vec<String> = std::fs::read_dir(d.path("out")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".probe") || n.starts_with(".staging") || n.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!((first.version, first.topology.as_str()), (legionc::compile::SUMMARY_VERSION, "mesh"));
    assert!(first.groups >= 1, "{first:?}");
    // Frames pipelined never predict fewer frames per second than one frame at a time.
    let (one, pipelined) = (first.predicted_throughput_fps.expect("legion predicts"), first.predicted_pipelined_fps.expect("legion predicts"));
    assert!(one > 0.0 && pipelined >= one, "{first:?}");
    let peaks = first.predicted_peak_mb.as_ref().expect("the legion strategy predicts memory");
    assert_eq!(peaks.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), first.boards.iter().map(|b| b.name.as_str()).collect::<Vec<_>>());
    assert!(peaks.iter().all(|p| p.1 > 0.0), "{peaks:?}");
    assert_eq!(first.boards.len(), 2);
    for b in &first.boards {
        let bin = b.binary.as_ref().expect("built");
        assert!(bin.is_file() && b.sha256.as_ref().is_some_and(|s| s.len() == 64), "{b:?}");
        assert_eq!(b.triple, "x86_64-unknown-linux-gnu");
    }
    // The cache saved as a tarball, everything else gone (a new CI job on a fresh checkout, on
    // the same runner machine: emulated profiles hold for this machine's calibration, which
    // stays in $LEGION_EMULATION_DIR).
    sh(&d.0, "tar czf profiles.tgz cache && rm -rf cache out home && mkdir home");
    assert!(!d.path("cache").exists());
    sh(&d.0, "tar xzf profiles.tgz");
    assert_eq!(key(&d.0), k1, "the key depends on nothing the cache restores");
    let second = summary(&legionc(&d.0, &["compile", "fleet.yaml", "--offline", "--json", "--target-dir", target]));
    assert_eq!((second.profiling.measured_now, second.profiling.probe_runs, second.profiling.ssh_connections), (0, 0, 0), "{second:?}");
    assert_eq!(second.profiling.cached, first.profiling.cached + first.profiling.measured_now);
    assert_eq!(second.plan_hash, first.plan_hash);
    let shas = |s: &CompileSummary| s.boards.iter().map(|b| (b.name.clone(), b.sha256.clone())).collect::<Vec<_>>();
    assert_eq!(shas(&second), shas(&first), "the binaries differ");
    // --check agrees, and says so in the summary.
    let check = summary(&legionc(&d.0, &["compile", "fleet.yaml", "--check", "--json", "--target-dir", target]));
    assert!(check.up_to_date && check.plan_hash == first.plan_hash);
    eprintln!("cold:\n{}\nrestored:\n{}", serde_json::to_string_pretty(&first).unwrap(), serde_json::to_string_pretty(&second).unwrap());
}

#[test]
fn the_cache_key_follows_what_profiles_depend_on() {
    let d = TempDir::new("cache-key");
    let key_with = |yaml: &str, env: &[(&str, &str)]| {
        std::fs::write(d.path("fleet.yaml"), yaml).unwrap();
        let o = command(&d.0).envs(env.iter().copied()).args(["cache-key", "fleet.yaml"]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let key = |yaml: &str| key_with(yaml, &[]);
    let base = key(FLEET);
    // Names, order and runtime ports of the boards: the same profiles.
    let renamed = FLEET.replace("name: rk-1", "name: left").replace("runtime_port: 28700", "runtime_port: 29000");
    assert_eq!(key(&renamed), base);
    let reordered = "fleet: ci\nmodel: vgg16-tiny\ncoordinator: rk-1\noutput: out\nboards:\n  - name: xu4-1\n    emulated: odroid-xu4\n  - name: rk-1\n    emulated: firefly-rk3399\n";
    assert_eq!(key(reordered), base);
    // Another target for a board, another model, another coordinator, another strategy: not.
    assert_ne!(key(&FLEET.replace("emulated: odroid-xu4", "emulated: firefly-rk3399")), base);
    assert_ne!(key(&FLEET.replace("model: vgg16-tiny", "model: resnet18-tiny")), base);
    assert_ne!(key(&FLEET.replace("output: out", "output: out\ncoordinator: xu4-1")), base);
    assert_ne!(key(&FLEET.replace("output: out", "output: out\nstrategy: fss")), base);
    // Emulated boards timed without the drift correction: other profiles.
    let uncorrected = key_with(FLEET, &[("LEGION_EMULATION_REFERENCE", "0")]);
    assert_eq!(uncorrected, key_with(FLEET, &[("LEGION_EMULATION_REFERENCE", "0")]));
    assert_ne!(uncorrected, base);
}

/// Both workflows validate against their CI system's schema (check-jsonschema's bundled
/// schemas; `.ci/run` installs it).
#[test]
fn the_example_workflows_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    if Command::new("check-jsonschema").arg("--version").output().is_err() {
        eprintln!("skipped: check-jsonschema is not installed (pip install check-jsonschema)");
        return;
    }
    for (file, schema) in [("github-actions.yml", "vendor.github-workflows"), ("gitlab-ci.yml", "vendor.gitlab-ci")] {
        let o = Command::new("check-jsonschema").args(["--builtin-schema", schema]).arg(dir.join(file)).output().unwrap();
        assert!(o.status.success(), "{file}: {}", text(&o));
    }
}
