//! The deprecation lifecycle at run time, from the TOML
//! (`compat/machines.toml` lifecycles, `compat/deprecations.toml`):
//!
//! - `vmm run -M <deprecated>` prints the warning and runs; with
//!   `--incoming` the guest is accepted (with its own warning);
//! - a removed machine type is refused (new VMs and incoming guests), naming
//!   the oldest supported machine type;
//! - `vmm migrate --inc | --blk | --compress` (hidden options) print the
//!   replacement text and refuse: this VMM never implemented those
//!   deprecated features, it only tells users coming from the reference
//!   what to use instead.

use compat_runtime::Catalog;
use compat_runtime::deprecation::{MachineUse, Notice};

/// A use the lifecycle forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum LifecycleError {
    /// A removed machine type (the message names the replacement).
    #[error("{0}")]
    #[diagnostic(code(vmm::lifecycle::removed))]
    Removed(String),
    /// A deprecated migration option this VMM does not implement.
    #[error("--{option} is not supported: {warning}")]
    #[diagnostic(code(vmm::lifecycle::migrate_option))]
    MigrateOption { option: String, warning: String },
}

/// The warning to print for using `machine` (name or alias), or the
/// refusal; `Ok(None)` for a supported or unknown machine type (unknown
/// names are refused by resolution, with a "did you mean").
pub fn notice(
    catalog: &Catalog,
    machine: &str,
    how: MachineUse,
) -> Result<Option<String>, LifecycleError> {
    let Some(m) = catalog.machine(machine) else {
        return Ok(None);
    };
    match catalog.machine_notice(m, how) {
        None => Ok(None),
        Some(Notice::Warning(w)) => Ok(Some(w)),
        Some(Notice::Refusal(r)) => Err(LifecycleError::Removed(r)),
    }
}

/// [`notice`], printing a warning on stderr (`vmm: warning: ...`).
pub fn admit(catalog: &Catalog, machine: &str, how: MachineUse) -> Result<(), LifecycleError> {
    if let Some(w) = notice(catalog, machine, how)? {
        // One line, the reference's form (the log would repeat it on stderr).
        eprintln!("vmm: warning: {w}");
    }
    Ok(())
}

/// The deprecated `migrate` options of the reference and their feature ids
/// in `compat/deprecations.toml`.
pub const MIGRATE_OPTIONS: &[(&str, &str)] = &[
    ("inc", "inc"),
    ("blk", "blk"),
    ("compress", "old-compression"),
];

/// Refuses the deprecated migrate options that were given (`given` holds
/// `(option, set)`), with the replacement text from the TOML.
pub fn migrate_options(catalog: &Catalog, given: &[(&str, bool)]) -> Result<(), LifecycleError> {
    for (option, set) in given {
        if !set {
            continue;
        }
        let id = MIGRATE_OPTIONS
            .iter()
            .find(|(o, _)| o == option)
            .map_or(*option, |(_, id)| *id);
        let warning = catalog
            .migrate_option_warning(id)
            .unwrap_or_else(|| "this option does not exist in this VMM".to_string());
        return Err(LifecycleError::MigrateOption {
            option: option.to_string(),
            warning,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    // compat/ removes no machine type at 10.2, and history is not invented
    // for a test: the removed path uses the fixture.
    use compat_runtime::fixtures::LIFECYCLE as FIXTURE;

    const DEPRECATED: &str = "machines more than 3 years old are subject to deletion after 6 years";

    #[test]
    fn deprecated_warns_removed_refuses_naming_the_oldest_supported() {
        let w = notice(&FIXTURE, "pc-9.1", MachineUse::Run)
            .unwrap()
            .unwrap();
        assert_eq!(
            w,
            format!("Machine type 'pc-9.1' is deprecated: {DEPRECATED}")
        );
        assert_eq!(
            notice(&FIXTURE, "pc-9.1", MachineUse::Incoming),
            Ok(Some(w))
        );
        for how in [MachineUse::Run, MachineUse::Incoming] {
            let e = notice(&FIXTURE, "pc-9.0", how).unwrap_err().to_string();
            assert!(
                e.contains("was removed in 9.2 (machines more than 6 years old are removed); the oldest supported machine type is pc-9.2"),
                "{e}"
            );
        }
        assert_eq!(notice(&FIXTURE, "pc-9.2", MachineUse::Run), Ok(None));
        assert_eq!(notice(&FIXTURE, "pc", MachineUse::Run), Ok(None));
        assert_eq!(notice(&FIXTURE, "nonesuch", MachineUse::Run), Ok(None));
    }

    #[test]
    fn at_10_2_the_machine_types_older_than_3_years_warn_and_still_run() {
        let c = crate::builder::config::catalog();
        for m in c.machines() {
            let n = notice(c, m.name, MachineUse::Run);
            let old = m.version < compat_runtime::MachineVersion::new(8, 0);
            let want =
                old.then(|| format!("Machine type '{}' is deprecated: {DEPRECATED}", m.name));
            assert_eq!(n, Ok(want), "{}", m.name);
            assert!(m.lifecycle.runs(), "{}", m.name);
        }
    }

    #[test]
    fn deprecated_migrate_options_print_the_toml_replacement() {
        let c = crate::builder::config::catalog();
        assert_eq!(
            migrate_options(c, &[("inc", false), ("blk", false)]),
            Ok(())
        );
        for (opt, needle) in [
            ("inc", "blockdev-mirror over NBD"),
            (
                "blk",
                "the `blk` option of the migrate command is deprecated since 8.2",
            ),
            ("compress", "multifd compression"),
        ] {
            let e = migrate_options(c, &[(opt, true)]).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--{opt} is not supported: ")) && e.contains(needle),
                "{e}"
            );
        }
    }
}
