//! The model front end: zoo files, import of exported graphs, inspect, clear errors.

use crate::{full_size, legionc, zoo_model, TempDir, FULL, TINY};
use legionc::model::zoo;
use legionc::runtime::ir::{InputLayout, Op};
use prost::Message;
use tract_onnx::pb::{ModelProto, NodeProto};

#[test]
fn zoo_is_deterministic_and_seeded() {
    for name in TINY {
        let a = zoo::build(name, 5).unwrap();
        let b = zoo::build(name, 5).unwrap();
        assert_eq!(a, b, "{name}: same seed, different bytes");
        assert_ne!(a, zoo::build(name, 6).unwrap(), "{name}: seed ignored");
    }
}

#[test]
fn zoo_command_writes_the_same_file_as_the_library() {
    let dir = TempDir::new("zoo");
    let path = dir.path("v.onnx");
    let out = legionc().args(["zoo", "vgg16-tiny", "-o"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&path).unwrap(), zoo::build("vgg16-tiny", zoo::DEFAULT_SEED).unwrap());
    // and the file is accepted wherever a zoo name is
    let m = legionc::model::load(path.to_str().unwrap(), None).unwrap();
    assert_eq!(m.sha256, zoo_model("vgg16-tiny").sha256);
}

#[test]
fn zoo_architectures_have_their_shape() {
    let count = |name: &str, kind: &str| zoo_model(name).ir.nodes.iter().filter(|n| n.op.kind() == kind).count();
    assert_eq!(count("vgg16-tiny", "Conv"), 13);
    assert_eq!(count("vgg19-tiny", "Conv"), 16);
    assert_eq!(count("vgg16-tiny", "Dense"), 3);
    assert_eq!(count("resnet18-tiny", "Add"), 8);
    assert_eq!(count("yolov2-tiny", "SpaceToDepth"), 1);
    // the passthrough's Concat, and those that carry it through the 13 × 13 part (below)
    let concats = |name: &str| zoo_model(name).ir.nodes.iter().filter(|n| n.op.kind() == "Concat" && !n.name.ends_with(".carry")).count();
    assert_eq!(concats("yolov2-tiny"), 1);
    let y = &zoo_model("yolov2-tiny").ir;
    assert_eq!(y.split_end(), y.output(), "YOLOv2 is splittable to its output");
    if full_size() {
        let v = &zoo_model("vgg16").ir;
        assert_eq!(v.parameter_count(), 138_357_544);
        assert_eq!(v.nodes.last().unwrap().shape, vec![1, 1000]);
        assert_eq!(zoo_model("yolov2").ir.nodes.last().unwrap().shape, vec![1, 125, 13, 13]);
        assert_eq!(zoo_model("resnet18").ir.parameter_count(), 11_689_512);
    }
}

#[test]
fn cut_points_never_split_a_residual_block() {
    let m = &zoo_model("resnet18-tiny").ir;
    let cuts = m.cut_points();
    for (i, n) in m.nodes.iter().enumerate() {
        if let Op::Add = n.op {
            // the block's input feeds the add: nothing between it and the add is a cut point
            let shortcut = *n.inputs.iter().min().unwrap();
            assert!(cuts.iter().all(|&c| c <= shortcut || c >= i), "cut inside the block {shortcut}..{i}: {cuts:?}");
        }
    }
    assert!(m.nodes.iter().all(|n| n.op.kind() != "Slice"), "a residual block's two 3 × 3 convolutions are not carried through");
}

