//! `legionc suite`: the paper's grid, its fleets, and one small run end to end.

use crate::fleet_run::boards_target_dir;
use crate::{legionc, TempDir};
use legionc::suite::{fleet_yaml, grid, Mix};
use std::path::Path;

#[test]
fn the_grid_is_the_papers() {
    let g = grid(false);
    let names: Vec<String> = g.iter().map(|m| m.name()).collect();
    for f in 1..=6 {
        assert!(names.contains(&format!("{f}F")), "{names:?}");
    }
    for o in 1..=3 {
        assert!(names.contains(&format!("{o}O")), "{names:?}");
    }
    // every mix nF+mO with n, m ≥ 1, m ≤ 3, n + m ≤ 6, once
    let mixes: Vec<&Mix> = g.iter().filter(|m| m.firefly > 0 && m.odroid > 0).collect();
    assert_eq!(mixes.len(), 5 + 4 + 3);
    assert!(g.iter().all(|m| m.boards() <= 6 && m.odroid <= 3));
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    // the quick grid is a part of it, from 2 to 6 boards
    let q = grid(true);
    assert!(q.iter().all(|m| g.contains(m)));
    assert_eq!(q.iter().map(|m| m.boards()).max(), Some(6));
    // names parse back
    for m in &g {
        assert_eq!(m.name().parse::<Mix>().unwrap(), *m);
    }
    assert!("2X".parse::<Mix>().is_err() && "F".parse::<Mix>().is_err() && "0F".parse::<Mix>().is_err());
}

#[test]
fn grid_fleet_files_are_valid_fleets() {
    for m in grid(false) {
        let text = fleet_yaml("resnet18", m, 27300);
        let f = legionc::fleet::parse(&text, Path::new("suite.yaml"), Some(Path::new("/tmp/x"))).unwrap_or_else(|e| panic!("{}: {e:#}\n{text}", m.name()));
        assert_eq!(f.boards.len(), m.boards());
        assert_eq!(f.boards.iter().filter(|b| b.name.starts_with("odroid")).count(), m.odroid);
        // the coordinator is the fastest kind present
        let fastest = f.boards.iter().map(|b| b.nominal_speed()).fold(0.0, f64::max);
        assert_eq!(f.coordinator().nominal_speed(), fastest);
    }
}

