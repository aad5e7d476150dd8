//! The solver against brute force under the same costs: the integer row split, and the
//! fused-layer configuration.

use crate::{zoo_model, TINY};
use legionc::cost::{BoardCost, CostModel, Fit};
use legionc::runtime::halo::Group;
use legionc::runtime::link::LinkSpec;
use legionc::runtime::plan::Topology;
use legionc::solve::{flc, mesh_steps, min_max_rows, solve_group, split_rows, tail_splits, Split};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every way to split `total` rows over `boards` boards.
fn splits(total: usize, boards: usize) -> Vec<Vec<usize>> {
    if boards == 1 {
        return vec![vec![total]];
    }
    (0..=total)
        .flat_map(|r| splits(total - r, boards - 1).into_iter().map(move |mut s| {
            s.insert(0, r);
            s
        }))
        .collect()
}

#[test]
fn row_split_equals_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..400 {
        let boards = rng.gen_range(1..=4);
        let total = rng.gen_range(1..=9);
        // Random nondecreasing tables, some with a fixed cost that makes a board not pay.
        let costs: Vec<Vec<f64>> = (0..boards)
            .map(|_| {
                let fixed = if rng.gen_bool(0.3) { rng.gen_range(0.0..20.0) } else { 0.0 };
                let mut c = vec![0.0];
                let mut t = fixed;
                for _ in 0..total {
                    t += rng.gen_range(0.0..5.0f64).round();
                    c.push(t);
                }
                c
            })
            .collect();
        let (rows, worst) = min_max_rows(&costs, total);
        assert_eq!(rows.iter().sum::<usize>(), total, "case {case}");
        let got = rows.iter().enumerate().map(|(b, &r)| costs[b][r]).fold(0.0, f64::max);
        assert_eq!(got, worst, "case {case}: reported maximum");
        let best = splits(total, boards).iter().map(|s| s.iter().enumerate().map(|(b, &r)| costs[b][r]).fold(0.0, f64::max)).fold(f64::INFINITY, f64::min);
        assert_eq!(worst, best, "case {case}: costs {costs:?} split {rows:?}");
    }
}

/// A cost model of a tiny model's first `segments` segments with random E fits and links.
fn random_cost_model(name: &str, segments: usize, boards: usize, seed: u64) -> CostModel {
    let m = zoo_model(name);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cuts: Vec<usize> = m.ir.split_cut_points().into_iter().take(segments + 1).collect();
    let boards = (0..boards)
        .map(|b| BoardCost {
            name: format!("b{b}"),
            link: LinkSpec { bandwidth_mbps: rng.gen_range(5.0..200.0), latency_ms: rng.gen_range(0.0..2.0) },
            e: (0..cuts.len() - 1).map(|_| Fit::line(rng.gen_range(0.0..1e-3), rng.gen_range(0.0..1e-3))).collect(),
        })
        .collect();
    CostModel { model: m.ir.clone(), cuts, boards, coordinator: 0, tail_s: 0.0, group_e: None, topology: Topology::Star, dense: vec![], memory: None, edges_first: vec![] }
}

/// The mesh's DP against every configuration, under the same costs: each group split by its
/// own min–max, a plan's cost the sum of its steps (a group's exchange after the previous
/// group's split, and its bands).
#[test]
fn mesh_flc_equals_brute_force() {
    for (i, name) in TINY.iter().enumerate() {
        for seed in 0..3u64 {
            let mut cm = random_cost_model(name, 7, 2 + (seed as usize % 3), seed + 100 * i as u64);
            cm.topology = Topology::Mesh;
            let k = cm.cuts.len() - 1;
            let dp = flc(&cm, Split::MinMax, &|_, _| true);
            let plan = |groups: &[(usize, usize)]| -> Vec<(Group, Vec<usize>)> {
                groups
                    .iter()
                    .map(|&(a, b)| {
                        let g = Group { from: cm.cuts[a], to: cm.cuts[b] };
                        (g, split_rows(&cm, g, Split::MinMax, Some((a == 0, b == k))))
                    })
                    .collect()
            };
            let dp_plan: Vec<(Group, Vec<usize>)> = dp.iter().map(|g| (g.group, g.rows.clone())).collect();
            let dp_steps = mesh_steps(&cm, &dp_plan);
            let mut best = f64::INFINITY;
            for mask in 0u32..(1 << (k - 1)) {
                let mut from = 0;
                let mut groups = vec![];
                for j in 1..=k {
                    if j == k || mask & (1 << (j - 1)) != 0 {
                        groups.push((from, j));
                        from = j;
                    }
                }
                best = best.min(mesh_steps(&cm, &plan(&groups)));
            }
            assert!((dp_steps - best).abs() <= 1e-9 * best.max(1e-3), "{name} seed {seed}: DP {dp_steps} vs brute force {best}");
            // The plan's latencies are its simulated timeline's: they add up to its total.
            let timeline = cm.mesh_timeline(&dp_plan);
            let sum: f64 = dp.iter().map(|g| g.latency_s).sum();
            assert!((sum - timeline.total_s).abs() < 1e-9, "{sum} vs {}", timeline.total_s);
        }
    }
}

