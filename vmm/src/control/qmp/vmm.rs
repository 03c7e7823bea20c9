//! This VMM's own commands, in the reference's naming convention for
//! extensions (`x-` prefix): `x-vmm-status` (what `vmm ctl status` and
//! `qtree` show: state, machine type, release, pinned properties with their
//! provenance, device instances), `x-vmm-query-provenance` (every effective
//! property and where its value came from), `x-vmm-verify-ab` (the `ab`
//! workload's memory rule on a stopped guest) and `x-vmm-query-matrix`
//! (the release matrix for the running machine type).

use super::{Reply, fail};
use crate::builder::config::catalog;
use crate::control::state::State;
use crate::release::matrix;
use qmp::{Args, QmpError};
use serde_json::{Value, json};

/// One `x-vmm-*` command.
pub fn execute(st: &State, name: &str, args: &Args) -> Reply {
    let h = &st.handler;
    let to_value =
        |v: Result<Value, serde_json::Error>| v.map_err(|e| QmpError::generic(e.to_string()));
    match name {
        "x-vmm-status" => {
            args.only(&[])?;
            to_value(serde_json::to_value(h.status().map_err(fail)?))
        }
        "x-vmm-verify-ab" => {
            args.only(&["start", "pages"])?;
            let (start, pages) = (args.u64("start")?, args.u64("pages")?);
            to_value(serde_json::to_value(
                h.verify_ab(start, pages).map_err(fail)?,
            ))
        }
        "x-vmm-query-provenance" => {
            args.only(&["type", "property"])?;
            let (ty, prop) = (args.opt_str("type")?, args.opt_str("property")?);
            let v = h.view().ok_or_else(|| {
                QmpError::generic("no guest is running (waiting for an incoming migration)")
            })?;
            let origins = h.status().map_err(fail)?.pinned;
            let list: Vec<Value> = v
                .effective
                .devices
                .iter()
                .filter(|d| ty.is_none_or(|t| t == d.type_name))
                .flat_map(|d| d.props.iter().map(move |p| (d, p)))
                .filter(|(_, p)| prop.is_none_or(|n| n == p.name))
                .map(|(d, p)| {
                    let mut e = json!({
                        "type": d.type_name,
                        "property": p.name,
                        "value": p.value.to_string(),
                        "provenance": p.provenance.to_string(),
                    });
                    if let Some(o) = origins
                        .iter()
                        .find(|o| o.device == d.type_name && o.property == p.name)
                        .and_then(|o| o.origin.clone())
                    {
                        e["origin"] = json!(o);
                    }
                    e
                })
                .collect();
            if list.is_empty() {
                return Err(QmpError::generic(format!(
                    "no property matches type {} property {}",
                    ty.unwrap_or("*"),
                    prop.unwrap_or("*")
                )));
            }
            Ok(Value::Array(list))
        }
        "x-vmm-query-matrix" => {
            args.only(&["machine", "releases"])?;
            let machine = match args.opt_str("machine")? {
                Some(m) => Some(m.to_string()),
                None => h
                    .status()
                    .ok()
                    .map(|s| s.machine_type)
                    .filter(|m| !m.is_empty()),
            };
            let releases: Vec<String> = args
                .opt_array("releases")?
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let cat = catalog();
            let err = |e: matrix::MatrixError| QmpError::generic(e.to_string());
            let all = matrix::with_next(cat).map_err(err)?;
            let locks = matrix::select(&all, &releases).map_err(err)?;
            let ms = matrix::machines(&locks, machine.as_deref(), cat).map_err(err)?;
            to_value(serde_json::to_value(matrix::matrix(&locks, &ms, cat)))
        }
        other => Err(QmpError::not_found(other)),
    }
}
