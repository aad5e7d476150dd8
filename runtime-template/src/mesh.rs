//! Redistribution between fused groups without the coordinator (the mesh): after a board
//! computes its band of group g, it keeps the rows of its output it needs as input of group g+1
//! and sends every other board exactly the rows that board needs (its halo, and the rows that
//! change owner because g+1 splits differently). A pure function of the two groups' row splits
//! and the band math; [`assemble`] puts a board's pieces back together.

use crate::halo::{bands, group_band, Group, Rows};
use crate::ir::Model;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tract_core::internal::*;

/// Rows of a value that board `from` sends board `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    pub from: usize,
    pub to: usize,
    pub rows: Rows,
}

/// Where every board's input of a group comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redistribution {
    /// Per board: the input rows it needs for its band of the group (empty: no band).
    pub needs: Vec<Rows>,
    /// Per board: the part of its own previous output it keeps (a part of its need).
    pub keeps: Vec<Rows>,
    /// Everything else, board to board, ordered by receiver, then rows.
    pub transfers: Vec<Transfer>,
}

/// The overlap of two row ranges (empty if they do not meet).
pub fn intersect(a: Rows, b: Rows) -> Rows {
    let (start, end) = (a.start.max(b.start), a.end.min(b.end));
    if start < end {
        Rows::new(start, end)
    } else {
        Rows::new(0, 0)
    }
}

/// The exchange between a group whose output (value `next.from`) is split as `prev_rows` and
/// the next group, `next`, split as `next_rows` (rows per board, in plan order).
pub fn redistribution(model: &Model, prev_rows: &[usize], next: Group, next_rows: &[usize]) -> Result<Redistribution> {
    ensure!(prev_rows.len() == next_rows.len(), "{} boards before, {} after", prev_rows.len(), next_rows.len());
    let h = model.rows(next.from);
    ensure!(prev_rows.iter().sum::<usize>() == h, "the previous split covers {} rows of value {}, which has {h}", prev_rows.iter().sum::<usize>(), next.from);
    ensure!(next_rows.iter().sum::<usize>() == model.rows(next.to), "the split covers {} rows of value {}, which has {}", next_rows.iter().sum::<usize>(), next.to, model.rows(next.to));
    let needs: Vec<Rows> = bands(next_rows).into_iter().map(|out| if out.is_empty() { out } else { group_band(model, next, out).input }).collect();
    Ok(between(&bands(prev_rows), needs))
}

/// The exchange before a split layer of the tail whose boards take their input straight from
/// the last group (the all-gather): every board with features (`cols[b] > 0`) needs the whole
/// of the last group's output, value `value`, split as `last_rows`; the others need nothing.
pub fn tail_gather(model: &Model, last_rows: &[usize], value: usize, cols: &[usize]) -> Result<Redistribution> {
    ensure!(last_rows.len() == cols.len(), "{} boards in the last group, {} in the tail's split", last_rows.len(), cols.len());
    let h = model.rows(value);
    ensure!(last_rows.iter().sum::<usize>() == h, "the last group covers {} rows of value {value}, which has {h}", last_rows.iter().sum::<usize>());
    let needs = cols.iter().map(|&c| if c > 0 { Rows::new(0, h) } else { Rows::new(0, 0) }).collect();
    Ok(between(&bands(last_rows), needs))
}

/// Who sends whom what, when board b holds `held[b]` and needs `needs[b]`.
fn between(held: &[Rows], needs: Vec<Rows>) -> Redistribution {
    let keeps: Vec<Rows> = needs.iter().zip(held).map(|(&need, &own)| intersect(need, own)).collect();
    let mut transfers = Vec::new();
    for (to, &need) in needs.iter().enumerate() {
        for (from, &own) in held.iter().enumerate() {
            let rows = intersect(need, own);
            if from != to && !rows.is_empty() {
                transfers.push(Transfer { from, to, rows });
            }
        }
    }
    transfers.sort_by_key(|t| (t.to, t.rows.start));
    Redistribution { needs, keeps, transfers }
}

/// What board `b`, holding `held` (its band of the previous group's output: rows and tensor),
/// does with it: the piece it keeps (addressed to itself) and the pieces it sends, as
/// (receiver, rows, tensor).
pub fn pieces(r: &Redistribution, b: usize, held: &(Rows, Tensor)) -> Result<Vec<(usize, Rows, Tensor)>> {
    let (own, t) = held;
    let cut = |rows: Rows| -> Result<Tensor> {
        ensure!(rows.start >= own.start && rows.end <= own.end, "rows {rows} are not in board {b}'s band {own}");
        Ok(t.slice(2, rows.start - own.start, rows.end - own.start)?)
    };
    let mut out = Vec::new();
    if !r.keeps[b].is_empty() {
        out.push((b, r.keeps[b], cut(r.keeps[b])?));
    }
    for x in r.transfers.iter().filter(|x| x.from == b) {
        out.push((x.to, x.rows, cut(x.rows)?));
    }
    Ok(out)
}

