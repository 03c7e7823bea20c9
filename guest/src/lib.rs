//! The embedded guest.
