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
