//! Constant tensors of an ONNX file and the shape arithmetic exporters write around them.
//!
//! Keras (tf2onnx) and PyTorch exports compute shapes at run time: a flatten becomes
//! `Shape → Gather → Cast → Slice → Concat → Reshape`, with int32 or int64 constants. With the
//! input's shape fixed (batch 1), every such value is known when the model is read: the
//! importer evaluates these nodes here, on constants, and the IR never sees them. Every index
//! is checked: a malformed file is an error naming what is wrong, never a panic.

use anyhow::{anyhow, bail, ensure, Result};
use tract_onnx::pb::{tensor_proto::DataType, TensorProto};

/// A constant tensor: floats, or integers and booleans (kept as i64), with its shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Const {
    F32(Vec<usize>, Vec<f32>),
    Int(Vec<usize>, Vec<i64>),
}

/// Most values a folded shape tensor may have (shape arithmetic is small; a bigger one is a
/// model's weights, which are not folded).
const MAX_FOLDED: usize = 1 << 20;

impl Const {
    pub fn shape(&self) -> &[usize] {
        match self {
            Const::F32(s, _) | Const::Int(s, _) => s,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Const::F32(_, d) => d.len(),
            Const::Int(_, d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As floats (float tensors only: weights).
    pub fn f32(&self) -> Result<(&[usize], &[f32])> {
        match self {
            Const::F32(s, d) => Ok((s, d)),
            Const::Int(..) => bail!("expected a float tensor, found an integer one"),
        }
    }

    /// As integers (integer tensors; a float tensor of whole numbers too, as some exporters
    /// cast shapes through float).
    pub fn ints(&self) -> Result<Vec<i64>> {
        match self {
            Const::Int(_, d) => Ok(d.clone()),
            Const::F32(_, d) => d
                .iter()
                .map(|&x| if x.fract() == 0.0 && x.abs() < 9.0e15 { Ok(x as i64) } else { Err(anyhow!("expected integers, found {x}")) })
                .collect(),
        }
    }

    fn as_f32(&self) -> Vec<f32> {
        match self {
            Const::F32(_, d) => d.clone(),
            Const::Int(_, d) => d.iter().map(|&x| x as f32).collect(),
        }
    }

    fn with_shape(&self, shape: Vec<usize>) -> Const {
        match self {
            Const::F32(_, d) => Const::F32(shape, d.clone()),
            Const::Int(_, d) => Const::Int(shape, d.clone()),
        }
    }

    /// The values at `indices` (flat), in that order, with `shape`.
    fn pick(&self, shape: Vec<usize>, indices: &[usize]) -> Const {
        match self {
            Const::F32(_, d) => Const::F32(shape, indices.iter().map(|&i| d[i]).collect()),
            Const::Int(_, d) => Const::Int(shape, indices.iter().map(|&i| d[i]).collect()),
        }
    }
}

/// A tensor of the file: float32, float16 and float64 become floats; int8..int64, uint8..uint64
/// and bool become integers.
pub fn read_tensor(t: &TensorProto) -> Result<Const> {
    ensure!(t.dims.iter().all(|&d| d >= 0), "tensor '{}' has a negative dimension {:?}", t.name, t.dims);
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("tensor '{}' of shape {shape:?} is too large", t.name))?;
    if !t.external_data.is_empty() || t.data_location == Some(1) {
        bail!("tensor '{}' keeps its data in an external file, which is not supported", t.name);
    }
    let raw = |size: usize| -> Result<Option<Vec<&[u8]>>> {
        if t.raw_data.is_empty() {
            return Ok(None);
        }
        ensure!(t.raw_data.len() == size * n, "raw data of '{}' has {} bytes for {n} values of {size} bytes", t.name, t.raw_data.len());
        Ok(Some(t.raw_data.chunks_exact(size).collect()))
    };
    let dt = DataType::try_from(t.data_type).map_err(|_| anyhow!("tensor '{}' has an unknown data type {}", t.name, t.data_type))?;
    let c = match dt {
        DataType::Float => Const::F32(shape, match raw(4)? {
            Some(c) => c.iter().map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            None => t.float_data.clone(),
        }),
        DataType::Double => Const::F32(shape, match raw(8)? {
            Some(c) => c.iter().map(|b| f64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f32).collect(),
            None => t.double_data.iter().map(|&x| x as f32).collect(),
        }),
        DataType::Float16 => Const::F32(shape, match raw(2)? {
            Some(c) => c.iter().map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
            None => t.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect(),
        }),
        DataType::Int64 => Const::Int(shape, match raw(8)? {
            Some(c) => c.iter().map(|b| i64::from_le_bytes(b[..8].try_into().expect("8 bytes"))).collect(),
            None => t.int64_data.clone(),
        }),
        DataType::Uint64 | DataType::Uint32 => {
            let size = if dt == DataType::Uint64 { 8 } else { 4 };
            Const::Int(shape, match raw(size)? {
                Some(c) => c.iter().map(|b| if size == 8 { u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as i64 } else { u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64 }).collect(),
                None => t.uint64_data.iter().map(|&x| x as i64).collect(),
            })
        }
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint16 | DataType::Uint8 | DataType::Bool => {
            let size = match dt {
                DataType::Int32 => 4,
                DataType::Int16 | DataType::Uint16 => 2,
                _ => 1,
            };
            Const::Int(shape, match raw(size)? {
                Some(c) => c
                    .iter()
                    .map(|b| match dt {
                        DataType::Int32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
                        DataType::Int16 => i16::from_le_bytes([b[0], b[1]]) as i64,
                        DataType::Uint16 => u16::from_le_bytes([b[0], b[1]]) as i64,
                        DataType::Int8 => b[0] as i8 as i64,
                        DataType::Bool => (b[0] != 0) as i64,
                        _ => b[0] as i64,
                    })
                    .collect(),
                None => t.int32_data.iter().map(|&x| x as i64).collect(),
            })
        }
        other => bail!("tensor '{}' has data type {other:?}, which is not supported (float, integer and bool tensors are)", t.name),
    };
    ensure!(c.len() == n, "tensor '{}' has {} values for shape {:?}", t.name, c.len(), c.shape());
    Ok(c)
}

/// An IEEE half-precision float's value (tract's `half`).
fn f16_to_f32(h: u16) -> f32 {
    tract_onnx::prelude::f16::from_bits(h).to_f32()
}

/// An axis attribute (negative counts from the end) checked against `rank`.
pub fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(a >= -r && a < r.max(1), "axis {a} is out of range for rank {rank}");
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn checked_volume(shape: &[usize]) -> Result<usize> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_FOLDED);
    n.ok_or_else(|| anyhow!("a folded shape tensor of shape {shape:?} is too large"))
}

