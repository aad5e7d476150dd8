//! Checks of single library functions: the profile cache's checksums, the probe hash's lock
//! closure. (Here rather than as unit tests of the library, so that `cargo test` builds the
//! library once.)

use legionc::profile::cache::{Cache, RecordId, Settings};

fn id(n: usize) -> RecordId {
    RecordId {
        kind: "segment".into(),
        identity: "board".into(),
        probe: "p".into(),
        signature: format!("s{n}"),
        rows: (0, n),
        settings: Settings { warmup: 1, repeats: 3, threads: 1, cores: vec![] },
    }
}

#[test]
fn corrupt_cache_lines_are_dropped_and_sound_ones_kept() {
    let d = crate::TempDir::new("cache");
    let dir = d.0.clone();
    let c = Cache::open(&dir).unwrap();
    for n in 1..=4 {
        c.insert(id(n), serde_json::json!({ "median_s": n as f64 })).unwrap();
    }
    // values that do not round-trip through a float parser exactly are still sound
    c.insert(id(5), serde_json::json!({ "median_s": 0.1 + 0.2, "x": 1.0 / 3.0, "y": 2.0e-7 * 3.0 })).unwrap();
    let path = c.path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[1] = lines[1].replace("\"median_s\":2.0", "\"median_s\":9.0"); // value changed
    let half = lines[2].len() / 2;
    lines[2].truncate(half); // torn write
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let c = Cache::open(&dir).unwrap();
    assert_eq!(c.corrupt, 2);
    assert!(c.get(&id(1)).is_some() && c.get(&id(4)).is_some() && c.get(&id(5)).is_some());
    assert!(c.get(&id(2)).is_none() && c.get(&id(3)).is_none());
    assert_eq!(Cache::open(&dir).unwrap().corrupt, 0, "the file is rewritten without them");
}

#[test]
fn two_processes_measuring_one_record_keep_the_first_measurement() {
    let d = crate::TempDir::new("cache-race");
    // Two legionc processes open the cache, both measure record 1.
    let (a, b) = (Cache::open(&d.0).unwrap(), Cache::open(&d.0).unwrap());
    let first = b.insert(id(1), serde_json::json!(1.0)).unwrap();
    let kept = a.insert(id(1), serde_json::json!(2.0)).unwrap();
    assert_eq!((first.value.clone(), kept.value), (serde_json::json!(1.0), serde_json::json!(1.0)));
    // a now also knows what b measured, and appends what only it measured.
    assert_eq!(a.get(&id(1)).unwrap().value, serde_json::json!(1.0));
    a.insert(id(2), serde_json::json!(3.0)).unwrap();
    b.insert(id(3), serde_json::json!(4.0)).unwrap();
    assert_eq!(a.insert(id(3), serde_json::json!(5.0)).unwrap().value, serde_json::json!(4.0));
    // One line per record; a later read plans from the same values.
    let text = std::fs::read_to_string(d.path("profiles.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    let c = Cache::open(&d.0).unwrap();
    let values: Vec<serde_json::Value> = (1..=3).map(|n| c.get(&id(n)).unwrap().value).collect();
    assert_eq!(values, [serde_json::json!(1.0), serde_json::json!(3.0), serde_json::json!(4.0)]);
}

#[test]
fn the_probe_hash_depends_on_the_runtimes_dependencies_only() {
    use legionc::codegen::lock_closure;
    let lock = include_str!("../../Cargo.lock");
    let closure = lock_closure(lock, "legion-runtime").unwrap();
    let names: Vec<&str> = closure.lines().map(|l| l.split(' ').next().unwrap()).collect();
    for needed in ["legion-runtime", "tract-core", "tract-linalg", "serde_json", "sha2"] {
        assert!(names.contains(&needed), "{needed}");
    }
    for compiler_only in ["plotters", "ssh2", "tera", "clap", "legionc", "tract-onnx"] {
        assert!(!names.contains(&compiler_only), "{compiler_only}");
    }
    // A package added to the lock that the runtime does not use leaves the closure as is;
    // a changed version of one it uses does not.
    let added = format!("{lock}\n[[package]]\nname = \"zzz-unused\"\nversion = \"1.0.0\"\n");
    assert_eq!(lock_closure(&added, "legion-runtime").unwrap(), closure);
    let bumped = lock.replacen("name = \"sha2\"\nversion = \"0.10.", "name = \"sha2\"\nversion = \"0.10.99", 1);
    assert_ne!(bumped, lock);
    assert_ne!(lock_closure(&bumped, "legion-runtime").unwrap(), closure);
}

/// A NaN or an infinity never passes a comparison with tract (a float max would skip a NaN).
#[test]
fn comparisons_refuse_nan_and_infinity() {
    use legionc::model::reference::{check, compare};
    use legionc::runtime::tract_core::prelude::Tensor;
    let good = Tensor::from_shape(&[1, 3], &[1.0f32, 2.0, 3.0]).unwrap();
    assert!(check(&good, &good, "x").is_ok());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let t = Tensor::from_shape(&[1, 3], &[1.0f32, bad, 3.0]).unwrap();
        let e = check(&t, &good, "the fleet's output").unwrap_err().to_string();
        assert!(e.contains("the output compared holds") && e.contains("index 1"), "{e}");
        assert!(compare(&good, &t).unwrap_err().to_string().contains("the reference output holds"));
    }
}

/// A `.npy` input cut short, or not a `.npy` at all, is an error naming the file, never a panic.
#[test]
fn a_truncated_npy_is_an_error() {
    use legionc::runtime::tract_core::prelude::Tensor;
    let d = crate::TempDir::new("npy");
    let t = Tensor::from_shape(&[1, 3, 4, 4], &(0..48).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let p = d.path("x.npy");
    legionc::run::write_npy(&p, &t).unwrap();
    assert_eq!(legionc::run::read_npy(&p).unwrap(), t);
    let bytes = std::fs::read(&p).unwrap();
    for cut in [bytes.len() - 3, bytes.len() / 2, 20, 5, 0] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = format!("{:#}", legionc::run::read_npy(&p).unwrap_err());
        assert!(e.contains("x.npy"), "cut at {cut}: {e}");
    }
}

/// A stream's frames per second while every lane is busy: per lane, from its first answer to
/// its last before the last frame was sent; lanes started together do not inflate it.
#[test]
fn the_busy_streams_frames_per_second_is_summed_over_lanes() {
    use legionc::run::steady_fps;
    // Two lanes started together: one answers every second, the other every 1.1 s; the last
    // frame was sent at 4.0 s (later answers are the drain).
    let answers = [(0, 1.0), (1, 1.1), (0, 2.0), (1, 2.2), (0, 3.0), (1, 3.3), (0, 4.0), (1, 4.4), (0, 5.0)];
    let fps = steady_fps(&answers, 2, 4.0).unwrap();
    assert!((fps - (3.0 / 3.0 + 2.0 / 2.2)).abs() < 1e-9, "{fps}");
    // One lane: its answers after the first over the time since.
    assert!((steady_fps(&[(0, 2.0), (0, 4.0), (0, 6.0)], 1, 6.0).unwrap() - 0.5).abs() < 1e-9);
    // A lane that answered once by then: no busy figure.
    assert_eq!(steady_fps(&answers, 2, 1.5), None);
    assert_eq!(steady_fps(&answers, 3, 4.0), None, "a lane that never answered");
}
