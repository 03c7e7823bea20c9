//! `vmm dump-vmstate -M MACHINE [--as-release R] FILE`: every VMState
//! description as JSON in the format of the reference's `-dump-vmstate`, so
//! its `scripts/vmstate-static-checker.py -s A.json -d B.json` can compare
//! two releases.
//!
//! Shape: `{"vmschkmachine": {"Name": M}, "<device type>": {"Name",
//! "version_id", "minimum_version_id", "Description": {"name",
//! "version_id", "minimum_version_id", "Fields": [{"field", "version_id",
//! "field_exists", "size"}], "Subsections": [...]}}}`.

use crate::release::matrix::{MatrixError, embedded};
use compat_runtime::release::{LockField, LockSection};
use compat_runtime::suggest::{did_you_mean, hint};
use compat_runtime::{Catalog, Lock};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `vmm dump-vmstate`.
#[derive(clap::Args, Debug)]
pub struct DumpVmstateArgs {
    /// Machine type (or alias) recorded as `vmschkmachine`.
    #[arg(short = 'M', long = "machine")]
    pub machine: String,
    /// Dump what frozen release R sends and loads instead of this build.
    #[arg(long = "as-release")]
    pub as_release: Option<String>,
    /// Output file (`-`: standard output).
    pub file: PathBuf,
}

