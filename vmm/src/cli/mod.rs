//! The subcommands of the `vmm` binary (the top layer: nothing below imports it).

pub mod ctl;
pub mod demo;
pub mod dump_vmstate;
pub mod introspect;
pub mod logger;
pub mod run;
