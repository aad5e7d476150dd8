//! The band executor: turns a section of the IR (a fused group on a band of rows, or the tail)
//! into a tract graph with explicit asymmetric padding, optimises it once and runs it.

use crate::halo::{group_band, layer_input_rows, Group, GroupBand, LayerBand, Rows};
use crate::ir::{Model, Op, Weights, Window};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::sync::Arc;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_core::internal::*;
use tract_core::ops::array::{Slice, TypedConcat};
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec, SumPool};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::{DataFormat, Reduce, Reducer, Softmax, SoftmaxKind};

pub type Runnable = Arc<TypedRunnableModel>;

fn konst(model: &mut TypedModel, name: String, w: &Weights) -> TractResult<OutletId> {
    let t = Tensor::from_shape(&w.shape, &w.data)?;
    model.add_const(name, t)
}

fn scalar(model: &mut TypedModel, name: String, v: f32, rank: usize) -> TractResult<OutletId> {
    let t = Tensor::from_shape(&vec![1; rank], &[v])?;
    model.add_const(name, t)
}

fn pool_spec(w: &Window, in_c: usize, out_c: usize, pad_top: usize, pad_bottom: usize) -> PoolSpec {
    // H is handled by the band (rows sliced, pads given); W keeps the model's padding. An
    // effective right pad is always > −stride, so clamping it at 0 keeps the output width.
    PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: tvec!(w.kernel[0], w.kernel[1]),
        padding: PaddingSpec::Explicit(
            tvec!(pad_top, w.pad_before[1].max(0) as usize),
            tvec!(pad_bottom, w.pad_after[1].max(0) as usize),
        ),
        dilations: Some(tvec!(w.dilation[0], w.dilation[1])),
        strides: Some(tvec!(w.stride[0], w.stride[1])),
        input_channels: in_c,
        output_channels: out_c,
    }
}

/// `max(0, min(1, alpha·x + beta))`.
fn hard_sigmoid(target: &mut TypedModel, name: &str, x: OutletId, alpha: f32, beta: f32, rank: usize) -> TractResult<TVec<OutletId>> {
    let a = scalar(target, format!("{name}.alpha"), alpha, rank)?;
    let b = scalar(target, format!("{name}.beta"), beta, rank)?;
    let (zero, one) = (scalar(target, format!("{name}.zero"), 0.0, rank)?, scalar(target, format!("{name}.one"), 1.0, rank)?);
    let y = target.wire_node(format!("{name}.mul"), tract_core::ops::math::mul(), &[x, a])?;
    let y = target.wire_node(format!("{name}.add"), tract_core::ops::math::add(), &[y[0], b])?;
    let y = target.wire_node(format!("{name}.lo"), tract_core::ops::math::max(), &[y[0], zero])?;
    target.wire_node(format!("{name}.hi"), tract_core::ops::math::min(), &[y[0], one])
}

