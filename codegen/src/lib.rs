//! The compat-table compiler.
