//! A bounded fuzzer for every reader of outside input: ONNX files (mutated as bytes, and as
//! protobuf: nodes, attributes and initializers changed), `.npy` inputs, fleet.yaml, model
//! files and the runtime's wire decoder. Each target runs a fixed number of seeded cases;
//! errors are what bad input should give, a panic fails the test naming the target and case.

use legionc::model::zoo;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tract_onnx::pb::{AttributeProto, ModelProto};

/// Cases per target.
const CASES: usize = 3000;

/// `bytes` changed a few random ways: bits flipped, bytes overwritten with edge values, cut
/// short, a run inserted or repeated.
fn mutate(rng: &mut ChaCha8Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        if b.is_empty() {
            b.push(rng.gen());
            continue;
        }
        let i = rng.gen_range(0..b.len());
        match rng.gen_range(0..6) {
            0 => b[i] ^= 1 << rng.gen_range(0..8),
            1 => b[i] = [0, 0xff, 0x7f, 0x80][rng.gen_range(0..4)],
            2 => b.truncate(i),
            3 => {
                let run: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                b.splice(i..i, run);
            }
            4 => {
                let end = (i + rng.gen_range(1..64)).min(b.len());
                let run = b[i..end].to_vec();
                b.splice(i..i, run);
            }
            _ => {
                let end = (i + rng.gen_range(1..64)).min(b.len());
                b.drain(i..end);
            }
        }
    }
    b
}

/// Run `f` on every case, counting panics; fails naming the first cases that panicked.
fn fuzz(target: &str, cases: usize, mut f: impl FnMut(&mut ChaCha8Rng)) {
    let mut panicked = Vec::new();
    for case in 0..cases {
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        if catch_unwind(AssertUnwindSafe(|| f(&mut rng))).is_err() {
            panicked.push(case);
        }
    }
    assert!(panicked.is_empty(), "{target}: {} of {cases} cases panicked (seeds {:?})", panicked.len(), &panicked[..panicked.len().min(10)]);
    eprintln!("fuzz {target}: {cases} cases, no panic");
}

