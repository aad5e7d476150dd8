//! Pinning a real board's runtime and probe to the CPUs its target names (`cores` in
//! `targets/*.yaml`: the big cores of a big.LITTLE board), so that tract's threads never land on
//! the little ones. Threads started after the pin inherit it.

use anyhow::{bail, Context, Result};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Pin the calling thread (and every thread it starts from now on) to `cores`. Nothing to do
/// for an empty list (emulated boards). Fails, naming the CPUs this process may use, when one
/// of `cores` is not among them.
pub fn pin_to(cores: &[usize]) -> Result<()> {
    if cores.is_empty() {
        return Ok(());
    }
    let here = Pid::from_raw(0);
    let allowed = sched_getaffinity(here).context("reading this process's CPUs")?;
    let usable: Vec<usize> = (0..CpuSet::count()).filter(|&c| allowed.is_set(c).unwrap_or(false)).collect();
    if let Some(c) = cores.iter().find(|c| !usable.contains(c)) {
        bail!("the target pins the runtime to CPUs {cores:?}, but CPU {c} is not one this process may use ({usable:?}): fix `cores` in the board's target file");
    }
    let mut set = CpuSet::new();
    for &c in cores {
        set.set(c).with_context(|| format!("CPU {c}"))?;
    }
    sched_setaffinity(here, &set).with_context(|| format!("pinning to CPUs {cores:?}"))
}

/// The CPUs the calling thread may run on.
pub fn current() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_the_thread_and_refuses_cpus_it_cannot_have() {
        let cpus = current();
        assert!(!cpus.is_empty());
        std::thread::spawn(move || {
            pin_to(&cpus[..1]).unwrap();
            assert_eq!(current(), cpus[..1].to_vec());
            // Threads started after the pin inherit it.
            let inner = std::thread::spawn(current).join().unwrap();
            assert_eq!(inner, cpus[..1].to_vec());
            let e = pin_to(&[CpuSet::count() - 1]).unwrap_err().to_string();
            assert!(e.contains("is not one this process may use"), "{e}");
            pin_to(&[]).unwrap();
        })
        .join()
        .unwrap();
    }
}
