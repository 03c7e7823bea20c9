//! The migration stream: a versioned, self-checking record format.
//!
//! `docs/stream.md` is the specification; [`format`] holds its constants,
//! [`Encoder`] writes it and [`Decoder`] reads it, treating every byte as
//! hostile: lengths are bounded, counts are checked against the manifest and
//! [`Limits`], and every failure is a typed [`DecodeError`].

mod decode;
mod encode;
mod error;
pub mod format;

#[cfg(test)]
mod tests;

pub use decode::{Decoder, Record};
pub use encode::{Encoder, PageStats};
pub use error::DecodeError;
pub use format::Limits;

/// One device section: opaque bytes written by the device's VMState code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Section name, as listed in the manifest.
    pub name: String,
    /// VMState version of the bytes (equals the manifest's for this section).
    pub version_id: u32,
    /// The encoded fields.
    pub data: Vec<u8>,
}

/// One vCPU's state: opaque bytes written by the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuRecord {
    /// vCPU index, `0..manifest.vcpus`.
    pub index: u32,
    /// The encoded registers, MSRs, LAPIC, events...
    pub data: Vec<u8>,
}
