//! `compat/oracle.allow.toml`: the differences from the reference that are
//! explained, each with its reason.

use super::Difference;
use std::path::Path;

/// One explained difference: `type`/`property` (`*` for any), the machine
/// types (`*` or a list) and the references (`*` or labels like `QEMU 7.2`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(rename = "type")]
    pub type_name: String,
    pub property: String,
    #[serde(default = "any")]
    pub machines: Vec<String>,
    #[serde(default = "any")]
    pub references: Vec<String>,
    pub reason: String,
}

fn any() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    #[serde(default)]
    pub allow: Vec<Entry>,
}

fn hit(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

impl Allow {
    /// Reads the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The reason that explains `d`, if any.
    pub fn explains(&self, d: &Difference) -> Option<&str> {
        self.allow
            .iter()
            .find(|e| {
                (e.type_name == "*" || e.type_name == d.type_name)
                    && (e.property == "*" || e.property == d.property)
                    && hit(&e.machines, &d.machine)
                    && hit(&e.references, &d.reference)
            })
            .map(|e| e.reason.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_by_type_property_machine_and_reference() {
        let a: Allow = toml::from_str(
            r#"
[[allow]]
type = "pcie-root-port"
property = "x-pcie-ext-tag"
machines = ["pc-7.2"]
reason = "erratum"
"#,
        )
        .unwrap();
        let d = |m: &str, p: &str| Difference {
            reference: "QEMU 10.0".into(),
            machine: m.into(),
            type_name: "pcie-root-port".into(),
            property: p.into(),
            ours: "on".into(),
            theirs: "off".into(),
        };
        assert_eq!(a.explains(&d("pc-7.2", "x-pcie-ext-tag")), Some("erratum"));
        assert_eq!(a.explains(&d("pc-8.0", "x-pcie-ext-tag")), None);
        assert_eq!(a.explains(&d("pc-7.2", "slot")), None);
    }
}
