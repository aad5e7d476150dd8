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
//! A board's cost for a band is S + Σ E + R (the coordinator's own band: Σ E only). Transfers
//! follow the one network model (`legion_runtime::link::Ports`: every board's full-duplex
//! port, a send and a receive queue, plus latency), as the emulation does.
//!
//! - **Star**: a group's input bands leave the coordinator one after the other in board order,
//!   each board computes when its band has arrived, output bands queue on the way back; a plan
//!   is the sum over its groups plus the tail on the coordinator.
//! - **Mesh**: the first group's input bands leave the coordinator; between groups the boards
//!   exchange rows ([`legion_runtime::mesh::redistribution`]), each board starting its next
//!   band once it has its own rows and the pieces it waits for; the last group's bands go back
//!   to the coordinator. The plan is simulated as a whole (`mesh_timeline`); the solver's DP
//!   uses the same simulation one group at a time (`mesh_step`).

mod memory;
pub use memory::{overflow, BoardMemory, MemFit, MemoryCost};

use legion_runtime::halo::{group_band, Group, Rows};
use legion_runtime::ir::Model;
use legion_runtime::link::{LinkSpec, Ports, Transfer};
use legion_runtime::plan::Topology;
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
        if let Some(&(_, t)) = p.iter().find(|q| q.0 == r) {
            // A measured row count: its measurement, exactly.
            return t;
        }
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
    pub topology: Topology,
    /// The tail's Dense layers that may be split by output features, with each board's E for
    /// a slice (by features). Empty: the tail stays whole on the coordinator.
    pub dense: Vec<DenseCost>,
    /// What boards hold in memory (the probe's counted allocations); None without them.
    pub memory: Option<MemoryCost>,
    /// Mesh: the groups of the plan being costed whose boards compute first the rows others
    /// need ([`legion_runtime::plan::PlanGroup::edges_first`]); [`CostModel::for_plan`] sets
    /// them from a plan.
    pub edges_first: Vec<Group>,
}

/// A Dense layer of the tail as the cost model sees it.
#[derive(Clone, Debug, Serialize)]
pub struct DenseCost {
    pub node: usize,
    /// Input features and output features.
    pub inputs: usize,
    pub outputs: usize,
    /// Per board: seconds for a slice of c output features.
    pub e: Vec<Fit>,
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
    /// row split minimises (nondecreasing in r). Star: S + E + R.
    pub fn cost_tables(&self, group: Group) -> Vec<Vec<f64>> {
        self.tables(group, true, true)
    }

    /// The mesh's tables: E, plus S for a group that reads the input (from the coordinator)
    /// and R for the last group (its bands go back to the coordinator). The exchange between
    /// groups is left to the simulation: it is the halo, small beside the bands.
    pub fn mesh_tables(&self, group: Group, first: bool, last: bool) -> Vec<Vec<f64>> {
        self.tables(group, first, last)
    }

