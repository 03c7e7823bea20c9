//! The QMP object stream: clients and servers send JSON objects back to
//! back, separated by optional whitespace (the reference's own client sends
//! no newline). [`Splitter`] cuts the stream into objects without parsing
//! them, so a parse error in one object does not lose the next, and refuses
//! any object longer than its bound.

use std::io::{self, Read};

/// Why the stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A byte outside any object that is not whitespace.
    #[error("JSON parse error, expecting an object (found byte {0:#04x})")]
    NotAnObject(u8),
    /// An object longer than the bound.
    #[error("JSON parse error, object longer than {0} bytes")]
    TooLong(usize),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("JSON parse error, nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Reading failed (a time-out included).
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

/// Deepest nesting of `{`/`[` accepted (the reference's parser allows 1024).
pub const MAX_DEPTH: u32 = 1024;

/// Cuts objects out of a byte stream; holds the bytes read past the last
/// object.
#[derive(Debug)]
pub struct Splitter {
    max: usize,
    pending: Vec<u8>,
    pos: usize,
}

impl Splitter {
    /// A splitter refusing objects longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            pending: Vec::new(),
            pos: 0,
        }
    }

    /// The next whole object (its bytes, from `{` to the matching `}`), or
    /// `None` when the stream ended (bytes of an unfinished object are
    /// dropped). Strings and their escapes are respected.
    pub fn next(&mut self, r: &mut impl Read) -> Result<Option<Vec<u8>>, WireError> {
        let mut obj = Vec::new();
        let (mut depth, mut in_str, mut esc) = (0u32, false, false);
        loop {
            if self.pos == self.pending.len() {
                self.pending.resize(8192, 0);
                let n = loop {
                    match r.read(&mut self.pending) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        other => break other,
                    }
                };
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        self.pending.clear();
                        self.pos = 0;
                        return Err(e.into());
                    }
                };
                self.pending.truncate(n);
                self.pos = 0;
                if n == 0 {
                    return Ok(None);
                }
            }
            let b = self.pending[self.pos];
            self.pos += 1;
            if depth == 0 {
                if b.is_ascii_whitespace() {
                    continue;
                }
                if b != b'{' {
                    return Err(WireError::NotAnObject(b));
                }
            }
            obj.push(b);
            if obj.len() > self.max {
                return Err(WireError::TooLong(self.max));
            }
            match (in_str, esc, b) {
                (true, true, _) => esc = false,
                (true, false, b'\\') => esc = true,
                (true, false, b'"') => in_str = false,
                (true, false, _) => {}
                (false, _, b'"') => in_str = true,
                (false, _, b'{' | b'[') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(WireError::TooDeep);
                    }
                }
                (false, _, b'}' | b']') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Ok(Some(obj));
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> (Vec<String>, Option<WireError>) {
        let mut s = Splitter::new(max);
        let mut r = io::Cursor::new(input.to_vec());
        let mut out = Vec::new();
        loop {
            match s.next(&mut r) {
                Ok(Some(o)) => out.push(String::from_utf8_lossy(&o).into_owned()),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn objects_with_or_without_newlines_strings_respected() {
        let (objs, err) = all(
            br#"{"execute":"a"}{"execute":"b","arguments":{"s":"}{\"x"}}
 {"id":[1,{"k":2}]}"#,
            1 << 10,
        );
        assert!(err.is_none());
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[0], r#"{"execute":"a"}"#);
        assert_eq!(objs[2], r#"{"id":[1,{"k":2}]}"#);
        for o in &objs {
            assert!(serde_json::from_str::<serde_json::Value>(o).is_ok(), "{o}");
        }
    }

    #[test]
    fn junk_long_and_deep_input_is_refused() {
        assert!(matches!(
            all(b"x{}", 64).1,
            Some(WireError::NotAnObject(b'x'))
        ));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        assert!(matches!(
            all(big.as_bytes(), 64).1,
            Some(WireError::TooLong(64))
        ));
        let deep = "[".repeat(2000);
        let deep = format!("{{\"a\":{deep}");
        assert!(matches!(
            all(deep.as_bytes(), 1 << 20).1,
            Some(WireError::TooDeep)
        ));
        // An unfinished object at the end is the end of the stream.
        assert_eq!(all(br#"{"a":1}{"b""#, 64).0.len(), 1);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends: no panic, every object within the
        /// bound and balanced, every one parsed or refused (the fuzz
        /// target `qmp_parser` does the same with coverage guidance).
        #[test]
        fn any_bytes_are_split_within_bounds(
            data in proptest::collection::vec(
                prop_oneof![
                    Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'),
                    Just(b'\\'), Just(b':'), Just(b','), Just(b' '), any::<u8>()
                ],
                0..512,
            )
        ) {
            let mut s = Splitter::new(128);
            let mut r = io::Cursor::new(data);
            while let Ok(Some(obj)) = s.next(&mut r) {
                prop_assert!(obj.len() <= 128);
                prop_assert_eq!(obj.first(), Some(&b'{'));
                let _ = crate::Command::parse(&obj);
            }
        }
    }
}