/// `Gather` along `axis`.
pub fn gather(data: &Const, indices: &Const, ax: i64) -> Result<Const> {
    let ds = data.shape().to_vec();
    ensure!(!ds.is_empty(), "Gather of a scalar");
    let ax = axis(ax, ds.len())?;
    let idx: Vec<usize> = indices
        .ints()?
        .into_iter()
        .map(|i| {
            let n = ds[ax] as i64;
            ensure!(i >= -n && i < n, "Gather index {i} is out of range for a dimension of {n}");
            Ok(if i < 0 { (i + n) as usize } else { i as usize })
        })
        .collect::<Result<_>>()?;
    let mut shape = ds[..ax].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&ds[ax + 1..]);
    checked_volume(&shape)?;
    let outer: usize = ds[..ax].iter().product();
    let inner: usize = ds[ax + 1..].iter().product();
    let mut picks = Vec::new();
    for o in 0..outer {
        for &i in &idx {
            for k in 0..inner {
                picks.push((o * ds[ax] + i) * inner + k);
            }
        }
    }
    Ok(data.pick(shape, &picks))
}

/// `Concat` along `axis`.
pub fn concat(parts: &[Const], ax: i64) -> Result<Const> {
    let first = parts.first().ok_or_else(|| anyhow!("Concat of nothing"))?;
    let rank = first.shape().len();
    let ax = axis(ax, rank)?;
    for p in parts {
        ensure!(p.shape().len() == rank && p.shape()[..ax] == first.shape()[..ax] && p.shape()[ax + 1..] == first.shape()[ax + 1..], "Concat of shapes {:?} and {:?}", first.shape(), p.shape());
    }
    let mut shape = first.shape().to_vec();
    shape[ax] = parts.iter().map(|p| p.shape()[ax]).sum();
    checked_volume(&shape)?;
    let outer: usize = shape[..ax].iter().product();
    let floats = parts.iter().any(|p| matches!(p, Const::F32(..)));
    let (mut f, mut i) = (Vec::new(), Vec::new());
    for o in 0..outer {
        for p in parts {
            let chunk: usize = p.shape()[ax..].iter().product();
            if floats {
                f.extend_from_slice(&p.as_f32()[o * chunk..(o + 1) * chunk]);
            } else if let Const::Int(_, d) = p {
                i.extend_from_slice(&d[o * chunk..(o + 1) * chunk]);
            }
        }
    }
    Ok(if floats { Const::F32(shape, f) } else { Const::Int(shape, i) })
}

