//! ONNX → legionc's layer IR.
//!
//! The protobuf is read with tract-onnx's `pb` types; the ops are mapped one by one to the IR
//! with ONNX's own semantics (auto_pad, ceil_mode, BatchNormalization folding, Gemm's
//! transposes). Whether the mapping is right is checked against tract-onnx's run of the whole
//! file (see `reference`), in the tests and by `legionc check`.

use anyhow::{anyhow, bail, ensure, Context, Result};
use legion_runtime::ir::{Conv, InputLayout, Model, Node, Op, Weights, Window};
use prost::Message;
use std::collections::HashMap;
use tract_onnx::pb::{type_proto, AttributeProto, ModelProto, NodeProto};

/// ONNX ops the front end maps, as listed in errors.
pub const SUPPORTED_OPS: &str = "Conv, MaxPool, AveragePool, Relu, LeakyRelu, Clip, \
    BatchNormalization, Add, Sub, Mul, Div (by a constant, or of two same-shape tensors for Add \
    and Mul), Sigmoid, HardSigmoid, HardSwish, PRelu, Pad (constant, H and W), Resize and \
    Upsample (nearest, integer factor), ConvTranspose, ReduceMean (H and W), Concat (channels), \
    SpaceToDepth, \
    Transpose, Flatten, Reshape (flattening), Gemm, MatMul, GlobalAveragePool, GlobalMaxPool, \
    Softmax, Identity, Dropout; and, on shapes and constants \
    (evaluated when the model is read): Shape, Gather, Cast, Slice, Concat, Unsqueeze, Squeeze, \
    Reshape, ConstantOfShape, Range, Add, Sub, Mul, Div";

/// Ops evaluated on constants (and `Shape` on any tensor) when the model is read.
const FOLDED_OPS: &[&str] = &["Shape", "Gather", "Cast", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "ConstantOfShape", "Range", "Add", "Sub", "Mul", "Div", "Identity"];

use super::fold::{self, read_tensor, Const};

struct Attrs<'a>(&'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map(|a| a.f).unwrap_or(default)
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// The IR of an ONNX model and, for each value, the ONNX tensor it stands for.
pub struct Imported {
    pub model: Model,
    pub tensor_names: Vec<String>,
    /// The graph's outputs (more than one: packed, see [`pack`]).
    pub outputs: Vec<OutputPart>,
}

struct Importer {
    model: Model,
    tensor_names: Vec<String>,
    values: HashMap<String, usize>,
    consts: HashMap<String, Const>,
    opset: i64,
    /// How many nodes and graph outputs read each tensor.
    uses: HashMap<String, usize>,
}

/// Read an ONNX file's bytes. `input_shape` fixes an input whose shape the file leaves open.
pub fn import(bytes: &[u8], name: &str, input_shape: Option<&[usize]>) -> Result<Imported> {
    let proto = ModelProto::decode(bytes).context("not an ONNX model (protobuf decoding failed)")?;
    let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("the ONNX file has no graph"))?;
    let opset = proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).unwrap_or(13);
    let mut consts = HashMap::new();
    for t in &graph.initializer {
        consts.insert(t.name.clone(), read_tensor(t).with_context(|| format!("initializer '{}'", t.name))?);
    }
    let inputs: Vec<_> = graph.input.iter().filter(|i| !consts.contains_key(&i.name)).collect();
    ensure!(inputs.len() == 1, "the model has {} inputs ({}); legionc takes models with exactly one", inputs.len(),
        inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "));
    let input = inputs[0];
    let shape = match input_shape {
        Some(s) => s.to_vec(),
        None => input_shape_of(input)?,
    };
    ensure!(shape.len() == 4 && shape[0] == 1, "input '{}' has shape {shape:?}; legionc takes one image, [1, C, H, W] or [1, H, W, C]", input.name);
    let mut imp = Importer {
        model: Model { name: name.into(), input_layout: InputLayout::Nchw, nodes: vec![] },
        tensor_names: vec![],
        values: HashMap::new(),
        consts,
        opset,
        uses: HashMap::new(),
    };
    for name in graph.node.iter().flat_map(|n| n.input.iter()).chain(graph.output.iter().map(|o| &o.name)) {
        *imp.uses.entry(name.clone()).or_default() += 1;
    }
    imp.push(input.name.clone(), input.name.clone(), Op::Input, vec![], shape);
    for node in &graph.node {
        imp.node(node).with_context(|| {
            format!("node '{}' (op {})", if node.name.is_empty() { &node.output[0] } else { &node.name }, node.op_type)
        })?;
    }
    ensure!(!graph.output.is_empty(), "the model has no output");
    let mut ids = Vec::with_capacity(graph.output.len());
    for o in &graph.output {
        let &id = imp.values.get(&o.name).ok_or_else(|| anyhow!("output '{}' is not computed by any supported node", o.name))?;
        ensure!(!ids.contains(&id), "output '{}' is listed twice", o.name);
        ids.push(id);
    }
    let last = imp.model.nodes.len() - 1;
    ensure!(ids.contains(&last), "the last node computed ('{}') is not an output; legionc takes graphs that end at their outputs", imp.tensor_names[last]);
    let outputs: Vec<OutputPart> = graph.output.iter().zip(&ids).map(|(o, &id)| OutputPart { name: o.name.clone(), shape: imp.model.nodes[id].shape.clone() }).collect();
    if ids.len() > 1 {
        imp.pack_outputs(&ids);
    }
    let (model, tensor_names) = super::carry::carry_side_values(imp.model, imp.tensor_names);
    Ok(Imported { model, tensor_names, outputs })
}

