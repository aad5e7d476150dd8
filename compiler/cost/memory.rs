//! Memory predicted: what each board's process holds at its peak under a plan, from the
//! probe's counted allocations (like E from its timings).
//!
//! A board process holds, besides its own binary and libraries (`base`, the probe's resident
//! memory before any job):
//! - the weights of its model file (the layers it computes; of a split tail layer, its slice):
//!   exactly known from the plan (the file is streamed: only they are ever held);
//! - tract's runnables of its bands and its part of the tail: tract's own copy of their weights,
//!   packed, and their plans (`built`, the probe's `build_mb` per segment and slice, by rows or
//!   features). Building one also holds its unpacked copy for a while (`build_extra_mb`: the
//!   largest of them counts);
//! - the most one run holds at once: input, intermediate values, output, scratch (`work`, the
//!   probe's `work_mb`, the largest over its bands and tail parts), and on the coordinator the
//!   frame's input and the largest feature map it assembles.
//!
//! Peak = base + weights + built + extra + work.

use super::{CostModel, Fit};
use legion_runtime::halo::{bands, Group};
use legion_runtime::plan::{TailSplit, Topology};
use serde::Serialize;

/// What the probe measured of one segment, slice or section, MB; by output rows (segments)
/// or features (Dense slices).
#[derive(Clone, Debug, Serialize)]
pub struct MemFit {
    /// Kept by its runnable.
    pub build: Fit,
    /// Held for a while while building, beyond its weights and what it keeps.
    pub extra: Fit,
    /// The most a run holds at once.
    pub work: Fit,
}

/// The memory side of the cost model.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryCost {
    /// Per board: the process before its model, MB.
    pub base_mb: Vec<f64>,
    /// Per board, per segment (index of [`CostModel::cuts`] windows).
    pub segments: Vec<Vec<MemFit>>,
    /// Per Dense layer of [`CostModel::dense`], per board.
    pub dense: Vec<Vec<MemFit>>,
    /// The tail whole on the coordinator (at 1).
    pub tail: MemFit,
}

/// One board's predicted peak and its parts, MB.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoardMemory {
    pub board: String,
    pub base_mb: f64,
    /// Weights of its model file.
    pub weights_mb: f64,
    /// tract's runnables, and the most building one held besides.
    pub built_mb: f64,
    pub build_extra_mb: f64,
    /// The most a run holds, with the coordinator's frame buffers.
    pub work_mb: f64,
    pub peak_mb: f64,
}

const MB: f64 = 1e6;

impl CostModel {
    fn weight_mb(&self, layers: impl Iterator<Item = usize>) -> f64 {
        layers.map(|id| self.model.nodes[id].op.weights().iter().map(|w| w.volume() * 4).sum::<usize>()).sum::<usize>() as f64 / MB
    }

