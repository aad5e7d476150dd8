//! The offline model zoo: well-known CNN architectures written as ONNX files with seeded random
//! weights (no model can be downloaded here). Same name and seed ⇒ byte-identical file.

use anyhow::{bail, Result};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// Default seed of `legionc zoo`.
pub const DEFAULT_SEED: u64 = 2024;

/// Every model the zoo can write, with a one-line description.
pub const MODELS: &[(&str, &str)] = &[
    ("vgg16", "VGG-16, 224×224, 13 convs + 3 FC, 138 M weights"),
    ("vgg16-tiny", "VGG-16 layout, 32×32, channels ÷16"),
    ("vgg19", "VGG-19, 224×224, 16 convs + 3 FC"),
    ("vgg19-tiny", "VGG-19 layout, 32×32, channels ÷16"),
    ("yolov2", "YOLOv2 (Darknet-19 backbone, passthrough reorg/concat), 416×416"),
    ("yolov2-tiny", "YOLOv2 layout, 64×64, channels ÷16"),
    ("yolov3-tiny", "YOLOv3-tiny, 416×416: two detection heads (13×13, 26×26), ×2 upsampling, skip concatenation"),
    ("yolov3-tiny-tiny", "YOLOv3-tiny layout, 96×96, channels ÷16"),
    ("resnet18", "ResNet-18, 224×224, residual adds"),
    ("resnet18-tiny", "ResNet-18 layout, 32×32, channels ÷8"),
    ("mobilenetv2", "MobileNetV2, 224×224: depthwise convolutions, ReLU6, inverted residuals"),
    ("mobilenetv2-tiny", "MobileNetV2 layout, 32×32, channels ÷8"),
    ("unet", "U-Net, 192×256 (not square): encoder-decoder, ConvTranspose ×2 upsampling, skip concatenations"),
    ("unet-tiny", "U-Net layout, 48×64, channels ÷8"),
    (
        "mixed-tiny",
        "import coverage: NHWC input transpose, strided/dilated/depthwise convs, ceil-mode and \
         asymmetric pools, Clip, Keras-style transpose+flatten+MatMul tail",
    ),
];

pub fn is_zoo_name(name: &str) -> bool {
    MODELS.iter().any(|(n, _)| *n == name)
}

/// The ONNX bytes of a zoo model.
pub fn build(name: &str, seed: u64) -> Result<Vec<u8>> {
    let mut b = Builder::new(name, seed);
    match name {
        "vgg16" => vgg(&mut b, 224, VGG16, 1, 4096, 1000),
        "vgg16-tiny" => vgg(&mut b, 32, VGG16, 16, 64, 10),
        "vgg19" => vgg(&mut b, 224, VGG19, 1, 4096, 1000),
        "vgg19-tiny" => vgg(&mut b, 32, VGG19, 16, 64, 10),
        "yolov2" => yolov2(&mut b, 416, 1),
        "yolov2-tiny" => yolov2(&mut b, 64, 16),
        "yolov3-tiny" => yolov3_tiny(&mut b, 416, 1),
        "yolov3-tiny-tiny" => yolov3_tiny(&mut b, 96, 16),
        "resnet18" => resnet18(&mut b, 224, 1, 1000),
        "resnet18-tiny" => resnet18(&mut b, 32, 8, 10),
        "mixed-tiny" => mixed(&mut b),
        "mobilenetv2" => mobilenetv2(&mut b, 224, 1, 1000),
        "mobilenetv2-tiny" => mobilenetv2(&mut b, 32, 8, 10),
        "unet" => unet(&mut b, [192, 256], 1),
        "unet-tiny" => unet(&mut b, [48, 64], 8),
        _ => {
            let names: Vec<&str> = MODELS.iter().map(|m| m.0).collect();
            bail!("unknown zoo model '{name}' (the zoo has: {})", names.join(", "))
        }
    }
    Ok(b.finish())
}

/// A value of the graph under construction: tensor name and shape.
#[derive(Clone, Debug)]
pub struct V {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Writes an ONNX graph layer by layer, drawing weights from a seeded ChaCha stream.
pub struct Builder {
    model_name: String,
    rng: ChaCha8Rng,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}
pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::String as i32, s: v.as_bytes().to_vec(), ..Default::default() }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}
fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}

fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn out_len(len: usize, k: usize, s: usize, d: usize, pb: usize, pa: usize, ceil: bool) -> usize {
    let span = d * (k - 1) + 1;
    let num = len + pb + pa - span;
    if ceil {
        let mut o = num.div_ceil(s) + 1;
        if (o - 1) * s >= len + pb {
            o -= 1;
        }
        o
    } else {
        num / s + 1
    }
}

impl Builder {
    pub fn new(name: &str, seed: u64) -> Builder {
        Builder {
            model_name: name.into(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: vec![],
            inits: vec![],
            inputs: vec![],
            outputs: vec![],
            counter: 0,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    pub fn input(&mut self, shape: &[usize]) -> V {
        self.inputs.push(value_info("input", shape));
        V { name: "input".into(), shape: shape.to_vec() }
    }

    pub fn output(&mut self, v: &V) {
        self.outputs.push(value_info(&v.name, &v.shape));
    }

    fn init(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|f| f.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    fn init_i64(&mut self, name: &str, data: &[i64]) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: data.to_vec(),
            ..Default::default()
        });
        name.into()
    }

    /// An integer initializer of ONNX data type `dtype` (int32 or int64, raw little-endian).
    pub fn init_int(&mut self, prefix: &str, dtype: DataType, shape: &[usize], data: &[i64]) -> String {
        let name = self.fresh(prefix);
        let raw = match dtype {
            DataType::Int32 => data.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            _ => data.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        };
        self.inits.push(TensorProto { name: name.clone(), dims: shape.iter().map(|&d| d as i64).collect(), data_type: dtype as i32, raw_data: raw, ..Default::default() });
        name
    }

    /// A float initializer of any shape, values in [lo, hi).
    pub fn init_f32(&mut self, prefix: &str, shape: &[usize], lo: f32, hi: f32) -> String {
        let name = self.fresh(prefix);
        let data = self.uniform(shape.iter().product(), lo, hi);
        self.init(&name, shape, data)
    }

    /// Leave the batch dimension of the input and output open (`N`), as exporters with
    /// dynamic axes do.
    pub fn symbolic_batch(&mut self) {
        for v in self.inputs.iter_mut().chain(self.outputs.iter_mut()) {
            if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.first_mut()) {
                    d.value = Some(tensor_shape_proto::dimension::Value::DimParam("N".into()));
                }
            }
        }
    }

    fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.gen_range(lo..hi)).collect()
    }

    /// A node of any op (shape arithmetic of exporters, for the fixtures).
    pub fn node(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<AttributeProto>, shape: Vec<usize>) -> V {
        let name = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            name: name.clone(),
            op_type: op.into(),
            input: inputs,
            output: vec![name.clone()],
            attribute: attrs,
            ..Default::default()
        });
        V { name, shape }
    }

    /// Convolution, square kernel, symmetric padding, He-uniform weights.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_full(&mut self, x: &V, out_c: usize, k: usize, s: usize, pad: usize, d: usize, group: usize, bias: bool) -> V {
        let in_c = x.shape[1];
        let fan_in = in_c / group * k * k;
        let bound = (6.0 / fan_in as f32).sqrt();
        let wname = self.fresh("w");
        let w = self.uniform(out_c * fan_in, -bound, bound);
        let mut inputs = vec![x.name.clone(), self.init(&wname, &[out_c, in_c / group, k, k], w)];
        if bias {
            let bname = self.fresh("b");
            let b = self.uniform(out_c, -0.1, 0.1);
            inputs.push(self.init(&bname, &[out_c], b));
        }
        let h = out_len(x.shape[2], k, s, d, pad, pad, false);
        let wd = out_len(x.shape[3], k, s, d, pad, pad, false);
        let attrs = vec![
            attr_ints("kernel_shape", &[k as i64, k as i64]),
            attr_ints("strides", &[s as i64, s as i64]),
            attr_ints("pads", &[pad as i64; 4]),
            attr_ints("dilations", &[d as i64, d as i64]),
            attr_int("group", group as i64),
        ];
        self.node("Conv", inputs, attrs, vec![1, out_c, h, wd])
    }

    /// Transposed convolution, square kernel `k`, stride `s`, no padding, with bias (the U-Net
    /// decoder's upsampling: k = s = 2 doubles H and W).
    pub fn conv_transpose(&mut self, x: &V, out_c: usize, k: usize, s: usize) -> V {
        self.conv_transpose_full(x, out_c, k, s, 0, 0)
    }

    /// ConvTranspose with the same pad on every side and an output_padding on both axes.
    pub fn conv_transpose_full(&mut self, x: &V, out_c: usize, k: usize, s: usize, pad: usize, output_padding: usize) -> V {
        let in_c = x.shape[1];
        let bound = (6.0 / (in_c * k * k) as f32).sqrt();
        let (wname, bname) = (self.fresh("wt"), self.fresh("bt"));
        let w = self.uniform(in_c * out_c * k * k, -bound, bound);
        let b = self.uniform(out_c, -0.1, 0.1);
        let inputs = vec![x.name.clone(), self.init(&wname, &[in_c, out_c, k, k], w), self.init(&bname, &[out_c], b)];
        let mut attrs = vec![attr_ints("kernel_shape", &[k as i64, k as i64]), attr_ints("strides", &[s as i64, s as i64])];
        if pad > 0 || output_padding > 0 {
            attrs.push(attr_ints("pads", &[pad as i64; 4]));
            attrs.push(attr_ints("output_padding", &[output_padding as i64; 2]));
        }
        let len = |n: usize| (n - 1) * s + k + output_padding - 2 * pad;
        let shape = vec![1, out_c, len(x.shape[2]), len(x.shape[3])];
        self.node("ConvTranspose", inputs, attrs, shape)
    }

    pub fn conv(&mut self, x: &V, out_c: usize, k: usize) -> V {
        self.conv_full(x, out_c, k, 1, k / 2, 1, 1, true)
    }

    pub fn batch_norm(&mut self, x: &V) -> V {
        self.batch_norm_gamma(x, (0.5, 1.5))
    }

    /// Batch normalisation with its scale drawn from `gamma` (a small one for the last of a
    /// residual branch, as trained networks and their initialisations keep it: the sums stay in
    /// range instead of doubling block after block).
    pub fn batch_norm_gamma(&mut self, x: &V, gamma: (f32, f32)) -> V {
        let c = x.shape[1];
        let names: Vec<String> = ["gamma", "beta", "mean", "var"].iter().map(|n| self.fresh(n)).collect();
        let ranges = [gamma, (-0.1, 0.1), (-0.1, 0.1), (0.5, 1.5)];
        let mut inputs = vec![x.name.clone()];
        for (n, (lo, hi)) in names.iter().zip(ranges) {
            let v = self.uniform(c, lo, hi);
            inputs.push(self.init(n, &[c], v));
        }
        self.node("BatchNormalization", inputs, vec![attr_float("epsilon", 1e-5)], x.shape.clone())
    }

    pub fn relu(&mut self, x: &V) -> V {
        self.node("Relu", vec![x.name.clone()], vec![], x.shape.clone())
    }

    pub fn leaky(&mut self, x: &V, alpha: f32) -> V {
        self.node("LeakyRelu", vec![x.name.clone()], vec![attr_float("alpha", alpha)], x.shape.clone())
    }

    pub fn clip(&mut self, x: &V, lo: f32, hi: f32) -> V {
        let lo_n = self.fresh("clip_min");
        let hi_n = self.fresh("clip_max");
        let inputs = vec![x.name.clone(), self.init(&lo_n, &[], vec![lo]), self.init(&hi_n, &[], vec![hi])];
        self.node("Clip", inputs, vec![], x.shape.clone())
    }

    /// Max or average pool. `pads` = [top, left, bottom, right].
    pub fn pool(&mut self, x: &V, max: bool, k: usize, s: usize, pads: [usize; 4], ceil: bool) -> V {
        let h = out_len(x.shape[2], k, s, 1, pads[0], pads[2], ceil);
        let w = out_len(x.shape[3], k, s, 1, pads[1], pads[3], ceil);
        let mut attrs = vec![
            attr_ints("kernel_shape", &[k as i64, k as i64]),
            attr_ints("strides", &[s as i64, s as i64]),
            attr_ints("pads", &pads.map(|p| p as i64)),
            attr_int("ceil_mode", ceil as i64),
        ];
        if !max {
            attrs.push(attr_int("count_include_pad", 0));
        }
        let op = if max { "MaxPool" } else { "AveragePool" };
        self.node(op, vec![x.name.clone()], attrs, vec![1, x.shape[1], h, w])
    }

    pub fn maxpool(&mut self, x: &V, k: usize, s: usize, pad: usize) -> V {
        self.pool(x, true, k, s, [pad; 4], false)
    }

    pub fn add(&mut self, a: &V, b: &V) -> V {
        self.node("Add", vec![a.name.clone(), b.name.clone()], vec![], a.shape.clone())
    }

    pub fn concat(&mut self, xs: &[&V]) -> V {
        let mut shape = xs[0].shape.clone();
        shape[1] = xs.iter().map(|x| x.shape[1]).sum();
        self.node("Concat", xs.iter().map(|x| x.name.clone()).collect(), vec![attr_int("axis", 1)], shape)
    }

    pub fn space_to_depth(&mut self, x: &V, b: usize) -> V {
        let s = &x.shape;
        let shape = vec![1, s[1] * b * b, s[2] / b, s[3] / b];
        self.node("SpaceToDepth", vec![x.name.clone()], vec![attr_int("blocksize", b as i64)], shape)
    }

    pub fn transpose(&mut self, x: &V, perm: &[usize]) -> V {
        let shape = perm.iter().map(|&p| x.shape[p]).collect();
        let p: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        self.node("Transpose", vec![x.name.clone()], vec![attr_ints("perm", &p)], shape)
    }

    pub fn global_avg_pool(&mut self, x: &V) -> V {
        self.node("GlobalAveragePool", vec![x.name.clone()], vec![], vec![1, x.shape[1], 1, 1])
    }

    pub fn flatten(&mut self, x: &V) -> V {
        let k = x.shape[1..].iter().product();
        self.node("Flatten", vec![x.name.clone()], vec![attr_int("axis", 1)], vec![1, k])
    }

    /// Flatten written as a Reshape to `[1, -1]` (as Keras / TensorFlow exports do).
    pub fn reshape_flat(&mut self, x: &V) -> V {
        let k = x.shape[1..].iter().product();
        let sname = self.fresh("shape");
        let s = self.init_i64(&sname, &[1, -1]);
        self.node("Reshape", vec![x.name.clone(), s], vec![], vec![1, k])
    }

    /// Fully connected layer as Gemm with transB = 1 (PyTorch's layout).
    pub fn gemm(&mut self, x: &V, n: usize) -> V {
        let k = x.shape[1];
        let bound = (3.0 / k as f32).sqrt();
        let wname = self.fresh("fc_w");
        let bname = self.fresh("fc_b");
        let w = self.uniform(n * k, -bound, bound);
        let b = self.uniform(n, -0.1, 0.1);
        let inputs = vec![x.name.clone(), self.init(&wname, &[n, k], w), self.init(&bname, &[n], b)];
        self.node("Gemm", inputs, vec![attr_int("transB", 1)], vec![1, n])
    }

    /// Fully connected layer as MatMul + Add (Keras / TensorFlow's layout).
    pub fn matmul_add(&mut self, x: &V, n: usize) -> V {
        let k = x.shape[1];
        let bound = (3.0 / k as f32).sqrt();
        let wname = self.fresh("mm_w");
        let bname = self.fresh("mm_b");
        let w = self.uniform(k * n, -bound, bound);
        let b = self.uniform(n, -0.1, 0.1);
        let wi = self.init(&wname, &[k, n], w);
        let y = self.node("MatMul", vec![x.name.clone(), wi], vec![], vec![1, n]);
        let bi = self.init(&bname, &[n], b);
        self.node("Add", vec![y.name.clone(), bi], vec![], vec![1, n])
    }

    pub fn softmax(&mut self, x: &V) -> V {
        self.node("Softmax", vec![x.name.clone()], vec![attr_int("axis", 1)], x.shape.clone())
    }

    pub fn finish(self) -> Vec<u8> {
        let model = ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            producer_name: "legionc zoo".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                name: self.model_name,
                node: self.nodes,
                initializer: self.inits,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}