/// `Slice` with ONNX's clamping of starts and ends, any axes and steps.
pub fn slice(data: &Const, starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>) -> Result<Const> {
    let ds = data.shape().to_vec();
    ensure!(starts.len() == ends.len(), "Slice has {} starts and {} ends", starts.len(), ends.len());
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| axis(x, ds.len())).collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    ensure!(axes.len() == starts.len(), "Slice has {} axes for {} starts", axes.len(), starts.len());
    let mut ranges: Vec<(i64, i64, i64)> = ds.iter().map(|&d| (0, d as i64, 1)).collect();
    for (k, &ax) in axes.iter().enumerate() {
        ensure!(ax < ds.len(), "Slice axis {ax} for rank {}", ds.len());
        let step = steps.map_or(1, |s| s.get(k).copied().unwrap_or(1));
        ensure!(step != 0, "Slice step 0");
        let d = ds[ax] as i64;
        let clamp = |x: i64, lo: i64, hi: i64| x.clamp(lo, hi);
        let norm = |x: i64| if x < 0 { x.saturating_add(d) } else { x };
        let (s, e) = if step > 0 { (clamp(norm(starts[k]), 0, d), clamp(norm(ends[k]), 0, d)) } else { (clamp(norm(starts[k]), -1, d - 1), clamp(norm(ends[k]), -1, d - 1)) };
        ranges[ax] = (s, e, step);
    }
    let picks_per_axis: Vec<Vec<usize>> = ranges
        .iter()
        .map(|&(s, e, st)| {
            let mut v = Vec::new();
            let mut x = s;
            while (st > 0 && x < e) || (st < 0 && x > e) {
                v.push(x as usize);
                x += st;
            }
            v
        })
        .collect();
    let shape: Vec<usize> = picks_per_axis.iter().map(Vec::len).collect();
    let n = checked_volume(&shape)?;
    let st = strides(&ds);
    let mut picks = Vec::with_capacity(n);
    for flat in 0..n {
        let mut rest = flat;
        let mut src = 0;
        for ax in (0..shape.len()).rev() {
            let i = rest % shape[ax];
            rest /= shape[ax];
            src += picks_per_axis[ax][i] * st[ax];
        }
        picks.push(src);
    }
    Ok(data.pick(shape, &picks))
}

/// `Unsqueeze` at `axes` (of the output).
pub fn unsqueeze(data: &Const, axes: &[i64]) -> Result<Const> {
    let rank = data.shape().len() + axes.len();
    let mut at: Vec<usize> = axes.iter().map(|&a| axis(a, rank)).collect::<Result<_>>()?;
    at.sort_unstable();
    ensure!(at.windows(2).all(|w| w[0] != w[1]), "Unsqueeze axes {axes:?} repeat");
    let mut shape = data.shape().to_vec();
    for a in at {
        shape.insert(a, 1);
    }
    Ok(data.with_shape(shape))
}

/// `Squeeze` of `axes`, or of every 1.
pub fn squeeze(data: &Const, axes: Option<&[i64]>) -> Result<Const> {
    let s = data.shape();
    let drop: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| axis(x, s.len())).collect::<Result<_>>()?,
        None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
    };
    for &a in &drop {
        ensure!(s[a] == 1, "Squeeze of axis {a} of size {}", s[a]);
    }
    Ok(data.with_shape((0..s.len()).filter(|i| !drop.contains(i)).map(|i| s[i]).collect()))
}