/// One output of the ONNX graph. A model with several outputs is computed as one: each output
/// flattened, in the graph's order, concatenated ([`pack`]); [`unpack`] cuts it back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OutputPart {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Several outputs as the one tensor legionc computes: each flattened (row-major, as the graph
/// gives it), in order, concatenated into `[1, Σ sizes]`. One output is returned as it is.
pub fn pack(outputs: Vec<tract_onnx::prelude::Tensor>) -> Result<tract_onnx::prelude::Tensor> {
    use tract_onnx::prelude::*;
    ensure!(!outputs.is_empty(), "no output to pack");
    if outputs.len() == 1 {
        return Ok(outputs.into_iter().next().expect("one"));
    }
    let flat = outputs.into_iter().map(|t| { let n = t.len(); t.into_shape(&[1, n]) }).collect::<TractResult<Vec<_>>>()?;
    Ok(Tensor::stack_tensors(1, &flat)?)
}

/// The packed tensor of [`pack`] cut back into the graph's outputs, in order.
pub fn unpack(parts: &[OutputPart], packed: &tract_onnx::prelude::Tensor) -> Result<Vec<tract_onnx::prelude::Tensor>> {
    if parts.len() <= 1 {
        return Ok(vec![packed.clone()]);
    }
    let total: usize = parts.iter().map(|p| p.shape.iter().product::<usize>()).sum();
    ensure!(packed.len() == total, "the packed output has {} values, the outputs {total}", packed.len());
    let flat = packed.clone().into_shape(&[total])?;
    let mut at = 0;
    parts
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let t = flat.slice(0, at, at + n)?.into_shape(&p.shape)?;
            at += n;
            Ok(t)
        })
        .collect()
}

fn input_shape_of(input: &tract_onnx::pb::ValueInfoProto) -> Result<Vec<usize>> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let open = || anyhow!("input '{}' has a dynamic shape; give it with --input-shape (fleet.yaml: model.input_shape)", input.name);
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(open());
    };
    let dims = &t.shape.as_ref().ok_or_else(open)?.dim;
    dims.iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(Value::DimValue(v)) if *v > 0 => Ok(*v as usize),
            // A symbolic batch is one image.
            _ if i == 0 => Ok(1),
            _ => Err(open()),
        })
        .collect()
}

/// Effective pads (see [`Window`]) of one spatial axis. Returns (pad_before, pad_after, out).
#[allow(clippy::too_many_arguments)]
fn axis_geometry(len: usize, k: usize, s: usize, d: usize, before: i64, after: i64, auto_pad: &str, ceil: bool) -> Result<(i64, i64, usize)> {
    let span = (d * (k - 1) + 1) as i64;
    let len_i = len as i64;
    let (before, after) = match auto_pad {
        "" | "NOTSET" => (before, after),
        "VALID" => (0, 0),
        "SAME_UPPER" | "SAME_LOWER" => {
            let out = (len_i + s as i64 - 1) / s as i64;
            let total = ((out - 1) * s as i64 + span - len_i).max(0);
            if auto_pad == "SAME_UPPER" { (total / 2, total - total / 2) } else { (total - total / 2, total / 2) }
        }
        other => bail!("auto_pad '{other}' is not an ONNX value"),
    };
    let num = len_i + before + after - span;
    ensure!(num >= 0, "the window ({span} rows) is larger than the padded input ({} rows)", len_i + before + after);
    let s_i = s as i64;
    let mut out = if ceil { (num + s_i - 1) / s_i + 1 } else { num / s_i + 1 };
    if ceil && (out - 1) * s_i >= len_i + before {
        out -= 1;
    }
    let eff_after = (out - 1) * s_i + span - len_i - before;
    Ok((before, eff_after, out as usize))
}

impl Importer {
    fn push(&mut self, tensor: String, name: String, op: Op, inputs: Vec<usize>, shape: Vec<usize>) -> usize {
        let id = self.model.nodes.len();
        self.model.nodes.push(Node { name, op, inputs, shape });
        self.values.insert(tensor.clone(), id);
        self.tensor_names.push(tensor);
        id
    }

    /// Append the nodes that pack several outputs into one ([`pack`]): a Flatten of each, then
    /// their Concat. Flatten cannot be split, so the packing runs in the tail.
    fn pack_outputs(&mut self, ids: &[usize]) {
        let flats: Vec<usize> = ids
            .iter()
            .map(|&id| {
                let k: usize = self.model.nodes[id].shape.iter().product();
                let tensor = format!("{}.packed", self.tensor_names[id]);
                self.push(tensor.clone(), tensor, Op::Flatten, vec![id], vec![1, k])
            })
            .collect();
        let total = flats.iter().map(|&f| self.model.nodes[f].shape[1]).sum();
        self.push("legionc.outputs".into(), "legionc.outputs".into(), Op::Concat, flats, vec![1, total]);
    }

    fn value(&self, tensor: &str) -> Result<usize> {
        self.values.get(tensor).copied().ok_or_else(|| {
            if self.consts.contains_key(tensor) {
                anyhow!("input '{tensor}' is a constant where legionc expects a computed tensor")
            } else {
                anyhow!("input '{tensor}' is not computed by any earlier supported node")
            }
        })
    }

