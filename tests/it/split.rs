//! Splitting a model into fused groups and row bands gives exactly tract's single-run answer.

use crate::{full_size, zoo_model, FULL, TINY};
use legionc::model::{reference, LoadedModel};
use legionc::runtime::exec::{band_graph, run, runnable, section_graph};
use legionc::runtime::halo::{group_band, GroupBand};
use legionc::runtime::plan::{to_nchw, LocalFleet, Plan, PlanGroup, Topology, PLAN_VERSION};
use legionc::runtime::tract_core::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// What a model's outputs must be: tract-onnx's whole-model run, and the unsplit output of the
/// splittable part through legionc's executor.
pub struct Expected {
    pub input: Tensor,
    pub output: Tensor,
    pub splittable: Tensor,
}

pub fn expected(m: &LoadedModel, seed: u64) -> Expected {
    let input = reference::random_input(&m.ir.user_input_shape(), seed);
    let output = reference::run(&m.onnx, &input).unwrap();
    let whole = runnable(section_graph(&m.ir, 0, m.ir.split_end()).unwrap()).unwrap();
    let splittable = run(&whole, to_nchw(&m.ir, input.clone()).unwrap()).unwrap();
    Expected { input, output, splittable }
}

pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> Result<(), TestCaseError> {
    let (diff, scale) = reference::compare(got, want).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(diff <= 1e-4 * scale, "{what}: max |diff| {diff:e} > 1e-4 × max |output| {scale:e}");
    Ok(())
}

/// A random fused-layer configuration: group ends among the splittable cut points.
fn flc_strategy(cuts: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let end = *cuts.last().unwrap();
    let inner: Vec<usize> = cuts.into_iter().filter(|&c| c > 0 && c < end).collect();
    proptest::sample::subsequence(inner.clone(), 0..=inner.len()).prop_map(move |mut ends| {
        ends.push(end);
        ends
    })
}

/// Random rows for `boards` boards adding up to `h`: zero-row boards, 1-row bands and uneven
/// splits all come up.
fn rows_strategy(h: usize, boards: usize) -> impl Strategy<Value = Vec<usize>> {
    let cuts = proptest::collection::vec(0..=h, boards - 1);
    let ones = proptest::collection::vec(0..=1usize, boards);
    prop_oneof![
        cuts.prop_map(move |mut c| {
            c.push(0);
            c.push(h);
            c.sort();
            c.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        }),
        // mostly single rows, the last board takes the rest
        ones.prop_map(move |o| {
            let mut r: Vec<usize> = o.iter().map(|&x| x.min(h)).collect();
            let mut sum: usize = r.iter().sum();
            while sum > h {
                let i = r.iter().position(|&x| x > 0).unwrap();
                r[i] -= 1;
                sum -= 1;
            }
            *r.last_mut().unwrap() += h - sum;
            r
        }),
    ]
}

/// A random plan: 1–8 boards, random groups and rows, star or mesh (each group but the last
/// computing its edges first or not), and each Dense layer of the tail whole or split by
/// random features.
pub fn plan_strategy(m: &'static LoadedModel) -> impl Strategy<Value = Plan> {
    let cuts = m.ir.split_cut_points();
    (1..=8usize, flc_strategy(cuts)).prop_flat_map(move |(boards, ends)| {
        let per_group: Vec<_> = ends.iter().map(|&to| rows_strategy(m.ir.rows(to), boards)).collect();
        let dense = legionc::strategy::splittable_dense(&m.ir);
        let per_dense: Vec<_> = dense.iter().map(|&d| proptest::option::of(rows_strategy(m.ir.nodes[d].shape[1], boards))).collect();
        let ends = ends.clone();
        let edges = proptest::collection::vec(any::<bool>(), ends.len());
        (per_group, per_dense, any::<bool>(), edges).prop_map(move |(rows, cols, mesh, edges)| {
            let tail = dense.iter().zip(cols).filter_map(|(&node, c)| c.map(|cols| legionc::runtime::plan::TailSplit { node, cols })).collect();
            let mut from = 0;
            let last = ends.len() - 1;
            let groups = ends
                .iter()
                .zip(rows)
                .enumerate()
                .map(|(i, (&to, rows))| {
                    // A mesh group before another may compute its edges first.
                    let g = PlanGroup { from, to, rows, edges_first: mesh && i < last && edges[i] };
                    from = to;
                    g
                })
                .collect();
            Plan {
                version: PLAN_VERSION,
                model_sha256: m.sha256.clone(),
                boards: (0..boards).map(|i| format!("b{i}")).collect(),
                groups,
                topology: if mesh { Topology::Mesh } else { Topology::Star },
                tail,
                deployment: None,
                lanes: vec![],
                in_flight: 1,
                fallbacks: vec![],
            }
        })
    })
}

