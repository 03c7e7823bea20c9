//! `cargo xtask bench-codegen`: compile the real `compat/` tree, then
//! synthetic compat trees of 1x, 4x and
//! 16x the size of (100 machine versions, 200 device types x 20 properties,
//! 2,000 delta entries) and report the time of each phase and size.

use codegen::SourceFile;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// A tiny deterministic PRNG (xorshift), so every run builds the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Properties each type has, inherited ones included: a group root declares
/// them all, and each of its children inherits half and declares half.
const PROPS_PER_TYPE: usize = 20;
/// Types come in groups: one root and nine children.
const GROUP: usize = 10;

/// Own properties of type `i`.
fn own_props(i: usize) -> usize {
    if i.is_multiple_of(GROUP) {
        PROPS_PER_TYPE
    } else {
        PROPS_PER_TYPE / 2
    }
}

/// The `k`-th property (own or inherited) of type `i`: `(declaring type, index)`.
fn nth_prop(i: usize, k: usize) -> (usize, usize) {
    let root = i - i % GROUP;
    if i == root || k < PROPS_PER_TYPE / 2 {
        (i, k % own_props(i))
    } else {
        (root, k - PROPS_PER_TYPE / 2)
    }
}

fn version(i: usize) -> String {
    format!("{}.{}", i / 10 + 1, i % 10)
}

/// The value of a synthetic property `j` that differs from its default.
fn prop_def(i: usize, j: usize) -> (String, String) {
    let name = format!("t{i}-p{j}");
    let def = match j % 3 {
        0 => format!(
            "{{ name = \"{name}\", type = \"bool\", default = \"on\", doc = \"synthetic\", effect = \"guest\" }}"
        ),
        1 => format!(
            "{{ name = \"{name}\", type = \"u32\", min = 1, max = 4096, default = \"64\", doc = \"synthetic\", effect = \"guest\" }}"
        ),
        _ => format!(
            "{{ name = \"{name}\", type = \"enum\", variants = [\"a\", \"b\", \"c\"], default = \"a\", doc = \"synthetic\", effect = \"guest\" }}"
        ),
    };
    (name, def)
}

fn old_value(j: usize, r: &mut Rng) -> String {
    match j % 3 {
        0 => "off".into(),
        1 => (1 + r.below(4000)).to_string(),
        _ => ["b", "c"][r.below(2)].into(),
    }
}

/// Builds a synthetic tree `k` times the base size.
pub fn synthetic(k: usize) -> Vec<SourceFile> {
    let (machines, types, entries) = (100 * k, 200 * k, 2000 * k);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut m = String::from(
        "[[family]]\nname = \"pc\"\nalias = \"pc\"\nseries = [\"hw_compat\", \"pc_compat\"]\nmax_cpus = 64\ndevices = [\"t0\"]\n",
    );
    for i in 0..machines {
        let _ = write!(
            m,
            "\n[[machine]]\nfamily = \"pc\"\nversion = \"{}\"\n\n[[release]]\nversion = \"{}\"\n",
            version(i),
            version(i)
        );
    }
    let mut d = String::new();
    for i in 0..types {
        let _ = write!(d, "\n[[device]]\nname = \"t{i}\"\n");
        if !i.is_multiple_of(GROUP) {
            let _ = writeln!(d, "parent = \"t{}\"", i - i % GROUP);
        }
        d.push_str("props = [\n");
        for j in 0..own_props(i) {
            let _ = writeln!(d, "  {},", prop_def(i, j).1);
        }
        d.push_str("]\n");
        if i.is_multiple_of(4) {
            let _ = write!(
                d,
                "\n[device.vmstate]\nname = \"t{i}\"\nversion_id = 2\nminimum_version_id = 1\nfields = [{{ name = \"n\", wire = \"u16\" }}, {{ name = \"q\", wire = \"u64\", count = \"field:n\", max = 64, since = 2 }}]\n"
            );
        }
    }
    // Spread the entries over every version but the newest, two series each.
    let slots = (machines - 1) * 2;
    let mut x = String::new();
    let mut done = 0;
    for s in 0..slots {
        let want = (entries * (s + 1)) / slots - done;
        if want == 0 {
            continue;
        }
        let series = if s % 2 == 0 { "hw_compat" } else { "pc_compat" };
        let _ = write!(
            x,
            "\n[[delta]]\nseries = \"{series}\"\nversion = \"{}\"\nentries = [\n",
            version(s / 2)
        );
        // Distinct (type, prop) pairs: distinct types, any of their own props.
        let first = r.below(types);
        for e in 0..want {
            let t = (first + e * 7919) % types;
            let (owner, j) = nth_prop(t, r.below(PROPS_PER_TYPE));
            let _ = writeln!(
                x,
                "  {{ type = \"t{t}\", property = \"{}\", value = \"{}\" }},",
                prop_def(owner, j).0,
                old_value(j, &mut r)
            );
        }
        x.push_str("]\n");
        done += want;
    }
    vec![
        SourceFile {
            name: "deltas.toml".into(),
            text: x,
        },
        SourceFile {
            name: "devices.toml".into(),
            text: d,
        },
        SourceFile {
            name: "machines.toml".into(),
            text: m,
        },
    ]
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere). Unlike wall time it does not grow when other
/// processes share the cores.
fn cpu_time() -> Option<Duration> {
    let (_, ticks) = crate::procfs::parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / crate::procfs::ticks_per_s(),
    ))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One row: compiles `sources` (check, then emit) and prints its figures
