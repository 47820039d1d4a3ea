//! Who holds a connection's lock, in words another process can show.

use tributary_core::Timestamp;

/// This process, for the message a second process gets when it finds the
/// connection's lock taken: "pid 4242 on host-a since 2026-12-07 10:03:01 UTC".
pub(crate) fn describe(now: Timestamp) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".to_owned());
    format!(
        "pid {} on {host} since {}",
        std::process::id(),
        now.format("%Y-%m-%d %H:%M:%S UTC")
    )
}
