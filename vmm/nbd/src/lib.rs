//! The NBD protocol (fixed newstyle negotiation, structured replies,
//! `base:allocation` block status), both sides of it, over any byte
//! stream:
//!
//! - [`server`]: [`serve`] runs one connection against a set of
//!   [`Exports`] to its end and says why it ended; the caller owns the
//!   sockets and the threads (one thread per connection);
//! - [`client`]: a blocking [`Client`] (used by a mirror job on the source
//!   side) that negotiates, splits large requests and validates every
//!   reply;
//! - [`wire`]: the protocol's constants and encode/decode helpers;
//! - [`mem`]: [`MemExport`], an in-memory reference export for tests.
//!
//! Every length read from a peer is bounded before anything is allocated
//! for it, and nothing a peer sends can panic either side: hostile input
//! ends in an error reply, or in a typed error and a closed connection.
//!
//! TLS is not implemented here: both sides take an optional [`Upgrade`]
//! that turns the plain stream into an encrypted one at `NBD_OPT_STARTTLS`.

pub mod client;
pub mod export;
pub mod mem;
pub mod server;
pub mod wire;

#[cfg(test)]
mod tests;

use std::io::{Read, Write};

pub use client::{Client, ClientError};
pub use export::{Export, ExportEntry, Exports};
pub use mem::MemExport;
pub use server::{End, ServeError, ServeErrorKind, Stats, Summary, serve};

/// A bidirectional byte stream a connection runs over (a socket, a pipe
/// pair, a TLS session...).
pub trait Stream: Read + Write + Send {}

impl<T: Read + Write + Send + ?Sized> Stream for T {}

/// Turns a plain stream into a TLS one after `NBD_OPT_STARTTLS` was
/// acknowledged (server side: accept; client side: connect).
pub trait Upgrade: Send + Sync {
    /// Runs the TLS handshake over `s` and returns the encrypted stream.
    fn upgrade(&self, s: Box<dyn Stream>) -> std::io::Result<Box<dyn Stream>>;
}
