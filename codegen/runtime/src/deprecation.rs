//! Deprecation lifecycle at run time: the warning or refusal for a machine
//! type (deprecated: still runs and accepts incoming migrations, with a
//! warning; removed: refused, naming the oldest supported machine type) and the warning for a
//! deprecated feature such as the `inc`/`blk` migrate options.

use crate::table::{Catalog, Deprecation, Lifecycle, MachineType};

/// How a machine type is about to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineUse {
    /// `vmm run`: a new VM.
    Run,
    /// `vmm run --incoming`: receiving a migrated guest.
    Incoming,
}

/// What to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Print it and go on.
    Warning(String),
    /// Print it and refuse.
    Refusal(String),
}

impl Catalog {
    /// The oldest supported (neither deprecated nor removed) machine type of
    /// `m`'s family: the one to name when `m` is refused.
    pub fn oldest_supported(&self, m: &MachineType) -> &str {
        let family = self.family(m.family);
        family
            .and_then(|f| {
                f.machines
                    .iter()
                    .find(|n| n.lifecycle == Lifecycle::Supported)
                    .or(f.machines.last())
            })
            .map_or(m.name, |n| n.name)
    }

    /// The notice for using machine type `m`, if its lifecycle calls for one.
    /// A deprecated machine type warns in the reference's words and still
    /// runs and accepts incoming guests; a removed one is refused for both
    /// (the reference has no such machine type at all any more).
    pub fn machine_notice(&self, m: &MachineType, how: MachineUse) -> Option<Notice> {
        match m.lifecycle {
            Lifecycle::Supported => None,
            Lifecycle::Deprecated { reason, .. } => Some(Notice::Warning(format!(
                "Machine type '{}' is deprecated: {reason}",
                m.name
            ))),
            Lifecycle::Removed { since, reason } => {
                let oldest = self.oldest_supported(m);
                let incoming = match how {
                    MachineUse::Run => String::new(),
                    MachineUse::Incoming => format!(
                        "; a guest of {} can only move to a release that still has it",
                        m.name
                    ),
                };
                Some(Notice::Refusal(format!(
                    "machine type '{}' was removed in {since} ({reason}); the oldest supported machine type is {oldest} (vmm machines lists them){incoming}",
                    m.name
                )))
            }
        }
    }

    /// A deprecated feature by id (`migrate-inc`, `migrate-blk`,
    /// `block-migration`, `old-compression`).
    pub fn deprecation(&self, id: &str) -> Option<&Deprecation> {
        self.deprecations.iter().find(|d| d.id == id)
    }

    /// The warning for a deprecated `migrate` option (`inc`, `blk`) or
    /// feature id; `None` when it is not deprecated.
    pub fn migrate_option_warning(&self, option: &str) -> Option<String> {
        let id = match option {
            "inc" => "migrate-inc",
            "blk" => "migrate-blk",
            other => other,
        };
        self.deprecation(id).map(Deprecation::warning)
    }
}

impl Deprecation {
    /// `<feature> is deprecated since <since>; use instead: <replacement>`.
    pub fn warning(&self) -> String {
        format!(
            "{} is deprecated since {}; use instead: {}",
            self.feature, self.since, self.replacement
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{LIFECYCLE as CATALOG, LIFECYCLE_MACHINES as MACHINES};

    #[test]
    fn machine_lifecycles() {
        let [removed, deprecated, supported] = &MACHINES;
        assert_eq!(CATALOG.machine_notice(supported, MachineUse::Run), None);
        let Some(Notice::Warning(w)) = CATALOG.machine_notice(deprecated, MachineUse::Run) else {
            panic!("deprecated machine: a warning")
        };
        assert_eq!(
            w,
            "Machine type 'pc-9.1' is deprecated: machines more than 3 years old are subject to deletion after 6 years"
        );
        assert_eq!(
            CATALOG.machine_notice(deprecated, MachineUse::Incoming),
            Some(Notice::Warning(w))
        );
        let Some(Notice::Refusal(r)) = CATALOG.machine_notice(removed, MachineUse::Run) else {
            panic!("removed machine: a refusal")
        };
        assert_eq!(
            r,
            "machine type 'pc-9.0' was removed in 9.2 (machines more than 6 years old are removed); the oldest supported machine type is pc-9.2 (vmm machines lists them)"
        );
        let Some(Notice::Refusal(r)) = CATALOG.machine_notice(removed, MachineUse::Incoming) else {
            panic!("removed machine: a refusal for incoming guests too")
        };
        assert!(
            r.ends_with("a guest of pc-9.0 can only move to a release that still has it"),
            "{r}"
        );
    }

    #[test]
    fn migrate_options() {
        assert_eq!(
            CATALOG.migrate_option_warning("inc").as_deref(),
            Some(
                "the `inc` option of the migrate command is deprecated since 8.2; use instead: blockdev-mirror over NBD"
            )
        );
        assert_eq!(CATALOG.migrate_option_warning("multifd"), None);
    }
}
