//! Property types and values, and the one value parser everybody uses.

use crate::suggest::did_you_mean;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// The type of a device property.
///
/// Built in statics by generated code, and at run time by the compiler from
/// TOML; hence `Cow<'static, _>` for the enum variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PropType {
    /// `on`/`off` (also accepts `true`/`false`, `yes`/`no`).
    Bool,
    /// Unsigned integer of `bits` bits within `min..=max` (decimal or `0x` hex).
    Uint {
        /// Width: 8, 16, 32 or 64.
        bits: u8,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
        /// Whether the sentinel `auto` is accepted ([`Value::Auto`]).
        auto: bool,
        /// Whether the value must be a power of two.
        power_of_two: bool,
    },
    /// One of a fixed list of names.
    Enum {
        /// The accepted names, in declaration order.
        variants: Cow<'static, [Cow<'static, str>]>,
    },
    /// A free string, optionally unset by default, optionally bounded.
    Str {
        /// Whether the property may be unset ([`Value::Unset`]).
        optional: bool,
        /// Longest accepted length in bytes.
        max_len: Option<u32>,
    },
}

/// A property value. Canonical [`Display`](fmt::Display): bools print
/// `on`/`off`, integers in decimal, `auto`, strings as is, unset as `(unset)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    /// A bool.
    Bool(bool),
    /// An unsigned integer.
    Uint(u64),
    /// The `auto` sentinel of an integer property (e.g. num-queues = vCPUs).
    Auto,
    /// An enum variant name.
    Enum(Cow<'static, str>),
    /// A string.
    Str(Cow<'static, str>),
    /// An optional string property with no value.
    Unset,
}

/// Why a string does not parse as a property's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a bool spelling.
    #[error("`{input}` is not a bool (expected on/off, true/false or yes/no)")]
    NotBool {
        /// The offending text.
        input: String,
    },
    /// Not an unsigned integer.
    #[error("`{input}` is not an unsigned integer{}", if *.auto { " or `auto`" } else { "" })]
    NotUint {
        /// The offending text.
        input: String,
        /// Whether `auto` would have been accepted.
        auto: bool,
    },
    /// Outside the property's range.
    #[error("{input} is out of range {min}..={max}")]
    OutOfRange {
        /// The offending text.
        input: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// Not a power of two.
    #[error("{input} is not a power of two")]
    NotPowerOfTwo {
        /// The offending text.
        input: String,
    },
    /// Not one of the enum's variants.
    #[error("`{input}` is not one of {}{}", .variants.join("/"), match .suggestion { Some(s) => format!(" (did you mean `{s}`?)"), None => String::new() })]
    UnknownVariant {
        /// The offending text.
        input: String,
        /// Accepted names.
        variants: Vec<String>,
        /// Closest accepted name, if close.
        suggestion: Option<String>,
    },
    /// A string longer than allowed.
    #[error("string of {len} bytes is longer than the maximum {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: u32,
    },
}

impl PropType {
    /// An unsigned integer type (const, for generated code).
    pub const fn uint(bits: u8, min: u64, max: u64, auto: bool, power_of_two: bool) -> Self {
        PropType::Uint {
            bits,
            min,
            max,
            auto,
            power_of_two,
        }
    }