/// Import, then what planning does with an import: cut points and the band math of the
/// whole splittable part.
fn import(bytes: &[u8]) {
    if let Ok(m) = legionc::model::onnx::import(bytes, "fuzz", None) {
        let ir = m.model;
        let _ = ir.split_cut_points();
        let end = ir.split_end();
        if end > 0 && ir.is_spatial(end) && ir.rows(end) > 0 {
            let _ = legionc::model::group_band(&ir, legionc::model::Group { from: 0, to: end }, legionc::model::Rows::new(0, ir.rows(end)));
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut s: Vec<Vec<u8>> = ["pytorch-export", "edge-ops"].iter().map(|f| zoo::fixture(f).unwrap()).collect();
    s.push(zoo::build("mixed-tiny", 1).unwrap());
    s.push(zoo::build("yolov2-tiny", 1).unwrap());
    s
}

#[test]
fn onnx_bytes() {
    let seeds = seeds();
    fuzz("onnx bytes", CASES, |rng| {
        let seed = &seeds[rng.gen_range(0..seeds.len())];
        import(&mutate(rng, seed));
    });
}

#[test]
fn onnx_graphs() {
    let protos: Vec<ModelProto> = seeds().iter().map(|b| ModelProto::decode(b.as_slice()).unwrap()).collect();
    let ops = ["Conv", "MaxPool", "Relu", "Add", "Mul", "Concat", "Reshape", "Gather", "Slice", "Shape", "Pad", "Resize", "Transpose", "Gemm", "Flatten", "Unsqueeze", "Cast", "ReduceMean", "PRelu", "BatchNormalization", "Softmax"];
    let edge = [-1i64, 0, 1, 2, 3, 7, 64, -65536, 1 << 20, i64::MAX, i64::MIN];
    fuzz("onnx graphs", CASES, |rng| {
        let mut p = protos[rng.gen_range(0..protos.len())].clone();
        let g = p.graph.as_mut().unwrap();
        for _ in 0..rng.gen_range(1..4) {
            let (n, other) = (rng.gen_range(0..g.node.len()), rng.gen_range(0..g.node.len()));
            let names: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).chain(g.initializer.iter().map(|t| t.name.clone())).collect();
            let node = &mut g.node[n];
            match rng.gen_range(0..7) {
                0 => node.op_type = ops[rng.gen_range(0..ops.len())].into(),
                1 => node.input.truncate(rng.gen_range(0..=node.input.len())),
                2 => node.input.push(names[rng.gen_range(0..names.len())].clone()),
                3 if !node.input.is_empty() => {
                    let i = rng.gen_range(0..node.input.len());
                    node.input[i] = names[rng.gen_range(0..names.len())].clone();
                }
                4 => {
                    let v: Vec<i64> = (0..rng.gen_range(0..9)).map(|_| edge[rng.gen_range(0..edge.len())]).collect();
                    let name = ["pads", "strides", "kernel_shape", "perm", "axes", "dilations", "group", "axis", "blocksize", "to"][rng.gen_range(0..10)];
                    node.attribute.retain(|a| a.name != name);
                    node.attribute.push(AttributeProto { name: name.into(), ints: v.clone(), i: v.first().copied().unwrap_or(0), r#type: if v.len() == 1 { 2 } else { 7 }, ..Default::default() });
                }
                5 if !g.initializer.is_empty() => {
                    let t = rng.gen_range(0..g.initializer.len());
                    let t = &mut g.initializer[t];
                    match rng.gen_range(0..4) {
                        0 => t.dims = (0..rng.gen_range(0..5)).map(|_| edge[rng.gen_range(0..edge.len())]).collect(),
                        1 => t.data_type = rng.gen_range(0..20),
                        2 => t.raw_data.truncate(rng.gen_range(0..=t.raw_data.len())),
                        _ => t.raw_data = mutate(rng, &t.raw_data),
                    }
                }
                _ => g.node.swap(n, other),
            }
        }
        import(&p.encode_to_vec());
    });
}

#[test]
fn npy_inputs() {
    let dir = crate::TempDir::new("fuzz-npy");
    let path = dir.path("x.npy");
    let x = legionc::model::reference::random_input(&[1, 3, 8, 6], 1);
    legionc::run::write_npy(&path, &x).unwrap();
    let good = std::fs::read(&path).unwrap();
    fuzz("npy", CASES, |rng| {
        let _ = legionc::run::parse_npy(&mutate(rng, &good));
    });
}

#[test]
fn fleet_files() {
    let good = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart.yaml")).unwrap();
    let tokens = ["-1", "0", "1e309", "nan", "[]", "{}", "null", "~", "\"\"", "[1, 2", "x: y: z", "*a", "&a b", "99999999999999999999", "- - -", "\t"];
    fuzz("fleet.yaml", CASES, |rng| {
        let mut lines: Vec<String> = good.lines().map(String::from).collect();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..lines.len());
            match rng.gen_range(0..4) {
                0 => {
                    lines.remove(i);
                }
                1 => lines.insert(i, lines[i].clone()),
                2 => {
                    // a value replaced
                    let line = &lines[i];
                    let key = line.split(':').next().unwrap_or("").to_string();
                    lines[i] = format!("{key}: {}", tokens[rng.gen_range(0..tokens.len())]);
                }
                _ => lines[i] = String::from_utf8_lossy(&mutate(rng, lines[i].as_bytes())).into_owned(),
            }
        }
        let _ = legionc::fleet::parse(&lines.join("\n"), std::path::Path::new("fleet.yaml"), None);
    });
}

#[test]
fn model_files_and_wire_messages() {
    let m = crate::zoo_model("vgg16-tiny");
    let file = legionc::runtime::modelfile::write(&m.ir, &|id| id % 3 == 0);
    fuzz("model file", CASES / 3, |rng| {
        let _ = legionc::runtime::modelfile::read(&mutate(rng, &file));
    });
    use legionc::runtime::wire::{Kind, Message};
    let x = legionc::model::reference::random_input(&[1, 2, 3, 4], 2);
    let msg = Message::tensor(Kind::Band, [7; 32], 3, 1, (0, 3), &x).unwrap().to_bytes();
    fuzz("wire", CASES, |rng| {
        let bytes = mutate(rng, &msg);
        let mut r = bytes.as_slice();
        while let Ok(Some(m)) = Message::read_from(&mut r) {
            let _ = m.to_tensor();
        }
    });
}
