//! The model front end: a zoo name or an ONNX file → legionc's layer IR, its cut points and
//! the report of `legionc inspect`. The IR and the band math live in `legion-runtime` (the
//! boards run the same code); they are re-exported here.

pub mod carry;
pub mod fold;
pub mod onnx;
pub mod reference;
pub mod zoo;

use anyhow::{Context, Result};
pub use legion_runtime::halo::{alphas, group_band, Group, GroupBand, Rows};
pub use legion_runtime::ir::{InputLayout, Model, Op};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// A model ready for planning: its IR and the bytes it came from.
pub struct LoadedModel {
    /// What the user named: a zoo model or a path.
    pub source: String,
    pub ir: Arc<Model>,
    /// ONNX tensor name of every IR value.
    pub tensor_names: Vec<String>,
    /// The graph's outputs; with more than one, the IR computes them packed into one
    /// ([`onnx::pack`]).
    pub outputs: Vec<onnx::OutputPart>,
    pub onnx: Vec<u8>,
    /// sha256 of the ONNX bytes, hex.
    pub sha256: String,
}

/// Load a zoo model by name, or an ONNX file by path.
pub fn load(spec: &str, input_shape: Option<&[usize]>) -> Result<LoadedModel> {
    let (onnx, name) = if zoo::is_zoo_name(spec) && !Path::new(spec).exists() {
        (zoo::build(spec, zoo::DEFAULT_SEED)?, spec.to_string())
    } else {
        let path = Path::new(spec);
        if !path.exists() {
            let names: Vec<&str> = zoo::MODELS.iter().map(|m| m.0).collect();
            anyhow::bail!("model '{spec}': no such file, and not a zoo model ({})", names.join(", "));
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading model {spec}"))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.into());
        (bytes, name)
    };
    let imported = onnx::import(&onnx, &name, input_shape).with_context(|| format!("model {spec}"))?;
    let sha256 = legion_runtime::plan::hex(&Sha256::digest(&onnx));
    Ok(LoadedModel { source: spec.into(), ir: Arc::new(imported.model), tensor_names: imported.tensor_names, outputs: imported.outputs, onnx, sha256 })
}

/// One row of `legionc inspect`.
#[derive(Debug, Serialize)]
pub struct LayerReport {
    pub id: usize,
    pub name: String,
    pub op: String,
    pub inputs: Vec<usize>,
    pub shape: Vec<usize>,
    pub flops: u64,
    pub output_bytes: usize,
    /// Rows of the model input one output row depends on (spatial layers only).
    pub receptive_rows: Option<usize>,
    pub cut_point: bool,
    /// Part of the row-splittable prefix (false: runs in the tail on the coordinator).
    pub splittable: bool,
}

#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub name: String,
    pub sha256: String,
    pub input_shape: Vec<usize>,
    pub input_layout: String,
    pub parameters: usize,
    pub total_flops: u64,
    pub cut_points: Vec<usize>,
    /// Last value of the splittable prefix; the tail starts after it.
    pub split_end: usize,
    /// The graph's outputs (with more than one, the last layers pack them into one).
    pub outputs: Vec<onnx::OutputPart>,
    pub layers: Vec<LayerReport>,
}

pub fn report(m: &LoadedModel) -> ModelReport {
    let ir = &m.ir;
    let cuts = ir.cut_points();
    let end = ir.split_end();
    let layers: Vec<LayerReport> = ir
        .nodes
        .iter()
        .enumerate()
        .map(|(id, n)| {
            let receptive_rows = (id > 0 && id <= end).then(|| {
                let mid = ir.rows(id) / 2;
                group_band(ir, Group { from: 0, to: id }, Rows::new(mid, mid + 1)).input.len()
            });
            LayerReport {
                id,
                name: n.name.clone(),
                op: n.op.kind().into(),
                inputs: n.inputs.clone(),
                shape: n.shape.clone(),
                flops: 2 * ir.macs(id),
                output_bytes: 4 * n.shape.iter().product::<usize>(),
                receptive_rows,
                cut_point: cuts.contains(&id),
                splittable: id <= end,
            }
        })
        .collect();
    ModelReport {
        name: ir.name.clone(),
        sha256: m.sha256.clone(),
        input_shape: ir.user_input_shape(),
        input_layout: format!("{:?}", ir.input_layout).to_uppercase(),
        parameters: ir.parameter_count(),
        total_flops: layers.iter().map(|l| l.flops).sum(),
        cut_points: cuts,
        split_end: end,
        outputs: m.outputs.clone(),
        layers,
    }
}

/// Human-readable report.
pub fn format_report(r: &ModelReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "model {}  sha256 {}", r.name, &r.sha256[..16]);
    let _ = writeln!(
        s,
        "input {:?} ({}), {:.1} M parameters, {:.2} GFLOP",
        r.input_shape,
        r.input_layout,
        r.parameters as f64 / 1e6,
        r.total_flops as f64 / 1e9
    );
    let _ = writeln!(s, "{:>4} {:<4} {:<14} {:<24} {:>18} {:>10} {:>10} {:>6}", "id", "cut", "op", "name", "shape", "MFLOP", "out KiB", "RF");
    for l in &r.layers {
        if l.id == r.split_end + 1 {
            let _ = writeln!(s, "     ---- tail (unsplittable, runs on the coordinator) ----");
        }
        let name: String = l.name.chars().take(24).collect();
        let _ = writeln!(
            s,
            "{:>4} {:<4} {:<14} {:<24} {:>18} {:>10.1} {:>10.1} {:>6}",
            l.id,
            if l.cut_point && l.splittable { "|" } else { "" },
            l.op,
            name,
            format!("{:?}", l.shape),
            l.flops as f64 / 1e6,
            l.output_bytes as f64 / 1024.0,
            l.receptive_rows.map(|r| r.to_string()).unwrap_or_default()
        );
    }
    let split: Vec<usize> = r.cut_points.iter().copied().filter(|&c| c <= r.split_end).collect();
    let _ = writeln!(s, "cut points of the splittable part ({}): {:?}", split.len(), split);
    let _ = writeln!(s, "tail: {} layers after value {}", r.layers.len() - 1 - r.split_end, r.split_end);
    if r.outputs.len() > 1 {
        let list: Vec<String> = r.outputs.iter().map(|o| format!("{} {:?}", o.name, o.shape)).collect();
        let _ = writeln!(s, "outputs: {} (computed as one, each flattened, in this order)", list.join(", "));
    }
    s
}
