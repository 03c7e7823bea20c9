//! The destination's comparison of the stream's device instances with its
//! own, by id: the same instances, of the same types, at the same places,
//! with the same backend facts (a disk's capacity, read-only state, block
//! size, serial). Every difference is named; none passes silently.

use crate::manifest::{DeviceInstance, PropValue};
use std::collections::BTreeSet;
use std::fmt;

/// One way the destination's devices differ from the stream's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceDifference {
    /// The stream's instance has no counterpart here.
    Missing { id: String, type_name: String },
    /// This destination has an instance the stream lacks.
    Extra { id: String, type_name: String },
    /// Same id, another type.
    Type {
        id: String,
        stream: String,
        local: String,
    },
    /// Same id, another place in the guest's address space.
    Addr {
        id: String,
        stream: String,
        local: String,
    },
    /// One of the instance's own property values differs.
    Property {
        id: String,
        type_name: String,
        property: String,
        stream: String,
        local: String,
    },
    /// A backend fact differs (or is known on one side only).
    Fact {
        id: String,
        fact: String,
        stream: String,
        local: String,
    },
}

/// How a fact one side lacks is spelled.
const ABSENT: &str = "(absent)";

impl fmt::Display for InstanceDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { id, type_name } => write!(
                f,
                "device {id} ({type_name}) of the stream has no counterpart on this destination"
            ),
            Self::Extra { id, type_name } => write!(
                f,
                "this destination has device {id} ({type_name}), the stream does not"
            ),
            Self::Type { id, stream, local } => {
                write!(f, "device {id} is a {stream} on the source, a {local} here")
            }
            Self::Addr { id, stream, local } => {
                write!(
                    f,
                    "device {id} is at {stream} on the source, at {local} here"
                )
            }
            Self::Fact {
                id,
                fact,
                stream,
                local,
            } => write!(
                f,
                "device {id}: {fact} is {stream} on the source, {local} here"
            ),
            Self::Property {
                id,
                type_name,
                property,
                stream,
                local,
            } => write!(
                f,
                "device {id} ({type_name}): property {property} is {stream} on the source, {local} here"
            ),
        }
    }
}

/// Every difference between the stream's instances and the local ones, in
/// the stream's order (then the local extras).
pub fn differences(stream: &[DeviceInstance], local: &[DeviceInstance]) -> Vec<InstanceDifference> {
    let mut out = Vec::new();
    for s in stream {
        let Some(l) = local.iter().find(|l| l.id == s.id) else {
            out.push(InstanceDifference::Missing {
                id: s.id.clone(),
                type_name: s.type_name.clone(),
            });
            continue;
        };
        if l.type_name != s.type_name {
            out.push(InstanceDifference::Type {
                id: s.id.clone(),
                stream: s.type_name.clone(),
                local: l.type_name.clone(),
            });
            continue;
        }
        if l.addr != s.addr {
            out.push(InstanceDifference::Addr {
                id: s.id.clone(),
                stream: s.addr.clone(),
                local: l.addr.clone(),
            });
        }
        let props: BTreeSet<&String> = s.props.keys().chain(l.props.keys()).collect();
        for p in props {
            let (sv, lv) = (s.props.get(p), l.props.get(p));
            if sv.map(|v| &v.value) != lv.map(|v| &v.value) {
                let show = |v: Option<&PropValue>| {
                    v.map_or("its type's value".to_string(), |v| v.value.clone())
                };
                out.push(InstanceDifference::Property {
                    id: s.id.clone(),
                    type_name: s.type_name.clone(),
                    property: p.clone(),
                    stream: show(sv),
                    local: show(lv),
                });
            }
        }
        let facts: BTreeSet<&String> = s.facts.keys().chain(l.facts.keys()).collect();
        for fact in facts {
            let (sv, lv) = (s.facts.get(fact), l.facts.get(fact));
            if sv != lv {
                out.push(InstanceDifference::Fact {
                    id: s.id.clone(),
                    fact: fact.clone(),
                    stream: sv.map_or(ABSENT, String::as_str).to_string(),
                    local: lv.map_or(ABSENT, String::as_str).to_string(),
                });
            }
        }
    }
    for l in local {
        if !stream.iter().any(|s| s.id == l.id) {
            out.push(InstanceDifference::Extra {
                id: l.id.clone(),
                type_name: l.type_name.clone(),
            });
        }
    }
    out
}

