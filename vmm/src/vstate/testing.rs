//! Test support for the runtime's unit tests on real KVM.

/// True if `/dev/kvm` is usable. Without it: under `CI` the test fails (a
/// test that cannot run what it tests must not pass); locally it says SKIP
/// and the caller returns.
pub fn kvm_or_skip() -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but /dev/kvm is not usable: this test needs KVM"
        );
        eprintln!("SKIP: /dev/kvm is not usable on this machine");
    }
    usable
}