/// Why nothing was dumped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("unknown machine type `{name}`{}", hint(.suggestion))]
    UnknownMachine {
        name: String,
        suggestion: Option<String>,
    },
    #[error("release {release} does not know machine type `{machine}`")]
    NotInRelease { release: String, machine: String },
    #[error("unknown release `{name}`{}", hint(.suggestion))]
    UnknownRelease {
        name: String,
        suggestion: Option<String>,
    },
    #[error(transparent)]
    Locks(#[from] MatrixError),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

fn field(f: &LockField) -> Value {
    // The reference reports the size of one element, or of the whole buffer.
    let elem = f
        .wire
        .parse::<compat_runtime::WireType>()
        .map(|w| w.size())
        .unwrap_or(1);
    let size = if f.wire == "buffer" {
        f.len.unwrap_or(1) as usize
    } else {
        elem
    };
    json!({"field": f.name, "version_id": f.since, "field_exists": false, "size": size})
}

fn description(s: &LockSection) -> Value {
    let subs: Vec<Value> = s
        .subsection
        .iter()
        .map(|sub| {
            json!({"name": sub.name, "version_id": 1, "minimum_version_id": 1,
                   "Fields": sub.fields.iter().map(field).collect::<Vec<_>>()})
        })
        .collect();
    let mut d = json!({"name": s.name, "version_id": s.version_id,
                       "minimum_version_id": s.minimum_version_id,
                       "Fields": s.fields.iter().map(field).collect::<Vec<_>>()});
    if !subs.is_empty() {
        d["Subsections"] = Value::Array(subs);
    }
    d
}

/// The dump of `sections` for machine type `machine`.
pub fn dump(machine: &str, sections: &[LockSection]) -> Value {
    let mut top = Map::new();
    top.insert("vmschkmachine".into(), json!({"Name": machine}));
    for s in sections {
        top.insert(
            s.device.clone(),
            json!({"Name": s.device, "version_id": s.version_id,
                   "minimum_version_id": s.minimum_version_id, "Description": description(s)}),
        );
    }
    Value::Object(top)
}

/// This build's sections.
pub fn current_sections(catalog: &Catalog) -> Vec<LockSection> {
    catalog
        .device_types
        .iter()
        .filter_map(|d| Some(LockSection::from_desc(d.name, d.vmstate?)))
        .collect()
}

/// The dump the arguments ask for.
pub fn build(args: &DumpVmstateArgs, catalog: &Catalog) -> Result<Value, DumpError> {
    let m = catalog
        .machine(&args.machine)
        .ok_or_else(|| DumpError::UnknownMachine {
            name: args.machine.clone(),
            suggestion: did_you_mean(&args.machine, catalog.machine_names()),
        })?;
    let Some(r) = &args.as_release else {
        return Ok(dump(m.name, &current_sections(catalog)));
    };
    let locks = embedded()?;
    let lock: &Lock =
        locks
            .iter()
            .find(|l| &l.release == r)
            .ok_or_else(|| DumpError::UnknownRelease {
                name: r.clone(),
                suggestion: did_you_mean(r, locks.iter().map(|l| l.release.as_str())),
            })?;
    if lock.machine(m.name).is_none() {
        return Err(DumpError::NotInRelease {
            release: r.clone(),
            machine: m.name.to_string(),
        });
    }
    Ok(dump(m.name, &lock.section))
}

/// Runs `vmm dump-vmstate`.
pub fn main(args: &DumpVmstateArgs) -> ExitCode {
    let result = build(args, &devices::generated::CATALOG).and_then(|v| {
        let text = format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default());
        let write = if args.file.as_os_str() == "-" {
            use std::io::Write;
            std::io::stdout().write_all(text.as_bytes())
        } else {
            std::fs::write(&args.file, text)
        };
        write.map_err(|error| DumpError::Write {
            path: args.file.display().to_string(),
            error,
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::generated::CATALOG;

    fn args(machine: &str, release: Option<&str>) -> DumpVmstateArgs {
        DumpVmstateArgs {
            machine: machine.into(),
            as_release: release.map(str::to_string),
            file: "-".into(),
        }
    }

    /// The structure the reference's static checker walks.
    fn check_structure(v: &Value, machine: &str) {
        let top = v.as_object().expect("object");
        assert_eq!(top["vmschkmachine"]["Name"], machine);
        assert!(top.len() > 1);
        for (name, sec) in top.iter().filter(|(k, _)| *k != "vmschkmachine") {
            assert_eq!(sec["Name"], name.as_str());
            for k in ["version_id", "minimum_version_id"] {
                assert!(sec[k].is_u64(), "{name}.{k}");
            }
            let d = &sec["Description"];
            assert!(d["name"].is_string());
            assert_eq!(d["version_id"], sec["version_id"]);
            let fields = d["Fields"].as_array().expect("Fields");
            assert!(!fields.is_empty(), "{name}");
            for f in fields.iter().chain(
                d["Subsections"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["Fields"].as_array().into_iter().flatten()),
            ) {
                assert!(f["field"].is_string());
                assert!(f["version_id"].is_u64());
                assert!(f["field_exists"].is_boolean());
                assert!(f["size"].as_u64().is_some_and(|s| s > 0));
            }
        }
    }

    #[test]
    fn dumps_this_build_in_the_reference_format() {
        let v = build(&args("pc", None), &CATALOG).expect("dump");
        check_structure(&v, "pc-10.2");
        let root_port = &v["pcie-root-port"]["Description"];
        assert_eq!(
            root_port["Subsections"][0]["name"],
            "pcie-root-port/aer-mask"
        );
        let serial = &v["isa-serial"]["Description"]["Fields"];
        let fcr = serial
            .as_array()
            .and_then(|f| f.iter().find(|x| x["field"] == "fcr"))
            .expect("fcr");
        assert_eq!(fcr["version_id"], 3);
        assert_eq!(fcr["size"], 1);
    }

    #[test]
    fn dumps_a_frozen_release() {
        let v = build(&args("pc-7.2", Some("8.0")), &CATALOG).expect("dump");
        check_structure(&v, "pc-7.2");
        let now = build(&args("pc-7.2", None), &CATALOG).expect("dump");
        // The layout has not changed since 8.0.
        assert_eq!(v, now);
    }

    #[test]
    fn bad_input_is_refused() {
        let e = |a| build(&a, &CATALOG).unwrap_err().to_string();
        assert!(e(args("pc-7.3", None)).contains("did you mean"));
        assert!(e(args("pc-8.2", Some("5.1"))).contains("does not know"));
        assert!(e(args("pc-5.1", Some("5.3"))).contains("unknown release `5.3`"));
    }
}
