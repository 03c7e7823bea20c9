//! End-to-end tests: each module runs the real `vmm` binary.

mod common;
mod runtime;
mod introspect;
mod control;
