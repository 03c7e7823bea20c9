//! `qom-list` and `qom-get` over the running machine, in the reference's
//! tree shape: `/machine/peripheral/ID` for every device instance (its
//! `vmm ctl qtree` id), `/machine/unattached/device[N]` for vCPU N (the
//! CPU model's type). Each object has a `type` property and every property
//! of its type, with its effective value (a compat delta's, a `-global`'s,
//! the stream's) typed as the reference types it (bool, integer, string).
//! A path that is not absolute is looked up among the objects' ids, as the
//! reference resolves partial paths.

use super::Reply;
use crate::builder::config::catalog;
use crate::control::handler::MachineView;
use crate::control::state::State;
use compat_runtime::PropType;
use migration::manifest::PropValue;
use qmp::{Args, ErrorClass, QmpError};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One object of the tree.
enum Node {
    Container(Vec<(String, String)>),
    Device {
        type_name: String,
        props: BTreeMap<String, PropValue>,
    },
}

fn not_found(path: &str) -> QmpError {
    QmpError {
        class: ErrorClass::DeviceNotFound,
        desc: format!("Device '{path}' not found"),
    }
}

fn view(st: &State) -> Result<MachineView, QmpError> {
    st.handler
        .view()
        .ok_or_else(|| QmpError::generic("no guest is running (waiting for an incoming migration)"))
}

/// The properties of type `ty` in `v`, then `extra` over them.
fn props_of(
    v: &MachineView,
    ty: &str,
    extra: &BTreeMap<String, PropValue>,
) -> BTreeMap<String, PropValue> {
    let mut props = migration::config::from_effective(&v.effective)
        .remove(ty)
        .unwrap_or_default();
    props.extend(extra.clone());
    props
}

/// The object at `path`.
fn resolve(v: &MachineView, path: &str) -> Result<Node, QmpError> {
    let cpu = |i: usize| -> Option<Node> {
        let ty = v.cpu_type.clone()?;
        (i < v.vcpus.len()).then(|| Node::Device {
            props: props_of(v, &ty, &BTreeMap::new()),
            type_name: ty,
        })
    };
    let device = |id: &str| -> Option<Node> {
        let d = v.instances.iter().find(|d| d.id == id)?;
        Some(Node::Device {
            type_name: d.type_name.clone(),
            props: props_of(v, &d.type_name, &d.props),
        })
    };
    let child = |ty: &str| format!("child<{ty}>");
    let p = path.trim_end_matches('/');
    let node = match p {
        "" => Some(Node::Container(vec![(
            "machine".into(),
            child("container"),
        )])),
        "/machine" => Some(Node::Container(vec![
            ("peripheral".into(), child("container")),
            ("unattached".into(), child("container")),
        ])),
        "/machine/peripheral" => Some(Node::Container(
            v.instances
                .iter()
                .map(|d| (d.id.clone(), child(&d.type_name)))
                .collect(),
        )),
        "/machine/unattached" => Some(Node::Container(
            v.cpu_type
                .iter()
                .flat_map(|ty| (0..v.vcpus.len()).map(move |i| (format!("device[{i}]"), child(ty))))
                .collect(),
        )),
        _ => match p.strip_prefix("/machine/peripheral/") {
            Some(id) => device(id),
            None => match p.strip_prefix("/machine/unattached/device[") {
                Some(rest) => rest
                    .strip_suffix(']')
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(cpu),
                None if !p.starts_with('/') => device(p),
                None => None,
            },
        },
    };
    node.ok_or_else(|| not_found(path))
}

/// The reference's name for a property's type.
fn type_name(ty: &PropType) -> String {
    match ty {
        PropType::Bool => "bool".into(),
        PropType::Uint { bits, .. } => format!("uint{bits}"),
        PropType::Enum { .. } | PropType::Str { .. } => "str".into(),
    }
}

fn prop_type(dev: &str, prop: &str) -> Option<&'static PropType> {
    let d = catalog().device_type(dev)?;
    d.props.iter().find(|p| p.name == prop).map(|p| &p.ty)
}

/// A value as the reference's `qom-get` returns it.
fn typed(ty: Option<&PropType>, value: &str) -> Value {
    match ty {
        Some(PropType::Bool) => json!(matches!(value, "on" | "true" | "yes")),
        Some(PropType::Uint { .. }) => {
            let n = match value.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => value.parse().ok(),
            };
            n.map_or_else(|| json!(value), |n| json!(n))
        }
        _ => json!(value),
    }
}