#[test]
fn suite_runs_verifies_and_writes_its_report() {
    let d = TempDir::new("suite");
    let readme = d.path("README.md");
    std::fs::write(&readme, format!("# x\n\nbefore\n\n{}\nold\n{}\n\nafter\n", legionc::suite::README_BEGIN, legionc::suite::README_END)).unwrap();
    let out = d.path("figures");
    let o = legionc()
        .args(["suite", "--fleets", "2F,1F+1O", "--models", "vgg16-tiny", "--strategies", "legion,legion-star,one-group,single", "--frames", "1", "--candidates", "2", "--port", "28800", "--time-scale", "2"])
        .arg("--out")
        .arg(&out)
        .arg("--work-dir")
        .arg(d.path("work"))
        .arg("--target-dir")
        .arg(boards_target_dir())
        .arg("--readme")
        .arg(&readme)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("suite.json")).unwrap()).unwrap();
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 4, "{s}");
    // --time-scale 2: the boards ran twice slower than their twins, and it is said
    assert!(s["time_scale"] == 2.0 && rows.iter().all(|r| r["time_scale"] == 2.0), "{s}");
    for r in rows {
        // every plan's output was checked against tract's single run
        assert!(r["max_rel_diff"].as_f64().unwrap() <= 1e-4, "{r}");
        assert!(r["measured_latency_s"].as_f64().unwrap() > 0.0 && r["predicted_latency_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["plan_mode"].as_str().unwrap().contains("generic board"), "{r}");
    }
    // speedups are relative to the measured single-board plan
    for r in rows.iter().filter(|r| r["strategy"] == "single") {
        assert!((r["speedup"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{r}");
    }
    let single = rows.iter().find(|r| r["strategy"] == "single" && r["fleet"] == "2F").unwrap();
    let groups = single["groups"].as_u64().unwrap();
    assert_eq!(groups, 1, "{single}");
    // figures: bars per strategy and the Gantt chart of the largest fleet's legion frame
    let bars = std::fs::read_to_string(out.join("speedup-vgg16-tiny.svg")).unwrap();
    assert!(bars.starts_with("<svg") && ["legion", "one-group", "single", "2F", "1F+1O"].iter().all(|w| bars.contains(w)), "{bars}");
    // latency against frames per second: a point per plan, a colour per fleet; the table
    // beside it
    let fps = std::fs::read_to_string(out.join("throughput-vgg16-tiny.svg")).unwrap();
    assert!(fps.starts_with("<svg") && ["legion", "single", "2F", "1F+1O", "latency (ms)", "frames per second"].iter().all(|w| fps.contains(w)), "{fps}");
    assert_eq!(fps.matches("<circle").count(), rows.len() + 2, "a point per plan and a legend mark per fleet: {fps}");
    let md = std::fs::read_to_string(out.join("suite.md")).unwrap();
    assert!(md.contains("frames per second with 2 frames in flight, measured / predicted") && md.contains("(throughput-vgg16-tiny.svg)"), "{md}");
    assert!(md.contains("the boards ran 2 times slower than their twins, times given in the twins' time"), "{md}");
    for r in rows {
        assert!(r["measured_pipelined_fps"].as_f64().unwrap() > 0.0, "{r}");
    }
    // the objective's candidates, each run as a stream: per fleet the latency and throughput
    // objectives' choices, every output checked; a figure per fleet, measured and predicted
    let cands = s["candidates"].as_array().unwrap();
    for fleet in ["2F", "1F+1O"] {
        let mine: Vec<&serde_json::Value> = cands.iter().filter(|c| c["fleet"] == fleet).collect();
        assert!(!mine.is_empty() && mine.len() <= 2, "--candidates 2: {s}");
        for objective in ["latency", "throughput"] {
            assert!(mine.iter().any(|c| c["chosen_by"].as_array().unwrap().iter().any(|o| o == objective)), "{fleet}: {objective}: {s}");
        }
        for c in &mine {
            assert!(c["max_rel_diff"].as_f64().unwrap() <= 1e-4 && c["measured_fps"].as_f64().unwrap() > 0.0 && c["predicted_fps"].as_f64().unwrap() > 0.0, "{c}");
            let lanes = c["lanes"].as_array().unwrap();
            let boards: usize = lanes.iter().map(|l| l.as_array().unwrap().len()).sum();
            assert_eq!(boards, 2, "every board in one lane: {c}");
            assert!(c["frames"].as_u64().unwrap() >= 2 * lanes.len() as u64 * c["in_flight"].as_u64().unwrap(), "{c}");
        }
        let svg = std::fs::read_to_string(out.join(legionc::suite::candidates_figure("vgg16-tiny", fleet))).unwrap();
        assert_eq!(svg.matches("<circle").count(), 2 * mine.len() + 2, "a measured and a predicted point per candidate, two legend marks: {svg}");
        assert!(svg.contains("measured") && svg.contains("predicted"), "{svg}");
    }
    assert!(md.contains("the objective's candidates") && md.contains("(throughput-vgg16-tiny-1F-1O.svg)"), "{md}");
    let gantt = std::fs::read_to_string(out.join("gantt.svg")).unwrap();
    assert!(gantt.contains("compute") && gantt.contains("firefly-1") && gantt.contains("<rect"), "{gantt}");
    assert_eq!(s["gantt"]["strategy"], "legion");
    assert_eq!(s["gantt"]["frame"]["topology"], "mesh");
    // legion-star: the same strategy in the star topology, its frame drawn too
    assert_eq!(s["gantt_star"]["frame"]["topology"], "star", "{s}");
    let star = std::fs::read_to_string(out.join("gantt-star.svg")).unwrap();
    assert!(star.contains("receive input band") && gantt.contains("wait for input rows"), "{star}");
    assert!(rows.iter().any(|r| r["strategy"] == "legion-star" && r["fleet"] == "2F"), "{s}");
    for r in rows {
        assert!(r["overrun_share"].as_f64().unwrap() >= 0.0 && r["slot_wait_s"].as_f64().unwrap() >= 0.0, "{r}");
    }
    // the README's generated section is replaced, the rest kept; figures linked relative to it
    let md = std::fs::read_to_string(&readme).unwrap();
    assert!(md.starts_with("# x\n\nbefore\n") && md.ends_with("\n\nafter\n") && !md.contains("\nold\n"), "{md}");
    assert!(md.contains("(figures/speedup-vgg16-tiny.svg)") && md.contains("| 1F+1O |"), "{md}");
    // explain --plan gives a strategy's plan the prediction the suite reported, from the same
    // profiles; a plan for other boards is refused, naming the file
    let fleets = d.path("work").join("fleets");
    let one = rows.iter().find(|r| r["strategy"] == "one-group" && r["fleet"] == "1F+1O").unwrap();
    let explain = |fleet: &str, plan: &str| legionc().arg("explain").arg(fleets.join(fleet)).arg("--plan").arg(fleets.join(plan)).output().unwrap();
    let o = explain("vgg16-tiny-1F-1O.yaml", "vgg16-tiny-1F-1O/bench/one-group.plan.json");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    let total: f64 = text.lines().find_map(|l| l.strip_prefix("predicted total: ")?.strip_suffix(" ms")).unwrap().parse().unwrap();
    assert!((total - one["predicted_latency_s"].as_f64().unwrap() * 1e3).abs() < 0.051, "{total} ms vs {one}");
    let o = explain("vgg16-tiny-1F-1O.yaml", "vgg16-tiny-2F/bench/one-group.plan.json");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("one-group.plan.json: a plan for boards"), "{err}");
    // nothing is left running
    for port in 28800..28802 {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still answers");
    }
}

#[test]
fn suite_rejects_bad_arguments_before_running() {
    let d = TempDir::new("suite-bad");
    let o = legionc().args(["suite", "--models", "vgg17", "--out"]).arg(d.path("o")).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("'vgg17' is not a zoo model"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!d.path("o").exists(), "nothing is written for a bad argument");
    let o = legionc().args(["suite", "--fleets", "2Q"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'2Q' is not a count followed by F or O"));
    for bad in ["0.5", "nan", "fast"] {
        let o = legionc().args(["suite", "--time-scale", bad]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("'{bad}' is not a number of at least 1")), "{}", String::from_utf8_lossy(&o.stderr));
    }
}
