//! legionc's layer IR: what a board needs to know about the model it runs.
//!
//! The compiler's front end turns an ONNX graph into a [`Model`]; the executor turns any
//! contiguous section of it (a fused group, on a band of rows, or the tail) into a tract graph.
//! Tensors are NCHW with a batch of one while the feature maps are spatial, `[1, K]` after the
//! flatten that starts a classifier.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Model weights, shared between the IR and every tract graph built from it.
///
/// In a model file (see [`crate::modelfile`]) only the shape is in the JSON header; the data
/// follows in one blob. A board's file may leave out the data of layers it never runs
/// (`data` is then empty).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Shape of the constant, row-major.
    pub shape: Vec<usize>,
    #[serde(skip)]
    pub data: Arc<Vec<f32>>,
}

/// Output features `cols` of a Dense layer's weights ([in, out]) and bias: its slice, [in,
/// cols] and [cols].
pub fn dense_columns(weight: &Weights, bias: &Weights, cols: std::ops::Range<usize>) -> (Weights, Weights) {
    let (k, out) = (weight.shape[0], weight.shape[1]);
    let w: Vec<f32> = (0..k).flat_map(|r| weight.data[r * out + cols.start..r * out + cols.end].iter().copied()).collect();
    (Weights::new(vec![k, cols.len()], w), Weights::new(vec![cols.len()], bias.data[cols].to_vec()))
}

impl Weights {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Weights {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "weights shape and data disagree");
        Weights { shape, data: Arc::new(data) }
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Number of values the shape calls for (the data may have been left out).
    pub fn volume(&self) -> usize {
        self.shape.iter().product()
    }
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weights{:?}", self.shape)
    }
}

/// A sliding window over H and W (convolution or pooling).
///
/// Pads are *effective* pads: the output size is always
/// `(in + pad_before + pad_after − dilation·(kernel − 1) − 1) / stride + 1` with floor rounding.
/// Ceil-mode pools and `auto_pad` are resolved into these numbers by the front end; a negative
/// `pad_after` means the last input rows are never read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// `[top, left]`
    pub pad_before: [i64; 2],
    /// `[bottom, right]`
    pub pad_after: [i64; 2],
}

impl Window {
    /// Rows (or columns, `axis` 1) of input spanned by one output element.
    pub fn span(&self, axis: usize) -> usize {
        self.dilation[axis] * (self.kernel[axis] - 1) + 1
    }

