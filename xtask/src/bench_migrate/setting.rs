//! What one row of `bench-migrate` measures besides the case: a transfer
//! setting (one stream, or N data channels, with or without zstd), which
//! settings each reference VMM is measured with (by its `--version`), and
//! the choice of each case's best setting for the ratio line.

use std::fmt;
use std::str::FromStr;

/// How guest RAM travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Data connections besides the main one: `multifd-channels` N for
    /// both VMMs. 0 is one stream (QEMU: multifd off).
    pub channels: u32,
    /// zstd level of page contents; `None`: not compressed.
    pub zstd: Option<u32>,
    /// TLS on every connection (x509, mutual; rehearsal credentials).
    pub tls: bool,
}

/// The `vmm` settings measured by default: 1 stream, 2 and 4 channels, each
/// without and with zstd.
pub const VMM_DEFAULT: &str = "0,0+zstd,2,2+zstd,4,4+zstd";

/// The zstd level both VMMs default to (`vmm`'s `zstd`, QEMU's
/// `multifd-zstd-level`).
const ZSTD_DEFAULT_LEVEL: u32 = 1;

impl FromStr for Setting {
    type Err = String;

    /// `N`, `N+zstd` or `N+zstd:LEVEL`, N the data channels (0..=16),
    /// each optionally followed by `+tls`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}`: expected N, N+zstd or N+zstd:LEVEL, optionally +tls (N = data channels 0..=16, 0 = one stream)"
            )
        };
        let (rest, tls) = match s.trim().strip_suffix("+tls") {
            Some(r) => (r, true),
            None => (s.trim(), false),
        };
        let (n, comp) = match rest.split_once('+') {
            Some((n, c)) => (n, Some(c)),
            None => (rest, None),
        };
        let channels: u32 = n.parse().map_err(|_| bad())?;
        if channels > 16 {
            return Err(bad());
        }
        let zstd = match comp {
            None => None,
            Some("zstd") => Some(ZSTD_DEFAULT_LEVEL),
            Some(c) => match c.strip_prefix("zstd:").map(str::parse::<u32>) {
                Some(Ok(l)) if (1..=19).contains(&l) => Some(l),
                _ => return Err(bad()),
            },
        };
        Ok(Self {
            channels,
            zstd,
            tls,
        })
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.channels {
            0 => write!(f, "1 stream")?,
            1 => write!(f, "1 channel")?,
            n => write!(f, "{n} channels")?,
        }
        match self.zstd {
            None => {}
            Some(ZSTD_DEFAULT_LEVEL) => write!(f, " + zstd")?,
            Some(l) => write!(f, " + zstd:{l}")?,
        }
        if self.tls {
            write!(f, " + TLS")?;
        }
        Ok(())
    }
}

/// A QEMU version, from the first line of `qemu-system-x86_64 --version`
/// (`QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text
            .lines()
            .find_map(|l| l.split_once("QEMU emulator version ").map(|(_, r)| r))?;
        let word = rest.split_whitespace().next()?;
        let mut n = word.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = n.next()??;
        let minor = n.next().flatten().unwrap_or(0);
        let micro = n.next().flatten().unwrap_or(0);
        Some(Self(major, minor, micro))
    }

    /// How the rows name this reference: `QEMU 10.0`.
    pub fn label(&self) -> String {
        format!("QEMU {}.{}", self.0, self.1)
    }

    /// What issue 11 measures of this reference: QEMU 7.x one stream only,
    /// anything newer one stream plus multifd 2 and 4 channels, without and
    /// with zstd.
    pub fn default_settings(&self) -> Vec<Setting> {
        let s = |channels, zstd| Setting {
            channels,
            zstd,
            tls: false,
        };
        if *self < Self(8, 0, 0) {
            vec![s(0, None)]
        } else {
            let z = Some(ZSTD_DEFAULT_LEVEL);
            vec![s(0, None), s(2, None), s(2, z), s(4, None), s(4, z)]
        }
    }

    /// Why this QEMU cannot run `s`, if it cannot (the row is skipped).
    pub fn unsupported(&self, s: &Setting) -> Option<String> {
        if s.channels > 0 && *self < Self(4, 0, 0) {
            Some("multifd (`multifd-channels`) needs QEMU 4.0".into())
        } else if s.zstd.is_some() && s.channels == 0 {
            Some("QEMU compresses with zstd only over multifd channels".into())
        } else if s.zstd.is_some() && *self < Self(5, 0, 0) {
            Some("`multifd-compression` needs QEMU 5.0".into())
        } else {
            None
        }
    }
}

/// The median of `v` (mean of the middle two for an even count); NaN for
/// none. NaNs sort last.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One VMM and setting of a case, by its median total time.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// `vmm`, `QEMU 10.0`.
    pub vmm: String,
    pub setting: Setting,
    pub total_ms: f64,
}

