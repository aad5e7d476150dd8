//! Compiled fleets end to end: rendered crates, builds, emulated boards answering images.

use crate::{legionc, zoo_model, TempDir, TINY};
use legionc::{codegen, fleet, model, solve};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// Shared target directory of the host board crates built by the tests: the workspace's own,
/// where `cargo test --release` built tract for legionc; host board crates share that build
/// (their profile and tract's features are legionc's), so the tests build tract no more.
pub fn boards_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// Target directory of the cross-built board crates. Not the host boards' one: cargo locks a
/// target dir's host folder for the whole of a cross build, and the other tests' host builds
/// would wait out both tract cross builds behind it.
pub fn cross_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("boards-cross")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A fleet written to a temp dir, compiled and (optionally) up; `down` on drop.
pub struct TestFleet {
    pub dir: TempDir,
    pub yaml: PathBuf,
    up: bool,
    /// A profile cache of this fleet's own (None: the test run's shared one).
    cache: Option<PathBuf>,
}

impl TestFleet {
    pub fn write(tag: &str, yaml: &str) -> TestFleet {
        let dir = TempDir::new(tag);
        let path = dir.path("fleet.yaml");
        std::fs::write(&path, yaml).unwrap();
        TestFleet { dir, yaml: path, up: false, cache: None }
    }

    /// `n` emulated boards of the given speeds for `model`, listening from `port` on.
    pub fn emulated(tag: &str, model: &str, port: u16, speeds: &[f64]) -> TestFleet {
        let mut y = format!("fleet: {tag}\nmodel: {model}\ndefaults:\n  runtime_port: {port}\nnetwork:\n  bandwidth_mbps: 1000\n  latency_ms: 0.1\n  deadline_s: 10\noutput: out\nboards:\n");
        for (i, s) in speeds.iter().enumerate() {
            y += &format!("  - name: b{i}\n    emulated: {{speed: {s}}}\n");
        }
        TestFleet::write(tag, &y)
    }

    /// Set the fleet's `strategy` (the default is `legion`, which may leave slow boards out).
    pub fn with_strategy(self, strategy: &str) -> TestFleet {
        let text = std::fs::read_to_string(&self.yaml).unwrap();
        std::fs::write(&self.yaml, format!("strategy: {strategy}\n{text}")).unwrap();
        self
    }

    /// Add a top-level field to fleet.yaml (`text`: its YAML line).
    pub fn with_field(self, text: &str) -> TestFleet {
        let yaml = std::fs::read_to_string(&self.yaml).unwrap();
        std::fs::write(&self.yaml, format!("{text}\n{yaml}")).unwrap();
        self
    }

    /// Profile into a cache of this fleet's own: what a compile measured is exactly what a
    /// later `compile --check` reads, whatever other tests measure meanwhile (two processes
    /// measuring the same record both append it, and the later one is read back).
    pub fn with_own_cache(mut self) -> TestFleet {
        self.cache = Some(self.dir.path("cache"));
        self
    }

    pub fn legionc(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `legionc ARGS[0] FLEET.yaml ARGS[1..]`, not started.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = legionc();
        if let Some(cache) = &self.cache {
            c.env("LEGION_CACHE_DIR", cache);
        }
        c.arg(args[0]).arg(&self.yaml).args(&args[1..]);
        c
    }

    pub fn compile(&self) {
        let o = self.legionc(&["compile", "--target-dir", boards_target_dir().to_str().unwrap()]);
        assert!(o.status.success(), "compile failed: {}", text(&o));
    }

    pub fn up(&mut self) {
        self.up = true;
        let o = self.legionc(&["up"]);
        assert!(o.status.success(), "up failed: {}", text(&o));
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path("out")
    }

    pub fn fleet(&self) -> fleet::Fleet {
        fleet::load(&self.yaml, None).unwrap()
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        if self.up {
            let _ = self.legionc(&["down"]);
        }
    }
}

/// The files of a rendered fleet, as one text: paths, and the full text of what the templates
/// render. Compared with `tests/snapshots/<name>.txt`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot_text(files: &[codegen::OutFile]) -> String {
    let mut s = String::new();
    let mut paths: Vec<String> = files.iter().map(|f| f.path.to_string_lossy().into_owned()).collect();
    paths.sort();
    s += "== files\n";
    for p in paths.iter().filter(|p| !p.contains("/legion-runtime-")) {
        s += &format!("{p}\n");
    }
    for f in files {
        let p = f.path.to_string_lossy();
        if p.ends_with("Cargo.toml") && !p.contains("legion-runtime") || p.ends_with("main.rs") && !p.contains("legion-runtime") || p.ends_with("plan.rs") && !p.contains("legion-runtime") || p == "plan.json" {
            // The runtime copy's folder carries the hash of its sources.
            let text = String::from_utf8_lossy(&f.bytes).replace(&codegen::runtime_dir(), "legion-runtime-HASH");
            s += &format!("== {p}\n{text}");
        }
    }
    s
}

fn render_fixture() -> (fleet::Fleet, Vec<codegen::OutFile>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/snapshot-fleet.yaml");
    let f = fleet::load(&path, Some(Path::new("/nonexistent/out"))).unwrap();
    let m = model::load(&f.model.source, None).unwrap();
    let boards: Vec<(String, f64)> = f.boards.iter().map(|b| (b.name.clone(), b.nominal_speed())).collect();
    let mut plan = solve::plan_from(&m.ir, &m.sha256, &boards, &solve::fused_groups(&m.ir, solve::Fusion::Blocks), f.topology).unwrap();
    // The fallback without the worker, as compile would carry it.
    let groups = plan.groups.iter().map(|g| legionc::runtime::plan::PlanGroup { rows: solve::hand_over(&g.rows, 1).unwrap(), ..g.clone() }).collect();
    plan.fallbacks.push(legionc::runtime::plan::Fallback { lost: vec![1], groups, tail: vec![] });
    let files = codegen::render(&f, &m, &plan).unwrap();
    (f, files)
}

#[test]
fn rendered_crate_matches_snapshot_and_is_deterministic() {
    let (_, files) = render_fixture();
    let (_, again) = render_fixture();
    assert_eq!(files.len(), again.len());
    for (a, b) in files.iter().zip(&again) {
        assert!(a.path == b.path && a.bytes == b.bytes, "{} differs between two renders", a.path.display());
    }
    let got = snapshot_text(&files);
    let snap = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/snapshot-fleet.txt");
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&snap, &got).unwrap();
    }
    let want = std::fs::read_to_string(&snap).expect("snapshot missing: run with UPDATE_SNAPSHOTS=1");
    assert!(got == want, "rendered crate differs from {}; if intended, run with UPDATE_SNAPSHOTS=1\n--- got\n{got}", snap.display());
    // the runtime sources copied in are the crate's own
    for f in &files {
        if let Some(rel) = f.path.to_string_lossy().split("/legion-runtime/").nth(1) {
            let own = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime-template").join(rel)).unwrap();
            assert_eq!(own, f.bytes, "{rel} is not the runtime's own");
        }
    }
}

