//! The guest's serial lines, parsed with the guest crate's parsers
//! (`vmm_guest::parse_line`, `parse_ab_start`, `parse_ab_pass`, ...): the
//! `ab` workload's range and pass counts, bounded waits for them, and the
//! hardware report.

use super::process::Vmm;
use super::{BOOT, COUNTING};
use std::time::Duration;
use vmm_guest::AbRange;

/// Every `key:` line's field `field`, in order.
pub fn facts(lines: &[String], key: &str, field: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| vmm_guest::parse_line(l))
        .filter(|l| l.key == key)
        .filter_map(|l| l.get(field).map(str::to_string))
        .collect()
}

/// The highest `ab: pass=` count in `lines` (0 without one).
pub fn max_pass(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| vmm_guest::parse_ab_pass(l))
        .max()
        .unwrap_or(0)
}

/// The guest's hardware report: the lines from its first `boot: ok` up to
/// `report: done`, minus the command line (the workload differs).
pub fn hardware_report(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .skip_while(|l| !l.starts_with("boot: ok"))
        .take_while(|l| !l.starts_with("report: done"))
        .filter(|l| !l.starts_with("cmdline:"))
        .cloned()
        .collect()
}

impl Vmm {
    /// The `ab` workload's range (its `ab: start=` line, printed already or
    /// within [`BOOT`]).
    pub fn ab_range(&mut self, ctx: &str) -> AbRange {
        if let Some(r) = self
            .seen()
            .iter()
            .find_map(|l| vmm_guest::parse_ab_start(l))
        {
            return r;
        }
        let l = self
            .wait_line(BOOT, |l| vmm_guest::parse_ab_start(l).is_some())
            .unwrap_or_else(|| panic!("{ctx}: no `ab: start=` line\n{}", self.transcript()));
        vmm_guest::parse_ab_start(&l).expect("ab: start= line")
    }

    /// The first `ab: pass=N` with N above `after` (printed already or
    /// within `timeout`): N.
    pub fn wait_pass_above(&mut self, after: u64, timeout: Duration, ctx: &str) -> u64 {
        let above = |l: &str| vmm_guest::parse_ab_pass(l).filter(|&p| p > after);
        if let Some(n) = self.seen().iter().find_map(|l| above(l)) {
            return n;
        }
        let l = self
            .wait_line(timeout, |l| above(l).is_some())
            .unwrap_or_else(|| {
                panic!(
                    "{ctx}: no `ab: pass=` above {after} within {timeout:?}\n{}",
                    self.transcript()
                )
            });
        above(&l).expect("ab: pass= line")
    }

    /// Asserts the guest is counting now: drains what is already printed,
    /// then wants a pass above every one so far within [`COUNTING`].
    pub fn assert_counting(&mut self, ctx: &str) -> u64 {
        self.wait_line(Duration::from_millis(150), |_| false);
        let before = max_pass(self.seen());
        self.wait_pass_above(
            before,
            COUNTING,
            &format!("{ctx}: the guest stopped counting"),
        )
    }
}
