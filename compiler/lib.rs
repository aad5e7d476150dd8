//! legionc, the Legion plan compiler: splits the inference of one CNN across a fleet of
//! heterogeneous edge boards. See ARCHITECTURE.md for the code map.

pub mod bench;
pub mod cost;
pub mod cargo_build;
pub mod codegen;
pub mod deploy;
pub mod embedded;
pub mod figures;
pub mod fleet;
pub mod model;
pub mod profile;
pub mod run;

pub use legion_runtime as runtime;
pub mod solve;
pub mod strategy;
pub mod suite;
