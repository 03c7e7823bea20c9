//! virtio-blk backed by a raw image file.
//!
//! Files: `config.rs` (what the machine type decides), `device.rs` (feature
//! bits, config space, queue processing), `request.rs` (one request:
//! parsing, malformed-chain handling, I/O), `state.rs` (migratable state).

mod config;
mod device;
mod request;
mod state;

pub use config::BlockConfig;
pub use device::{Block, BlockError, NO_SERIAL};
pub use state::BlockState;

/// Sector size of the virtio-blk request protocol.
pub const SECTOR_SIZE: u64 = 512;
