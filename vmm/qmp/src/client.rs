//! A blocking QMP client over a unix socket: reads the greeting,
//! negotiates, runs commands and collects the events that arrive in
//! between. Every read is bounded: [`MAX_MESSAGE`] bytes per message and a
//! time-out per wait.

use crate::command::encode;
use crate::wire::{Splitter, WireError};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest message a client accepts (an answer can list many devices).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting to the socket failed.
    #[error("QMP socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    /// The server answered with an error.
    #[error("{desc}")]
    Command { class: String, desc: String },
    /// The server closed the connection.
    #[error("the QMP server closed the connection")]
    Closed,
    /// Nothing arrived in time.
    #[error("no answer from the QMP server within {0:?}")]
    Timeout(Duration),
    /// Not QMP.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// Reading or writing failed.
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A negotiated QMP connection.
pub struct Client {
    sock: UnixStream,
    split: Splitter,
    events: VecDeque<Value>,
    greeting: Value,
    timeout: Duration,
}

impl Client {
    /// Connects to `path`, reads the greeting and negotiates
    /// (`qmp_capabilities`); each wait is bounded by `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let sock = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        let mut c = Self {
            sock,
            split: Splitter::new(MAX_MESSAGE),
            events: VecDeque::new(),
            greeting: Value::Null,
            timeout,
        };
        let g = c.read_until(Instant::now() + timeout)?;
        if let Some(e) = g.get("error") {
            return Err(command_error(e));
        }
        if g.get("QMP").is_none() {
            return Err(ClientError::Protocol(format!("not a QMP greeting: {g}")));
        }
        c.greeting = g;
        c.execute("qmp_capabilities", json!({}))?;
        Ok(c)
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// Runs `name` with `args` (an object): its `return` value, or the
    /// server's error. Events that arrive meanwhile are kept.
    pub fn execute(&mut self, name: &str, args: Value) -> Result<Value, ClientError> {
        let msg = if args.as_object().is_some_and(|a| !a.is_empty()) {
            json!({ "execute": name, "arguments": args })
        } else {
            json!({ "execute": name })
        };
        self.sock.write_all(&encode(&msg))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let v = self.read_until(deadline)?;
            if v.get("event").is_some() {
                self.events.push_back(v);
            } else if let Some(r) = v.get("return") {
                return Ok(r.clone());
            } else if let Some(e) = v.get("error") {
                return Err(command_error(e));
            } else {
                return Err(ClientError::Protocol(format!("unexpected message {v}")));
            }
        }
    }

    /// The first event (kept or arriving before `timeout`) that `pick`
    /// accepts; the events before it stay kept.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        if let Some(i) = self.events.iter().position(&mut pick) {
            return Ok(self.events.remove(i).unwrap_or_default());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.read_until(deadline)?;
            if v.get("event").is_none() {
                return Err(ClientError::Protocol(format!("unexpected message {v}")));
            }
            if pick(&v) {
                return Ok(v);
            }
            self.events.push_back(v);
        }
    }

    /// The next event, or `None` when none arrived within `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Value>, ClientError> {
        match self.wait_event(timeout, |_| true) {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for the server to say anything, keeping the
    /// events that arrive (for [`wait_event`](Self::wait_event) and
    /// [`take_events`](Self::take_events)): the pause between two polls.
    pub fn pause(&mut self, timeout: Duration) -> Result<(), ClientError> {
        match self.next_event(timeout)? {
            Some(e) => {
                self.events.push_back(e);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The events received so far and not yet taken.
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    fn read_until(&mut self, deadline: Instant) -> Result<Value, ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.sock.set_read_timeout(Some(left))?;
        match self.split.next(&mut self.sock) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("not JSON: {e}"))),
            Ok(None) => Err(ClientError::Closed),
            Err(WireError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Timeout(self.timeout))
            }
            Err(WireError::Io(e)) => Err(e.into()),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        }
    }
}

fn command_error(e: &Value) -> ClientError {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    ClientError::Command {
        class: s("class"),
        desc: s("desc"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    fn server(script: Vec<&'static [u8]>) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!(
            "qmp-client-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            for (i, chunk) in script.into_iter().enumerate() {
                if i > 0 {
                    let _ = c.read(&mut buf);
                }
                c.write_all(chunk).unwrap();
            }
            let _ = c.read(&mut buf);
        });
        (path, h)
    }

    #[test]
    fn negotiates_runs_and_keeps_events() {
        let (path, h) = server(vec![
            br#"{"QMP":{"version":{},"capabilities":[]}}"#,
            b"{\"return\":{}}\r\n",
            br#"{"event":"STOP","timestamp":{}}{"return":{"status":"paused"}}"#,
            br#"{"error":{"class":"CommandNotFound","desc":"The command x has not been found"}}"#,
        ]);
        let mut c = Client::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(
            c.execute("query-status", json!({})).unwrap()["status"],
            "paused"
        );
        match c.execute("x", json!({})) {
            Err(ClientError::Command { class, .. }) => assert_eq!(class, "CommandNotFound"),
            other => panic!("{other:?}"),
        }
        let e = c
            .wait_event(Duration::from_secs(1), |e| e["event"] == "STOP")
            .unwrap();
        assert_eq!(e["event"], "STOP");
        assert!(matches!(
            c.next_event(Duration::from_millis(50)),
            Ok(None) | Err(ClientError::Closed)
        ));
        drop(c);
        h.join().unwrap();
    }

    #[test]
    fn a_server_that_refuses_or_is_not_qmp() {
        let (path, h) = server(vec![br#"{"error":{"class":"GenericError","desc":"busy"}}"#]);
        match Client::connect(&path, Duration::from_secs(5)) {
            Err(ClientError::Command { desc, .. }) => assert_eq!(desc, "busy"),
            other => panic!("{:?}", other.err()),
        }
        h.join().unwrap();
        let (path, h) = server(vec![br#"{"hello":1}"#]);
        assert!(matches!(
            Client::connect(&path, Duration::from_secs(5)),
            Err(ClientError::Protocol(_))
        ));
        h.join().unwrap();
    }
}
