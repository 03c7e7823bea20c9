//! Every cell of the seed document's two migration tables, run for real:
//! source `vmm run --as-release A -M M --control ...` (guest `ab` workload)
//! and destination `vmm run --as-release B -M M --incoming ...`, on KVM.
//!
//! The expected outcome of each cell is not written here: it is the
//! prediction of the matrix library (`vmm::release::matrix`, the same code as
//! `vmm compat matrix`) over the embedded release locks. A predicted success
//! must migrate (the destination reports `running`, keeps counting, its
//! memory passes `verify-ab`, `ctl status` names release B, and the guest
//! rebooted there by `ctl system-reset` reports the same hardware as it did
//! at boot on the source); a predicted
//! failure must be refused from the manifest, before any RAM moves
//! ("the destination refused the stream"), naming every differing property
//! with both values, and the source guest must keep running.
//!
//! Guests are small (64 MiB, `ab.mib=1`) so one cell takes a few seconds;
//! cells run two at a time. Every child is a [`Vmm`] guard (killed on drop);
//! every wait is bounded.

use crate::common::{self, Finished, Vmm};
use crate::require_kvm;
use compat_runtime::release::{Difference, Verdict};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(30);
const MIGRATE: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(30);
/// A running `ab` guest prints a `pass=` line every 0.3–0.5 s.
const COUNTING: Duration = Duration::from_secs(10);
/// The guest's workload: a 1 MiB a-b range keeps pre-copy short.
const AB: &str = "workload=ab ab.mib=1";
const MEM: &str = "64M";
/// Cells run concurrently (the development machine has 2 cores).
const PARALLEL: usize = 2;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The matrix library's verdicts for `machine` over `releases`, every
/// ordered pair (source, destination).
fn predictions(machine: &str, releases: &[&str]) -> Vec<vmm::release::matrix::Cell> {
    let catalog = vmm::builder::config::catalog();
    let all = vmm::release::matrix::with_next(catalog).expect("embedded locks");
    let names: Vec<String> = releases.iter().map(|r| r.to_string()).collect();
    let locks = vmm::release::matrix::select(&all, &names).expect("releases");
    vmm::release::matrix::matrix(&locks, &[machine.to_string()], catalog)
}

/// What a refusal must say for one predicted difference.
fn expected_reason(d: &Difference) -> Vec<String> {
    match d {
        Difference::Property {
            device,
            property,
            source,
            destination,
            ..
        } => vec![format!(
            "property `{device}.{property}` differs: the stream has {}, this destination has {}",
            source.as_deref().unwrap_or("(absent)"),
            destination.as_deref().unwrap_or("(absent)")
        )],
        Difference::SectionVersion { section, .. } | Difference::Layout { section, .. } => {
            vec![format!("section `{section}`")]
        }
        Difference::UnknownSection { section } => {
            vec![format!("section `{section}` is unknown")]
        }
        other => panic!("no run-time check for a predicted {other:?}"),
    }
}

/// A unique control socket path, removed on drop.
pub struct Sock(pub PathBuf);