/// In the mesh only the first group's input leaves the coordinator: on a fleet whose
/// coordinator link is slow and whose boards are fast, the mesh's plan is predicted faster
/// than the star's.
#[test]
fn the_mesh_saves_the_coordinators_port() {
    let mut cm = random_cost_model("vgg16-tiny", 6, 4, 3);
    for b in &mut cm.boards {
        b.link = LinkSpec { bandwidth_mbps: 20.0, latency_ms: 0.5 };
    }
    let star = flc(&cm, Split::MinMax, &|_, _| true);
    let star_total: f64 = star.iter().map(|g| g.latency_s).sum();
    cm.topology = Topology::Mesh;
    let mesh = flc(&cm, Split::MinMax, &|_, _| true);
    let mesh_total: f64 = mesh.iter().map(|g| g.latency_s).sum();
    assert!(mesh_total < star_total, "mesh {mesh_total} vs star {star_total}");
}

/// Two equal boards and two groups split unevenly the opposite ways (3/4 then 1/4 of the
/// rows): with every band whole, the board with the small first band waits for its neighbour's
/// whole band before its large second one. Computing the first group's edges first, the wait
/// is the edge rows alone: predicted faster, chosen by `edges_first`, at the price of more
/// compute (the parts' halos).
#[test]
fn edges_first_hides_a_neighbours_wait() {
    let mut cm = random_cost_model("vgg16-tiny", 2, 2, 5);
    cm.topology = Topology::Mesh;
    for b in &mut cm.boards {
        b.link = LinkSpec { bandwidth_mbps: 1000.0, latency_ms: 0.1 };
        b.e = (0..2).map(|_| Fit::line(1e-4, 1e-3)).collect();
    }
    let (h0, h1) = (cm.model.rows(cm.cuts[1]), cm.model.rows(cm.cuts[2]));
    let groups = vec![
        (Group { from: cm.cuts[0], to: cm.cuts[1] }, vec![h0 * 3 / 4, h0 - h0 * 3 / 4]),
        (Group { from: cm.cuts[1], to: cm.cuts[2] }, vec![h1 / 4, h1 - h1 / 4]),
    ];
    let whole = cm.mesh_timeline(&groups).total_s;
    let chosen = legionc::solve::edges_first(&cm, &groups);
    assert_eq!(chosen, vec![groups[0].0], "the first group computes its edges first, the last cannot");
    let edges = legionc::cost::CostModel { edges_first: chosen, ..cm.clone() };
    let first = edges.mesh_timeline(&groups).total_s;
    assert!(first < 0.85 * whole, "edges first {first} s vs whole bands {whole} s");
    let compute = |cm: &CostModel| cm.busy(&groups, &[]).iter().map(|b| b.compute_s).sum::<f64>();
    assert!(compute(&edges) > compute(&cm), "the parts recompute their halos");
    // The star has no exchange to hide.
    cm.topology = Topology::Star;
    assert!(legionc::solve::edges_first(&cm, &groups).is_empty());
}

