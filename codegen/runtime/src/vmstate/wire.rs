//! Generic VMState save/load over a [`VmStateDesc`].
//!
//! Section layout (integers big-endian):
//!
//! ```text
//! name_len:u8 name version_id:u32
//! field* (every field with since <= version_id, in order;
//!         each element in its wire type's size; counts from Count)
//! ( 0x01 name_len:u8 name field* )*   -- subsections that are present
//! 0x00                                -- end of section
//! ```
//!
//! Load rules (DESIGN.md §3): an incoming version above the local
//! `version_id` or below `minimum_version_id` is an error naming the device
//! and both versions; an unknown section or subsection is an error naming it;
//! a missing subsection is fine. Fields newer than the incoming version are
//! left at their defaults. Nothing here panics on any input.

use super::{Count, FieldDesc, VmStateDesc, WireType};
use serde::{Deserialize, Serialize};

/// The data of one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldData {
    /// Elements of a bool or unsigned field (a scalar has one element).
    Uints(Vec<u64>),
    /// Elements of an `i64` field.
    Ints(Vec<i64>),
    /// Raw bytes of a `buffer` field.
    Bytes(Vec<u8>),
}

impl FieldData {
    /// The empty/zero value a field has when an older stream lacks it.
    pub fn default_for(f: &FieldDesc) -> Self {
        let n = match f.count {
            Count::One => 1,
            Count::Fixed { len } => len as usize,
            Count::Field { .. } => 0,
        };
        match f.wire {
            WireType::Buffer => FieldData::Bytes(vec![0; n]),
            WireType::I64 => FieldData::Ints(vec![0; n]),
            _ => FieldData::Uints(vec![0; n]),
        }
    }

    fn len(&self) -> usize {
        match self {
            FieldData::Uints(v) => v.len(),
            FieldData::Ints(v) => v.len(),
            FieldData::Bytes(v) => v.len(),
        }
    }

    /// The first element as an unsigned number (for count fields).
    pub fn scalar(&self) -> Option<u64> {
        match self {
            FieldData::Uints(v) => v.first().copied(),
            FieldData::Bytes(v) => v.first().map(|&b| u64::from(b)),
            FieldData::Ints(v) => v.first().and_then(|&i| u64::try_from(i).ok()),
        }
    }
}

/// A section's (or subsection's) data, in descriptor order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SectionData {
    /// `(field name, data)` in descriptor order.
    pub fields: Vec<(String, FieldData)>,
    /// Present subsections: `(name, fields)`.
    pub subsections: Vec<(String, Vec<(String, FieldData)>)>,
}

impl SectionData {
    /// A field's data.
    pub fn field(&self, name: &str) -> Option<&FieldData> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// A present subsection's fields.
    pub fn subsection(&self, name: &str) -> Option<&[(String, FieldData)]> {
        self.subsections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.as_slice())
    }
}

