//! A scratch copy of a compat tree, for tests and tools that must edit one
//! without touching the repository (`cargo xtask release` tests, the
//! maintainer-workflow tests). Removed on drop.

use std::io;
use std::path::{Path, PathBuf};

/// A scratch directory under the system temp dir, removed on drop.
pub struct ScratchTree(pub PathBuf);

impl ScratchTree {
    /// A fresh (emptied) scratch directory named after `name` and this process.
    pub fn new(name: &str) -> ScratchTree {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ScratchTree(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the directory tree `from` to `to` (created as needed).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let p = e?.path();
        let Some(name) = p.file_name() else {
            continue;
        };
        let target = to.join(name);
        if p.is_dir() {
            copy_dir(&p, &target)?;
        } else {
            std::fs::copy(&p, &target)?;
        }
    }
    Ok(())
}
