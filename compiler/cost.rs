//! The cost model (pure): S, R, E and A, and the latency they predict.
//!
//! - **E**: per board and segment (the layers between two consecutive cut points), seconds for
//!   r output rows, piecewise linear through the probe's single-segment runs at a few row
//!   counts (a quarter and a half of the map; the full height too on small maps).
//! - **A**: per group, band and segment, the rows the segment computes inside the fused group
//!   (its band plus the halo the layers after it need), from the band math in `halo`.
//!   `E(A·r)` is the alpha-scaled run time.
//! - **S / R**: per board, seconds to send its input band (halo rows included) and to get its
//!   output band back: latency + bytes ÷ min(coordinator, board) bandwidth.
//!
//! A board's cost for a band is S + Σ E + R (the coordinator's own band: Σ E only). A group's
//! latency simulates the coordinator's port: input bands leave one after the other in board
//! order, each board computes when its band has arrived, output bands queue on the way back.
//! A plan's latency is the sum over its groups plus the tail on the coordinator.

use legion_runtime::halo::{group_band, Group, Rows};
use legion_runtime::ir::Model;
use legion_runtime::link::LinkSpec;
use legion_runtime::wire::HEADER_LEN;
use serde::Serialize;
use std::sync::Arc;

/// Seconds for r rows (0 for 0 rows), through the probe's points (rows, seconds): piecewise
/// linear between them, the first piece continued below the first point (never under the
/// proportional share of it) and the last piece above the last point.
///
/// Run time is close to `a + b·r` for large feature maps, so two points do: their line. On
/// small maps (ResNet's 7-row layer 4) tract's kernels grow more than linearly with rows and a
/// third point at the full height ([`row_points`]) bends the curve there.
/// The curve is made monotone (a point below its predecessor is raised to it), as the row
/// split's deadline search needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fit {
    /// Distinct row counts, ascending, seconds non-decreasing.
    points: Vec<(f64, f64)>,
}

impl Fit {
    /// `a + b·r` for r ≥ 1.
    pub fn line(a: f64, b: f64) -> Fit {
        Fit { points: vec![(1.0, a + b), (2.0, a + 2.0 * b)] }
    }

    /// Through the measured points; several at one row count are averaged.
    pub fn from_points(points: &[(usize, f64)]) -> Fit {
        let mut sorted: Vec<(usize, f64)> = points.iter().copied().filter(|p| p.0 > 0).collect();
        sorted.sort_by_key(|p| p.0);
        let mut merged: Vec<(f64, f64, usize)> = Vec::new();
        for (r, t) in sorted {
            match merged.last_mut() {
                Some(last) if last.0 == r as f64 => {
                    last.1 += t.max(0.0);
                    last.2 += 1;
                }
                _ => merged.push((r as f64, t.max(0.0), 1)),
            }
        }
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(merged.len());
        for (r, sum, n) in merged {
            let t = sum / n as f64;
            let floor = out.last().map_or(0.0, |p| p.1);
            out.push((r, t.max(floor)));
        }
        Fit { points: out }
    }

    /// The same curve with every time multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Fit {
        Fit { points: self.points.iter().map(|&(r, t)| (r, t * factor)).collect() }
    }

    pub fn at(&self, rows: usize) -> f64 {
        let p = &self.points;
        if rows == 0 || p.is_empty() {
            return 0.0;
        }
        let r = rows as f64;
        let on = |i: usize| p[i].1 + (p[i + 1].1 - p[i].1) / (p[i + 1].0 - p[i].0) * (r - p[i].0);
        if p.len() == 1 {
            return p[0].1 * r / p[0].0;
        }
        if r <= p[0].0 {
            return on(0).max(p[0].1 * r / p[0].0);
        }
        let i = p.windows(2).position(|w| r <= w[1].0).unwrap_or(p.len() - 2);
        on(i)
    }
}

/// One board as the cost model sees it.
#[derive(Clone, Debug, Serialize)]
pub struct BoardCost {
    pub name: String,
    pub link: LinkSpec,
    /// E: one fit per segment (index into [`CostModel::cuts`] windows).
    pub e: Vec<Fit>,
}