/// Wire one IR layer into `target`. `inputs` are already sliced to the rows the layer reads.
fn wire_layer(
    target: &mut TypedModel,
    model: &Model,
    layer: &LayerBand,
    inputs: &[OutletId],
) -> TractResult<OutletId> {
    let node = &model.nodes[layer.node];
    let name = format!("n{}", layer.node);
    let rank = target.outlet_fact(inputs[0])?.rank();
    let (pt, pb) = (layer.pad_top, layer.pad_bottom);
    let wired = match &node.op {
        Op::Input => bail!("the input is not a layer"),
        Op::Conv(c) => {
            let k = konst(target, format!("{name}.kernel"), &c.weight)?;
            let b = match &c.bias {
                Some(b) => konst(target, format!("{name}.bias"), b)?,
                None => target.add_const(format!("{name}.bias"), tensor0(0f32))?,
            };
            let op = Conv::new(
                pool_spec(&c.window, c.in_channels, c.out_channels, pt, pb),
                KernelFormat::OIHW,
                c.group,
                None,
            );
            target.wire_node(&name, op, &[inputs[0], k, b])?
        }
        Op::MaxPool(w) => {
            let c = node.shape[1];
            target.wire_node(&name, MaxPool::new(pool_spec(w, c, c, pt, pb), None), inputs)?
        }
        Op::AvgPool { window, count_include_pad } => {
            let c = node.shape[1];
            let op = SumPool::new(pool_spec(window, c, c, pt, pb), *count_include_pad, true);
            target.wire_node(&name, op, inputs)?
        }
        Op::Relu => {
            let z = scalar(target, format!("{name}.zero"), 0.0, rank)?;
            target.wire_node(&name, tract_core::ops::math::max(), &[inputs[0], z])?
        }
        Op::LeakyRelu { alpha } => {
            target.wire_node(&name, tract_core::ops::nn::leaky_relu(*alpha), inputs)?
        }
        Op::Clip { min, max } => {
            let lo = scalar(target, format!("{name}.min"), *min, rank)?;
            let hi = scalar(target, format!("{name}.max"), *max, rank)?;
            let x = target.wire_node(format!("{name}.lo"), tract_core::ops::math::max(), &[inputs[0], lo])?;
            target.wire_node(&name, tract_core::ops::math::min(), &[x[0], hi])?
        }
        Op::Affine { scale, shift } => {
            let c = scale.len();
            let shape = if rank == 4 { vec![1, c, 1, 1] } else { vec![1, c] };
            let s = konst(target, format!("{name}.scale"), &Weights { shape: shape.clone(), data: scale.data.clone() })?;
            let t = konst(target, format!("{name}.shift"), &Weights { shape, data: shift.data.clone() })?;
            let x = target.wire_node(format!("{name}.mul"), tract_core::ops::math::mul(), &[inputs[0], s])?;
            target.wire_node(&name, tract_core::ops::math::add(), &[x[0], t])?
        }
        Op::Add => target.wire_node(&name, tract_core::ops::math::add(), inputs)?,
        Op::Mul => target.wire_node(&name, tract_core::ops::math::mul(), inputs)?,
        Op::Sigmoid => target.wire_node(&name, tract_core::ops::nn::sigmoid(), inputs)?,
        Op::HardSigmoid { alpha, beta } => hard_sigmoid(target, &name, inputs[0], *alpha, *beta, rank)?,
        Op::HardSwish => {
            let h = hard_sigmoid(target, &format!("{name}.gate"), inputs[0], 1.0 / 6.0, 0.5, rank)?;
            target.wire_node(&name, tract_core::ops::math::mul(), &[inputs[0], h[0]])?
        }
        Op::PRelu { slope } => {
            let shape = if slope.len() == 1 { vec![1; rank] } else if rank == 4 { vec![1, slope.len(), 1, 1] } else { vec![1, slope.len()] };
            let a = konst(target, format!("{name}.slope"), &Weights { shape, data: slope.data.clone() })?;
            let z = scalar(target, format!("{name}.zero"), 0.0, rank)?;
            let pos = target.wire_node(format!("{name}.pos"), tract_core::ops::math::max(), &[inputs[0], z])?;
            let neg = target.wire_node(format!("{name}.neg"), tract_core::ops::math::min(), &[inputs[0], z])?;
            let neg = target.wire_node(format!("{name}.scaled"), tract_core::ops::math::mul(), &[neg[0], a])?;
            target.wire_node(&name, tract_core::ops::math::add(), &[pos[0], neg[0]])?
        }
        Op::Pad { window, value } => {
            let pads = vec![(0, 0), (0, 0), (pt, pb), (window.pad_before[1] as usize, window.pad_after[1] as usize)];
            let mode = tract_core::ops::array::PadMode::Constant(Arc::new(tensor0(*value)));
            target.wire_node(&name, tract_core::ops::array::Pad { pads, mode }, inputs)?
        }
        Op::Deconv(c) => {
            // Rows unpadded (the band's first input row i0 lands on output row i0·s − p),
            // then the band's rows cut out; columns as the model pads them.
            let k = konst(target, format!("{name}.kernel"), &c.weight)?;
            let b = match &c.bias {
                Some(b) => konst(target, format!("{name}.bias"), b)?,
                None => target.add_const(format!("{name}.bias"), tensor0(0f32))?,
            };
            let w = &c.window;
            let spec = PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(w.kernel[0], w.kernel[1]),
                padding: PaddingSpec::Explicit(tvec!(0, w.pad_before[1] as usize), tvec!(0, w.pad_after[1] as usize)),
                dilations: Some(tvec!(w.dilation[0], w.dilation[1])),
                strides: Some(tvec!(w.stride[0], w.stride[1])),
                input_channels: c.in_channels,
                output_channels: c.out_channels,
            };
            let x = target.wire_node(format!("{name}.full"), tract_core::ops::cnn::Deconv::new(spec, KernelFormat::OIHW, tvec!(0, 0), c.group), &[inputs[0], k, b])?;
            let first = (layer.inputs.first().map_or(0, |r| r.start) * w.stride[0]) as i64 - w.pad_before[0];
            let (a, e) = (layer.out.start as i64 - first, layer.out.end as i64 - first);
            let made = target.outlet_fact(x[0])?.shape[2].to_usize()? as i64;
            ensure!(a >= 0 && e <= made, "transposed convolution {}: rows {} not within the {made} its input rows give", layer.node, layer.out);
            if (a, e) == (0, made) {
                x
            } else {
                target.wire_node(&name, Slice::new(2, a as usize, e as usize), &x)?
            }
        }
        Op::Upsample { scale } => {
            // Every row and column repeated: [N, C, h, W] → [N, C, h·s, W·s], then the rows of
            // the band (its first input row's copies start at input.start · s).
            let s = *scale;
            let shape = target.outlet_fact(inputs[0])?.shape.to_tvec();
            let (h, w) = (shape[2].clone(), shape[3].clone());
            let x = target.wire_node(format!("{name}.h1"), AxisOp::Add(3), inputs)?;
            let x = target.wire_node(format!("{name}.hs"), TypedConcat::new(3), &vec![x[0]; s])?;
            let x = target.wire_node(format!("{name}.h"), AxisOp::Reshape(2, tvec!(h.clone(), s.to_dim()), tvec!(h * s as u64)), &x)?;
            let x = target.wire_node(format!("{name}.w1"), AxisOp::Add(4), &x)?;
            let x = target.wire_node(format!("{name}.ws"), TypedConcat::new(4), &vec![x[0]; s])?;
            let x = target.wire_node(format!("{name}.w"), AxisOp::Reshape(3, tvec!(w.clone(), s.to_dim()), tvec!(w * s as u64)), &x)?;
            let first = layer.inputs.first().map_or(0, |r| r.start) * s;
            let (a, b) = (layer.out.start - first, layer.out.end - first);
            let made = target.outlet_fact(x[0])?.shape[2].to_usize()?;
            if (a, b) == (0, made) {
                x
            } else {
                target.wire_node(&name, Slice::new(2, a, b), &x)?
            }
        }
        Op::Concat => target.wire_node(&name, TypedConcat::new(1), inputs)?,
        Op::Slice { start, end } => target.wire_node(&name, Slice::new(1, *start, *end), inputs)?,
        Op::SpaceToDepth { block } => {
            let b = *block;
            let shape = target.outlet_fact(inputs[0])?.shape.to_tvec();
            let (c, h, w) = (shape[1].clone(), shape[2].clone(), shape[3].clone());
            let hb = h.clone() / b as u64;
            let wb = w.clone() / b as u64;
            let mut x = target.wire_node(
                format!("{name}.split"),
                AxisOp::Reshape(2, tvec!(h, w), tvec!(hb.clone(), b.to_dim(), wb.clone(), b.to_dim())),
                inputs,
            )?;
            // [N, C, H', b1, W', b2] → [N, b1, b2, C, H', W']
            x = target.wire_node(format!("{name}.mv1"), AxisOp::Move(3, 1), &x)?;
            x = target.wire_node(format!("{name}.mv2"), AxisOp::Move(5, 2), &x)?;
            target.wire_node(
                &name,
                AxisOp::Reshape(1, tvec!(b.to_dim(), b.to_dim(), c.clone()), tvec!(c * (b * b) as u64)),
                &x,
            )?
        }
        Op::GlobalAvgPool | Op::GlobalMaxPool => {
            let reducer = if matches!(node.op, Op::GlobalAvgPool) { Reducer::Sum } else { Reducer::Max };
            let x = target.wire_node(format!("{name}.reduce"), Reduce::new(tvec!(2, 3), reducer), inputs)?;
            if matches!(node.op, Op::GlobalAvgPool) {
                let in_shape = &model.nodes[node.inputs[0]].shape;
                let k = scalar(target, format!("{name}.inv"), 1.0 / (in_shape[2] * in_shape[3]) as f32, 4)?;
                target.wire_node(&name, tract_core::ops::math::mul(), &[x[0], k])?
            } else {
                x
            }
        }
        Op::Transpose { perm } => {
            let mut order: Vec<usize> = (0..perm.len()).collect();
            let mut x: TVec<OutletId> = tvec!(inputs[0]);
            for (i, &want) in perm.iter().enumerate() {
                let at = order.iter().position(|&a| a == want).unwrap();
                if at != i {
                    x = target.wire_node(format!("{name}.mv{i}"), AxisOp::Move(at, i), &x)?;
                    let a = order.remove(at);
                    order.insert(i, a);
                }
            }
            if x[0] == inputs[0] {
                return Ok(inputs[0]);
            }
            x
        }
        Op::Flatten => {
            let shape = target.outlet_fact(inputs[0])?.shape.to_tvec();
            let k: TDim = shape[1..].iter().product();
            target.wire_node(&name, AxisOp::Reshape(0, shape, tvec!(1.to_dim(), k)), inputs)?
        }
        Op::Dense { weight, bias } => {
            let w = konst(target, format!("{name}.weight"), weight)?;
            let b = konst(target, format!("{name}.bias"), &Weights { shape: vec![1, bias.len()], data: bias.data.clone() })?;
            let axes: AxesMapping = "mk,kn->mn".parse()?;
            let x = target.wire_node(format!("{name}.matmul"), EinSum::new(axes, f32::datum_type()), &[inputs[0], w])?;
            target.wire_node(&name, tract_core::ops::math::add(), &[x[0], b])?
        }
        Op::Softmax { axis } => {
            target.wire_node(&name, Softmax::new(tvec!(*axis), None, SoftmaxKind::Softmax), inputs)?
        }
    };
    Ok(wired[0])
}

