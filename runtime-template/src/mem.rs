//! A process's memory: as the kernel counts it (resident pages), and as the allocator does
//! (live bytes, when [`Counting`] is the global allocator: the probe's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// This process's peak resident memory (VmHWM of `/proc/self/status`), in MB (10^6 bytes);
/// None where there is no such file.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// This process's resident memory now (VmRSS), in MB.
pub fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kb(&status, "VmRSS:")
}

/// VmHWM of a `/proc/<pid>/status` text, in MB.
pub fn parse_vm_hwm(status: &str) -> Option<f64> {
    parse_kb(status, "VmHWM:")
}

fn parse_kb(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.trim_start_matches(field).trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes live and their peak. The probe installs it
/// (`#[global_allocator]`) to measure what building and running a job needs, exactly and
/// whatever the allocator keeps of freed memory.
pub struct Counting;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

/// Bytes live now; None unless [`Counting`] is the global allocator.
pub fn live_bytes() -> Option<usize> {
    Some(LIVE.load(Relaxed)).filter(|&n| n > 0)
}

/// Start a new peak from the bytes live now; returns them (None as [`live_bytes`]).
pub fn reset_peak() -> Option<usize> {
    let now = live_bytes()?;
    PEAK.store(now, Relaxed);
    Some(now)
}

/// The most bytes live since the last [`reset_peak`].
pub fn peak_bytes() -> Option<usize> {
    live_bytes().map(|_| PEAK.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_read_in_kilobytes() {
        assert_eq!(parse_vm_hwm("Name:\tx\nVmHWM:\t  200000 kB\nVmRSS:\t 1 kB\n"), Some(204.8));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        // this process has touched some memory
        assert!(peak_rss_mb().is_some_and(|m| m > 1.0));
    }
}