/// Everything the solver needs to predict latencies.
#[derive(Clone, Debug)]
pub struct CostModel {
    pub model: Arc<Model>,
    /// Cut points of the splittable part, 0 first, `split_end` last.
    pub cuts: Vec<usize>,
    pub boards: Vec<BoardCost>,
    pub coordinator: usize,
    /// The tail on the coordinator, seconds.
    pub tail_s: f64,
    /// Full search: E of whole fused groups, measured (per group and board), used instead of
    /// the sum of alpha-scaled segment fits.
    pub group_e: Option<std::collections::HashMap<(Group, usize), Fit>>,
}

/// What one board does in a group.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BandCost {
    pub rows: usize,
    pub send_s: f64,
    pub compute_s: f64,
    pub recv_s: f64,
}

/// A group's predicted latency and its parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupCost {
    pub group: Group,
    pub rows: Vec<usize>,
    pub bands: Vec<BandCost>,
    pub latency_s: f64,
}

impl CostModel {
    /// Index of the segment that ends at cut point `to`.
    fn segment_of(&self, to: usize) -> usize {
        self.cuts.iter().position(|&c| c == to).expect("a cut point") - 1
    }

    /// Bytes of `rows` rows of value `v` on the wire.
    pub fn row_bytes(&self, v: usize) -> usize {
        let s = &self.model.nodes[v].shape;
        4 * s[1] * s[3]
    }

    /// Transfer seconds between the coordinator and board `b` (0 for the coordinator).
    pub fn transfer_s(&self, b: usize, bytes: usize) -> f64 {
        if b == self.coordinator || bytes == 0 {
            return 0.0;
        }
        self.boards[self.coordinator].link.between(&self.boards[b].link).seconds(bytes + HEADER_LEN)
    }

    /// Rows of each segment's output a band computes (the A matrix times the band), and the
    /// group input rows it needs.
    pub fn band_rows(&self, group: Group, out: Rows) -> (usize, Vec<(usize, usize)>) {
        let band = group_band(&self.model, group, out);
        let segs = self
            .cuts
            .iter()
            .filter(|&&c| c > group.from && c <= group.to)
            .map(|&c| (self.segment_of(c), band.layers[c - group.from - 1].out.len()))
            .collect();
        (band.input.len(), segs)
    }

    /// Every board's cost for a centred band of r output rows of `group`, r = 0..=H: what the
    /// row split minimises (nondecreasing in r).
    pub fn cost_tables(&self, group: Group) -> Vec<Vec<f64>> {
        let h = self.model.rows(group.to);
        let mut t = vec![vec![0.0; h + 1]; self.boards.len()];
        for r in 1..=h {
            let start = (h - r) / 2;
            let (input, segs) = self.band_rows(group, Rows::new(start, start + r));
            for (b, row) in t.iter_mut().enumerate() {
                let c = self.cost_from(b, group, r, input, &segs);
                row[r] = (c.send_s + c.compute_s + c.recv_s).max(row[r - 1]);
            }
        }
        t
    }

    /// A board's cost for a band of `group`.
    pub fn band_cost(&self, b: usize, group: Group, out: Rows) -> BandCost {
        if out.is_empty() {
            return BandCost::default();
        }
        let (input, segs) = self.band_rows(group, out);
        self.cost_from(b, group, out.len(), input, &segs)
    }

    fn cost_from(&self, b: usize, group: Group, rows: usize, input: usize, segs: &[(usize, usize)]) -> BandCost {
        let compute_s = match self.group_e.as_ref().and_then(|m| m.get(&(group, b))) {
            Some(fit) => fit.at(rows),
            None => segs.iter().map(|&(k, r)| self.boards[b].e[k].at(r)).sum(),
        };
        BandCost {
            rows,
            send_s: self.transfer_s(b, input * self.row_bytes(group.from)),
            compute_s,
            recv_s: self.transfer_s(b, rows * self.row_bytes(group.to)),
        }
    }