/// Build the tract graph of a list of layers reading value `from` (whose rows `input_rows` are
/// fed in), outputting value `to`. Spatial values carry the rows they hold; an edge whose
/// consumer reads fewer rows than its producer computed gets a slice.
fn build_section(
    model: &Model,
    from: usize,
    input_rows: Option<Rows>,
    layers: &[LayerBand],
    to: usize,
) -> TractResult<TypedModel> {
    let mut target = TypedModel::default();
    let mut shape = model.nodes[from].shape.clone();
    if let Some(r) = input_rows {
        shape[2] = r.len();
    }
    let src = target.add_source("input", f32::fact(&shape))?;
    let mut values: HashMap<usize, (OutletId, Option<Rows>)> = HashMap::new();
    values.insert(from, (src, input_rows));
    for layer in layers {
        if layer.out.is_empty() && model.is_spatial(layer.node) {
            continue;
        }
        let node = &model.nodes[layer.node];
        let mut ins = Vec::with_capacity(node.inputs.len());
        for (i, v) in node.inputs.iter().enumerate() {
            let (outlet, held) = *values
                .get(v)
                .with_context(|| format!("value {v} is not computed inside the section"))?;
            let outlet = match (held, layer.inputs.get(i)) {
                (Some(held), Some(want)) if held != *want => {
                    ensure!(held.contains(want), "rows {want} of value {v} needed, {held} computed");
                    let s = Slice::new(2, (want.start - held.start).to_dim(), (want.end - held.start).to_dim());
                    target.wire_node(format!("n{}.in{i}.rows", layer.node), s, &[outlet])?[0]
                }
                _ => outlet,
            };
            ins.push(outlet);
        }
        let out = wire_layer(&mut target, model, layer, &ins)
            .with_context(|| format!("building layer {} ({}, {})", layer.node, node.name, node.op.kind()))?;
        let rows = model.is_spatial(layer.node).then_some(layer.out);
        values.insert(layer.node, (out, rows));
    }
    let (out, _) = *values.get(&to).with_context(|| format!("value {to} is not computed inside the section (no rows of it asked)"))?;
    target.select_output_outlets(&[out])?;
    Ok(target)
}

