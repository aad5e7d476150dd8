//! Benchmarks: commands that measure in one run and print ratios (never timed assertions).

use crate::model::{group_band, reference, Group, LoadedModel, Rows};
use anyhow::{ensure, Context, Result};
use legion_runtime::exec::BandExecutor;
use prost::Message;
use std::collections::HashSet;
use std::time::Instant;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

/// The ONNX sub-model computing one band of `group` with tract-onnx directly: the group's
/// nodes, its input of `input_rows` rows, vertical padding removed (the band reads real rows
/// above and below, as a middle band does).
pub fn band_onnx(m: &LoadedModel, group: Group, input_rows: usize) -> Result<Vec<u8>> {
    let mut proto = ModelProto::decode(m.onnx.as_slice())?;
    let graph = proto.graph.as_mut().context("no graph")?;
    let keep: HashSet<&str> = group.layers().map(|v| m.tensor_names[v].as_str()).collect();
    graph.node.retain(|n| n.output.first().is_some_and(|o| keep.contains(o.as_str())));
    for n in &mut graph.node {
        for a in &mut n.attribute {
            if a.name == "pads" && a.ints.len() == 4 {
                a.ints[0] = 0;
                a.ints[2] = 0;
            }
        }
    }
    let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.clone()).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    let mut shape = m.ir.nodes[group.from].shape.clone();
    shape[2] = input_rows;
    let mut input = graph.input[0].clone();
    input.name = m.tensor_names[group.from].clone();
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        if let Some(s) = t.shape.as_mut() {
            for (d, v) in s.dim.iter_mut().zip(&shape) {
                d.value = Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(*v as i64));
            }
        }
    }
    graph.input = vec![input];
    let mut output = graph.output[0].clone();
    output.name = m.tensor_names[group.to].clone();
    output.r#type = None;
    graph.output = vec![output];
    Ok(proto.encode_to_vec())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub struct BandBench {
    pub group: Group,
    pub band: Rows,
    pub input_rows: usize,
    /// Medians.
    pub executor_s: f64,
    pub tract_s: f64,
    /// Fastest runs (least disturbed by other load on the machine).
    pub executor_min_s: f64,
    pub tract_min_s: f64,
    pub max_abs_diff: f32,
}

