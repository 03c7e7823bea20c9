//! A destination adopting a stream's configuration, and a source announcing
//! what it presents: the origin of every adopted value travels with the
//! guest ([`Origins`]) and along every later migration.

use super::{Persona, PersonaError};
use crate::builder::config::{self as bconfig, Origins};
use crate::release::matrix;
use compat_runtime::EffectiveConfig;
use migration::config as mconfig;
use migration::manifest::Manifest;

/// How adopted values are spelled in a manifest and in `ctl status`.
const STREAM: &str = "stream";
const ORIGIN_SEP: &str = "; origin: ";

/// The origin of an adopted value, from its provenance in the stream and the
/// stream's source release: carried on if the source had adopted it too,
/// else the source's own provenance (`-global on release 8.0.1`,
/// `release 8.0 (erratum aer-uncor-mask)`).
pub fn origin_of(provenance: &str, source_release: &str) -> String {
    if let Some(o) = provenance
        .strip_prefix(STREAM)
        .and_then(|r| r.strip_prefix(ORIGIN_SEP))
    {
        o.to_string()
    } else if provenance == STREAM {
        format!("a stream, before release {source_release}")
    } else if provenance.starts_with("release ") {
        provenance.to_string()
    } else {
        format!("{provenance} on release {source_release}")
    }
}

impl Persona {
    /// Stamps an outgoing manifest with this release (its name as the source
    /// release and the lock's version of every section it lists) and the
    /// origin of every value this guest adopted from a stream (provenance
    /// `stream; origin: ...`, see [`origin_of`]).
    pub fn announce(&self, m: &mut Manifest, origins: &Origins) {
        for ((dev, prop), o) in origins {
            if let Some(pv) = m.config.get_mut(dev).and_then(|d| d.get_mut(prop))
                && pv.provenance == STREAM
            {
                pv.provenance = format!("{STREAM}{ORIGIN_SEP}{o}");
            }
        }
        let Some(lock) = self.lock() else {
            return;
        };
        m.source_release = lock.release.clone();
        m.format_version = lock.stream_format;
        for s in &mut m.sections {
            let base = s.name.split_once('/').map_or(s.name.as_str(), |(b, _)| b);
            if let Some(l) = lock.section(base) {
                s.version_id = l.version_id;
            }
        }
    }

    /// Adopts a stream's configuration onto this release's `base`, refusing
    /// values the release cannot present (a property whose erratum fix came
    /// after it, as 8.0.1's `x-pcie-err-unc-mask` for 7.2); returns the
    /// configuration and where each adopted value was first set.
    pub fn adopt(
        &self,
        base: &EffectiveConfig,
        m: &Manifest,
    ) -> Result<(EffectiveConfig, Origins), PersonaError> {
        let stream = &m.config;
        let catalog = bconfig::catalog();
        let out = mconfig::adopt(base, stream, catalog)
            .map_err(|e| PersonaError::Config(e.to_string()))?;
        let mut origins = Origins::new();
        for d in out.diff(base) {
            let Some(adopted) = d.left.as_ref() else {
                continue;
            };
            if !matrix::settable(catalog, self.release(), &d.type_name, &d.property) {
                return Err(PersonaError::NotSettable {
                    release: self.release().to_string(),
                    device: d.type_name.clone(),
                    property: d.property.clone(),
                    value: adopted.value.to_string(),
                });
            }
            if let Some(pv) = stream.get(&d.type_name).and_then(|p| p.get(&d.property)) {
                let o = origin_of(&pv.provenance, &m.source_release);
                origins.insert((d.type_name.clone(), d.property.clone()), o);
            }
        }
        Ok((out, origins))
    }
}
