//! `vmm ctl` and `vmm migrate` from the command line (error paths; the
//! protocol itself is unit-tested in `vmm/src/control`).

use crate::common::vmm_bin;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(vmm_bin())
        .args(args)
        .output()
        .expect("run vmm");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn ctl_without_a_running_vmm_fails_clearly() {
    let path = std::env::temp_dir().join(format!("vmm-e2e-none-{}.sock", std::process::id()));
    let p = path.to_str().unwrap();
    for cmd in ["status", "stop", "cont", "quit", "migrate-cancel"] {
        let (code, err) = run(&["ctl", "--control", p, cmd]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains(p), "{cmd}: {err}");
    }
    let (code, err) = run(&["migrate", "--control", p, "tcp:127.0.0.1:1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(p), "{err}");
}

#[test]
fn migrate_arguments_are_checked() {
    let (code, err) = run(&[
        "migrate",
        "--control",
        "x",
        "--max-bandwidth",
        "0",
        "tcp:h:1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("positive byte count"), "{err}");
    let out = Command::new(vmm_bin())
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--downtime-limit") && help.contains("300"),
        "{help}"
    );
    assert!(
        help.contains("--max-bandwidth") && help.contains("--json"),
        "{help}"
    );
}
