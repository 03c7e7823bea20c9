//! The NBD server on whatever bytes a client sends: the handshake, the
//! option phase and requests against a small in-memory export. Nothing may
//! panic, and `serve` must end (the input ends).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Read, Write};
use std::sync::Arc;

/// The client's bytes in, the server's answers dropped.
struct Peer(Cursor<Vec<u8>>);

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let exports = vec![nbd::ExportEntry {
        name: "d0".into(),
        description: String::new(),
        writable: true,
        export: Arc::new(nbd::MemExport::new(1 << 16)),
    }];
    let _ = nbd::serve(Box::new(Peer(Cursor::new(data.to_vec()))), &exports, None);
});