#[test]
fn rendered_rust_is_rustfmt_clean() {
    if std::process::Command::new("rustfmt").arg("--version").output().is_err() {
        eprintln!("skipped: no rustfmt");
        return;
    }
    let (_, files) = render_fixture();
    let dir = TempDir::new("fmt");
    let mut mains = vec![];
    for f in files.iter().filter(|f| f.path.extension().is_some_and(|e| e == "rs") && !f.path.to_string_lossy().contains("legion-runtime")) {
        let p = dir.0.join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &f.bytes).unwrap();
        if p.ends_with("src/main.rs") {
            mains.push(p);
        }
    }
    assert_eq!(mains.len(), 3);
    for p in mains {
        // main.rs and, through `mod plan;`, plan.rs
        let o = std::process::Command::new("rustfmt").args(["--edition", "2021", "--check"]).arg(&p).output().unwrap();
        assert!(o.status.success(), "{} is not rustfmt-clean:\n{}", p.display(), text(&o));
    }
}

/// The rendered crates build, start and answer; the output equals tract's, for every zoo model:
/// a test per model (`TINY[i]`, its fleet's ports from 28000 + 10·i), so that libtest runs them
/// beside the other tests instead of one after the other in a single long one.
mod every_tiny_model_verifies_on_a_three_board_emulated_fleet {
    macro_rules! per_model {
        ($($test:ident: $i:expr),* $(,)?) => {
            $(
                #[test]
                fn $test() {
                    super::tiny_model_verifies_on_a_three_board_emulated_fleet($i);
                }
            )*
            /// Every tiny zoo model has its test above.
            #[test]
            fn every_model_has_its_test() {
                let mut tested = vec![$($i),*];
                tested.sort();
                assert_eq!(tested, (0..crate::TINY.len()).collect::<Vec<usize>>(), "{:?}", crate::TINY);
            }
        };
    }
    per_model!(vgg16_tiny: 0, vgg19_tiny: 1, yolov2_tiny: 2, resnet18_tiny: 3, mixed_tiny: 4, mobilenetv2_tiny: 5, unet_tiny: 6, yolov3_tiny_tiny: 7);
}

fn tiny_model_verifies_on_a_three_board_emulated_fleet(i: usize) {
    let name = TINY[i];
    // The coordinator (b0) is the slowest: solved plans may give it no rows in a group,
    // and then it holds none of that group's weights while it splits and gathers it.
    let mut f = TestFleet::emulated(&format!("e2e-{name}"), name, 28000 + 10 * i as u16, &[0.25, 0.5, 1.0]).with_own_cache();
    f.compile();
    // The board crates share one build of legion-runtime: at most the first one compiles it.
    let log = std::fs::read_to_string(f.out().join("build.log")).unwrap();
    assert!(log.matches("Compiling legion-runtime ").count() <= 1, "{name}: legion-runtime was built more than once:\n{log}");
    f.up();
    let o = f.legionc(&["run", "--random", "3", "--verify"]);
    let t = text(&o);
    assert!(o.status.success(), "{name}: {t}");
    assert!(t.contains("verified against tract's single run") && t.contains("latency") && t.contains("speedup"), "{t}");
    if name == "vgg16-tiny" {
        // an image (resized and normalised) and a .npy tensor as inputs
        let png = f.dir.path("in.png");
        image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128])).save(&png).unwrap();
        let o = f.legionc(&["run", "--input", png.to_str().unwrap(), "--verify"]);
        assert!(o.status.success() && text(&o).contains("top classes"), "{}", text(&o));
        let npy = f.dir.path("in.npy");
        let x = legionc::model::reference::random_input(&[1, 3, 32, 32], 9);
        legionc::run::write_npy(&npy, &x).unwrap();
        let saved = f.dir.path("out.npy");
        let o = f.legionc(&["run", "--input", npy.to_str().unwrap(), "--verify", "--save", saved.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let y = legionc::run::read_npy(&saved).unwrap();
        let want = legionc::model::reference::run(&zoo_model(name).onnx, &x).unwrap();
        let (diff, scale) = legionc::model::reference::compare(&y, &want).unwrap();
        assert!(diff <= 1e-4 * scale, "saved output differs: {diff:e}");
        let o = f.legionc(&["run", "--input", png.with_extension("gif").to_str().unwrap()]);
        assert!(!o.status.success() && text(&o).contains(".png, .jpg or .npy"), "{}", text(&o));
    }
    // byte-identical crates when compiled again
    let before = std::fs::read(f.out().join("b1/src/plan.rs")).unwrap();
    let o = f.legionc(&["compile", "--check"]);
    assert!(o.status.success(), "{name}: {}", text(&o));
    assert_eq!(before, std::fs::read(f.out().join("b1/src/plan.rs")).unwrap());
}

