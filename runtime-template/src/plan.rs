//! The plan: the contract between the compiler and the boards. Versioned, serde, hashed.

use crate::exec::{run, runnable, section_graph, BandExecutor, Runnable};
use crate::halo::{bands, Group, Rows};
use crate::ir::{InputLayout, Model};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tract_core::internal::*;

/// Bumped whenever the meaning of a field changes.
pub const PLAN_VERSION: u32 = 1;

/// One fused group of a plan and how its output rows are split over the boards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanGroup {
    /// Cut point the group reads (exclusive).
    pub from: usize,
    /// Cut point the group outputs (inclusive).
    pub to: usize,
    /// Output rows of each board, in board order; they add up to the output's height. A board
    /// may get zero rows.
    pub rows: Vec<usize>,
    /// Mesh: each board computes first the rows of its band that other boards need for the
    /// next group, sends them, then computes the rest ([`crate::mesh::band_parts`]), so that
    /// its neighbours do not wait for its whole band. The parts' halos are computed twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edges_first: bool,
}

impl PlanGroup {
    pub fn group(&self) -> Group {
        Group { from: self.from, to: self.to }
    }
    /// Each board's band of output rows.
    pub fn bands(&self) -> Vec<Rows> {
        bands(&self.rows)
    }
}

/// How group outputs travel between groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// Every group's bands go back to the coordinator, which sends the next group's bands out
    /// (Legion's topology). A plan file without the field is a star plan.
    #[default]
    Star,
    /// Boards send each other the rows the next group needs ([`crate::mesh`]); only the input's
    /// bands leave the coordinator and only the last group's come back.
    Mesh,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Star => "star",
            Topology::Mesh => "mesh",
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Topology, String> {
        match s {
            "star" => Ok(Topology::Star),
            "mesh" => Ok(Topology::Mesh),
            _ => Err(format!("unknown topology '{s}' (star or mesh)")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// sha256 of the model the plan was made for (ONNX file bytes).
    pub model_sha256: String,
    /// Board names, in the order of [`PlanGroup::rows`]. The first one is the coordinator.
    pub boards: Vec<String>,
    /// Fused groups covering the splittable prefix, in order.
    pub groups: Vec<PlanGroup>,
    /// How the groups' outputs travel (part of the hash: boards behave differently).
    #[serde(default)]
    pub topology: Topology,
    /// Dense layers of the tail split by output features over the boards (ascending nodes);
    /// the rest of the tail runs on the coordinator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<TailSplit>,
    /// How the fleet runs the plan: addresses and ports, links, threads, twin speeds, the
    /// coordinator, the deadline. Part of the hash, so that a board started with another
    /// configuration answers with another plan hash. None for a plan not yet given a fleet
    /// (solvers, in-process runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    /// Whole frames dealt among sub-fleets ("lanes"): each lane splits the frames it is dealt
    /// over its own boards with its own plan and coordinator. Empty: one lane, this plan. A
    /// plan with lanes has no groups of its own; its lanes' boards are its boards, each once.
    /// A board runs its lane's plan, never this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<Plan>,
    /// Frames in flight per lane the plan was chosen for (what `run --in-flight` defaults to).
    #[serde(default = "one_frame", skip_serializing_if = "is_one_frame")]
    pub in_flight: usize,
    /// Plans for the fleet without one of its workers, solved from the same profiles: when the
    /// coordinator loses a board, every live board switches to the fallback for that loss (by
    /// its hash, [`Plan::variant`]). Each board's model file holds the weights of every plan
    /// it may run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Fallback>,
}

/// The groups and tail of a plan for the fleet without the boards `lost`: same boards, same
/// order, the lost ones without rows or features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Indices, in the plan's board order, of the boards lost.
    pub lost: Vec<usize>,
    pub groups: Vec<PlanGroup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<TailSplit>,
}

fn one_frame() -> usize {
    1
}

fn is_one_frame(n: &usize) -> bool {
    *n == 1
}

/// Everything besides the plan that changes how the boards compute and talk: what
/// [`Plan::hash`] covers with the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Index of the coordinator in the plan's board order.
    pub coordinator: usize,
    /// Deadline on every read, write and connect, ms.
    pub deadline_ms: u64,
    /// No heartbeat answered for this long: the coordinator takes the worker as lost and the
    /// fleet switches to the fallback plan without it, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Every board, in plan order.
    pub boards: Vec<crate::board::Peer>,
}

