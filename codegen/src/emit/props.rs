//! `props.rs`: one typed property struct per device type (and one Rust enum
//! per enum property, named after the declaring type).

use super::names::{camel, snake, unique};
use crate::model::{Model, PropM};
use compat_runtime::PropType;
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

fn enum_ident(p: &PropM) -> Ident {
    format_ident!("{}{}", camel(&p.owner), camel(&p.name))
}

fn enum_def(p: &PropM, variants: &[String]) -> TokenStream {
    let id = enum_ident(p);
    let vids = unique(variants.iter().map(|v| camel(v)).collect());
    let doc = format!(" Values of `{}.{}`.", p.owner, p.name);
    let docs = variants.iter().map(|v| format!(" `{v}`"));
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum #id { #(#[doc = #docs] #vids),* }
        impl #id {
            /// Parses the TOML/CLI name.
            pub fn from_name(s: &str) -> Option<Self> {
                match s { #(#variants => Some(Self::#vids),)* _ => None }
            }
            /// The TOML/CLI name.
            pub fn as_str(self) -> &'static str {
                match self { #(Self::#vids => #variants),* }
            }
        }
    }
}

pub fn props(m: &Model) -> TokenStream {
    let mut enums = Vec::new();
    for t in &m.types {
        for p in t.props.iter().filter(|p| p.owner == t.name) {
            if let PropType::Enum { variants } = &p.ty {
                let v: Vec<String> = variants.iter().map(|v| v.to_string()).collect();
                enums.push(enum_def(p, &v));
            }
        }
    }
    let struct_ids = unique(
        m.types
            .iter()
            .map(|t| format_ident!("{}Props", camel(&t.name)))
            .collect(),
    );
    let structs = m.types.iter().zip(struct_ids).map(|(t, sid)| {
        let tname = &t.name;
        let fids = unique(t.props.iter().map(|p| snake(&p.name)).collect());
        let mut fields = Vec::new();
        let mut inits = Vec::new();
        for (p, fid) in t.props.iter().zip(&fids) {
            let pn = &p.name;
            let (ty, init) = match &p.ty {
                PropType::Bool => (quote!(bool), quote!(get_bool(cfg, T, #pn)?)),
                PropType::Uint { bits, auto, .. } => {
                    let int = format_ident!("u{}", bits);
                    if *auto {
                        (quote!(AutoOr<#int>), quote!(get_auto_uint(cfg, T, #pn)?))
                    } else {
                        (quote!(#int), quote!(get_uint(cfg, T, #pn)?))
                    }
                }
                PropType::Enum { .. } => {
                    let e = enum_ident(p);
                    (quote!(#e), quote!(get_enum(cfg, T, #pn, #e::from_name)?))
                }
                PropType::Str { optional: true, .. } => {
                    (quote!(Option<String>), quote!(get_opt_string(cfg, T, #pn)?))
                }
                PropType::Str { .. } => (quote!(String), quote!(get_string(cfg, T, #pn)?)),
            };
            let doc = format!(" `{}` ({}): {}", p.name, p.ty.describe(), p.doc);
            fields.push(quote!(#[doc = #doc] pub #fid: #ty));
            inits.push(quote!(#fid: #init));
        }
        let unused = if inits.is_empty() {
            quote!(let _ = cfg;)
        } else {
            quote!(const T: &str = #sid::TYPE_NAME;)
        };
        let doc = format!(" Typed properties of `{}`: {}", t.name, t.doc);
        quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct #sid { #(#fields),* }
            impl #sid {
                /// The device type these properties belong to.
                pub const TYPE_NAME: &'static str = #tname;
                /// Reads every property from an effective configuration.
                pub fn from_config(cfg: &EffectiveConfig) -> Result<Self, PropsError> {
                    #unused
                    Ok(Self { #(#inits),* })
                }
            }
        }
    });
    quote! {
        //! Typed property structs, one per device type, built from an
        //! [`EffectiveConfig`](compat_runtime::EffectiveConfig).
        #[allow(unused_imports)]
        use compat_runtime::{AutoOr, EffectiveConfig, PropsError};
        #[allow(unused_imports)]
        use compat_runtime::props::{get_auto_uint, get_bool, get_enum, get_opt_string, get_string, get_uint};
        #(#enums)*
        #(#structs)*
    }
}