/// tract graph of one fused group on one band.
pub fn band_graph(model: &Model, band: &GroupBand) -> Result<TypedModel> {
    build_section(model, band.group.from, Some(band.input), &band.layers, band.group.to)
        .with_context(|| format!("building group {}..{} on rows {}", band.group.from, band.group.to, band.output))
}

/// tract graph of the model from value `from` (exclusive) to value `to` (inclusive), unsplit:
/// the tail (`to` = the output), or the whole model (`from` = 0).
pub fn section_graph(model: &Model, from: usize, to: usize) -> Result<TypedModel> {
    let layers: Vec<LayerBand> = (from + 1..=to)
        .map(|id| {
            let node = &model.nodes[id];
            let spatial = model.is_spatial(id);
            let (inputs, pt, pb) = if spatial {
                let out = Rows::new(0, node.shape[2]);
                let mut pads = (0, 0);
                let ins = node
                    .inputs
                    .iter()
                    .map(|&v| {
                        let (r, t, b) = layer_input_rows(&node.op, out, model.rows(v));
                        pads = (t, b);
                        r
                    })
                    .collect();
                (ins, pads.0, pads.1)
            } else {
                (vec![], 0, 0)
            };
            let out = if spatial { Rows::new(0, node.shape[2]) } else { Rows::new(0, 0) };
            LayerBand { node: id, out, inputs, pad_top: pt, pad_bottom: pb }
        })
        .collect();
    let input_rows = model.is_spatial(from).then(|| Rows::new(0, model.rows(from)));
    build_section(model, from, input_rows, &layers, to).with_context(|| format!("building values {from}..{to}"))
}