/// The shape a `Reshape` to `target` gives a tensor of shape `from` (0 copies the dimension
/// unless `allow_zero`, one -1 takes the rest).
pub fn reshaped(from: &[usize], target: &[i64], allow_zero: bool) -> Result<Vec<usize>> {
    let total: usize = from.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                ensure!(infer.is_none(), "Reshape target {target:?} has two -1");
                infer = Some(i);
                out.push(1);
            }
            0 if !allow_zero => out.push(*from.get(i).ok_or_else(|| anyhow!("Reshape target {target:?} copies dimension {i} of {from:?}"))?),
            t if t >= 0 => out.push(t as usize),
            t => bail!("Reshape target {target:?} has {t}"),
        }
    }
    let known = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("Reshape target {target:?} is too large"))?;
    if let Some(i) = infer {
        ensure!(known > 0 && total.is_multiple_of(known), "Reshape of {from:?} to {target:?}: {total} values do not divide");
        out[i] = total / known;
    }
    ensure!(out.iter().product::<usize>() == total, "Reshape of {from:?} ({total} values) to {target:?}");
    Ok(out)
}

/// `Reshape` of a constant.
pub fn reshape(data: &Const, target: &[i64], allow_zero: bool) -> Result<Const> {
    Ok(data.with_shape(reshaped(data.shape(), target, allow_zero)?))
}

/// `ConstantOfShape`: `shape` filled with `value` (a one-value tensor; default float 0).
pub fn constant_of_shape(shape: &Const, value: Option<&Const>) -> Result<Const> {
    let dims: Vec<usize> = shape.ints()?.into_iter().map(|d| usize::try_from(d).map_err(|_| anyhow!("ConstantOfShape of a negative dimension {d}"))).collect::<Result<_>>()?;
    let n = checked_volume(&dims)?;
    Ok(match value {
        None => Const::F32(dims, vec![0.0; n]),
        Some(v) => {
            ensure!(v.len() == 1, "ConstantOfShape value has {} values", v.len());
            match v {
                Const::F32(_, d) => Const::F32(dims, vec![d[0]; n]),
                Const::Int(_, d) => Const::Int(dims, vec![d[0]; n]),
            }
        }
    })
}

/// `Range(start, limit, delta)`.
pub fn range(start: &Const, limit: &Const, delta: &Const) -> Result<Const> {
    ensure!(start.len() == 1 && limit.len() == 1 && delta.len() == 1, "Range takes scalars");
    if let (Const::Int(_, s), Const::Int(_, l), Const::Int(_, d)) = (start, limit, delta) {
        ensure!(d[0] != 0, "Range with delta 0");
        let n = ((l[0] - s[0]) as f64 / d[0] as f64).ceil().max(0.0) as usize;
        checked_volume(&[n])?;
        return Ok(Const::Int(vec![n], (0..n as i64).map(|i| s[0] + i * d[0]).collect()));
    }
    let (s, l, d) = (start.as_f32()[0], limit.as_f32()[0], delta.as_f32()[0]);
    ensure!(d != 0.0 && d.is_finite(), "Range with delta {d}");
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    checked_volume(&[n])?;
    Ok(Const::F32(vec![n], (0..n).map(|i| s + i as f32 * d).collect()))
}

/// Elementwise `op` (Add, Sub, Mul, Div) of two constants, with NumPy broadcasting.
pub fn binary(op: &str, a: &Const, b: &Const) -> Result<Const> {
    let (sa, sb) = (a.shape(), b.shape());
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
    let (pa, pb) = (pad(sa), pad(sb));
    let shape: Vec<usize> = pa
        .iter()
        .zip(&pb)
        .map(|(&x, &y)| if x == y || y == 1 { Ok(x) } else if x == 1 { Ok(y) } else { Err(anyhow!("{op} of shapes {sa:?} and {sb:?} does not broadcast")) })
        .collect::<Result<_>>()?;
    let n = checked_volume(&shape)?;
    let (ta, tb) = (strides(&pa), strides(&pb));
    let index = |flat: usize, p: &[usize], t: &[usize]| -> usize {
        let mut rest = flat;
        let mut src = 0;
        for ax in (0..rank).rev() {
            let i = rest % shape[ax];
            rest /= shape[ax];
            if p[ax] != 1 {
                src += i * t[ax];
            }
        }
        src
    };
    Ok(match (a, b) {
        (Const::Int(_, x), Const::Int(_, y)) => {
            let f = |p: i64, q: i64| -> Result<i64> {
                match op {
                    "Add" => Ok(p.wrapping_add(q)),
                    "Sub" => Ok(p.wrapping_sub(q)),
                    "Mul" => Ok(p.wrapping_mul(q)),
                    _ => {
                        ensure!(q != 0, "integer division by zero");
                        Ok(p.wrapping_div(q))
                    }
                }
            };
            Const::Int(shape.clone(), (0..n).map(|i| f(x[index(i, &pa, &ta)], y[index(i, &pb, &tb)])).collect::<Result<_>>()?)
        }
        _ => {
            let (x, y) = (a.as_f32(), b.as_f32());
            let f = |p: f32, q: f32| match op {
                "Add" => p + q,
                "Sub" => p - q,
                "Mul" => p * q,
                _ => p / q,
            };
            Const::F32(shape.clone(), (0..n).map(|i| f(x[index(i, &pa, &ta)], y[index(i, &pb, &tb)])).collect())
        }
    })
}