/// YOLOv2's passthrough is open across its 13 × 13 part, which had no cut point. The front
/// end runs the passthrough's 1×1 convolution and reorg first and carries its output as
/// channels: one tensor crosses before every 3 × 3 convolution there, and the model still
/// computes what tract computes from the ONNX file.
#[test]
fn a_side_value_is_carried_as_channels_to_make_cut_points() {
    for name in ["yolov2-tiny", "yolov2"] {
        if name == "yolov2" && !full_size() {
            continue;
        }
        let m = zoo_model(name);
        let y = &m.ir;
        let s2d = y.nodes.iter().position(|n| matches!(n.op, Op::SpaceToDepth { .. })).unwrap();
        let join = y.nodes.iter().position(|n| matches!(n.op, Op::Concat) && !n.name.ends_with(".carry")).unwrap();
        let side = y.nodes[s2d].shape[1];
        let inside: Vec<usize> = y.cut_points().into_iter().filter(|&c| c > s2d && c < join).collect();
        // before the 13 × 13 part's five 3 × 3 convolutions
        assert_eq!(inside.len(), 5, "{name}: cut points {inside:?} between the reorg {s2d} and the join {join}");
        for &c in &inside {
            let n = &y.nodes[c];
            assert!(matches!(n.op, Op::Concat) && n.name.ends_with(".carry"), "{name}: cut point {c} is {:?}", n.op);
            // the main branch's channels, then the passthrough's
            let last = *n.inputs.last().unwrap();
            assert_eq!(y.nodes[last].shape[1], side, "{name}: cut point {c} does not carry the passthrough");
            assert!(last == s2d || matches!(y.nodes[last].op, Op::Slice { .. }));
            assert_eq!(n.shape[1], y.nodes[n.inputs[0]].shape[1] + side);
        }
        // the whole model, as the IR computes it, against tract on the ONNX file
        let x = legionc::model::reference::random_input(&y.nodes[0].shape, 7);
        let whole = legionc::runtime::exec::runnable(legionc::runtime::exec::section_graph(y, 0, y.output()).unwrap()).unwrap();
        let got = legionc::runtime::exec::run(&whole, x.clone()).unwrap();
        let want = legionc::model::reference::run(&m.onnx, &x).unwrap();
        legionc::model::reference::check(&got, &want, name).unwrap().ensure_within(name).unwrap();
    }
    // VGG-16 has no branch: nothing to carry
    assert!(zoo_model("vgg16-tiny").ir.nodes.iter().all(|n| n.op.kind() != "Slice"));
}

