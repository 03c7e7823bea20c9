//! Frozen releases: writing lock files (`compat/releases/X.Y.lock.toml`),
//! reconstructing what a past release presented ([`present`]), and the compat
//! checker that holds the current tree to every lock ([`check`]).

pub mod check;
mod cpu_models;
pub mod deprecated;
mod findings;
pub mod present;
mod spans;
mod vmstate_check;

use crate::diag::{Diag, Loc, SourceFile};
use crate::model::Model;
use compat_runtime::Lock;
use compat_runtime::version::cmp_release;
use std::path::Path;

/// A parsed lock and the index of its file in the combined source list.
pub struct LockRef<'a> {
    pub file: usize,
    pub lock: &'a Lock,
    /// Every machine type any lock knows.
    pub all_machines: &'a [String],
}

/// Folder of the lock files, relative to `compat/`.
pub const LOCK_DIR: &str = "releases";

/// File name of a release's lock.
pub fn lock_file_name(release: &str) -> String {
    format!("{release}.lock.toml")
}

/// Why a release cannot be frozen.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// Not in `compat/releases.toml`.
    #[error(
        "release `{0}` is not in compat/releases.toml; add `[[release]] version = \"{0}\"` first"
    )]
    UnknownRelease(String),
    /// Serialising failed.
    #[error(transparent)]
    Lock(#[from] compat_runtime::LockError),
}

/// The lock text of `release`, reconstructed from the current tree.
pub fn freeze(model: &Model, release: &str) -> Result<String, FreezeError> {
    if !model.releases.iter().any(|r| r.version == release) {
        return Err(FreezeError::UnknownRelease(release.to_string()));
    }
    Ok(present::lock(model, Some(release), release).to_toml()?)
}

/// Every `*.lock.toml` under `compat/releases/`, oldest release first, named
/// `releases/<file>`.
pub fn read_locks(compat: &Path) -> std::io::Result<Vec<SourceFile>> {
    let dir = compat.join(LOCK_DIR);
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for e in std::fs::read_dir(&dir)? {
        let path = e?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".lock.toml") {
            let text = std::fs::read_to_string(&path)?;
            out.push(SourceFile {
                name: format!("{LOCK_DIR}/{name}"),
                text,
            });
        }
    }
    out.sort_by(|a, b| cmp_release(release_of(&a.name), release_of(&b.name)));
    Ok(out)
}

fn release_of(name: &str) -> &str {
    name.trim_start_matches("releases/")
        .trim_end_matches(".lock.toml")
}

/// The checker's result: diagnostics over `sources` (the tree, then the locks).
pub struct Checked {
    pub diags: Vec<Diag>,
    pub sources: Vec<SourceFile>,
}

impl Checked {
    /// Whether any diagnostic is an error.
    pub fn failed(&self) -> bool {
        self.diags.iter().any(Diag::is_error)
    }

    /// Plain rendering (snapshots, CI logs).
    pub fn render(&self) -> String {
        crate::render_plain(&self.diags, &self.sources)
    }
}

/// Checks the validated tree against the lock files.
pub fn check_locks(model: &Model, sources: &[SourceFile], locks: Vec<SourceFile>) -> Checked {
    let base = sources.len();
    let mut all = sources.to_vec();
    all.extend(locks);
    let mut diags = Vec::new();
    let mut parsed = Vec::new();
    for (i, src) in all.iter().enumerate().skip(base) {
        let here = Loc {
            file: i,
            span: 0..0,
        };
        match Lock::parse(&src.text) {
            Ok(l) if release_of(&src.name) == l.release => parsed.push((i, l)),
            Ok(l) => diags.push(
                Diag::error("compat::lock-name", &here, format!("{} holds release {}", src.name, l.release), "here")
                    .help(format!("a lock is named after its release: {}", lock_file_name(&l.release))),
            ),
            Err(e) => diags.push(
                Diag::error("compat::lock-syntax", &here, format!("{}: {e}", src.name), "here")
                    .help("lock files are written by `cargo xtask release` and never edited; restore it from git"),
            ),
        }
    }
    missing_locks(model, &all[..base], &all[base..], &mut diags);
    let mut all_machines: Vec<String> = Vec::new();
    for (_, l) in &parsed {
        for m in &l.machine {
            if !all_machines.contains(&m.name) {
                all_machines.push(m.name.clone());
            }
        }
    }
    let refs: Vec<LockRef> = parsed
        .iter()
        .map(|(file, lock)| LockRef {
            file: *file,
            lock,
            all_machines: &all_machines,
        })
        .collect();
    diags.extend(check::check(model, &all, &refs));
    Checked {
        diags,
        sources: all,
    }
}

/// Every release up to the newest frozen one must have its lock: a deleted
/// lock would silently stop the checker from protecting that release.
fn missing_locks(
    model: &Model,
    sources: &[SourceFile],
    locks: &[SourceFile],
    diags: &mut Vec<Diag>,
) {
    let Some(newest) = locks
        .iter()
        .map(|l| release_of(&l.name))
        .max_by(|a, b| cmp_release(a, b))
    else {
        return;
    };
    let have = |r: &str| locks.iter().any(|l| release_of(&l.name) == r);
    for r in &model.releases {
        if cmp_release(&r.version, newest).is_le() && !have(&r.version) {
            let needle = format!("version = \"{}\"", r.version);
            let file = sources
                .iter()
                .position(|s| s.name == "releases.toml")
                .unwrap_or(0);
            diags.push(
                Diag::error(
                    "compat::lock-missing",
                    &spans::find(sources, file, &needle),
                    format!("release {} has no lock file ({}/{})", r.version, LOCK_DIR, lock_file_name(&r.version)),
                    "released without a lock",
                )
                .help("restore the lock from git; if the release never had one, run `cargo xtask release` for it"),
            );
        }
    }
}
