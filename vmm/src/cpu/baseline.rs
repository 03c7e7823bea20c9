//! `vmm cpu baseline HOST.json...`: the CPU several hosts can all present,
//! from their `vmm cpu host --json` outputs, and the `--cpu` each host must
//! be started with to present exactly it (the seed's "intersection of the
//! features" done by the VMM, not the management layer).
//!
//! Folding rules: feature bits are AND-ed (a "vulnerability absent" bit too:
//! a guest is told it is not vulnerable only where every host is not); the
//! vendor must be the same everywhere, or the hosts cannot share a CPU.

use super::host::HostCpu;
use compat_runtime::Catalog;
use std::collections::BTreeSet;

/// The shared CPU and what each host turns off to present it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Baseline {
    pub vendor: String,
    /// The catalogued, migratable features every host has.
    pub features: BTreeSet<String>,
    /// Per host (as named on the command line): its `--cpu` option.
    pub hosts: Vec<HostOption>,
    /// The named models every host runs (their features within the
    /// baseline, their vendor the hosts'), in catalogue order.
    pub models: Vec<String>,
}

/// One host's start option.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostOption {
    pub host: String,
    /// `--cpu host[,F=off,...]`.
    pub cpu: String,
}

/// Folds `hosts` (name, host) into their baseline.
pub fn baseline(catalog: &Catalog, hosts: &[(String, HostCpu)]) -> Result<Baseline, String> {
    let Some((_, first)) = hosts.first() else {
        return Err("vmm cpu baseline needs at least one host file".into());
    };
    if let Some((name, h)) = hosts.iter().find(|(_, h)| h.vendor != first.vendor) {
        return Err(format!(
            "{name} is {}, {} is {}: hosts of different vendors cannot present one CPU",
            h.vendor, hosts[0].0, first.vendor
        ));
    }
    let known = |f: &&String| {
        catalog
            .cpu_features
            .iter()
            .any(|c| c.name == f.as_str() && c.migratable)
    };
    let sets: Vec<BTreeSet<String>> = hosts
        .iter()
        .map(|(_, h)| h.features.iter().filter(known).cloned().collect())
        .collect();
    let mut common = sets[0].clone();
    for s in &sets[1..] {
        common = common.intersection(s).cloned().collect();
    }
    let options = hosts
        .iter()
        .zip(&sets)
        .map(|((name, _), s)| {
            // In catalogue order, as the reference lists them.
            let off: Vec<String> = catalog
                .cpu_features
                .iter()
                .filter(|f| s.contains(f.name) && !common.contains(f.name))
                .map(|f| format!(",{}=off", f.name))
                .collect();
            HostOption {
                host: name.clone(),
                cpu: format!("--cpu host{}", off.concat()),
            }
        })
        .collect();
    let vendor_ok = |d: &compat_runtime::DeviceType| {
        d.props.iter().find(|p| p.name == "vendor").is_none_or(
            |p| matches!(&p.default, compat_runtime::Value::Str(v) if *v == first.vendor),
        )
    };
    let models = catalog
        .device_types
        .iter()
        .filter(|d| d.cpu_model && vendor_ok(d))
        .filter(|d| {
            super::choice::model_features(catalog, d)
                .iter()
                .all(|f| common.contains(*f))
        })
        .filter_map(|d| d.model_name().map(str::to_string))
        .collect();
    Ok(Baseline {
        vendor: first.vendor.clone(),
        features: common,
        hosts: options,
        models,
    })
}

/// The baseline as text: one line per host.
pub fn text(b: &Baseline) -> String {
    let mut out = format!(
        "baseline of {} host(s), {}: {} feature(s)\n",
        b.hosts.len(),
        b.vendor,
        b.features.len()
    );
    for h in &b.hosts {
        out.push_str(&format!("{}: vmm run {}\n", h.host, h.cpu));
    }
    // The newest: the last model version (catalogue order: v1, v2, ...),
    // else a legacy unversioned model.
    let mut versioned = b.models.iter().filter(|m| {
        m.rsplit_once("-v")
            .is_some_and(|(_, v)| v.parse::<u32>().is_ok())
    });
    match versioned.next_back().or(b.models.last()) {
        Some(newest) => out.push_str(&format!(
            "named models all of them run: {} (newest: vmm run --cpu {newest} on every host)\n",
            b.models.join(", ")
        )),
        None => out.push_str("named models all of them run: none (use --cpu host as above)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::generated::CATALOG;

    fn seed_hosts() -> Vec<(String, HostCpu)> {
        let a = include_str!("../../../tests/data/cpu/seed-host-a.json");
        let b = include_str!("../../../tests/data/cpu/seed-host-b.json");
        vec![
            ("host-a".into(), serde_json::from_str(a).unwrap()),
            ("host-b".into(), serde_json::from_str(b).unwrap()),
        ]
    }

    #[test]
    fn the_seeds_two_hosts_get_the_seeds_two_command_lines() {
        let b = baseline(&CATALOG, &seed_hosts()).unwrap();
        assert_eq!(
            text(&b).lines().skip(1).take(2).collect::<Vec<_>>(),
            [
                "host-a: vmm run --cpu host,pcid=off,stibp=off",
                "host-b: vmm run --cpu host,taa-no=off",
            ]
        );
        assert!(b.features.contains("mds-no") && !b.features.contains("taa-no"));
        // Intel hosts: qemu64 (no vendor of its own) runs, the EPYC models
        // (AuthenticAMD) do not.
        assert_eq!(b.models, ["qemu64"]);
        let mut amd = seed_hosts();
        for (_, h) in &mut amd {
            h.vendor = "AuthenticAMD".into();
            h.features = CATALOG.cpu_features.iter().map(|f| f.name.into()).collect();
        }
        let b = baseline(&CATALOG, &amd).unwrap();
        assert!(
            b.models.iter().any(|m| m.starts_with("EPYC-v")),
            "{:?}",
            b.models
        );
        assert!(
            text(&b).contains("(newest: vmm run --cpu EPYC-v"),
            "{}",
            text(&b)
        );
    }

    #[test]
    fn different_vendors_cannot_share_a_cpu() {
        let mut hosts = seed_hosts();
        hosts[1].1.vendor = "AuthenticAMD".into();
        let e = baseline(&CATALOG, &hosts).unwrap_err();
        assert!(e.contains("different vendors"), "{e}");
        assert!(baseline(&CATALOG, &[]).is_err());
    }
}
