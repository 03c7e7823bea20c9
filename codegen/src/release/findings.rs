//! Findings shared by every lock that shows them, reported once with the
//! list of releases (`{RELEASES}` in a message is replaced by that list).

use crate::diag::Diag;
use compat_runtime::version::cmp_release;
use std::collections::BTreeMap;

/// Diagnostics keyed by what they are about, with the releases that see them.
#[derive(Default)]
pub struct Findings {
    map: BTreeMap<String, (usize, Diag, Vec<String>)>,
}

impl Findings {
    /// Records `diag` under `key` for `release` (the first diag of a key wins).
    pub fn add(&mut self, key: String, release: &str, diag: impl FnOnce() -> Diag) {
        let n = self.map.len();
        let e = self
            .map
            .entry(key)
            .or_insert_with(|| (n, diag(), Vec::new()));
        if !e.2.iter().any(|r| r == release) {
            e.2.push(release.to_string());
        }
    }

    /// The diagnostics in discovery order, release lists filled in.
    pub fn into_diags(self, all_releases: &[String]) -> Vec<Diag> {
        let mut v: Vec<_> = self.map.into_values().collect();
        v.sort_by_key(|x| x.0);
        v.into_iter()
            .map(|(_, mut d, mut rels)| {
                rels.sort_by(|a, b| cmp_release(a, b));
                let list = range(&rels, all_releases);
                let word = if rels.len() == 1 {
                    "release"
                } else {
                    "releases"
                };
                let fill = |s: &str| s.replace("{RELEASES}", &format!("{word} {list}"));
                d.message = fill(&d.message);
                d.help = d.help.as_deref().map(fill);
                for l in &mut d.labels {
                    l.1 = fill(&l.1);
                }
                d
            })
            .collect()
    }
}

/// `a … b` when `items` is a contiguous run of `universe`, else a list.
pub fn range(items: &[String], universe: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [first, .., last] => {
            let pos = |x: &String| universe.iter().position(|u| u == x);
            match (pos(first), pos(last)) {
                (Some(a), Some(b)) if b >= a && b - a + 1 == items.len() => {
                    format!("{first} … {last}")
                }
                _ => items.join(", "),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let u: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(range(&s(&["b"]), &u), "b");
        assert_eq!(range(&s(&["a", "b", "c"]), &u), "a … c");
        assert_eq!(range(&s(&["a", "c"]), &u), "a, c");
    }
}