/// The lowest median total time (NaN never wins).
pub fn best(m: &[Measured]) -> Option<&Measured> {
    m.iter()
        .filter(|m| m.total_ms.is_finite())
        .min_by(|a, b| a.total_ms.total_cmp(&b.total_ms))
}

/// `ratio WORKLOAD SIZE: total REF/vmm X.XXx ...`: the best reference
/// setting's median total time over `vmm`'s best (> 1: `vmm` is faster).
pub fn ratio_line(
    workload: &str,
    mib: u64,
    ours: &[Measured],
    theirs: &[Measured],
) -> Option<String> {
    let (o, r) = (best(ours)?, best(theirs)?);
    Some(format!(
        "ratio {workload} {mib} MiB: total {}/vmm {:.2}x (vmm best: {}, {:.0} ms; {} best: {}, {:.0} ms)",
        r.vmm,
        r.total_ms / o.total_ms.max(1e-3),
        o.setting,
        o.total_ms,
        r.vmm,
        r.setting,
        r.total_ms
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Setting {
        t.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn settings_parse_and_label() {
        let all: Vec<String> = VMM_DEFAULT.split(',').map(|t| s(t).to_string()).collect();
        assert_eq!(
            all,
            [
                "1 stream",
                "1 stream + zstd",
                "2 channels",
                "2 channels + zstd",
                "4 channels",
                "4 channels + zstd"
            ]
        );
        assert_eq!(s("1+zstd:3").to_string(), "1 channel + zstd:3");
        assert_eq!(s("4+tls").to_string(), "4 channels + TLS");
        assert_eq!(s("2+zstd+tls").to_string(), "2 channels + zstd + TLS");
        assert!("tls".parse::<Setting>().is_err());
        for bad in ["", "x", "17", "2+lz4", "2+zstd:0", "2+zstd:20", "-1"] {
            assert!(bad.parse::<Setting>().is_err(), "{bad}");
        }
    }

    #[test]
    fn qemu_versions() {
        let v = Version::parse(
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025",
        );
        assert_eq!(v, Some(Version(10, 0, 2)));
        assert_eq!(
            Version::parse("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b2)"),
            Some(Version(7, 2, 22))
        );
        assert_eq!(
            Version::parse("QEMU emulator version 9.1"),
            Some(Version(9, 1, 0))
        );
        assert_eq!(Version::parse("qemu 8"), None);
        assert_eq!(
            Version::parse("true (GNU coreutils) 9.1\nLicense GPLv3+: GNU GPL version 3 or later"),
            None
        );
        assert_eq!(Version::parse("QEMU emulator version x.y"), None);
        assert_eq!(Version(10, 0, 2).label(), "QEMU 10.0");
    }

    #[test]
    fn reference_settings_by_version() {
        let names = |v: Version| -> Vec<String> {
            v.default_settings()
                .iter()
                .map(Setting::to_string)
                .collect()
        };
        assert_eq!(names(Version(7, 2, 22)), ["1 stream"]);
        assert_eq!(
            names(Version(10, 0, 2)),
            [
                "1 stream",
                "2 channels",
                "2 channels + zstd",
                "4 channels",
                "4 channels + zstd"
            ]
        );
        let v10 = Version(10, 0, 2);
        assert!(v10.unsupported(&s("0+zstd")).is_some());
        assert!(v10.unsupported(&s("4+zstd:3")).is_none());
        assert!(Version(3, 1, 0).unsupported(&s("2")).is_some());
        assert!(Version(4, 2, 0).unsupported(&s("2+zstd")).is_some());
        assert!(Version(7, 2, 0).unsupported(&s("2+zstd")).is_none());
    }

    #[test]
    fn best_settings_and_ratio() {
        let m = |vmm: &str, set: &str, total_ms| Measured {
            vmm: vmm.into(),
            setting: s(set),
            total_ms,
        };
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let ours = [
            m("vmm", "0", 900.0),
            m("vmm", "4+zstd", 300.0),
            m("vmm", "2", f64::NAN),
        ];
        let theirs = [
            m("QEMU 7.2", "0", 700.0),
            m("QEMU 10.0", "4", 450.0),
            m("QEMU 10.0", "0", 650.0),
        ];
        assert_eq!(best(&ours).map(|b| b.setting), Some(s("4+zstd")));
        assert_eq!(best(&theirs).map(|b| b.vmm.as_str()), Some("QEMU 10.0"));
        assert_eq!(
            ratio_line("fill", 1024, &ours, &theirs).as_deref(),
            Some(
                "ratio fill 1024 MiB: total QEMU 10.0/vmm 1.50x (vmm best: 4 channels + zstd, 300 ms; \
                 QEMU 10.0 best: 4 channels, 450 ms)"
            )
        );
        assert_eq!(ratio_line("idle", 256, &ours, &[]), None);
        assert_eq!(
            ratio_line("idle", 256, &[m("vmm", "0", f64::NAN)], &theirs),
            None
        );
    }
}
