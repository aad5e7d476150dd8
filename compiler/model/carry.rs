//! Side values carried as channels, so that segments with a branch get cut points.
//!
//! A fused group starts and ends where one tensor crosses ([`Model::cut_points`]). Where a
//! branch is open for long, as YOLOv2's passthrough across its 13 × 13 part, there is no cut
//! point for many layers: they can only be one group, whose halo grows with every 3 × 3
//! convolution (2 of 13 output rows need 12 input rows there). This pass rewrites such a
//! segment so that one tensor crosses before each of its row-growing layers:
//!
//! 1. the segment's nodes are ordered so that a short side branch runs first (among the nodes
//!    ready to run, the one latest in the model's order), e.g. YOLOv2's 1×1 convolution and
//!    reorg right after the value they read, instead of after the main branch;
//! 2. before each window layer that grows or shifts the rows (kernel or stride above 1), if
//!    every value live there is a feature map of the same batch, height and width, a Concat
//!    packs them along channels into one value (the new cut point), and the later layers read
//!    them back through channel [`Op::Slice`]s.
//!
//! Concat and Slice copy values exactly: the model computes the same function. A segment is
//! rewritten only where it has at least [`MIN_WINDOWS`] layers with windows of several rows
//! and a place to carry; any other model comes back unchanged.

use legion_runtime::ir::{Model, Node, Op};

/// A segment without cut points is rewritten only from this many layers with windows of
/// several rows on: below it (a residual block's two 3 × 3 convolutions) its halo is small, and
/// one group is as good.
pub const MIN_WINDOWS: usize = 3;

/// Rows spanned by one output row of `op`'s window, and its stride (none for a layer without
/// a window).
fn window_rows(op: &Op) -> Option<(usize, usize)> {
    match op {
        Op::Deconv(c) => Some((c.window.span(0), c.window.stride[0])),
        _ => op.window().map(|w| (w.span(0), w.stride[0])),
    }
}

/// Does `op` grow or shift the rows a band needs (a window with more than one row or a stride)?
fn grows_rows(op: &Op) -> bool {
    window_rows(op).is_some_and(|(span, stride)| span > 1 || stride > 1)
}

/// Does a band of `op`'s output need more input rows than it has (a window of several rows)?
fn spans_rows(op: &Op) -> bool {
    window_rows(op).is_some_and(|(span, _)| span > 1)
}

/// The model with side values carried (see the module's documentation), and the name of the
/// tensor every new value stands for (`tensor_names`, extended).
pub fn carry_side_values(model: Model, tensor_names: Vec<String>) -> (Model, Vec<String>) {
    let cuts = model.cut_points();
    let end = model.split_end();
    let mut plan: Vec<Segment> = Vec::new();
    for w in cuts.windows(2) {
        let (from, to) = (w[0], w[1]);
        if to > end || to - from < 2 {
            continue;
        }
        let windows = (from + 1..=to).filter(|&v| spans_rows(&model.nodes[v].op)).count();
        if windows < MIN_WINDOWS {
            continue;
        }
        if let Some(s) = segment_plan(&model, from, to) {
            plan.push(s);
        }
    }
    if plan.is_empty() {
        return (model, tensor_names);
    }
    rebuild(model, tensor_names, &plan)
}

/// A segment `(from, to]` to rewrite: its nodes in their new order, and after which of them
/// (positions in `order`) which values are packed: that node's output first, then the other
/// values read later, in model order.
struct Segment {
    from: usize,
    to: usize,
    order: Vec<usize>,
    carries: Vec<(usize, Vec<usize>)>,
}

