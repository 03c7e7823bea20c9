//! Writing the generated files, and finding stale ones (`gen --check`).

use crate::emit::GeneratedFile;
use std::path::Path;

/// Names of files under `dir` that differ from `files`, are missing, or are
/// `.rs` files the generator would not produce.
pub fn stale(dir: &Path, files: &[GeneratedFile]) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        match std::fs::read_to_string(dir.join(&f.name)) {
            Ok(s) if s == f.content => {}
            Ok(_) => out.push(f.name.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(f.name.clone()),
            Err(e) => return Err(e),
        }
    }
    if dir.is_dir() {
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".rs") && !files.iter().any(|f| f.name == name) {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes every file whose content changed and removes `.rs` files the
/// generator no longer produces; returns the names touched.
pub fn write(dir: &Path, files: &[GeneratedFile]) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let touched = stale(dir, files)?;
    for name in &touched {
        match files.iter().find(|f| &f.name == name) {
            Some(f) => std::fs::write(dir.join(name), &f.content)?,
            None => std::fs::remove_file(dir.join(name))?,
        }
    }
    Ok(touched)
}
