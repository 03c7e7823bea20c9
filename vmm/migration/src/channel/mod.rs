//! Data channels (`--channels N`, stream format 2): besides the main
//! connection (manifest, device and vCPU state, return channel), N more
//! connections carry guest RAM, each written by its own thread on the
//! source and read straight into guest memory by its own thread on the
//! destination.
//!
//! Page `p` always travels on channel `(p / MAX_RUN_PAGES) % N` (1 MiB
//! stripes), so a page sent again in a later pass can never overtake its
//! older copy on another channel. A sync point on the main connection is
//! answered only once every channel has passed its own sync point; the
//! guest starts only once every channel ended with a good checksum.

mod recv;
mod send;

pub use recv::Receivers;
pub use send::Senders;

use crate::stream::format::MAX_RUN_PAGES;

/// The channel page `page` travels on, of `n`.
pub fn channel_of(page: u64, n: u32) -> u32 {
    ((page / u64::from(MAX_RUN_PAGES)) % u64::from(n.max(1))) as u32
}

/// A session id tying data channels to their stream (not a secret: the TLS
/// issue authenticates connections; this only keeps streams apart).
pub fn new_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}

#[cfg(test)]
mod tests;
