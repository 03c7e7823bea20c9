//! Helpers behind the generated typed property structs
//! (`devices::generated::props::*Props::from_config`).

use crate::overrides::EffectiveConfig;
use crate::value::Value;
use serde::{Deserialize, Serialize};

/// An integer property that may hold the `auto` sentinel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutoOr<T> {
    /// `auto`: the device decides (e.g. one queue per vCPU).
    Auto,
    /// An explicit value.
    Value(T),
}

impl<T: Copy> AutoOr<T> {
    /// The explicit value, or `auto()` for the sentinel.
    pub fn resolve(self, auto: impl FnOnce() -> T) -> T {
        match self {
            AutoOr::Auto => auto(),
            AutoOr::Value(v) => v,
        }
    }
}

/// Why a typed property struct could not be built from a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropsError {
    /// The configuration lacks the property (e.g. it came from another build).
    #[error("configuration has no property {type_name}.{prop}")]
    Missing {
        /// Device type.
        type_name: String,
        /// Property.
        prop: String,
    },
    /// The value has the wrong shape for the property's Rust type.
    #[error("{type_name}.{prop} = {value} is not a valid {expected}")]
    Invalid {
        /// Device type.
        type_name: String,
        /// Property.
        prop: String,
        /// Value found.
        value: String,
        /// Rust type expected.
        expected: &'static str,
    },
}

fn get<'a>(cfg: &'a EffectiveConfig, ty: &str, prop: &str) -> Result<&'a Value, PropsError> {
    cfg.value(ty, prop).ok_or_else(|| PropsError::Missing {
        type_name: ty.into(),
        prop: prop.into(),
    })
}

fn invalid(ty: &str, prop: &str, v: &Value, expected: &'static str) -> PropsError {
    PropsError::Invalid {
        type_name: ty.into(),
        prop: prop.into(),
        value: v.to_string(),
        expected,
    }
}

/// A bool property.
pub fn get_bool(cfg: &EffectiveConfig, ty: &str, prop: &str) -> Result<bool, PropsError> {
    let v = get(cfg, ty, prop)?;
    v.as_bool().ok_or_else(|| invalid(ty, prop, v, "bool"))
}

/// An integer property converted to `T`.
pub fn get_uint<T: TryFrom<u64>>(
    cfg: &EffectiveConfig,
    ty: &str,
    prop: &str,
) -> Result<T, PropsError> {
    let v = get(cfg, ty, prop)?;
    v.as_u64()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| invalid(ty, prop, v, std::any::type_name::<T>()))
}

/// An integer property that accepts `auto`.
pub fn get_auto_uint<T: TryFrom<u64>>(
    cfg: &EffectiveConfig,
    ty: &str,
    prop: &str,
) -> Result<AutoOr<T>, PropsError> {
    let v = get(cfg, ty, prop)?;
    match v {
        Value::Auto => Ok(AutoOr::Auto),
        _ => get_uint(cfg, ty, prop).map(AutoOr::Value),
    }
}

/// A string property.
pub fn get_string(cfg: &EffectiveConfig, ty: &str, prop: &str) -> Result<String, PropsError> {
    let v = get(cfg, ty, prop)?;
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(ty, prop, v, "string"))
}

/// An optional string property (`None` when unset).
pub fn get_opt_string(
    cfg: &EffectiveConfig,
    ty: &str,
    prop: &str,
) -> Result<Option<String>, PropsError> {
    let v = get(cfg, ty, prop)?;
    match v {
        Value::Unset => Ok(None),
        _ => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| invalid(ty, prop, v, "string")),
    }
}

/// An enum property, converted by the generated `from_name`.
pub fn get_enum<E>(
    cfg: &EffectiveConfig,
    ty: &str,
    prop: &str,
    from_name: fn(&str) -> Option<E>,
) -> Result<E, PropsError> {
    let v = get(cfg, ty, prop)?;
    v.as_str()
        .and_then(from_name)
        .ok_or_else(|| invalid(ty, prop, v, "enum"))
}