/// `Cast` to ONNX data type `to`.
pub fn cast(data: &Const, to: i64) -> Result<Const> {
    let dt = i32::try_from(to).ok().and_then(|t| DataType::try_from(t).ok()).ok_or_else(|| anyhow!("Cast to unknown data type {to}"))?;
    Ok(match dt {
        DataType::Float | DataType::Double | DataType::Float16 => Const::F32(data.shape().to_vec(), data.as_f32()),
        DataType::Bool => Const::Int(data.shape().to_vec(), data.as_f32().iter().map(|&x| (x != 0.0) as i64).collect()),
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => match data {
            Const::Int(s, d) => Const::Int(s.clone(), d.clone()),
            Const::F32(s, d) => Const::Int(s.clone(), d.iter().map(|&x| x.trunc() as i64).collect()),
        },
        other => bail!("Cast to {other:?} is not supported"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(shape: &[usize], d: &[i64]) -> Const {
        Const::Int(shape.to_vec(), d.to_vec())
    }

    #[test]
    fn the_flatten_of_an_export_folds() {
        // Shape of [1, 7, 7, 512] → Gather 0 → Unsqueeze → Concat with [-1] → Reshape target.
        let shape = ints(&[4], &[1, 7, 7, 512]);
        let batch = gather(&shape, &ints(&[], &[0]), 0).unwrap();
        assert_eq!(batch, ints(&[], &[1]));
        let b = unsqueeze(&batch, &[0]).unwrap();
        let target = concat(&[b, ints(&[1], &[-1])], 0).unwrap();
        assert_eq!(target, ints(&[2], &[1, -1]));
        assert_eq!(reshaped(&[1, 7, 7, 512], &target.ints().unwrap(), false).unwrap(), vec![1, 25088]);
        // Slice [1:] and a product: the PyTorch pattern.
        let rest = slice(&shape, &[1], &[i64::MAX], None, None).unwrap();
        assert_eq!(rest, ints(&[3], &[7, 7, 512]));
        assert_eq!(slice(&shape, &[-1], &[-5], Some(&[0]), Some(&[-1])).unwrap(), ints(&[4], &[512, 7, 7, 1]));
        assert_eq!(binary("Mul", &ints(&[], &[7]), &ints(&[2], &[7, 512])).unwrap(), ints(&[2], &[49, 3584]));
        assert_eq!(cast(&Const::F32(vec![2], vec![1.0, 2.9]), DataType::Int32 as i64).unwrap(), ints(&[2], &[1, 2]));
        assert_eq!(range(&ints(&[], &[0]), &ints(&[], &[5]), &ints(&[], &[2])).unwrap(), ints(&[3], &[0, 2, 4]));
        assert_eq!(constant_of_shape(&ints(&[2], &[2, 1]), Some(&ints(&[1], &[3]))).unwrap(), ints(&[2, 1], &[3, 3]));
    }

    #[test]
    fn malformed_operands_are_errors() {
        let shape = ints(&[4], &[1, 7, 7, 512]);
        assert!(gather(&shape, &ints(&[], &[4]), 0).is_err());
        assert!(gather(&shape, &ints(&[], &[0]), 3).is_err());
        assert!(concat(&[shape.clone(), ints(&[1, 1], &[1])], 0).is_err());
        assert!(reshaped(&[1, 10], &[-1, -1], false).is_err());
        assert!(reshaped(&[1, 10], &[3, -1], false).is_err());
        assert!(binary("Div", &ints(&[], &[1]), &ints(&[], &[0])).is_err());
        assert!(constant_of_shape(&ints(&[2], &[1 << 40, 1 << 40]), None).is_err());
        assert!(slice(&shape, &[0], &[1], None, Some(&[0])).is_err());
        assert!(squeeze(&shape, Some(&[1])).is_err());
    }

    #[test]
    fn half_floats_read() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0000), 0.0);
    }
}
