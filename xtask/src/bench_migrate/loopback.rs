//! The loopback limit of this run: how fast xtask itself pushes bytes over
//! TCP on 127.0.0.1 (one writer thread and one reader thread per stream,
//! 1 MiB writes, the reader discarding), once with one stream of 1 GiB and
//! once with four streams of 256 MiB each in parallel.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Instant;

/// Bytes per second over loopback TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loopback {
    /// One stream.
    pub one: f64,
    /// Four streams at once (the sum).
    pub four: f64,
}

impl Loopback {
    pub fn measure() -> Result<Self, String> {
        Ok(Self {
            one: push(1, 1 << 30)?,
            four: push(4, 256 << 20)?,
        })
    }

    /// The limit a migration over `channels` data channels is held to: one
    /// stream's for one stream, else four streams'.
    pub fn limit(&self, channels: u32) -> f64 {
        if channels == 0 { self.one } else { self.four }
    }
}

const CHUNK: usize = 1 << 20;

/// Pushes `each` bytes over each of `streams` loopback connections at once;
/// bytes per second over all of them, from the first connect to the last
/// byte read.
fn push(streams: usize, each: u64) -> Result<f64, String> {
    let err = |e: std::io::Error| format!("loopback: {e}");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let t0 = Instant::now();
    let writers: Vec<JoinHandle<Result<(), String>>> = (0..streams)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).map_err(err)?;
                let buf = vec![0xa5u8; CHUNK];
                let mut left = each;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    s.write_all(&buf[..n]).map_err(err)?;
                    left -= n as u64;
                }
                s.shutdown(std::net::Shutdown::Write).map_err(err)
            })
        })
        .collect();
    let mut readers: Vec<JoinHandle<Result<u64, String>>> = Vec::new();
    for _ in 0..streams {
        let (mut s, _) = listener.accept().map_err(err)?;
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            loop {
                match s.read(&mut buf).map_err(err)? {
                    0 => return Ok(got),
                    n => got += n as u64,
                }
            }
        }));
    }
    let mut total = 0;
    for r in readers {
        total += r
            .join()
            .map_err(|_| "loopback: reader panicked".to_string())??;
    }
    let secs = t0.elapsed().as_secs_f64();
    for w in writers {
        w.join()
            .map_err(|_| "loopback: writer panicked".to_string())??;
    }
    if total != each * streams as u64 {
        return Err(format!(
            "loopback: read {total} bytes of {}",
            each * streams as u64
        ));
    }
    Ok(total as f64 / secs.max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_every_byte() {
        let r = push(2, 3 * CHUNK as u64 + 5).unwrap_or_else(|e| panic!("{e}"));
        assert!(r > 0.0);
        let l = Loopback {
            one: 1.0,
            four: 4.0,
        };
        assert_eq!((l.limit(0), l.limit(2), l.limit(4)), (1.0, 4.0, 4.0));
    }
}
