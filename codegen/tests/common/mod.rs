//! Shared test helpers.
#![allow(dead_code)]

use codegen::SourceFile;
use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn read(dir: &Path) -> Vec<SourceFile> {
    codegen::parse::read_dir(dir).expect("read fixture dir")
}

/// The base fixture plus one diagnostic fixture file.
pub fn base_plus(fixture: &str) -> Vec<SourceFile> {
    let mut s = read(&fixtures().join("base"));
    let path = fixtures().join("diag").join(fixture);
    let text = std::fs::read_to_string(&path).expect("fixture");
    s.push(SourceFile {
        name: format!("diag/{fixture}"),
        text,
    });
    s
}

/// Renders every diagnostic (errors and warnings) of a tree.
pub fn render(sources: &[SourceFile]) -> String {
    let (_, diags) = codegen::check(sources);
    codegen::render_plain(&diags, sources)
}

/// A scratch directory, removed on drop.
pub struct TempTree(pub PathBuf);

impl TempTree {
    /// A fresh (emptied) scratch directory named after `name` and this process.
    pub fn new(name: &str) -> TempTree {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempTree(dir)
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let target = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).expect("copy");
        }
    }
}
