//! Shared helpers for end-to-end tests: spawn the real `vmm` binary with a
//! guard that kills it on drop (also when a test panics), read serial lines
//! with a bounded wait, parse the guest's `key: k=v ...` report lines.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `vmm` binary under test.
pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmm")
}

/// True if `/dev/kvm` is usable; tests that boot a guest skip (with a
/// message) where it is not.
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Skips the calling test (returns early) when KVM is unavailable.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::common::kvm_available() {
            eprintln!("skipped: /dev/kvm is not available on this machine");
            return;
        }
    };
}

/// A running `vmm` whose stdout (the serial console) is read line by line.
pub struct Vmm {
    child: Option<Child>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
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
    /// Lines starting with `key: `, parsed.
    pub fn facts(&self, key: &str) -> Vec<HashMap<String, String>> {
        facts(&self.lines, key)
    }

    /// The first `key:` line's field `field`.
    pub fn fact(&self, key: &str, field: &str) -> Option<String> {
        self.facts(key)
            .into_iter()
            .find_map(|f| f.get(field).cloned())
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
        format!(
            "--- serial ---\n{}\n--- stderr ---\n{}",
            self.lines.join("\n"),
            self.stderr
        )
    }
}

impl Vmm {
    /// Starts `vmm ARGS...` with stdin closed and stdout/stderr piped.
    pub fn spawn<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut child = Command::new(vmm_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm");
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
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
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits up to `timeout` for a serial line satisfying `pred`; returns it.
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
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    /// Lines read so far.
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Waits up to `timeout` for the process to exit and collects the rest of
    /// its output; kills it and panics on timeout.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("child");
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "vmm did not exit within {timeout:?}\n--- serial ---\n{}\n--- stderr ---\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                );
            }
            // Bounded poll of the exit status (no blocking wait without a deadline).
            let _ = self
                .lines
                .recv_timeout(Duration::from_millis(20))
                .map(|l| self.seen.push(l));
        };
        // stdout is closed once the process is gone: drain what is left.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        // The process is gone, so its stderr reaches EOF: wait for the reader.
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let stderr = self.stderr();
        Finished {
            status,
            lines: std::mem::take(&mut self.seen),
            stderr,
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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

/// Parses `key: a=1 b=2` into `{a: 1, b: 2}` if the line starts with `key: `.
pub fn parse_fact(line: &str, key: &str) -> Option<HashMap<String, String>> {
    let rest = line.strip_prefix(key)?.strip_prefix(": ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Every line of `lines` that is a `key:` fact, parsed.
pub fn facts(lines: &[String], key: &str) -> Vec<HashMap<String, String>> {
    lines.iter().filter_map(|l| parse_fact(l, key)).collect()
}

/// A scratch file removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// A zero-filled file of `size` bytes named after `tag` and the test process.
    pub fn sized(tag: &str, size: u64) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vmm-e2e-{tag}-{}-{n}.img", std::process::id()));
        let f = std::fs::File::create(&p).expect("create temp image");
        f.set_len(size).expect("size temp image");
        Self(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `--drive` argument for this file.
    pub fn drive(&self) -> String {
        format!("file={}", self.0.display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// --- Helpers for the migration end-to-end tests (appended). ---

impl Vmm {
    /// Kills the process now (SIGKILL) and reaps it; its output stays readable
    /// through [`Vmm::finish`].
    pub fn kill_now(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for stderr to contain `needle`.
    pub fn wait_stderr(&mut self, timeout: Duration, needle: &str) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Bounded: also keeps the serial lines flowing into `seen`.
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(l);
            }
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True if some socket listens on TCP `port` (from `/proc/net/tcp{,6}`; state 0A).
pub fn tcp_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let mut it = l.split_whitespace();
                let local = it.nth(1).unwrap_or("");
                let state = it.nth(1).unwrap_or("");
                local.ends_with(&want) && state == "0A"
            })
        })
    })
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A unique path in the temp dir (not created), removed by the caller.
pub fn temp_path(tag: &str, ext: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("vmm-e2e-{tag}-{}-{n}.{ext}", std::process::id()))
}
