//! Migration between hosts that do not trust the network: credentials in
//! the reference's layouts ([`creds`]), TLS 1.3 sessions authenticated both
//! ways ([`session`]), and sealed snapshots ([`seal`]). Used by
//! [`crate::transport`] on every connection (main and data channels) when
//! credentials are given.

pub mod creds;
pub mod rehearsal;
pub mod seal;
pub mod session;
pub mod stream;

pub use creds::{Creds, CredsError};
pub use session::{SharedClient, Sock, TlsClient, TlsError, TlsServer, TlsStream};

#[cfg(test)]
mod tests;
