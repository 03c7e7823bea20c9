//! Phase 1: read the compat tree and parse every file (all syntax errors at once).

use crate::ast::FileAst;
use crate::diag::{Diag, Loc, SourceFile};
use std::path::Path;

/// Reads every `*.toml` under `dir` (recursively, sorted by relative path),
/// except release locks (`*.lock.toml`, see [`crate::release`]).
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml")
            && !path.to_string_lossy().ends_with(".lock.toml")
            // The oracle's allow-list (`cargo xtask oracle`) is not compiled.
            && !path.to_string_lossy().ends_with(".allow.toml")
        {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path)?;
            out.push(SourceFile { name, text });
        }
    }
    Ok(())
}

/// Parses each file; a file that does not parse yields a diagnostic and an
/// empty document so later phases still see the other files.
pub fn parse_all(sources: &[SourceFile], diags: &mut Vec<Diag>) -> Vec<FileAst> {
    sources
        .iter()
        .enumerate()
        .map(|(file, src)| match toml::from_str::<FileAst>(&src.text) {
            Ok(ast) => ast,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let msg = e.message().trim().to_string();
                let first = msg.lines().next().unwrap_or("invalid TOML").to_string();
                diags.push(
                    Diag::error(
                        "compat::syntax",
                        &Loc { file, span },
                        format!("{}: {first}", src.name),
                        first,
                    )
                    .help("see compat/README.md for the schema"),
                );
                FileAst::default()
            }
        })
        .collect()
}
