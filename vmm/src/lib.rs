//! The VMM library behind the `vmm` binary; one module per concern, in
//! layers whose imports point one way (`docs/architecture.md`):
//!
//! 1. the KVM-independent migration core is its own crate, `migration`
//!    (`vmm/migration/`);
//! 2. the runtime: [`vstate`] (KVM), [`cpu`] (the guest CPU against this
//!    host's), [`boot`], [`builder`];
//! 3. [`release`]: what a release presents (the persona, the release matrix,
//!    machine-type lifecycle), over the compat tables and `builder::config`;
//! 4. [`migrate`]: the migration core's traits over a running machine;
//!    [`storage`]: the drives' NBD server and mirror jobs (storage migration);
//! 5. [`control`]: the control socket and its handler over a running VM;
//! 6. [`cli`]: the subcommands of the `vmm` binary.

pub mod boot;
pub mod builder;
pub mod cli;
pub mod control;
pub mod cpu;
pub mod migrate;
pub mod release;
pub mod storage;
pub mod vstate;