/// [`differences`] as one refusal: `incompatible migration stream: ...; ...`.
pub fn check(stream: &[DeviceInstance], local: &[DeviceInstance]) -> Result<(), String> {
    let d = differences(stream, local);
    if d.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = d.iter().map(ToString::to_string).collect();
    Err(format!(
        "incompatible migration stream: {}",
        text.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(id: &str, addr: &str, facts: &[(&str, &str)]) -> DeviceInstance {
        DeviceInstance {
            id: id.into(),
            type_name: "virtio-blk-device".into(),
            addr: addr.into(),
            props: Default::default(),
            backend: None,
            facts: facts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn equal_instances_pass_and_every_difference_is_named() {
        let a = [
            disk(
                "virtio-blk0",
                "mmio 0",
                &[("capacity_sectors", "131072"), ("serial", "AAA")],
            ),
            disk(
                "virtio-blk1",
                "mmio 1",
                &[("capacity_sectors", "65536"), ("read_only", "on")],
            ),
        ];
        assert_eq!(check(&a, &a), Ok(()));
        let b = [
            disk(
                "virtio-blk0",
                "mmio 0",
                &[("capacity_sectors", "32768"), ("serial", "(none)")],
            ),
            disk(
                "virtio-blk1",
                "mmio 1",
                &[("capacity_sectors", "65536"), ("read_only", "off")],
            ),
            disk("virtio-blk2", "mmio 2", &[]),
        ];
        let e = check(&a, &b).unwrap_err();
        for want in [
            "device virtio-blk0: capacity_sectors is 131072 on the source, 32768 here",
            "device virtio-blk0: serial is AAA on the source, (none) here",
            "device virtio-blk1: read_only is on on the source, off here",
            "this destination has device virtio-blk2 (virtio-blk-device), the stream does not",
        ] {
            assert!(e.contains(want), "missing `{want}` in: {e}");
        }
        assert!(!e.contains("virtio-blk1: capacity"), "{e}");
    }

    #[test]
    fn an_instance_property_that_differs_is_named() {
        let mut a = disk("virtio-blk0", "mmio 0", &[]);
        a.props
            .insert("num-queues".into(), PropValue::new("3", "-device"));
        let b = disk("virtio-blk0", "mmio 0", &[]);
        let e = check(&[a.clone()], &[b]).unwrap_err();
        assert!(
            e.contains("device virtio-blk0 (virtio-blk-device): property num-queues is 3 on the source, its type's value here"),
            "{e}"
        );
        let mut c = a.clone();
        c.props.get_mut("num-queues").unwrap().provenance = "stream".into();
        assert_eq!(check(&[a], &[c]), Ok(()), "provenance is not compared");
    }

    #[test]
    fn missing_retyped_moved_and_one_sided_facts() {
        let stream = [
            disk("a", "mmio 0", &[("serial", "X")]),
            disk("b", "mmio 1", &[]),
            disk("c", "mmio 2", &[]),
        ];
        let mut retyped = disk("b", "mmio 1", &[]);
        retyped.type_name = "virtio-rng-pci".into();
        let local = [disk("a", "mmio 5", &[]), retyped];
        let d = differences(&stream, &local);
        assert_eq!(
            d,
            vec![
                InstanceDifference::Addr {
                    id: "a".into(),
                    stream: "mmio 0".into(),
                    local: "mmio 5".into()
                },
                InstanceDifference::Fact {
                    id: "a".into(),
                    fact: "serial".into(),
                    stream: "X".into(),
                    local: ABSENT.into()
                },
                InstanceDifference::Type {
                    id: "b".into(),
                    stream: "virtio-blk-device".into(),
                    local: "virtio-rng-pci".into()
                },
                InstanceDifference::Missing {
                    id: "c".into(),
                    type_name: "virtio-blk-device".into()
                },
            ]
        );
    }
}
