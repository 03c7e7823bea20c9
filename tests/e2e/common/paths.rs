//! Scratch paths: one guard for a file, socket or snapshot in the temp
//! directory, removed on drop.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique path in the temp dir (`vmm-e2e-TAG-PID-N.EXT`), removed on drop
/// (if anything created it; a directory with what it holds).
pub struct TempPath(PathBuf);

impl TempPath {
    /// A fresh path; nothing is created.
    pub fn new(tag: &str, ext: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("vmm-e2e-{tag}-{}-{n}.{ext}", std::process::id());
        Self(std::env::temp_dir().join(name))
    }

    /// A zero-filled file of `size` bytes (a disk image).
    pub fn sized(tag: &str, size: u64) -> Self {
        let p = Self::new(tag, "img");
        let f = std::fs::File::create(&p.0).expect("create temp image");
        f.set_len(size).expect("size temp image");
        p
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }

    /// `SCHEME:PATH` (`file:`, `unix:`).
    pub fn uri(&self, scheme: &str) -> String {
        format!("{scheme}:{}", self.0.display())
    }

    /// `--drive` argument for this file.
    pub fn drive(&self) -> String {
        format!("file={}", self.0.display())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
