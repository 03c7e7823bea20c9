//! Diagnostics: collected by every phase, rendered with miette.

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, Severity,
};
use std::fmt;
use std::ops::Range;

/// A TOML source file of the compat tree.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the compat directory (as shown in diagnostics).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// A location: file index into the source list and byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// Index of the file in the source list.
    pub file: usize,
    /// Byte range.
    pub span: Range<usize>,
}

/// One compiler diagnostic (error or warning) with its labelled spans.
#[derive(Debug, Clone)]
pub struct Diag {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code, e.g. `compat::unknown-type`.
    pub code: &'static str,
    /// One-line message.
    pub message: String,
    /// File the labels point into.
    pub file: usize,
    /// Labelled spans.
    pub labels: Vec<(Range<usize>, String)>,
    /// Help line.
    pub help: Option<String>,
}

impl Diag {
    /// An error at `loc` with a label.
    pub fn error(
        code: &'static str,
        loc: &Loc,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            file: loc.file,
            labels: vec![(loc.span.clone(), label.into())],
            help: None,
        }
    }

    /// A warning at `loc` with a label.
    pub fn warning(
        code: &'static str,
        loc: &Loc,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, loc, message, label)
        }
    }

    /// Adds a help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a help line suggesting a close candidate, if there is one.
    pub fn suggest(self, candidate: Option<String>) -> Self {
        match candidate {
            Some(c) => self.help(format!("did you mean `{c}`?")),
            None => self,
        }
    }

    /// Adds a secondary label (same file only; other files are ignored).
    pub fn label(mut self, loc: &Loc, label: impl Into<String>) -> Self {
        if loc.file == self.file {
            self.labels.push((loc.span.clone(), label.into()));
        }
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Attaches the source, making a miette diagnostic.
    pub fn with_source(&self, sources: &[SourceFile]) -> CompatDiagnostic {
        let (name, text) = sources
            .get(self.file)
            .map(|s| (s.name.clone(), s.text.clone()))
            .unwrap_or_else(|| ("<unknown>".into(), String::new()));
        let len = text.len();
        let labels = self
            .labels
            .iter()
            .map(|(r, l)| {
                let start = r.start.min(len);
                let end = r.end.clamp(start, len);
                LabeledSpan::new(Some(l.clone()), start, end - start)
            })
            .collect();
        CompatDiagnostic {
            severity: self.severity,
            code: self.code,
            message: self.message.clone(),
            help: self.help.clone(),
            src: NamedSource::new(name, text),
            labels,
        }
    }
}

/// A diagnostic with its source file, ready for miette.
#[derive(Debug)]
pub struct CompatDiagnostic {
    severity: Severity,
    code: &'static str,
    message: String,
    help: Option<String>,
    src: NamedSource<String>,
    labels: Vec<LabeledSpan>,
}

impl fmt::Display for CompatDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CompatDiagnostic {}

impl Diagnostic for CompatDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

/// Renders diagnostics as plain ASCII without colours (stable for snapshots
/// and CI logs), separated by blank lines.
pub fn render_plain(diags: &[Diag], sources: &[SourceFile]) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::none()).with_width(100);
    let mut out = String::new();
    for d in diags {
        let cd = d.with_source(sources);
        if handler.render_report(&mut out, &cd).is_err() {
            out.push_str(&cd.to_string());
        }
        out.push('\n');
    }
    out
}
