//! The VMM library behind the `vmm` binary; one module per concern.

pub mod boot;
pub mod builder;
pub mod control;
pub mod demo;
pub mod dump_vmstate;
pub mod introspect;
pub mod lifecycle;
pub mod logger;
pub mod matrix;
pub mod migration;
pub mod persona;
pub mod run;
pub mod vstate;