/// A Dense layer of the tail split by output features: each board computes its slice (from
/// the layer's whole input vector, which the coordinator sends it) and holds only that slice
/// of the weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailSplit {
    /// The Dense node.
    pub node: usize,
    /// Output features of each board, in board order; they add up to the layer's outputs.
    pub cols: Vec<usize>,
}

impl TailSplit {
    /// Each board's features.
    pub fn bands(&self) -> Vec<Rows> {
        bands(&self.cols)
    }
}

/// How the coordinator runs the tail: sections on its own, and the split Dense layers.
pub enum TailStage {
    /// Values `from` (exclusive) to `to` (inclusive), on the coordinator.
    Local { from: usize, to: usize },
    /// A split Dense layer: plan.tail[i].
    Split(usize),
}

/// The tail's stages in order (none without a tail).
pub fn tail_stages(model: &Model, plan: &Plan) -> Vec<TailStage> {
    let mut at = model.split_end();
    let mut stages = Vec::new();
    for (i, t) in plan.tail.iter().enumerate() {
        let input = t.node - 1;
        if input > at {
            stages.push(TailStage::Local { from: at, to: input });
        }
        stages.push(TailStage::Split(i));
        at = t.node;
    }
    if model.output() > at {
        stages.push(TailStage::Local { from: at, to: model.output() });
    }
    stages
}

/// [`Plan::gathers_tail`] for a plan in `topology` whose last group ends at value `last` and
/// whose first split layer of the tail is node `first_split`.
pub fn gathers_tail(model: &Model, topology: Topology, last: usize, first_split: usize) -> bool {
    topology == Topology::Mesh && last == model.split_end() && (last + 1..first_split).all(|n| matches!(model.nodes[n].op, crate::ir::Op::Flatten))
}

impl Plan {
    /// The plan itself (0) and its fallbacks (1..), each as a whole plan: the fallback's groups
    /// and tail, everything else the plan's. A fallback's hash names it on the wire.
    pub fn variants(&self) -> Vec<Plan> {
        let mut all = vec![self.clone()];
        all.extend(self.fallbacks.iter().map(|f| Plan { groups: f.groups.clone(), tail: f.tail.clone(), fallbacks: vec![], lanes: vec![], ..self.clone() }));
        all
    }

    /// Mesh: the first split layer of the tail takes its input from the boards themselves, each
    /// board's band of the last group going to every board with features
    /// ([`crate::mesh::tail_gather`]), instead of the whole input from the coordinator to each.
    /// So when the tail begins with that layer (after a Flatten at most, which each board then
    /// does itself). Every variant decides for itself.
    pub fn gathers_tail(&self, model: &Model) -> bool {
        let (Some(last), Some(first)) = (self.groups.last(), self.tail.first()) else { return false };
        gathers_tail(model, self.topology, last.to, first.node)
    }

    /// Does board `board` compute with the weights of node `id` under this plan or one of its
    /// fallbacks: a layer of a group in which it has rows; on the coordinator, the tail but its
    /// split layers; a split layer of which it has features (their slice).
    pub fn board_needs(&self, board: usize, coordinator: bool, id: usize) -> bool {
        self.parts().any(|(groups, tail)| {
            let split_end = groups.last().map_or(0, |g| g.to);
            groups.iter().any(|g| g.rows.get(board).is_some_and(|&r| r > 0) && g.group().layers().contains(&id))
                || match tail.iter().find(|t| t.node == id) {
                    Some(t) => t.cols.get(board).is_some_and(|&c| c > 0),
                    None => coordinator && id > split_end,
                }
        })
    }

