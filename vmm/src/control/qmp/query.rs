//! The machine and CPU queries: `query-machines`, `query-cpus-fast`,
//! `query-cpu-definitions`, `query-cpu-model-expansion`, from the compat
//! tables and this host's KVM.

use super::Reply;
use crate::builder::config::catalog;
use crate::control::state::State;
use crate::cpu::choice::{self, HOST_MODEL, MAX_MODEL};
use compat_runtime::Lifecycle;
use qmp::{Args, QmpError};
use serde_json::{Map, Value, json};

/// `query-machines`: every machine type that can still be started or
/// migrated to (removed ones are not listed, as in the reference).
pub fn machines(args: &Args) -> Reply {
    args.only(&["compat-props"])?;
    let cat = catalog();
    let list = cat
        .machines()
        .filter(|m| !matches!(m.lifecycle, Lifecycle::Removed { .. }))
        .map(|m| {
            let cpu = m
                .knobs
                .devices
                .iter()
                .find(|d| cat.device_type(d).is_some_and(|t| t.cpu_model));
            let mut v = json!({
                "name": m.name,
                "cpu-max": m.knobs.max_cpus,
                "hotpluggable-cpus": false,
                "numa-mem-supported": false,
                "deprecated": matches!(m.lifecycle, Lifecycle::Deprecated { .. }),
                "default-ram-id": "pc.ram",
                "acpi": false,
            });
            if let Some(a) = m.alias {
                v["alias"] = json!(a);
                v["is-default"] = json!(true);
            }
            if let Some(c) = cpu {
                v["default-cpu-type"] = json!(c);
            }
            v
        })
        .collect();
    Ok(Value::Array(list))
}

/// `query-cpus-fast`: one entry per vCPU (one socket each, as the
/// reference lays out `-smp N`).
pub fn cpus(st: &State, args: &Args) -> Reply {
    args.only(&[])?;
    let Some(v) = st.handler.view() else {
        return Ok(json!([]));
    };
    Ok(Value::Array(
        v.vcpus
            .iter()
            .map(|c| {
                json!({
                    "cpu-index": c.index,
                    "qom-path": format!("/machine/unattached/device[{}]", c.index),
                    "thread-id": c.thread_id,
                    "target": "x86_64",
                    "props": { "socket-id": c.index, "core-id": 0, "thread-id": 0 },
                })
            })
            .collect(),
    ))
}

fn offered() -> Result<std::collections::BTreeSet<String>, QmpError> {
    crate::cpu::host::offered(catalog(), None).map_err(|e| QmpError::generic(e.to_string()))
}

/// `query-cpu-definitions`: every model, with the features this host
/// cannot give it.
pub fn cpu_definitions(args: &Args) -> Reply {
    args.only(&[])?;
    let models = choice::models(catalog(), &offered()?);
    Ok(Value::Array(
        models
            .into_iter()
            .map(|m| {
                let safe = m.name != HOST_MODEL && m.name != MAX_MODEL;
                json!({
                    "name": m.name,
                    "typename": format!("{}-x86_64-cpu", m.name),
                    "unavailable-features": m.unavailable,
                    "static": false,
                    "migration-safe": safe,
                    "deprecated": false,
                })
            })
            .collect(),
    ))
}

/// `query-cpu-model-expansion`: a model's every catalogued feature, on or
/// off, after the `props` given (bools only).
pub fn cpu_model_expansion(args: &Args) -> Reply {
    args.only(&["type", "model"])?;
    let kind = args.str("type")?;
    if !matches!(kind, "static" | "full") {
        return Err(QmpError::generic(format!(
            "Parameter 'type' does not accept value '{kind}' (static or full)"
        )));
    }
    let model = args
        .opt_object("model")?
        .ok_or_else(|| QmpError::generic("Parameter 'model' is missing"))?;
    model.only(&["name", "props"])?;
    let name = model.str("name")?;
    let cat = catalog();
    let on: Vec<String> = match name {
        HOST_MODEL | MAX_MODEL => {
            let offered = offered()?;
            offered
                .into_iter()
                .filter(|f| {
                    name == MAX_MODEL
                        || crate::cpu::features::by_name(cat, f).is_some_and(|f| f.migratable)
                })
                .collect()
        }
        _ => {
            let ty = choice::model_type(cat, name).map_err(|e| QmpError::generic(e.to_string()))?;
            choice::model_features(cat, ty)
                .into_iter()
                .map(String::from)
                .collect()
        }
    };
    let mut props: Map<String, Value> = cat
        .cpu_features
        .iter()
        .map(|f| (f.name.to_string(), json!(on.iter().any(|o| o == f.name))))
        .collect();
    if let Some(extra) = model.opt_object("props")? {
        for (k, v) in extra.0 {
            let Some(f) = crate::cpu::features::by_name(cat, &k) else {
                return Err(QmpError::generic(format!("Property '{k}' not found")));
            };
            let Some(b) = v.as_bool() else {
                return Err(QmpError::generic(format!(
                    "Invalid parameter type for '{k}', expected: boolean"
                )));
            };
            props.insert(f.name.to_string(), json!(b));
        }
    }
    let shown = if kind == "static" { "base" } else { name };
    Ok(json!({ "model": { "name": shown, "props": props } }))
}
