//! Named CPU model versions (`compat/cpu/models.toml`) and the host-bound
//! models (issue 10): each version is data, enforced against this host; an
//! unversioned name is version 1; `max` runs but cannot migrate.

use crate::common::{EXIT, Running, run};
use crate::require_kvm;

#[test]
fn named_model_versions_are_listed_and_enforced_on_this_host() {
    require_kvm!();
    let f = run(["cpu", "models", "--json"], EXIT);
    f.assert_success();
    let v: serde_json::Value = serde_json::from_str(&f.stdout()).expect("json");
    let names: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    for want in [
        "qemu64", "EPYC-v1", "EPYC-v2", "EPYC-v3", "EPYC-v4", "host", "max",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    // This host's KVM has no SSE3 (pni): the EPYC models do not run here,
    // `--cpu EPYC` (= EPYC-v1) is refused at once naming what is missing.
    let f = run(["run", "-m", "64M", "--cpu", "EPYC"], EXIT);
    assert_eq!(f.status.code(), Some(2), "{}", f.transcript());
    for want in [
        "host doesn't support requested feature: CPUID[eax=01h,ecx=00h].ECX.pni [bit 0]",
        "CPUID[eax=07h,ecx=00h].EBX.avx2 [bit 5]",
    ] {
        assert!(f.stderr.contains(want), "want `{want}`\n{}", f.stderr);
    }
    // A version the catalogue does not have.
    let f = run(["run", "-m", "64M", "--cpu", "EPYC-v9"], EXIT);
    assert_eq!(f.status.code(), Some(2), "{}", f.transcript());
    assert!(
        f.stderr.contains("unknown CPU model `EPYC-v9`"),
        "{}",
        f.stderr
    );
}

#[test]
fn max_runs_with_every_host_feature_but_is_never_migrated() {
    require_kvm!();
    let mut src = Running::ab_source(
        &["-m", "64M", "--cpu", "max", "--append", "workload=ab"],
        "--cpu max",
    );
    let (dst, uri) = Running::destination(&[], "destination");
    let m = src.migrate(&uri);
    assert!(!m.status.success(), "{}", m.transcript());
    assert!(
        m.stderr
            .contains("migration blocked: the guest's CPU (max) has invtsc"),
        "{}",
        m.transcript()
    );
    src.assert_counting("the source after the refusal");
    drop(dst);
    src.quit("--cpu max");
}
