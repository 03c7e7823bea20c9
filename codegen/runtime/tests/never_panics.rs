//! Whatever the user types after `-global`/`-device`, or as a property value,
//! parsing gives a value or a typed error, never a panic.

use compat_runtime::{Override, PropType, Value};
use proptest::prelude::*;
use std::borrow::Cow;

fn types() -> Vec<PropType> {
    vec![
        PropType::Bool,
        PropType::uint(8, 0, 255, false, false),
        PropType::uint(16, 1, 64, true, false),
        PropType::uint(64, 0, u64::MAX, false, true),
        PropType::Enum {
            variants: Cow::Owned(vec![Cow::Borrowed("legacy"), Cow::Borrowed("multifd")]),
        },
        PropType::Str {
            optional: true,
            max_len: Some(20),
        },
    ]
}

proptest! {
    #[test]
    fn value_parse_never_panics(s in ".{0,40}") {
        for t in types() {
            if let Ok(v) = Value::parse(&t, &s) {
                // Canonical text parses back to the same value.
                prop_assert_eq!(Value::parse(&t, &v.to_string()).ok(), Some(v));
            }
        }
    }

    #[test]
    fn override_parse_never_panics(s in "[a-z.=,_ -]{0,40}|.{0,40}") {
        let _ = Override::parse_global(&s);
        let _ = Override::parse_device(&s);
    }
}