    fn tables(&self, group: Group, send: bool, recv: bool) -> Vec<Vec<f64>> {
        let h = self.model.rows(group.to);
        let mut t = vec![vec![0.0; h + 1]; self.boards.len()];
        for r in 1..=h {
            let start = (h - r) / 2;
            let (input, segs) = self.band_rows(group, Rows::new(start, start + r));
            for (b, row) in t.iter_mut().enumerate() {
                let c = self.cost_from(b, group, r, input, &segs);
                let cost = c.compute_s + if send { c.send_s } else { 0.0 } + if recv { c.recv_s } else { 0.0 };
                row[r] = cost.max(row[r - 1]);
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

    /// Latency of `group` split as `rows` (board order) in the star: through the coordinator's
    /// port and back.
    pub fn group_cost(&self, group: Group, rows: &[usize]) -> GroupCost {
        let outs = legion_runtime::halo::bands(rows);
        let bands: Vec<BandCost> = outs.iter().enumerate().map(|(b, out)| self.band_cost(b, group, *out)).collect();
        let mut ports = self.ports();
        let sends: Vec<Transfer> = self.scatter(group, &outs).into_iter().map(|x| x.1).collect();
        let mut done = vec![0.0; outs.len()];
        for (t, at) in sends.iter().zip(ports.run(&sends)) {
            done[t.to] = at + bands[t.to].compute_s;
        }
        let backs: Vec<Transfer> = self.gather(group, &outs, |b| done[b]).into_iter().map(|x| x.1).collect();
        let latency_s = ports.run(&backs).into_iter().fold(done[self.coordinator], f64::max);
        GroupCost { group, rows: rows.to_vec(), bands, latency_s }
    }

    /// The input bands of `group` split as `outs`, from the coordinator to every board with a
    /// band (to itself: free), ready at 0: (board, transfer).
    fn scatter(&self, group: Group, outs: &[Rows]) -> Vec<(usize, Transfer)> {
        let c = self.coordinator;
        (0..outs.len())
            .filter(|&b| !outs[b].is_empty())
            .map(|b| (b, Transfer { from: c, to: b, bytes: wire(self.band_rows(group, outs[b]).0 * self.row_bytes(group.from)), ready: 0.0 }))
            .collect()
    }

    /// The output bands of `group` split as `outs` back to the coordinator, each ready when its
    /// board is `done` (the coordinator's own band does not travel): (board, transfer).
    fn gather(&self, group: Group, outs: &[Rows], done: impl Fn(usize) -> f64) -> Vec<(usize, Transfer)> {
        let c = self.coordinator;
        (0..outs.len())
            .filter(|&b| !outs[b].is_empty() && b != c)
            .map(|b| (b, Transfer { from: b, to: c, bytes: wire(outs[b].len() * self.row_bytes(group.to)), ready: done(b) }))
            .collect()
    }

    /// This cost model for `plan`: with the groups that compute their edges first.
    pub fn for_plan(&self, plan: &legion_runtime::plan::Plan) -> CostModel {
        CostModel { edges_first: plan.groups.iter().filter(|g| g.edges_first).map(|g| g.group()).collect(), ..self.clone() }
    }

    /// Board `b`'s band `out` of `group` in the parts it computes, in order: its edges first
    /// where the group does that and `next` (the exchange after it) is known, else whole.
    fn parts(&self, group: Group, next: Option<&legion_runtime::mesh::Redistribution>, b: usize, out: Rows) -> Vec<Rows> {
        match next {
            Some(next) if self.topology == Topology::Mesh && self.edges_first.contains(&group) => legion_runtime::mesh::band_parts(next, b, out),
            _ if out.is_empty() => vec![],
            _ => vec![out],
        }
    }

    /// The exchange after group `gi` of `groups` when it is a mesh group before another.
    fn next_exchange(&self, groups: &[(Group, Vec<usize>)], gi: usize) -> Option<legion_runtime::mesh::Redistribution> {
        let ((_, rows), (next, next_rows)) = (groups.get(gi)?, groups.get(gi + 1)?);
        (self.topology == Topology::Mesh).then(|| legion_runtime::mesh::redistribution(&self.model, rows, *next, next_rows).expect("consecutive groups of a plan"))
    }

    /// Every board's port, fresh.
    fn ports(&self) -> Ports {
        Ports::new(self.boards.iter().map(|b| b.link).collect())
    }

    /// Compute seconds of board `b`'s band `out` of `group`.
    pub fn compute_s(&self, b: usize, group: Group, out: Rows) -> f64 {
        if out.is_empty() {
            return 0.0;
        }
        self.band_cost(b, group, out).compute_s
    }

    /// The groups' predicted costs in the model's topology (star: each on its own; mesh: the
    /// increments of the simulated timeline), without the tail.
    pub fn groups_cost(&self, groups: &[(Group, Vec<usize>)]) -> Vec<GroupCost> {
        match self.topology {
            Topology::Star => groups.iter().map(|(g, r)| self.group_cost(*g, r)).collect(),
            Topology::Mesh => self.mesh_timeline(groups).groups,
        }
    }

    /// Cost of a whole plan: its groups and the tail (whole).
    pub fn plan_cost(&self, groups: &[(Group, Vec<usize>)]) -> f64 {
        self.groups_cost(groups).iter().map(|g| g.latency_s).sum::<f64>() + self.tail_s
    }

    /// The tail with these Dense layers split: what the coordinator's whole tail takes beside
    /// its Dense layers (at least 0; the layers are timed as slices, the tail as a whole), each
    /// Dense layer whole on the coordinator or, if split, its latency
    /// ([`CostModel::split_cost`]).
    ///
    /// `gathered`: the last group's rows per board when the boards gather the first split
    /// layer's input themselves ([`legion_runtime::plan::Plan::gathers_tail`]); that layer is
    /// then costed by [`CostModel::gathered_split_cost`].
    pub fn tail_cost(&self, splits: &[legion_runtime::plan::TailSplit], gathered: Option<&[usize]>) -> f64 {
        let c = self.coordinator;
        let whole = |d: &DenseCost| d.e[c].at(d.outputs);
        let rest = (self.tail_s - self.dense.iter().map(whole).sum::<f64>()).max(0.0);
        rest + self
            .dense
            .iter()
            .map(|d| match (splits.iter().position(|s| s.node == d.node), gathered) {
                (Some(0), Some(rows)) => self.gathered_split_cost(d, &splits[0].cols, rows),
                (Some(i), _) => self.split_cost(d, &splits[i].cols),
                (None, _) => whole(d),
            })
            .sum::<f64>()
    }

    /// The tail of the plan `groups` + `tail` ([`CostModel::tail_cost`], its first split
    /// layer gathered on the boards where the plan does that).
    pub fn plan_tail_cost(&self, groups: &[(Group, Vec<usize>)], tail: &[legion_runtime::plan::TailSplit]) -> f64 {
        self.tail_cost(tail, self.gathered_rows(groups, tail))
    }

    /// The last group's rows per board if the plan `groups` + `tail` gathers its first split
    /// layer's input on the boards.
    fn gathered_rows<'a>(&self, groups: &'a [(Group, Vec<usize>)], tail: &[legion_runtime::plan::TailSplit]) -> Option<&'a [usize]> {
        match (groups.last(), tail.first()) {
            (Some((last, rows)), Some(first)) if legion_runtime::plan::gathers_tail(&self.model, self.topology, last.to, first.node) => Some(&rows[..]),
            _ => None,
        }
    }

    /// The transfers that bring a split layer's input to its boards, all ready at 0: the
    /// coordinator's whole input to every other board with features or, `gathered` (the last
    /// group's rows per board), every band to every other board with features but the
    /// coordinator (which has them all once the groups are done).
    fn split_input_sends(&self, d: &DenseCost, cols: &[usize], gathered: Option<&[usize]>) -> Vec<Transfer> {
        let c = self.coordinator;
        let mut sends = Vec::new();
        for to in (0..cols.len()).filter(|&b| cols[b] > 0 && b != c) {
            match gathered {
                None => sends.push(Transfer { from: c, to, bytes: wire(4 * d.inputs), ready: 0.0 }),
                Some(rows) => {
                    let h = rows.iter().sum::<usize>().max(1);
                    for from in (0..rows.len()).filter(|&b| b != to && rows[b] > 0) {
                        sends.push(Transfer { from, to, bytes: wire(4 * d.inputs * rows[from] / h), ready: 0.0 });
                    }
                }
            }
        }
        sends
    }

    /// A split Dense layer's latency once its input goes out as `sends`, through the ports:
    /// each board's slice when all of its input is there, its features back to the coordinator
    /// (which computes its own slice meanwhile).
    fn slices_cost(&self, d: &DenseCost, cols: &[usize], sends: &[Transfer]) -> f64 {
        let c = self.coordinator;
        let mut ports = self.ports();
        let arrived = ports.run(sends);
        let backs: Vec<Transfer> = (0..cols.len())
            .filter(|&b| cols[b] > 0 && b != c)
            .map(|b| {
                let ready = sends.iter().zip(&arrived).filter(|(t, _)| t.to == b).map(|(_, &at)| at).fold(0.0, f64::max);
                Transfer { from: b, to: c, bytes: wire(4 * cols[b]), ready: ready + d.e[b].at(cols[b]) }
            })
            .collect();
        ports.run(&backs).into_iter().fold(d.e[c].at(cols[c]), f64::max)
    }

    /// A split Dense layer whose boards gather its input from the last group's bands (`rows`
    /// per board) instead of from the coordinator: after the groups (when the coordinator has
    /// every band), every band to every other board with features, through the ports; each
    /// board's slice once it has them all, and back.
    pub fn gathered_split_cost(&self, d: &DenseCost, cols: &[usize], rows: &[usize]) -> f64 {
        self.slices_cost(d, cols, &self.split_input_sends(d, cols, Some(rows)))
    }

    /// A split Dense layer's latency: its input from the coordinator to every board with
    /// features, their slices computed and sent back, through the ports.
    pub fn split_cost(&self, d: &DenseCost, cols: &[usize]) -> f64 {
        self.slices_cost(d, cols, &self.split_input_sends(d, cols, None))
    }

    /// Every board's cost for a slice of f features of a split layer, f = 0..=outputs (what
    /// the features' split minimises): S + E + R (the coordinator: E).
    pub fn dense_tables(&self, d: &DenseCost) -> Vec<Vec<f64>> {
        let c = self.coordinator;
        (0..self.boards.len())
            .map(|b| {
                let path = self.boards[c].link.between(&self.boards[b].link);
                let mut row = vec![0.0; d.outputs + 1];
                for f in 1..=d.outputs {
                    let wires = if b == c { 0.0 } else { path.seconds(wire(4 * d.inputs)) + path.seconds(wire(4 * f)) };
                    row[f] = (wires + d.e[b].at(f)).max(row[f - 1]);
                }
                row
            })
            .collect()
    }

    /// The mesh, simulated: the coordinator sends the first group's input bands; every board
    /// computes a band once its own rows and its pieces are there; pieces go out as soon as
    /// their band is computed; the last group's bands go back to the coordinator. A group's
    /// latency is how much later its last band is done than the previous group's (the last
    /// group's: until the coordinator has every band), so that they add up to the total.
    pub fn mesh_timeline(&self, groups: &[(Group, Vec<usize>)]) -> MeshTimeline {
        let n = self.boards.len();
        let c = self.coordinator;
        let mut ports = self.ports();
        let mut free = vec![0.0f64; n];
        let mut out = Vec::new();
        let mut prev_done = 0.0f64;
        // When each board has its input of the current group (None: no band).
        let mut ready: Vec<Option<f64>> = vec![None; n];
        if let Some((g0, rows0)) = groups.first() {
            let sends = self.scatter(*g0, &legion_runtime::halo::bands(rows0));
            for ((b, _), at) in sends.iter().zip(ports.run(&sends.iter().map(|x| x.1).collect::<Vec<_>>())) {
                ready[*b] = Some(at);
            }
        }
        for (gi, (g, rows)) in groups.iter().enumerate() {
            let outs = legion_runtime::halo::bands(rows);
            let next = self.next_exchange(groups, gi);
            let mut bands = vec![BandCost::default(); n];
            let mut done = vec![0.0f64; n];
            // Per board: when each part of its band is done (a piece leaves once its part is).
            let mut parts_done: Vec<Vec<(Rows, f64)>> = vec![vec![]; n];
            for b in 0..n {
                if let Some(at) = ready[b] {
                    let start = at.max(free[b]);
                    // Summed apart from the start, so that a band in one part costs exactly
                    // its compute time.
                    let mut compute = 0.0;
                    for part in self.parts(*g, next.as_ref(), b, outs[b]) {
                        compute += self.compute_s(b, *g, part);
                        parts_done[b].push((part, start + compute));
                    }
                    done[b] = start + compute;
                    free[b] = done[b];
                    bands[b] = BandCost { rows: outs[b].len(), send_s: start - prev_done.min(start), compute_s: compute, recv_s: 0.0 };
                }
            }
            let group_done;
            if let Some(r) = next {
                let piece_ready = |t: &legion_runtime::mesh::Transfer| parts_done[t.from].iter().find(|(p, _)| p.start <= t.rows.start && t.rows.end <= p.end).map_or(done[t.from], |x| x.1);
                let sends: Vec<Transfer> =
                    r.transfers.iter().map(|t| Transfer { from: t.from, to: t.to, bytes: wire(t.rows.len() * self.row_bytes(g.to)), ready: piece_ready(t) }).collect();
                let arrived = ports.run(&sends);
                ready = (0..n).map(|b| (!r.needs[b].is_empty()).then(|| if r.keeps[b].is_empty() { 0.0 } else { done[b] })).collect();
                for (t, at) in r.transfers.iter().zip(arrived) {
                    ready[t.to] = ready[t.to].map(|x| x.max(at));
                }
                group_done = (0..n).filter(|&b| !outs[b].is_empty()).map(|b| done[b]).fold(0.0, f64::max);
            } else {
                let backs = self.gather(*g, &outs, |b| done[b]);
                let arrived = ports.run(&backs.iter().map(|x| x.1).collect::<Vec<_>>());
                for ((b, t), at) in backs.iter().zip(&arrived) {
                    bands[*b].recv_s = at - t.ready;
                }
                group_done = arrived.into_iter().fold(if outs[c].is_empty() { 0.0 } else { done[c] }, f64::max);
            }
            out.push(GroupCost { group: *g, rows: rows.clone(), bands, latency_s: (group_done - prev_done).max(0.0) });
            prev_done = prev_done.max(group_done);
        }
        MeshTimeline { total_s: prev_done, groups: out }
    }

    /// One group of a mesh on its own, as the solver's DP sees it: the previous group's output
    /// split as `prev` (None: the group reads the input, from the coordinator) is everywhere
    /// at time 0; the group's pieces are exchanged and its bands computed; if `last`, its bands
    /// go back to the coordinator. The same simulation as [`CostModel::mesh_timeline`].
    pub fn mesh_step(&self, prev: Option<&[usize]>, group: Group, rows: &[usize], last: bool) -> f64 {
        let n = self.boards.len();
        let c = self.coordinator;
        let mut ports = self.ports();
        let outs = legion_runtime::halo::bands(rows);
        // A board with a band needs input rows, so it has a band exactly when it needs some.
        let sends: Vec<Transfer> = match prev {
            None => self.scatter(group, &outs).into_iter().map(|x| x.1).collect(),
            Some(p) => {
                let r = legion_runtime::mesh::redistribution(&self.model, p, group, rows).expect("consecutive groups of a plan");
                r.transfers.iter().map(|t| Transfer { from: t.from, to: t.to, bytes: wire(t.rows.len() * self.row_bytes(group.from)), ready: 0.0 }).collect()
            }
        };
        let mut ready = vec![0.0f64; n];
        for (t, at) in sends.iter().zip(ports.run(&sends)) {
            ready[t.to] = ready[t.to].max(at);
        }
        let done: Vec<f64> = (0..n).map(|b| if outs[b].is_empty() { 0.0 } else { ready[b] + self.compute_s(b, group, outs[b]) }).collect();
        if !last {
            return done.into_iter().fold(0.0, f64::max);
        }
        let backs: Vec<Transfer> = self.gather(group, &outs, |b| done[b]).into_iter().map(|x| x.1).collect();
        ports.run(&backs).into_iter().fold(done[c], f64::max)
    }
}

/// What one frame keeps a board busy with: its compute thread, and its port's send and
/// receive queues (seconds per frame). With frames in flight these overlap across frames, so
/// the busiest of them bounds the frames per second ([`throughput_fps`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Busy {
    pub board: String,
    pub compute_s: f64,
    pub send_s: f64,
    pub recv_s: f64,
}