    /// Output length along `axis` for an input of `len`.
    pub fn output_len(&self, axis: usize, len: usize) -> usize {
        let padded = len as i64 + self.pad_before[axis] + self.pad_after[axis];
        ((padded - self.span(axis) as i64) / self.stride[axis] as i64 + 1).max(0) as usize
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    pub window: Window,
    pub in_channels: usize,
    pub out_channels: usize,
    pub group: usize,
    /// OIHW, `[out, in / group, kh, kw]`.
    pub weight: Weights,
    /// `[out]`, none when the model has no bias.
    pub bias: Option<Weights>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The model input, after the layout change of NHWC exports (always node 0).
    Input,
    Conv(Conv),
    MaxPool(Window),
    AvgPool { window: Window, count_include_pad: bool },
    Relu,
    LeakyRelu { alpha: f32 },
    Clip { min: f32, max: f32 },
    /// Per-channel `x · scale + shift` (batch normalisation folded, or a channel mul/add).
    Affine { scale: Weights, shift: Weights },
    /// Elementwise sum of two tensors of the same shape (residual connections).
    Add,
    /// Concatenation along channels.
    Concat,
    /// Channels `start..end` of the input. legionc's front end inserts these (with a Concat)
    /// to carry a side value through a segment with no cut point, so that one tensor crosses
    /// there (see the compiler's `model::carry`).
    Slice { start: usize, end: usize },
    /// ONNX SpaceToDepth (YOLOv2's reorg): `[C, H, W]` → `[C·b², H/b, W/b]`.
    SpaceToDepth { block: usize },
    /// Logistic sigmoid.
    Sigmoid,
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid { alpha: f32, beta: f32 },
    /// `x · HardSigmoid(x)` with alpha 1/6 and beta 1/2.
    HardSwish,
    /// `x` where `x ≥ 0`, `slope · x` below: one slope per channel, or one for all.
    PRelu { slope: Weights },
    /// Elementwise product of two tensors of the same shape (SiLU: `x · sigmoid(x)`).
    Mul,
    /// Constant padding of H and W: a window of one element whose pads are the padding.
    Pad { window: Window, value: f32 },
    /// Nearest-neighbour upsampling of H and W by an integer factor: output row r is input
    /// row r / scale.
    Upsample { scale: usize },
    /// Transposed convolution (ONNX ConvTranspose), weights in OIHW like [`Op::Conv`]; the
    /// window's pads crop the output. Input row i adds to output rows
    /// `i·stride − pad_before + k·dilation` for every kernel row k.
    Deconv(Conv),
    // ---- unsplittable ops: they only appear in the tail, run on the coordinator ----
    GlobalAvgPool,
    GlobalMaxPool,
    /// Permutation of the axes (Keras exports flatten in NHWC order).
    Transpose { perm: Vec<usize> },
    /// Reshape to `[1, K]`.
    Flatten,
    /// `y = x · weight + bias`, weight `[K, N]`, bias `[N]`.
    Dense { weight: Weights, bias: Weights },
    Softmax { axis: usize },
}

impl Op {
    /// Short name as printed by `legionc inspect`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::Conv(_) => "Conv",
            Op::MaxPool(_) => "MaxPool",
            Op::AvgPool { .. } => "AvgPool",
            Op::Relu => "Relu",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Clip { .. } => "Clip",
            Op::Affine { .. } => "Affine",
            Op::Add => "Add",
            Op::Concat => "Concat",
            Op::Slice { .. } => "Slice",
            Op::SpaceToDepth { .. } => "SpaceToDepth",
            Op::Sigmoid => "Sigmoid",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::HardSwish => "HardSwish",
            Op::PRelu { .. } => "PRelu",
            Op::Mul => "Mul",
            Op::Pad { .. } => "Pad",
            Op::Upsample { .. } => "Upsample",
            Op::Deconv(_) => "ConvTranspose",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Transpose { .. } => "Transpose",
            Op::Flatten => "Flatten",
            Op::Dense { .. } => "Dense",
            Op::Softmax { .. } => "Softmax",
        }
    }

    /// Can a band of output rows be computed from a band of input rows?
    pub fn is_row_splittable(&self) -> bool {
        matches!(
            self,
            Op::Input
                | Op::Conv(_)
                | Op::MaxPool(_)
                | Op::AvgPool { .. }
                | Op::Relu
                | Op::LeakyRelu { .. }
                | Op::Clip { .. }
                | Op::Affine { .. }
                | Op::Add
                | Op::Concat
                | Op::Slice { .. }
                | Op::SpaceToDepth { .. }
                | Op::Sigmoid
                | Op::HardSigmoid { .. }
                | Op::HardSwish
                | Op::PRelu { .. }
                | Op::Mul
                | Op::Pad { .. }
                | Op::Upsample { .. }
                | Op::Deconv(_)
        )
    }

    /// The weights of the op, in a fixed order.
    pub fn weights(&self) -> Vec<&Weights> {
        match self {
            Op::Conv(c) | Op::Deconv(c) => std::iter::once(&c.weight).chain(c.bias.as_ref()).collect(),
            Op::Affine { scale, shift } => vec![scale, shift],
            Op::Dense { weight, bias } => vec![weight, bias],
            Op::PRelu { slope } => vec![slope],
            _ => vec![],
        }
    }

    /// The weights of the op, in the order of [`Op::weights`].
    pub fn weights_mut(&mut self) -> Vec<&mut Weights> {
        match self {
            Op::Conv(c) | Op::Deconv(c) => {
                let mut w = vec![&mut c.weight];
                if let Some(b) = c.bias.as_mut() {
                    w.push(b);
                }
                w
            }
            Op::Affine { scale, shift } => vec![scale, shift],
            Op::Dense { weight, bias } => vec![weight, bias],
            Op::PRelu { slope } => vec![slope],
            _ => vec![],
        }
    }

    /// The sliding window, for ops that have one.
    pub fn window(&self) -> Option<&Window> {
        match self {
            Op::Conv(c) => Some(&c.window),
            Op::MaxPool(w) | Op::AvgPool { window: w, .. } | Op::Pad { window: w, .. } => Some(w),
            _ => None,
        }
    }
}

