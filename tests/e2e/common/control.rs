//! `vmm ctl` and `vmm migrate` over a control (QMP) socket (the real CLI,
//! every call bounded), their JSON answers and diagnostics, and
//! [`Running`]: a `vmm run --control SOCK` guest driven through them or
//! through a QMP session of its own.

use super::paths::TempPath;
use super::process::{Finished, Vmm, run};
use super::serial::max_pass;
use super::{BOOT, EXIT, MIGRATE, wait_until};
use std::path::Path;
use vmm_guest::AbRange;

/// `vmm ctl --control SOCK ARGS...` (bounded by [`EXIT`]).
pub fn ctl(sock: &Path, args: &[&str]) -> Finished {
    let sock = sock.display().to_string();
    let mut all = vec!["ctl", "--control", &sock];
    all.extend_from_slice(args);
    run(&all, EXIT)
}

/// `vmm migrate --control SOCK URI EXTRA...` (bounded by [`MIGRATE`]).
pub fn migrate(sock: &Path, uri: &str, extra: &[&str]) -> Finished {
    let sock = sock.display().to_string();
    let mut all = vec!["migrate", "--control", &sock, uri];
    all.extend_from_slice(extra);
    run(&all, MIGRATE)
}

/// The JSON object a `--json` command printed last.
pub fn json_of(f: &Finished, ctx: &str) -> serde_json::Value {
    let last = f.lines.last().map_or("", String::as_str);
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{ctx}: not JSON ({e})\n{}", f.transcript()))
}

/// A diagnostic as one line: miette's wrapped, framed lines (`  │ ...`)
/// joined (a line broken after a hyphen is joined without a space).
pub fn flat(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        let l = l
            .trim()
            .trim_start_matches(['│', '×', '╰', '├', '─', '▶'])
            .trim();
        if l.is_empty() {
            continue;
        }
        if !out.is_empty() && !out.ends_with('-') {
            out.push(' ');
        }
        out.push_str(l);
    }
    out
}

/// A running `vmm run ... --control SOCK`.
pub struct Running {
    pub vmm: Vmm,
    pub sock: TempPath,
    /// The guest's `ab` range, for a guest that runs (or ran, before it
    /// was migrated here) the `ab` workload.
    pub ab: Option<AbRange>,
}

const WAITING: &str = "incoming: waiting on ";

impl Running {
    /// `vmm run ARGS --control SOCK`, once the control socket exists.
    pub fn start(args: &[&str], ctx: &str) -> Self {
        let sock = TempPath::new("ctl", "sock");
        let mut vmm = spawn_run(args, &sock, &[]);
        let up = wait_until(BOOT, || sock.path().exists() || !vmm.is_running());
        assert!(
            up && sock.path().exists(),
            "{ctx}: no control socket: {args:?}\n{}",
            vmm.transcript()
        );
        Self {
            vmm,
            sock,
            ab: None,
        }
    }

    /// [`Running::start`] for a guest running the `ab` workload, once it
    /// printed its range and its first pass.
    pub fn ab_source(args: &[&str], ctx: &str) -> Self {
        let mut r = Self::start(args, ctx);
        r.ab = Some(r.vmm.ab_range(ctx));
        r.vmm
            .wait_pass_above(0, BOOT, &format!("{ctx}: the source"));
        r
    }

    /// `vmm run ARGS --control SOCK --incoming LISTEN`, once it listens
    /// (it says so once its listener is bound): it and the URI it announced
    /// (`tcp:HOST:0` resolved to its port).
    pub fn incoming(listen: &str, args: &[&str], ctx: &str) -> (Self, String) {
        let sock = TempPath::new("ctl", "sock");
        let mut vmm = spawn_run(args, &sock, &["--incoming", listen]);
        let line = vmm.wait_stderr_line(BOOT, |l| l.starts_with(WAITING));
        let uri = line.map(|l| l[WAITING.len()..].trim().to_string());
        let uri = uri.filter(|_| vmm.is_running()).unwrap_or_else(|| {
            panic!(
                "{ctx}: the destination never listened: {args:?} --incoming {listen}\n{}",
                vmm.transcript()
            )
        });
        let d = Self {
            vmm,
            sock,
            ab: None,
        };
        (d, uri)
    }

    /// `vmm run ARGS --control SOCK --incoming defer`, once it waits for
    /// QMP's `migrate-incoming` (it says so).
    pub fn deferred(args: &[&str], ctx: &str) -> Self {
        let sock = TempPath::new("ctl", "sock");
        let mut vmm = spawn_run(args, &sock, &["--incoming", "defer"]);
        let said = vmm.wait_stderr(BOOT, "incoming: deferred, waiting for migrate-incoming");
        assert!(
            said && sock.path().exists(),
            "{ctx}: the deferred destination never waited: {args:?}\n{}",
            vmm.transcript()
        );
        Self {
            vmm,
            sock,
            ab: None,
        }
    }