const M: usize = 0;
const VGG16: &[usize] = &[64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M];
const VGG19: &[usize] =
    &[64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M];

fn vgg(b: &mut Builder, size: usize, cfg: &[usize], div: usize, fc: usize, classes: usize) {
    let mut x = b.input(&[1, 3, size, size]);
    for &c in cfg {
        x = if c == M {
            b.maxpool(&x, 2, 2, 0)
        } else {
            let y = b.conv(&x, c / div, 3);
            b.relu(&y)
        };
    }
    x = b.flatten(&x);
    for _ in 0..2 {
        x = b.gemm(&x, fc);
        x = b.relu(&x);
    }
    x = b.gemm(&x, classes);
    x = b.softmax(&x);
    b.output(&x);
}

fn darknet_conv(b: &mut Builder, x: &V, c: usize, k: usize) -> V {
    let y = b.conv_full(x, c, k, 1, k / 2, 1, 1, false);
    let y = b.batch_norm(&y);
    b.leaky(&y, 0.1)
}

fn yolov2(b: &mut Builder, size: usize, div: usize) {
    let c = |n: usize| (n / div).max(4);
    let mut x = b.input(&[1, 3, size, size]);
    x = darknet_conv(b, &x, c(32), 3);
    x = b.maxpool(&x, 2, 2, 0);
    x = darknet_conv(b, &x, c(64), 3);
    x = b.maxpool(&x, 2, 2, 0);
    for (n, m) in [(128, 64), (256, 128)] {
        x = darknet_conv(b, &x, c(n), 3);
        x = darknet_conv(b, &x, c(m), 1);
        x = darknet_conv(b, &x, c(n), 3);
        x = b.maxpool(&x, 2, 2, 0);
    }
    for (i, k) in [3, 1, 3, 1, 3].into_iter().enumerate() {
        x = darknet_conv(b, &x, c(if i % 2 == 0 { 512 } else { 256 }), k);
    }
    let passthrough = x.clone();
    x = b.maxpool(&x, 2, 2, 0);
    for (i, k) in [3, 1, 3, 1, 3].into_iter().enumerate() {
        x = darknet_conv(b, &x, c(if i % 2 == 0 { 1024 } else { 512 }), k);
    }
    x = darknet_conv(b, &x, c(1024), 3);
    x = darknet_conv(b, &x, c(1024), 3);
    let p = darknet_conv(b, &passthrough, c(64), 1);
    let p = b.space_to_depth(&p, 2);
    x = b.concat(&[&p, &x]);
    x = darknet_conv(b, &x, c(1024), 3);
    // 5 anchors × (20 classes + 5): the detection head, linear.
    x = b.conv_full(&x, 125, 1, 1, 0, 1, 1, true);
    b.output(&x);
}