/// Balancing keeps every group's largest band cost (its min–max) and spreads the rows that
/// do not divide evenly: on equal boards, the most any board computes over the plan is never
/// more than with the DP's splits, and less on a plan of 6 groups over 6 boards.
#[test]
fn balanced_rows_keep_each_groups_minimum_and_even_out_the_boards() {
    for boards in 2..=6 {
        let mut cm = random_cost_model("vgg16-tiny", 6, boards, 11);
        cm.topology = Topology::Mesh;
        for b in &mut cm.boards {
            b.link = LinkSpec { bandwidth_mbps: 100.0, latency_ms: 0.5 };
            b.e = (0..6).map(|k| Fit::line(1e-4, 1e-3 * (k + 1) as f64)).collect();
        }
        let last = cm.cuts.len() - 2;
        let groups: Vec<(Group, Vec<usize>)> = (0..=last)
            .map(|i| {
                let g = Group { from: cm.cuts[i], to: cm.cuts[i + 1] };
                (g, split_rows(&cm, g, Split::MinMax, Some((i == 0, i == last))))
            })
            .collect();
        let balanced = legionc::solve::balance_rows(&cm, &groups);
        let most = |plan: &[(Group, Vec<usize>)]| -> f64 {
            (0..boards).map(|b| plan.iter().map(|(g, r)| cm.compute_s(b, *g, legionc::runtime::halo::bands(r)[b])).sum::<f64>()).fold(0.0, f64::max)
        };
        for (gi, ((g, dp), (bg, rows))) in groups.iter().zip(&balanced).enumerate() {
            assert_eq!(g, bg);
            assert_eq!(rows.iter().sum::<usize>(), cm.model.rows(g.to));
            let tables = cm.mesh_tables(*g, gi == 0, gi == last);
            let worst = |r: &[usize]| r.iter().enumerate().map(|(b, &x)| tables[b][x]).fold(0.0, f64::max);
            assert_eq!(worst(rows), worst(dp), "{boards} boards, group {gi}: {rows:?} vs the DP's {dp:?}");
        }
        assert!(most(&balanced) <= most(&groups) + 1e-12, "{boards} boards: {} s vs {} s", most(&balanced), most(&groups));
        if boards == 6 {
            assert!(most(&balanced) < most(&groups), "{balanced:?} vs {groups:?}");
        }
    }
}

/// A Dense layer of the tail is split when its slices on fast boards behind a fast link beat
/// the coordinator alone, and kept whole behind a slow link.
#[test]
fn the_tail_is_split_where_it_pays() {
    let mut cm = random_cost_model("vgg16-tiny", 2, 3, 4);
    let d = legionc::cost::DenseCost { node: 99, inputs: 25088, outputs: 4096, e: vec![Fit::line(0.0, 1e-4); 3] };
    cm.dense = vec![d];
    for b in &mut cm.boards {
        b.link = LinkSpec { bandwidth_mbps: 1000.0, latency_ms: 0.1 };
    }
    let t = tail_splits(&cm);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].cols.iter().sum::<usize>(), 4096);
    assert!(t[0].cols.iter().all(|&c| c > 1000), "{:?}", t[0].cols);
    assert!(cm.tail_cost(&t, None) < cm.tail_cost(&[], None) * 0.5, "{} vs {}", cm.tail_cost(&t, None), cm.tail_cost(&[], None));
    for b in &mut cm.boards {
        b.link = LinkSpec { bandwidth_mbps: 0.5, latency_ms: 20.0 };
    }
    assert!(tail_splits(&cm).is_empty(), "a slow link: the layer stays whole");
}