/// The segment's new order and its carry points, or none if it has no carry point.
fn segment_plan(model: &Model, from: usize, to: usize) -> Option<Segment> {
    let inside = |v: usize| v > from && v <= to;
    // Kahn's algorithm over the segment, the latest ready node first.
    let mut pending: Vec<usize> = (from + 1..=to)
        .map(|v| model.nodes[v].inputs.iter().filter(|&&i| inside(i)).collect::<std::collections::BTreeSet<_>>().len())
        .collect();
    let consumers = |v: usize| (from + 1..=to).filter(move |&c| model.nodes[c].inputs.contains(&v));
    let mut ready: std::collections::BTreeSet<usize> = (from + 1..=to).filter(|&v| pending[v - from - 1] == 0).collect();
    let mut order = Vec::with_capacity(to - from);
    while let Some(&v) = ready.iter().next_back() {
        ready.remove(&v);
        order.push(v);
        for c in consumers(v) {
            pending[c - from - 1] -= 1;
            if pending[c - from - 1] == 0 {
                ready.insert(c);
            }
        }
    }
    if order.len() != to - from || order.last() != Some(&to) {
        return None;
    }
    // Live values after each position: produced at or before it (or `from`), read after it.
    let pos = |v: usize| if v == from { None } else { order.iter().position(|&o| o == v) };
    let last_read = |v: usize| order.iter().rposition(|&c| model.nodes[c].inputs.contains(&v));
    let mut carries = Vec::new();
    for p in 0..order.len() - 1 {
        if !grows_rows(&model.nodes[order[p + 1]].op) {
            continue;
        }
        let mut live: Vec<usize> = std::iter::once(from)
            .chain(order[..=p].iter().copied())
            .filter(|&v| v != order[p] && pos(v).map_or(true, |q| q <= p) && last_read(v).is_some_and(|r| r > p))
            .collect();
        live.sort_unstable();
        live.insert(0, order[p]);
        let shape = &model.nodes[order[p]].shape;
        let same = |v: usize| {
            let s = &model.nodes[v].shape;
            s.len() == 4 && shape.len() == 4 && s[0] == shape[0] && s[2] == shape[2] && s[3] == shape[3]
        };
        if live.len() >= 2 && live.iter().all(|&v| same(v) && model.is_spatial(v)) {
            carries.push((p, live));
        }
    }
    (!carries.is_empty()).then_some(Segment { from, to, order, carries })
}

/// Where an original value is now: a value of the new model, or channels of a carrier.
#[derive(Clone, Copy)]
enum At {
    Value(usize),
    Packed { carrier: usize, start: usize, end: usize },
}

fn rebuild(model: Model, names: Vec<String>, plan: &[Segment]) -> (Model, Vec<String>) {
    let Model { name, input_layout, nodes } = model;
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len() + 32);
    let mut out_names: Vec<String> = Vec::with_capacity(out.capacity());
    // Values not emitted yet are never read (the order is topological).
    let mut at: Vec<At> = vec![At::Value(usize::MAX); nodes.len()];
    // The Slice already taken of (carrier, value), reused until the next carrier.
    let mut sliced: std::collections::HashMap<(usize, usize), usize> = Default::default();
    let push = |out: &mut Vec<Node>, names: &mut Vec<String>, node: Node, tensor: String| {
        out.push(node);
        names.push(tensor);
        out.len() - 1
    };
    let resolve = |v: usize, at: &[At], out: &mut Vec<Node>, out_names: &mut Vec<String>, sliced: &mut std::collections::HashMap<(usize, usize), usize>| -> usize {
        match at[v] {
            At::Value(id) => id,
            At::Packed { carrier, start, end } => *sliced.entry((carrier, v)).or_insert_with(|| {
                let shape = vec![1, end - start, out[carrier].shape[2], out[carrier].shape[3]];
                let node = Node { name: format!("{}.carried", nodes[v].name), op: Op::Slice { start, end }, inputs: vec![carrier], shape };
                out.push(node);
                out_names.push(format!("{}.carried.{carrier}", names[v]));
                out.len() - 1
            }),
        }
    };
    let mut v = 0;
    let mut segments = plan.iter().peekable();
    while v < nodes.len() {
        let (order, carries): (Vec<usize>, &[(usize, Vec<usize>)]) = match segments.peek() {
            Some(s) if s.from + 1 == v => {
                let s = segments.next().expect("peeked");
                v = s.to + 1;
                (s.order.clone(), &s.carries)
            }
            _ => {
                v += 1;
                (vec![v - 1], &[])
            }
        };
        for (p, &o) in order.iter().enumerate() {
            let mut node = nodes[o].clone();
            node.inputs = node.inputs.iter().map(|&i| resolve(i, &at, &mut out, &mut out_names, &mut sliced)).collect();
            let id = push(&mut out, &mut out_names, node, names[o].clone());
            at[o] = At::Value(id);
            if let Some((_, live)) = carries.iter().find(|(q, _)| *q == p) {
                let parts: Vec<usize> = live.iter().map(|&x| resolve(x, &at, &mut out, &mut out_names, &mut sliced)).collect();
                let channels: Vec<usize> = parts.iter().map(|&i| out[i].shape[1]).collect();
                let mut shape = out[id].shape.clone();
                shape[1] = channels.iter().sum();
                let carrier = push(
                    &mut out,
                    &mut out_names,
                    Node { name: format!("{}.carry", nodes[o].name), op: Op::Concat, inputs: parts, shape },
                    format!("{}.carry", names[o]),
                );
                sliced.clear();
                let mut start = 0;
                for (&x, c) in live.iter().zip(channels) {
                    at[x] = At::Packed { carrier, start, end: start + c };
                    start += c;
                }
            }
        }
    }
    (Model { name, input_layout, nodes: out }, out_names)
}
