//! `--compress none|zstd[:LEVEL]`: how page contents travel. Zero pages are
//! never compressed (they travel as runs without data); a run of non-zero
//! pages is sent compressed only when that makes it smaller.

use std::fmt;
use std::str::FromStr;

/// The compression methods a destination of this build accepts (named in
/// the manifest; a destination that lacks one refuses before RAM moves).
pub const SUPPORTED: &[&str] = &["zstd"];

/// The default zstd level (the reference's `multifd-zstd-level` default).
pub const ZSTD_DEFAULT_LEVEL: i32 = 1;
/// The highest zstd level accepted.
pub const ZSTD_MAX_LEVEL: i32 = 19;

/// How the source compresses page contents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Page contents as they are.
    #[default]
    None,
    /// zstd at `level` (1..=19).
    Zstd { level: i32 },
}

impl Compression {
    /// The method's name in the manifest (`None`: no compression).
    pub fn method(&self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd { .. } => Some("zstd"),
        }
    }
}

/// `--compress` was not `none`, `zstd` or `zstd:LEVEL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a compression method (expected none, zstd or zstd:LEVEL with LEVEL 1..={ZSTD_MAX_LEVEL})"
)]
pub struct BadCompression(pub String);

impl FromStr for Compression {
    type Err = BadCompression;

    fn from_str(s: &str) -> Result<Self, BadCompression> {
        let bad = || BadCompression(s.to_string());
        match s.split_once(':') {
            None if s == "none" => Ok(Compression::None),
            None if s == "zstd" => Ok(Compression::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            }),
            Some(("zstd", l)) => match l.parse::<i32>() {
                Ok(level) if (1..=ZSTD_MAX_LEVEL).contains(&level) => {
                    Ok(Compression::Zstd { level })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_methods_and_refuses_the_rest() {
        assert_eq!("none".parse(), Ok(Compression::None));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd { level: 1 }));
        assert_eq!("zstd:3".parse(), Ok(Compression::Zstd { level: 3 }));
        for bad in ["", "zlib", "zstd:", "zstd:0", "zstd:20", "zstd:x", "none:1"] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        assert_eq!(Compression::Zstd { level: 3 }.to_string(), "zstd:3");
    }
}