/// under `label`; the total time in ms.
fn row(
    label: &str,
    counts: [usize; 3],
    sources: &[SourceFile],
    base: &mut Option<f64>,
) -> Result<f64, String> {
    let bytes: usize = sources.iter().map(|s| s.text.len()).sum();
    let c0 = cpu_time();
    let t0 = Instant::now();
    let (resolved, diags) = codegen::check(sources);
    let t1 = Instant::now();
    let resolved = resolved.ok_or_else(|| {
        format!(
            "{label} tree does not compile:\n{}",
            codegen::render_plain(&diags[..diags.len().min(3)], sources)
        )
    })?;
    let files = codegen::emit::emit(&resolved).map_err(|e| e.to_string())?;
    let t2 = Instant::now();
    let cpu = match (c0, cpu_time()) {
        (Some(a), Some(b)) => format!("{:.0}", ms(b.saturating_sub(a))),
        _ => "-".into(),
    };
    let out: usize = files.iter().map(|f| f.content.len()).sum();
    let total = ms(t2 - t0);
    let per = match base {
        Some(b) => format!("{:>6.2}x", total / b.max(f64::MIN_POSITIVE)),
        None => "     -".into(),
    };
    let [machines, types, entries] = counts;
    println!(
        "{label:>5}  {machines:>8}  {types:>5}  {entries:>7}  {:>8}  {:>8.0}  {:>7.0}  {:>8.0}  {cpu:>6}  {:>10}  {per}",
        bytes / 1024,
        ms(t1 - t0),
        ms(t2 - t1),
        total,
        out / 1024
    );
    if label == "1x" {
        let sizes: Vec<String> = files
            .iter()
            .map(|f| format!("{} {} KiB", f.name, f.content.len() / 1024))
            .collect();
        println!("      output: {}", sizes.join(", "));
    }
    if !diags.is_empty() {
        println!("      ({} warning(s))", diags.len());
    }
    Ok(total)
}

/// Runs the benchmark and prints a table: the real `compat/` tree first,
/// then the synthetic sizes.
pub fn run() -> Result<(), String> {
    println!(
        " size  machines  types  entries  toml KiB  check ms  emit ms  total ms  cpu ms  output KiB  per-1x"
    );
    let real = codegen::parse::read_dir(&crate::root().join("compat"))
        .map_err(|e| format!("compat/: {e}"))?;
    let (resolved, _) = codegen::check(&real);
    let model = resolved.as_ref().map(|r| &r.model);
    let counts = [
        model.map_or(0, |m| m.families.iter().map(|f| f.machines.len()).sum()),
        model.map_or(0, |m| m.types.len()),
        model.map_or(0, |m| m.deltas.iter().map(|d| d.entries.len()).sum()),
    ];
    row("real", counts, &real, &mut None)?;
    let mut base = None;
    let sizes: Vec<usize> = match std::env::var("BENCH_SIZES") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 4, 16],
    };
    for k in sizes {
        let total = row(
            &format!("{k}x"),
            [100 * k, 200 * k, 2000 * k],
            &synthetic(k),
            &mut base,
        )?;
        base.get_or_insert(total);
    }
    println!(
        "growth is linear when per-1x stays near 1x, 4x and 16x; cpu ms sums all threads; real: this repository's compat/"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn synthetic_tree_compiles() {
        let s = super::synthetic(1);
        let c = codegen::compile(s);
        assert!(
            c.is_ok(),
            "{}",
            c.err().map(|f| f.render()).unwrap_or_default()
        );
    }
}
