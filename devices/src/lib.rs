//! Device models, each configured from the generated compat tables.

pub mod generated;