/// YOLOv3-tiny as darknet converters export it: a stride-1 max pool padded at the bottom and
/// right, two linear detection heads (3 anchors × (80 classes + 5)) as the graph's two outputs,
/// the second from the first's route upsampled ×2 and concatenated with the 26 × 26 map.
fn yolov3_tiny(b: &mut Builder, size: usize, div: usize) {
    let c = |n: usize| (n / div).max(4);
    let mut x = b.input(&[1, 3, size, size]);
    for n in [16, 32, 64, 128] {
        x = darknet_conv(b, &x, c(n), 3);
        x = b.maxpool(&x, 2, 2, 0);
    }
    let skip = darknet_conv(b, &x, c(256), 3);
    x = b.maxpool(&skip, 2, 2, 0);
    x = darknet_conv(b, &x, c(512), 3);
    x = b.pool(&x, true, 2, 1, [0, 0, 1, 1], false);
    x = darknet_conv(b, &x, c(1024), 3);
    let route = darknet_conv(b, &x, c(256), 1);
    let h = darknet_conv(b, &route, c(512), 3);
    let head1 = b.conv_full(&h, 255, 1, 1, 0, 1, 1, true);
    let u = darknet_conv(b, &route, c(128), 1);
    let u = upsample2(b, &u);
    let y = b.concat(&[&u, &skip]);
    let y = darknet_conv(b, &y, c(256), 3);
    let head2 = b.conv_full(&y, 255, 1, 1, 0, 1, 1, true);
    b.output(&head1);
    b.output(&head2);
}