#[test]
fn keras_style_export_imports_with_nhwc_input() {
    let m = &zoo_model("mixed-tiny").ir;
    assert_eq!(m.input_layout, InputLayout::Nhwc);
    assert_eq!(m.user_input_shape(), vec![1, 48, 40, 3]);
    assert_eq!(m.nodes[0].shape, vec![1, 3, 48, 40]);
    let kinds: Vec<&str> = m.nodes.iter().map(|n| n.op.kind()).collect();
    for k in ["Transpose", "Flatten", "Dense", "Softmax", "AvgPool", "Clip", "LeakyRelu"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // the ceil-mode pool's extra row shows as an effective bottom pad
    let ceil_pool = m.nodes.iter().find_map(|n| match &n.op { Op::MaxPool(w) if w.kernel == [3, 3] => Some(w.clone()), _ => None }).unwrap();
    assert_eq!(ceil_pool.pad_after, [1, 1]);
}

fn inspect_json(model: &str) -> serde_json::Value {
    let out = legionc().args(["inspect", model, "--json"]).output().unwrap();
    assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn inspect_reports_every_zoo_model() {
    let names: Vec<&str> = if full_size() { TINY.iter().chain(FULL).copied().collect() } else { TINY.to_vec() };
    for name in names {
        let r = inspect_json(name);
        let layers = r["layers"].as_array().unwrap();
        assert_eq!(layers.len(), zoo_model(name).ir.nodes.len());
        let cuts = r["cut_points"].as_array().unwrap();
        assert!(cuts.len() >= 2);
        // receptive field grows along the splittable part, FLOPs are counted
        let rf: Vec<u64> = layers.iter().filter_map(|l| l["receptive_rows"].as_u64()).collect();
        assert!(rf.windows(2).any(|w| w[1] > w[0]), "{name}: receptive field never grows");
        assert!(r["total_flops"].as_u64().unwrap() > 0);
        let text = legionc().args(["inspect", name]).output().unwrap();
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(text.contains("cut points of the splittable part"), "{text}");
    }
    // VGG-16's conv1_1 sees 3 rows, conv1_2 5, pool1 6
    let r = inspect_json("vgg16-tiny");
    let rf: Vec<u64> = r["layers"].as_array().unwrap().iter().take(6).skip(1).map(|l| l["receptive_rows"].as_u64().unwrap()).collect();
    assert_eq!(rf, vec![3, 3, 5, 5, 6]);
}

/// A graph with an op legionc does not map: the error names the node and its op.
#[test]
fn unsupported_op_is_named() {
    let bytes = zoo::build("vgg16-tiny", 1).unwrap();
    let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let relu = g.node.iter().position(|n| n.op_type == "Relu").unwrap();
    let old = g.node[relu].clone();
    g.node[relu] = NodeProto { op_type: "Elu".into(), name: "my_elu".into(), ..old };
    let dir = TempDir::new("unsupported");
    let path = dir.path("elu.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let out = legionc().arg("inspect").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node 'my_elu' (op Elu)") && err.contains("not supported") && err.contains("Conv"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
}

#[test]
fn dynamic_input_shape_is_an_error_unless_given() {
    let bytes = zoo::build("vgg16-tiny", 1).unwrap();
    let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    if let Some(type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() {
        t.shape.as_mut().unwrap().dim[2].value = Some(Value::DimParam("height".into()));
    }
    let dir = TempDir::new("dynamic");
    let path = dir.path("dyn.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let out = legionc().arg("inspect").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("input 'input' has a dynamic shape") && err.contains("--input-shape"), "{err}");
    let out = legionc().arg("inspect").arg(&path).args(["--input-shape", "1,3,32,32"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn not_a_model_is_a_clear_error() {
    let dir = TempDir::new("garbage");
    let path = dir.path("junk.onnx");
    std::fs::write(&path, b"this is not protobuf at all, definitely not").unwrap();
    let out = legionc().arg("inspect").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("junk.onnx") && err.contains("not an ONNX model"), "{err}");
    let out = legionc().args(["inspect", "no-such-model"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model") && err.contains("not a zoo model"), "{err}");
}

/// Exporter patterns (`tests/fixtures/`): each committed file is what the zoo's writer gives
/// (`UPDATE_SNAPSHOTS=1` rewrites them), imports with its shape arithmetic folded away and its
/// symbolic batch taken as 1, and legionc's split of it agrees with tract-onnx's run of the file
/// itself on 1, 3 and 8 boards, every way of fusing.
#[test]
fn exporter_fixtures_import_and_agree_with_tract() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, _) in zoo::FIXTURES {
        let path = dir.join(format!("{name}.onnx"));
        let bytes = zoo::fixture(name).unwrap();
        if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(std::fs::read(&path).expect("fixture missing: run with UPDATE_SNAPSHOTS=1"), bytes, "{name}: the committed fixture is stale");
        let m = legionc::model::load(path.to_str().unwrap(), None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let kinds: Vec<&str> = m.ir.nodes.iter().map(|n| n.op.kind()).collect();
        assert!(kinds.contains(&"Dense") && kinds.contains(&"Flatten"), "{name}: {kinds:?}");
        assert_eq!(m.ir.user_input_shape()[0], 1, "{name}: the symbolic batch is one image");
        for boards in [1, 3, 8] {
            for fusion in [legionc::solve::Fusion::Layerwise, legionc::solve::Fusion::Blocks, legionc::solve::Fusion::One] {
                let speeds: Vec<f64> = (0..boards).map(|b| 1.0 + b as f64 * 0.25).collect();
                let r = legionc::run::verify_in_process(&m, &speeds, fusion, 7).unwrap_or_else(|e| panic!("{name} on {boards}: {e:#}"));
                r.agreement.ensure_within(&format!("{name} on {boards} boards, {fusion:?}")).unwrap();
            }
        }
    }
    // The Keras pattern's flatten follows its Transpose back to NHWC.
    let m = legionc::model::load(dir.join("keras-tf2onnx.onnx").to_str().unwrap(), None).unwrap();
    assert_eq!(m.ir.input_layout, InputLayout::Nhwc);
    let flat = m.ir.nodes.iter().position(|n| matches!(n.op, Op::Flatten)).unwrap();
    assert!(matches!(&m.ir.nodes[m.ir.nodes[flat].inputs[0]].op, Op::Transpose { perm } if perm == &[0, 2, 3, 1]));
    // Its MatMul + Add pairs are Dense layers with their bias: no Affine after a Dense.
    for (i, n) in m.ir.nodes.iter().enumerate().skip(flat) {
        assert!(!matches!(n.op, Op::Affine { .. }), "value {i}: a bias left as an Affine after the flatten");
    }
    let Op::Dense { bias, .. } = &m.ir.nodes[flat + 1].op else { panic!("a Dense after the flatten") };
    assert!(bias.data.iter().any(|&b| b != 0.0), "the Add's bias is in the Dense");
}

/// Malformed nodes are errors naming the node, never panics: missing inputs, a bad perm, an
/// empty kernel, an int32 shape constant of the wrong length.
#[test]
fn malformed_nodes_are_named_errors() {
    let bytes = zoo::fixture("pytorch-export").unwrap();
    let cases: Vec<(&str, Box<dyn Fn(&mut ModelProto)>)> = vec![
        ("BatchNormalization needs 5 inputs", Box::new(|p: &mut ModelProto| {
            let n = p.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "BatchNormalization").unwrap();
            n.input.truncate(3);
        })),
        ("input 1 is missing", Box::new(|p: &mut ModelProto| {
            let n = p.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
            n.input.truncate(1);
        })),
        ("Gather index 7 is out of range", Box::new(|p: &mut ModelProto| {
            let g = p.graph.as_mut().unwrap();
            let idx = g.node.iter().find(|n| n.op_type == "Gather").unwrap().input[1].clone();
            let t = g.initializer.iter_mut().find(|t| t.name == idx).unwrap();
            t.raw_data = 7i64.to_le_bytes().to_vec();
        })),
        ("raw data of", Box::new(|p: &mut ModelProto| {
            let g = p.graph.as_mut().unwrap();
            let idx = g.node.iter().find(|n| n.op_type == "Gather").unwrap().input[1].clone();
            g.initializer.iter_mut().find(|t| t.name == idx).unwrap().raw_data = vec![0; 5];
        })),
        ("empty dimension", Box::new(|p: &mut ModelProto| {
            let g = p.graph.as_mut().unwrap();
            let w = g.node.iter().find(|n| n.op_type == "Conv").unwrap().input[1].clone();
            let t = g.initializer.iter_mut().find(|t| t.name == w).unwrap();
            t.dims[2] = 0;
            t.raw_data.clear();
        })),
    ];
    let dir = TempDir::new("malformed");
    for (want, change) in cases {
        let mut p = ModelProto::decode(bytes.as_slice()).unwrap();
        change(&mut p);
        let path = dir.path("m.onnx");
        std::fs::write(&path, p.encode_to_vec()).unwrap();
        let out = legionc().arg("inspect").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{want}: {err}");
        assert!(err.contains(want) && (err.contains("node '") || err.contains("initializer '")), "{want}: {err}");
    }
    let mut p = ModelProto::decode(zoo::build("mixed-tiny", 1).unwrap().as_slice()).unwrap();
    let t = p.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "Transpose" && n.attribute.iter().any(|a| a.ints == [0, 2, 3, 1])).unwrap();
    t.attribute.iter_mut().find(|a| a.name == "perm").unwrap().ints = vec![0, 2, 2, 1];
    let path = dir.path("perm.onnx");
    std::fs::write(&path, p.encode_to_vec()).unwrap();
    let out = legionc().arg("inspect").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("not a permutation"), "{err}");
}

#[test]
fn several_outputs_are_computed_as_one_and_cut_back_in_the_graphs_order() {
    use legionc::model::onnx::{pack, unpack};
    use legionc::model::reference;
    use tract_onnx::prelude::*;
    let m = zoo_model("yolov3-tiny-tiny");
    let names: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(m.outputs.len(), 2, "{names:?}");
    assert_eq!(m.outputs[0].shape, vec![1, 255, 3, 3], "the 13 × 13 head of 416 at 96");
    assert_eq!(m.outputs[1].shape, vec![1, 255, 6, 6]);
    let last = m.ir.nodes.last().unwrap();
    assert_eq!(last.shape, vec![1, 255 * (9 + 36)]);
    // tract-onnx's two outputs, raw.
    let x = reference::random_input(&m.ir.user_input_shape(), 3);
    let raw: Vec<Tensor> = reference::plan(&m.onnx, x.shape()).unwrap().run(tvec!(x.clone().into())).unwrap().into_iter().map(|t| t.into_tensor()).collect();
    assert_eq!(raw.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>(), m.outputs.iter().map(|o| o.shape.clone()).collect::<Vec<_>>());
    let packed = reference::run(&m.onnx, &x).unwrap();
    assert_eq!(unpack(&m.outputs, &packed).unwrap(), raw, "pack and unpack are inverse");
    assert_eq!(pack(raw.clone()).unwrap(), packed);
    // Split over 3 boards, each head agrees with tract's.
    let ends = legionc::solve::fused_groups(&m.ir, legionc::solve::Fusion::Layerwise);
    let boards: Vec<(String, f64)> = (0..3).map(|i| (format!("b{i}"), 1.0 + i as f64)).collect();
    let plan = legionc::solve::plan_from(&m.ir, &m.sha256, &boards, &ends, legionc::runtime::plan::Topology::Mesh).unwrap();
    let mut fleet = legionc::runtime::plan::LocalFleet::new(m.ir.clone(), plan).unwrap();
    let y = fleet.infer(x).unwrap();
    for (got, want) in unpack(&m.outputs, &y).unwrap().iter().zip(&raw) {
        reference::check(got, want, "a head").unwrap();
    }
    // A model whose last node is not one of its outputs is refused with the node's name.
    let mut p = ModelProto::decode(m.onnx.as_slice()).unwrap();
    p.graph.as_mut().unwrap().output.truncate(1);
    let err = legionc::model::onnx::import(&p.encode_to_vec(), "cut", None).err().expect("refused").to_string();
    assert!(err.contains("is not an output"), "{err}");
    let mut p = ModelProto::decode(m.onnx.as_slice()).unwrap();
    let g = p.graph.as_mut().unwrap();
    let first = g.output[0].clone();
    g.output.push(first);
    let err = legionc::model::onnx::import(&p.encode_to_vec(), "twice", None).err().expect("refused").to_string();
    assert!(err.contains("listed twice"), "{err}");
}
