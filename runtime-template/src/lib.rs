//! legion-runtime: what runs on a board. The band executor on tract, the plan, and the layer IR
//! they share with the compiler. legionc links this crate to run plans in-process; generated
//! board crates carry a copy of its sources.

pub mod args;
pub mod board;
pub mod exec;
pub mod halo;
pub mod ir;
pub mod link;
pub mod mem;
pub mod mesh;
pub mod modelfile;
pub mod pin;
pub mod plan;
pub mod probe;
pub mod stats;
pub mod wire;

pub use tract_core;

/// The unit tests count allocations, as the probe does (its memory measurements are tested).
#[cfg(test)]
#[global_allocator]
static ALLOC: mem::Counting = mem::Counting;