fn resnet18(b: &mut Builder, size: usize, div: usize, classes: usize) {
    let mut x = b.input(&[1, 3, size, size]);
    x = b.conv_full(&x, 64 / div, 7, 2, 3, 1, 1, false);
    x = b.batch_norm(&x);
    x = b.relu(&x);
    x = b.maxpool(&x, 3, 2, 1);
    for (stage, width) in [64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let c = width / div;
            let mut y = b.conv_full(&x, c, 3, stride, 1, 1, 1, false);
            y = b.batch_norm(&y);
            y = b.relu(&y);
            y = b.conv_full(&y, c, 3, 1, 1, 1, 1, false);
            y = b.batch_norm(&y);
            let shortcut = if stride != 1 || x.shape[1] != c {
                let s = b.conv_full(&x, c, 1, stride, 0, 1, 1, false);
                b.batch_norm(&s)
            } else {
                x.clone()
            };
            x = b.add(&y, &shortcut);
            x = b.relu(&x);
        }
    }
    x = b.global_avg_pool(&x);
    x = b.flatten(&x);
    x = b.gemm(&x, classes);
    x = b.softmax(&x);
    b.output(&x);
}

/// Convolution, batch normalisation and ReLU6; without ReLU6, the linear projection that ends
/// an inverted residual block (its normalisation's scale small).
fn conv_bn(b: &mut Builder, x: &V, c: usize, k: usize, stride: usize, group: usize, relu6: bool) -> V {
    let y = b.conv_full(x, c, k, stride, k / 2, 1, group, false);
    if relu6 {
        let y = b.batch_norm(&y);
        b.clip(&y, 0.0, 6.0)
    } else {
        b.batch_norm_gamma(&y, (0.1, 0.3))
    }
}