/// In the mesh, the first split layer's input gathered from the boards' last bands is
/// predicted faster than the coordinator sending the whole of it to every board (six boards
/// behind 100 Mbit/s ports), and exactly as fast when the coordinator holds every row (the same
/// transfers); a mesh plan's tail is costed gathered, a star plan's as sent by the coordinator,
/// and the coordinator's port is predicted less busy when it is gathered.
#[test]
fn a_tail_gathered_on_the_boards_beats_the_coordinator_sending_it() {
    let m = zoo_model("vgg16-tiny");
    let segments = m.ir.split_cut_points().len() - 1;
    let mut cm = random_cost_model("vgg16-tiny", segments, 6, 7);
    for b in &mut cm.boards {
        b.link = LinkSpec { bandwidth_mbps: 100.0, latency_ms: 0.5 };
    }
    let node = legionc::strategy::splittable_dense(&m.ir)[0];
    // VGG-16's flattened input (100 KB), so that transfers matter; slices computed at once.
    cm.dense = vec![legionc::cost::DenseCost { node, inputs: 25088, outputs: m.ir.nodes[node].shape[1], e: vec![Fit::line(0.0, 1e-9); 6] }];
    let d = &cm.dense[0];
    let cols = legionc::solve::proportional_rows(d.outputs, &[1.0; 6]);
    let sent = cm.split_cost(d, &cols);
    let spread = cm.gathered_split_cost(d, &cols, &[2; 6]);
    assert!(spread < sent * 0.5, "gathered from six bands {spread} vs sent by the coordinator {sent}");
    assert_eq!(cm.gathered_split_cost(d, &cols, &[12, 0, 0, 0, 0, 0]), sent, "the coordinator holding every row sends what it sent before");
    // vgg16-tiny's last group has one row: on board 1, which sends it to the others.
    let end = *cm.cuts.last().unwrap();
    assert_eq!((end, m.ir.rows(end)), (m.ir.split_end(), 1));
    let rows = vec![0, 1, 0, 0, 0, 0];
    let groups = vec![(Group { from: 0, to: end }, rows.clone())];
    let tail = vec![legionc::runtime::plan::TailSplit { node, cols }];
    cm.topology = Topology::Star;
    assert_eq!(cm.plan_tail_cost(&groups, &tail), cm.tail_cost(&tail, None));
    let star_port = cm.busy(&groups, &tail)[0].send_s;
    cm.topology = Topology::Mesh;
    assert_eq!(cm.plan_tail_cost(&groups, &tail), cm.tail_cost(&tail, Some(&rows)));
    assert!(cm.plan_tail_cost(&groups, &tail) < cm.tail_cost(&tail, None));
    let mesh_port = cm.busy(&groups, &tail)[0].send_s;
    assert!(mesh_port < star_port * 0.5, "the coordinator's port: mesh {mesh_port} vs star {star_port}");
}

#[test]
fn flc_equals_brute_force() {
    for (i, name) in TINY.iter().enumerate() {
        for seed in 0..3u64 {
            let cm = random_cost_model(name, 8, 1 + (seed as usize % 3), seed + 10 * i as u64);
            let k = cm.cuts.len() - 1;
            let dp = flc(&cm, Split::MinMax, &|_, _| true);
            let dp_total: f64 = dp.iter().map(|g| g.latency_s).sum();
            // Every configuration: a subset of the inner cut points ends groups.
            let mut best = f64::INFINITY;
            for mask in 0u32..(1 << (k - 1)) {
                let mut from = 0;
                let mut total = 0.0;
                for j in 1..=k {
                    if j == k || mask & (1 << (j - 1)) != 0 {
                        total += solve_group(&cm, Group { from: cm.cuts[from], to: cm.cuts[j] }, Split::MinMax).latency_s;
                        from = j;
                    }
                }
                best = best.min(total);
            }
            assert!((dp_total - best).abs() <= 1e-12 * best.max(1.0), "{name} seed {seed}: DP {dp_total} vs brute force {best}");
            assert_eq!(dp.first().unwrap().group.from, 0);
            assert_eq!(dp.last().unwrap().group.to, *cm.cuts.last().unwrap());
        }
    }
}

#[test]
fn a_board_that_does_not_pay_gets_no_rows() {
    // Board 1 is as fast but behind a link so slow that sending it anything costs more than
    // computing everything on the coordinator.
    let mut cm = random_cost_model("vgg16-tiny", 2, 2, 1);
    cm.boards[1].e = cm.boards[0].e.clone();
    cm.boards[1].link = LinkSpec { bandwidth_mbps: 0.01, latency_ms: 50.0 };
    let g = solve_group(&cm, Group { from: cm.cuts[0], to: cm.cuts[1] }, Split::MinMax);
    assert_eq!(g.rows[1], 0, "{:?}", g.rows);
    cm.boards[1].link = cm.boards[0].link;
    cm.boards[1].link.bandwidth_mbps = 1e5;
    let g = solve_group(&cm, Group { from: cm.cuts[0], to: cm.cuts[1] }, Split::MinMax);
    assert!(g.rows[1] > 0, "a fast link makes the second board pay: {:?}", g.rows);
}