    /// A QMP session on this process's socket (bounded waits).
    pub fn qmp(&self) -> qmp::Client {
        qmp::Client::connect(self.sock.path(), EXIT)
            .unwrap_or_else(|e| panic!("QMP on {}: {e}", self.sock.arg()))
    }

    /// Whether a QMP session can be opened and answers `query-status`.
    pub fn qmp_ok(&self) -> bool {
        qmp::Client::connect(self.sock.path(), EXIT)
            .and_then(|mut c| c.execute("query-status", serde_json::json!({})))
            .is_ok()
    }

    /// [`Running::incoming`] on a free TCP port of 127.0.0.1.
    pub fn destination(args: &[&str], ctx: &str) -> (Self, String) {
        Self::incoming("tcp:127.0.0.1:0", args, ctx)
    }

    /// `vmm ctl` on this process's socket.
    pub fn ctl(&self, args: &[&str]) -> Finished {
        ctl(self.sock.path(), args)
    }

    /// `vmm ctl`, which must succeed.
    pub fn ctl_ok(&self, args: &[&str], ctx: &str) -> Finished {
        let f = self.ctl(args);
        assert!(
            f.status.success(),
            "{ctx}: ctl {args:?}\n{}",
            f.transcript()
        );
        f
    }

    /// `ctl status --json`, parsed.
    pub fn status(&self, ctx: &str) -> serde_json::Value {
        json_of(&self.ctl_ok(&["status", "--json"], ctx), ctx)
    }

    /// `vmm migrate` of this guest to `uri`.
    pub fn migrate(&self, uri: &str) -> Finished {
        migrate(self.sock.path(), uri, &[])
    }

    /// `vmm migrate ... --json`, which must succeed: its summary.
    pub fn migrate_summary(&self, uri: &str, ctx: &str) -> serde_json::Value {
        let m = migrate(self.sock.path(), uri, &["--json"]);
        assert!(
            m.status.success(),
            "{ctx}: vmm migrate {uri}\n{}",
            m.transcript()
        );
        json_of(&m, ctx)["summary"].clone()
    }

    /// Waits for the destination to report `incoming: running`.
    pub fn wait_running(&mut self, ctx: &str) {
        assert!(
            self.vmm.wait_stderr(MIGRATE, "incoming: running"),
            "{ctx}: the destination never ran\n{}",
            self.vmm.transcript()
        );
    }

    /// `ctl system-reset`, then waits for the rebooted guest's `report: done`.
    pub fn reset_and_report(&mut self, ctx: &str) {
        self.ctl_ok(&["system-reset"], ctx);
        let done = self.vmm.wait_line(BOOT, |l| l == "report: done");
        assert!(
            done.is_some(),
            "{ctx}: no report after the reset\n{}",
            self.vmm.transcript()
        );
    }

    /// Asserts the guest counts on (a pass above every one so far) and the
    /// control socket answers.
    pub fn assert_counting(&mut self, ctx: &str) -> u64 {
        let n = self.vmm.assert_counting(ctx);
        self.ctl_ok(&["status"], ctx);
        n
    }

    /// After a migration of this guest to `dst` succeeded: this process
    /// exits 0 by itself, `dst` reports running and, for an `ab` guest,
    /// counts on above this process's last pass (and knows the range).
    /// This process's output.
    pub fn handed_over(self, dst: &mut Running, ctx: &str) -> Finished {
        let f = self.vmm.finish(EXIT);
        assert!(
            f.status.success(),
            "{ctx}: the source after the hand-over\n{}",
            f.transcript()
        );
        dst.wait_running(ctx);
        if self.ab.is_some() {
            let last = max_pass(&f.lines);
            dst.vmm
                .wait_pass_above(last, BOOT, &format!("{ctx}: the destination"));
            dst.ab = self.ab;
        }
        f
    }

    /// Stops the guest and checks the `ab` rule over `range`
    /// (`ctl verify-ab --json`); the guest stays stopped.
    pub fn verify_ab(&self, range: AbRange, ctx: &str) -> serde_json::Value {
        self.ctl_ok(&["stop"], ctx);
        let v = self.ctl_ok(
            &[
                "verify-ab",
                "--start",
                &format!("{:#x}", range.start),
                "--pages",
                &range.pages.to_string(),
                "--json",
            ],
            ctx,
        );
        let v = json_of(&v, ctx);
        assert_eq!(v["consistent"], true, "{ctx}: verify-ab {v}");
        assert_eq!(v["pages"], range.pages, "{ctx}: verify-ab {v}");
        v
    }

    /// `ctl quit`, then the process must exit 0.
    pub fn quit(self, ctx: &str) -> Finished {
        self.ctl_ok(&["quit"], ctx);
        let f = self.vmm.finish(EXIT);
        assert!(f.status.success(), "{ctx}: exit\n{}", f.transcript());
        f
    }
}

fn spawn_run(args: &[&str], sock: &TempPath, extra: &[&str]) -> Vmm {
    let sock = sock.arg();
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend(["--control", &sock]);
    all.extend_from_slice(extra);
    Vmm::spawn(&all)
}
