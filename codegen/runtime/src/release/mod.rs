//! Frozen releases: what a release presented for every machine type it knew
//! (`compat/releases/X.Y.lock.toml`), and the migration verdict between two
//! of them ([`compare`]).
//!
//! A lock is written once by `cargo xtask release X.Y` and never rewritten;
//! the compat checker (`cargo xtask gen`) holds the current tree to every
//! lock, and `vmm compat matrix` compares locks pairwise.

pub mod compare;
mod current;
mod lock;

pub use compare::{Difference, Verdict, migrate, migrate_with};
pub use lock::{Lock, LockError, LockField, LockMachine, LockSection, LockSubsection};

/// The stream format version this tree writes (see `docs/stream.md`).
pub const STREAM_FORMAT: u32 = 1;
/// The oldest stream format version this tree reads.
pub const MIN_STREAM_FORMAT: u32 = 1;
