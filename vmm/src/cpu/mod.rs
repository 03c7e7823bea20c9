//! The guest CPU against this host's: which of the catalogued features
//! (`compat/cpu/features.toml`) this host's KVM can give a guest.
//!
//! - [`features`]: the catalogue read against CPUID leaves and feature
//!   MSRs (no KVM);
//! - [`baseline`]: the CPU several hosts can all present (`vmm cpu baseline`);
//! - [`choice`]: `--cpu host,...`, the guest's features chosen from the
//!   host's, and the refusal (`enforce`) of what a host cannot give;
//! - [`table`]: the guest's effective CPUID table against a destination's;
//! - [`host`]: this host's KVM (`KVM_GET_SUPPORTED_CPUID`, the feature MSRs)
//!   as a [`host::HostCpu`], the `vmm cpu host` answer.

pub mod baseline;
pub mod choice;
pub mod features;
pub mod host;
pub mod table;
