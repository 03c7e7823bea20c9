//! Machine type versions (`X.Y`), ordered numerically (`5.10 > 5.9`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A machine type version `major.minor`, as in `pc-7.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MachineVersion {
    /// Major number (`7` in `7.2`).
    pub major: u16,
    /// Minor number (`2` in `7.2`).
    pub minor: u16,
}

/// A string that is not a `X.Y` version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a version of the form X.Y (e.g. 7.2)")]
pub struct VersionError(pub String);

impl MachineVersion {
    /// Builds a version (usable in statics).
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// The delta suffix: `7.2` → `7_2` (as in `hw_compat_7_2`).
    pub fn underscored(&self) -> String {
        format!("{}_{}", self.major, self.minor)
    }
}

impl FromStr for MachineVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError(s.to_string());
        let (a, b) = s.split_once('.').ok_or_else(err)?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(err());
        }
        Ok(Self {
            major: a.parse().map_err(|_| err())?,
            minor: b.parse().map_err(|_| err())?,
        })
    }
}

impl fmt::Display for MachineVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Compares dotted release strings numerically (`8.0.1 > 8.0`, `10.0 > 9.2`).
/// Non-numeric components compare as 0.
pub fn cmp_release(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (mut pa, mut pb) = (parts(a), parts(b));
    let n = pa.len().max(pb.len());
    pa.resize(n, 0);
    pb.resize(n, 0);
    pa.cmp(&pb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let a: MachineVersion = "5.10".parse().unwrap();
        let b: MachineVersion = "5.9".parse().unwrap();
        assert!(a > b);
        assert_eq!(a.to_string(), "5.10");
        assert_eq!(a.underscored(), "5_10");
        assert!("5".parse::<MachineVersion>().is_err());
        assert!("5.x".parse::<MachineVersion>().is_err());
        assert!(".1".parse::<MachineVersion>().is_err());
        assert!("99999999.1".parse::<MachineVersion>().is_err());
    }

    #[test]
    fn release_order() {
        use std::cmp::Ordering::*;
        assert_eq!(cmp_release("8.0.1", "8.0"), Greater);
        assert_eq!(cmp_release("10.0", "9.2"), Greater);
        assert_eq!(cmp_release("8.0", "8.0.0"), Equal);
    }
}
