//! The VMM library behind the `vmm` binary; one module per concern.

pub mod introspect;
pub mod migration;
pub mod control;
pub mod boot;
pub mod vstate;
pub mod builder;
pub mod logger;
pub mod run;
pub mod bench;
