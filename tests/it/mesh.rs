//! The mesh's redistribution between groups: every board receives exactly the rows it needs,
//! from the boards that hold them, and a plan run as a mesh answers as tract does.

use crate::split::{assert_close, expected, fail, for_random_plans};
use crate::{zoo_model, TINY};
use legionc::runtime::halo::{bands, group_band, Group, Rows};
use legionc::runtime::mesh::{group_parts, redistribution, tail_gather, Redistribution};
use legionc::runtime::plan::{tail_stages, LocalFleet, Plan, TailStage, Topology};
use proptest::prelude::*;

/// Every property of one exchange, for the groups `gi - 1` and `gi` of `plan`.
fn check_exchange(m: &legionc::model::LoadedModel, plan: &Plan, gi: usize, r: &Redistribution) -> Result<(), TestCaseError> {
    let (prev, next) = (&plan.groups[gi - 1], &plan.groups[gi]);
    let held = bands(&prev.rows);
    for (b, out) in bands(&next.rows).into_iter().enumerate() {
        let need = r.needs[b];
        if out.is_empty() {
            prop_assert!(need.is_empty() && r.keeps[b].is_empty(), "board {b} has no band but needs {need}");
            prop_assert!(!r.transfers.iter().any(|t| t.to == b), "board {b} has no band but receives");
            continue;
        }
        prop_assert_eq!(need, group_band(&m.ir, next.group(), out).input);
        check_tiles(r, &held, b)?;
    }
    for t in &r.transfers {
        prop_assert!(t.from != t.to && !t.rows.is_empty(), "{t:?}");
    }
    Ok(())
}

/// What board `b` keeps and receives tiles its need exactly, each piece from the board that
/// holds it (`held`), and it keeps all it holds of its need.
fn check_tiles(r: &Redistribution, held: &[Rows], b: usize) -> Result<(), TestCaseError> {
    let need = r.needs[b];
    let mut pieces: Vec<(Rows, usize)> = r.transfers.iter().filter(|t| t.to == b).map(|t| (t.rows, t.from)).collect();
    if !r.keeps[b].is_empty() {
        pieces.push((r.keeps[b], b));
    }
    pieces.sort();
    let mut at = need.start;
    for (rows, from) in pieces {
        prop_assert!(!rows.is_empty() && rows.start == at, "board {b}: pieces of {need} do not tile it ({rows} at {at})");
        prop_assert!(held[from].contains(&rows), "board {from} sends {rows} but holds {}", held[from]);
        at = rows.end;
    }
    prop_assert_eq!(at, need.end, "board {} lacks rows {}..{}", b, at, need.end);
    // It keeps all it holds of its need: nothing it has is sent to it.
    prop_assert!(r.keeps[b] == legionc::runtime::mesh::intersect(need, held[b]));
    Ok(())
}

#[test]
fn every_board_receives_exactly_the_rows_it_needs() {
    for name in TINY {
    for_random_plans(name, 64, |m, plan| {
        for gi in 1..plan.groups.len() {
            let (prev, next) = (&plan.groups[gi - 1], &plan.groups[gi]);
            let r = redistribution(&m.ir, &prev.rows, next.group(), &next.rows).map_err(fail)?;
            check_exchange(m, &plan, gi, &r)?;
        }
        Ok(())
    });
    }
}

/// A band computed edges first: its parts tile it; every row another board needs lies in one
/// part, and the parts with such rows come before the others; a band with nothing to send,
/// or only rows to send, is one part; a group that does not compute its edges first, or the
/// last, leaves every band whole.
#[test]
fn a_band_computed_edges_first_sends_from_its_first_parts() {
    for name in TINY {
        for_random_plans(name, 64, |m, plan| {
            for gi in 0..plan.groups.len() {
                let g = &plan.groups[gi];
                for (b, out) in g.bands().into_iter().enumerate() {
                    let parts = group_parts(&m.ir, &plan.groups, gi, b).map_err(fail)?;
                    if out.is_empty() {
                        prop_assert!(parts.is_empty());
                        continue;
                    }
                    let mut sorted = parts.clone();
                    sorted.sort_by_key(|p| p.start);
                    prop_assert_eq!(sorted.first().unwrap().start, out.start);
                    prop_assert_eq!(sorted.last().unwrap().end, out.end);
                    prop_assert!(sorted.windows(2).all(|w| w[0].end == w[1].start && !w[0].is_empty()), "{:?} do not tile {}", parts, out);
                    let next = match plan.groups.get(gi + 1) {
                        Some(n) if g.edges_first => redistribution(&m.ir, &g.rows, n.group(), &n.rows).map_err(fail)?,
                        _ => {
                            prop_assert_eq!(parts, vec![out]);
                            continue;
                        }
                    };
                    let sent: Vec<Rows> = next.transfers.iter().filter(|t| t.from == b).map(|t| t.rows).collect();
                    let sends = |p: &Rows| sent.iter().any(|t| p.contains(t));
                    for t in &sent {
                        prop_assert_eq!(parts.iter().filter(|p| p.contains(t)).count(), 1, "rows {} sent by board {} lie in no part or in several of {:?}", t, b, parts);
                    }
                    let first_quiet = parts.iter().position(|p| !sends(p)).unwrap_or(parts.len());
                    prop_assert!(parts[first_quiet..].iter().all(|p| !sends(p)), "board {}: {:?} computes a part to send after one it keeps", b, parts);
                    let all_sent = (out.start..out.end).all(|r| sent.iter().any(|t| t.start <= r && r < t.end));
                    if sent.is_empty() || all_sent {
                        prop_assert_eq!(parts, vec![out]);
                    } else {
                        prop_assert!(parts.len() >= 2 && first_quiet >= 1 && first_quiet < parts.len(), "board {}: {:?}", b, parts);
                    }
                }
            }
            Ok(())
        });
    }
}

