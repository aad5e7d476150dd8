//! Talking to real boards. `ssh` is the only place legionc speaks SSH; profiling and deploying
//! over it build on it.

pub mod ssh;
