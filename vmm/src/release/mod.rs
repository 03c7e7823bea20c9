//! What a release presents, from the compat tables and the frozen release
//! locks: the [`persona`] a process acts as, the release [`matrix`] (which
//! release pairs can migrate a machine type, and why not), and machine-type
//! [`lifecycle`] (deprecation, removal). No KVM here.

pub mod lifecycle;
pub mod matrix;
pub mod persona;