/// Run one middle band of `group` (board `board` of `boards` equal bands) through legionc's
/// executor and through tract-onnx on the same rows, single-threaded, interleaved.
pub fn band_vs_tract(m: &LoadedModel, group: Group, boards: usize, board: usize, repeats: usize) -> Result<BandBench> {
    let h = m.ir.rows(group.to);
    ensure!(board > 0 && board + 1 < boards, "pick a middle band: board must be in 1..{}", boards - 1);
    let per = h / boards;
    let band = Rows::new(board * per, (board + 1) * per);
    let gb = group_band(&m.ir, group, band);
    ensure!(gb.layers.iter().all(|l| l.pad_top == 0 && l.pad_bottom == 0), "band {band} touches an image border");
    let mut exec = BandExecutor::new(m.ir.clone());
    exec.prepare(group, band)?;
    let mut shape = m.ir.nodes[group.from].shape.clone();
    shape[2] = gb.input.len();
    let direct = reference::plan(&band_onnx(m, group, gb.input.len())?, &shape)?;
    let input = reference::random_input(&shape, 7);
    let a = exec.run_band(group, band, input.clone())?;
    let b = direct.run(tvec!(input.clone().into()))?.remove(0).into_tensor();
    let (max_abs_diff, _) = reference::compare(&a, &b)?;
    let (mut te, mut tt) = (vec![], vec![]);
    for _ in 0..repeats {
        let t = Instant::now();
        exec.run_band(group, band, input.clone())?;
        te.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        direct.run(tvec!(input.clone().into()))?;
        tt.push(t.elapsed().as_secs_f64());
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(BandBench {
        group,
        band,
        input_rows: gb.input.len(),
        executor_min_s: min(&te),
        tract_min_s: min(&tt),
        executor_s: median(te),
        tract_s: median(tt),
        max_abs_diff,
    })
}

/// What the plan predicts from the emulation parameters, seconds.
pub struct FleetPrediction {
    pub groups: Vec<f64>,
    pub tail: f64,
    pub total: f64,
}

/// CPU seconds of one run of `f` on this thread (after one warm-up run).
fn cpu_seconds(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let t = legion_runtime::link::thread_cpu_time();
    f()?;
    Ok(legion_runtime::link::thread_cpu_time().saturating_sub(t).as_secs_f64())
}

/// Predict a plan's latency on an emulated fleet the way its boards behave: every band's
/// compute is its CPU time here ÷ the twin's speed; scatter and gather queue on the
/// coordinator's port at min(coordinator, board) bandwidth plus latency; the coordinator
/// computes its own band meanwhile; the tail runs on the coordinator.
pub fn predict_fleet_latency(fleet: &crate::fleet::Fleet, m: &LoadedModel, plan: &legion_runtime::plan::Plan) -> Result<FleetPrediction> {
    use legion_runtime::exec::{run, runnable, section_graph};
    use legion_runtime::wire::HEADER_LEN;
    let c = fleet.coordinator;
    let coord = &fleet.boards[c];
    let mut exec = BandExecutor::new(m.ir.clone());
    let mut groups = Vec::new();
    for g in &plan.groups {
        let in_shape = &m.ir.nodes[g.from].shape;
        let out_shape = &m.ir.nodes[g.to].shape;
        let row_bytes = |s: &[usize]| 4 * s[1] * s[3];
        let mut coord_compute = 0.0;
        let mut remote = Vec::new(); // (board, in bytes, out bytes, compute)
        for (b, out) in g.bands().into_iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            let band = exec.prepare(g.group(), out)?.0.clone();
            let mut shape = in_shape.clone();
            shape[2] = band.input.len();
            let input = reference::random_input(&shape, 1);
            let cpu = cpu_seconds(|| exec.run_band(g.group(), out, input.clone()).map(|_| ()))?;
            let compute = cpu / fleet.boards[b].nominal_speed();
            if b == c {
                coord_compute = compute;
            } else {
                remote.push((b, HEADER_LEN + band.input.len() * row_bytes(in_shape), HEADER_LEN + out.len() * row_bytes(out_shape), compute));
            }
        }
        let link = |b: usize| {
            let l = &fleet.boards[b].link;
            (coord.link.bandwidth_mbps.min(l.bandwidth_mbps) * 1e6 / 8.0, coord.link.latency_ms.max(l.latency_ms) / 1e3)
        };
        let mut tx_free = 0.0f64;
        let mut done: Vec<(f64, usize, usize)> = remote
            .iter()
            .map(|&(b, bytes_in, bytes_out, compute)| {
                let (bw, lat) = link(b);
                tx_free += bytes_in as f64 / bw;
                (tx_free + lat + compute, b, bytes_out)
            })
            .collect();
        done.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut rx_free = 0.0f64;
        let mut finish = coord_compute;
        for (ready, b, bytes_out) in done {
            let (bw, lat) = link(b);
            rx_free = rx_free.max(ready) + bytes_out as f64 / bw;
            finish = finish.max(rx_free + lat);
        }
        groups.push(finish);
    }
    let end = m.ir.split_end();
    let tail = if end < m.ir.output() {
        let t = runnable(section_graph(&m.ir, end, m.ir.output())?)?;
        let x = reference::random_input(&m.ir.nodes[end].shape, 1);
        cpu_seconds(|| run(&t, x.clone()).map(|_| ()))? / coord.nominal_speed()
    } else {
        0.0
    };
    let total = groups.iter().sum::<f64>() + tail;
    Ok(FleetPrediction { groups, tail, total })
}