fn mobilenetv2(b: &mut Builder, size: usize, div: usize, classes: usize) {
    let ch = |c: usize| (c / div).max(4);
    let mut x = b.input(&[1, 3, size, size]);
    x = conv_bn(b, &x, ch(32), 3, 2, 1, true);
    // (expansion, channels, repeats, stride) of the inverted residual blocks.
    for (t, c, n, s) in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)] {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = x.shape[1] * t;
            let mut y = if t == 1 { x.clone() } else { conv_bn(b, &x, hidden, 1, 1, 1, true) };
            y = conv_bn(b, &y, hidden, 3, stride, hidden, true); // depthwise
            y = conv_bn(b, &y, ch(c), 1, 1, 1, false);
            x = if stride == 1 && x.shape[1] == y.shape[1] { b.add(&x, &y) } else { y };
        }
    }
    x = conv_bn(b, &x, ch(1280), 1, 1, 1, true);
    x = b.global_avg_pool(&x);
    x = b.flatten(&x);
    x = b.gemm(&x, classes);
    b.output(&x);
}

/// Nearest-neighbour ×2 upsampling as PyTorch exports `nn.Upsample(scale_factor=2)`.
fn upsample2(b: &mut Builder, x: &V) -> V {
    let roi = b.init_f32("roi", &[0], 0.0, 1.0);
    let scales = b.init(&format!("scales_{}", x.name), &[4], vec![1.0, 1.0, 2.0, 2.0]);
    let attrs = vec![attr_string("mode", "nearest"), attr_string("coordinate_transformation_mode", "asymmetric"), attr_string("nearest_mode", "floor")];
    b.node("Resize", vec![x.name.clone(), roi, scales], attrs, vec![1, x.shape[1], x.shape[2] * 2, x.shape[3] * 2])
}

fn unet(b: &mut Builder, size: [usize; 2], div: usize) {
    let double = |b: &mut Builder, x: &V, c: usize| -> V {
        let y = b.conv_full(x, c, 3, 1, 1, 1, 1, false);
        let y = b.batch_norm(&y);
        let y = b.relu(&y);
        let y = b.conv_full(&y, c, 3, 1, 1, 1, 1, false);
        let y = b.batch_norm(&y);
        b.relu(&y)
    };
    let mut x = b.input(&[1, 3, size[0], size[1]]);
    let mut skips = Vec::new();
    for c in [32, 64, 128, 256] {
        x = double(b, &x, c / div);
        skips.push(x.clone());
        x = b.maxpool(&x, 2, 2, 0);
    }
    x = double(b, &x, 512 / div);
    for c in [256, 128, 64, 32] {
        let up = b.conv_transpose(&x, c / div, 2, 2);
        let skip = skips.pop().expect("one skip per level");
        x = b.concat(&[&skip, &up]);
        x = double(b, &x, c / div);
    }
    // Two classes per pixel.
    x = b.conv_full(&x, 2, 1, 1, 0, 1, 1, true);
    b.output(&x);
}