    /// Every board's predicted peak memory under the plan `groups` + `tail`; None without
    /// memory measurements.
    pub fn memory(&self, groups: &[(Group, Vec<usize>)], tail: &[TailSplit]) -> Option<Vec<BoardMemory>> {
        let mem = self.memory.as_ref()?;
        let c = self.coordinator;
        let n = self.boards.len();
        let (mut weights, mut built, mut extra, mut work) = (vec![0.0; n], vec![0.0; n], vec![0.0f64; n], vec![0.0f64; n]);
        for (gi, (g, rows)) in groups.iter().enumerate() {
            let next = self.next_exchange(groups, gi);
            for (b, out) in bands(rows).into_iter().enumerate() {
                if out.is_empty() {
                    continue;
                }
                weights[b] += self.weight_mb(g.layers());
                // A runnable per part of the band (one if it is computed whole).
                for part in self.parts(*g, next.as_ref(), b, out) {
                    let (_, segs) = self.band_rows(*g, part);
                    for (k, r) in segs {
                        let f = &mem.segments[b][k];
                        built[b] += f.build.at(r);
                        extra[b] = extra[b].max(f.extra.at(r));
                        work[b] = work[b].max(f.work.at(r));
                    }
                }
            }
        }
        // The tail: the coordinator holds it but for the split layers' other slices.
        let tail_from = self.cuts.last().copied().unwrap_or(0);
        let output = self.model.output();
        if tail_from < output {
            weights[c] += self.weight_mb(tail_from + 1..=output);
            let whole = |i: usize| &mem.dense[i][c];
            let dense_built: f64 = (0..self.dense.len()).map(|i| whole(i).build.at(self.dense[i].outputs)).sum();
            built[c] += (mem.tail.build.at(1) - dense_built).max(0.0);
            extra[c] = extra[c].max(mem.tail.extra.at(1));
            work[c] = work[c].max(mem.tail.work.at(1));
            for (i, d) in self.dense.iter().enumerate() {
                let layer_mb = self.weight_mb(d.node..=d.node);
                match tail.iter().find(|t| t.node == d.node) {
                    None => built[c] += whole(i).build.at(d.outputs),
                    Some(t) => {
                        weights[c] -= layer_mb;
                        for (b, &cols) in t.cols.iter().enumerate().filter(|x| *x.1 > 0) {
                            let f = &mem.dense[i][b];
                            weights[b] += layer_mb * cols as f64 / d.outputs as f64;
                            built[b] += f.build.at(cols);
                            extra[b] = extra[b].max(f.extra.at(cols));
                            work[b] = work[b].max(f.work.at(cols));
                        }
                    }
                }
            }
        }
        // The coordinator's frame: the input, and the largest map it assembles (every group's
        // output in the star, the last group's in the mesh).
        let value_mb = |v: usize| self.model.nodes[v].shape.iter().product::<usize>() as f64 * 4.0 / MB;
        let assembled = match self.topology {
            Topology::Star => groups.iter().map(|(g, _)| value_mb(g.to)).fold(0.0, f64::max),
            Topology::Mesh => groups.last().map_or(0.0, |(g, _)| value_mb(g.to)),
        };
        work[c] += value_mb(0) + assembled;
        Some(
            (0..n)
                .map(|b| {
                    let steady = weights[b] + built[b] + extra[b] + work[b];
                    BoardMemory {
                        board: self.boards[b].name.clone(),
                        base_mb: mem.base_mb[b],
                        weights_mb: weights[b],
                        built_mb: built[b],
                        build_extra_mb: extra[b],
                        work_mb: work[b],
                        peak_mb: mem.base_mb[b] + steady,
                    }
                })
                .collect(),
        )
    }
}

impl CostModel {
    /// Per Dense layer of [`CostModel::dense`], per board: the most output features of it the
    /// board can hold within `limits` (MB; None: no limit) beside the rest of the plan `groups`,
    /// its free memory shared among the layers in proportion to their sizes. None without
    /// memory measurements.
    pub fn dense_caps(&self, groups: &[(Group, Vec<usize>)], limits: &[Option<f64>]) -> Option<Vec<Vec<usize>>> {
        let mem = self.memory.as_ref()?;
        let n = self.boards.len();
        let none: Vec<TailSplit> = self.dense.iter().map(|d| TailSplit { node: d.node, cols: vec![0; n] }).collect();
        let without = self.memory(groups, &none)?;
        let sizes: Vec<f64> = self.dense.iter().map(|d| self.weight_mb(d.node..=d.node)).collect();
        let total: f64 = sizes.iter().sum();
        Some(
            self.dense
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    (0..n)
                        .map(|b| match limits[b] {
                            None => usize::MAX,
                            Some(limit) => {
                                // A feature's weights are held once, and tract keeps its copy.
                                let held = sizes[i] / d.outputs as f64;
                                let per_col = held + mem.dense[i][b].build.at(d.outputs) / d.outputs as f64;
                                let free = (limit - without[b].peak_mb).max(0.0) * sizes[i] / total;
                                (free / per_col) as usize
                            }
                        })
                        .collect()
                })
                .collect(),
        )
    }
}

/// The board whose predicted peak exceeds its limit the most, and by how much (MB).
pub fn overflow(memory: &[BoardMemory], limits: &[Option<f64>]) -> Option<(usize, f64)> {
    memory
        .iter()
        .zip(limits)
        .enumerate()
        .filter_map(|(b, (m, l))| l.map(|l| (b, m.peak_mb - l)))
        .filter(|&(_, short)| short > 0.0)
        .max_by(|x, y| x.1.total_cmp(&y.1))
}
