//! `vmm run --qmp unix:PATH` driven by the reference's own QMP client
//! library (`qemu.qmp`, installed by .ci/run): tests/qmp/client.py.

use crate::common::{BOOT, EXIT, TempPath, Vmm, wait_until};
use crate::require_kvm;

fn python_with_qemu_qmp() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import qemu.qmp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("CI is set but python3 cannot import qemu.qmp (.ci/run installs it)");
    }
    if !ok {
        eprintln!("SKIP: python3 with qemu.qmp is not available");
    }
    ok
}

/// `python3 tests/qmp/SCRIPT ARGS...`, which must succeed and print
/// `want`; its stdout.
fn python(script: &str, args: &[&str], want: &str) -> String {
    let path = format!("{}/../tests/qmp/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && so.contains(want),
        "{script}: {so}\n{se}"
    );
    so
}

#[test]
fn the_qemu_qmp_library_drives_vmm_over_qmp() {
    require_kvm!();
    if !python_with_qemu_qmp() {
        return;
    }
    let sock = TempPath::new("qmp", "sock");
    let qmp = format!("unix:{},server=on,wait=off", sock.arg());
    let vm = Vmm::spawn(["run", "-m", "64M", "--qmp", &qmp]);
    assert!(wait_until(BOOT, || sock.path().exists()), "no QMP socket");
    python("client.py", &[&sock.arg()], "qmp: ok");
    // `quit` over QMP ends the process by itself.
    let f = vm.finish(EXIT);
    assert!(f.status.success(), "{}", f.transcript());
}

#[test]
fn a_bad_qmp_option_is_refused() {
    let f = crate::common::run(["run", "--qmp", "tcp:127.0.0.1:4444"], EXIT);
    assert_eq!(f.status.code(), Some(2), "{}", f.transcript());
    assert!(
        f.stderr.contains("expected unix:PATH"),
        "{}",
        f.transcript()
    );
}

#[test]
fn a_migration_over_qmp_with_multifd_and_zstd_lands_consistent() {
    require_kvm!();
    if !python_with_qemu_qmp() {
        return;
    }
    let sock = TempPath::new("qmp-mig", "sock");
    let qmp = format!("unix:{}", sock.arg());
    let src = crate::common::Running::ab_source(
        &["-m", "128M", "--append", "workload=ab", "--qmp", &qmp],
        "QMP source",
    );
    let (mut dst, uri) = crate::common::Running::destination(&[], "destination");
    python("migrate.py", &[&sock.arg(), &uri], "active -> completed");
    let range = src.ab.expect("ab range");
    src.handed_over(&mut dst, "over QMP");
    dst.verify_ab(range, "over QMP");
    dst.quit("destination");
}