/// Import coverage in one small graph, shaped like a Keras export.
fn mixed(b: &mut Builder) {
    let x = b.input(&[1, 48, 40, 3]);
    let mut x = b.transpose(&x, &[0, 3, 1, 2]);
    x = b.conv_full(&x, 8, 3, 2, 1, 1, 1, true); // strided: 24×20
    x = b.clip(&x, 0.0, 6.0);
    x = b.conv_full(&x, 8, 3, 1, 2, 2, 1, true); // dilated
    x = b.relu(&x);
    x = b.conv_full(&x, 8, 3, 1, 1, 1, 8, true); // depthwise
    x = b.batch_norm(&x);
    x = b.pool(&x, true, 3, 2, [0, 0, 0, 0], true); // ceil mode: 24×20 → 12×10 (floor would give 11×9)
    x = b.pool(&x, true, 2, 1, [0, 0, 1, 1], false); // k2 s1, bottom/right padding only
    let y = b.conv_full(&x, 8, 1, 1, 0, 1, 1, true);
    x = b.add(&x, &y);
    x = b.pool(&x, false, 3, 2, [1, 1, 0, 0], false); // average, top/left padding only
    x = b.conv_full(&x, 12, 5, 1, 2, 1, 4, false); // grouped, 5×5
    x = b.leaky(&x, 0.2);
    x = b.transpose(&x, &[0, 2, 3, 1]);
    x = b.reshape_flat(&x);
    x = b.matmul_add(&x, 10);
    x = b.softmax(&x);
    b.output(&x);
}

/// The exporter patterns kept as fixtures in `tests/fixtures/<name>.onnx`: small networks
/// written as Keras (tf2onnx) and PyTorch (torch.onnx without constant folding) export them.
pub const FIXTURES: &[(&str, &str)] = &[
    (
        "keras-tf2onnx",
        "NHWC input with a symbolic batch and its Transpose, Conv with bias, BatchNorm folded into Mul/Add, \
         the Transpose back to NHWC before the flatten, the flatten as Shape → Cast → Slice → Concat → Cast → \
         Reshape on int32 constants, Dense as MatMul + Add, Softmax",
    ),
    (
        "edge-ops",
        "today's edge-CNN ops as PyTorch exports them: Pad, HardSwish, PRelu, SiLU as Mul(x, Sigmoid(x)), \
         HardSigmoid, Resize nearest ×2 beside ConvTranspose(k=3, s=2, p=1, output_padding=1), a skip Concat at the \
         same resolution, ReduceMean over H and W",
    ),
    (
        "pytorch-export",
        "symbolic batch, Conv, BatchNormalization, the flatten as Shape → Gather → Unsqueeze → Concat → \
         Reshape(-1, N) (no constant folding), GlobalAveragePool, Gemm",
    ),
];

/// The ONNX bytes of an exporter-pattern fixture.
pub fn fixture(name: &str) -> Result<Vec<u8>> {
    let mut b = Builder::new(name, DEFAULT_SEED);
    match name {
        "keras-tf2onnx" => keras_tf2onnx(&mut b),
        "pytorch-export" => pytorch_export(&mut b),
        "edge-ops" => edge_ops(&mut b),
        _ => bail!("unknown fixture '{name}'"),
    }
    b.symbolic_batch();
    Ok(b.finish())
}

/// `shape` of `x` as int64, then int32 (tf2onnx casts shapes to int32 around Slice).
fn flatten_tf2onnx(b: &mut Builder, x: &V) -> V {
    let k: usize = x.shape[1..].iter().product();
    let shape = b.node("Shape", vec![x.name.clone()], vec![], vec![x.shape.len()]);
    let s32 = b.node("Cast", vec![shape.name], vec![attr_int("to", DataType::Int32 as i64)], vec![x.shape.len()]);
    let (starts, ends, axes) = (b.init_int("starts", DataType::Int32, &[1], &[0]), b.init_int("ends", DataType::Int32, &[1], &[1]), b.init_int("axes", DataType::Int32, &[1], &[0]));
    let batch = b.node("Slice", vec![s32.name, starts, ends, axes], vec![], vec![1]);
    let rest = b.init_int("rest", DataType::Int32, &[1], &[-1]);
    let target = b.node("Concat", vec![batch.name, rest], vec![attr_int("axis", 0)], vec![2]);
    let t64 = b.node("Cast", vec![target.name], vec![attr_int("to", DataType::Int64 as i64)], vec![2]);
    b.node("Reshape", vec![x.name.clone(), t64.name], vec![], vec![1, k])
}

