//! Turning TOML names into Rust identifiers that are always valid.

use proc_macro2::{Ident, Span};

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn valid(s: &str) -> bool {
    syn::parse_str::<syn::Ident>(s).is_ok()
}

fn finish(mut s: String, prefix: &str) -> Ident {
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, prefix);
    }
    if !valid(&s) {
        s.push('_');
    }
    if !valid(&s) {
        s = format!("{prefix}invalid");
    }
    Ident::new(&s, Span::call_site())
}

/// `virtio-blk-device` → `VirtioBlkDevice`.
pub fn camel(s: &str) -> Ident {
    let mut out = String::new();
    for w in words(s) {
        if out.ends_with(|c: char| c.is_ascii_digit())
            && w.starts_with(|c: char| c.is_ascii_digit())
        {
            out.push('_');
        }
        let mut c = w.chars();
        if let Some(f) = c.next() {
            out.push(f.to_ascii_uppercase());
            out.push_str(&c.as_str().to_ascii_lowercase());
        }
    }
    finish(out, "V")
}

/// `num-queues` → `num_queues`.
pub fn snake(s: &str) -> Ident {
    finish(words(s).join("_").to_ascii_lowercase(), "p_")
}

/// `virtio-blk-device` → `VIRTIO_BLK_DEVICE`.
pub fn upper(s: &str) -> Ident {
    finish(words(s).join("_").to_ascii_uppercase(), "T_")
}

/// Makes a list of identifiers unique by suffixing repeats with their index.
pub fn unique(ids: Vec<Ident>) -> Vec<Ident> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            if seen.insert(id.to_string()) {
                id
            } else {
                let id = Ident::new(&format!("{id}_{i}"), Span::call_site());
                seen.insert(id.to_string());
                id
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_are_valid() {
        assert_eq!(camel("virtio-blk-device").to_string(), "VirtioBlkDevice");
        assert_eq!(camel("2_5").to_string(), "V2_5");
        assert_eq!(
            snake("x-pcie-err-unc-mask").to_string(),
            "x_pcie_err_unc_mask"
        );
        assert_eq!(snake("type").to_string(), "type_");
        assert_eq!(snake("self").to_string(), "self_");
        assert_eq!(snake("").to_string(), "p_");
        assert_eq!(upper("a.b").to_string(), "A_B");
        let u = unique(vec![snake("a-b"), snake("a_b")]);
        assert_ne!(u[0].to_string(), u[1].to_string());
    }
}
