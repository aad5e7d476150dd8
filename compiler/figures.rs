//! SVG figures (plotters) from the data their callers hand them: grouped bars (the suite's
//! speedups per strategy and fleet), latency against frames per second (one point per measured
//! plan) and the Gantt chart of one measured frame (per board and group: receive, compute, send
//! back).

use serde::Serialize;

use anyhow::{anyhow, Result};
use legion_runtime::board::FrameReport;
use plotters::prelude::*;

/// Colours of the strategies, in the suite's order.
const PALETTE: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the figure: {e:?}")
}

/// One bar: its group on the x axis (a fleet), its series (a strategy, one colour each), its
/// height.
pub struct Bar {
    pub group: String,
    pub series: String,
    pub value: f64,
}

/// The Gantt chart's frame: which plan, on which fleet.
#[derive(Clone, Debug, Serialize)]
pub struct Gantt {
    pub model: String,
    pub fleet: String,
    pub strategy: String,
    pub boards: Vec<String>,
    pub coordinator: String,
    pub frame: FrameReport,
}

/// Grouped bars: one group per fleet, one bar per strategy, height = speedup over the single
/// fastest board.
pub fn speedup_bars(title: &str, x_desc: &str, series: &[String], bars: &[Bar]) -> Result<String> {
    let mut fleets: Vec<&str> = Vec::new();
    for b in bars {
        if !fleets.contains(&b.group.as_str()) {
            fleets.push(&b.group);
        }
    }
    let top = bars.iter().map(|b| b.value).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let width = (160 + 70 * fleets.len() * series.len().max(1) / 2).clamp(640, 1600) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = fleets.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..top)
            .map_err(err)?;
        let names: Vec<String> = fleets.iter().map(|f| f.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(fleets.len().max(2))
            .x_label_formatter(&|v| if (v - v.round()).abs() < 1e-6 { names.get(v.round() as usize).cloned().unwrap_or_default() } else { String::new() })
            .y_desc("speedup (×)")
            .x_desc(x_desc)
            .draw()
            .map_err(err)?;
        let k = series.len().max(1) as f64;
        let w = 0.8 / k;
        for (j, st) in series.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            let bars: Vec<_> = fleets
                .iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    let b = bars.iter().find(|b| b.group == *f && &b.series == st)?;
                    let x0 = i as f64 - 0.4 + j as f64 * w;
                    Some(Rectangle::new([(x0, 0.0), (x0 + w * 0.9, b.value)], color.filled()))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(st.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart.draw_series(std::iter::once(PathElement::new(vec![(-0.5, 1.0), (n - 0.5, 1.0)], BLACK.stroke_width(1)))).map_err(err)?;
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One measured plan on the latency-against-throughput figure.
pub struct Point {
    /// Its colour and legend (a fleet).
    pub series: String,
    /// Written beside it (a strategy).
    pub label: String,
    pub fps: f64,
    pub latency_s: f64,
}

/// Latency against frames per second: one point per measured plan, one colour per fleet, each
/// point named. Up and to the left is worse; down and to the right, better.
pub fn latency_vs_throughput(title: &str, x_desc: &str, points: &[Point]) -> Result<String> {
    let mut series: Vec<&str> = Vec::new();
    for p in points {
        if !series.contains(&p.series.as_str()) {
            series.push(&p.series);
        }
    }
    let ok = |v: f64| v.is_finite() && v > 0.0;
    let x_top = points.iter().map(|p| p.fps).filter(|v| ok(*v)).fold(0.0, f64::max).max(1e-3) * 1.2;
    let y_top = points.iter().map(|p| p.latency_s * 1e3).filter(|v| ok(*v)).fold(0.0, f64::max).max(1e-3) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_top, 0.0..y_top)
            .map_err(err)?;
        chart.configure_mesh().x_desc(x_desc).y_desc("latency (ms)").draw().map_err(err)?;
        for (j, name) in series.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            let mine: Vec<&Point> = points.iter().filter(|p| p.series == *name && ok(p.fps) && ok(p.latency_s)).collect();
            chart
                .draw_series(mine.iter().map(|p| Circle::new((p.fps, p.latency_s * 1e3), 5, color.filled())))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
            chart
                .draw_series(mine.iter().map(|p| Text::new(p.label.clone(), (p.fps, p.latency_s * 1e3), ("sans-serif", 11).into_font().color(&color))))
                .map_err(err)?;
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The Gantt chart of one measured frame. Star: for each group, each board with rows
/// receives its input band, computes, sends its output back; the groups follow one another.
/// Mesh: every board on its own clock waits for its rows, computes, and sends rows on (lines
/// from board to board); the last bands go back. Then the tail on the coordinator.
pub fn gantt(g: &Gantt) -> Result<String> {
    let f = &g.frame;
    let boards: Vec<String> = if g.boards.is_empty() {
        let mut b: Vec<String> = Vec::new();
        for t in f.groups.iter().flatten() {
            if !b.contains(&t.board) {
                b.push(t.board.clone());
            }
        }
        b
    } else {
        g.boards.clone()
    };
    let row = |name: &str| boards.iter().position(|b| b == name).unwrap_or(0) as f64;
    let mesh = f.topology == legion_runtime::plan::Topology::Mesh;
    let mut spans: Vec<(f64, f64, f64, usize)> = Vec::new(); // (row, start, end, phase)
    // Mesh: rows sent board to board, (from row, at, to row, at).
    let mut arrows: Vec<(f64, f64, f64, f64)> = Vec::new();
    let mut t = 0.0;
    if mesh {
        // Every board on its own clock: waits for its rows, computes, sends on; the last
        // bands go back to the coordinator, which then runs the tail.
        let mut ends: std::collections::HashMap<&str, Vec<(usize, f64, f64)>> = std::collections::HashMap::new(); // board -> (group, compute start, end)
        let mut clock: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
        for (gi, bands) in f.groups.iter().enumerate() {
            for b in bands {
                let y = row(&b.board);
                let t0 = clock.get(b.board.as_str()).copied().unwrap_or(0.0);
                let a = t0 + b.send_s * 1e3;
                let c = a + b.compute_s * 1e3;
                spans.push((y, t0, a, 0));
                spans.push((y, a, c, 1));
                if gi + 1 == f.groups.len() {
                    spans.push((y, c, c + b.recv_s * 1e3, 2));
                }
                clock.insert(&b.board, c);
                ends.entry(&b.board).or_default().push((gi, a, c));
            }
        }
        // The tail's first split layer gathered on the boards: each waits for the others'
        // last bands, computes its slice, and the coordinator has it.
        if f.tail_gathered {
            for b in f.tail_split.first().into_iter().flatten() {
                let y = row(&b.board);
                let t0 = clock.get(b.board.as_str()).copied().unwrap_or(0.0);
                let a = t0 + b.send_s * 1e3;
                let c = a + b.compute_s * 1e3;
                spans.extend([(y, t0, a, 0), (y, a, c, 3), (y, c, c + b.recv_s * 1e3, 2)]);
            }
        }
        for (gi, bands) in f.groups.iter().enumerate() {
            for b in bands {
                let (start, end) = ends[b.board.as_str()].iter().find(|e| e.0 == gi).map_or((0.0, 0.0), |e| (e.1, e.2));
                for (i, (to, _)) in b.sent_to.iter().enumerate() {
                    // When the rows left: after the part that holds them (edges first), else
                    // after the band.
                    let sent = b.sent_after_s.get(i).map_or(end, |s| start + s * 1e3);
                    let used = ends.get(to.as_str()).and_then(|v| v.iter().find(|e| e.0 == gi + 1)).map_or(sent, |e| e.1);
                    arrows.push((row(&b.board), sent, row(to), used));
                }
            }
        }
        t = (f.total_s - f.tail_s) * 1e3;
    } else {
        for (gi, bands) in f.groups.iter().enumerate() {
            for b in bands {
                let y = row(&b.board);
                let a = t + b.send_s * 1e3;
                let c = a + b.compute_s * 1e3;
                let d = c + b.recv_s * 1e3;
                spans.push((y, t, a, 0));
                spans.push((y, a, c, 1));
                spans.push((y, c, d, 2));
            }
            t += f.group_s.get(gi).copied().unwrap_or(0.0) * 1e3;
        }
    }
    let coordinator = row(&g.coordinator);
    if f.tail_s > 0.0 {
        spans.push((coordinator, t, t + f.tail_s * 1e3, 3));
    }
    let total_ms = spans.iter().map(|s| s.2).fold(0.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 120 + 44 * boards.len() as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let nb = boards.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{} on {}: one frame of the {} plan ({} groups)", g.model, g.fleet, g.strategy, f.groups.len()), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..total_ms.max(1e-3) * 1.02, -0.5..nb - 0.5)
            .map_err(err)?;
        let names = boards.clone();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(boards.len().max(2))
            .y_label_formatter(&|v| if (v - v.round()).abs() < 1e-6 { names.get(v.round() as usize).cloned().unwrap_or_default() } else { String::new() })
            .x_desc("ms since the frame arrived at the coordinator")
            .draw()
            .map_err(err)?;
        let phases = if mesh {
            [("wait for input rows (coordinator or boards)", PALETTE[0]), ("compute", PALETTE[1]), ("last band back to the coordinator", PALETTE[2]), ("tail (coordinator)", PALETTE[7])]
        } else {
            [("receive input band", PALETTE[0]), ("compute", PALETTE[1]), ("send output band", PALETTE[2]), ("tail (coordinator)", PALETTE[7])]
        };
        for (p, (label, color)) in phases.iter().enumerate() {
            let color = *color;
            let rects: Vec<_> = spans.iter().filter(|s| s.3 == p && s.2 > s.1).map(|&(y, a, b, _)| Rectangle::new([(a, y - 0.3), (b, y + 0.3)], color.filled())).collect();
            chart.draw_series(rects).map_err(err)?.label(*label).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        if mesh {
            // Rows sent board to board: from the end of the sender's band to the start of the
            // receiver's next one.
            let lines: Vec<_> = arrows.iter().map(|&(y0, a, y1, b)| PathElement::new(vec![(a, y0), (b, y1)], BLACK.mix(0.45).stroke_width(1))).collect();
            chart.draw_series(lines).map_err(err)?.label("rows sent board to board").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.mix(0.45).stroke_width(1)));
        } else {
            // Group boundaries.
            let mut t = 0.0;
            let mut lines = Vec::new();
            for gs in &f.group_s {
                t += gs * 1e3;
                lines.push(PathElement::new(vec![(t, -0.5), (t, nb - 0.5)], BLACK.mix(0.3).stroke_width(1)));
            }
            chart.draw_series(lines).map_err(err)?;
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
