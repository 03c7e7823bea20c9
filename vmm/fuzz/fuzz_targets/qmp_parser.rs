//! The QMP server's input path: the object splitter (bounded), command
//! validation and typed argument reads on whatever bytes a client sends.
//! Nothing may panic; every object is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp::{Command, wire::Splitter};

fuzz_target!(|data: &[u8]| {
    let mut split = Splitter::new(4096);
    let mut r = std::io::Cursor::new(data);
    while let Ok(Some(obj)) = split.next(&mut r) {
        assert!(obj.len() <= 4096);
        if let Ok(c) = Command::parse(&obj) {
            let a = &c.args;
            let _ = a.only(&["uri", "path", "property"]);
            let _ = (a.opt_str("uri"), a.opt_u64("n"), a.opt_bool("b"));
            let _ = (a.opt_array("capabilities"), a.opt_object("model"));
        }
    }
});