/// Before a split layer of the tail gathered on the boards (mesh), every board with features
/// receives the whole of the last group's output, each row from the board that holds it, and
/// no other board receives anything; the plans that gather are the mesh's whose tail starts
/// with the split layer (after its Flatten).
#[test]
fn a_gathered_tail_gives_every_board_with_features_the_whole_last_output() {
    for name in TINY {
        for_random_plans(name, 64, |m, plan| {
            let gathers = plan.gathers_tail(&m.ir);
            let starts_split = match tail_stages(&m.ir, &plan).as_slice() {
                [TailStage::Split(0), ..] => true,
                [TailStage::Local { from, to }, TailStage::Split(0), ..] => (from + 1..=*to).all(|n| m.ir.nodes[n].op.kind() == "Flatten"),
                _ => false,
            };
            prop_assert_eq!(gathers, plan.topology == Topology::Mesh && !plan.groups.is_empty() && starts_split, "{:?}", plan);
            let (Some(last), Some(first)) = (plan.groups.last(), plan.tail.first()) else { return Ok(()) };
            let r = tail_gather(&m.ir, &last.rows, last.to, &first.cols).map_err(fail)?;
            let h = m.ir.rows(last.to);
            let held = bands(&last.rows);
            for b in 0..plan.boards.len() {
                if first.cols[b] == 0 {
                    prop_assert!(r.needs[b].is_empty() && r.keeps[b].is_empty(), "board {b} has no features but needs {}", r.needs[b]);
                    prop_assert!(!r.transfers.iter().any(|t| t.to == b), "board {b} has no features but receives");
                    continue;
                }
                prop_assert_eq!(r.needs[b], Rows::new(0, h));
                check_tiles(&r, &held, b)?;
            }
            // Each transfer is a whole band: a board sends its band to each board with features.
            for t in &r.transfers {
                prop_assert!(t.from != t.to && t.rows == held[t.from], "{t:?}");
            }
            let senders = last.rows.iter().filter(|&&n| n > 0).count();
            let receivers = first.cols.iter().filter(|&&c| c > 0).count();
            let both = (0..plan.boards.len()).filter(|&b| last.rows[b] > 0 && first.cols[b] > 0).count();
            prop_assert_eq!(r.transfers.len(), senders * receivers - both);
            Ok(())
        });
    }
}

/// One board needs rows held by three or more others: every one of them sends its part.
#[test]
fn a_need_spanning_several_boards_is_sent_by_each() {
    let m = zoo_model("vgg16-tiny");
    let cuts = m.ir.split_cut_points();
    // The first two segments; the first split into 1-row bands, the second all on board 0.
    let (a, b) = (Group { from: cuts[0], to: cuts[1] }, Group { from: cuts[1], to: cuts[2] });
    let h = m.ir.rows(a.to);
    let boards = 6;
    let mut prev = vec![1; boards - 1];
    prev.push(h - (boards - 1));
    let mut next = vec![0; boards];
    next[0] = m.ir.rows(b.to);
    let r = redistribution(&m.ir, &prev, b, &next).unwrap();
    let senders: Vec<usize> = r.transfers.iter().filter(|t| t.to == 0).map(|t| t.from).collect();
    assert_eq!(senders, (1..boards).collect::<Vec<_>>(), "{r:?}");
    assert_eq!(r.keeps[0], Rows::new(0, 1));
    assert!(r.transfers.iter().all(|t| t.to == 0));
    // A split that does not add up is refused, naming the value.
    let e = redistribution(&m.ir, &prev[1..], b, &next[1..]).unwrap_err().to_string();
    assert!(e.contains("previous split covers"), "{e}");
}

/// Random plans run as a mesh give the star's answer and tract's.
#[test]
fn random_plans_run_as_a_mesh_match_tract() {
    for name in TINY {
        let want = expected(zoo_model(name), 13);
        for_random_plans(name, 10, |m, plan| {
            let mut fleet = LocalFleet::new(m.ir.clone(), plan).map_err(fail)?;
            let mesh = fleet.infer_mesh(want.input.clone()).map_err(fail)?;
            assert_close("mesh vs tract-onnx", &mesh, &want.output)?;
            let star = fleet.infer_star(want.input.clone()).map_err(fail)?;
            assert_close("mesh vs star", &mesh, &star)?;
            Ok(())
        });
    }
}