    fn konst(&self, tensor: &str) -> Result<&Const> {
        self.consts.get(tensor).ok_or_else(|| anyhow!("input '{tensor}' must be a constant (an initializer)"))
    }

    fn shape(&self, v: usize) -> &[usize] {
        &self.model.nodes[v].shape
    }

    fn window(&self, node: &NodeProto, x: usize, kernel: [usize; 2], ceil: bool) -> Result<(Window, [usize; 2])> {
        let a = Attrs(&node.attribute);
        let strides = a.ints("strides").unwrap_or(vec![1, 1]);
        let dil = a.ints("dilations").unwrap_or(vec![1, 1]);
        let pads = a.ints("pads").unwrap_or(vec![0, 0, 0, 0]);
        ensure!(strides.len() == 2 && dil.len() == 2 && pads.len() == 4, "only 2-D windows are supported");
        let auto_pad = a.string("auto_pad").unwrap_or_default();
        let s = self.shape(x);
        ensure!(s.len() == 4, "input has rank {}, 2-D windows need NCHW", s.len());
        let mut w = Window { kernel, stride: [0; 2], dilation: [0; 2], pad_before: [0; 2], pad_after: [0; 2] };
        let mut out = [0; 2];
        for ax in 0..2 {
            w.stride[ax] = strides[ax] as usize;
            w.dilation[ax] = dil[ax] as usize;
            ensure!(w.stride[ax] > 0 && w.dilation[ax] > 0, "strides and dilations must be positive");
            let (b, e, o) = axis_geometry(s[2 + ax], kernel[ax], w.stride[ax], w.dilation[ax], pads[ax], pads[ax + 2], &auto_pad, ceil)?;
            w.pad_before[ax] = b;
            w.pad_after[ax] = e;
            out[ax] = o;
        }
        Ok((w, out))
    }

    /// `x` with a constant per-channel (or per-feature) operand: an Affine layer.
    fn affine(&mut self, node: &NodeProto, x: usize, c: &Const, op: &str) -> Result<()> {
        let (cshape, data) = c.f32()?;
        let s = self.shape(x).to_vec();
        ensure!(s.len() >= 2, "a constant operand over shape {s:?}");
        let ch = s[1];
        let per_channel = match s.len() {
            4 => data.len() == 1 || (data.len() == ch && cshape.len() >= 3 && cshape[cshape.len() - 2..] == [1, 1]),
            2 => data.len() == 1 || data.len() == ch,
            _ => false,
        };
        ensure!(per_channel, "constant of shape {cshape:?} does not broadcast per channel over {s:?}");
        let v: Vec<f32> = if data.len() == 1 { vec![data[0]; ch] } else { data.to_vec() };
        let (scale, shift) = match op {
            "Add" => (vec![1.0; ch], v),
            "Sub" => (vec![1.0; ch], v.iter().map(|x| -x).collect()),
            "Mul" => (v, vec![0.0; ch]),
            "Div" => (v.iter().map(|x| 1.0 / x).collect(), vec![0.0; ch]),
            _ => unreachable!(),
        };
        // A bias added to a Dense layer that nothing else reads (MatMul + Add, as Keras exports
        // a Dense) becomes the layer's bias: a split tail layer then adds it on every board.
        let last = self.model.nodes.len() - 1;
        if x == last && scale.iter().all(|&k| k == 1.0) && self.uses.get(&self.tensor_names[x]) == Some(&1) {
            if let Op::Dense { bias, .. } = &mut self.model.nodes[x].op {
                for (b, d) in std::sync::Arc::make_mut(&mut bias.data).iter_mut().zip(&shift) {
                    *b += d;
                }
                self.values.insert(node.output[0].clone(), x);
                return Ok(());
            }
        }
        let op = Op::Affine { scale: Weights::new(vec![ch], scale), shift: Weights::new(vec![ch], shift) };
        self.push(node.output[0].clone(), node_name(node), op, vec![x], s);
        Ok(())
    }

