//! Shared compat runtime types.