fn keras_tf2onnx(b: &mut Builder) {
    let x = b.input(&[1, 40, 36, 3]);
    let x = b.transpose(&x, &[0, 3, 1, 2]);
    let mut x = b.conv(&x, 8, 3);
    for c in [8, 16] {
        if c != 8 {
            x = b.conv(&x, c, 3);
        }
        // BatchNorm as tf2onnx folds it: a per-channel Mul and Add on [C, 1, 1] constants.
        let scale = b.init_f32("bn_scale", &[c, 1, 1], 0.5, 1.5);
        let y = b.node("Mul", vec![x.name.clone(), scale], vec![], x.shape.clone());
        let shift = b.init_f32("bn_shift", &[c, 1, 1], -0.1, 0.1);
        let y = b.node("Add", vec![y.name.clone(), shift], vec![], y.shape.clone());
        let y = b.relu(&y);
        x = b.maxpool(&y, 2, 2, 0);
    }
    let nhwc = b.transpose(&x, &[0, 2, 3, 1]);
    let flat = flatten_tf2onnx(b, &nhwc);
    let d = b.matmul_add(&flat, 32);
    let d = b.relu(&d);
    let d = b.matmul_add(&d, 10);
    let out = b.node("Softmax", vec![d.name.clone()], vec![attr_int("axis", -1)], d.shape.clone());
    b.output(&out);
}

fn pytorch_export(b: &mut Builder) {
    let x = b.input(&[1, 3, 30, 34]);
    let x = b.conv_full(&x, 8, 3, 1, 1, 1, 1, false);
    let x = b.batch_norm(&x);
    let x = b.relu(&x);
    let x = b.maxpool(&x, 2, 2, 0);
    let x = b.conv(&x, 16, 3);
    let x = b.relu(&x);
    let x = b.global_avg_pool(&x);
    // torch.flatten(x, 1) exported without constant folding: x.view(x.size(0), -1).
    let shape = b.node("Shape", vec![x.name.clone()], vec![], vec![4]);
    let zero = b.init_int("index", DataType::Int64, &[], &[0]);
    let batch = b.node("Gather", vec![shape.name, zero], vec![attr_int("axis", 0)], vec![]);
    let axes = b.init_int("axes", DataType::Int64, &[1], &[0]);
    let batch = b.node("Unsqueeze", vec![batch.name, axes], vec![], vec![1]);
    let rest = b.init_int("rest", DataType::Int64, &[1], &[-1]);
    let target = b.node("Concat", vec![batch.name, rest], vec![attr_int("axis", 0)], vec![2]);
    let flat = b.node("Reshape", vec![x.name.clone(), target.name], vec![], vec![1, 16]);
    let y = b.gemm(&flat, 10);
    b.output(&y);
}

fn edge_ops(b: &mut Builder) {
    let x = b.input(&[1, 3, 32, 30]);
    let pads = b.init_int("pads", DataType::Int64, &[8], &[0, 0, 1, 2, 0, 0, 1, 0]);
    let x = b.node("Pad", vec![x.name.clone(), pads], vec![attr_string("mode", "constant")], vec![1, 3, 34, 32]);
    let x = b.conv_full(&x, 8, 3, 1, 0, 1, 1, true); // 32×30 with the pad's columns: 2 left, 0 right
    let x = b.node("HardSwish", vec![x.name.clone()], vec![], x.shape.clone());
    let x = b.conv(&x, 8, 3);
    let slope = b.init_f32("slope", &[8, 1, 1], 0.05, 0.3);
    let skip = b.node("PRelu", vec![x.name.clone(), slope], vec![], x.shape.clone());
    let x = b.maxpool(&skip, 2, 2, 0);
    let x = b.conv(&x, 8, 3);
    let gate = b.node("Sigmoid", vec![x.name.clone()], vec![], x.shape.clone());
    let x = b.node("Mul", vec![x.name.clone(), gate.name], vec![], x.shape.clone());
    let x = b.node("HardSigmoid", vec![x.name.clone()], vec![attr_float("alpha", 0.25), attr_float("beta", 0.4)], x.shape.clone());
    // PyTorch's ConvTranspose2d(k=3, s=2, p=1, output_padding=1): exactly ×2, beside Resize ×2.
    let d = b.conv_transpose_full(&x, 8, 3, 2, 1, 1);
    let x = upsample2(b, &x);
    let x = b.add(&x, &d);
    let x = b.concat(&[&skip, &x]);
    let x = b.conv(&x, 12, 3);
    let x = b.node("ReduceMean", vec![x.name.clone()], vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 0)], vec![1, 12]);
    let y = b.gemm(&x, 5);
    b.output(&y);
}
