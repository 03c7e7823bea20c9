//! `catalog.rs` (families, machines, timelines, deltas, releases,
//! deprecations) and `device_types.rs`.

use super::names::upper;
use super::tokens::{num, opt_str, prop_type, value, version};
use crate::model::{EffectM, LifecycleM, Model};
use crate::resolve::Resolved;
use compat_runtime::{FeatureKind, FeatureLoc};
use proc_macro2::TokenStream;
use quote::quote;

pub fn catalog(r: &Resolved) -> TokenStream {
    let m = &r.model;
    let families = m.families.iter().zip(&r.timelines).map(|(f, tl)| {
        let (name, doc, alias) = (&f.name, &f.doc, opt_str(f.alias.as_deref()));
        let series = f.series.iter();
        let machines = f.machines.iter().map(|mm| {
            let (mname, fam, intro) = (&mm.name, &mm.family, &mm.introduced_in);
            let v = version(mm.version);
            let alias = opt_str(mm.alias.as_deref());
            let lc = match &mm.lifecycle {
                LifecycleM::Supported => quote!(Lifecycle::Supported),
                LifecycleM::Deprecated { since, reason } => {
                    quote!(Lifecycle::Deprecated { since: #since, reason: #reason })
                }
                LifecycleM::Removed { since, reason } => {
                    quote!(Lifecycle::Removed { since: #since, reason: #reason })
                }
            };
            let k = &mm.knobs;
            let (mc, dc, mem) = (num(k.max_cpus), num(k.default_cpus), num(k.memory_mib));
            let devs = k.devices.iter();
            quote!(MachineType {
                name: #mname, family: #fam, version: #v, alias: #alias, lifecycle: #lc,
                introduced_in: #intro,
                knobs: Knobs { max_cpus: #mc, default_cpus: #dc, memory_mib: #mem, devices: &[#(#devs),*] },
            })
        });
        // Group the sorted (type, prop, steps) list by type.
        let mut groups: Vec<(&str, Vec<TokenStream>)> = Vec::new();
        for (t, p, steps) in &tl.props {
            let steps = steps.iter().map(|s| {
                let (a, b) = (num(s.version.major), num(s.version.minor));
                let (val, delta, via) = (value(&s.value), &s.delta, &s.via);
                quote!(Step::compat(#a, #b, #val, #delta, #via))
            });
            let pt = quote!(PropTimeline { prop: #p, steps: &[#(#steps),*] });
            match groups.last_mut() {
                Some((name, v)) if *name == t.as_str() => v.push(pt),
                _ => groups.push((t.as_str(), vec![pt])),
            }
        }
        let tls = groups.iter().map(|(t, ps)| quote!(TypeTimeline { type_name: #t, props: &[#(#ps),*] }));
        quote!(Family {
            name: #name, doc: #doc, alias: #alias, series: &[#(#series),*],
            machines: &[#(#machines),*],
            timelines: &[#(#tls),*],
        })
    });
    let deltas = m.deltas.iter().map(|d| {
        let (name, series, v) = (&d.name, &d.series, version(d.version));
        let entries = d.entries.iter().map(|e| {
            let (t, p, val, added) = (
                &e.type_name,
                &e.property,
                value(&e.value),
                opt_str(e.added_in.as_deref()),
            );
            quote!(DeltaEntry::new(#t, #p, #val, #added))
        });
        quote!(Delta { name: #name, series: #series, version: #v, entries: &[#(#entries),*] })
    });
    let releases = m.releases.iter().map(|rel| {
        let v = &rel.version;
        let date = rel
            .date
            .map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
            .unwrap_or_default();
        let errata = rel.errata.iter().map(|e| {
            let (id, sum, t, p, fixed) =
                (&e.id, &e.summary, &e.type_name, &e.property, &e.fixed_in);
            let (shipped, mm) = (value(&e.shipped), version(e.max_machine));
            quote!(Erratum { id: #id, summary: #sum, type_name: #t, property: #p, shipped: #shipped,
                max_machine: #mm, fixed_in: #fixed })
        });
        quote!(Release { version: #v, date: #date, errata: &[#(#errata),*] })
    });
    let deps = m.deprecations.iter().map(|d| {
        let (id, f, s, r) = (&d.id, &d.feature, &d.since, &d.replacement);
        quote!(Deprecation { id: #id, feature: #f, since: #s, replacement: #r })
    });
    let features = m.features.iter().map(|f| {
        let (name, doc, migratable) = (&f.name, &f.doc, f.migratable);
        let aliases = f.aliases.iter();
        let place = match f.loc {
            FeatureLoc::Cpuid {
                bit,
                reg,
                subleaf,
                leaf,
            } => {
                let (leaf, subleaf) = (num(u64::from(leaf)), num(u64::from(subleaf)));
                let (reg, bit) = (num(u64::from(reg)), num(u64::from(bit)));
                quote!(FeatureLoc::Cpuid { leaf: #leaf, subleaf: #subleaf, reg: #reg, bit: #bit })
            }
            FeatureLoc::Msr { index, bit } => {
                let (index, bit) = (num(u64::from(index)), num(u64::from(bit)));
                quote!(FeatureLoc::Msr { index: #index, bit: #bit })
            }
        };
        let kind = match f.kind {
            FeatureKind::Feature => quote!(FeatureKind::Feature),
            FeatureKind::VulnerabilityAbsent => quote!(FeatureKind::VulnerabilityAbsent),
        };
        quote!(CpuFeature { name: #name, aliases: &[#(#aliases),*], loc: #place,
            migratable: #migratable, kind: #kind, doc: #doc })
    });
    quote! {
        //! The compiled catalog: families with machine types and resolved
        //! property timelines, deltas, releases, deprecations, CPU features.
        #[allow(unused_imports)]
        use compat_runtime::{
            Catalog, CpuFeature, Delta, DeltaEntry, Deprecation, Erratum, Family, FeatureKind,
            FeatureLoc, Knobs, Lifecycle, MachineType, MachineVersion, PropTimeline, Provenance,
            Release, Step, TypeTimeline, Value,
        };
        #[allow(unused_imports)]
        use std::borrow::Cow;

        /// Everything compiled from `compat/*.toml`.
        pub static CATALOG: Catalog = Catalog {
            families: &[#(#families),*],
            device_types: &super::device_types::DEVICE_TYPES,
            deltas: &[#(#deltas),*],
            releases: &[#(#releases),*],
            deprecations: &[#(#deps),*],
            cpu_features: &[#(#features),*],
        };
    }
}

pub fn device_types(m: &Model) -> TokenStream {
    let n = num(m.types.len() as u64);
    let vm_ids = super::names::unique(m.types.iter().map(|t| upper(&t.name)).collect());
    let types = m.types.iter().zip(vm_ids).map(|(t, id)| {
        let (name, doc) = (&t.name, &t.doc);
        let parent = opt_str(t.parent.as_deref());
        let anc = t
            .ancestors
            .iter()
            .filter_map(|&a| m.types.get(a))
            .map(|a| &a.name);
        let props = t.props.iter().map(|p| {
            let (pn, owner, doc) = (&p.name, &p.owner, &p.doc);
            let (ty, def) = (prop_type(&p.ty), value(&p.default));
            let effect = match &p.effect {
                EffectM::Guest => quote!(),
                EffectM::Stream => quote!(.stream()),
                EffectM::None { why } => quote!(.inert(#why)),
            };
            quote!(PropDef::new(#pn, #owner, #ty, #def, #doc) #effect)
        });
        let vm = match &t.vmstate {
            Some(_) => quote!(Some(&super::vmstate::#id)),
            None => quote!(None),
        };
        let cpu_model = t.cpu_model;
        quote!(DeviceType { name: #name, parent: #parent, ancestors: &[#(#anc),*], doc: #doc,
            props: &[#(#props),*], vmstate: #vm, cpu_model: #cpu_model })
    });
    quote! {
        //! Every device type with its (inherited) properties.
        #[allow(unused_imports)]
        use compat_runtime::{DeviceType, PropDef, PropType, Value};
        #[allow(unused_imports)]
        use std::borrow::Cow;

        /// Every device type, parents before children.
        pub static DEVICE_TYPES: [DeviceType; #n] = [#(#types),*];
    }
}
