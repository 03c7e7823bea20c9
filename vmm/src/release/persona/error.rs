//! Why a process cannot act as a release.

use compat_runtime::OverrideError;
use compat_runtime::release::{MIN_STREAM_FORMAT, STREAM_FORMAT};
use compat_runtime::suggest::hint;

/// Why this build cannot act as the requested release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum PersonaError {
    /// No lock for that release.
    #[error("release `{name}` has no lock in this build (frozen releases: {known}){}", hint(.suggestion))]
    #[diagnostic(
        code(vmm::persona::release),
        help("freeze it with `cargo xtask release {name}`, or pick a frozen release")
    )]
    UnknownRelease {
        name: String,
        known: String,
        suggestion: Option<String>,
    },
    /// The release does not know the machine type.
    #[error("release {release} does not know machine type `{machine}` (it knows {known})")]
    #[diagnostic(code(vmm::persona::machine))]
    UnknownMachine {
        release: String,
        machine: String,
        known: String,
    },
    /// An embedded lock does not parse (a build problem).
    #[error("embedded lock of release {release}: {error}")]
    #[diagnostic(code(vmm::persona::lock))]
    BadLock { release: String, error: String },
    /// The lock has a value this build's property type does not parse.
    #[error("release {release}: `{device}.{property} = {value}` does not parse here: {error}")]
    #[diagnostic(code(vmm::persona::value))]
    BadValue {
        release: String,
        device: String,
        property: String,
        value: String,
        error: String,
    },
    /// The release speaks a stream format this build cannot write or read.
    #[error(
        "release {release} writes stream format {format} (reads {min}..={format}); this build writes {STREAM_FORMAT} and reads {MIN_STREAM_FORMAT}..={STREAM_FORMAT}"
    )]
    #[diagnostic(code(vmm::persona::stream_format))]
    StreamFormat {
        release: String,
        format: u32,
        min: u32,
    },
    /// The release sends a section version this build cannot write.
    #[error(
        "release {release} sends section `{section}` at version {locked}; this build writes only version {ours}"
    )]
    #[diagnostic(code(vmm::persona::section))]
    SectionVersion {
        release: String,
        section: String,
        locked: u32,
        ours: u32,
    },
    /// The release's machine type instantiates other devices than this build can.
    #[error(
        "release {release}: machine type {machine} has devices [{locked}], this build can only build [{ours}]"
    )]
    #[diagnostic(code(vmm::persona::devices))]
    Devices {
        release: String,
        machine: String,
        locked: String,
        ours: String,
    },
    /// A `--global`/`--device` override does not apply.
    #[error(transparent)]
    #[diagnostic(code(vmm::persona::override_))]
    Override(#[from] OverrideError),
    /// The configuration cannot be built.
    #[error("{0}")]
    #[diagnostic(code(vmm::persona::config))]
    Config(String),
    /// A stream's configuration asks for something the release cannot present.
    #[error(
        "release {release} cannot present `{device}.{property} = {value}` from the stream (the property's fix came later)"
    )]
    #[diagnostic(code(vmm::persona::adopt))]
    NotSettable {
        release: String,
        device: String,
        property: String,
        value: String,
    },
    /// The machine type was removed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lifecycle(#[from] crate::release::lifecycle::LifecycleError),
}