/// A test case's failure from an error of the code under test.
pub fn fail(e: anyhow::Error) -> TestCaseError {
    TestCaseError::fail(format!("{e:#}"))
}

/// Run `check` on `cases` random plans of zoo model `name`; a failure panics naming the model
/// and the (shrunk) plan.
pub fn for_random_plans(name: &str, cases: u32, check: impl Fn(&'static LoadedModel, Plan) -> Result<(), TestCaseError>) {
    let m = zoo_model(name);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner.run(&plan_strategy(m), |plan| check(m, plan)).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn check_random_plans(name: &str, cases: u32) {
    let want = expected(zoo_model(name), 11);
    for_random_plans(name, cases, |m, plan| {
        let mut fleet = LocalFleet::new(m.ir.clone(), plan).map_err(fail)?;
        let split = fleet.infer_splittable(want.input.clone()).map_err(fail)?;
        assert_close("splittable part", &split, &want.splittable)?;
        let out = fleet.infer(want.input.clone()).map_err(fail)?;
        assert_close("model output vs tract-onnx", &out, &want.output)?;
        Ok(())
    });
}

#[test]
fn tiny_models_random_plans_match_tract() {
    for name in TINY {
        check_random_plans(name, 12);
    }
}

#[test]
fn full_size_models_random_plans_match_tract() {
    if !full_size() {
        eprintln!("skipped: set LEGION_FULL=1 to run the full-size zoo");
        return;
    }
    for name in FULL {
        check_random_plans(name, 3);
    }
}

/// Stitch a plan by hand, band by band, letting `mutate` change a band's geometry first.
fn stitch(m: &LoadedModel, plan: &Plan, input: &Tensor, mutate: &dyn Fn(&mut GroupBand)) -> Tensor {
    let mut x = to_nchw(&m.ir, input.clone()).unwrap();
    for g in &plan.groups {
        let mut parts = vec![];
        for out in g.bands() {
            if out.is_empty() {
                continue;
            }
            let mut band = group_band(&m.ir, g.group(), out);
            mutate(&mut band);
            let y = run(&runnable(band_graph(&m.ir, &band).unwrap()).unwrap(), x.slice(2, band.input.start, band.input.end).unwrap()).unwrap();
            parts.push(y);
        }
        x = Tensor::stack_tensors(2, &parts).unwrap();
    }
    x
}

/// Mutation check: a band whose halo is one row short (the missing row replaced by zero
/// padding, so every shape still fits) must be caught by the comparison the property tests use.
#[test]
fn a_halo_one_row_short_is_caught() {
    let mut mutated = 0;
    for name in TINY {
        let m = zoo_model(name);
        let want = expected(m, 11);
        let ends = legionc::solve::fused_groups(&m.ir, legionc::solve::Fusion::Blocks);
        let boards: Vec<(String, f64)> = (0..3).map(|i| (format!("b{i}"), 1.0)).collect();
        let plan = legionc::solve::plan_from(&m.ir, &m.sha256, &boards, &ends, Topology::Star).unwrap();
        let good = stitch(m, &plan, &want.input, &|_| {});
        assert_close("unmutated stitch", &good, &want.splittable).unwrap();
        let shrunk = std::cell::Cell::new(false);
        let shrink_top_halo = |b: &mut GroupBand| {
            // The first layer that reads rows above its band from a real neighbour.
            let first = b.group.from + 1;
            if m.ir.nodes[first].op.window().is_none() {
                return;
            }
            if let Some(l) = b.layers.iter_mut().find(|l| l.node == first && l.inputs[0].start > 0 && l.pad_top == 0) {
                l.inputs[0].start += 1;
                l.pad_top = 1;
                b.input.start += 1;
                shrunk.set(true);
            }
        };
        let bad = stitch(m, &plan, &want.input, &shrink_top_halo);
        if !shrunk.get() {
            // Every band reads the whole input (U-Net: the receptive field spans the image).
            continue;
        }
        mutated += 1;
        let (diff, scale) = reference::compare(&bad, &want.splittable).unwrap();
        assert!(diff > 1e-4 * scale, "{name}: a halo one row short went unnoticed (diff {diff:e}, scale {scale:e})");
    }
    assert!(mutated >= TINY.len() - 1, "only {mutated} models had a halo to shorten");
}

#[test]
fn plans_are_validated_against_the_model() {
    let m = zoo_model("resnet18-tiny");
    let boards: Vec<(String, f64)> = vec![("a".into(), 1.0), ("b".into(), 1.0)];
    let mut plan = legionc::solve::plan_from(&m.ir, &m.sha256, &boards, &[m.ir.split_end()], Topology::Star).unwrap();
    assert!(plan.validate(&m.ir).is_ok());
    // rows that do not add up
    plan.groups[0].rows[0] += 1;
    let e = plan.validate(&m.ir).unwrap_err().to_string();
    assert!(e.contains("add up"), "{e}");
    plan.groups[0].rows[0] -= 1;
    // a group ending inside a residual block
    let cuts = m.ir.split_cut_points();
    let inside = (1..m.ir.split_end()).find(|v| !cuts.contains(v)).unwrap();
    plan.groups = vec![
        PlanGroup { from: 0, to: inside, rows: vec![m.ir.rows(inside), 0], edges_first: false },
        PlanGroup { from: inside, to: m.ir.split_end(), rows: vec![m.ir.rows(m.ir.split_end()), 0], edges_first: false },
    ];
    let e = plan.validate(&m.ir).unwrap_err().to_string();
    assert!(e.contains("not a cut point"), "{e}");
}

#[test]
fn plan_hash_is_stable_and_sensitive() {
    let m = zoo_model("vgg16-tiny");
    let boards: Vec<(String, f64)> = vec![("a".into(), 1.0), ("b".into(), 2.0)];
    let p1 = legionc::solve::plan_from(&m.ir, &m.sha256, &boards, &[m.ir.split_end()], Topology::Star).unwrap();
    let p2 = legionc::solve::plan_from(&m.ir, &m.sha256, &boards, &[m.ir.split_end()], Topology::Star).unwrap();
    assert_eq!(p1.hash(), p2.hash());
    let back: Plan = serde_json::from_slice(&serde_json::to_vec_pretty(&p1).unwrap()).unwrap();
    assert_eq!(back.hash(), p1.hash());
    let mut p3 = p1.clone();
    p3.groups[0].rows.swap(0, 1);
    assert_ne!(p3.hash(), p1.hash());
}

#[test]
fn emulated_computations_hold_one_slot_per_core() {
    use legionc::runtime::link::emulation_slot_in;
    let d = crate::TempDir::new("slots");
    let a = emulation_slot_in(&d.0, 2).expect("a free slot");
    let b = emulation_slot_in(&d.0, 2).expect("the second slot");
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = d.0.clone();
    let waiter = std::thread::spawn(move || {
        let s = emulation_slot_in(&dir, 2);
        tx.send(s.is_some()).unwrap();
        drop(s);
    });
    // Both slots are held: the third computation waits...
    assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "a third slot was granted while two were held");
    // ...until one is released.
    drop(a);
    drop(b);
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(20)), Ok(true));
    waiter.join().unwrap();
}

