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

#[allow(unused_imports)]
pub use codegen::scratch::ScratchTree as TempTree;

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    codegen::scratch::copy_dir(from, to).expect("copy the tree");
}

/// A copy of the real `compat/` tree in a fresh scratch directory (`tag`
/// names it), removed on drop.
#[allow(dead_code)] // not every test binary edits a copy
pub fn compat_copy(tag: &str) -> TempTree {
    let t = TempTree::new(tag);
    copy_dir(&repo().join("compat"), &t.0);
    t
}

/// Replaces `from` (which must occur) by `to` in `file` of the tree.
#[allow(dead_code)]
pub fn edit(t: &TempTree, file: &str, from: &str, to: &str) {
    let path = t.0.join(file);
    let s = std::fs::read_to_string(&path).expect("read");
    assert!(s.contains(from), "{file} lacks {from:?}");
    std::fs::write(&path, s.replacen(from, to, 1)).expect("write");
}
