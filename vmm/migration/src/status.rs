//! The return channel: what the destination tells the source.
//!
//! Each message is a tag byte, a little-endian `u32` length and that many
//! bytes of UTF-8 text (see `docs/stream.md`).

use std::io::{self, Read, Write};

const TAG_ACCEPTED: u8 = 0x01;
const TAG_REFUSED: u8 = 0x02;
const TAG_RUNNING: u8 = 0x03;
const TAG_FAILED: u8 = 0x04;
const TAG_SYNCED: u8 = 0x05;
const MAX_MESSAGE: u32 = 64 << 10;

/// A message on the return channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The manifest checked out: send RAM.
    Accepted,
    /// The manifest was refused; nothing else will be read.
    Refused(String),
    /// The guest runs on the destination: the source may let go of its copy.
    Running,
    /// Loading failed after the manifest was accepted; the guest did not start.
    Failed(String),
    /// Everything up to the sync point is processed (the source may stop the guest).
    Synced,
}

/// A malformed return-channel message.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("return channel: {0}")]
    Io(#[from] io::Error),
    #[error("return channel: unknown message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("return channel: message of {0} bytes is too long")]
    TooLong(u32),
}

impl Status {
    /// Writes the message and flushes.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        let (tag, msg) = match self {
            Status::Accepted => (TAG_ACCEPTED, ""),
            Status::Refused(m) => (TAG_REFUSED, m.as_str()),
            Status::Running => (TAG_RUNNING, ""),
            Status::Failed(m) => (TAG_FAILED, m.as_str()),
            Status::Synced => (TAG_SYNCED, ""),
        };
        let msg = &msg.as_bytes()[..msg.len().min(MAX_MESSAGE as usize)];
        let mut out = vec![tag];
        out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        out.extend_from_slice(msg);
        w.write_all(&out)?;
        w.flush()
    }

    /// Reads one message (EOF is an `UnexpectedEof` I/O error).
    pub fn read_from(r: &mut dyn Read) -> Result<Status, StatusError> {
        let mut head = [0; 5];
        r.read_exact(&mut head)?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_MESSAGE {
            return Err(StatusError::TooLong(len));
        }
        let mut msg = vec![0; len as usize];
        r.read_exact(&mut msg)?;
        let msg = String::from_utf8_lossy(&msg).into_owned();
        match head[0] {
            TAG_ACCEPTED => Ok(Status::Accepted),
            TAG_REFUSED => Ok(Status::Refused(msg)),
            TAG_RUNNING => Ok(Status::Running),
            TAG_FAILED => Ok(Status::Failed(msg)),
            TAG_SYNCED => Ok(Status::Synced),
            t => Err(StatusError::UnknownTag(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        for s in [
            Status::Accepted,
            Status::Refused("machine type".into()),
            Status::Running,
            Status::Failed("vcpu 0".into()),
            Status::Synced,
        ] {
            let mut buf = Vec::new();
            s.write_to(&mut buf).unwrap();
            assert_eq!(Status::read_from(&mut buf.as_slice()).unwrap(), s);
        }
        assert!(matches!(
            Status::read_from(&mut [9u8, 0, 0, 0, 0].as_slice()),
            Err(StatusError::UnknownTag(9))
        ));
        assert!(matches!(
            Status::read_from(&mut [1u8, 0, 0, 0, 1].as_slice()),
            Err(StatusError::TooLong(_))
        ));
        assert!(Status::read_from(&mut [3u8, 0].as_slice()).is_err());
    }
}