    /// An enum type over static names (const, for generated code).
    pub const fn variants(v: &'static [Cow<'static, str>]) -> Self {
        PropType::Enum {
            variants: Cow::Borrowed(v),
        }
    }

    /// The largest value representable in `bits` bits.
    pub const fn bits_max(bits: u8) -> u64 {
        if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    /// Short human-readable name: `bool`, `u16 1..=64 | auto`, `enum a/b`, `string`.
    pub fn describe(&self) -> String {
        match self {
            PropType::Bool => "bool".into(),
            PropType::Uint {
                bits,
                min,
                max,
                auto,
                power_of_two,
            } => {
                let mut s = format!("u{bits}");
                if *min != 0 || *max != Self::bits_max(*bits) {
                    s.push_str(&format!(" {min}..={max}"));
                }
                if *power_of_two {
                    s.push_str(" power of two");
                }
                if *auto {
                    s.push_str(" | auto");
                }
                s
            }
            PropType::Enum { variants } => {
                let v: Vec<&str> = variants.iter().map(|v| v.as_ref()).collect();
                format!("enum {}", v.join("/"))
            }
            PropType::Str { optional, .. } => {
                if *optional {
                    "string (optional)".into()
                } else {
                    "string".into()
                }
            }
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

impl Value {
    /// An enum value (const, for generated code).
    pub const fn variant(s: &'static str) -> Self {
        Value::Enum(Cow::Borrowed(s))
    }

    /// A string value (const, for generated code).
    pub const fn text(s: &'static str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }

    /// Parses `input` as a value of type `ty`. The single implementation used
    /// by the compiler (TOML values, defaults) and by the VMM (`-global`,
    /// `-device`, manifests).
    pub fn parse(ty: &PropType, input: &str) -> Result<Value, ValueError> {
        match ty {
            PropType::Bool => match input {
                "on" | "true" | "yes" => Ok(Value::Bool(true)),
                "off" | "false" | "no" => Ok(Value::Bool(false)),
                _ => Err(ValueError::NotBool {
                    input: input.into(),
                }),
            },
            PropType::Uint {
                bits,
                min,
                max,
                auto,
                power_of_two,
            } => {
                if *auto && input == "auto" {
                    return Ok(Value::Auto);
                }
                let n = parse_u64(input).ok_or_else(|| ValueError::NotUint {
                    input: input.into(),
                    auto: *auto,
                })?;
                let hi = (*max).min(PropType::bits_max(*bits));
                if n < *min || n > hi {
                    return Err(ValueError::OutOfRange {
                        input: input.into(),
                        min: *min,
                        max: hi,
                    });
                }
                if *power_of_two && !n.is_power_of_two() {
                    return Err(ValueError::NotPowerOfTwo {
                        input: input.into(),
                    });
                }
                Ok(Value::Uint(n))
            }
            PropType::Enum { variants } => {
                if let Some(v) = variants.iter().find(|v| v.as_ref() == input) {
                    return Ok(Value::Enum(Cow::Owned(v.to_string())));
                }
                let names: Vec<String> = variants.iter().map(|v| v.to_string()).collect();
                let suggestion = did_you_mean(input, names.iter().map(String::as_str));
                Err(ValueError::UnknownVariant {
                    input: input.into(),
                    variants: names,
                    suggestion,
                })
            }
            PropType::Str { max_len, .. } => {
                if let Some(max) = max_len
                    && input.len() > *max as usize
                {
                    return Err(ValueError::TooLong {
                        len: input.len(),
                        max: *max,
                    });
                }
                Ok(Value::Str(Cow::Owned(input.to_string())))
            }
        }
    }

    /// The bool, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(n) => Some(*n),
            _ => None,
        }
    }

    /// The text of an enum or string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Enum(s) | Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(true) => f.write_str("on"),
            Value::Bool(false) => f.write_str("off"),
            Value::Uint(n) => write!(f, "{n}"),
            Value::Auto => f.write_str("auto"),
            Value::Enum(s) | Value::Str(s) => f.write_str(s),
            Value::Unset => f.write_str("(unset)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U16: PropType = PropType::Uint {
        bits: 16,
        min: 1,
        max: 64,
        auto: true,
        power_of_two: false,
    };

    #[test]
    fn bools() {
        assert_eq!(
            Value::parse(&PropType::Bool, "false"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            Value::parse(&PropType::Bool, "on").unwrap().to_string(),
            "on"
        );
        assert!(Value::parse(&PropType::Bool, "maybe").is_err());
    }

    #[test]
    fn uints() {
        assert_eq!(Value::parse(&U16, "auto"), Ok(Value::Auto));
        assert_eq!(Value::parse(&U16, "0x10"), Ok(Value::Uint(16)));
        assert!(matches!(
            Value::parse(&U16, "65"),
            Err(ValueError::OutOfRange { .. })
        ));
        assert!(matches!(
            Value::parse(&U16, "0"),
            Err(ValueError::OutOfRange { .. })
        ));
        assert!(matches!(
            Value::parse(&U16, "-1"),
            Err(ValueError::NotUint { .. })
        ));
        assert!(matches!(
            Value::parse(&U16, "0x"),
            Err(ValueError::NotUint { .. })
        ));
        let p2 = PropType::Uint {
            bits: 16,
            min: 1,
            max: 1024,
            auto: false,
            power_of_two: true,
        };
        assert!(matches!(
            Value::parse(&p2, "100"),
            Err(ValueError::NotPowerOfTwo { .. })
        ));
        assert!(matches!(
            Value::parse(&p2, "auto"),
            Err(ValueError::NotUint { .. })
        ));
        let wide = PropType::Uint {
            bits: 8,
            min: 0,
            max: u64::MAX,
            auto: false,
            power_of_two: false,
        };
        assert!(Value::parse(&wide, "256").is_err());
        assert!(Value::parse(&wide, "99999999999999999999999").is_err());
    }

    #[test]
    fn enums_suggest() {
        let ty = PropType::Enum {
            variants: Cow::Borrowed(&[Cow::Borrowed("legacy"), Cow::Borrowed("multifd")]),
        };
        let err = Value::parse(&ty, "legasy").unwrap_err();
        assert!(err.to_string().contains("did you mean `legacy`"), "{err}");
        assert_eq!(Value::parse(&ty, "multifd").unwrap().to_string(), "multifd");
    }

    #[test]
    fn strings() {
        let ty = PropType::Str {
            optional: true,
            max_len: Some(3),
        };
        assert!(Value::parse(&ty, "abcd").is_err());
        assert_eq!(Value::parse(&ty, "ab").unwrap().as_str(), Some("ab"));
    }
}
