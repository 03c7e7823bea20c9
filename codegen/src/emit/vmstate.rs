//! `vmstate.rs`: a VMState descriptor and a typed state struct per device.

use super::names::{camel, snake, unique, upper};
use super::tokens::{num, wire, wire_rust};
use crate::model::{CountM, FieldM, Model};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

fn field_descs(fields: &[FieldM]) -> Vec<TokenStream> {
    fields
        .iter()
        .map(|f| {
            let (name, w, since) = (&f.name, wire(f.wire), num(f.since));
            let count = match &f.count {
                CountM::One => quote!(Count::One),
                CountM::Fixed(n) => {
                    let n = num(*n);
                    quote!(Count::Fixed { len: #n })
                }
                CountM::Field(field, max) => {
                    let max = num(*max);
                    quote!(Count::Field { field: #field, max: #max })
                }
            };
            quote!(FieldDesc { name: #name, wire: #w, count: #count, since: #since })
        })
        .collect()
}

fn struct_fields(fields: &[FieldM]) -> (Vec<Ident>, Vec<TokenStream>) {
    let ids = unique(fields.iter().map(|f| snake(&f.name)).collect());
    let tys = fields
        .iter()
        .map(|f| {
            let t = wire_rust(f.wire);
            if f.count == CountM::One {
                t
            } else {
                quote!(Vec<#t>)
            }
        })
        .collect();
    (ids, tys)
}

pub fn vmstate(m: &Model) -> TokenStream {
    let statics = unique(m.types.iter().map(|t| upper(&t.name)).collect());
    let mut items = Vec::new();
    for (t, sid) in m.types.iter().zip(statics) {
        let Some(v) = &t.vmstate else { continue };
        let (name, ver, min) = (&v.name, num(v.version_id), num(v.minimum_version_id));
        let fields = field_descs(&v.fields);
        let subs = v.subsections.iter().map(|s| {
            let (sn, gate) = (&s.name, &s.gate);
            let f = field_descs(&s.fields);
            quote!(SubsectionDesc { name: #sn, gate: #gate, fields: &[#(#f),*] })
        });
        let doc = format!("VMState of `{}`.", t.name);
        items.push(quote! {
            #[doc = #doc]
            pub static #sid: VmStateDesc = VmStateDesc {
                name: #name, version_id: #ver, minimum_version_id: #min,
                fields: &[#(#fields),*], subsections: &[#(#subs),*],
            };
        });
        let state = format_ident!("{}State", camel(&t.name));
        let (fids, ftys) = struct_fields(&v.fields);
        let mut sub_fields = Vec::new();
        for s in &v.subsections {
            let sname = format_ident!(
                "{}{}State",
                camel(&t.name),
                camel(s.name.rsplit('/').next().unwrap_or(&s.name))
            );
            let (ids, tys) = struct_fields(&s.fields);
            let doc = format!("Subsection `{}`, sent when `{}` is on.", s.name, s.gate);
            items.push(quote! {
                #[doc = #doc]
                #[derive(Debug, Clone, Default, PartialEq, Eq)]
                pub struct #sname { #(pub #ids: #tys),* }
            });
            sub_fields.push((
                snake(&format!(
                    "sub-{}",
                    s.name.rsplit('/').next().unwrap_or(&s.name)
                )),
                sname,
            ));
        }
        let (sids, stys): (Vec<_>, Vec<_>) = sub_fields.into_iter().unzip();
        let doc = format!(
            "Migration state of `{}` (section `{}`, version {}).",
            t.name, v.name, v.version_id
        );
        items.push(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, Default, PartialEq, Eq)]
            pub struct #state {
                #(pub #fids: #ftys,)*
                #(pub #sids: Option<#stys>,)*
            }
        });
    }
    quote! {
        //! VMState descriptors and typed state structs.
        #[allow(unused_imports)]
        use compat_runtime::{Count, FieldDesc, SubsectionDesc, VmStateDesc, WireType};
        #(#items)*
    }
}
