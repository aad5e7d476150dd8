//! Row-band math: which rows of every layer a board computes for its band of a fused group's
//! output, and the explicit zero padding each layer needs there.
//!
//! Output rows `[a, b)` of a window layer (kernel k, stride s, dilation d, top pad p) need input
//! rows `[a·s − p, (b−1)·s − p + d·(k−1) + 1)`. The part above row 0 becomes explicit top
//! padding for this band, the part at or past H bottom padding: zero padding appears only at
//! the true image borders. Elementwise layers keep the band; at a branch the rows a tensor must
//! provide are the union (hull) of what its consumers need.

use crate::ir::{Model, Op};
use serde::{Deserialize, Serialize};

/// A half-open range of rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rows {
    pub start: usize,
    pub end: usize,
}

impl Rows {
    pub fn new(start: usize, end: usize) -> Rows {
        assert!(start <= end, "empty row range {start}..{end} is reversed");
        Rows { start, end }
    }
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    pub fn hull(self, other: Rows) -> Rows {
        Rows { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
    pub fn contains(&self, other: &Rows) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl std::fmt::Display for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A fused group: the layers after cut point `from` up to and including cut point `to`.
/// Its input is value `from`, its output value `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Group {
    pub from: usize,
    pub to: usize,
}

impl Group {
    pub fn layers(&self) -> std::ops::RangeInclusive<usize> {
        self.from + 1..=self.to
    }
}

/// What one layer computes inside a band.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBand {
    pub node: usize,
    /// Rows of its output it computes.
    pub out: Rows,
    /// Rows of each input it reads (a sub-range of what the producer computed).
    pub inputs: Vec<Rows>,
    /// Explicit zero rows above / below the input, for window layers at the image borders.
    pub pad_top: usize,
    pub pad_bottom: usize,
}

/// Everything a board computes for one band of a group's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupBand {
    pub group: Group,
    /// Rows of the group's input the board must receive (its band plus halo).
    pub input: Rows,
    /// Rows of the group's output it produces.
    pub output: Rows,
    /// One entry per layer of the group, in model order.
    pub layers: Vec<LayerBand>,
}

/// Input rows (clipped to `[0, in_rows)`) and explicit pads a layer needs to produce `out`.
pub fn layer_input_rows(op: &Op, out: Rows, in_rows: usize) -> (Rows, usize, usize) {
    if out.is_empty() {
        return (Rows::new(0, 0), 0, 0);
    }
    match op {
        Op::SpaceToDepth { block } => (Rows::new(out.start * block, out.end * block), 0, 0),
        Op::Upsample { scale } => (Rows::new(out.start / scale, (out.end - 1) / scale + 1), 0, 0),
        Op::Deconv(c) => {
            // Input rows i with i·s − p ≤ r ≤ i·s − p + (k − 1)·d for some output row r of `out`.
            let (s, p, reach) = (c.window.stride[0] as i64, c.window.pad_before[0], (c.window.span(0) - 1) as i64);
            let lo = (out.start as i64 + p - reach).div_euclid(s) + i64::from((out.start as i64 + p - reach).rem_euclid(s) != 0);
            let hi = (out.end as i64 - 1 + p).div_euclid(s) + 1;
            let (lo, hi) = (lo.clamp(0, in_rows as i64), hi.clamp(0, in_rows as i64));
            (Rows::new(lo as usize, hi.max(lo) as usize), 0, 0)
        }
        _ => match op.window() {
            Some(w) => {
                let s = w.stride[0] as i64;
                let lo = out.start as i64 * s - w.pad_before[0];
                let hi = (out.end as i64 - 1) * s - w.pad_before[0] + w.span(0) as i64;
                let pad_top = (-lo).max(0) as usize;
                let pad_bottom = (hi - in_rows as i64).max(0) as usize;
                let clipped = Rows::new(lo.max(0) as usize, (hi.min(in_rows as i64)).max(lo.max(0)) as usize);
                (clipped, pad_top, pad_bottom)
            }
            None => (out, 0, 0),
        },
    }
}

/// Walk `group` backwards from output rows `out`: every layer's rows and pads.
pub fn group_band(model: &Model, group: Group, out: Rows) -> GroupBand {
    assert!(group.from < group.to && group.to < model.nodes.len(), "bad group {group:?}");
    assert!(out.end <= model.rows(group.to), "rows {out} past the end of value {}", group.to);
    let n = group.to - group.from + 1;
    let mut need: Vec<Option<Rows>> = vec![None; n];
    need[n - 1] = Some(out);
    let mut layers = Vec::with_capacity(n - 1);
    for id in group.layers().rev() {
        let node = &model.nodes[id];
        let Some(rows) = need[id - group.from] else {
            // Computes nothing the group's output depends on.
            layers.push(LayerBand { node: id, out: Rows::new(0, 0), inputs: vec![], pad_top: 0, pad_bottom: 0 });
            continue;
        };
        let mut inputs = Vec::with_capacity(node.inputs.len());
        let (mut pt, mut pb) = (0, 0);
        for &v in &node.inputs {
            assert!(v >= group.from, "node {id} reads value {v} from before the group's cut point");
            let (r, t, b) = layer_input_rows(&node.op, rows, model.rows(v));
            pt = t;
            pb = b;
            inputs.push(r);
            let slot = &mut need[v - group.from];
            *slot = Some(match *slot {
                Some(prev) if !r.is_empty() => prev.hull(r),
                Some(prev) => prev,
                None => r,
            });
        }
        layers.push(LayerBand { node: id, out: rows, inputs, pad_top: pt, pad_bottom: pb });
    }
    layers.reverse();
    GroupBand { group, input: need[0].unwrap_or(Rows::new(0, 0)), output: out, layers }
}

/// Alpha of every layer of a band: rows it computes inside the fused group ÷ rows it would
/// compute unfused (its share of its own output, in the same proportion as the band's share of
/// the group's output). 1.0 for a single-layer group; grows with the halo.
pub fn alphas(model: &Model, band: &GroupBand) -> Vec<f64> {
    let out_rows = model.rows(band.group.to) as f64;
    let share = band.output.len() as f64 / out_rows;
    band.layers
        .iter()
        .map(|l| {
            let unfused = share * model.rows(l.node) as f64;
            if unfused == 0.0 {
                if l.out.is_empty() { 1.0 } else { f64::INFINITY }
            } else {
                l.out.len() as f64 / unfused
            }
        })
        .collect()
}

/// Split `total` rows into contiguous bands of the given sizes, in board order.
pub fn bands(sizes: &[usize]) -> Vec<Rows> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&s| {
            let r = Rows::new(start, start + s);
            start += s;
            r
        })
        .collect()
}