/// The parts, in the order computed, of board `b`'s band `out` of a group whose output goes
/// out as `next` (the exchange before the next group): first each run of rows other boards
/// need (top to bottom), then each run of the rest. Every transfer from `b` lies in one part,
/// and the parts tile `out`. A band all of which is sent, or none, is one part; no band, none.
pub fn band_parts(next: &Redistribution, b: usize, out: Rows) -> Vec<Rows> {
    if out.is_empty() {
        return vec![];
    }
    let mut sent: Vec<Rows> = next.transfers.iter().filter(|x| x.from == b).map(|x| intersect(x.rows, out)).filter(|r| !r.is_empty()).collect();
    sent.sort_by_key(|r| r.start);
    let mut runs: Vec<Rows> = Vec::new();
    for r in sent {
        match runs.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => runs.push(r),
        }
    }
    let mut rest = Vec::new();
    let mut at = out.start;
    for r in &runs {
        if r.start > at {
            rest.push(Rows::new(at, r.start));
        }
        at = r.end;
    }
    if at < out.end {
        rest.push(Rows::new(at, out.end));
    }
    if runs.is_empty() || rest.is_empty() {
        return vec![out];
    }
    runs.extend(rest);
    runs
}

/// Board `b`'s parts of group `gi` of `groups`, in the order it computes them:
/// [`band_parts`] where the group computes its edges first, else its band whole (none if it
/// has no band).
pub fn group_parts(model: &Model, groups: &[crate::plan::PlanGroup], gi: usize, b: usize) -> Result<Vec<Rows>> {
    let g = &groups[gi];
    let out = g.bands()[b];
    match groups.get(gi + 1) {
        Some(next) if g.edges_first => Ok(band_parts(&redistribution(model, &g.rows, next.group(), &next.rows)?, b, out)),
        _ => Ok(if out.is_empty() { vec![] } else { vec![out] }),
    }
}

/// The input of `part` of the band `out` of `group`, cut from the band's input `x`.
pub fn part_input(model: &Model, group: Group, out: Rows, x: &Tensor, part: Rows) -> Result<Tensor> {
    let (whole, need) = (group_band(model, group, out).input, group_band(model, group, part).input);
    ensure!(need.start >= whole.start && need.end <= whole.end && x.shape()[2] == whole.len(), "part {part} of band {out} needs input rows {need}, the band has {whole}");
    Ok(x.slice(2, need.start - whole.start, need.end - whole.start)?)
}

/// The pieces of `next` that board `b` sends from rows `rows` of its band (tensor `t`):
/// (receiver, rows, tensor), the transfers that lie in the part.
pub fn part_pieces(next: &Redistribution, b: usize, rows: Rows, t: &Tensor) -> Result<Vec<(usize, Rows, Tensor)>> {
    next.transfers
        .iter()
        .filter(|x| x.from == b && x.rows.start >= rows.start && x.rows.end <= rows.end)
        .map(|x| Ok((x.to, x.rows, t.slice(2, x.rows.start - rows.start, x.rows.end - rows.start)?)))
        .collect()
}

/// The transfers board `b` waits for before its band of the group: (sender, rows).
pub fn expected(r: &Redistribution, b: usize) -> Vec<(usize, Rows)> {
    r.transfers.iter().filter(|x| x.to == b).map(|x| (x.from, x.rows)).collect()
}

/// A board's input from its pieces (rows of the value, and their tensors, rows on axis 2):
/// they must tile `need` exactly, in any order.
pub fn assemble(need: Rows, mut pieces: Vec<(Rows, Tensor)>) -> Result<Tensor> {
    pieces.retain(|(r, _)| !r.is_empty());
    pieces.sort_by_key(|(r, _)| r.start);
    let mut at = need.start;
    for (r, t) in &pieces {
        if r.start != at {
            bail!("rows {at}..{} missing from the pieces of {need}", r.start);
        }
        ensure!(t.shape()[2] == r.len(), "a piece of rows {r} has {} rows", t.shape()[2]);
        at = r.end;
    }
    ensure!(at == need.end, "rows {at}..{} missing from the pieces of {need}", need.end);
    match pieces.len() {
        0 => bail!("no piece of {need}"),
        1 => Ok(pieces.remove(0).1),
        _ => Ok(Tensor::stack_tensors(2, &pieces.into_iter().map(|p| p.1).collect::<Vec<_>>())?),
    }
}

/// A gathered output (`[1, C, H, W]`) as the Dense layer after it takes it: `[1, C·H·W]`, the
/// model's Flatten.
pub fn flatten(x: Tensor) -> Result<Tensor> {
    let k = x.len();
    Ok(x.into_shape(&[1, k])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps() {
        assert_eq!(intersect(Rows::new(2, 8), Rows::new(5, 12)), Rows::new(5, 8));
        assert!(intersect(Rows::new(2, 5), Rows::new(5, 12)).is_empty());
        assert!(intersect(Rows::new(0, 0), Rows::new(0, 3)).is_empty());
    }

    #[test]
    fn pieces_tile_the_need_or_fail() {
        let t = |r: usize| Tensor::zero::<f32>(&[1, 1, r, 2]).unwrap();
        let got = assemble(Rows::new(3, 9), vec![(Rows::new(5, 9), t(4)), (Rows::new(3, 5), t(2))]).unwrap();
        assert_eq!(got.shape(), &[1, 1, 6, 2]);
        assert!(assemble(Rows::new(3, 9), vec![(Rows::new(3, 5), t(2)), (Rows::new(6, 9), t(3))]).is_err(), "a gap");
        assert!(assemble(Rows::new(3, 9), vec![(Rows::new(3, 5), t(2))]).is_err(), "short");
        assert!(assemble(Rows::new(3, 9), vec![(Rows::new(3, 9), t(5))]).is_err(), "wrong height");
    }
}