#[test]
fn a_worker_killed_mid_frame_fails_the_frame_within_two_seconds_naming_it() {
    // Slow twins: a frame takes seconds, the worker dies in the middle of it. Without
    // fallback plans the frame fails.
    let mut f = TestFleet::emulated("killed", "vgg16-tiny", 28100, &[0.0001, 0.0001, 0.0001]).with_strategy("proportional").with_field("fallbacks: false");
    f.compile();
    f.up();
    let fleet = f.fleet();
    let runner = {
        let yaml = f.yaml.clone();
        std::thread::spawn(move || {
            let o = legionc().arg("run").arg(&yaml).args(["--random", "1"]).output().unwrap();
            (o, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let killed_at = Instant::now();
    legionc::deploy::kill_board(&fleet, "b2").unwrap();
    let (o, ended) = runner.join().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "the frame succeeded without b2: {t}");
    assert!(t.contains("board b2"), "the error does not name b2: {t}");
    let took = ended.duration_since(killed_at);
    assert!(took < Duration::from_secs(2), "the coordinator took {took:?} to fail");
}

/// The pid of emulated board `name` of `f`, from its pid file.
fn board_pid(f: &TestFleet, name: &str) -> nix::unistd::Pid {
    let text = std::fs::read_to_string(f.out().join("run").join(format!("{name}.pid"))).unwrap();
    nix::unistd::Pid::from_raw(text.trim().parse().unwrap())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A stream on `f` (every frame verified, JSON summary) while `during` acts on the fleet after
/// `after`; the summary and the log.
fn stream_while(f: &TestFleet, frames: usize, after: Duration, during: impl FnOnce()) -> (serde_json::Value, String) {
    let yaml = f.yaml.clone();
    let n = frames.to_string();
    let runner = std::thread::spawn(move || legionc().arg("run").arg(&yaml).args(["--random", "1", "--frames", &n, "--verify-every", "1", "--json", "--no-baseline"]).output().unwrap());
    std::thread::sleep(after);
    during();
    let o = runner.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    (serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o))), text(&o))
}

#[test]
fn a_lost_worker_is_replaced_by_its_fallback_plan_and_taken_back_when_it_answers_again() {
    // Three slow twins (a frame takes about half a second), a heartbeat of 200 ms, fallbacks
    // for up to two lost workers.
    let mut f = TestFleet::emulated("fallback", "vgg16-tiny", 28150, &[0.0004, 0.0004, 0.0004]).with_strategy("proportional").with_field("fallbacks: 2");
    let yaml = std::fs::read_to_string(&f.yaml).unwrap().replace("  deadline_s: 10\n", "  deadline_s: 10\n  heartbeat_ms: 200\n");
    std::fs::write(&f.yaml, yaml).unwrap();
    f.compile();
    // One fallback per worker and one for both, in the plan (and its hash), each without its
    // boards.
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(f.out().join("plan.json")).unwrap()).unwrap();
    let lost: Vec<&serde_json::Value> = plan["fallbacks"].as_array().expect("fallbacks in plan.json").iter().map(|fb| &fb["lost"]).collect();
    assert_eq!(lost, [&serde_json::json!([1]), &serde_json::json!([2]), &serde_json::json!([1, 2])], "{plan}");
    for fb in plan["fallbacks"].as_array().unwrap() {
        for b in fb["lost"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as usize) {
            assert!(fb["groups"].as_array().unwrap().iter().all(|g| g["rows"][b] == 0), "{fb}");
        }
    }
    f.up();
    // SIGKILL mid-stream: every frame answered and verified; from some frame on, on the
    // fallback without b2.
    let (j, log) = stream_while(&f, 12, Duration::from_millis(1200), || nix::sys::signal::kill(board_pid(&f, "b2"), nix::sys::signal::Signal::SIGKILL).unwrap());
    assert_eq!((j["answered"].as_u64(), j["verified"].as_u64()), (Some(12), Some(12)), "{log}");
    let changes = j["plan_changes"].as_array().unwrap();
    assert!(j["on_fallback"].as_u64().unwrap() >= 1 && changes.len() == 1 && changes[0]["lost"] == serde_json::json!(["b2"]), "{log}");
    assert!(log.contains("on the fallback plan without b2"), "{log}");
    // b2 started again: the coordinator's heartbeat takes it back, the next frames run on the
    // plan. Then b1 stopped silently (SIGSTOP) mid-stream: found by the heartbeat (well before
    // the fleet's 10 s deadline), the frames go on without it; continued, it is taken back.
    f.up();
    std::thread::sleep(Duration::from_millis(600));
    let stopped = std::cell::Cell::new(0.0);
    let (j, log) = stream_while(&f, 20, Duration::from_millis(1200), || {
        let pid = board_pid(&f, "b1");
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        stopped.set(unix_now());
        std::thread::sleep(Duration::from_millis(1500));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    });
    assert_eq!((j["answered"].as_u64(), j["verified"].as_u64()), (Some(20), Some(20)), "{log}");
    let changes = j["plan_changes"].as_array().unwrap();
    let lost: Vec<&serde_json::Value> = changes.iter().map(|c| &c["lost"]).collect();
    assert_eq!(lost, [&serde_json::json!(["b1"]), &serde_json::json!([])], "the first frames on the plan, then without b1, then with it again: {log}");
    let found = changes[0]["lost_at_unix_s"].as_f64().unwrap() - stopped.get();
    assert!(found < 5.0, "the stopped board was found lost {found:.2} s after it stopped: by the deadline, not the heartbeat? {log}");
    // Both workers killed mid-stream: the coordinator answers alone, on the fallback without
    // both.
    std::thread::sleep(Duration::from_millis(600));
    let (j, log) = stream_while(&f, 10, Duration::from_millis(1000), || {
        nix::sys::signal::kill(board_pid(&f, "b1"), nix::sys::signal::Signal::SIGKILL).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        nix::sys::signal::kill(board_pid(&f, "b2"), nix::sys::signal::Signal::SIGKILL).unwrap();
    });
    assert_eq!((j["answered"].as_u64(), j["verified"].as_u64()), (Some(10), Some(10)), "{log}");
    let changes = j["plan_changes"].as_array().unwrap();
    assert_eq!(changes.last().map(|c| &c["lost"]), Some(&serde_json::json!(["b1", "b2"])), "{log}");
}

