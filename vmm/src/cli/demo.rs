//! `vmm demo`: live migration of the embedded guest's `ab` workload between
//! two `vmm run` processes on this machine, then the a-b consistency check.
//!
//! Every wait is bounded; both children are killed when the demo ends, also
//! on an error (a guard kills them on drop). Ctrl-C on a terminal reaches the
//! whole foreground process group, so the children stop with the demo.

use crate::cli::ctl::{progress_text, summary_text, verify_text};
use crate::cli::session;
use crate::control::ControlError;
use crate::control::types::{DEFAULT_DOWNTIME_LIMIT_MS, MigrateRequest};
use miette::Diagnostic;
use migration::precopy::Progress;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};
use vmm_guest::parse_ab_pass;

/// Arguments of `vmm demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Guest RAM (`256M`, `1G`).
    #[arg(long, default_value = "256M")]
    pub mem: String,
    /// Migration transport.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Upper bound on the guest's downtime, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_DOWNTIME_LIMIT_MS)]
    pub downtime_limit: u64,
    #[command(flatten)]
    pub transfer: super::ctl::TransferArgs,
}

/// How the demo's two processes are connected.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Loopback TCP (`tcp:127.0.0.1:PORT`, a free port).
    Tcp,
    /// A unix socket.
    Unix,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum DemoError {
    #[error("cannot start {what}: {source}")]
    #[diagnostic(code(vmm::cli::demo::spawn))]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{what}: no `{line}` within {secs} s\n--- its output ---\n{output}")]
    #[diagnostic(code(vmm::cli::demo::timeout))]
    Timeout {
        what: &'static str,
        line: String,
        secs: u64,
        output: String,
    },
    #[error("{what} exited unexpectedly ({status})\n--- its output ---\n{output}")]
    #[diagnostic(code(vmm::cli::demo::exited))]
    Exited {
        what: &'static str,
        status: String,
        output: String,
    },
    #[error("{0}")]
    #[diagnostic(code(vmm::cli::demo::control))]
    Control(#[from] ControlError),
    #[error("the guest's memory image is INCONSISTENT: {0}")]
    #[diagnostic(code(vmm::cli::demo::inconsistent))]
    Inconsistent(String),
    #[error("temporary directory {path}: {source}")]
    #[diagnostic(code(vmm::cli::demo::tmp))]
    Tmp {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A `vmm run` child: serial lines (stdout) and stderr lines on channels;
/// killed on drop.
struct ChildVmm {
    what: &'static str,
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    log: Vec<String>,
}

fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

impl ChildVmm {
    fn spawn(what: &'static str, args: &[String]) -> Result<Self, DemoError> {
        let exe = std::env::current_exe().map_err(|source| DemoError::Spawn { what, source })?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DemoError::Spawn { what, source })?;
        let out = child.stdout.take().map(lines_of);
        let err = child.stderr.take().map(lines_of);
        let (Some(out), Some(err)) = (out, err) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DemoError::Spawn {
                what,
                source: std::io::Error::other("no pipes"),
            });
        };
        Ok(Self {
            what,
            child,
            out,
            err,
            log: Vec::new(),
        })
    }

    fn output(&mut self) -> String {
        while let Ok(l) = self.err.try_recv() {
            self.log.push(l);
        }
        let n = self.log.len();
        self.log[n.saturating_sub(30)..].join("\n")
    }

    /// Waits for a line on stdout (`serial`) or stderr satisfying `pred`.
    fn wait(
        &mut self,
        serial: bool,
        label: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, DemoError> {
        let deadline = Instant::now() + timeout;
        loop {
            let rx = if serial { &self.out } else { &self.err };
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if pred(&l) {
                        return Ok(l);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(DemoError::Exited {
                    what: self.what,
                    status: st.to_string(),
                    output: self.output(),
                });
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Timeout {
                    what: self.what,
                    line: label.to_string(),
                    secs: timeout.as_secs(),
                    output: self.output(),
                });
            }
        }
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Drain output while waiting (bounded poll of the exit status).
            if let Ok(l) = self.out.recv_timeout(Duration::from_millis(20)) {
                self.log.push(l);
            }
        }
    }
}

impl Drop for ChildVmm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client(path: &Path) -> Result<qmp::Client, DemoError> {
    Ok(session::connect(path)?)
}

/// How long the guest may take to boot and print its first pass.
const BOOT_WAIT: Duration = Duration::from_secs(60);
/// How long the destination may take to print a later pass.
const CONTINUE_WAIT: Duration = Duration::from_secs(60);