impl Sock {
    fn new(tag: &str) -> Self {
        Sock(common::temp_path(tag, "sock"))
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ctl(sock: &Sock, args: &[&str]) -> Finished {
    let mut all = vec!["ctl".to_string(), "--control".into(), s(&sock.0)];
    all.extend(args.iter().map(|a| a.to_string()));
    common::run(&all, EXIT)
}

/// Stderr as one line: miette's wrapped, framed lines (`  │ ...`) joined
/// (a line broken after a hyphen is joined without a space).
pub fn flat(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        let l = l
            .trim()
            .trim_start_matches(['│', '×', '╰', '─', '▶'])
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

/// The guest's hardware report (every report line but the command line).
pub fn hardware(lines: &[String]) -> Vec<String> {
    const KEYS: [&str; 7] = [
        "pvh:",
        "memmap:",
        "virtio:",
        "virtio-blk",
        "pci:",
        "aer:",
        "report:",
    ];
    lines
        .iter()
        .filter(|l| KEYS.iter().any(|k| l.starts_with(k)))
        .cloned()
        .collect()
}

fn pass_of(line: &str) -> Option<u64> {
    common::parse_fact(line, "ab")?.get("pass")?.parse().ok()
}

fn max_pass(lines: &[String]) -> u64 {
    lines.iter().filter_map(|l| pass_of(l)).max().unwrap_or(0)
}

/// A running `vmm run` with a control socket.
pub struct Running {
    pub vmm: Vmm,
    pub sock: Sock,
    /// The guest's `ab: start=` range (`start`, `pages`), when known.
    pub ab: Option<(String, String)>,
}

impl Running {
    /// `vmm run ARGS --control SOCK` whose guest runs `append`; waits for
    /// the first `ab: pass=` line and the socket.
    pub fn source(args: &[&str], append: &str, ctx: &str) -> Self {
        let sock = Sock::new("cell-src");
        let mut all: Vec<String> = vec!["run".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["-m".into(), MEM.into(), "--append".into(), append.into()]);
        all.extend(["--control".into(), s(&sock.0)]);
        let mut vmm = Vmm::spawn(&all);
        let start = vmm.wait_line(BOOT, |l| l.starts_with("ab: start="));
        let pass = vmm.wait_line(BOOT, |l| l.starts_with("ab: pass="));
        assert!(
            start.is_some() && pass.is_some(),
            "{ctx}: the source never counted: {all:?}\n{}\n{}",
            vmm.seen().join("\n"),
            vmm.stderr()
        );
        let ab = start
            .as_deref()
            .and_then(|l| common::parse_fact(l, "ab"))
            .and_then(|f| Some((f.get("start")?.clone(), f.get("pages")?.clone())));
        assert!(
            common::wait_until(BOOT, || sock.0.exists()),
            "{ctx}: no control socket\n{}",
            vmm.stderr()
        );
        Self { vmm, sock, ab }
    }

    /// `vmm run ARGS --control SOCK --incoming tcp:127.0.0.1:PORT`, once it
    /// listens; returns it and the URI.
    pub fn destination(args: &[&str], ctx: &str) -> (Self, String) {
        let sock = Sock::new("cell-dst");
        let port = common::free_port();
        let uri = format!("tcp:127.0.0.1:{port}");
        let mut all: Vec<String> = vec!["run".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend([
            "--control".into(),
            s(&sock.0),
            "--incoming".into(),
            uri.clone(),
        ]);
        let mut vmm = Vmm::spawn(&all);
        let listening = vmm.wait_stderr(BOOT, "incoming: waiting");
        assert!(
            listening && vmm.is_running(),
            "{ctx}: the destination never listened: {all:?}\n{}",
            vmm.stderr()
        );
        let d = Self {
            vmm,
            sock,
            ab: None,
        };
        (d, uri)
    }

    /// Asserts the guest counts on: a `pass=` line above every one so far.
    pub fn assert_counting(&mut self, ctx: &str) {
        self.vmm.wait_line(Duration::from_millis(100), |_| false);
        let before = max_pass(self.vmm.seen());
        let next = self
            .vmm
            .wait_line(COUNTING, |l| pass_of(l).is_some_and(|p| p > before));
        assert!(
            next.is_some(),
            "{ctx}: the guest stopped counting at pass {before}\n{}\n--- stderr ---\n{}",
            self.vmm.seen().join("\n"),
            self.vmm.stderr()
        );
    }

    /// `ctl status --json`, parsed.
    pub fn status(&self, ctx: &str) -> serde_json::Value {
        let st = ctl(&self.sock, &["status", "--json"]);
        assert!(
            st.status.success(),
            "{ctx}: ctl status\n{}",
            st.transcript()
        );
        let line = st.lines.iter().find(|l| l.starts_with('{'));
        serde_json::from_str(line.map_or("", String::as_str))
            .unwrap_or_else(|e| panic!("{ctx}: status is not JSON ({e})\n{}", st.transcript()))
    }

    /// Stops the guest, checks the `ab` image with `verify-ab`, resumes it.
    pub fn verify_ab(&self, ab: &(String, String), ctx: &str) {
        let stop = ctl(&self.sock, &["stop"]);
        assert!(stop.status.success(), "{ctx}: stop\n{}", stop.transcript());
        let v = ctl(
            &self.sock,
            &["verify-ab", "--start", &ab.0, "--pages", &ab.1],
        );
        assert!(
            v.status.success() && v.lines.iter().any(|l| l.contains("consistent")),
            "{ctx}: verify-ab\n{}",
            v.transcript()
        );
        let cont = ctl(&self.sock, &["cont"]);
        assert!(cont.status.success(), "{ctx}: cont\n{}", cont.transcript());
    }

    /// `ctl quit`, then the process must exit 0.
    pub fn quit(self, ctx: &str) -> Finished {
        let q = ctl(&self.sock, &["quit"]);
        assert!(q.status.success(), "{ctx}: quit\n{}", q.transcript());
        let f = self.vmm.finish(EXIT);
        assert!(f.status.success(), "{ctx}: exit\n{}", f.transcript());
        f
    }
}

/// `vmm migrate --control SOCK URI`.
pub fn migrate(sock: &Sock, uri: &str) -> Finished {
    common::run(["migrate", "--control", &s(&sock.0), uri], MIGRATE)
}

/// One cell: runs it and checks it against the matrix's verdict.
fn run_cell(cell: &vmm::release::matrix::Cell) -> String {
    let (m, a, b) = (&cell.machine, &cell.source, &cell.destination);
    let ctx = format!("vmm-{a} -M {m} -> vmm-{b} -M {m}");
    let t0 = Instant::now();
    let mut src = Running::source(&["--as-release", a, "-M", m], AB, &ctx);
    // After a reset, the destination's guest reports its hardware and halts.
    let dst_args = [
        "--as-release",
        b,
        "-M",
        m,
        "-m",
        MEM,
        "--append",
        "workload=report after=halt",
    ];
    let (mut dst, uri) = Running::destination(&dst_args, &ctx);
    let mig = migrate(&src.sock, &uri);
    match &cell.verdict {
        Verdict::Works => {
            assert!(
                mig.status.success(),
                "{ctx}: predicted to work\n{}",
                mig.transcript()
            );
            let s = src.vmm.finish(EXIT);
            assert!(s.status.success(), "{ctx}: source exit\n{}", s.transcript());
            assert!(
                dst.vmm.wait_stderr(BOOT, "incoming: running"),
                "{ctx}: destination\n{}",
                dst.vmm.stderr()
            );
            dst.assert_counting(&ctx);
            dst.assert_counting(&ctx);
            let ab = src.ab.clone().expect("ab range");
            dst.verify_ab(&ab, &ctx);
            dst.assert_counting(&format!("{ctx} (after verify-ab)"));
            let st = dst.status(&ctx);
            assert_eq!(st["release"], b.as_str(), "{ctx}: {st}");
            assert_eq!(st["machine_type"], m.as_str(), "{ctx}: {st}");
            // Same hardware: the guest rebooted on the destination reports
            // what it reported at boot on the source.
            let r = ctl(&dst.sock, &["system-reset"]);
            assert!(r.status.success(), "{ctx}: reset\n{}", r.transcript());
            let done = dst.vmm.wait_line(BOOT, |l| l == "report: done");
            assert!(
                done.is_some(),
                "{ctx}: no report after the reset\n{}",
                dst.vmm.stderr()
            );
            assert!(
                hardware(&s.lines).iter().any(|l| l.starts_with("aer:")),
                "{ctx}: the source's report\n{}",
                s.transcript()
            );
            assert_eq!(
                hardware(dst.vmm.seen()),
                hardware(&s.lines),
                "{ctx}: the hardware report changed"
            );
            dst.quit(&ctx);
            format!("{ctx}: works ({:.1} s)", t0.elapsed().as_secs_f64())
        }
        Verdict::Fails { differences, .. } => {
            assert!(
                !mig.status.success(),
                "{ctx}: predicted to fail, but migrated\n{}",
                mig.transcript()
            );
            let d = dst.vmm.finish(EXIT);
            let (mig_err, dst_err) = (flat(&mig.stderr), flat(&d.stderr));
            assert!(
                mig_err.contains("the destination refused the stream"),
                "{ctx}: not refused from the manifest (before RAM)\n{}",
                mig.transcript()
            );
            assert!(
                !d.status.success(),
                "{ctx}: destination exit\n{}",
                d.transcript()
            );
            assert!(
                !d.stderr.contains("incoming: running")
                    && d.lines.iter().all(|l| l.trim().is_empty()),
                "{ctx}: the destination started a guest\n{}",
                d.transcript()
            );
            for diff in differences {
                for want in expected_reason(diff) {
                    assert!(
                        mig_err.contains(&want) && dst_err.contains(&want),
                        "{ctx}: the refusal must say `{want}`\n--- migrate ---\n{}\n--- destination ---\n{}",
                        mig.transcript(),
                        d.transcript()
                    );
                }
            }
            src.assert_counting(&format!("{ctx} (after the refusal)"));
            let st = src.status(&ctx);
            assert_eq!(st["state"], "running", "{ctx}: {st}");
            assert_eq!(st["release"], a.as_str(), "{ctx}: {st}");
            src.quit(&ctx);
            format!(
                "{ctx}: refused as predicted ({} difference(s), {:.1} s)",
                differences.len(),
                t0.elapsed().as_secs_f64()
            )
        }
        Verdict::NotPossible { .. } => unreachable!("filtered out by the caller"),
    }
}

/// Runs every cell, [`PARALLEL`] at a time; prints one line per cell.
fn run_cells(cells: &[vmm::release::matrix::Cell]) {
    for chunk in cells.chunks(PARALLEL) {
        let done: Vec<String> = std::thread::scope(|sc| {
            let hs: Vec<_> = chunk
                .iter()
                .map(|c| sc.spawn(move || run_cell(c)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for line in done {
            println!("{line}");
        }
    }
}

/// Seed cases 1–6: `pc-5.1` (and case 1's `pc-5.2`) over 5.1/5.2.
#[test]
fn seed_cases_1_to_6_over_5_1_and_5_2() {
    require_kvm!();
    let p51 = predictions("pc-5.1", &["5.1", "5.2"]);
    let p52 = predictions("pc-5.2", &["5.1", "5.2"]);
    let pick = |p: &[vmm::release::matrix::Cell], a: &str, b: &str| {
        p.iter()
            .find(|c| c.source == a && c.destination == b)
            .cloned()
            .expect("cell")
    };
    // Case 4: 5.1 does not know pc-5.2: refused when started, both ways.
    let c4 = pick(&p52, "5.1", "5.1");
    assert!(
        matches!(&c4.verdict, Verdict::NotPossible { release, machine } if release == "5.1" && machine == "pc-5.2"),
        "{c4:?}"
    );
    for extra in [&[][..], &["--incoming", "tcp:127.0.0.1:1"][..]] {
        let mut args = vec!["run", "--as-release", "5.1", "-M", "pc-5.2", "-m", MEM];
        args.extend(extra);
        let f = common::run(&args, EXIT);
        assert!(
            !f.status.success()
                && f.stderr
                    .contains("release 5.1 does not know machine type `pc-5.2`")
                && f.lines.iter().all(|l| l.trim().is_empty()),
            "case 4 {args:?}\n{}",
            f.transcript()
        );
    }
    let cells = vec![
        pick(&p52, "5.2", "5.2"), // case 1
        pick(&p51, "5.1", "5.1"), // case 2
        pick(&p51, "5.2", "5.2"), // case 3
        pick(&p51, "5.2", "5.1"), // case 5
        pick(&p51, "5.1", "5.2"), // case 6
    ];
    assert!(
        cells.iter().all(|c| c.verdict.works()),
        "the seed says all work: {cells:?}"
    );
    run_cells(&cells);
}

/// The `pc-7.2` lines over 7.2/8.0/8.0.1: all nine ordered pairs.
#[test]
fn pc_7_2_over_7_2_8_0_8_0_1_all_nine_pairs() {
    require_kvm!();
    let cells = predictions("pc-7.2", &["7.2", "8.0", "8.0.1"]);
    assert_eq!(cells.len(), 9);
    let fails: Vec<_> = cells
        .iter()
        .filter(|c| !c.verdict.works())
        .map(|c| format!("{}->{}", c.source, c.destination))
        .collect();
    // The seed: 7.2<->8.0 and 8.0<->8.0.1 fail, everything else works.
    assert_eq!(fails, ["7.2->8.0", "8.0->7.2", "8.0->8.0.1", "8.0.1->8.0"]);
    run_cells(&cells);
}

/// `--as-release R` presents R's lock: the guest reads 8.0's AER mask on
/// `pc-7.2` under 8.0, and 7.2's (none) under 8.0.1 and this build.
#[test]
fn as_release_presents_the_locks_register_values() {
    require_kvm!();
    let aer = |args: &[&str]| {
        let mut all = vec!["run", "-m", MEM, "--append", "workload=report"];
        all.extend(args);
        let f = common::run(&all, EXIT);
        f.assert_success();
        f.fact("aer", "uncor_mask")
            .unwrap_or_else(|| panic!("no aer: line\n{}", f.transcript()))
    };
    let r80 = aer(&["--as-release", "8.0", "-M", "pc-7.2"]);
    let on = aer(&[
        "-M",
        "pc-7.2",
        "--global",
        "pci-device.x-pcie-err-unc-mask=on",
    ]);
    assert_ne!(r80, "0x0");
    assert_eq!(
        r80, on,
        "8.0's pc-7.2 is this build's pc-7.2 with the mask on"
    );
    assert_eq!(aer(&["--as-release", "8.0.1", "-M", "pc-7.2"]), "0x0");
    assert_eq!(aer(&["--as-release", "7.2", "-M", "pc-7.2"]), "0x0");
    assert_eq!(aer(&["-M", "pc-7.2"]), "0x0");
    assert_eq!(aer(&["--as-release", "8.0", "-M", "pc-8.0"]), r80);
    let f = common::run(["run", "--as-release", "9.9", "-M", "pc-7.2"], EXIT);
    assert!(
        !f.status.success() && f.stderr.contains("release `9.9` has no lock"),
        "{}",
        f.transcript()
    );
}

/// Deprecation at run time: every machine type compat/ has is supported
/// today, so `vmm run` prints no deprecation warning; the deprecated
/// `migrate` options of the reference print their replacement and refuse.
#[test]
fn deprecation_lifecycle_at_run_time() {
    require_kvm!();
    let f = common::run(
        [
            "run",
            "-M",
            "pc-5.1",
            "-m",
            MEM,
            "--append",
            "workload=report",
        ],
        EXIT,
    );
    f.assert_success();
    assert!(!f.stderr.contains("deprecated"), "{}", f.transcript());
    for (opt, text) in [
        (
            "--inc",
            "the `inc` option of the migrate command is deprecated since 8.2; use instead: blockdev-mirror over NBD",
        ),
        (
            "--blk",
            "the `blk` option of the migrate command is deprecated since 8.2",
        ),
        ("--compress", "multifd compression"),
    ] {
        let f = common::run(
            [
                "migrate",
                "--control",
                "/nonexistent/vmm.sock",
                "tcp:127.0.0.1:1",
                opt,
            ],
            EXIT,
        );
        let one_line = flat(&f.stderr);
        assert!(
            !f.status.success() && one_line.contains(&format!("{opt} is not supported")),
            "{opt}\n{}",
            f.transcript()
        );
        assert!(
            one_line.contains(text),
            "{opt}: the replacement text\n{one_line}"
        );
    }
}