/// `qom-list`.
pub fn list(st: &State, args: &Args) -> Reply {
    args.only(&["path"])?;
    let path = args.str("path")?;
    let v = view(st)?;
    Ok(match resolve(&v, path)? {
        Node::Container(children) => {
            let mut out = vec![json!({ "name": "type", "type": "string" })];
            out.extend(
                children
                    .into_iter()
                    .map(|(n, t)| json!({ "name": n, "type": t })),
            );
            Value::Array(out)
        }
        Node::Device {
            type_name: ty,
            props,
        } => {
            let mut out = vec![json!({ "name": "type", "type": "string" })];
            out.extend(props.keys().map(|k| {
                let t = prop_type(&ty, k).map_or_else(|| "str".into(), type_name);
                json!({ "name": k, "type": t, "description": provenance(&props, k) })
            }));
            Value::Array(out)
        }
    })
}

fn provenance(props: &BTreeMap<String, PropValue>, k: &str) -> String {
    props
        .get(k)
        .map_or_else(String::new, |p| format!("from {}", p.provenance))
}

/// `qom-get`.
pub fn get(st: &State, args: &Args) -> Reply {
    args.only(&["path", "property"])?;
    let (path, prop) = (args.str("path")?, args.str("property")?);
    let v = view(st)?;
    match resolve(&v, path)? {
        Node::Container(_) if prop == "type" => Ok(json!("container")),
        Node::Device { type_name, .. } if prop == "type" => Ok(json!(type_name)),
        Node::Device { type_name, props } => match props.get(prop) {
            Some(p) => Ok(typed(prop_type(&type_name, prop), &p.value)),
            None => Err(QmpError::generic(format!(
                "Property '{type_name}.{prop}' not found"
            ))),
        },
        Node::Container(_) => Err(QmpError::generic(format!(
            "Property 'container.{prop}' not found"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::handler::VcpuInfo;
    use migration::manifest::DeviceInstance;

    fn machine() -> MachineView {
        let effective = catalog().resolve(catalog().machine("pc-5.1").expect("pc-5.1"));
        MachineView {
            effective,
            instances: vec![DeviceInstance {
                id: "disk0".into(),
                type_name: "virtio-blk-device".into(),
                addr: "virtio-mmio 0xd0000000 gsi 5".into(),
                props: [("serial".to_string(), PropValue::new("AAA", "-device"))].into(),
                backend: None,
                facts: Default::default(),
            }],
            cpu_type: Some("qemu64-x86_64-cpu".into()),
            vcpus: vec![VcpuInfo {
                index: 0,
                thread_id: 1,
            }],
        }
    }

    fn node_props(n: Node) -> BTreeMap<String, PropValue> {
        match n {
            Node::Device { props, .. } => props,
            Node::Container(_) => panic!("a container"),
        }
    }

    #[test]
    fn paths_resolve_like_the_references() {
        let v = machine();
        let p = node_props(resolve(&v, "/machine/peripheral/disk0").unwrap());
        assert_eq!(p["num-queues"].provenance, "hw_compat_5_1", "{p:?}");
        assert_eq!(p["serial"].value, "AAA");
        assert!(matches!(resolve(&v, "disk0"), Ok(Node::Device { .. })));
        assert!(matches!(
            resolve(&v, "/machine/unattached/device[0]"),
            Ok(Node::Device { .. })
        ));
        for bad in [
            "/machine/unattached/device[1]",
            "/machine/peripheral/nope",
            "/nope",
            "nope",
        ] {
            let e = resolve(&v, bad).err().expect(bad);
            assert_eq!(e.class, ErrorClass::DeviceNotFound, "{bad}");
        }
        match resolve(&v, "/machine/peripheral").unwrap() {
            Node::Container(c) => {
                assert_eq!(c, vec![("disk0".into(), "child<virtio-blk-device>".into())])
            }
            Node::Device { .. } => panic!("a device"),
        }
    }

    #[test]
    fn values_are_typed() {
        assert_eq!(typed(Some(&PropType::Bool), "on"), json!(true));
        let u = PropType::Uint {
            bits: 16,
            min: 0,
            max: 9,
            auto: true,
            power_of_two: false,
        };
        assert_eq!(typed(Some(&u), "0x10"), json!(16));
        assert_eq!(typed(Some(&u), "auto"), json!("auto"));
        assert_eq!(typed(None, "x"), json!("x"));
    }
}