#[test]
fn explain_adds_up_to_the_predicted_latency() {
    let cm = random_cost_model("yolov2-tiny", 6, 3, 5);
    let groups = flc(&cm, Split::MinMax, &|_, _| true);
    let plan: Vec<_> = groups.iter().map(|g| (g.group, g.rows.clone())).collect();
    let text = cm.explain(&plan, &[]);
    let total = cm.plan_cost(&plan);
    assert!(text.contains(&format!("predicted total: {:.1} ms", total * 1e3)), "{text}");
    for g in &groups {
        assert!(text.contains(&format!("values {}..{}, predicted {:.1} ms", g.group.from, g.group.to, g.latency_s * 1e3)), "{text}");
    }
    assert_eq!(text.matches("E by segment").count() + text.matches("no rows").count(), groups.len() * 3);
}

#[test]
fn the_single_board_baseline_is_the_fastest_board_alone() {
    // Split::One puts every row on one board; the single strategy takes the board whose whole
    // model (one group, nothing sent when it is the coordinator) is predicted fastest.
    let mut cm = random_cost_model("vgg16-tiny", 5, 3, 11);
    let k = cm.cuts.len() - 1;
    for e in &mut cm.boards[2].e {
        *e = e.scaled(0.25); // board 2 computes four times faster
    }
    let whole = |b: usize| flc(&cm, Split::One(b), &|i, j| i == 0 && j == k);
    for b in 0..3 {
        let g = whole(b);
        assert_eq!(g.len(), 1);
        let h = cm.model.rows(g[0].group.to);
        assert_eq!(g[0].rows.iter().sum::<usize>(), h);
        assert_eq!(g[0].rows[b], h, "{:?}", g[0].rows);
    }
    // The coordinator sends nothing: its single run is exactly its compute.
    let own = whole(0)[0].latency_s;
    let h = cm.model.rows(cm.cuts[k]);
    assert!((own - cm.band_cost(0, Group { from: cm.cuts[0], to: cm.cuts[k] }, legionc::runtime::halo::Rows::new(0, h)).compute_s).abs() < 1e-12);
}

#[test]
fn e_fits_pass_through_the_probes_points_and_never_decrease() {
    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
    // Two points: their line, above and below them.
    let f = Fit::from_points(&[(28, 0.83), (56, 1.86)]);
    let slope = (1.86 - 0.83) / 28.0;
    assert!(close(f.at(28), 0.83) && close(f.at(56), 1.86));
    assert!(close(f.at(112), 1.86 + 56.0 * slope));
    // Below the first point: the line where its intercept is positive, else the first point's
    // proportional share (here the line would reach 0 at 5.4 rows).
    assert!(close(f.at(20), 0.83 * 20.0 / 28.0));
    let g = Fit::from_points(&[(10, 2.0), (20, 3.0)]);
    assert!(close(g.at(4), 1.4));
    assert_eq!(f.at(0), 0.0);
    // Three points (a small map timed at its full height): each piece its own slope.
    let f = Fit::from_points(&[(1, 2.04), (3, 3.61), (7, 10.46)]);
    assert!(close(f.at(3), 3.61) && close(f.at(7), 10.46));
    assert!(close(f.at(5), 3.61 + 2.0 * (10.46 - 3.61) / 4.0));
    // Repeated row counts are averaged; a point below its predecessor is raised to it.
    let f = Fit::from_points(&[(4, 1.0), (4, 3.0), (8, 1.5), (16, 4.0)]);
    assert!(close(f.at(4), 2.0) && close(f.at(8), 2.0) && close(f.at(16), 4.0));
    for r in 1..40 {
        assert!(f.at(r + 1) >= f.at(r), "not monotone at {r}");
    }
    // One point: through the origin.
    assert!(close(Fit::from_points(&[(10, 2.0)]).at(5), 1.0));
    // line(a, b) is a + b·r.
    assert!(close(Fit::line(0.5, 0.25).at(4), 1.5));
}

