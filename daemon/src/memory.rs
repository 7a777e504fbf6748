//! The daemon's own memory, as the OS counts it: for `daemon.status` and the benchmarks.

/// Peak resident set size (`VmHWM`), on Linux.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current resident set size (`VmRSS`), on Linux.
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Starts the peak-RSS count afresh (Linux: `clear_refs` 5), so the peak is this
/// run's; elsewhere the peak is the process's.
pub(crate) fn reset_peak_rss() {
    if let Err(err) = std::fs::write("/proc/self/clear_refs", "5") {
        tracing::debug!(%err, "cannot reset the peak RSS; the benchmark reports the process's");
    }
}
