//! A process's memory as the kernel counts it.

/// This process's peak resident memory (VmHWM of `/proc/self/status`), in MB (10^6 bytes);
/// None where there is no such file.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// VmHWM of a `/proc/<pid>/status` text, in MB.
pub fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024.0 / 1e6)
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