/// The probe's row counts: a quarter and a half of a map, and the whole of a small one (up to
/// `SMALL_MAP_ROWS`): YOLOv2's 13-row head and VGG-16's 14-row block 5 are timed at full
/// height, so neither a 7-row band nor the single board's whole map lies beyond the last point.
#[test]
fn small_maps_are_also_timed_at_their_full_height() {
    use legionc::cost::{row_points, SMALL_MAP_ROWS};
    assert_eq!(row_points(224), [56, 112]);
    assert_eq!(row_points(28), [7, 14]);
    assert_eq!(row_points(14), [3, 7, 14]);
    assert_eq!(row_points(13), [3, 6, 13]);
    assert_eq!(row_points(7), [1, 3, 7]);
    assert_eq!(row_points(2), [1, 2]);
    assert_eq!(row_points(1), [1]);
    for h in 1..=SMALL_MAP_ROWS {
        assert_eq!(row_points(h).last(), Some(&h), "{h}");
    }
    // A noisy point below its predecessor no longer flattens the curve up to the whole map:
    // the full-height point bends it back (YOLOv2's 1280→1024 convolution, a Firefly twin).
    let f = Fit::from_points(&[(3, 0.239), (6, 0.220), (13, 0.782)]);
    assert!(f.at(7) > f.at(6) && (f.at(13) - 0.782).abs() < 1e-12);
}

/// Under memory caps the tail's features go where they fit: a layer the coordinator cannot
/// hold whole is split even behind a link so slow that splitting is slower, no board gets
/// more features than its cap, and a layer that fits nowhere in all gives None.
#[test]
fn the_tail_is_split_within_each_boards_memory() {
    let mut cm = random_cost_model("vgg16-tiny", 2, 3, 4);
    cm.dense = vec![legionc::cost::DenseCost { node: 99, inputs: 25088, outputs: 4096, e: vec![Fit::line(0.0, 1e-4); 3] }];
    for b in &mut cm.boards {
        b.link = LinkSpec { bandwidth_mbps: 0.5, latency_ms: 20.0 };
    }
    assert!(tail_splits(&cm).is_empty(), "without caps a slow link keeps the layer whole");
    let caps = vec![vec![1000, 2000, 3000]];
    let t = legionc::solve::tail_splits_within(&cm, Some(&caps)).unwrap();
    assert_eq!(t.len(), 1, "the coordinator cannot hold the layer: split");
    assert_eq!(t[0].cols.iter().sum::<usize>(), 4096);
    assert!(t[0].cols.iter().zip(&caps[0]).all(|(c, cap)| c <= cap), "{:?} within {:?}", t[0].cols, caps[0]);
    assert_eq!(legionc::solve::tail_splits_within(&cm, Some(&[vec![1000, 1000, 2000]])), None, "4000 features of room for 4096");
    // Room for the layer on the coordinator: the caps change nothing.
    assert_eq!(legionc::solve::tail_splits_within(&cm, Some(&[vec![4096, 0, 0]])).unwrap(), vec![]);
}

/// The objective's search space: every set partition of up to 6 boards (Bell numbers), runs
/// of consecutive boards beyond; each a partition (lanes disjoint, covering every board).
#[test]
fn partitions_into_lanes_cover_every_board_once() {
    use legionc::strategy::partitions;
    let bell = [1, 1, 2, 5, 15, 52, 203];
    for n in 1..=8usize {
        let all = partitions(n);
        let want = if n <= 6 { bell[n] } else { 1 << (n - 1) };
        assert_eq!(all.len(), want, "{n} boards");
        let mut seen = std::collections::HashSet::new();
        for p in &all {
            let mut canon = p.clone();
            canon.sort();
            assert!(seen.insert(canon), "{n} boards: {p:?} twice");
            assert_eq!(p.iter().fold(0u32, |acc, m| {
                assert_eq!(acc & m, 0, "{p:?}: lanes overlap");
                acc | m
            }), (1u32 << n) - 1, "{p:?} covers every board");
        }
    }
}

