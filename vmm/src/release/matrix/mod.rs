//! `vmm compat matrix`: for every ordered pair of frozen releases and every
//! machine type both know, whether a guest migrates, and if not exactly which
//! property or section differs (and which destination setting would fix it).
//!
//! The release locks (`compat/releases/*.lock.toml`) are embedded in the
//! binary ([`locks::LOCKS`], written by `cargo xtask gen`); the verdict of one
//! pair is [`compat_runtime::release::migrate`].

// Written by `cargo xtask gen`; rustfmt leaves it alone.
#[rustfmt::skip]
pub mod locks;
mod render;
#[cfg(test)]
mod tests;

use crate::builder::layout;
use compat_runtime::release::{Verdict, migrate_with};
use compat_runtime::suggest::{did_you_mean, hint};
use compat_runtime::version::cmp_release;
use compat_runtime::{Catalog, Lock};
use serde::Serialize;

pub use render::{json, text};

/// Arguments of `vmm compat matrix`.
#[derive(clap::Args, Debug, Default)]
pub struct MatrixArgs {
    /// Only this machine type (or alias).
    #[arg(short = 'M', long = "machine")]
    pub machine: Option<String>,
    /// Only these releases, comma-separated, in this order (default: every
    /// frozen release; `next` is this build).
    #[arg(long, value_delimiter = ',')]
    pub releases: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Bad input or a broken embedded lock.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// No lock for that release.
    #[error("unknown release `{name}`{}", hint(.suggestion))]
    UnknownRelease {
        name: String,
        suggestion: Option<String>,
    },
    /// No release knows that machine type.
    #[error("no release knows machine type `{name}`{}", hint(.suggestion))]
    UnknownMachine {
        name: String,
        suggestion: Option<String>,
    },
    /// An embedded lock does not parse (a build problem, not the user's).
    #[error("embedded lock of release {release}: {error}")]
    BadLock { release: String, error: String },
    /// JSON output failed.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One cell: a guest of `machine` started on `source` migrating to `destination`.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub machine: String,
    pub source: String,
    pub destination: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The name of this build in the matrix (the next, unreleased version).
pub const NEXT: &str = "next";

/// Every embedded lock, oldest release first, then this build as [`NEXT`],
/// each holding only the properties a migration compares.
pub fn with_next(catalog: &Catalog) -> Result<Vec<Lock>, MatrixError> {
    let mut all = embedded()?;
    all.push(catalog.as_lock(NEXT));
    Ok(all.into_iter().map(|l| compared_only(l, catalog)).collect())
}

/// Every embedded lock, oldest release first (every property it froze).
pub fn embedded() -> Result<Vec<Lock>, MatrixError> {
    locks::LOCKS
        .iter()
        .map(|(release, text)| {
            Lock::parse(text).map_err(|e| MatrixError::BadLock {
                release: release.to_string(),
                error: e.to_string(),
            })
        })
        .collect()
}

/// A lock without the properties whose effect is none in this VMM: they
/// change nothing the guest or the stream sees, so they never refuse a
/// migration (`effect` in `compat/devices/*.toml`).
pub fn compared_only(mut lock: Lock, catalog: &Catalog) -> Lock {
    for m in &mut lock.machine {
        for (t, props) in &mut m.props {
            props.retain(|p, _| catalog.compared(t, p));
        }
    }
    lock
}

/// Picks the locks named in `names` (every frozen release when empty), in
/// that order.
pub fn select<'a>(all: &'a [Lock], names: &[String]) -> Result<Vec<&'a Lock>, MatrixError> {
    if names.is_empty() {
        return Ok(all.iter().filter(|l| l.release != NEXT).collect());
    }
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|l| &l.release == n)
                .ok_or_else(|| MatrixError::UnknownRelease {
                    name: n.clone(),
                    suggestion: did_you_mean(n, all.iter().map(|l| l.release.as_str())),
                })
        })
        .collect()
}

/// Every machine type the given locks know, oldest first (`machine`, an
/// alias resolved through `catalog`, restricts it to one).
pub fn machines(
    locks: &[&Lock],
    machine: Option<&str>,
    catalog: &Catalog,
) -> Result<Vec<String>, MatrixError> {
    let mut all: Vec<String> = Vec::new();
    for l in locks {
        for m in &l.machine {
            if !all.contains(&m.name) {
                all.push(m.name.clone());
            }
        }
    }
    let sort_key = |n: &String| catalog.machine(n).map(|m| (m.family, m.version));
    all.sort_by_key(sort_key);
    let Some(want) = machine else {
        return Ok(all);
    };
    let name = catalog.machine(want).map_or(want, |m| m.name);
    if all.iter().any(|m| m == name) {
        Ok(vec![name.to_string()])
    } else {
        Err(MatrixError::UnknownMachine {
            name: want.to_string(),
            suggestion: did_you_mean(want, all.iter().map(String::as_str)),
        })
    }
}

/// Whether release `release` can be started with a chosen value of
/// `type.prop`: not when an erratum on that property was fixed only later
/// (the fix is what introduced the property, as with 8.0.1's
/// `x-pcie-err-unc-mask`). Conservative: never offers a fix that may not exist.
pub fn settable(catalog: &Catalog, release: &str, ty: &str, prop: &str) -> bool {
    release == NEXT
        || !catalog.releases.iter().flat_map(|r| r.errata).any(|e| {
            e.property == prop
                && catalog.is_subtype(ty, e.type_name)
                && cmp_release(release, e.fixed_in).is_lt()
        })
}

/// The matrix: per machine type, every ordered pair of `locks`.
pub fn matrix(locks: &[&Lock], machines: &[String], catalog: &Catalog) -> Vec<Cell> {
    let mut out = Vec::with_capacity(machines.len() * locks.len() * locks.len());
    for m in machines {
        for src in locks {
            for dst in locks {
                out.push(Cell {
                    machine: m.clone(),
                    source: src.release.clone(),
                    destination: dst.release.clone(),
                    verdict: device_fix(migrate_with(src, dst, m, &|t, p| {
                        settable(catalog, &dst.release, t, p)
                    })),
                });
            }
        }
    }
    out
}

/// Spells a fix on a device type the machine has one instance of as the
/// reference does, `--device TYPE,PROP=VALUE` (the seed's own fix for the
/// 8.0 AER breakage); other types keep `-global TYPE.PROP=VALUE`.
fn device_fix(v: Verdict) -> Verdict {
    let Verdict::Fails { differences, fix } = v else {
        return v;
    };
    let fix = fix
        .into_iter()
        .map(|f| {
            let Some((ty, setting)) = f.strip_prefix("-global ").and_then(|g| g.split_once('.'))
            else {
                return f;
            };
            if layout::SINGLE_INSTANCE.contains(&ty) {
                format!("--device {ty},{setting}")
            } else {
                f
            }
        })
        .collect();
    Verdict::Fails { differences, fix }
}

/// `vmm compat matrix`: writes the matrix to `out`.
pub fn run(args: &MatrixArgs, catalog: &Catalog, out: &mut String) -> Result<(), MatrixError> {
    let all = with_next(catalog)?;
    let locks = select(&all, &args.releases)?;
    let ms = machines(&locks, args.machine.as_deref(), catalog)?;
    let cells = matrix(&locks, &ms, catalog);
    if args.json {
        out.push_str(&json(&cells)?);
    } else {
        out.push_str(&text(&cells));
    }
    Ok(())
}
