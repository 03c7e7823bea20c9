//! Small hand-written catalogs for the tests of code that consumes a
//! [`Catalog`] (compiled only for tests and with the `fixtures` feature).
//!
//! `compat/` has no deprecated or removed machine type today, and tests do
//! not invent history in it; they use these instead.

use crate::table::{Catalog, Deprecation, Family, Knobs, Lifecycle, MachineType};
use crate::version::MachineVersion;

const fn machine(name: &'static str, minor: u16, lifecycle: Lifecycle) -> MachineType {
    MachineType {
        name,
        family: "pc",
        version: MachineVersion::new(9, minor),
        alias: None,
        lifecycle,
        introduced_in: "9.0",
        knobs: Knobs {
            max_cpus: 1,
            default_cpus: 1,
            memory_mib: 1,
            devices: &[],
        },
    }
}

/// `pc-9.0` removed in 9.2, `pc-9.1` deprecated since 9.2, `pc-9.2`
/// supported (alias `pc`).
pub static LIFECYCLE_MACHINES: [MachineType; 3] = [
    machine(
        "pc-9.0",
        0,
        Lifecycle::Removed {
            since: "9.2",
            reason: "machines more than 6 years old are removed",
        },
    ),
    machine(
        "pc-9.1",
        1,
        Lifecycle::Deprecated {
            since: "9.2",
            reason: "machines more than 3 years old are subject to deletion after 6 years",
        },
    ),
    machine("pc-9.2", 2, Lifecycle::Supported),
];

static FAMILIES: [Family; 1] = [Family {
    name: "pc",
    doc: "",
    alias: Some("pc"),
    series: &[],
    machines: &LIFECYCLE_MACHINES,
    timelines: &[],
}];

static DEPRECATIONS: [Deprecation; 1] = [Deprecation {
    id: "migrate-inc",
    feature: "the `inc` option of the migrate command",
    since: "8.2",
    replacement: "blockdev-mirror over NBD",
}];

/// A catalog of [`LIFECYCLE_MACHINES`] plus one deprecated migrate option
/// (`inc`).
pub static LIFECYCLE: Catalog = Catalog {
    families: &FAMILIES,
    device_types: &[],
    deltas: &[],
    releases: &[],
    deprecations: &DEPRECATIONS,
    cpu_features: &[],
};