/// Optimise and make runnable.
pub fn runnable(graph: TypedModel) -> Result<Runnable> {
    graph.into_optimized()?.into_runnable()
}

/// Run a runnable on one tensor.
pub fn run(plan: &Runnable, input: Tensor) -> Result<Tensor> {
    let mut out = plan.run(tvec!(input.into()))?;
    Ok(out.remove(0).into_tensor())
}

/// The threads tract's matrix products run on: its own pool of `threads`, or the caller's.
#[derive(Clone)]
pub struct Threads(Executor);

/// A pool of `threads` for tract (none for 1).
pub fn threads(threads: usize) -> Threads {
    Threads(if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread })
}

impl Threads {
    /// Run `f` with tract's matrix products on these threads.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        multithread_tract_scope(self.0.clone(), f)
    }
}

/// One board's executor: the runnable of every (group, band) it has been asked for, built once.
pub struct BandExecutor {
    model: Arc<Model>,
    bands: HashMap<(Group, Rows), (GroupBand, Runnable)>,
    threads: Threads,
}

impl BandExecutor {
    /// A single-threaded executor.
    pub fn new(model: Arc<Model>) -> BandExecutor {
        BandExecutor::with_threads(model, 1)
    }

    /// An executor running tract's matrix products on `threads` threads of its own.
    pub fn with_threads(model: Arc<Model>, threads: usize) -> BandExecutor {
        BandExecutor { model, bands: HashMap::new(), threads: self::threads(threads) }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The band geometry and runnable of `group` on output rows `out`, built on first use.
    pub fn prepare(&mut self, group: Group, out: Rows) -> Result<&(GroupBand, Runnable)> {
        if !self.bands.contains_key(&(group, out)) {
            let band = group_band(&self.model, group, out);
            let plan = runnable(band_graph(&self.model, &band)?)?;
            self.bands.insert((group, out), (band, plan));
        }
        Ok(&self.bands[&(group, out)])
    }

    /// Compute output rows `out` of `group` from `input`, which must hold exactly the rows
    /// [`GroupBand::input`] says.
    pub fn run_band(&mut self, group: Group, out: Rows, input: Tensor) -> Result<Tensor> {
        let (band, plan) = self.prepare(group, out)?;
        let got = input.shape()[2];
        if got != band.input.len() {
            bail!("group {}..{} rows {}: received {} input rows, needs {} ({})", group.from, group.to, out, got, band.input.len(), band.input);
        }
        let plan = plan.clone();
        self.threads.scope(|| run(&plan, input))
    }

    /// Drop the runnables of the bands `keep` says no to (their memory is reused by the next
    /// ones built).
    pub fn retain(&mut self, keep: impl Fn(Group, Rows) -> bool) {
        self.bands.retain(|(g, r), _| keep(*g, *r));
    }

    /// Number of runnables built so far.
    pub fn cached_bands(&self) -> usize {
        self.bands.len()
    }
}

/// Output features `cols` of Dense node `node` alone, as a runnable graph: input the Dense's
/// input vector, output its slice. The split tail's unit of work: a board holding only its
/// slice of the weights (`weight` of shape [in, cols]) computes it as stored; from the whole
/// weights ([in, out]) the slice is cut here.
pub fn dense_slice(model: &Model, node: usize, cols: Rows) -> Result<Runnable> {
    let out = model.nodes.get(node).map_or(0, |n| n.shape.get(1).copied().unwrap_or(0));
    dense_slice_of(model, node, cols, Rows::new(0, out))
}

/// [`dense_slice`] from a model whose layer `node` may hold only the features `held` of its
/// weights (a board's model file: [`crate::plan::Plan::held_features`]).
pub fn dense_slice_of(model: &Model, node: usize, cols: Rows, held: Rows) -> Result<Runnable> {
    use crate::ir::{InputLayout, Node};
    let n = &model.nodes[node];
    let Op::Dense { weight, bias } = &n.op else { bail!("node {node} is not a Dense layer") };
    let (k, out) = (weight.shape[0], n.shape[1]);
    ensure!(cols.end <= out, "node {node}: features {cols} of {out}");
    let at = if weight.shape[1] == out && weight.len() == k * out {
        0
    } else if weight.shape[1] == cols.len() && weight.len() == k * cols.len() {
        // Cut to exactly this slice already.
        cols.start
    } else {
        ensure!(weight.shape[1] == held.len() && weight.len() == k * held.len(), "node {node}: its weights are neither whole nor the features {held}");
        ensure!(held.start <= cols.start && cols.end <= held.end, "node {node}: features {cols} are not among the {held} held");
        held.start
    };
    let (weight, bias) = if weight.shape[1] == cols.len() {
        (weight.clone(), bias.clone())
    } else {
        crate::ir::dense_columns(weight, bias, cols.start - at..cols.end - at)
    };
    let input = &model.nodes[n.inputs[0]];
    let mini = Model {
        name: format!("{}-dense-{node}-{}-{}", model.name, cols.start, cols.end),
        input_layout: InputLayout::Nchw,
        nodes: vec![
            Node { name: "input".into(), op: Op::Input, inputs: vec![], shape: input.shape.clone() },
            Node { name: n.name.clone(), op: Op::Dense { weight, bias }, inputs: vec![0], shape: vec![1, cols.len()] },
        ],
    };
    runnable(section_graph(&mini, 0, 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{InputLayout, Node};

    /// input [1, 2, 2, 2] → Flatten [1, 8] → Dense [1, 5], weights i·0.1 + j.
    fn model() -> Model {
        let (k, n) = (8, 5);
        let w: Vec<f32> = (0..k * n).map(|i| (i / n) as f32 * 0.1 + (i % n) as f32).collect();
        let node = |name: &str, op: Op, inputs: Vec<usize>, shape: Vec<usize>| Node { name: name.into(), op, inputs, shape };
        Model {
            name: "dense".into(),
            input_layout: InputLayout::Nchw,
            nodes: vec![
                node("input", Op::Input, vec![], vec![1, 2, 2, 2]),
                node("flatten", Op::Flatten, vec![0], vec![1, 8]),
                node("dense", Op::Dense { weight: Weights::new(vec![k, n], w), bias: Weights::new(vec![n], (0..n).map(|j| j as f32).collect()) }, vec![1], vec![1, n]),
            ],
        }
    }

    #[test]
    fn dense_slices_concatenate_to_the_layer() {
        let m = model();
        let x = Tensor::from_shape(&[1, 8], &(0..8).map(|i| i as f32 - 3.0).collect::<Vec<_>>()).unwrap();
        let whole = run(&runnable(section_graph(&m, 1, 2).unwrap()).unwrap(), x.clone()).unwrap();
        let a = run(&dense_slice(&m, 2, Rows::new(0, 2)).unwrap(), x.clone()).unwrap();
        let b = run(&dense_slice(&m, 2, Rows::new(2, 5)).unwrap(), x).unwrap();
        let joined = Tensor::stack_tensors(1, &[a, b]).unwrap();
        assert_eq!(joined, whole);
    }
}
