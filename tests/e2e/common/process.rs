//! The process guard: [`Vmm`] runs the real `vmm` binary, reads its serial
//! console (stdout) line by line and its stderr, bounds every wait, and kills
//! and reaps the process when dropped (also when a test panics).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `vmm` binary under test.
pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmm")
}

/// A running `vmm` whose stdout (the serial console) is read line by line.
pub struct Vmm {
    child: Child,
    /// Set once the child is reaped (by `wait4`): its status and peak RSS.
    exited: Option<(ExitStatus, u64)>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// For [`Vmm::spawn_measured`]: GNU time's report of the process.
    measured: Option<super::paths::TempPath>,
}

/// How a `vmm` process ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Every serial line.
    pub lines: Vec<String>,
    /// Everything on stderr.
    pub stderr: String,
}

impl Finished {
    /// Every `key:` line's field `field`, in order.
    pub fn facts(&self, key: &str, field: &str) -> Vec<String> {
        super::serial::facts(&self.lines, key, field)
    }

    /// The first `key:` line's field `field`.
    pub fn fact(&self, key: &str, field: &str) -> Option<String> {
        self.facts(key, field).into_iter().next()
    }

    /// Stdout as one text (the lines joined with `\n`).
    pub fn stdout(&self) -> String {
        self.lines.join("\n")
    }

    /// Panics with the whole transcript unless the process exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "vmm failed: {:?}\n{}",
            self.status,
            self.transcript()
        );
    }

    /// Serial output and stderr, for assertion messages.
    pub fn transcript(&self) -> String {
        transcript(&self.lines, &self.stderr)
    }
}

fn transcript(lines: &[String], stderr: &str) -> String {
    format!(
        "--- serial ---\n{}\n--- stderr ---\n{stderr}",
        lines.join("\n")
    )
}

impl Vmm {
    /// Starts `vmm ARGS...` with stdin closed and stdout/stderr piped.
    pub fn spawn<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(vmm_bin());
        c.args(args);
        Self::spawn_command(c, None)
    }

    /// [`Vmm::spawn`] under GNU time (`/usr/bin/time`), whose report gives
    /// the process's own peak RSS: the kernel's `ru_maxrss` of a child
    /// spawned straight from this (large) test process also counts this
    /// process's memory at the exec (the child starts as a copy of it).
    pub fn spawn_measured<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let report = super::paths::TempPath::new("maxrss", "txt");
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "maxrss_kib=%M", "-o"])
            .arg(report.path())
            .arg(vmm_bin())
            .args(args);
        Self::spawn_command(c, Some(report))
    }

    fn spawn_command(mut cmd: Command, measured: Option<super::paths::TempPath>) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm");
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            measured,
            child,
            exited: None,
            lines: rx,
            seen: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits up to `timeout` for a new serial line satisfying `pred`; returns it.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Keeps the serial lines flowing into `seen` for up to `tick` (a
    /// bounded pause of a polling loop, also once stdout is closed).
    fn pump(&mut self, tick: Duration) {
        match self.lines.recv_timeout(tick) {
            Ok(l) => self.seen.push(l),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(tick),
        }
    }

    /// Serial lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serial lines and stderr so far, for assertion messages.
    pub fn transcript(&self) -> String {
        transcript(&self.seen, &self.stderr())
    }

    /// Waits up to `timeout` for a complete stderr line satisfying `pred`
    /// (a line still being written is not looked at); returns it.
    pub fn wait_stderr_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.stderr();
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(l) = complete.lines().find(|l| pred(l)) {
                return Some(l.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.pump(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for a stderr line containing `needle`.
    pub fn wait_stderr(&mut self, timeout: Duration, needle: &str) -> bool {
        self.wait_stderr_line(timeout, |l| l.contains(needle))
            .is_some()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reaps the process if it has exited (`wait4`, non-blocking, which
    /// also gives its peak RSS); its exit status then.
    fn poll(&mut self) -> Option<ExitStatus> {
        if let Some((status, _)) = self.exited {
            return Some(status);
        }
        let pid = self.child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a non-blocking wait4 on our own unreaped child, with valid
        // out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            let status = ExitStatus::from_raw(status);
            self.exited = Some((status, ru.ru_maxrss as u64));
            return Some(status);
        }
        assert_eq!(r, 0, "wait4({pid}): {}", std::io::Error::last_os_error());
        None
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.poll().is_none()
    }

    /// Kills the process now (SIGKILL); [`Vmm::finish`] reaps it, and its
    /// output stays readable there.
    pub fn kill_now(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
        }
    }

    /// Waits up to `timeout` for the process to exit and collects the rest of
    /// its output; kills it and panics on timeout.
    pub fn finish(self, timeout: Duration) -> Finished {
        self.finish_measured(timeout).0
    }

    /// [`Vmm::finish`], and the process's peak resident set in KiB.
    pub fn finish_measured(mut self, timeout: Duration) -> (Finished, u64) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.poll() {
                break s;
            }
            // Panicking drops `self`, which kills and reaps the process.
            assert!(
                Instant::now() < deadline,
                "vmm did not exit within {timeout:?}\n{}",
                self.transcript()
            );
            self.pump(Duration::from_millis(20));
        };
        // stdout is closed once the process is gone: drain what is left.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        // The process is gone, so its stderr reaches EOF: wait for the reader.
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let (mut status, mut max_rss_kib) = (status, self.exited.map_or(0, |(_, rss)| rss));
        if let Some(report) = &self.measured {
            // GNU time: "Command terminated by signal N" (then its own
            // exit is 128 + N), and the format line.
            let text = std::fs::read_to_string(report.path()).unwrap_or_default();
            if let Some(sig) = text
                .lines()
                .find_map(|l| l.strip_prefix("Command terminated by signal "))
                .and_then(|n| n.trim().parse::<i32>().ok())
            {
                status = ExitStatus::from_raw(sig);
            }
            max_rss_kib = text
                .lines()
                .find_map(|l| l.strip_prefix("maxrss_kib="))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no GNU time report: {text}"));
        }
        let finished = Finished {
            status,
            lines: std::mem::take(&mut self.seen),
            stderr: self.stderr(),
        };
        (finished, max_rss_kib)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `vmm ARGS...` to completion (bounded by `timeout`).
pub fn run<I, S>(args: I, timeout: Duration) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Vmm::spawn(args).finish(timeout)
}