/// The objective picks among predicted candidates: latency the lowest latency in a busy
/// stream, throughput the most frames per second (the lower latency within 1 %), a rate the
/// lowest latency that reaches it, and none when no candidate does.
#[test]
fn the_objective_picks_its_candidate() {
    use legionc::fleet::Objective;
    use legionc::strategy::{choose, Candidate};
    let c = |lanes: usize, k: usize, fps: f64, latency: f64| Candidate {
        lanes: (0..lanes).map(|i| vec![format!("b{i}")]).collect(),
        in_flight: k,
        throughput_fps: fps,
        latency_s: latency,
        stream_latency_s: latency.max(k as f64 / fps * lanes as f64),
        chosen: false,
    };
    // One lane of all boards: 1 frame/s at 1 s; four lanes of one board: 2.2 frames/s at 1.8 s;
    // two lanes: 1.6 frames/s at 1.25 s; four lanes with two in flight: 2.21 frames/s.
    let all = [c(1, 1, 1.0, 1.0), c(4, 1, 2.2, 1.8), c(2, 1, 1.6, 1.25), c(4, 2, 2.21, 1.8)];
    assert_eq!(choose(&all, Objective::Latency), Some(0));
    assert_eq!(choose(&all, Objective::Throughput), Some(1), "within 1 % of the most, the lower latency");
    assert_eq!(choose(&all, Objective::LatencyAtFps(1.5)), Some(2));
    assert_eq!(choose(&all, Objective::LatencyAtFps(0.5)), Some(0));
    assert_eq!(choose(&all, Objective::LatencyAtFps(3.0)), None);
}

/// The candidates the suite measures: the two objectives' choices first, then others along
/// the predicted front (never one that another beats on both), in order of frames per second.
#[test]
fn the_candidates_measured_lie_on_the_predicted_front() {
    use legionc::strategy::{frontier, Candidate};
    let c = |fps: f64, latency: f64| Candidate { lanes: vec![vec!["b".into()]], in_flight: 1, throughput_fps: fps, latency_s: latency, stream_latency_s: latency, chosen: false };
    // 0: the lowest latency; 1: the most frames per second; 2, 3, 5: on the front between
    // them; 4: beaten by 2 on both; 6: the same figures as 2.
    let all = [c(1.0, 1.0), c(3.0, 4.0), c(1.5, 1.5), c(2.0, 2.0), c(1.4, 1.6), c(2.5, 3.0), c(1.5, 1.5)];
    let names = |p: Vec<(usize, Vec<String>)>| p.into_iter().map(|(i, by)| (i, by.join(","))).collect::<Vec<_>>();
    assert_eq!(names(frontier(&all, 2)), [(0, "latency".into()), (1, "throughput".into())]);
    assert_eq!(names(frontier(&all, 1)), [(0, "latency".into())]);
    assert!(frontier(&all, 0).is_empty());
    // Three more, evenly over the front's other points (2, 3, 5): its ends and its middle.
    let five: Vec<usize> = frontier(&all, 5).into_iter().map(|p| p.0).collect();
    assert_eq!(five, [0, 2, 3, 5, 1]);
    let three: Vec<usize> = frontier(&all, 3).into_iter().map(|p| p.0).collect();
    assert_eq!(three, [0, 3, 1]);
    // Never more than the front holds; one candidate chosen by both objectives is one row.
    assert_eq!(frontier(&all, 40).len(), 5);
    assert_eq!(names(frontier(&[c(1.0, 1.0)], 3)), [(0, "latency,throughput".into())]);
}

#[test]
fn a_lost_boards_features_go_to_its_neighbours_and_bands_stay_contiguous() {
    use legionc::solve::hand_over;
    // Split between both neighbours in proportion to theirs; the sum is kept.
    assert_eq!(hand_over(&[10, 20, 30], 1), Some(vec![15, 0, 45]));
    // An edge board's go to its one neighbour; a board without features is skipped over.
    assert_eq!(hand_over(&[10, 20, 30], 2), Some(vec![10, 50, 0]));
    assert_eq!(hand_over(&[7, 0, 5, 3], 0), Some(vec![0, 0, 12, 3]));
    // Nobody else to take them: no hand-over.
    assert_eq!(hand_over(&[0, 9, 0], 1), None);
    for cols in [vec![1, 1], vec![4096, 1, 3, 0, 77], vec![3, 3, 3, 3, 3, 3]] {
        for lost in 0..cols.len() {
            if let Some(h) = hand_over(&cols, lost) {
                assert_eq!((h.iter().sum::<usize>(), h[lost]), (cols.iter().sum::<usize>(), 0), "{cols:?} without {lost}: {h:?}");
                // Every other board keeps at least its own features.
                assert!(h.iter().zip(&cols).enumerate().all(|(i, (n, o))| i == lost || n >= o), "{cols:?} without {lost}: {h:?}");
            }
        }
    }
}