    /// The groups and tail of the plan (first) and of each fallback, borrowed.
    fn parts(&self) -> impl Iterator<Item = (&[PlanGroup], &[TailSplit])> {
        std::iter::once((&self.groups[..], &self.tail[..])).chain(self.fallbacks.iter().map(|f| (&f.groups[..], &f.tail[..])))
    }

    /// The features of split Dense layer `node` whose weights board `board` holds: the span of
    /// its slices under this plan and its fallbacks (empty if it has none in any).
    pub fn held_features(&self, board: usize, node: usize) -> Rows {
        let slices: Vec<Rows> = self.parts().filter_map(|(_, tail)| tail.iter().find(|t| t.node == node).map(|t| t.bands()[board])).filter(|c| !c.is_empty()).collect();
        match (slices.iter().map(|c| c.start).min(), slices.iter().map(|c| c.end).max()) {
            (Some(a), Some(b)) => Rows::new(a, b),
            _ => Rows::new(0, 0),
        }
    }

    /// `model` as board `board` holds it: each split Dense layer of the tail (of the plan or a
    /// fallback) cut to the features the board computes ([`Plan::held_features`]; none if it
    /// has none). A layer already cut is left as it is.
    pub fn board_model(&self, mut model: Model, board: usize) -> Model {
        let mut nodes: Vec<usize> = self.parts().flat_map(|(_, tail)| tail.iter().map(|t| t.node)).collect();
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            let cols = self.held_features(board, node);
            if let crate::ir::Op::Dense { weight, bias } = &mut model.nodes[node].op {
                if weight.len() == weight.volume() && weight.shape[1] != cols.len() {
                    (*weight, *bias) = crate::ir::dense_columns(weight, bias, cols.start..cols.end);
                }
            }
        }
        model
    }

    /// Canonical form: compact JSON of the struct (fields in declaration order).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a plan always serialises")
    }

    /// sha256 of the canonical form, hex.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.canonical_json()))
    }

    /// Does the plan fit the model? Groups chain from the input to the end of the splittable
    /// prefix over cut points, every group's rows add up to its output height.
    pub fn validate(&self, model: &Model) -> Result<()> {
        ensure!(self.version == PLAN_VERSION, "plan version {} is not {}", self.version, PLAN_VERSION);
        ensure!(!self.boards.is_empty(), "plan has no boards");
        ensure!(self.in_flight >= 1, "a plan for {} frames in flight", self.in_flight);
        if !self.lanes.is_empty() {
            ensure!(self.groups.is_empty() && self.tail.is_empty(), "a plan with lanes has groups or a tail of its own");
            let mut seen: Vec<&String> = Vec::new();
            for (i, lane) in self.lanes.iter().enumerate() {
                ensure!(lane.lanes.is_empty(), "lane {i} has lanes of its own");
                lane.validate(model).with_context(|| format!("lane {i}"))?;
                seen.extend(&lane.boards);
            }
            let mut all: Vec<&String> = self.boards.iter().collect();
            seen.sort();
            all.sort();
            ensure!(seen == all, "the lanes' boards {seen:?} are not the plan's boards {all:?}, each once");
            return Ok(());
        }
        let cuts = model.split_cut_points();
        let mut at = 0;
        for (i, g) in self.groups.iter().enumerate() {
            ensure!(g.from == at, "group {i} starts at value {} but the previous one ends at {at}", g.from);
            ensure!(g.to > g.from, "group {i} is empty");
            ensure!(cuts.contains(&g.to), "group {i} ends at value {}, which is not a cut point of the splittable part", g.to);
            ensure!(g.rows.len() == self.boards.len(), "group {i} gives rows to {} boards, the plan has {}", g.rows.len(), self.boards.len());
            let h = model.rows(g.to);
            ensure!(g.rows.iter().sum::<usize>() == h, "group {i}: rows add up to {}, its output has {h}", g.rows.iter().sum::<usize>());
            ensure!(!g.edges_first || (self.topology == Topology::Mesh && i + 1 < self.groups.len()), "group {i} computes its edges first, which only a mesh group with another after it can");
            at = g.to;
        }
        ensure!(at == model.split_end(), "groups end at value {at}, the splittable part at {}", model.split_end());
        if let Some(d) = &self.deployment {
            let names: Vec<&String> = d.boards.iter().map(|b| &b.name).collect();
            ensure!(names == self.boards.iter().collect::<Vec<_>>(), "the deployment names boards {names:?}, the plan {:?}", self.boards);
            ensure!(d.coordinator < self.boards.len(), "the deployment's coordinator {} is not a board of the plan", d.coordinator);
        }
        let mut after = model.split_end();
        for t in &self.tail {
            let n = model.nodes.get(t.node).with_context(|| format!("the tail split names node {}, the model has {}", t.node, model.nodes.len()))?;
            ensure!(t.node > after, "tail split of node {}: not after value {after}", t.node);
            ensure!(matches!(n.op, crate::ir::Op::Dense { .. }) && n.inputs == [t.node - 1], "tail split of node {}: not a Dense layer of the tail's chain", t.node);
            ensure!(t.cols.len() == self.boards.len(), "tail split of node {}: features for {} boards, the plan has {}", t.node, t.cols.len(), self.boards.len());
            ensure!(t.cols.iter().sum::<usize>() == n.shape[1], "tail split of node {}: features add up to {}, the layer has {}", t.node, t.cols.iter().sum::<usize>(), n.shape[1]);
            after = t.node;
        }
        for (i, (f, p)) in self.fallbacks.iter().zip(self.variants().into_iter().skip(1)).enumerate() {
            let lost: Vec<String> = f.lost.iter().map(|&b| self.boards.get(b).cloned().unwrap_or_else(|| format!("#{b}"))).collect();
            let what = || format!("the fallback without {}", lost.join(", "));
            ensure!(!f.lost.is_empty() && f.lost.iter().all(|&b| b < self.boards.len()), "fallback {i} loses boards {:?} of {}", f.lost, self.boards.len());
            if let Some(d) = &self.deployment {
                ensure!(!f.lost.contains(&d.coordinator), "{}: the coordinator cannot be lost", what());
            }
            p.validate(model).with_context(what)?;
            for &b in &f.lost {
                ensure!(p.groups.iter().all(|g| g.rows[b] == 0) && p.tail.iter().all(|t| t.cols[b] == 0), "{} gives that board work", what());
            }
        }
        Ok(())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feed a user's input in the layout the splittable stack expects.
pub fn to_nchw(model: &Model, input: Tensor) -> Result<Tensor> {
    let want = model.user_input_shape();
    if input.shape() != want.as_slice() {
        bail!("input shape {:?}, the model expects {:?}", input.shape(), want);
    }
    Ok(match model.input_layout {
        InputLayout::Nchw => input,
        InputLayout::Nhwc => input.permute_axes(&[0, 3, 1, 2])?,
    })
}

/// A whole plan run in one process: the coordinator splits, every board's band runs on its own
/// executor, the coordinator gathers, the tail runs on the coordinator.
pub struct LocalFleet {
    pub model: Arc<Model>,
    pub plan: Plan,
    boards: Vec<BandExecutor>,
    /// The tail's stages: the coordinator's sections, and per split layer each board's slice.
    tail: Vec<LocalStage>,
}

enum LocalStage {
    Local(Runnable),
    Split(Vec<Option<Runnable>>),
}

impl LocalFleet {
    pub fn new(model: Arc<Model>, plan: Plan) -> Result<LocalFleet> {
        plan.validate(&model)?;
        let boards = plan.boards.iter().map(|_| BandExecutor::new(model.clone())).collect();
        let tail = tail_stages(&model, &plan)
            .into_iter()
            .map(|s| -> Result<LocalStage> {
                Ok(match s {
                    TailStage::Local { from, to } => LocalStage::Local(runnable(section_graph(&model, from, to)?)?),
                    TailStage::Split(i) => {
                        let t = &plan.tail[i];
                        LocalStage::Split(t.bands().into_iter().map(|c| if c.is_empty() { Ok(None) } else { crate::exec::dense_slice(&model, t.node, c).map(Some) }).collect::<Result<_>>()?)
                    }
                })
            })
            .collect::<Result<_>>()?;
        Ok(LocalFleet { model, plan, boards, tail })
    }

    /// Run one input (in the user's layout) through the plan, in its topology.
    pub fn infer(&mut self, input: Tensor) -> Result<Tensor> {
        match self.plan.topology {
            Topology::Star => self.infer_star(input),
            Topology::Mesh => self.infer_mesh(input),
        }
    }

    /// Run one input through the plan as a star: every group's bands through the coordinator.
    pub fn infer_star(&mut self, input: Tensor) -> Result<Tensor> {
        let x = self.infer_splittable(input)?;
        self.tail(x)
    }

    /// Run the split groups only: the gathered output of the splittable part, before the tail.
    pub fn infer_splittable(&mut self, input: Tensor) -> Result<Tensor> {
        let mut x = to_nchw(&self.model, input)?;
        for gi in 0..self.plan.groups.len() {
            let inputs = self.scatter(gi, &x)?;
            x = gather(self.run_bands(gi, inputs)?)?;
        }
        Ok(x)
    }

    /// Run one input through the plan as a mesh: the coordinator sends each board its input
    /// rows of the first group; between groups every board keeps what it needs of its own
    /// output and receives the rest from the boards that computed it
    /// ([`crate::mesh::redistribution`], through [`crate::mesh::pieces`] and
    /// [`crate::mesh::assemble`], as the boards' runtime does); the last group's bands are
    /// gathered for the tail.
    pub fn infer_mesh(&mut self, input: Tensor) -> Result<Tensor> {
        if self.plan.groups.is_empty() {
            // Nothing splittable: as the star (the tail takes the input as it is).
            return self.infer_star(input);
        }
        let x = to_nchw(&self.model, input)?;
        let first = scatter(&self.model, &self.plan.groups[0], &x)?;
        // Per board: its band of the previous group's output and that band's tensor.
        let mut held = self.run_bands(0, first)?;
        for gi in 1..self.plan.groups.len() {
            let (prev, g) = (&self.plan.groups[gi - 1], &self.plan.groups[gi]);
            let r = crate::mesh::redistribution(&self.model, &prev.rows, g.group(), &g.rows)?;
            let inputs = exchange(&r, &held)?;
            held = self.run_bands(gi, inputs)?;
        }
        if let (true, Some(last)) = (self.plan.gathers_tail(&self.model), self.plan.groups.last()) {
            // The first split layer on the boards, each from the last bands it gathered.
            let r = crate::mesh::tail_gather(&self.model, &last.rows, last.to, &self.plan.tail[0].cols)?;
            let inputs = exchange(&r, &held)?;
            let stage = self.tail.iter().position(|s| matches!(s, LocalStage::Split(_))).context("a gathered tail without a split layer")?;
            let LocalStage::Split(slices) = &self.tail[stage] else { unreachable!() };
            let mut parts = Vec::new();
            for (x, r) in inputs.into_iter().zip(slices) {
                if let (Some(x), Some(r)) = (x, r) {
                    parts.push(run(r, crate::mesh::flatten(x)?)?);
                }
            }
            return self.tail_from(stage + 1, concat_features(parts)?);
        }
        let x = gather(held)?;
        self.tail(x)
    }

    /// Per board: its input rows of group `gi`, cut from the whole value `x` (None: no band).
    fn scatter(&mut self, gi: usize, x: &Tensor) -> Result<Vec<Option<Tensor>>> {
        scatter(&self.model, &self.plan.groups[gi], x)
    }

    /// Per board: its band of group `gi`'s output (rows and tensor), computed from its input.
    fn run_bands(&mut self, gi: usize, inputs: Vec<Option<Tensor>>) -> Result<Vec<Option<(Rows, Tensor)>>> {
        let g = self.plan.groups[gi].clone();
        let outs = g.bands();
        inputs
            .into_iter()
            .enumerate()
            .map(|(b, input)| {
                let Some(input) = input else { return Ok(None) };
                let out = outs[b];
                // In the parts the board computes them in (its edges first, where the group
                // says so), like the boards.
                let y = crate::mesh::group_parts(&self.model, &self.plan.groups, gi, b)?
                    .into_iter()
                    .map(|part| {
                        let x = crate::mesh::part_input(&self.model, g.group(), out, &input, part)?;
                        Ok((part, self.boards[b].run_band(g.group(), part, x)?))
                    })
                    .collect::<Result<Vec<_>>>()
                    .and_then(|ys| crate::mesh::assemble(out, ys))
                    .with_context(|| format!("group {gi} on board {}", self.plan.boards[b]))?;
                Ok(Some((out, y)))
            })
            .collect()
    }

    /// The tail on the gathered output of the splittable part (nothing to do without one):
    /// its sections on the coordinator, each split layer as every board's slice, concatenated.
    fn tail(&self, x: Tensor) -> Result<Tensor> {
        self.tail_from(0, x)
    }

    /// The tail from its stage `first` on.
    fn tail_from(&self, first: usize, mut x: Tensor) -> Result<Tensor> {
        for stage in &self.tail[first..] {
            x = match stage {
                LocalStage::Local(t) => run(t, x)?,
                LocalStage::Split(slices) => {
                    let parts: Vec<Tensor> = slices.iter().flatten().map(|r| run(r, x.clone())).collect::<Result<_>>()?;
                    concat_features(parts)?
                }
            };
        }
        Ok(x)
    }
}

/// A mesh exchange in one process: what every board keeps and sends of its band in `held`,
/// then what every board receives, assembled into its input (None: it needs nothing).
fn exchange(r: &crate::mesh::Redistribution, held: &[Option<(Rows, Tensor)>]) -> Result<Vec<Option<Tensor>>> {
    let mut inbox: Vec<Vec<(Rows, Tensor)>> = vec![Vec::new(); held.len()];
    for (b, h) in held.iter().enumerate() {
        if let Some(h) = h {
            for (to, rows, t) in crate::mesh::pieces(r, b, h)? {
                inbox[to].push((rows, t));
            }
        }
    }
    inbox.into_iter().enumerate().map(|(b, pieces)| if r.needs[b].is_empty() { Ok(None) } else { crate::mesh::assemble(r.needs[b], pieces).map(Some) }).collect()
}

/// Per board: its input rows of group `g`, cut from the whole value `x` (None: no band). The
/// coordinator's split, in the boards' runtime and in [`LocalFleet`]; band math only (the
/// coordinator may hold no weights of a group in which it has no rows).
pub fn scatter(model: &Model, g: &PlanGroup, x: &Tensor) -> Result<Vec<Option<Tensor>>> {
    g.bands()
        .into_iter()
        .map(|out| {
            if out.is_empty() {
                return Ok(None);
            }
            let need = crate::halo::group_band(model, g.group(), out).input;
            Ok(Some(x.slice(2, need.start, need.end)?))
        })
        .collect()
}

/// The bands of a group's output, in row order, as one tensor: the coordinator's gather, in
/// the boards' runtime and in [`LocalFleet`].
pub fn gather(bands: Vec<Option<(Rows, Tensor)>>) -> Result<Tensor> {
    let parts: Vec<Tensor> = bands.into_iter().flatten().map(|(_, t)| t).collect();
    Tensor::stack_tensors(2, &parts)
}

/// The slices of a split Dense layer, in board order, as the layer's output.
pub fn concat_features(parts: Vec<Tensor>) -> Result<Tensor> {
    Ok(Tensor::stack_tensors(1, &parts)?)
}

/// The whole model on one board, unsplit, through the same executor.
pub fn single_board(model: &Model) -> Result<Runnable> {
    runnable(section_graph(model, 0, model.output())?)
}
