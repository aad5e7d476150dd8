//! `legionc run`: one frame through a running fleet, its latency breakdown, the speedup over a
//! single emulated board, and (with --verify) the comparison with tract's single run.

use crate::fleet::Fleet;
use crate::model::{reference, LoadedModel};
use anyhow::{bail, ensure, Context, Result};
use legion_runtime::board::FrameReport;
use legion_runtime::exec::{run, runnable, section_graph};
use legion_runtime::link::compute;
use legion_runtime::plan::{to_nchw, Plan};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;
use tract_onnx::prelude::*;

/// Where a frame's input comes from.
pub enum InputSpec<'a> {
    File(&'a Path),
    Random(u64),
}

/// Read a `.npy` file of little-endian f32 (C order). Written by hand: the format is a short
/// header and raw data, and the crates that read it pin other ndarray versions than tract's.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(bytes.len() > 10 && &bytes[..6] == b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
        v => bail!("{}: .npy version {v} is not supported", path.display()),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).context("npy header")?;
    ensure!(header.contains("'descr': '<f4'"), "{}: only little-endian float32 arrays are supported (header {header})", path.display());
    ensure!(header.contains("'fortran_order': False"), "{}: only C-order arrays are supported", path.display());
    let shape_str = header.split("'shape':").nth(1).and_then(|s| s.split('(').nth(1)).and_then(|s| s.split(')').next()).context("npy header has no shape")?;
    let shape: Vec<usize> = shape_str.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse()).collect::<Result<_, _>>().context("npy shape")?;
    let data: Vec<f32> = bytes[start + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    ensure!(data.len() == shape.iter().product::<usize>(), "{}: {} values for shape {shape:?}", path.display(), data.len());
    Tensor::from_shape(&shape, &data)
}

/// Write a `.npy` file of f32 (used by tests and for saving outputs).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let shape: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = if shape.len() == 1 { format!("{},", shape[0]) } else { shape.join(", ") };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in t.to_plain_array_view::<f32>()?.iter() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// An image resized to the model's input and normalised with the fleet's mean and std.
fn read_image(path: &Path, fleet: &Fleet, m: &LoadedModel) -> Result<Tensor> {
    let img = image::open(path).with_context(|| format!("reading image {}", path.display()))?.to_rgb8();
    let s = &m.ir.nodes[0].shape; // NCHW
    ensure!(s[1] == 3, "model {} takes {} channels; images are RGB (give a .npy tensor instead)", m.ir.name, s[1]);
    let (h, w) = (s[2] as u32, s[3] as u32);
    let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let mut data = vec![0f32; 3 * (h * w) as usize];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = p[c] as f32 / 255.0;
            data[c * (h * w) as usize + (y * w + x) as usize] = (v - fleet.model.mean[c]) / fleet.model.std[c];
        }
    }
    let t = Tensor::from_shape(&[1, 3, h as usize, w as usize], &data)?;
    Ok(match m.ir.input_layout {
        legion_runtime::ir::InputLayout::Nchw => t,
        legion_runtime::ir::InputLayout::Nhwc => t.permute_axes(&[0, 2, 3, 1])?,
    })
}

pub fn load_input(spec: &InputSpec, fleet: &Fleet, m: &LoadedModel) -> Result<Tensor> {
    let t = match spec {
        InputSpec::Random(seed) => reference::random_input(&m.ir.user_input_shape(), *seed),
        InputSpec::File(p) => {
            let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            match ext.as_str() {
                "npy" => read_npy(p)?,
                "png" | "jpg" | "jpeg" => read_image(p, fleet, m)?,
                _ => bail!("input {}: give a .png, .jpg or .npy file", p.display()),
            }
        }
    };
    ensure!(t.shape() == m.ir.user_input_shape().as_slice(), "input has shape {:?}, model {} takes {:?}", t.shape(), m.ir.name, m.ir.user_input_shape());
    Ok(t)
}

/// The whole model on one emulated board of `speed`, in this process, the way an emulated
/// board computes (CPU time stretched to the twin's speed). Returns output and seconds.
pub fn single_board(m: &LoadedModel, input: &Tensor, speed: f64) -> Result<(Tensor, f64)> {
    let plan = runnable(section_graph(&m.ir, 0, m.ir.output())?)?;
    let x = to_nchw(&m.ir, input.clone())?;
    run(&plan, x.clone())?; // warm-up, as the boards build and warm their bands before serving
    let (y, took) = compute(Some(speed), || run(&plan, x));
    Ok((y?, took.as_secs_f64()))
}

/// Top classes of a classifier output, or the output's shape.
pub fn describe_output(t: &Tensor) -> Result<String> {
    let v = t.to_plain_array_view::<f32>()?;
    if t.rank() == 2 && t.shape()[0] == 1 {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        let flat: Vec<f32> = v.iter().copied().collect();
        idx.sort_by(|&a, &b| flat[b].total_cmp(&flat[a]));
        let top: Vec<String> = idx.iter().take(5).map(|&i| format!("class {i}: {:.4}", flat[i])).collect();
        Ok(format!("top classes: {}", top.join(", ")))
    } else {
        Ok(format!("output shape {:?}", t.shape()))
    }
}

/// The per-group per-board time table of a frame.
pub fn breakdown(report: &FrameReport, plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:>5} {:>9} {:<14} {:>11} {:>9} {:>9} {:>9}", "group", "values", "board", "rows", "send ms", "comp ms", "recv ms");
    for (gi, (g, timings)) in plan.groups.iter().zip(&report.groups).enumerate() {
        for (i, t) in timings.iter().enumerate() {
            let (group, values) = if i == 0 { (gi.to_string(), format!("{}..{}", g.from, g.to)) } else { (String::new(), String::new()) };
            let _ = writeln!(
                s,
                "{:>5} {:>9} {:<14} {:>11} {:>9.1} {:>9.1} {:>9.1}",
                group,
                values,
                t.board,
                format!("{}..{}", t.rows.0, t.rows.1),
                t.send_s * 1e3,
                t.compute_s * 1e3,
                t.recv_s * 1e3
            );
        }
        let _ = writeln!(s, "{:>5} {:>9} {:<14} {:>11} group wall {:.1} ms", "", "", "", "", report.group_s[gi] * 1e3);
    }
    let _ = writeln!(s, "tail on the coordinator: {:.1} ms", report.tail_s * 1e3);
    s
}

/// One frame through the running fleet.
pub fn infer(fleet: &Fleet, plan: &Plan, input: &Tensor) -> Result<(Tensor, FrameReport, Duration)> {
    let t = std::time::Instant::now();
    let (out, report) = legion_runtime::board::infer(&fleet.coordinator().addr(), &plan.hash(), input, fleet.deadline())
        .map_err(|e| {
            let refused = e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused));
            if refused { e.context("the coordinator does not answer: is the fleet up? (`legionc up`)") } else { e }
        })
        .with_context(|| format!("fleet {} (coordinator {} at {})", fleet.name, fleet.coordinator().name, fleet.coordinator().addr()))?;
    Ok((out, report, t.elapsed()))
}
