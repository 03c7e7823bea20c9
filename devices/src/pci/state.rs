use serde::{Deserialize, Serialize};

/// One function's config space contents (masks are rebuilt from the config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSpaceState {
    /// Device number on bus 0.
    pub slot: u8,
    /// The 4 KiB contents.
    pub data: Vec<u8>,
}

/// All functions behind the ECAM window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcamState {
    /// One entry per present function (function 0 of each slot).
    pub functions: Vec<ConfigSpaceState>,
}
