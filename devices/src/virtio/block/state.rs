use serde::{Deserialize, Serialize};

/// The block device's own guest-visible state (the queues live in the transport).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Config-space `writeback` byte (1: write-back cache, 0: write-through).
    pub writeback: u8,
}