    /// Evaluate `node` on constants, if it is a shape op whose inputs are all known.
    fn fold(&self, node: &NodeProto) -> Result<Option<Const>> {
        let op = node.op_type.as_str();
        if !FOLDED_OPS.contains(&op) {
            return Ok(None);
        }
        let a = Attrs(&node.attribute);
        if op == "Shape" {
            let x = input(node, 0)?;
            let shape: Vec<i64> = match (self.values.get(x), self.consts.get(x)) {
                (Some(&v), _) => self.shape(v).iter().map(|&d| d as i64).collect(),
                (None, Some(c)) => c.shape().iter().map(|&d| d as i64).collect(),
                _ => return Err(self.value(x).unwrap_err()),
            };
            let r = shape.len() as i64;
            let clip = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (start, end) = (clip(a.int("start", 0)), clip(a.int("end", r)));
            let dims = shape[start..end.max(start)].to_vec();
            return Ok(Some(Const::Int(vec![dims.len()], dims)));
        }
        let ins: Vec<Option<&Const>> = node.input.iter().map(|i| if i.is_empty() { None } else { self.consts.get(i) }).collect();
        if ins.is_empty() || node.input.iter().zip(&ins).any(|(name, c)| !name.is_empty() && c.is_none()) {
            return Ok(None);
        }
        let arg = |i: usize| -> Result<&Const> { ins.get(i).copied().flatten().ok_or_else(|| anyhow!("{op} needs input {i}")) };
        let opt_ints = |i: usize, attr: &str| -> Result<Option<Vec<i64>>> {
            match ins.get(i).copied().flatten() {
                Some(c) => Ok(Some(c.ints()?)),
                None => Ok(a.ints(attr)),
            }
        };
        let c = match op {
            "Identity" => arg(0)?.clone(),
            "Gather" => fold::gather(arg(0)?, arg(1)?, a.int("axis", 0))?,
            "Cast" => fold::cast(arg(0)?, a.int("to", 1))?,
            "Concat" => fold::concat(&ins.iter().map(|c| c.cloned().ok_or_else(|| anyhow!("Concat of an empty input"))).collect::<Result<Vec<_>>>()?, a.int("axis", 0))?,
            "Unsqueeze" => fold::unsqueeze(arg(0)?, &opt_ints(1, "axes")?.ok_or_else(|| anyhow!("Unsqueeze without axes"))?)?,
            "Squeeze" => fold::squeeze(arg(0)?, opt_ints(1, "axes")?.as_deref())?,
            "Reshape" => fold::reshape(arg(0)?, &arg(1)?.ints()?, a.int("allowzero", 0) != 0)?,
            "Slice" => {
                let (starts, ends) = if self.opset >= 10 { (arg(1)?.ints()?, arg(2)?.ints()?) } else { (a.ints("starts").unwrap_or_default(), a.ints("ends").unwrap_or_default()) };
                let axes = if self.opset >= 10 { opt_ints(3, "")? } else { a.ints("axes") };
                fold::slice(arg(0)?, &starts, &ends, axes.as_deref(), opt_ints(4, "")?.as_deref())?
            }
            "ConstantOfShape" => {
                let value = a.get("value").and_then(|v| v.t.as_ref()).map(read_tensor).transpose()?;
                fold::constant_of_shape(arg(0)?, value.as_ref())?
            }
            "Range" => fold::range(arg(0)?, arg(1)?, arg(2)?)?,
            _ => fold::binary(op, arg(0)?, arg(1)?)?,
        };
        Ok(Some(c))
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        let a = Attrs(&node.attribute);
        let out = node.output.first().cloned().ok_or_else(|| anyhow!("node has no output"))?;
        let name = node_name(node);
        if let Some(c) = self.fold(node)? {
            self.consts.insert(out, c);
            return Ok(());
        }
        let unary = |imp: &mut Importer, op: Op| -> Result<()> {
            let x = imp.value(input(node, 0)?)?;
            let s = imp.shape(x).to_vec();
            imp.push(out.clone(), name.clone(), op, vec![x], s);
            Ok(())
        };
        match node.op_type.as_str() {
            "Constant" => {
                let t = a.get("value").and_then(|v| v.t.as_ref()).ok_or_else(|| anyhow!("Constant without a tensor value"))?;
                let c = read_tensor(t)?;
                self.consts.insert(out, c);
            }
            "Identity" | "Dropout" => {
                let x = self.value(input(node, 0)?)?;
                self.values.insert(out, x);
            }
            "Conv" => {
                let x = self.value(input(node, 0)?)?;
                let (wshape, wdata) = self.konst(input(node, 1)?)?.f32()?;
                ensure!(wshape.len() == 4, "only 2-D convolutions are supported (kernel {wshape:?})");
                ensure!(wshape.iter().all(|&d| d > 0), "kernel of shape {wshape:?} has an empty dimension");
                let (wshape, wdata) = (wshape.to_vec(), wdata.to_vec());
                let group = a.int("group", 1);
                ensure!(group >= 1, "group {group} must be at least 1");
                let group = group as usize;
                let in_c = self.shape(x)[1];
                ensure!(wshape[1] * group == in_c, "kernel {wshape:?} with group {group} does not fit {in_c} input channels");
                let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => {
                        let d = self.konst(b)?.f32()?.1.to_vec();
                        ensure!(d.len() == wshape[0], "bias has {} values for {} output channels", d.len(), wshape[0]);
                        Some(Weights::new(vec![wshape[0]], d))
                    }
                    None => None,
                };
                let (window, o) = self.window(node, x, [wshape[2], wshape[3]], false)?;
                let conv = Conv {
                    window,
                    in_channels: in_c,
                    out_channels: wshape[0],
                    group,
                    weight: Weights::new(wshape.clone(), wdata),
                    bias,
                };
                self.push(out, name, Op::Conv(conv), vec![x], vec![1, wshape[0], o[0], o[1]]);
            }
            "ConvTranspose" => {
                let x = self.value(input(node, 0)?)?;
                let (wshape, wdata) = self.konst(input(node, 1)?)?.f32()?;
                ensure!(wshape.len() == 4 && wshape.iter().all(|&d| d > 0), "only 2-D transposed convolutions with a kernel are supported (kernel {wshape:?})");
                let (wshape, wdata) = (wshape.to_vec(), wdata.to_vec());
                let s = self.shape(x).to_vec();
                ensure!(s.len() == 4, "input of shape {s:?}");
                let group = a.int("group", 1);
                ensure!(group >= 1 && wshape[0] == s[1] && wshape[0] % group as usize == 0, "kernel {wshape:?} with group {group} does not fit {} input channels", s[1]);
                let group = group as usize;
                let (in_c, out_c) = (s[1], wshape[1] * group);
                ensure!(a.ints("output_shape").is_none_or(|v| v.is_empty()), "ConvTranspose with output_shape is not supported (give pads and output_padding)");
                ensure!(matches!(a.string("auto_pad").as_deref(), None | Some("NOTSET")), "ConvTranspose with auto_pad is not supported (give pads)");
                let strides = a.ints("strides").unwrap_or(vec![1, 1]);
                let dil = a.ints("dilations").unwrap_or(vec![1, 1]);
                let pads = a.ints("pads").unwrap_or(vec![0; 4]);
                ensure!(strides.len() == 2 && dil.len() == 2 && pads.len() == 4, "only 2-D transposed convolutions are supported");
                ensure!(strides.iter().chain(&dil).all(|&v| v >= 1) && pads.iter().all(|&p| p >= 0), "strides {strides:?}, dilations {dil:?} and pads {pads:?} must be positive (pads non-negative)");
                // output_padding lengthens the output at the end: the end's pad crops less (as
                // PyTorch's ConvTranspose2d(k=3, s=2, p=1, output_padding=1) writes it). Rows
                // past every kernel's reach (output_padding above the end pad) would hold the
                // bias alone: not supported.
                let extra = a.ints("output_padding").unwrap_or(vec![0, 0]);
                ensure!(extra.len() == 2 && extra.iter().all(|&e| e >= 0), "output_padding {extra:?} must be two non-negative values");
                for ax in 0..2 {
                    ensure!(extra[ax] <= pads[2 + ax], "ConvTranspose with output_padding {} above its end pad {} (output rows no input reaches) is not supported", extra[ax], pads[2 + ax]);
                }
                let window = Window {
                    kernel: [wshape[2], wshape[3]],
                    stride: [strides[0] as usize, strides[1] as usize],
                    dilation: [dil[0] as usize, dil[1] as usize],
                    pad_before: [pads[0], pads[1]],
                    pad_after: [pads[2] - extra[0], pads[3] - extra[1]],
                };
                // Every output row takes a kernel row from some input row (legionc's row
                // mapping needs no gaps).
                ensure!(window.span(0) >= window.stride[0], "ConvTranspose whose stride {} exceeds its kernel's reach {} leaves rows no input reaches: not supported", window.stride[0], window.span(0));
                let out_len = |ax: usize| -> Result<usize> {
                    let full = (s[2 + ax] as i64 - 1) * window.stride[ax] as i64 + window.span(ax) as i64 - window.pad_before[ax] - window.pad_after[ax];
                    ensure!(full > 0, "the pads crop the whole output");
                    Ok(full as usize)
                };
                let (h, w) = (out_len(0)?, out_len(1)?);
                // ONNX keeps [C_in, C_out / group, kh, kw]; the IR (and tract's Deconv) OIHW:
                // [C_out, C_in / group, kh, kw].
                let (cig, cog, kk) = (in_c / group, wshape[1], wshape[2] * wshape[3]);
                let mut oihw = vec![0f32; wdata.len()];
                for g in 0..group {
                    for i in 0..cig {
                        for o in 0..cog {
                            let src = ((g * cig + i) * cog + o) * kk;
                            let dst = ((g * cog + o) * cig + i) * kk;
                            oihw[dst..dst + kk].copy_from_slice(&wdata[src..src + kk]);
                        }
                    }
                }
                let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => {
                        let d = self.konst(b)?.f32()?.1.to_vec();
                        ensure!(d.len() == out_c, "bias has {} values for {out_c} output channels", d.len());
                        Some(Weights::new(vec![out_c], d))
                    }
                    None => None,
                };
                let conv = Conv { window, in_channels: in_c, out_channels: out_c, group, weight: Weights::new(vec![out_c, cig, wshape[2], wshape[3]], oihw), bias };
                self.push(out, name, Op::Deconv(conv), vec![x], vec![1, out_c, h, w]);
            }
            "MaxPool" | "AveragePool" => {
                ensure!(node.output.len() == 1, "MaxPool with indices output is not supported");
                let x = self.value(input(node, 0)?)?;
                let k = a.ints("kernel_shape").ok_or_else(|| anyhow!("kernel_shape missing"))?;
                ensure!(k.len() == 2, "only 2-D pools are supported");
                ensure!(k.iter().all(|&d| d > 0), "kernel_shape {k:?} must be positive");
                let ceil = a.int("ceil_mode", 0) != 0;
                let (window, o) = self.window(node, x, [k[0] as usize, k[1] as usize], ceil)?;
                let c = self.shape(x)[1];
                let op = if node.op_type == "MaxPool" {
                    Op::MaxPool(window)
                } else {
                    let count_include_pad = a.int("count_include_pad", 0) != 0;
                    let declared = a.ints("pads").unwrap_or(vec![0; 4]);
                    ensure!(
                        !(count_include_pad && ceil && (window.pad_after[0] > declared[2] || window.pad_after[1] > declared[3])),
                        "AveragePool with ceil_mode and count_include_pad whose last window overhangs is not supported"
                    );
                    Op::AvgPool { window, count_include_pad }
                };
                self.push(out, name, op, vec![x], vec![1, c, o[0], o[1]]);
            }
            "Relu" => unary(self, Op::Relu)?,
            "Sigmoid" => unary(self, Op::Sigmoid)?,
            "HardSigmoid" => unary(self, Op::HardSigmoid { alpha: a.float("alpha", 0.2), beta: a.float("beta", 0.5) })?,
            "HardSwish" => unary(self, Op::HardSwish)?,
            "PRelu" => {
                let x = self.value(input(node, 0)?)?;
                let (sshape, d) = self.konst(input(node, 1)?)?.f32()?;
                let s = self.shape(x).to_vec();
                let per_channel = s.len() >= 2 && d.len() == s[1] && sshape.iter().rev().take_while(|&&n| n == 1).count() >= sshape.len().saturating_sub(1);
                ensure!(d.len() == 1 || per_channel, "slope of shape {sshape:?} is neither one value nor one per channel of {s:?}");
                let slope = Weights::new(vec![d.len()], d.to_vec());
                self.push(out, name, Op::PRelu { slope }, vec![x], s);
            }
            "Pad" => {
                let x = self.value(input(node, 0)?)?;
                let s = self.shape(x).to_vec();
                ensure!(s.len() == 4, "Pad of shape {s:?}");
                let mode = a.string("mode").unwrap_or_else(|| "constant".into());
                ensure!(mode == "constant", "Pad mode '{mode}' is not supported (only constant)");
                let (pads, value) = if self.opset >= 11 {
                    ensure!(node.input.get(3).is_none_or(|i| i.is_empty()), "Pad with axes is not supported");
                    let value = match node.input.get(2).filter(|i| !i.is_empty()) {
                        Some(v) => {
                            let (_, d) = self.konst(v)?.f32()?;
                            ensure!(d.len() == 1, "Pad value has {} values", d.len());
                            d[0]
                        }
                        None => 0.0,
                    };
                    (self.konst(input(node, 1)?)?.ints()?, value)
                } else {
                    (a.ints("pads").ok_or_else(|| anyhow!("Pad without pads"))?, a.float("value", 0.0))
                };
                ensure!(pads.len() == 8 && pads.iter().all(|&p| p >= 0) && pads[0] == 0 && pads[1] == 0 && pads[4] == 0 && pads[5] == 0, "pads {pads:?}: only non-negative padding of H and W is supported");
                let window = Window { kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pad_before: [pads[2], pads[3]], pad_after: [pads[6], pads[7]] };
                let shape = vec![1, s[1], s[2] + (pads[2] + pads[6]) as usize, s[3] + (pads[3] + pads[7]) as usize];
                self.push(out, name, Op::Pad { window, value }, vec![x], shape);
            }
            "Resize" | "Upsample" => {
                let x = self.value(input(node, 0)?)?;
                let s = self.shape(x).to_vec();
                ensure!(s.len() == 4, "{} of shape {s:?}", node.op_type);
                let mode = a.string("mode").unwrap_or_else(|| "nearest".into());
                ensure!(mode == "nearest", "{} mode '{mode}' is not supported (only nearest)", node.op_type);
                // Scales (Upsample: input 1; Resize: input 2) or sizes (Resize: input 3).
                let scales_at = if node.op_type == "Upsample" { 1 } else { 2 };
                let scales: Vec<f32> = match node.input.get(scales_at).filter(|i| !i.is_empty()) {
                    Some(t) => self.konst(t)?.f32().map(|(_, d)| d.to_vec()).or_else(|_| self.konst(t).and_then(|c| c.ints()).map(|v| v.iter().map(|&x| x as f32).collect()))?,
                    None if node.op_type == "Upsample" => a.get("scales").map(|s| s.floats.clone()).unwrap_or_default(),
                    None => {
                        let sizes = self.konst(input(node, 3)?)?.ints()?;
                        ensure!(sizes.len() == 4, "Resize sizes {sizes:?}");
                        sizes.iter().zip(&s).map(|(&o, &i)| o as f32 / i as f32).collect()
                    }
                };
                ensure!(scales.len() == 4 && scales[0] == 1.0 && scales[1] == 1.0 && scales[2] == scales[3] && scales[2] >= 1.0 && scales[2].fract() == 0.0, "{} scales {scales:?}: only an integer factor on H and W is supported", node.op_type);
                let f = scales[2] as usize;
                let coord = a.string("coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into());
                let nearest = a.string("nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
                // Where output row r reads input row r / f (the only mapping legionc splits).
                let floor = (coord == "asymmetric" && nearest == "floor")
                    || (node.op_type == "Upsample" && self.opset < 11)
                    || (f == 2 && ["asymmetric", "half_pixel", "pytorch_half_pixel"].contains(&coord.as_str()) && ["floor", "round_prefer_floor"].contains(&nearest.as_str()));
                ensure!(floor, "nearest resizing by {f} with coordinate_transformation_mode '{coord}' and nearest_mode '{nearest}' is not supported (only modes that read input row r / {f})");
                self.push(out, name, Op::Upsample { scale: f }, vec![x], vec![1, s[1], s[2] * f, s[3] * f]);
            }
            "ReduceMean" => {
                let x = self.value(input(node, 0)?)?;
                let s = self.shape(x).to_vec();
                let axes = match node.input.get(1).filter(|i| !i.is_empty()) {
                    Some(t) => self.konst(t)?.ints()?,
                    None => a.ints("axes").unwrap_or_default(),
                };
                let mut axes: Vec<usize> = axes.iter().map(|&x| fold::axis(x, s.len())).collect::<Result<_>>()?;
                axes.sort_unstable();
                ensure!(s.len() == 4 && axes == [2, 3], "ReduceMean over axes {axes:?} of {s:?} is not supported (only H and W)");
                let keep = a.int("keepdims", 1) != 0;
                if keep {
                    self.push(out, name, Op::GlobalAvgPool, vec![x], vec![1, s[1], 1, 1]);
                } else {
                    let pooled = self.push(format!("{out}.keepdims"), format!("{name}.pool"), Op::GlobalAvgPool, vec![x], vec![1, s[1], 1, 1]);
                    self.push(out, name, Op::Flatten, vec![pooled], vec![1, s[1]]);
                }
            }
            "LeakyRelu" => unary(self, Op::LeakyRelu { alpha: a.float("alpha", 0.01) })?,
            "Clip" => {
                let (mut min, mut max) = (a.float("min", f32::MIN), a.float("max", f32::MAX));
                if self.opset >= 11 || node.input.len() > 1 {
                    let bound = |imp: &Importer, i: usize, default: f32| -> Result<f32> {
                        match node.input.get(i).filter(|s| !s.is_empty()) {
                            Some(n) => {
                                let (_, d) = imp.konst(n)?.f32()?;
                                ensure!(d.len() == 1, "Clip bounds must be scalars");
                                Ok(d[0])
                            }
                            None => Ok(default),
                        }
                    };
                    min = bound(self, 1, min)?;
                    max = bound(self, 2, max)?;
                }
                unary(self, Op::Clip { min, max })?
            }
            "BatchNormalization" => {
                let x = self.value(input(node, 0)?)?;
                let eps = a.float("epsilon", 1e-5);
                ensure!(node.input.len() >= 5, "BatchNormalization needs 5 inputs, has {}", node.input.len());
                let p: Vec<Vec<f32>> = node.input[1..5]
                    .iter()
                    .map(|n| Ok(self.konst(n)?.f32()?.1.to_vec()))
                    .collect::<Result<_>>()?;
                let c = self.shape(x)[1];
                ensure!(p.iter().all(|v| v.len() == c), "parameters do not have one value per channel ({c})");
                let scale: Vec<f32> = (0..c).map(|i| p[0][i] / (p[3][i] + eps).sqrt()).collect();
                let shift: Vec<f32> = (0..c).map(|i| p[1][i] - p[2][i] * scale[i]).collect();
                unary(self, Op::Affine { scale: Weights::new(vec![c], scale), shift: Weights::new(vec![c], shift) })?
            }
            op @ ("Add" | "Sub" | "Mul" | "Div") => {
                let (l, r) = (input(node, 0)?, input(node, 1)?);
                match (self.values.get(l).copied(), self.values.get(r).copied()) {
                    (Some(x), Some(y)) => {
                        ensure!(op == "Add" || op == "Mul", "{op} of two computed tensors is not supported");
                        ensure!(self.shape(x) == self.shape(y), "{op} of shapes {:?} and {:?} (broadcasting) is not supported", self.shape(x), self.shape(y));
                        let s = self.shape(x).to_vec();
                        self.push(out, name, if op == "Add" { Op::Add } else { Op::Mul }, vec![x, y], s);
                    }
                    (Some(x), None) => {
                        let c = self.konst(r)?.clone();
                        self.affine(node, x, &c, op)?
                    }
                    (None, Some(y)) if op == "Add" || op == "Mul" => {
                        let c = self.konst(l)?.clone();
                        self.affine(node, y, &c, op)?
                    }
                    _ => bail!("{op} needs a computed tensor on its left"),
                }
            }
            "Concat" => {
                let xs: Vec<usize> = node.input.iter().map(|i| self.value(i)).collect::<Result<_>>()?;
                ensure!(!xs.is_empty(), "Concat of nothing");
                let mut s = self.shape(xs[0]).to_vec();
                let axis = a.int("axis", 1);
                let axis = if axis < 0 { axis + s.len() as i64 } else { axis };
                ensure!(axis == 1, "only concatenation along channels is supported (axis {axis})");
                for &x in &xs[1..] {
                    let t = self.shape(x);
                    ensure!(t.len() == s.len() && t[2..] == s[2..], "concatenating shapes {s:?} and {t:?}");
                    s[1] += t[1];
                }
                self.push(out, name, Op::Concat, xs, s);
            }
            "SpaceToDepth" => {
                let x = self.value(input(node, 0)?)?;
                let b = usize::try_from(a.int("blocksize", 0)).unwrap_or(0);
                let s = self.shape(x).to_vec();
                ensure!(s.len() == 4, "SpaceToDepth of shape {s:?}");
                ensure!(b > 0 && s[2].is_multiple_of(b) && s[3].is_multiple_of(b), "blocksize {b} does not divide {}×{}", s[2], s[3]);
                self.push(out, name, Op::SpaceToDepth { block: b }, vec![x], vec![1, s[1] * b * b, s[2] / b, s[3] / b]);
            }
            "Transpose" => {
                let x = self.value(input(node, 0)?)?;
                let s = self.shape(x).to_vec();
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p.iter().map(|&i| usize::try_from(i).ok().filter(|&i| i < s.len()).ok_or_else(|| anyhow!("perm {p:?} is not a permutation of {} axes", s.len()))).collect::<Result<_>>()?,
                    None => (0..s.len()).rev().collect(),
                };
                let mut seen = perm.clone();
                seen.sort_unstable();
                ensure!(seen == (0..s.len()).collect::<Vec<_>>(), "perm {perm:?} is not a permutation of {} axes", s.len());
                if x == 0 && self.model.nodes.len() == 1 && perm == [0, 3, 1, 2] && self.model.input_layout == InputLayout::Nchw {
                    // NHWC → NCHW at the input (Keras / TensorFlow): the coordinator does it.
                    self.model.input_layout = InputLayout::Nhwc;
                    let n = &mut self.model.nodes[0];
                    n.shape = perm.iter().map(|&p| s[p]).collect();
                    self.values.insert(out, 0);
                } else {
                    ensure!(perm.len() == s.len(), "perm {perm:?} for rank {}", s.len());
                    let shape = perm.iter().map(|&p| s[p]).collect();
                    self.push(out, name, Op::Transpose { perm }, vec![x], shape);
                }
            }
            "Flatten" => {
                let x = self.value(input(node, 0)?)?;
                let axis = a.int("axis", 1);
                ensure!(axis == 1, "Flatten axis {axis} is not supported (only 1)");
                ensure!(self.shape(x).len() >= 2, "Flatten of shape {:?}", self.shape(x));
                let k = self.shape(x)[1..].iter().product();
                self.push(out, name, Op::Flatten, vec![x], vec![1, k]);
            }
            "Reshape" => {
                let x = self.value(input(node, 0)?)?;
                let target = match self.konst(input(node, 1)?)? {
                    Const::Int(_, d) => d.clone(),
                    Const::F32(..) => bail!("Reshape shape must be integers"),
                };
                let s = self.shape(x).to_vec();
                let k: usize = s.iter().skip(1).product();
                let to = fold::reshaped(&s, &target, a.int("allowzero", 0) != 0)?;
                ensure!(to == [1, k], "only a Reshape that flattens to [1, {k}] is supported (target {target:?} gives {to:?})");
                self.push(out, name, Op::Flatten, vec![x], vec![1, k]);
            }
            "Gemm" | "MatMul" => {
                let x = self.value(input(node, 0)?)?;
                let s = self.shape(x).to_vec();
                ensure!(s.len() == 2, "input has shape {s:?}, a flattened [1, K] is needed");
                let (bshape, bdata) = self.konst(input(node, 1)?)?.f32()?;
                ensure!(bshape.len() == 2, "weights of shape {bshape:?} are not a matrix");
                let (alpha, beta, trans_a, trans_b) = if node.op_type == "Gemm" {
                    (a.float("alpha", 1.0), a.float("beta", 1.0), a.int("transA", 0), a.int("transB", 0))
                } else {
                    (1.0, 1.0, 0, 0)
                };
                ensure!(trans_a == 0, "Gemm with transA is not supported");
                let (k, n) = if trans_b != 0 { (bshape[1], bshape[0]) } else { (bshape[0], bshape[1]) };
                ensure!(k == s[1], "weights {bshape:?} do not fit {} input features", s[1]);
                let mut w = vec![0f32; k * n];
                for i in 0..k {
                    for j in 0..n {
                        let v = if trans_b != 0 { bdata[j * k + i] } else { bdata[i * n + j] };
                        w[i * n + j] = alpha * v;
                    }
                }
                let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(c) => {
                        let (_, d) = self.konst(c)?.f32()?;
                        ensure!(d.len() == n || d.len() == 1, "Gemm bias of {} values for {n} outputs", d.len());
                        (0..n).map(|j| beta * d[if d.len() == 1 { 0 } else { j }]).collect()
                    }
                    None => vec![0.0; n],
                };
                let op = Op::Dense { weight: Weights::new(vec![k, n], w), bias: Weights::new(vec![n], bias) };
                self.push(out, name, op, vec![x], vec![1, n]);
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = self.value(input(node, 0)?)?;
                let s = self.shape(x).to_vec();
                ensure!(s.len() == 4, "{} of shape {s:?}", node.op_type);
                let op = if node.op_type == "GlobalAveragePool" { Op::GlobalAvgPool } else { Op::GlobalMaxPool };
                self.push(out, name, op, vec![x], vec![1, s[1], 1, 1]);
            }
            "Softmax" => {
                let x = self.value(input(node, 0)?)?;
                let rank = self.shape(x).len();
                let axis = fold::axis(a.int("axis", if self.opset >= 13 { -1 } else { 1 }), rank)?;
                let rank = rank as i64;
                ensure!(self.opset >= 13 || axis == rank as usize - 1, "Softmax before opset 13 over axes {axis}.. is not supported");
                unary(self, Op::Softmax { axis })?
            }
            other => bail!("op {other} is not supported; legionc supports: {SUPPORTED_OPS}"),
        }
        Ok(())
    }
}

/// Input `i` of `node`, or an error naming it.
fn input(node: &NodeProto, i: usize) -> Result<&str> {
    node.input.get(i).map(String::as_str).filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("input {i} is missing ({} has {})", node.op_type, node.input.len()))
}

fn node_name(node: &NodeProto) -> String {
    if node.name.is_empty() { node.output.first().cloned().unwrap_or_default() } else { node.name.clone() }
}
