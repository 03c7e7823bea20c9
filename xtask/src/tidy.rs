//! Tidy checks over the source tree, run as tests (`cargo test -p xtask`):
//! the layers of `docs/architecture.md` hold, no two modules import each
//! other (directly or around a cycle), the migration core has no KVM
//! dependency, and no hand-written source file grows past 600 lines.
//!
//! Imports are read as text: every `crate::a::b` path, and every `super::x`
//! path resolved against the file's own module, counts as a dependency on
//! the longest module it names. A child naming its ancestor (`use
//! super::Item` in `vcpu/state.rs`) is the normal way down a module tree and
//! is not an edge; comments and `#[cfg(test)] mod tests` bodies are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules (`a::b`, the crate root is ``) and what each imports.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Module → the modules it names.
    pub edges: BTreeMap<String, BTreeSet<String>>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`; `lib.rs`/`main.rs` the root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    (!parts.iter().any(|p| p == "tests")).then(|| parts.join("::"))
}

/// The code of a file without comments and without its unit-test module.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that follows `prefix` in `code`, as its `::`-separated
/// identifiers (a `{` group yields one path per name in it).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        let mut path = Vec::new();
        let mut s = rest;
        loop {
            let end = s.find(|c: char| !ident(c)).unwrap_or(s.len());
            if end == 0 {
                break;
            }
            path.push(s[..end].to_string());
            match s[end..].strip_prefix("::") {
                Some(next) => s = next,
                None => break,
            }
        }
        if let Some(group) = s.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for name in inner.split(',') {
                let name: String = name.trim().chars().take_while(|c| ident(*c)).collect();
                if !name.is_empty() {
                    let mut p = path.clone();
                    p.push(name);
                    out.push(p);
                }
            }
        } else if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

impl ModuleGraph {
    /// Reads every `.rs` file under `src` (a crate's `src/`).
    pub fn of_crate(src: &Path) -> Self {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let modules: BTreeMap<String, String> = files
            .iter()
            .filter_map(|f| {
                let m = module_of(src, f)?;
                Some((m, code_of(&std::fs::read_to_string(f).ok()?)))
            })
            .collect();
        let longest = |parts: &[String]| -> Option<String> {
            (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|c| modules.contains_key(c))
        };
        let mut edges = BTreeMap::new();
        for (m, code) in &modules {
            let here: Vec<String> = if m.is_empty() {
                Vec::new()
            } else {
                m.split("::").map(str::to_string).collect()
            };
            let mut deps = BTreeSet::new();
            for p in paths_after(code, "crate::") {
                deps.extend(longest(&p));
            }
            for p in paths_after(code, "super::") {
                let ups = p.iter().take_while(|s| *s == "super").count() + 1;
                let Some(base) = here.len().checked_sub(ups) else {
                    continue;
                };
                let mut full = here[..base].to_vec();
                full.extend(p[ups - 1..].iter().cloned());
                deps.extend(longest(&full));
            }
            deps.retain(|d| d != m && !d.is_empty() && !m.starts_with(&format!("{d}::")));
            edges.insert(m.clone(), deps);
        }
        Self { edges }
    }

    /// The groups of modules that import each other around a cycle.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        // Two modules are in one cycle when each reaches the other.
        let reach = |from: &str| -> BTreeSet<String> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from.to_string()];
            while let Some(m) = todo.pop() {
                for d in self.edges.get(&m).into_iter().flatten() {
                    if seen.insert(d.clone()) {
                        todo.push(d.clone());
                    }
                }
            }
            seen
        };
        let reaches: BTreeMap<&String, BTreeSet<String>> =
            self.edges.keys().map(|m| (m, reach(m))).collect();
        let mut done = BTreeSet::new();
        let mut out = Vec::new();
        for (m, r) in &reaches {
            if done.contains(*m) || !r.contains(*m) {
                continue;
            }
            let group: Vec<String> = r
                .iter()
                .filter(|o| reaches.get(o).is_some_and(|ro| ro.contains(*m)))
                .cloned()
                .collect();
            done.extend(group.iter().cloned());
            out.push(group);
        }
        out
    }

    /// Edges between top-level modules that point up `layers` (lowest
    /// first), as `from -> to` lines.
    pub fn upward(&self, layers: &[&str]) -> Vec<String> {
        let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
        let rank = |m: &str| layers.iter().position(|l| *l == top(m));
        let mut out = Vec::new();
        for (m, deps) in &self.edges {
            for d in deps {
                if let (Some(a), Some(b)) = (rank(m), rank(d))
                    && b > a
                {
                    out.push(format!("{m} -> {d}"));
                }
            }
        }
        out
    }
}

/// The dependency names of a `Cargo.toml`'s `[dependencies]` table.
pub fn dependencies(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
        } else if inside && let Some((name, _)) = line.split_once('=') {
            out.push(name.trim().trim_end_matches(".workspace").to_string());
        }
    }
    out
}

/// Hand-written `.rs` files (not generated code, not tests) over `max` lines.
pub fn long_files(root: &Path, max: usize) -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["codegen", "devices", "guest", "vmm", "xtask"] {
        rust_files(&root.join(dir), &mut files);
    }
    files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(root).ok()?.to_string_lossy().into_owned();
            let skip = rel.starts_with("devices/src/generated/")
                || rel
                    .split('/')
                    .any(|c| c == "tests" || c == "target" || c == "fuzz")
                || rel.ends_with("/tests.rs");
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (!skip && n > max).then(|| format!("{rel}: {n} lines"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layers of the `vmm` crate, lowest first (`docs/architecture.md`).
    const VMM_LAYERS: &[&str] = &[
        "vstate", "cpu", "boot", "builder", "release", "migrate", "storage", "control", "cli",
    ];

    fn root() -> PathBuf {
        crate::root()
    }

    #[test]
    fn no_module_imports_around_a_cycle() {
        for krate in ["vmm/src", "vmm/migration/src", "devices/src", "codegen/src"] {
            let g = ModuleGraph::of_crate(&root().join(krate));
            assert!(g.edges.len() > 3, "{krate}: no modules read");
            assert_eq!(g.cycles(), Vec::<Vec<String>>::new(), "{krate}");
        }
    }

    #[test]
    fn vmm_imports_point_down_its_layers() {
        let g = ModuleGraph::of_crate(&root().join("vmm/src"));
        let tops: BTreeSet<&str> = g
            .edges
            .keys()
            .filter_map(|m| m.split("::").next())
            .collect();
        for t in tops.iter().filter(|t| !t.is_empty()) {
            assert!(VMM_LAYERS.contains(t), "module `{t}` has no layer");
        }
        assert_eq!(g.upward(VMM_LAYERS), Vec::<String>::new());
    }

    #[test]
    fn the_migration_core_has_no_kvm_dependency() {
        let text = std::fs::read_to_string(root().join("vmm/migration/Cargo.toml")).unwrap();
        let deps = dependencies(&text);
        assert!(deps.contains(&"compat-runtime".to_string()), "{deps:?}");
        let kvm: Vec<_> = deps.iter().filter(|d| d.starts_with("kvm")).collect();
        assert!(kvm.is_empty(), "{kvm:?}");
    }

    #[test]
    fn no_hand_written_source_file_is_over_600_lines() {
        assert_eq!(long_files(&root(), 600), Vec::<String>::new());
    }

    #[test]
    fn the_checks_see_cycles_and_upward_imports() {
        let mut g = ModuleGraph::default();
        g.edges.insert("a".into(), ["b::c".to_string()].into());
        g.edges.insert("b::c".into(), ["a".to_string()].into());
        g.edges.insert("d".into(), BTreeSet::new());
        assert_eq!(g.cycles(), vec![vec!["a".to_string(), "b::c".to_string()]]);
        assert_eq!(g.upward(&["a", "b"]), vec!["a -> b::c".to_string()]);
        let p = paths_after("use super::{kick, Vcpu};\nx(crate::a::b::C)", "super::");
        assert_eq!(p, vec![vec!["kick".to_string()], vec!["Vcpu".to_string()]]);
        assert_eq!(
            paths_after("crate::a::b::C", "crate::"),
            vec![vec!["a".to_string(), "b".to_string(), "C".to_string()]]
        );
        let deps = dependencies(
            "[dependencies]\nfoo.workspace = true\nkvm-x = \"1\"\n[dev-dependencies]\nbar = \"1\"",
        );
        assert_eq!(deps, vec!["foo".to_string(), "kvm-x".to_string()]);
    }
}
