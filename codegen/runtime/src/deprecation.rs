//! Deprecation lifecycle at run time: the warning or refusal for a machine
//! type (deprecated: still runs and accepts incoming migrations, with a
//! warning; removed: refused, naming the replacement) and the warning for a
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
    /// The newest machine type of `m`'s family (the replacement to name).
    fn replacement(&self, m: &MachineType) -> &str {
        self.family(m.family)
            .and_then(|f| f.machines.last())
            .map_or(m.name, |n| n.name)
    }

    /// The notice for using machine type `m`, if its lifecycle calls for one.
    pub fn machine_notice(&self, m: &MachineType, how: MachineUse) -> Option<Notice> {
        let new = self.replacement(m);
        match (m.lifecycle, how) {
            (Lifecycle::Supported, _) => None,
            (Lifecycle::Deprecated { since }, MachineUse::Run) => Some(Notice::Warning(format!(
                "machine type {} is deprecated since {since} and will be removed; start new VMs with {new}",
                m.name
            ))),
            (Lifecycle::Deprecated { since }, MachineUse::Incoming) => {
                Some(Notice::Warning(format!(
                    "machine type {} is deprecated since {since}; accepting the incoming guest, but power it off and start it again with {new} before it is removed",
                    m.name
                )))
            }
            (Lifecycle::Removed { since }, _) => Some(Notice::Refusal(format!(
                "machine type {} was removed in {since}; use {new} (a guest of {} can only move to a release that still has it)",
                m.name, m.name
            ))),
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
        assert!(
            w.contains("pc-9.1 is deprecated since 9.2") && w.contains("pc-9.2"),
            "{w}"
        );
        assert!(matches!(
            CATALOG.machine_notice(deprecated, MachineUse::Incoming),
            Some(Notice::Warning(_))
        ));
        let Some(Notice::Refusal(r)) = CATALOG.machine_notice(removed, MachineUse::Incoming) else {
            panic!("removed machine: a refusal")
        };
        assert!(r.contains("removed in 9.2; use pc-9.2"), "{r}");
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
