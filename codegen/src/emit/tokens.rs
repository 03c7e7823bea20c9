//! Token builders for runtime values.

use compat_runtime::{MachineVersion, PropType, Value, WireType};
use proc_macro2::{Literal, TokenStream};

/// An unsuffixed integer literal.
pub fn num(n: impl Into<u64>) -> Literal {
    Literal::u64_unsuffixed(n.into())
}
use quote::quote;

pub fn value(v: &Value) -> TokenStream {
    match v {
        Value::Bool(b) => quote!(Value::Bool(#b)),
        Value::Uint(n) => {
            let n = num(*n);
            quote!(Value::Uint(#n))
        }
        Value::Auto => quote!(Value::Auto),
        Value::Enum(s) => {
            let s: &str = s;
            quote!(Value::variant(#s))
        }
        Value::Str(s) => {
            let s: &str = s;
            quote!(Value::text(#s))
        }
        Value::Unset => quote!(Value::Unset),
    }
}

pub fn prop_type(t: &PropType) -> TokenStream {
    match t {
        PropType::Bool => quote!(PropType::Bool),
        PropType::Uint {
            power_of_two,
            auto,
            bits,
            min,
            max,
        } => {
            let (bits, min, max) = (num(*bits), num(*min), num(*max));
            quote!(PropType::uint(#bits, #min, #max, #auto, #power_of_two))
        }
        PropType::Enum { variants } => {
            let v = variants.iter().map(|v| -> &str { v });
            quote!(PropType::variants(&[#(Cow::Borrowed(#v)),*]))
        }
        PropType::Str { optional, max_len } => {
            let ml = match max_len {
                Some(m) => {
                    let m = num(*m);
                    quote!(Some(#m))
                }
                None => quote!(None),
            };
            quote!(PropType::Str { optional: #optional, max_len: #ml })
        }
    }
}

pub fn version(v: MachineVersion) -> TokenStream {
    let (a, b) = (num(v.major), num(v.minor));
    quote!(MachineVersion::new(#a, #b))
}

pub fn opt_str(s: Option<&str>) -> TokenStream {
    match s {
        Some(s) => quote!(Some(#s)),
        None => quote!(None),
    }
}

pub fn wire(w: WireType) -> TokenStream {
    match w {
        WireType::Bool => quote!(WireType::Bool),
        WireType::U8 => quote!(WireType::U8),
        WireType::U16 => quote!(WireType::U16),
        WireType::U32 => quote!(WireType::U32),
        WireType::U64 => quote!(WireType::U64),
        WireType::I64 => quote!(WireType::I64),
        WireType::Buffer => quote!(WireType::Buffer),
    }
}

/// The Rust type of one element of a wire type.
pub fn wire_rust(w: WireType) -> TokenStream {
    match w {
        WireType::Bool => quote!(bool),
        WireType::U8 | WireType::Buffer => quote!(u8),
        WireType::U16 => quote!(u16),
        WireType::U32 => quote!(u32),
        WireType::U64 => quote!(u64),
        WireType::I64 => quote!(i64),
    }
}
