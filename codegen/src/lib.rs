//! The compat-table compiler: `compat/*.toml` → validated, resolved,
//! generated Rust (`devices/src/generated/`).
//!
//! Phases: [`parse`] → [`validate`] → [`resolve`] → [`emit`]. Every phase
//! collects [`Diag`]nostics instead of stopping; [`compile`] reports them all
//! at once. Nothing here panics on any input.

#![forbid(unsafe_code)]

pub mod ast;
pub mod diag;
pub mod emit;
pub mod model;
pub mod output;
pub mod parse;
pub mod release;
pub mod report;
pub mod resolve;
pub mod scratch;
pub mod validate;

pub use diag::{CompatDiagnostic, Diag, SourceFile, render_plain};
pub use emit::{GeneratedFile, STAMP};
pub use resolve::Resolved;

use std::path::Path;

/// A successful compilation.
#[derive(Debug)]
pub struct Compiled {
    /// The resolved tree (for reports and tests).
    pub resolved: Resolved,
    /// The generated files.
    pub files: Vec<GeneratedFile>,
    /// Warnings (compilation still succeeded).
    pub warnings: Vec<Diag>,
    /// The sources, for rendering warnings.
    pub sources: Vec<SourceFile>,
}

/// A failed compilation: every error and warning found.
#[derive(Debug)]
pub struct Failed {
    /// All diagnostics, errors and warnings, in discovery order.
    pub diags: Vec<Diag>,
    /// The sources, for rendering.
    pub sources: Vec<SourceFile>,
}

impl Failed {
    /// Plain-text rendering of every diagnostic.
    pub fn render(&self) -> String {
        render_plain(&self.diags, &self.sources)
    }

    /// The diagnostics as miette reports (for fancy rendering at the edge).
    pub fn reports(&self) -> Vec<CompatDiagnostic> {
        self.diags
            .iter()
            .map(|d| d.with_source(&self.sources))
            .collect()
    }
}

/// Validates and resolves without emitting.
pub fn check(sources: &[SourceFile]) -> (Option<Resolved>, Vec<Diag>) {
    let mut diags = Vec::new();
    let files = parse::parse_all(sources, &mut diags);
    let model = validate::validate(&files, &mut diags);
    if diags.iter().any(Diag::is_error) {
        return (None, diags);
    }
    let resolved = resolve::resolve(model, &mut diags);
    (Some(resolved), diags)
}

/// Compiles sources: parse, validate, resolve, emit.
pub fn compile(sources: Vec<SourceFile>) -> Result<Compiled, Failed> {
    let (resolved, diags) = check(&sources);
    let Some(resolved) = resolved else {
        return Err(Failed { diags, sources });
    };
    match emit::emit(&resolved) {
        Ok(files) => Ok(Compiled {
            resolved,
            files,
            warnings: diags,
            sources,
        }),
        Err(e) => {
            let mut diags = diags;
            diags.push(Diag {
                severity: miette::Severity::Error,
                code: "compat::internal",
                message: e.to_string(),
                file: 0,
                labels: Vec::new(),
                help: Some("this is a bug in codegen; please report it".into()),
            });
            Err(Failed { diags, sources })
        }
    }
}

/// Reads `dir` and compiles it.
pub fn compile_dir(dir: &Path) -> std::io::Result<Result<Compiled, Failed>> {
    Ok(compile(parse::read_dir(dir)?))
}
