//! legionc's integration tests: one binary, a module per feature.
//! Full-size models run with LEGION_FULL=1 (CI sets it); the default run uses the tiny zoo.

// libtest starts tests in the order of their names. The testbed's test runs about 12 minutes
// (real hosts, profiled over SSH at their CPU quotas): named to sort first, it runs beside the
// others instead of alone after them.
#[path = "testbed.rs"]
mod a_testbed;
mod ci_recipe;
mod cli;
mod cross;
mod fleet;
mod first_run;
mod fleet_run;
mod fuzz;
mod import;
mod layers;
mod mesh;
mod solve;
mod split;
mod suite;
mod units;

use std::sync::OnceLock;

pub const TINY: &[&str] = &["vgg16-tiny", "vgg19-tiny", "yolov2-tiny", "resnet18-tiny", "mixed-tiny", "mobilenetv2-tiny", "unet-tiny", "yolov3-tiny-tiny"];
pub const FULL: &[&str] = &["vgg16", "vgg19", "yolov2", "resnet18", "mobilenetv2", "unet", "yolov3-tiny"];

pub fn full_size() -> bool {
    std::env::var("LEGION_FULL").is_ok_and(|v| v == "1")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("legionc-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The legionc binary built for these tests. Host board crates it builds go into the
/// workspace's target dir (`fleet_run::boards_target_dir`), sharing the tests' build of tract;
/// cross-built ones (at opt-level 0) into `target/boards-cross`.
pub fn legionc() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_legionc"));
    // profiles of this test run only (tests that check the cache pass their own --cache-dir)
    c.env("LEGION_CACHE_DIR", std::env::temp_dir().join(format!("legionc-test-cache-{}", std::process::id())));
    c
}

/// Loaded zoo models, shared by the tests of this binary.
pub fn zoo_model(name: &str) -> &'static legionc::model::LoadedModel {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(String, &'static legionc::model::LoadedModel)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut c = cache.lock().unwrap();
    if let Some((_, m)) = c.iter().find(|(n, _)| n == name) {
        return m;
    }
    let m: &'static _ = Box::leak(Box::new(legionc::model::load(name, None).unwrap()));
    c.push((name.to_string(), m));
    m
}
