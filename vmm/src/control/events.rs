//! QMP events, sent to every negotiated connection of every QMP socket of
//! this process, as the reference sends them to every monitor.
//!
//! A connection's writer is shared by its command answers and its events
//! ([`Writer`]), so messages never interleave. A client that stops reading
//! is dropped from the list once a write times out ([`WRITE_TIMEOUT`]); it
//! never holds the others up for longer than that.

use devices::bus::lock;
use serde_json::Value;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one message may take to leave for one client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection's writing half.
pub type Writer = Arc<Mutex<UnixStream>>;

/// Writes one message (`qmp::command::encode`) to a connection.
pub fn send(w: &Writer, msg: &Value) -> std::io::Result<()> {
    lock(w).write_all(&qmp::command::encode(msg))
}

/// The connections events go to.
#[derive(Default)]
pub struct Events {
    conns: Mutex<Vec<(u64, Writer)>>,
    next: Mutex<u64>,
}

impl Events {
    /// Adds a negotiated connection; its id for [`remove`](Self::remove).
    pub fn add(&self, w: Writer) -> u64 {
        let _ = lock(&w).set_write_timeout(Some(WRITE_TIMEOUT));
        let mut n = lock(&self.next);
        *n += 1;
        lock(&self.conns).push((*n, w));
        *n
    }

    /// Removes a connection that closed.
    pub fn remove(&self, id: u64) {
        lock(&self.conns).retain(|(i, _)| *i != id);
    }

    /// Sends event `name` with `data` (an object; empty: no `data`) and a
    /// timestamp to every connection; drops those that cannot take it.
    pub fn emit(&self, name: &str, data: Value) {
        let msg = qmp::command::event(name, data);
        tracing::debug!("QMP event {msg}");
        lock(&self.conns).retain(|(_, w)| send(w, &msg).is_ok());
    }

    /// Number of connections events go to.
    pub fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    /// True if no connection takes events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_connection_gets_each_event_and_closed_ones_are_dropped() {
        let ev = Events::default();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        ev.add(Arc::new(Mutex::new(a)));
        let id_b = ev.add(Arc::new(Mutex::new(b)));
        drop(b_peer);
        ev.emit("STOP", serde_json::json!({}));
        assert_eq!(ev.len(), 1, "the closed connection is dropped");
        let mut buf = [0u8; 256];
        let n = a_peer.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with(r#"{"event":"STOP""#) && text.ends_with("\r\n"),
            "{text}"
        );
        ev.remove(id_b);
        assert_eq!(ev.len(), 1);
    }
}
