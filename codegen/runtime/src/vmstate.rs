//! VMState descriptors: what a device's migration section looks like.

pub mod wire;

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A device's migration state description (`-dump-vmstate` style).
#[derive(Debug, Serialize)]
pub struct VmStateDesc {
    /// Section name (`virtio-blk`).
    pub name: &'static str,
    /// Version this build writes.
    pub version_id: u32,
    /// Oldest version this build reads.
    pub minimum_version_id: u32,
    /// Fields in wire order.
    pub fields: &'static [FieldDesc],
    /// Optional subsections, in wire order.
    pub subsections: &'static [SubsectionDesc],
}

/// One field of a section or subsection.
#[derive(Debug, Serialize)]
pub struct FieldDesc {
    /// Field name (snake_case, also the state struct's field).
    pub name: &'static str,
    /// Wire type of one element.
    pub wire: WireType,
    /// How many elements.
    pub count: Count,
    /// Section version that introduced it (absent from older streams).
    pub since: u32,
}

/// How many elements a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Count {
    /// A scalar.
    One,
    /// A fixed-length array/buffer.
    Fixed {
        /// Number of elements.
        len: u32,
    },
    /// A variable-length array/buffer whose length is an earlier integer
    /// field of the same section (`count = "field:num_queues"`).
    Field {
        /// The earlier field holding the length.
        field: &'static str,
        /// Largest accepted length.
        max: u32,
    },
}

/// Wire type of one element (big-endian on the wire, like the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WireType {
    /// One byte, 0 or 1.
    Bool,
    /// Unsigned 8-bit.
    U8,
    /// Unsigned 16-bit.
    U16,
    /// Unsigned 32-bit.
    U32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
    /// Raw bytes (use with a [`Count`]).
    Buffer,
}

/// An unknown wire type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown wire type `{0}`")]
pub struct UnknownWireType(pub String);

impl WireType {
    /// All wire types.
    pub const ALL: [WireType; 7] = [
        WireType::Bool,
        WireType::U8,
        WireType::U16,
        WireType::U32,
        WireType::U64,
        WireType::I64,
        WireType::Buffer,
    ];

    /// TOML/JSON name.
    pub fn name(self) -> &'static str {
        match self {
            WireType::Bool => "bool",
            WireType::U8 => "u8",
            WireType::U16 => "u16",
            WireType::U32 => "u32",
            WireType::U64 => "u64",
            WireType::I64 => "i64",
            WireType::Buffer => "buffer",
        }
    }

    /// Bytes per element on the wire.
    pub fn size(self) -> usize {
        match self {
            WireType::Bool | WireType::U8 | WireType::Buffer => 1,
            WireType::U16 => 2,
            WireType::U32 => 4,
            WireType::U64 | WireType::I64 => 8,
        }
    }

    /// Whether values of this type can give another field's length.
    pub fn is_unsigned_int(self) -> bool {
        matches!(
            self,
            WireType::U8 | WireType::U16 | WireType::U32 | WireType::U64
        )
    }
}

impl FromStr for WireType {
    type Err = UnknownWireType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WireType::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| UnknownWireType(s.into()))
    }
}

impl fmt::Display for WireType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A subsection, sent only when its gating bool property is on.
#[derive(Debug, Serialize)]
pub struct SubsectionDesc {
    /// Subsection name (`pcie-root-port/aer`).
    pub name: &'static str,
    /// Bool property of the device deciding whether it is sent.
    pub gate: &'static str,
    /// Fields in wire order.
    pub fields: &'static [FieldDesc],
}

impl VmStateDesc {
    /// A subsection by name.
    pub fn subsection(&self, name: &str) -> Option<&SubsectionDesc> {
        self.subsections.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_roundtrip() {
        for w in WireType::ALL {
            assert_eq!(w.name().parse::<WireType>().unwrap(), w);
        }
        assert!("f32".parse::<WireType>().is_err());
    }
}
