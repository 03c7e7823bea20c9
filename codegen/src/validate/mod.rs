//! Phase 2: validate the parsed files into a [`Model`], reporting every
//! problem found (the phase never stops at the first).

mod deltas;
mod features;
mod lifecycle;
mod machines;
mod types;
mod vmstate;

use crate::ast::FileAst;
use crate::diag::{Diag, Loc};
use crate::model::Model;
use toml::Spanned;

/// Validates all files together (items may refer across files).
pub fn validate(files: &[FileAst], diags: &mut Vec<Diag>) -> Model {
    let releases = deltas::releases(files, diags);
    let features = features::features(files, diags);
    let types = types::device_types(files, &features, diags);
    let release_names: Names = releases.iter().map(|r| r.version.clone()).collect();
    let mut families = machines::families(files, &types, &release_names, diags);
    let lifecycle_rule = lifecycle::rule(files, diags);
    if let Some(rule) = &lifecycle_rule {
        lifecycle::apply(rule, &releases, &mut families, diags);
    }
    let deltas = deltas::deltas(files, &types, &families, &release_names, diags);
    let releases = deltas::errata(files, releases, &types, &release_names, diags);
    let deprecations = deltas::deprecations(files, &release_names, diags);
    Model {
        families,
        types,
        deltas,
        releases,
        deprecations,
        features,
        lifecycle_rule: lifecycle_rule.map(|(r, _)| r),
    }
}

/// A set of names (releases) with fast membership.
pub(crate) type Names = std::collections::BTreeSet<String>;

/// The location of a spanned item.
pub(crate) fn loc<T>(file: usize, s: &Spanned<T>) -> Loc {
    Loc {
        file,
        span: s.span(),
    }
}

/// Whether `s` is a usable name: a letter, then letters, digits, `-`, `_`.
pub(crate) fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// Reports a bad name; returns whether it was fine.
pub(crate) fn check_name(
    file: usize,
    s: &Spanned<String>,
    what: &str,
    diags: &mut Vec<Diag>,
) -> bool {
    if valid_name(s.get_ref()) {
        return true;
    }
    diags.push(
        Diag::error(
            "compat::bad-name",
            &loc(file, s),
            format!("invalid {what} name `{}`", s.get_ref()),
            "here",
        )
        .help("names start with a letter and contain only letters, digits, `-` and `_`"),
    );
    false
}

/// Whether a release name is dotted numbers (`8.0.1`).
pub(crate) fn valid_release(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Reports a reference to an unknown release.
pub(crate) fn check_release(
    file: usize,
    s: &Spanned<String>,
    what: &str,
    releases: &Names,
    diags: &mut Vec<Diag>,
) -> bool {
    if releases.contains(s.get_ref()) {
        return true;
    }
    let sugg =
        compat_runtime::suggest::did_you_mean(s.get_ref(), releases.iter().map(String::as_str));
    diags.push(
        Diag::error(
            "compat::unknown-release",
            &loc(file, s),
            format!("{what} names unknown release `{}`", s.get_ref()),
            "not in releases.toml",
        )
        .suggest(sugg)
        .help_if_none("add the release to the release history first"),
    );
    false
}

impl Diag {
    /// Sets a help line unless one is already set.
    pub(crate) fn help_if_none(self, help: &str) -> Self {
        if self.help.is_some() {
            self
        } else {
            self.help(help)
        }
    }
}