#[test]
fn a_worker_on_another_plan_is_refused_naming_both_hashes() {
    let mut a = TestFleet::emulated("plan-a", "vgg16-tiny", 28200, &[1.0, 1.0]).with_strategy("proportional");
    a.compile();
    a.up();
    // Without fallbacks: with them, b's coordinator would take the worker answering with
    // another plan as lost and answer on the fallback without it.
    let b = TestFleet::emulated("plan-b", "vgg16-tiny", 28200, &[1.0, 0.25]).with_strategy("proportional").with_field("fallbacks: false");
    // The same key (a fleet recompiled into its output directory keeps its key): the worker
    // authenticates b's coordinator, then refuses its plan.
    std::fs::create_dir_all(b.out()).unwrap();
    std::fs::copy(a.out().join("fleet.key"), b.out().join("fleet.key")).unwrap();
    b.compile();
    let plan_a = legionc::codegen::compiled_plan(&a.fleet()).unwrap().hash();
    let fb = b.fleet();
    let plan_b = legionc::codegen::compiled_plan(&fb).unwrap().hash();
    assert_ne!(plan_a, plan_b);
    // Replace a's coordinator with b's: b's coordinator now talks to a's worker.
    legionc::deploy::kill_board(&a.fleet(), "b0").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let coord = &fb.boards[0];
    let mut child = std::process::Command::new(legionc::cargo_build::installed_binary(&fb, coord))
        .arg("serve")
        .arg("--key")
        .arg(b.out().join("fleet.key"))
        .arg("--model")
        .arg(b.out().join("b0/model.bin"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while legionc::deploy::health(&fb, coord).is_err() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = b.legionc(&["run", "--random", "1"]);
    let _ = child.kill();
    let _ = child.wait();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("plan mismatch") && t.contains(&plan_a) && t.contains(&plan_b) && t.contains("board b1"), "{t}");
}

#[test]
fn up_and_run_need_a_compiled_fleet() {
    let f = TestFleet::emulated("uncompiled", "vgg16-tiny", 28300, &[1.0]);
    let o = f.legionc(&["up"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("run `legionc compile` first"), "{}", text(&o));
    let o = f.legionc(&["run", "--random", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not compiled"), "{}", text(&o));
}

/// `legionc bench FLEET --strategies ... --json`: every strategy's plan runs on the fleet
/// (through `serve --plan`, no rebuild) and is reported with its measured and predicted latency
/// and profiling cost; the profiles come from the cache the compile filled. With `--rounds 2`
/// each plan is measured in both rounds, its median over the frames of both.
#[test]
fn bench_compares_strategies_on_the_emulated_fleet() {
    let f = TestFleet::emulated("bench", "resnet18-tiny", 28700, &[1.0, 0.5]);
    f.compile();
    let o = f.legionc(&["bench", "--strategies", "legion,layerwise,proportional", "--frames", "1", "--rounds", "2", "--json", "--target-dir", boards_target_dir().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (r, name) in rows.iter().zip(["legion", "layerwise", "proportional"]) {
        assert_eq!(r["strategy"], name);
        assert!(r["measured_latency_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["rounds"] == 2 && r["frames"] == 2, "{r}");
        assert!(r["solve_seconds"].as_f64().is_some() && r["profiling_board_seconds"].as_f64().is_some() && r["profiling_trials"].as_u64().is_some(), "{r}");
        assert!(r["measured_pipelined_fps"].as_f64().unwrap() > 0.0, "{r}");
        if name == "proportional" {
            assert!(r["predicted_latency_s"].is_null() && r["profiling_trials"] == 0 && r["predicted_pipelined_fps"].is_null(), "{r}");
        } else {
            assert!(r["predicted_latency_s"].as_f64().unwrap() > 0.0 && r["profiling_trials"].as_u64().unwrap() > 0, "{r}");
            // Two frames in flight: at most two per latency, at least one.
            let (fps, latency) = (r["predicted_pipelined_fps"].as_f64().unwrap(), r["predicted_latency_s"].as_f64().unwrap());
            assert!(fps * latency >= 1.0 - 1e-9 && fps * latency <= 2.0 + 1e-9, "{r}");
        }
    }
    // layer-wise has one group per cut segment, more than the fused plans
    assert!(rows[1]["groups"].as_u64() > rows[0]["groups"].as_u64(), "{rows:?}");
    // nothing is left running
    let fleet = f.fleet();
    for b in &fleet.boards {
        assert!(legionc::deploy::health(&fleet, b).is_err(), "board {} still answers", b.name);
    }
    // A benchmark killed while its boards run (Ctrl-C, or worse) takes them with it.
    let mut bench = f.command(&["bench", "--strategies", "legion", "--frames", "2000", "--target-dir", boards_target_dir().to_str().unwrap()]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !fleet.boards.iter().all(|b| legionc::deploy::health(&fleet, b).is_ok()) {
        assert!(bench.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline, "the benchmark's boards never all answered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bench.kill().unwrap();
    bench.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Some(b) = fleet.boards.iter().find(|b| legionc::deploy::health(&fleet, b).is_ok()) {
        assert!(std::time::Instant::now() < deadline, "board {} still answers 5 s after its benchmark was killed", b.name);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The full search predicts its plan from its chosen groups measured once more (`fss-check`
/// records in the profile cache), not from the minimum of its own noisy measurements.
#[test]
fn the_full_search_predicts_its_plan_from_its_groups_measured_again() {
    let f = TestFleet::emulated("fss", "mixed-tiny", 28900, &[1.0, 0.5]).with_strategy("fss");
    let cache = f.dir.path("cache");
    let o = f.legionc(&["compile", "--no-build", "--cache-dir", cache.to_str().unwrap(), "--target-dir", boards_target_dir().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.out().join("plan-report.json")).unwrap()).unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(cache.join("profiles.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let checks: Vec<f64> = records.iter().filter(|r| r["kind"] == "fss-check").map(|r| r["value"]["median_s"].as_f64().unwrap()).collect();
    // the probe reports its own peak resident memory with every measurement
    assert!(records.iter().all(|r| r["value"]["peak_rss_mb"].as_f64().is_some_and(|mb| mb > 1.0)), "{:?}", records[0]);
    let searched = records.iter().filter(|r| r["kind"] == "group").count();
    let groups = report["groups"].as_array().unwrap();
    let bands: Vec<&serde_json::Value> = groups.iter().flat_map(|g| g["bands"].as_array().unwrap()).filter(|b| b["rows"].as_u64() > Some(0)).collect();
    assert!(!bands.is_empty() && !checks.is_empty() && checks.len() <= bands.len(), "{} checks for {} bands", checks.len(), bands.len());
    assert!(searched > 10 * checks.len(), "{searched} group measurements, {} checks", checks.len());
    for b in &bands {
        let c = b["compute_s"].as_f64().unwrap();
        assert!(checks.contains(&c), "band {b}: its compute time is not one of the checks {checks:?}");
    }
    let total: f64 = groups.iter().map(|g| g["latency_s"].as_f64().unwrap()).sum::<f64>() + report["tail_s"].as_f64().unwrap();
    assert!((total - report["predicted_latency_s"].as_f64().unwrap()).abs() < 1e-12, "{report}");
    // the checks are counted in the full search's profiling
    assert_eq!(report["profiling"]["measured"].as_u64().unwrap() as usize, searched + checks.len(), "{report}");
}

/// The boards' own wire for both topologies and a split tail: a plan whose every Dense layer
/// of the tail is split over three emulated boards answers as tract does, star and mesh (its
/// bands whole, and computed edges first); the mesh's boards send each other rows, edges
/// first before their bands are done; each board's compiled model file holds only its slice.
#[test]
fn a_split_tail_verifies_on_emulated_boards_in_both_topologies() {
    use legionc::runtime::plan::{TailSplit, Topology};
    let mut f = TestFleet::emulated("tail", "vgg16-tiny", 28450, &[1.0, 0.5, 0.5]).with_strategy("proportional");
    f.compile();
    let fleet = f.fleet();
    let m = zoo_model("vgg16-tiny");
    let dense = legionc::strategy::splittable_dense(&m.ir);
    assert!(dense.len() >= 2, "vgg16-tiny has a dense tail: {dense:?}");
    let x = legionc::model::reference::random_input(&m.ir.user_input_shape(), 5);
    let want = legionc::model::reference::run(&m.onnx, &x).unwrap();
    let model_file = f.dir.path("all.bin");
    std::fs::write(&model_file, legionc::runtime::modelfile::write(&m.ir, &|_| true)).unwrap();
    let compiled = codegen::compiled_plan(&fleet).unwrap();
    for (topology, edges) in [(Topology::Star, false), (Topology::Mesh, false), (Topology::Mesh, true)] {
        let mut plan = compiled.clone();
        plan.topology = topology;
        let last = plan.groups.len() - 1;
        for (i, g) in plan.groups.iter_mut().enumerate() {
            g.edges_first = edges && i < last;
        }
        plan.tail = dense.iter().map(|&node| TailSplit { node, cols: solve::proportional_rows(m.ir.nodes[node].shape[1], &[1.0, 2.0, 1.0]) }).collect();
        plan.validate(&m.ir).unwrap();
        let plan_file = f.dir.path(&format!("{topology}-{edges}.plan.json"));
        std::fs::write(&plan_file, serde_json::to_vec(&plan).unwrap()).unwrap();
        legionc::deploy::up_emulated_with(&fleet, &plan, &legionc::deploy::Launch::PlanFile { plan: &plan_file, model: &model_file }, true).unwrap();
        f.up = true;
        let got = legionc::run::infer(&fleet, &plan, &x);
        legionc::deploy::down(&fleet).unwrap();
        f.up = false;
        let (y, report, _) = got.unwrap();
        legionc::model::reference::check(&y, &want, &format!("{topology} with a split tail")).unwrap();
        assert_eq!(report.tail_split.len(), dense.len(), "{report:?}");
        assert!(report.tail_split.iter().all(|t| t.len() == 3), "{report:?}");
        // every board process's peak resident memory, as its kernel counts it
        let peaks: Vec<&str> = report.peak_rss_mb.iter().filter(|(_, mb)| *mb > 1.0).map(|(b, _)| b.as_str()).collect();
        assert_eq!(peaks, ["b0", "b1", "b2"], "{:?}", report.peak_rss_mb);
        let peer_rows = report.groups.iter().flatten().filter(|t| !t.sent_to.is_empty()).count();
        if topology == Topology::Mesh && plan.groups.len() > 1 {
            assert!(peer_rows > 0, "no board sent another rows: {report:?}");
            // What the boards sent each other over their own connections is the exchange the
            // band math asks for, board by board.
            let mut early = 0;
            for (gi, w) in plan.groups.windows(2).enumerate() {
                let r = legionc::runtime::mesh::redistribution(&m.ir, &w[0].rows, w[1].group(), &w[1].rows).unwrap();
                for t in &report.groups[gi] {
                    let b = fleet.boards.iter().position(|x| x.name == t.board).unwrap();
                    let mut want: Vec<(String, (usize, usize))> = r.transfers.iter().filter(|x| x.from == b).map(|x| (fleet.boards[x.to].name.clone(), (x.rows.start, x.rows.end))).collect();
                    let mut sent = t.sent_to.clone();
                    want.sort();
                    sent.sort();
                    assert_eq!(sent, want, "group {gi}, board {}", t.board);
                    // In parts, the rows of the first parts leave before the band is done.
                    let parts = legionc::runtime::mesh::group_parts(&m.ir, &plan.groups, gi, b).unwrap();
                    assert_eq!(t.sent_after_s.len(), t.sent_to.len());
                    let before = t.sent_after_s.iter().filter(|&&a| a < t.compute_s).count();
                    assert_eq!(before > 0, parts.len() > 1, "group {gi}, board {}: parts {parts:?}, {t:?}", t.board);
                    early += before;
                }
            }
            assert_eq!(early > 0, edges, "rows sent before their band was done: {early}");
            // The first split layer's input gathered on the boards: each board's last band
            // went to every other board with features, and each computed its slice from them.
            assert!(plan.gathers_tail(&m.ir) && report.tail_gathered, "{report:?}");
            let last = plan.groups.last().unwrap();
            let r = legionc::runtime::mesh::tail_gather(&m.ir, &last.rows, last.to, &plan.tail[0].cols).unwrap();
            for t in report.groups.last().unwrap() {
                let b = fleet.boards.iter().position(|x| x.name == t.board).unwrap();
                let want: Vec<(String, (usize, usize))> = r.transfers.iter().filter(|x| x.from == b).map(|x| (fleet.boards[x.to].name.clone(), (x.rows.start, x.rows.end))).collect();
                assert!(!want.is_empty());
                assert_eq!(t.sent_to, want, "the last group, board {}", t.board);
            }
        } else {
            assert_eq!(peer_rows, 0, "{topology}: {report:?}");
            assert!(!report.tail_gathered, "{topology}: {report:?}");
        }
        // Each board's model file, as compile writes it for this plan: only its slices.
        let files = codegen::render(&fleet, m, &plan).unwrap();
        for (b, board) in fleet.boards.iter().enumerate() {
            let bytes = &files.iter().find(|o| o.path == Path::new(&board.name).join("model.bin")).unwrap().bytes;
            let held = legionc::runtime::modelfile::read(bytes).unwrap();
            for t in &plan.tail {
                let legionc::runtime::ir::Op::Dense { weight, .. } = &held.nodes[t.node].op else { panic!("node {} is not Dense", t.node) };
                let k = m.ir.nodes[t.node - 1].shape[1];
                assert_eq!((weight.shape.clone(), weight.len()), (vec![k, t.cols[b]], k * t.cols[b]), "board {b}, node {}", t.node);
            }
        }
    }
}

/// A board's `memory_mb` is respected: VGG-16's coordinator given less than the plan without a
/// limit needs gets its tail's Dense layers spread over the others until its predicted peak
/// fits, the fleet runs verified, its measured peak is under the limit and `explain` shows it
/// beside the prediction; with less than the convolutions alone need, compile fails naming the
/// board and the shortfall, and leaves the compiled fleet as it was.
#[test]
fn a_coordinator_short_of_memory_gets_a_plan_that_fits_or_a_named_shortfall() {
    let mut f = TestFleet::emulated("memfit", "vgg16", 28960, &[1.0, 1.0, 1.0]);
    let report = |f: &TestFleet| -> serde_json::Value { serde_json::from_slice(&std::fs::read(f.out().join("plan-report.json")).unwrap()).unwrap() };
    let o = f.legionc(&["compile", "--no-build"]);
    assert!(o.status.success(), "{}", text(&o));
    let free = report(&f)["memory"][0]["peak_mb"].as_f64().unwrap();
    let weights = report(&f)["memory"][0]["weights_mb"].as_f64().unwrap();
    let limit = (free * 0.7).round();
    let yaml = std::fs::read_to_string(&f.yaml).unwrap();
    std::fs::write(&f.yaml, yaml.replace("  - name: b0\n    emulated: {speed: 1}\n", &format!("  - name: b0\n    emulated: {{speed: 1}}\n    memory_mb: {limit}\n"))).unwrap();
    f.compile();
    let fitted = report(&f);
    let peak = fitted["memory"][0]["peak_mb"].as_f64().unwrap();
    assert!(peak <= limit, "predicted {peak} MB within {limit} MB");
    let fewer = fitted["memory"][0]["weights_mb"].as_f64().unwrap();
    assert!(fewer < weights, "the coordinator holds less of the tail: {fewer} MB of weights, {weights} MB without a limit");
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(f.out().join("plan.json")).unwrap()).unwrap();
    assert!(!plan["tail"].as_array().unwrap().is_empty(), "the tail is split: {plan}");
    f.up = true;
    let o = f.legionc(&["run", "--random", "1", "--verify", "--up", "--no-baseline"]);
    assert!(o.status.success() && text(&o).contains("verified against tract"), "{}", text(&o));
    let explained = f.legionc(&["explain"]);
    let line = text(&explained).lines().find(|l| l.trim_start().starts_with("b0 ") && l.contains("predicted")).map(String::from).unwrap_or_else(|| panic!("{}", text(&explained)));
    let measured: f64 = line.split("measured ").nth(1).and_then(|t| t.split(' ').next()).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    assert!(measured <= limit, "b0 measured at {measured} MB over its {limit} MB: {line}");
    assert!((measured / peak - 1.0).abs() <= 0.2, "predicted {peak} MB, measured {measured} MB");
    // Less than the convolutions need: an error naming the board and the shortfall.
    let before = std::fs::read(f.out().join("plan.json")).unwrap();
    let yaml = std::fs::read_to_string(&f.yaml).unwrap();
    std::fs::write(&f.yaml, yaml.replace(&format!("memory_mb: {limit}"), "memory_mb: 60")).unwrap();
    let o = f.legionc(&["compile"]);
    let msg = text(&o);
    assert!(!o.status.success() && msg.contains("no plan fits board 'b0'") && msg.contains("MB short"), "{msg}");
    assert_eq!(std::fs::read(f.out().join("plan.json")).unwrap(), before, "the compiled fleet is left as it was");
}

/// Each board's model file holds the weights of exactly the layers it computes (the groups in
/// which it has rows; the tail on the coordinator) and, of a split tail layer, only its slice:
/// its size is the sum of those weights and the header.
#[test]
fn each_model_file_holds_only_what_its_board_computes() {
    use legionc::runtime::plan::{TailSplit, Topology};
    let f = TestFleet::emulated("modelfiles", "vgg16-tiny", 28980, &[1.0, 0.5, 0.5]);
    let fleet = f.fleet();
    let m = zoo_model("vgg16-tiny");
    let boards: Vec<(String, f64)> = fleet.boards.iter().map(|b| (b.name.clone(), 1.0)).collect();
    let mut plan = solve::plan_from(&m.ir, &m.sha256, &boards, &solve::fused_groups(&m.ir, solve::Fusion::Blocks), Topology::Mesh).unwrap();
    // Board 2 computes nothing of the first group, board 1 nothing of the last.
    let first = &mut plan.groups[0].rows;
    (first[0], first[2]) = (first[0] + first[2], 0);
    let last = &mut plan.groups.last_mut().unwrap().rows;
    (last[0], last[1]) = (last[0] + last[1], 0);
    let dense = legionc::strategy::splittable_dense(&m.ir);
    plan.tail = vec![TailSplit { node: dense[0], cols: solve::proportional_rows(m.ir.nodes[dense[0]].shape[1], &[1.0, 0.0, 1.0]) }];
    plan.validate(&m.ir).unwrap();
    let files = codegen::render(&fleet, m, &plan).unwrap();
    let weight_bytes = |op: &legionc::runtime::ir::Op| op.weights().iter().map(|w| w.len() * 4).sum::<usize>();
    for (b, board) in fleet.boards.iter().enumerate() {
        let bytes = &files.iter().find(|o| o.path == Path::new(&board.name).join("model.bin")).unwrap().bytes;
        let held = legionc::runtime::modelfile::read(bytes).unwrap();
        let mut total = 0;
        for (id, node) in held.nodes.iter().enumerate() {
            let has = weight_bytes(&node.op);
            total += has;
            if m.ir.nodes[id].op.weights().is_empty() {
                continue;
            }
            let computes = plan.groups.iter().any(|g| g.rows[b] > 0 && g.group().layers().contains(&id))
                || (b == fleet.coordinator && id > m.ir.split_end() && id != dense[0])
                || (id == dense[0] && plan.tail[0].cols[b] > 0);
            assert_eq!(has > 0, computes, "board {b}, node {id}: holds {has} bytes");
            assert_eq!(plan.board_needs(b, b == fleet.coordinator, id), computes, "board {b}, node {id}");
            if id == dense[0] && computes {
                let k = m.ir.nodes[id - 1].shape[1];
                assert_eq!(has, 4 * (k + 1) * plan.tail[0].cols[b], "board {b}: its slice only");
            } else if computes {
                assert_eq!(has, weight_bytes(&m.ir.nodes[id].op), "board {b}, node {id}: whole");
            }
        }
        assert!(bytes.len() > total && bytes.len() < total + 64 * 1024, "board {b}: {} bytes for {total} of weights", bytes.len());
    }
}

/// Sits between a client and board `to` for one connection: passes the board's nonce on,
/// reads the client's first message whole, sends the board what `tamper` makes of it, then
/// collects what the board answers until it closes the connection (at most 5 s) and passes it
/// on. Returns its address and the board's answer (None: the board kept the connection open).
fn proxy(to: String, tamper: fn(Vec<u8>) -> Vec<u8>) -> (String, std::thread::JoinHandle<Option<Vec<u8>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut board = std::net::TcpStream::connect(&to).unwrap();
        board.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut nonce = [0u8; 16];
        board.read_exact(&mut nonce).unwrap();
        client.write_all(&nonce).unwrap();
        let mut head = [0u8; 96];
        client.read_exact(&mut head).unwrap();
        let len = u64::from_le_bytes(head[88..96].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; len + 32];
        client.read_exact(&mut rest).unwrap();
        board.write_all(&tamper([head.to_vec(), rest].concat())).unwrap();
        let mut answer = Vec::new();
        let closed = board.read_to_end(&mut answer).is_ok();
        let _ = client.write_all(&answer);
        closed.then_some(answer)
    });
    (addr, handle)
}

/// Every connection to a board is authenticated with the fleet's key (HMAC-SHA256 over each
/// message with the connection's nonce and a sequence number). A peer without the key, with
/// another key, replaying or altering a message, announcing a 2 GiB payload or sending an
/// unauthenticated Shutdown is refused without an answer (not even the plan hash), and the
/// fleet then still answers a verified frame. The key is in no other file of the output
/// directory (plan, sources, model files, binaries, logs).
#[test]
fn strangers_are_refused_and_the_key_stays_secret() {
    use legionc::runtime::wire::{Key, Kind, Message};
    use std::io::{Read, Write};
    let mut f = TestFleet::emulated("auth", "vgg16-tiny", 28995, &[1.0, 1.0]).with_strategy("proportional");
    f.compile();
    f.up();
    let fleet = f.fleet();
    let key = legionc::deploy::fleet_key(&fleet).unwrap();
    let (worker, coordinator) = (fleet.boards[1].addr(), fleet.coordinator().addr());
    let plan = legionc::codegen::compiled_plan(&fleet).unwrap().hash();
    let deadline = Duration::from_secs(2);
    let verified = |what: &str| {
        let o = f.legionc(&["run", "--random", "1", "--verify", "--no-baseline"]);
        assert!(o.status.success() && text(&o).contains("verified against tract"), "after {what}: {}", text(&o));
    };
    // Raw bytes to a board: what it sends back after its nonce, until it closes.
    let raw = |to: &str, bytes: &[u8]| -> Vec<u8> {
        let mut s = legionc::runtime::board::connect(to, deadline).unwrap();
        let mut nonce = [0u8; 16];
        s.read_exact(&mut nonce).unwrap();
        let _ = s.write_all(bytes);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    // No key: a well-formed Hello without its code.
    assert!(raw(&worker, &Message::text(Kind::Hello, [0; 32], 0, "").to_bytes()).is_empty(), "a Hello without the key was answered");
    verified("a Hello without the key");
    // Another key.
    let e = legionc::runtime::board::hello(&worker, &Key::generate().unwrap(), deadline).unwrap_err();
    assert!(!format!("{e:#}").contains(&plan[..16]), "{e:#}");
    verified("another key");
    // A genuine Hello replayed on its own connection: answered once, then the connection closed.
    let (addr, seen) = proxy(worker.clone(), |m| [m.clone(), m].concat());
    legionc::runtime::board::hello(&addr, &key, deadline).unwrap();
    let answer = seen.join().unwrap().expect("the board closed the connection after the replay");
    let reply_len = 96 + u64::from_le_bytes(answer[88..96].try_into().unwrap()) as usize + 32;
    assert_eq!(answer.len(), reply_len, "one answer, to the first copy only");
    // A genuine Hello recorded on a connection of our own (nonce 7…7), then sent to the board,
    // whose connection has another nonce: refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mine = listener.local_addr().unwrap().to_string();
    let recorder = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&[7u8; 16]).unwrap();
        let mut b = vec![0u8; 96 + 32];
        s.read_exact(&mut b).unwrap();
        b
    });
    let _ = legionc::runtime::board::hello(&mine, &key, Duration::from_millis(500));
    let recorded = recorder.join().unwrap();
    assert!(raw(&worker, &recorded).is_empty(), "a Hello recorded on another connection was answered");
    verified("replays");
    // One bit of the payload flipped: refused, unanswered.
    let (addr, seen) = proxy(coordinator.clone(), |mut m| {
        let last = m.len() - 33;
        m[last] ^= 1;
        m
    });
    let x = legionc::model::reference::random_input(&[1, 3, 32, 32], 4);
    assert!(legionc::runtime::board::infer(&addr, &key, &plan, &x, deadline, 1 << 20).is_err());
    assert_eq!(seen.join().unwrap(), Some(vec![]), "an altered message was answered");
    // A header announcing 2 GiB: refused before anything is allocated or read.
    let mut big = Message::text(Kind::Infer, legionc::runtime::wire::plan_bytes(&plan), 0, "").to_bytes();
    big[88..96].copy_from_slice(&(2u64 << 30).to_le_bytes());
    assert!(raw(&coordinator, &big).is_empty());
    // Shutdown without the key: the board keeps serving.
    assert!(raw(&worker, &Message::text(Kind::Shutdown, legionc::runtime::wire::plan_bytes(&plan), 0, "").to_bytes()).is_empty());
    verified("an altered message, a 2 GiB header and an unauthenticated Shutdown");
    for b in &fleet.boards {
        assert!(legionc::deploy::health(&fleet, b).is_ok(), "board {} stopped", b.name);
    }
    // The key is nowhere but in its file (0600).
    let hex = key.to_hex();
    let bytes: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(legionc::deploy::key_path(&fleet)).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let mut stack = vec![f.out()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p != legionc::deploy::key_path(&fleet) {
                let content = std::fs::read(&p).unwrap();
                files += 1;
                assert!(!content.windows(32).any(|w| w == bytes.as_slice()), "{} holds the key", p.display());
                let text = String::from_utf8_lossy(&content).to_lowercase();
                assert!(!text.contains(&hex), "{} holds the key", p.display());
            }
        }
    }
    assert!(files > 10, "only {files} files searched");
}

/// The plan hash covers the fleet's configuration: a board whose link, threads, speed, address
/// or coordinator changed answers with another hash. `up` refuses a compile older than
/// fleet.yaml, restarts the boards it started once compiled again, and says so; `down` signals
/// only a pid that is still the board's process.
#[test]
fn a_changed_configuration_is_compiled_again_and_up_restarts_its_boards() {
    let mut f = TestFleet::emulated("reconfigured", "vgg16-tiny", 29020, &[1.0, 0.5]).with_strategy("proportional");
    f.compile();
    f.up();
    let before = legionc::codegen::compiled_plan(&f.fleet()).unwrap();
    let d = before.deployment.clone().expect("a compiled plan has its deployment");
    assert_eq!((d.coordinator, d.boards[1].addr.as_str(), d.boards[1].speed), (0, "127.0.0.1:29021", Some(0.5)));
    // The link changes: the compiled plan no longer fits fleet.yaml.
    let yaml = std::fs::read_to_string(&f.yaml).unwrap();
    std::fs::write(&f.yaml, yaml.replace("bandwidth_mbps: 1000", "bandwidth_mbps: 400")).unwrap();
    for cmd in ["up", "run"] {
        let o = f.legionc(&[cmd, "--random", "1"][..if cmd == "up" { 1 } else { 3 }]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", text(&o));
        assert!(text(&o).contains("compiled for another configuration") && text(&o).contains("run `legionc compile`"), "{cmd}: {}", text(&o));
    }
    f.compile();
    let after = legionc::codegen::compiled_plan(&f.fleet()).unwrap();
    assert_eq!((&after.groups, &after.tail), (&before.groups, &before.tail), "the same plan");
    assert_ne!(after.hash(), before.hash(), "another configuration, another hash");
    let o = f.legionc(&["up"]);
    assert!(o.status.success(), "{}", text(&o));
    for b in ["b0", "b1"] {
        assert!(text(&o).contains(&format!("board {b}: was running plan {}", &before.hash()[..16])), "{}", text(&o));
    }
    let o = f.legionc(&["run", "--random", "1", "--verify"]);
    assert!(o.status.success() && text(&o).contains("verified"), "{}", text(&o));
    streams_of_frames(&f);
    // `down` given the fleet file by another path (relative, from its folder) than `up` was
    // (absolute) still knows the boards as its own and stops them.
    let o = legionc().current_dir(f.yaml.parent().unwrap()).arg("down").arg(f.yaml.file_name().unwrap()).output().unwrap();
    assert!(o.status.success() && text(&o).contains("stopped 2 boards"), "{}", text(&o));
    let fleet = f.fleet();
    for b in &fleet.boards {
        assert!(legionc::deploy::health(&fleet, b).is_err(), "board {} still answers", b.name);
    }
    let o = f.legionc(&["up"]);
    assert!(o.status.success(), "{}", text(&o));
    // A pid file whose pid is now another program: down leaves that program alone.
    let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pid_file = f.out().join("run/b1.pid");
    let board_pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    std::fs::write(&pid_file, format!("{}\n", other.id())).unwrap();
    let o = f.legionc(&["down"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(other.try_wait().unwrap().is_none(), "down signalled a process that is not a board");
    assert!(!pid_file.exists());
    let _ = other.kill();
    let _ = other.wait();
    // The real b1 (its pid file replaced) is still up: stop it by hand.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(board_pid), nix::sys::signal::Signal::SIGTERM);
}

/// Every file under `dir` (relative path → bytes), `target/` left out (cargo's own state).
fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if rel.starts_with("target") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// Two legionc on one output directory: the second fails naming the first's pid and writes
/// nothing; a compile leaves no probe folder behind; two compiles one after the other leave
/// identical trees.
#[test]
fn a_second_legionc_on_one_output_directory_is_refused_and_compiles_repeat_exactly() {
    // (Profiling's temporary folders are checked after the profiling compile of ci_recipe.rs.)
    let f = TestFleet::emulated("locked", "vgg16-tiny", 29040, &[1.0, 0.5]).with_strategy("proportional");
    let held = legionc::OutLock::acquire(&f.out(), true).unwrap().expect("the lock");
    for args in [&["compile"][..], &["up"], &["down"], &["run", "--random", "1"]] {
        let o = f.legionc(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(&format!("another legionc (pid {}) holds {}", std::process::id(), f.out().display())), "{args:?}: {}", text(&o));
    }
    assert_eq!(tree(&f.out()).keys().map(|p| p.display().to_string()).collect::<Vec<_>>(), vec![".lock"], "nothing written under the lock");
    drop(held);
    f.compile();
    let first = tree(&f.out());
    assert!(first.keys().any(|p| p.ends_with("plan.json")) && first.keys().any(|p| p.starts_with("bin")), "{:?}", first.keys());
    let leftovers: Vec<_> = std::fs::read_dir(f.out()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".probe") || n.starts_with(".staging") || n.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(std::fs::read(f.out().join(".lock")).unwrap(), b"", "the lock is emptied when released");
    f.compile();
    let second = tree(&f.out());
    // The compile's own records (cargo's log with its timings; the report of profiling counts
    // and solve time) say how each compile went; everything else is the compiled fleet.
    let records = [Path::new("build.log"), Path::new("plan-report.json")];
    let differ: Vec<_> = first.keys().chain(second.keys()).filter(|p| !records.contains(&p.as_path()) && first.get(*p) != second.get(*p)).collect();
    assert!(differ.is_empty(), "two compiles differ in {differ:?}");
    assert!(records.iter().all(|r| second.contains_key(*r)));
}

/// `run` as a stream on a running fleet: a directory of inputs in name order, every K-th frame
/// verified, the JSON summary; a rate above what the fleet answers with `--drop` drops frames
/// and counts them.
fn streams_of_frames(f: &TestFleet) {
    let m = zoo_model("vgg16-tiny");
    let dir = f.dir.path("frames");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, name) in ["b.npy", "a.npy"].iter().enumerate() {
        legionc::run::write_npy(&dir.join(name), &legionc::model::reference::random_input(&m.ir.user_input_shape(), 40 + i as u64)).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not an input").unwrap();
    let o = f.legionc(&["run", "--input", dir.to_str().unwrap(), "--frames", "4", "--verify-every", "2", "--json", "--no-baseline"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!((j["frames"].as_u64(), j["answered"].as_u64(), j["dropped"].as_u64(), j["verified"].as_u64()), (Some(4), Some(4), Some(0), Some(2)), "{j}");
    let (p50, p95, p99) = (j["latency_p50_s"].as_f64().unwrap(), j["latency_p95_s"].as_f64().unwrap(), j["latency_p99_s"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && j["throughput_fps"].as_f64().unwrap() > 0.0, "{j}");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("frame 1 (a.npy)") && log.contains("frame 2 (b.npy)") && log.contains("frame 3 (a.npy)"), "name order, cycling: {log}");
    assert_eq!(log.matches("verified (max |diff|").count(), 2, "{log}");
    // Three frames in flight, two different inputs: every frame checked against its own
    // input's reference (an answer given to the wrong frame fails), lines in frame order.
    let o = f.legionc(&["run", "--input", dir.to_str().unwrap(), "--frames", "6", "--in-flight", "3", "--verify-every", "1", "--json", "--no-baseline"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!((j["answered"].as_u64(), j["verified"].as_u64(), j["in_flight"].as_u64(), j["peak_in_flight"].as_u64()), (Some(6), Some(6), Some(3), Some(3)), "{j}");
    let log = String::from_utf8_lossy(&o.stderr);
    let at: Vec<usize> = (1..=6).map(|k| log.find(&format!("frame {k} (")).unwrap_or_else(|| panic!("frame {k}: {log}"))).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "frame order: {log}");
    // 10 000 frames per second: frame 2 arrives 0.1 ms after frame 1, which is still in flight.
    let o = f.legionc(&["run", "--random", "1", "--frames", "5", "--rate", "10000", "--drop", "--json", "--no-baseline"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (answered, dropped) = (j["answered"].as_u64().unwrap(), j["dropped"].as_u64().unwrap());
    assert!(dropped >= 1 && answered >= 1 && answered + dropped == 5 && j["waited"] == 0 && j["peak_in_flight"] == 1, "{j}");
    assert_eq!(j["latencies_s"].as_array().unwrap().iter().filter(|l| l[1].is_null()).count() as u64, dropped, "{j}");
    // Without --drop they wait, and are counted.
    let o = f.legionc(&["run", "--random", "1", "--frames", "3", "--rate", "10000", "--json", "--no-baseline"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["answered"] == 3 && j["dropped"] == 0 && j["waited"] == 2, "{j}");
    // Two in flight at that rate: frames 1 and 2 go at once, the other four are dropped.
    let o = f.legionc(&["run", "--random", "1", "--frames", "6", "--rate", "10000", "--drop", "--in-flight", "2", "--json", "--no-baseline"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let (answered, dropped) = (j["answered"].as_u64().unwrap(), j["dropped"].as_u64().unwrap());
    assert!(answered >= 2 && answered + dropped == 6 && j["peak_in_flight"] == 2, "{j}");
}

/// `--objective throughput`: the fleet is partitioned into lanes that are dealt whole frames
/// (the candidates predicted, the chosen one compiled); every board answers with its lane's
/// plan; a stream is dealt among the lanes, every frame verified against tract. A rate no
/// partition reaches is an error that writes nothing.
#[test]
fn a_throughput_plan_deals_whole_frames_among_lanes() {
    let mut f = TestFleet::emulated("lanes", "vgg16-tiny", 29060, &[0.5, 0.5, 0.25]);
    let o = f.legionc(&["compile", "--objective", "throughput", "--json", "--target-dir", boards_target_dir().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: legionc::compile::CompileSummary = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(summary.objective, "throughput");
    // A tiny model on three boards: a split frame costs transfers and halo rows a whole one
    // does not, so the most frames per second come from several lanes.
    assert!(summary.lanes >= 2, "{summary:?}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("<- chosen"), "the candidates are listed");
    let plan: legionc::runtime::plan::Plan = serde_json::from_slice(&std::fs::read(f.out().join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan.lanes.len(), summary.lanes);
    let fleet = f.fleet();
    let hashes = fleet.board_hashes(&plan).unwrap();
    f.up();
    for (b, want) in fleet.boards.iter().zip(&hashes) {
        let (_, _, h) = legionc::deploy::health(&fleet, b).unwrap();
        assert_eq!(&h, want, "board {} runs its lane's plan", b.name);
    }
    let o = f.legionc(&["run", "--random", "3", "--frames", "8", "--verify-every", "1", "--json", "--no-baseline"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!((j["answered"].as_u64(), j["verified"].as_u64()), (Some(8), Some(8)), "{j}");
    let lanes = j["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), summary.lanes, "{j}");
    assert_eq!(lanes.iter().map(|l| l[1].as_u64().unwrap()).sum::<u64>(), 8, "{j}");
    assert!(lanes.iter().filter(|l| l[1].as_u64().unwrap() > 0).count() >= 2, "frames went to several lanes: {j}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("frames dealt among"), "{}", text(&o));
    let explained = f.legionc(&["explain"]);
    assert!(explained.status.success() && text(&explained).contains("<- this plan") && text(&explained).contains("lane 1: boards"), "{}", text(&explained));
    // 10^6 frames per second: no partition reaches it; nothing is written.
    let before = std::fs::read(f.out().join("plan.json")).unwrap();
    let o = f.legionc(&["compile", "--objective", "latency_at_fps=1000000", "--no-build"]);
    assert!(!o.status.success() && text(&o).contains("reaches objective latency_at_fps=1000000") && text(&o).contains("the most frames per second predicted is"), "{}", text(&o));
    assert_eq!(std::fs::read(f.out().join("plan.json")).unwrap(), before);
}
