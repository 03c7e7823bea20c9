//! `vmstate.rs`: a VMState descriptor, a typed state struct and its
//! [`VmState`](compat_runtime::VmState) impl per device.

use super::names::{camel, snake, unique, upper};
use super::tokens::{num, wire, wire_rust};
use crate::model::{CountM, FieldM, Model};
use compat_runtime::WireType;
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

/// Per field: identifier, Rust type, to-generic expression, from-generic expression.
struct Conv {
    ids: Vec<Ident>,
    tys: Vec<TokenStream>,
    to: Vec<TokenStream>,
    from: Vec<TokenStream>,
}

fn conv(fields: &[FieldM], src: TokenStream, this: TokenStream) -> Conv {
    let ids = unique(fields.iter().map(|f| snake(&f.name)).collect());
    let mut c = Conv {
        ids: ids.clone(),
        tys: vec![],
        to: vec![],
        from: vec![],
    };
    for (f, id) in fields.iter().zip(ids) {
        let (name, one) = (&f.name, f.count == CountM::One);
        let t = wire_rust(f.wire);
        let (ty, to, from) = match (f.wire, one) {
            (WireType::Buffer, _) => (
                quote!(Vec<u8>),
                quote!(FieldData::Bytes(#this.#id.clone())),
                quote!(wire::get_bytes(#src, dev, #name)?),
            ),
            (WireType::I64, true) => (
                quote!(i64),
                quote!(FieldData::Ints(vec![#this.#id])),
                quote!(wire::get_int(#src, dev, #name)?),
            ),
            (WireType::I64, false) => (
                quote!(Vec<i64>),
                quote!(FieldData::Ints(#this.#id.clone())),
                quote!(wire::get_ints(#src, dev, #name)?),
            ),
            (_, true) => (
                quote!(#t),
                quote!(wire::scalar(#this.#id)),
                quote!(wire::get_scalar(#src, dev, #name)?),
            ),
            (_, false) => (
                quote!(Vec<#t>),
                quote!(wire::array(&#this.#id)),
                quote!(wire::get_array(#src, dev, #name)?),
            ),
        };
        c.tys.push(ty);
        c.to.push(quote!((#name.to_string(), #to)));
        c.from.push(from);
    }
    c
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
        let doc = format!(" VMState of `{}`.", t.name);
        items.push(quote! {
            #[doc = #doc]
            pub static #sid: VmStateDesc = VmStateDesc {
                name: #name, version_id: #ver, minimum_version_id: #min,
                fields: &[#(#fields),*], subsections: &[#(#subs),*],
            };
        });
        let state = format_ident!("{}State", camel(&t.name));
        let main = conv(&v.fields, quote!(&d.fields), quote!(self));
        let (mut sub_ids, mut sub_tys, mut sub_to, mut sub_from) = (vec![], vec![], vec![], vec![]);
        let sub_names = unique(
            v.subsections
                .iter()
                .map(|s| snake(&format!("sub-{}", last(&s.name))))
                .collect(),
        );
        for (s, sid_field) in v.subsections.iter().zip(sub_names) {
            let sname = format_ident!("{}{}State", camel(&t.name), camel(last(&s.name)));
            let c = conv(&s.fields, quote!(f), quote!(s));
            let (ids, tys, to, from) = (&c.ids, &c.tys, &c.to, &c.from);
            let doc = format!(" Subsection `{}`, sent when `{}` is on.", s.name, s.gate);
            items.push(quote! {
                #[doc = #doc]
                #[derive(Debug, Clone, Default, PartialEq, Eq)]
                pub struct #sname { #(pub #ids: #tys),* }
            });
            let sn = &s.name;
            sub_to.push(quote! {
                if let Some(s) = &self.#sid_field {
                    d.subsections.push((#sn.to_string(), vec![#(#to),*]));
                }
            });
            sub_from.push(quote! {
                #sid_field: match d.subsection(#sn) {
                    Some(f) => Some(#sname { #(#ids: #from),* }),
                    None => None,
                }
            });
            sub_ids.push(sid_field);
            sub_tys.push(sname);
        }
        let (fids, ftys, fto, ffrom) = (&main.ids, &main.tys, &main.to, &main.from);
        let to_section = if sub_to.is_empty() {
            quote!(SectionData {
                fields: vec![#(#fto),*],
                subsections: Vec::new()
            })
        } else {
            quote! {
                let mut d = SectionData { fields: vec![#(#fto),*], subsections: Vec::new() };
                #(#sub_to)*
                d
            }
        };
        let doc = format!(
            " Migration state of `{}` (section `{}`, version {}).",
            t.name, v.name, v.version_id
        );
        items.push(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, Default, PartialEq, Eq)]
            pub struct #state {
                #(pub #fids: #ftys,)*
                #(pub #sub_ids: Option<#sub_tys>,)*
            }
            impl VmState for #state {
                fn desc() -> &'static VmStateDesc { &#sid }
                fn to_section(&self) -> SectionData {
                    #to_section
                }
                fn from_section(d: &SectionData) -> Result<Self, WireError> {
                    let dev = #name;
                    Ok(Self { #(#fids: #ffrom,)* #(#sub_from,)* })
                }
            }
        });
    }
    quote! {
        //! VMState descriptors, typed state structs and their generic
        //! save/load ([`VmState`]).
        #[allow(unused_imports)]
        use compat_runtime::{vmstate::wire, Count, FieldData, FieldDesc, SectionData, SubsectionDesc, VmState, VmStateDesc, WireError, WireType};
        #(#items)*
    }
}

fn last(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