/// One layer. Its output is value `id` (its index in [`Model::nodes`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Name of the ONNX node it comes from.
    pub name: String,
    pub op: Op,
    /// Values consumed, all of them produced earlier in `nodes`.
    pub inputs: Vec<usize>,
    /// Shape of the output.
    pub shape: Vec<usize>,
}

/// Layout of the tensor a user feeds in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputLayout {
    Nchw,
    /// The model starts with a transpose NHWC → NCHW (Keras / TensorFlow exports); the
    /// coordinator applies it before splitting.
    Nhwc,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    pub input_layout: InputLayout,
    /// Topologically ordered; node 0 is [`Op::Input`].
    pub nodes: Vec<Node>,
}

impl Model {
    pub fn output(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Shape of the input as fed by a user (NHWC for an NHWC model).
    pub fn user_input_shape(&self) -> Vec<usize> {
        let s = &self.nodes[0].shape;
        match self.input_layout {
            InputLayout::Nchw => s.clone(),
            InputLayout::Nhwc => vec![s[0], s[2], s[3], s[1]],
        }
    }

    /// For every value, the index of its last consumer (itself when unused, the output counts
    /// as used by everything after it).
    fn last_use(&self) -> Vec<usize> {
        let mut last: Vec<usize> = (0..self.nodes.len()).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last[v] = last[v].max(i);
            }
        }
        last
    }

    /// Cut points: values `v` such that no value produced before `v` is consumed after it.
    /// Only one tensor crosses a cut, so a fused group may start and end only there. Value 0
    /// (the input) and the output are always cut points.
    pub fn cut_points(&self) -> Vec<usize> {
        let last = self.last_use();
        let mut cuts = Vec::new();
        let mut reach = 0; // max last use over values < v
        for (v, &l) in last.iter().enumerate() {
            if reach <= v {
                cuts.push(v);
            }
            reach = reach.max(l);
        }
        cuts
    }

    /// The last value of the row-splittable prefix: a cut point such that every node up to it
    /// is splittable. Everything after it is the tail, run on the coordinator.
    pub fn split_end(&self) -> usize {
        let first_unsplittable = self
            .nodes
            .iter()
            .position(|n| !n.op.is_row_splittable() || n.shape.len() != 4)
            .map(|p| p.max(1))
            .unwrap_or(self.nodes.len());
        self.cut_points().into_iter().filter(|&c| c < first_unsplittable).max().unwrap_or(0)
    }

    /// Cut points inside the splittable prefix: where fused groups may start and end.
    pub fn split_cut_points(&self) -> Vec<usize> {
        let end = self.split_end();
        self.cut_points().into_iter().filter(|&c| c <= end).collect()
    }

    /// Is value `id` an NCHW feature map whose rows a band can hold?
    pub fn is_spatial(&self, id: usize) -> bool {
        let n = &self.nodes[id];
        n.op.is_row_splittable() && n.shape.len() == 4
    }

    /// Rows (H) of a spatial value.
    pub fn rows(&self, value: usize) -> usize {
        self.nodes[value].shape[2]
    }

    /// Multiply-accumulates of a layer (2 FLOPs each), whole feature map.
    pub fn macs(&self, id: usize) -> u64 {
        let n = &self.nodes[id];
        let out: u64 = n.shape.iter().product::<usize>() as u64;
        match &n.op {
            Op::Conv(c) => {
                out * (c.in_channels / c.group) as u64 * (c.window.kernel[0] * c.window.kernel[1]) as u64
            }
            Op::MaxPool(w) | Op::AvgPool { window: w, .. } => out * (w.kernel[0] * w.kernel[1]) as u64,
            Op::Deconv(c) => {
                let input: u64 = self.nodes[n.inputs[0]].shape.iter().product::<usize>() as u64;
                input * (c.out_channels / c.group) as u64 * (c.window.kernel[0] * c.window.kernel[1]) as u64
            }
            Op::Dense { weight, .. } => weight.len() as u64,
            Op::GlobalAvgPool | Op::GlobalMaxPool => {
                self.nodes[n.inputs[0]].shape.iter().product::<usize>() as u64
            }
            Op::Input | Op::Transpose { .. } | Op::Flatten | Op::Concat | Op::Slice { .. } | Op::SpaceToDepth { .. } | Op::Pad { .. } | Op::Upsample { .. } => 0,
            _ => out,
        }
    }

    /// Total number of weights.
    pub fn parameter_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.op.clone().weights_mut().iter().map(|w| w.volume()).sum::<usize>())
            .sum()
    }
}