#[test]
fn the_drift_reference_is_calibrated_once_per_machine_and_shared() {
    use legionc::runtime::link::drift::{calibrated_in, scale_for};
    // Several first processes at once (threads here) all end up with the one value stored.
    let d = crate::TempDir::new("drift");
    let got: Vec<f64> = (0..3)
        .map(|_| {
            let dir = d.0.clone();
            std::thread::spawn(move || calibrated_in(&dir))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let stored: u64 = std::fs::read_to_string(d.path("reference-v1.ns")).unwrap().trim().parse().unwrap();
    assert!(stored > 0);
    for g in &got {
        assert_eq!(*g, stored as f64 * 1e-9, "a process scaled to another calibration than the stored one");
    }
    // Nothing but the stored value is left in the dir.
    assert_eq!(std::fs::read_dir(&d.0).unwrap().count(), 1);
    // A stored value is used as it is, not measured again.
    let e = crate::TempDir::new("drift-stored");
    std::fs::write(e.path("reference-v1.ns"), "1234567\n").unwrap();
    assert_eq!(calibrated_in(&e.0), 1234567e-9);
    // The correction: calibrated ÷ current, within [½, 2].
    assert_eq!(scale_for(1.0, 1.25), 0.8);
    assert_eq!(scale_for(1.0, 0.8), 1.25);
    assert_eq!(scale_for(1.0, 0.25), 2.0);
    assert_eq!(scale_for(1.0, 4.0), 0.5);
}

/// Random plans with a fallback for every worker (the lost board's rows and features handed
/// to its neighbours): every board's model file, as codegen writes it, gives under the plan
/// exactly its slice of each split layer (no fallback weights held while no board is lost),
/// and under each fallback its fallback slices; every variant's slices, computed by each
/// board from what it loaded, concatenate to the whole layer's output.
#[test]
fn every_plan_a_board_may_run_finds_its_slices_in_its_model_file() {
    use legionc::runtime::board::{load_model_for, BoardConfig, ModelFile, Peer};
    use legionc::runtime::exec::{dense_slice, dense_slice_of};
    use legionc::runtime::plan::{Fallback, TailSplit};
    use legionc::solve::hand_over;
    let dir = crate::TempDir::new("slices");
    let checked = std::sync::atomic::AtomicUsize::new(0);
    for_random_plans("vgg16-tiny", 24, |m, mut plan| {
        if plan.tail.is_empty() || plan.boards.len() < 2 {
            return Ok(());
        }
        let n = plan.boards.len();
        for lost in 1..n {
            let groups: Option<Vec<PlanGroup>> = plan.groups.iter().map(|g| hand_over(&g.rows, lost).map(|rows| PlanGroup { rows, ..g.clone() })).collect();
            let tail: Option<Vec<TailSplit>> = plan.tail.iter().map(|t| hand_over(&t.cols, lost).map(|cols| TailSplit { cols, ..t.clone() })).collect();
            if let (Some(groups), Some(tail)) = (groups, tail) {
                plan.fallbacks.push(Fallback { lost: vec![lost], groups, tail });
            }
        }
        plan.validate(&m.ir).map_err(fail)?;
        let variants = plan.variants();
        let peers: Vec<Peer> = (0..n).map(|i| Peer { name: format!("b{i}"), addr: format!("127.0.0.1:{}", 1 + i), link: legionc::runtime::link::LinkSpec { bandwidth_mbps: 100.0, latency_ms: 0.5 }, threads: 1, speed: None }).collect();
        // Per variant, per split layer: each board's slice output, in board order.
        let mut parts: Vec<Vec<Vec<Tensor>>> = variants.iter().map(|v| vec![Vec::new(); v.tail.len()]).collect();
        let inputs: Vec<Tensor> = plan.tail.iter().map(|t| reference::random_input(&m.ir.nodes[t.node - 1].shape, t.node as u64)).collect();
        for b in 0..n {
            let bytes = legionc::runtime::modelfile::write(&plan.board_model((*m.ir).clone(), b), &|id| plan.board_needs(b, b == 0, id));
            let path = dir.path(&format!("b{b}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            let sha = legionc::runtime::plan::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            let cfg = BoardConfig { board: format!("b{b}"), index: b, plan: plan.clone(), peers: peers.clone(), coordinator: 0, speed: None, threads: 1, cores: vec![], model_sha256: sha.clone(), deadline_ms: 1000, heartbeat_ms: None };
            let file = ModelFile { path, sha256: Some(sha) };
            for (p, v) in variants.iter().enumerate() {
                let held = load_model_for(&cfg, &file, p).map_err(fail)?;
                for (k, t) in v.tail.iter().enumerate() {
                    let cols = t.bands()[b];
                    if cols.is_empty() {
                        continue;
                    }
                    let legionc::runtime::ir::Op::Dense { weight, .. } = &held.nodes[t.node].op else { unreachable!() };
                    prop_assert_eq!(weight.shape[1], cols.len(), "board {} plan {}: node {} holds {} features for its slice {}", b, p, t.node, weight.shape[1], cols);
                    let r = dense_slice_of(&held, t.node, cols, cols).map_err(fail)?;
                    parts[p][k].push(run(&r, inputs[k].clone()).map_err(fail)?);
                }
            }
        }
        for (p, v) in variants.iter().enumerate() {
            for (k, t) in v.tail.iter().enumerate() {
                let whole = dense_slice(&m.ir, t.node, legionc::runtime::halo::Rows::new(0, m.ir.nodes[t.node].shape[1])).map_err(fail)?;
                let want = run(&whole, inputs[k].clone()).map_err(fail)?;
                let got = Tensor::stack_tensors(1, &parts[p][k]).map_err(|e| fail(e.into()))?;
                assert_close(&format!("plan {p}, node {}", t.node), &got, &want)?;
            }
        }
        if variants.len() > 1 {
            checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    });
    let checked = checked.into_inner();
    assert!(checked >= 3, "only {checked} random plans had a split tail and a fallback");
}
