//! Plans without profiles: fused-layer configurations and row splits from nominal speeds.
//! Pure: takes values, returns a [`Plan`]. (The cost-model solver, FSS and the wild card plug
//! in here later.)

use crate::model::Model;
use anyhow::{ensure, Result};
use legion_runtime::plan::{Plan, PlanGroup, PLAN_VERSION};

/// How consecutive layers are fused into groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fusion {
    /// One group per segment between consecutive cut points (layer-wise where the model allows).
    Layerwise,
    /// A group ends at the first cut point of every lower resolution (VGG blocks, ResNet stages).
    Blocks,
    /// All splittable layers in one group.
    One,
}

/// Split `total` rows in proportion to `speeds` (largest remainder, ties to the first board).
pub fn proportional_rows(total: usize, speeds: &[f64]) -> Vec<usize> {
    let sum: f64 = speeds.iter().sum();
    let exact: Vec<f64> = speeds.iter().map(|s| total as f64 * s / sum).collect();
    let mut rows: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = total - rows.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..speeds.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        rows[i] += 1;
        left -= 1;
    }
    rows
}

/// Group boundaries (cut points, input excluded) of a fusion scheme.
pub fn fused_groups(model: &Model, fusion: Fusion) -> Vec<usize> {
    let cuts = model.split_cut_points();
    let end = model.split_end();
    let mut ends: Vec<usize> = match fusion {
        Fusion::Layerwise => cuts.iter().copied().filter(|&c| c > 0).collect(),
        Fusion::One => vec![end],
        Fusion::Blocks => {
            let mut rows = model.rows(0);
            cuts.iter()
                .copied()
                .filter(|&c| {
                    let keep = c > 0 && model.rows(c) < rows;
                    if keep {
                        rows = model.rows(c);
                    }
                    keep
                })
                .collect()
        }
    };
    if ends.last() != Some(&end) {
        ends.retain(|&c| c < end);
        ends.push(end);
    }
    ends.retain(|&c| c > 0);
    ends
}

/// A plan from group ends and board speeds.
pub fn plan_from(model: &Model, model_sha256: &str, boards: &[(String, f64)], ends: &[usize]) -> Result<Plan> {
    ensure!(!boards.is_empty(), "a plan needs at least one board");
    ensure!(model.split_end() > 0, "model {} has no row-splittable layers", model.name);
    let speeds: Vec<f64> = boards.iter().map(|b| b.1).collect();
    let mut from = 0;
    let mut groups = Vec::new();
    for &to in ends {
        groups.push(PlanGroup { from, to, rows: proportional_rows(model.rows(to), &speeds) });
        from = to;
    }
    let plan = Plan {
        version: PLAN_VERSION,
        model_sha256: model_sha256.into(),
        boards: boards.iter().map(|b| b.0.clone()).collect(),
        groups,
    };
    plan.validate(model)?;
    Ok(plan)
}
