//! The client side, used by `vmm ctl` and `vmm migrate`.

use super::ControlError;
use super::protocol::{Event, Line, Request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Longest answer or event line a client reads.
pub const MAX_ANSWER: u64 = 16 << 20;

/// A connection to a running `vmm`'s control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to `path`.
    pub fn connect(path: &Path) -> Result<Self, ControlError> {
        let s = UnixStream::connect(path).map_err(|source| ControlError::Socket {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// Sends one request; events go to `on_event`; returns the result value
    /// (`null` when there is none) or the server's error.
    pub fn call(
        &mut self,
        req: &Request,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<serde_json::Value, ControlError> {
        let mut line =
            serde_json::to_string(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let mut buf = String::new();
            let n = (&mut self.reader).take(MAX_ANSWER).read_line(&mut buf)?;
            if n as u64 >= MAX_ANSWER && !buf.ends_with('\n') {
                return Err(ControlError::Protocol(format!(
                    "an answer line longer than {MAX_ANSWER} bytes"
                )));
            }
            if n == 0 {
                return Err(ControlError::Protocol(
                    "the vmm closed the connection".into(),
                ));
            }
            match Line::parse(buf.trim_end()).map_err(|e| ControlError::Protocol(e.to_string()))? {
                Line::Event(e) => on_event(&e),
                Line::Response(r) if r.ok => return Ok(r.result.unwrap_or_default()),
                Line::Response(r) => {
                    return Err(ControlError::Remote(
                        r.error.unwrap_or_else(|| "failed".into()),
                    ));
                }
            }
        }
    }
}