    /// Latency of `group` split as `rows` (board order), through the coordinator's port.
    pub fn group_cost(&self, group: Group, rows: &[usize]) -> GroupCost {
        let bands: Vec<BandCost> =
            legion_runtime::halo::bands(rows).into_iter().enumerate().map(|(b, out)| self.band_cost(b, group, out)).collect();
        let computes: Vec<f64> = bands.iter().map(|c| c.compute_s).collect();
        let latency_s = port_latency(self.coordinator, &bands, &computes);
        GroupCost { group, rows: rows.to_vec(), bands, latency_s }
    }

    /// Cost of a whole plan: its groups and the tail.
    pub fn plan_cost(&self, groups: &[(Group, Vec<usize>)]) -> f64 {
        groups.iter().map(|(g, r)| self.group_cost(*g, r).latency_s).sum::<f64>() + self.tail_s
    }
}

/// A group's latency on the coordinator's port: sends queue in board order, each board
/// computes (`computes[b]`) once its band arrived, results queue on the way back. Transfer
/// times of `bands` hold latency and wire time together; the latency part is not modelled
/// separately (links of these fleets are bandwidth-bound).
pub fn port_latency(coordinator: usize, bands: &[BandCost], computes: &[f64]) -> f64 {
    let mut tx = 0.0f64;
    let mut ready: Vec<(f64, f64)> = Vec::new();
    let mut finish = 0.0f64;
    for (b, c) in bands.iter().enumerate() {
        if c.rows == 0 {
            continue;
        }
        if b == coordinator {
            finish = finish.max(computes[b]);
            continue;
        }
        tx += c.send_s;
        ready.push((tx + computes[b], c.recv_s));
    }
    ready.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rx = 0.0f64;
    for (at, recv) in ready {
        rx = rx.max(at) + recv;
        finish = finish.max(rx);
    }
    finish
}

impl CostModel {
    /// The prediction of a plan, written out: per group and board the rows (and input rows
    /// with the halo), S, every segment's E with its alpha, R; the group latencies, the tail.
    pub fn explain(&self, groups: &[(Group, Vec<usize>)]) -> String {
        let mut s = String::new();
        let mut total = 0.0;
        for (gi, (g, rows)) in groups.iter().enumerate() {
            let gc = self.group_cost(*g, rows);
            total += gc.latency_s;
            s += &format!("group {gi}: values {}..{}, predicted {:.1} ms\n", g.from, g.to, gc.latency_s * 1e3);
            for (b, out) in legion_runtime::halo::bands(rows).into_iter().enumerate() {
                if out.is_empty() {
                    s += &format!("  {:<14} no rows\n", self.boards[b].name);
                    continue;
                }
                let (input, segs) = self.band_rows(*g, out);
                let c = &gc.bands[b];
                s += &format!(
                    "  {:<14} rows {out} ({} in, halo included)  S {:.1} ms + E {:.1} ms + R {:.1} ms\n",
                    self.boards[b].name,
                    input,
                    c.send_s * 1e3,
                    c.compute_s * 1e3,
                    c.recv_s * 1e3
                );
                let share = out.len() as f64 / self.model.rows(g.to) as f64;
                let parts: Vec<String> = segs
                    .iter()
                    .map(|&(k, r)| {
                        let alpha = r as f64 / (share * self.model.rows(self.cuts[k + 1]) as f64);
                        format!("{}:{}r a{:.2} {:.1}ms", self.cuts[k + 1], r, alpha, self.boards[b].e[k].at(r) * 1e3)
                    })
                    .collect();
                s += &format!("      E by segment (end value:rows alpha time): {}\n", parts.join(", "));
            }
        }
        s += &format!("tail on {}: {:.1} ms\npredicted total: {:.1} ms\n", self.boards[self.coordinator].name, self.tail_s * 1e3, (total + self.tail_s) * 1e3);
        s
    }
}

/// Maps of at most this many rows are also timed at their full height.
pub const SMALL_MAP_ROWS: usize = 8;

/// Row counts at which a segment or group is timed: a quarter and a half of its output, and on
/// small maps the whole of it (their run time grows more than linearly up to it; between two
/// points far below, a line misses the full-height run by up to 40 %).
pub fn row_points(h: usize) -> Vec<usize> {
    let mut p = vec![(h / 4).max(1), (h / 2).max(1)];
    if h <= SMALL_MAP_ROWS {
        p.push(h);
    }
    p.dedup();
    p
}
