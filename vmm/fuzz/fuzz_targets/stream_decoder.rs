//! Feeds arbitrary bytes to the migration stream decoder: it must return an
//! error or a stream that respects its manifest, and never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migration::PAGE_SIZE;
use migration::stream::{Decoder, Limits, Record};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_ram_size: 64 << 20,
        ..Limits::default()
    };
    let Ok(mut d) = Decoder::new(data, limits) else {
        return;
    };
    let Ok(m) = d.read_manifest() else {
        return;
    };
    let pages = m.pages();
    loop {
        match d.next_record() {
            Ok(Record::Pages { first_page, data }) => {
                assert!(first_page + (data.len() / PAGE_SIZE) as u64 <= pages);
            }
            Ok(Record::ZeroPages { first_page, count } | Record::Landed { first_page, count }) => {
                assert!(first_page + count <= pages)
            }
            Ok(Record::Section(s)) => assert!(m.section(&s.name).is_some()),
            Ok(Record::Vcpu(v)) => assert!(v.index < m.vcpus),
            Ok(Record::Sync) => {}
            Ok(Record::End) | Err(_) => break,
        }
    }
});
