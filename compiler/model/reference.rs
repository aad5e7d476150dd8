//! The reference every split is judged against: tract-onnx running the whole ONNX file on one
//! board, with none of legionc's code in the way.

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::prelude::*;

/// tract-onnx's optimised plan of a whole ONNX model for an input of `shape`.
pub fn plan(onnx: &[u8], shape: &[usize]) -> Result<Arc<TypedRunnableModel>> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .context("tract-onnx cannot read the model")?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()
        .context("tract-onnx cannot optimise the model")?;
    model.into_runnable()
}

/// Run the whole model once: its output, or its outputs packed into one as legionc computes
/// them ([`super::onnx::pack`]).
pub fn run(onnx: &[u8], input: &Tensor) -> Result<Tensor> {
    let plan = plan(onnx, input.shape())?;
    let out = plan.run(tvec!(input.clone().into()))?;
    super::onnx::pack(out.into_iter().map(|t| t.into_tensor()).collect())
}

/// A seeded random input in [0, 1), the user's layout.
pub fn random_input(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..1.0)).collect();
    Tensor::from_shape(shape, &data).expect("shape and data agree")
}

/// Max |a − b| and max |b|, for `a` and `b` of the same shape. A NaN or an infinity in
/// either is an error (a max over floats would pass over a NaN), naming which and where.
pub fn compare(a: &Tensor, b: &Tensor) -> Result<(f32, f32)> {
    anyhow::ensure!(a.shape() == b.shape(), "shapes differ: {:?} vs {:?}", a.shape(), b.shape());
    let a = a.to_plain_array_view::<f32>()?;
    let b = b.to_plain_array_view::<f32>()?;
    for (what, t) in [("the output compared", &a), ("the reference output", &b)] {
        if let Some((i, v)) = t.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            anyhow::bail!("{what} holds {v} (at flat index {i} of shape {:?})", t.shape());
        }
    }
    let diff = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = b.iter().map(|x| x.abs()).fold(0f32, f32::max);
    Ok((diff, scale))
}

/// The tolerance of every comparison with tract's single run: max |diff| ≤ 1e-4 × max |output|.
pub const TOLERANCE: f32 = 1e-4;

/// How far an output is from tract's single run.
#[derive(Clone, Copy, Debug)]
pub struct Agreement {
    /// max |got − expected|.
    pub diff: f32,
    /// max |expected|.
    pub scale: f32,
}

impl Agreement {
    /// An error giving both figures if `what` differs from tract's single run by more than
    /// [`TOLERANCE`].
    pub fn ensure_within(&self, what: &str) -> Result<()> {
        let (diff, scale) = (self.diff, self.scale);
        anyhow::ensure!(diff <= TOLERANCE * scale, "{what} differs from tract's single run: max |diff| {diff:e} > {TOLERANCE:e} x max |output| {scale:e}");
        Ok(())
    }
    /// diff ÷ scale.
    pub fn ratio(&self) -> f32 {
        self.diff / self.scale.max(f32::MIN_POSITIVE)
    }
}

/// Compare `got` (what `what` computed) with tract's single run `expected`: an error giving
/// both figures when they differ by more than [`TOLERANCE`].
pub fn check(got: &Tensor, expected: &Tensor, what: &str) -> Result<Agreement> {
    let (diff, scale) = compare(got, expected)?;
    let a = Agreement { diff, scale };
    a.ensure_within(what)?;
    Ok(a)
}
