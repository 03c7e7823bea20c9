//! Arbitrary bytes after a valid handshake and after the option phase:
//! `serve` returns (never panics, never hangs) and its buffers stay
//! within the bounds.

use std::io::{self, Cursor, Read, Write};
use std::sync::Arc;

use proptest::prelude::*;

use super::harness::Raw;
use crate::wire::*;
use crate::{ExportEntry, MemExport, serve};

/// Export size for the fuzzed server.
const SIZE: usize = 64 << 10;

/// A stream that reads a script and swallows what the server writes.
struct Scripted(Cursor<Vec<u8>>);

impl Read for Scripted {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.0.read(b)
    }
}

impl Write for Scripted {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run(input: Vec<u8>) {
    let mut data = vec![0; SIZE];
    data[..100].fill(9);
    let list = vec![ExportEntry {
        name: "disk".into(),
        description: "d".into(),
        writable: true,
        export: Arc::new(MemExport::from_vec(data)),
    }];
    let stats = match serve(Box::new(Scripted(Cursor::new(input))), &list, None) {
        Ok(s) => s.stats,
        Err(e) => e.stats,
    };
    // Option data ≤ 64 KiB; READ buffers ≤ the export; WRITE buffers grow
    // only with bytes received.
    assert!(
        stats.max_buffer <= SIZE.max(MAX_OPTION_DATA as usize),
        "{}",
        stats.max_buffer
    );
    assert!(stats.options <= MAX_OPTIONS);
}

/// One message of a fuzzed conversation.
#[derive(Debug, Clone)]
enum Item {
    Raw(Vec<u8>),
    Opt(u32, Vec<u8>),
    Req(u16, u16, u64, u32, Vec<u8>),
}

fn offsets() -> impl Strategy<Value = u64> {
    prop_oneof![0..(SIZE as u64 + 10), Just(u64::MAX), any::<u64>()]
}

fn lengths() -> impl Strategy<Value = u32> {
    prop_oneof![
        0..5000u32,
        Just(u32::MAX),
        Just(MAX_PAYLOAD),
        Just(MAX_PAYLOAD + 1),
        any::<u32>()
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Item::Raw),
        (0..13u32, proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(o, d)| Item::Opt(o, d)),
        (
            prop_oneof![Just(0u16), 0..32u16, any::<u16>()],
            0..9u16,
            offsets(),
            lengths(),
            proptest::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(f, t, o, l, p)| Item::Req(f, t, o, l, p)),
    ]
}

fn encode(items: &[Item], out: &mut Vec<u8>) {
    for it in items {
        match it {
            Item::Raw(b) => out.extend_from_slice(b),
            Item::Opt(o, d) => {
                out.put_u64(IHAVEOPT);
                out.put_u32(*o);
                out.put_u32(d.len() as u32);
                out.extend_from_slice(d);
            }
            Item::Req(f, t, o, l, p) => {
                out.put_u32(REQUEST_MAGIC);
                out.put_u16(*f);
                out.put_u16(*t);
                out.put_u64(1);
                out.put_u64(*o);
                out.put_u32(*l);
                out.extend_from_slice(p);
            }
        }
    }
}

/// Client flags, then STRUCTURED_REPLY, SET_META_CONTEXT and GO on "disk".
fn negotiated(structured: bool) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_u32(C_FIXED_NEWSTYLE | C_NO_ZEROES);
    let mut opts = Vec::new();
    if structured {
        opts.push(Item::Opt(OPT_STRUCTURED_REPLY, vec![]));
        opts.push(Item::Opt(
            OPT_SET_META_CONTEXT,
            Raw::meta_data("disk", &[BASE_ALLOCATION]),
        ));
    }
    opts.push(Item::Opt(OPT_GO, Raw::info_data("disk", &[])));
    encode(&opts, &mut v);
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_after_handshake(flags in prop_oneof![Just(3u32), any::<u32>()],
                                       items in proptest::collection::vec(item(), 0..24)) {
        let mut v = Vec::new();
        v.put_u32(flags);
        encode(&items, &mut v);
        run(v);
    }

    #[test]
    fn arbitrary_bytes_after_options(structured in any::<bool>(),
                                     items in proptest::collection::vec(item(), 0..24)) {
        let mut v = negotiated(structured);
        encode(&items, &mut v);
        run(v);
    }

    #[test]
    fn pure_noise(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        run(bytes.clone());
        let mut v = negotiated(true);
        v.extend_from_slice(&bytes);
        run(v);
    }
}
