//! The VMM library behind the `vmm` binary; one module per concern.

pub mod introspect;
