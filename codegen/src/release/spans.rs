//! Finding the TOML spans the checker points at (the validated model keeps
//! only what the compiler needs).

use crate::ast::{DeviceAst, FieldAst, FileAst, SubsectionAst};
use crate::diag::{Loc, SourceFile};
use crate::validate::loc;

/// The parsed files of a compat tree.
pub struct Spans {
    files: Vec<FileAst>,
}

impl Spans {
    /// Parses `sources` (errors were reported by the compiler already).
    pub fn new(sources: &[SourceFile]) -> Self {
        let mut ignore = Vec::new();
        Self {
            files: crate::parse::parse_all(sources, &mut ignore),
        }
    }

    fn device(&self, name: &str) -> Option<(usize, &DeviceAst)> {
        self.files.iter().enumerate().find_map(|(i, f)| {
            f.device
                .iter()
                .map(|d| d.get_ref())
                .find(|d| d.name.get_ref() == name)
                .map(|d| (i, d))
        })
    }

    /// The device type's name.
    pub fn device_name(&self, name: &str) -> Option<Loc> {
        self.device(name).map(|(i, d)| loc(i, &d.name))
    }

    /// The `default` of `owner.prop` (or the property, if it has none).
    pub fn default(&self, owner: &str, prop: &str) -> Option<Loc> {
        let (i, d) = self.device(owner)?;
        let p = d
            .props
            .iter()
            .find(|p| p.get_ref().name.get_ref() == prop)?;
        Some(match &p.get_ref().default {
            Some(v) => loc(i, v),
            None => loc(i, p),
        })
    }

    /// `version_id` and `minimum_version_id` of the device's VMState.
    pub fn versions(&self, device: &str) -> Option<(Loc, Loc)> {
        let (i, d) = self.device(device)?;
        let v = d.vmstate.as_ref()?.get_ref();
        Some((loc(i, &v.version_id), loc(i, &v.minimum_version_id)))
    }

    /// A top-level VMState field, or a subsection's field.
    pub fn field(&self, device: &str, sub: Option<&str>, field: &str) -> Option<Loc> {
        let (i, d) = self.device(device)?;
        let v = d.vmstate.as_ref()?.get_ref();
        let fields: &[toml::Spanned<FieldAst>] = match sub {
            None => &v.fields,
            Some(s) => {
                &v.subsection
                    .iter()
                    .find(|x| x.get_ref().name.get_ref() == s)?
                    .get_ref()
                    .fields
            }
        };
        let f = fields
            .iter()
            .find(|f| f.get_ref().name.get_ref() == field)?;
        Some(loc(i, f))
    }

    /// A subsection's name.
    pub fn subsection(&self, device: &str, sub: &str) -> Option<Loc> {
        let (i, d) = self.device(device)?;
        let v = d.vmstate.as_ref()?.get_ref();
        let s: &SubsectionAst = v
            .subsection
            .iter()
            .map(|s| s.get_ref())
            .find(|s| s.name.get_ref() == sub)?;
        Some(loc(i, &s.name))
    }
}

/// 1-based line of a location.
pub fn line(sources: &[SourceFile], l: &Loc) -> usize {
    sources
        .get(l.file)
        .map(|s| {
            s.text[..l.span.start.min(s.text.len())]
                .matches('\n')
                .count()
                + 1
        })
        .unwrap_or(0)
}

/// `compat/<file>:<line>`.
pub fn at(sources: &[SourceFile], l: &Loc) -> String {
    let name = sources.get(l.file).map(|s| s.name.as_str()).unwrap_or("?");
    format!("compat/{name}:{}", line(sources, l))
}

/// The span of the first occurrence of `needle` in file `file`, else its start.
pub fn find(sources: &[SourceFile], file: usize, needle: &str) -> Loc {
    let span = sources
        .get(file)
        .and_then(|s| s.text.find(needle).map(|i| i..i + needle.len()))
        .unwrap_or(0..0);
    Loc { file, span }
}
