//! CPU time from `/proc` (Linux), for the benchmarks.

/// `(comm, utime + stime in clock ticks)` from a `/proc/PID/stat` or
/// `/proc/PID/task/TID/stat` text.
pub fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    let u: u64 = rest.get(11)?.parse().ok()?;
    let s: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, u + s))
}

/// Clock ticks per second of the times in `/proc/.../stat`: `AT_CLKTCK`
/// from this process's auxiliary vector (100 if it cannot be read).
pub fn ticks_per_s() -> f64 {
    const AT_CLKTCK: u64 = 17;
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(16)
        .filter_map(|p| {
            let key = u64::from_ne_bytes(p.get(..8)?.try_into().ok()?);
            let value = u64::from_ne_bytes(p.get(8..)?.try_into().ok()?);
            Some((key, value))
        })
        .find(|&(key, value)| key == AT_CLKTCK && value > 0)
        .map_or(100.0, |(_, value)| value as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_and_clock_ticks() {
        assert_eq!(parse_stat("1 (a) b) S 1 2"), None);
        let own = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        assert!(parse_stat(&own).is_some(), "{own}");
        assert!(ticks_per_s() >= 1.0);
    }
}