impl Busy {
    pub fn max_s(&self) -> f64 {
        self.compute_s.max(self.send_s).max(self.recv_s)
    }
}

/// Predicted frames per second of a plan whose frame takes `latency_s` and keeps the boards
/// `busy`, with at most `in_flight` frames in flight: `in_flight` frames per latency, unless a
/// board's compute or port is saturated first.
pub fn throughput_fps(latency_s: f64, busy: &[Busy], in_flight: usize) -> f64 {
    let bottleneck = busy.iter().map(Busy::max_s).fold(0.0, f64::max);
    let by_latency = in_flight as f64 / latency_s.max(1e-9);
    if bottleneck > 0.0 { by_latency.min(1.0 / bottleneck) } else { by_latency }
}

impl CostModel {
    /// Every board's busy time per frame for `groups` (in the model's topology) and the tail
    /// split as `tail`: the bands and tail sections it computes; what its port sends and
    /// receives (input bands, pieces, output bands, the split layers' inputs and slices).
    pub fn busy(&self, groups: &[(Group, Vec<usize>)], tail: &[legion_runtime::plan::TailSplit]) -> Vec<Busy> {
        let n = self.boards.len();
        let c = self.coordinator;
        let mut busy: Vec<Busy> = self.boards.iter().map(|b| Busy { board: b.name.clone(), ..Default::default() }).collect();
        let moved = |busy: &mut Vec<Busy>, t: &Transfer| {
            if t.from != t.to && t.bytes > 0 {
                let s = self.boards[t.from].link.between(&self.boards[t.to].link).busy_s(t.bytes);
                busy[t.from].send_s += s;
                busy[t.to].recv_s += s;
            }
        };
        for (gi, (g, rows)) in groups.iter().enumerate() {
            let outs = legion_runtime::halo::bands(rows);
            let next = self.next_exchange(groups, gi);
            for b in 0..n {
                busy[b].compute_s += self.parts(*g, next.as_ref(), b, outs[b]).into_iter().map(|p| self.compute_s(b, *g, p)).sum::<f64>();
            }
            let star = self.topology == Topology::Star;
            if star || gi == 0 {
                for (_, t) in self.scatter(*g, &outs) {
                    moved(&mut busy, &t);
                }
            }
            if star || gi + 1 == groups.len() {
                for (_, t) in self.gather(*g, &outs, |_| 0.0) {
                    moved(&mut busy, &t);
                }
            }
            if !star && gi > 0 {
                let r = legion_runtime::mesh::redistribution(&self.model, &groups[gi - 1].1, *g, rows).expect("consecutive groups of a plan");
                for t in &r.transfers {
                    moved(&mut busy, &Transfer { from: t.from, to: t.to, bytes: wire(t.rows.len() * self.row_bytes(g.from)), ready: 0.0 });
                }
            }
        }
        // The tail: the coordinator's sections (its whole tail less the split layers), and
        // every split layer's slices with their input out (from the coordinator, or gathered
        // from the boards' last bands) and their features back.
        let whole = |d: &DenseCost| d.e[c].at(d.outputs);
        busy[c].compute_s += self.tail_s - self.dense.iter().filter(|d| tail.iter().any(|s| s.node == d.node)).map(whole).sum::<f64>();
        let gathered = self.gathered_rows(groups, tail);
        for d in &self.dense {
            let Some(k) = tail.iter().position(|s| s.node == d.node) else { continue };
            let split = &tail[k];
            for t in self.split_input_sends(d, &split.cols, gathered.filter(|_| k == 0)) {
                moved(&mut busy, &t);
            }
            for (b, &f) in split.cols.iter().enumerate().filter(|(_, f)| **f > 0) {
                busy[b].compute_s += d.e[b].at(f);
                moved(&mut busy, &Transfer { from: b, to: c, bytes: wire(4 * f), ready: 0.0 });
            }
        }
        for b in &mut busy {
            b.compute_s = b.compute_s.max(0.0);
        }
        busy
    }
}