/// Runs the demo; the verdict is printed, Ok only when consistent.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("vmm-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Tmp {
        path: dir.clone(),
        source,
    })?;
    let dir = TmpDir(dir);
    let src_sock = dir.0.join("source.sock");
    let dst_sock = dir.0.join("destination.sock");
    let s = |p: &Path| p.display().to_string();
    let listen = match args.transport {
        Transport::Tcp => "tcp:127.0.0.1:0".to_string(),
        Transport::Unix => format!("unix:{}", s(&dir.0.join("migration.sock"))),
    };
    println!(
        "demo: source `vmm run -m {} --append workload=ab`, destination `vmm run --incoming {listen}`",
        args.mem
    );
    let mut src = ChildVmm::spawn(
        "the source",
        &[
            "run".into(),
            "-m".into(),
            args.mem.clone(),
            "--append".into(),
            "workload=ab".into(),
            "--control".into(),
            s(&src_sock),
        ],
    )?;
    let mut dst = ChildVmm::spawn(
        "the destination",
        &[
            "run".into(),
            "--incoming".into(),
            listen,
            "--control".into(),
            s(&dst_sock),
        ],
    )?;
    let waiting = dst.wait(false, "incoming: waiting on", BOOT_WAIT, |l| {
        l.starts_with("incoming: waiting on ")
    })?;
    let uri = waiting
        .trim_start_matches("incoming: waiting on ")
        .trim()
        .to_string();
    let start_line = src.wait(true, "ab: start=", BOOT_WAIT, |l| {
        vmm_guest::parse_ab_start(l).is_some()
    })?;
    println!("source guest: {start_line}");
    let range = vmm_guest::parse_ab_start(&start_line);
    let first_pass = src.wait(true, "ab: pass=", BOOT_WAIT, |l| parse_ab_pass(l).is_some())?;
    println!("source guest: {first_pass}");

    println!(
        "migrating live to {uri} (downtime limit {} ms)",
        args.downtime_limit
    );
    let tty = std::io::stdout().is_terminal();
    let mut on_progress = |p: &Progress| {
        if tty {
            print!("\r\x1b[K{}", progress_text(p));
            let _ = std::io::stdout().flush();
        } else {
            println!("{}", progress_text(p));
        }
    };
    let (channels, compress) = args.transfer.request();
    let req = MigrateRequest {
        uri: uri.clone(),
        downtime_limit: args.downtime_limit,
        max_bandwidth: None,
        channels,
        compress,
        overwrite: false,
        tls: None,
    };
    let r = session::migrate(&mut client(&src_sock)?, &req, &mut on_progress);
    if tty {
        println!();
    }
    let summary = r?;
    dst.wait(false, "incoming: running", CONTINUE_WAIT, |l| {
        l == "incoming: running"
    })?;
    // The last pass the source printed (drain what it wrote before stopping).
    let mut last_src = parse_ab_pass(&first_pass).unwrap_or(0);
    while let Ok(l) = src.out.recv_timeout(Duration::from_millis(200)) {
        if let Some(p) = parse_ab_pass(&l) {
            last_src = last_src.max(p);
        }
    }
    let src_status = src.wait_exit(Duration::from_secs(10));
    let later = dst.wait(
        true,
        &format!("ab: pass=N with N > {last_src}"),
        CONTINUE_WAIT,
        |l| parse_ab_pass(l).is_some_and(|p| p > last_src),
    )?;
    println!(
        "destination guest: {later} (the source's last was pass={last_src}; source exited: {})",
        src_status.map_or("no".to_string(), |s| s.to_string())
    );
    let mut d = client(&dst_sock)?;
    d.execute("stop", serde_json::json!({}))
        .map_err(|e| DemoError::Control(e.into()))?;
    let verdict = match range {
        Some(r) => Some(session::verify_ab(&mut d, r.start, r.pages)?),
        None => None,
    };
    let _ = d.execute("quit", serde_json::json!({}));
    let _ = dst.wait_exit(Duration::from_secs(10));
    println!();
    print!("{}", summary_text(&summary));
    match verdict {
        Some(v) => {
            print!("{}", verify_text(&v));
            if v.consistent {
                println!("memory image: consistent (a-b rule, {} pages)", v.pages);
                Ok(())
            } else {
                Err(DemoError::Inconsistent(v.violation.unwrap_or_default()))
            }
        }
        None => Err(DemoError::Inconsistent(
            "the guest's `ab: start=` line did not parse".into(),
        )),
    }
}

/// Entry point of `vmm demo`: exit 0 only when the image is consistent.
pub fn main(args: &DemoArgs) -> ExitCode {
    super::exit_with(|| run(args).map_err(miette::Report::new))
}