/// Why a section could not be saved or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The stream names a different (unknown) section.
    #[error("unknown section `{found}` (expected `{expected}`)")]
    UnknownSection {
        /// Expected section name.
        expected: String,
        /// Name found in the stream.
        found: String,
    },
    /// Incoming version newer than this build writes.
    #[error("{device}: incoming version {incoming} is newer than local version {local}")]
    TooNew {
        /// Section name.
        device: String,
        /// Version in the stream.
        incoming: u32,
        /// Local `version_id`.
        local: u32,
    },
    /// Incoming version older than this build reads.
    #[error("{device}: incoming version {incoming} is older than the local minimum {minimum}")]
    TooOld {
        /// Section name.
        device: String,
        /// Version in the stream.
        incoming: u32,
        /// Local `minimum_version_id`.
        minimum: u32,
    },
    /// The stream has a subsection this build does not know.
    #[error("{device}: unknown subsection `{name}`")]
    UnknownSubsection {
        /// Section name.
        device: String,
        /// Subsection name.
        name: String,
    },
    /// A variable count exceeds its maximum (or a count field is missing).
    #[error("{device}: field `{field}` has {len} elements, more than the maximum {max}")]
    BadCount {
        /// Section name.
        device: String,
        /// Field name.
        field: String,
        /// Count found.
        len: u64,
        /// Maximum allowed.
        max: u32,
    },
    /// The data to save does not match the descriptor.
    #[error("{device}: field `{field}`: {why}")]
    BadField {
        /// Section name.
        device: String,
        /// Field name.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// The stream ended early.
    #[error("{device}: stream truncated")]
    Truncated {
        /// Section name.
        device: String,
    },
    /// Bytes after the section end (only from [`load_exact`]).
    #[error("{device}: {extra} trailing byte(s) after the section")]
    Trailing {
        /// Section name.
        device: String,
        /// Number of extra bytes.
        extra: usize,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    device: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| WireError::Truncated {
            device: self.device.to_string(),
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn uint(&mut self, size: usize) -> Result<u64, WireError> {
        Ok(self
            .take(size)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
    fn name(&mut self) -> Result<String, WireError> {
        let n = self.uint(1)? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

fn put_uint(out: &mut Vec<u8>, v: u64, size: usize) {
    out.extend_from_slice(&v.to_be_bytes()[8 - size..]);
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    let b = &name.as_bytes()[..name.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn count_of(
    f: &FieldDesc,
    device: &str,
    earlier: &[(String, FieldData)],
    outer: &[(String, FieldData)],
) -> Result<usize, WireError> {
    match f.count {
        Count::One => Ok(1),
        Count::Fixed { len } => Ok(len as usize),
        Count::Field { field, max } => {
            let n = earlier
                .iter()
                .chain(outer)
                .find(|(n, _)| n == field)
                .and_then(|(_, d)| d.scalar())
                .ok_or_else(|| WireError::BadCount {
                    device: device.into(),
                    field: f.name.into(),
                    len: 0,
                    max,
                })?;
            if n > u64::from(max) {
                return Err(WireError::BadCount {
                    device: device.into(),
                    field: f.name.into(),
                    len: n,
                    max,
                });
            }
            Ok(n as usize)
        }
    }
}

fn save_fields(
    out: &mut Vec<u8>,
    device: &str,
    descs: &[FieldDesc],
    data: &[(String, FieldData)],
    outer: &[(String, FieldData)],
) -> Result<(), WireError> {
    let mut done: Vec<(String, FieldData)> = Vec::new();
    for f in descs {
        let bad = |why: String| WireError::BadField {
            device: device.into(),
            field: f.name.into(),
            why,
        };
        let d = data
            .iter()
            .find(|(n, _)| n == f.name)
            .map(|(_, d)| d)
            .ok_or_else(|| bad("missing".into()))?;
        let n = count_of(f, device, &done, outer)?;
        if d.len() != n {
            return Err(bad(format!(
                "has {} elements, descriptor says {n}",
                d.len()
            )));
        }
        let size = f.wire.size();
        match (f.wire, d) {
            (WireType::Buffer, FieldData::Bytes(b)) => out.extend_from_slice(b),
            (WireType::I64, FieldData::Ints(v)) => v
                .iter()
                .for_each(|&x| out.extend_from_slice(&x.to_be_bytes())),
            (WireType::I64 | WireType::Buffer, _)
            | (_, FieldData::Ints(_) | FieldData::Bytes(_)) => {
                return Err(bad(format!("data does not match wire type {}", f.wire)));
            }
            (_, FieldData::Uints(v)) => {
                let max = if size >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * size)) - 1
                };
                let max = if f.wire == WireType::Bool { 1 } else { max };
                if let Some(x) = v.iter().find(|&&x| x > max) {
                    return Err(bad(format!("{x} does not fit {}", f.wire)));
                }
                v.iter().for_each(|&x| put_uint(out, x, size));
            }
        }
        done.push((f.name.to_string(), d.clone()));
    }
    Ok(())
}

/// Serialises `data` as section `desc` at the local `version_id`. Only the
/// subsections present in `data` are written (the caller decides them from
/// their gate properties).
pub fn save(desc: &VmStateDesc, data: &SectionData) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    put_name(&mut out, desc.name);
    put_uint(&mut out, u64::from(desc.version_id), 4);
    save_fields(&mut out, desc.name, desc.fields, &data.fields, &[])?;
    for (name, fields) in &data.subsections {
        let sd = desc
            .subsection(name)
            .ok_or_else(|| WireError::UnknownSubsection {
                device: desc.name.into(),
                name: name.clone(),
            })?;
        out.push(1);
        put_name(&mut out, sd.name);
        save_fields(&mut out, desc.name, sd.fields, fields, &data.fields)?;
    }
    out.push(0);
    Ok(out)
}

fn load_fields(
    r: &mut Reader<'_>,
    descs: &[FieldDesc],
    version: u32,
    outer: &[(String, FieldData)],
) -> Result<Vec<(String, FieldData)>, WireError> {
    let mut out: Vec<(String, FieldData)> = Vec::new();
    for f in descs {
        if f.since > version {
            out.push((f.name.to_string(), FieldData::default_for(f)));
            continue;
        }
        let n = count_of(f, r.device, &out, outer)?;
        let size = f.wire.size();
        let d = match f.wire {
            WireType::Buffer => FieldData::Bytes(r.take(n)?.to_vec()),
            WireType::I64 => {
                let mut v = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    v.push(r.uint(8)? as i64);
                }
                FieldData::Ints(v)
            }
            _ => {
                let mut v = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    let x = r.uint(size)?;
                    if f.wire == WireType::Bool && x > 1 {
                        return Err(WireError::BadField {
                            device: r.device.into(),
                            field: f.name.into(),
                            why: format!("bool encoded as {x}"),
                        });
                    }
                    v.push(x);
                }
                FieldData::Uints(v)
            }
        };
        out.push((f.name.to_string(), d));
    }
    Ok(out)
}

/// Loads section `desc` from the start of `buf`; returns the data and the
/// number of bytes consumed.
pub fn load(desc: &VmStateDesc, buf: &[u8]) -> Result<(SectionData, usize), WireError> {
    let mut r = Reader {
        buf,
        pos: 0,
        device: desc.name,
    };
    let name = r.name()?;
    if name != desc.name {
        return Err(WireError::UnknownSection {
            expected: desc.name.into(),
            found: name,
        });
    }
    let version = r.uint(4)? as u32;
    if version > desc.version_id {
        return Err(WireError::TooNew {
            device: desc.name.into(),
            incoming: version,
            local: desc.version_id,
        });
    }
    if version < desc.minimum_version_id {
        return Err(WireError::TooOld {
            device: desc.name.into(),
            incoming: version,
            minimum: desc.minimum_version_id,
        });
    }
    let fields = load_fields(&mut r, desc.fields, version, &[])?;
    let mut subsections = Vec::new();
    loop {
        match r.uint(1)? {
            0 => break,
            1 => {
                let sname = r.name()?;
                let sd = desc
                    .subsection(&sname)
                    .ok_or_else(|| WireError::UnknownSubsection {
                        device: desc.name.into(),
                        name: sname.clone(),
                    })?;
                let f = load_fields(&mut r, sd.fields, version, &fields)?;
                subsections.push((sname, f));
            }
            _ => {
                return Err(WireError::BadField {
                    device: desc.name.into(),
                    field: "<subsection marker>".into(),
                    why: "expected 0 or 1".into(),
                });
            }
        }
    }
    Ok((
        SectionData {
            fields,
            subsections,
        },
        r.pos,
    ))
}

/// Like [`load`], but the buffer must hold exactly one section.
pub fn load_exact(desc: &VmStateDesc, buf: &[u8]) -> Result<SectionData, WireError> {
    let (d, used) = load(desc, buf)?;
    if used != buf.len() {
        return Err(WireError::Trailing {
            device: desc.name.into(),
            extra: buf.len() - used,
        });
    }
    Ok(d)
}

/// A typed state struct with a VMState descriptor (implemented by the
/// generated `devices::generated::vmstate::*State` structs).
pub trait VmState: Sized {
    /// The descriptor.
    fn desc() -> &'static VmStateDesc;
    /// The generic form of this state.
    fn to_section(&self) -> SectionData;
    /// Builds the typed state from its generic form.
    fn from_section(d: &SectionData) -> Result<Self, WireError>;
    /// Serialises this state (see [`save`]).
    fn save(&self) -> Result<Vec<u8>, WireError> {
        save(Self::desc(), &self.to_section())
    }
    /// Loads a state from exactly one section (see [`load_exact`]).
    fn load(buf: &[u8]) -> Result<Self, WireError> {
        Self::from_section(&load_exact(Self::desc(), buf)?)
    }
}

/// An element type of bool/unsigned fields.
pub trait WireUint: Copy {
    /// Widens to u64.
    fn to_u64(self) -> u64;
    /// Narrows from u64, `None` when out of range.
    fn from_u64(v: u64) -> Option<Self>;
}

macro_rules! wire_uint {
    ($($t:ty),*) => {$(
        impl WireUint for $t {
            fn to_u64(self) -> u64 { u64::from(self) }
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
        }
    )*};
}
wire_uint!(u8, u16, u32, u64);

impl WireUint for bool {
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
    fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

/// A scalar bool/unsigned field.
pub fn scalar<T: WireUint>(v: T) -> FieldData {
    FieldData::Uints(vec![v.to_u64()])
}

/// An array of bool/unsigned elements.
pub fn array<T: WireUint>(v: &[T]) -> FieldData {
    FieldData::Uints(v.iter().map(|x| x.to_u64()).collect())
}

fn find<'a>(
    fields: &'a [(String, FieldData)],
    dev: &str,
    name: &str,
) -> Result<&'a FieldData, WireError> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d)
        .ok_or_else(|| WireError::BadField {
            device: dev.into(),
            field: name.into(),
            why: "missing".into(),
        })
}

fn mismatch(dev: &str, name: &str) -> WireError {
    WireError::BadField {
        device: dev.into(),
        field: name.into(),
        why: "value does not fit its Rust type".into(),
    }
}

/// Reads an array of bool/unsigned elements.
pub fn get_array<T: WireUint>(
    fields: &[(String, FieldData)],
    dev: &str,
    name: &str,
) -> Result<Vec<T>, WireError> {
    match find(fields, dev, name)? {
        FieldData::Uints(v) => v
            .iter()
            .map(|&x| T::from_u64(x).ok_or_else(|| mismatch(dev, name)))
            .collect(),
        _ => Err(mismatch(dev, name)),
    }
}

/// Reads a scalar bool/unsigned field.
pub fn get_scalar<T: WireUint>(
    fields: &[(String, FieldData)],
    dev: &str,
    name: &str,
) -> Result<T, WireError> {
    get_array(fields, dev, name)?
        .first()
        .copied()
        .ok_or_else(|| mismatch(dev, name))
}

/// Reads an `i64` array.
pub fn get_ints(
    fields: &[(String, FieldData)],
    dev: &str,
    name: &str,
) -> Result<Vec<i64>, WireError> {
    match find(fields, dev, name)? {
        FieldData::Ints(v) => Ok(v.clone()),
        _ => Err(mismatch(dev, name)),
    }
}

/// Reads a scalar `i64`.
pub fn get_int(fields: &[(String, FieldData)], dev: &str, name: &str) -> Result<i64, WireError> {
    get_ints(fields, dev, name)?
        .first()
        .copied()
        .ok_or_else(|| mismatch(dev, name))
}

/// Reads a buffer.
pub fn get_bytes(
    fields: &[(String, FieldData)],
    dev: &str,
    name: &str,
) -> Result<Vec<u8>, WireError> {
    match find(fields, dev, name)? {
        FieldData::Bytes(v) => Ok(v.clone()),
        _ => Err(mismatch(dev, name)),
    }
}

#[cfg(test)]
mod tests;