/// The mesh's simulated timeline: per group its cost (latency: the increment), and the total
/// without the tail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeshTimeline {
    pub groups: Vec<GroupCost>,
    pub total_s: f64,
}

/// Bytes of a tensor message of `payload` bytes on the wire.
fn wire(payload: usize) -> usize {
    payload + HEADER_LEN
}

impl CostModel {
    /// The prediction of a plan, written out: per group and board the rows (and input rows
    /// with the halo), S, every segment's E with its alpha, R; the group latencies, the tail.
    pub fn explain(&self, groups: &[(Group, Vec<usize>)], tail: &[legion_runtime::plan::TailSplit]) -> String {
        let mut s = format!("topology: {}\n", self.topology);
        let mut total = 0.0;
        let costs = self.groups_cost(groups);
        for (gi, ((g, rows), gc)) in groups.iter().zip(&costs).enumerate() {
            total += gc.latency_s;
            s += &format!("group {gi}: values {}..{}, predicted {:.1} ms\n", g.from, g.to, gc.latency_s * 1e3);
            if self.topology == Topology::Mesh && gi > 0 {
                let r = legion_runtime::mesh::redistribution(&self.model, &groups[gi - 1].1, *g, rows).expect("consecutive groups of a plan");
                let moves: Vec<String> = r
                    .transfers
                    .iter()
                    .map(|t| format!("{}->{} rows {} ({:.1} KB)", self.boards[t.from].name, self.boards[t.to].name, t.rows, (t.rows.len() * self.row_bytes(g.from)) as f64 / 1e3))
                    .collect();
                s += &format!("  before it, board to board: {}\n", if moves.is_empty() { "nothing".into() } else { moves.join(", ") });
            }
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
                let next = self.next_exchange(groups, gi);
                let order = self.parts(*g, next.as_ref(), b, out);
                if order.len() > 1 {
                    let each: Vec<String> = order.iter().map(|&p| format!("{p} {:.1} ms", self.compute_s(b, *g, p) * 1e3)).collect();
                    s += &format!("      edges first, in parts: {}\n", each.join(", "));
                }
            }
        }
        for t in tail {
            s += &format!("tail layer {} split by output features {:?}\n", t.node, t.cols);
        }
        let tail_s = self.plan_tail_cost(groups, tail);
        s += &format!("tail on {}: {:.1} ms\npredicted total: {:.1} ms\n", self.boards[self.coordinator].name, tail_s * 1e3, (total + tail_s) * 1e3);
        s
    }
}

/// Maps of at most this many rows are also timed at their full height: ResNet's 7-row layer
/// 4, VGG's 14-row block 5, YOLOv2's 13-row head.
pub const SMALL_MAP_ROWS: usize = 16;

/// Row counts at which a segment or group is timed: a quarter and a half of its output, and on
/// small maps the whole of it (their run time grows more than linearly up to it; between two
/// points far below, a line misses the full-height run by up to 40 %). On a 13-row map the
/// points are 3 and 6 rows, and a band of 7 or the single board's 13 lie beyond them: one
/// noisy point there (YOLOv2's 1280→1024 convolution timed slower at 3 rows than at 6) made
/// the monotone fit flat, every band of it as long as the whole map.
pub fn row_points(h: usize) -> Vec<usize> {
    let mut p = vec![(h / 4).max(1), (h / 2).max(1)];
    if h <= SMALL_MAP_ROWS {
        p.push(h);
    }
    p.dedup();
    p
}
