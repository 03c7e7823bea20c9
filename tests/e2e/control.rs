//! `vmm ctl` and `vmm migrate` from the command line (error paths; the
//! protocol itself is unit-tested in `vmm/src/control`).

use crate::common::{EXIT, TempPath, ctl, run};

#[test]
fn ctl_without_a_running_vmm_fails_clearly() {
    let sock = TempPath::new("none", "sock");
    let p = sock.arg();
    for cmd in ["status", "stop", "cont", "quit", "migrate-cancel"] {
        let f = ctl(sock.path(), &[cmd]);
        assert_eq!(f.status.code(), Some(1), "{cmd}: {}", f.transcript());
        assert!(f.stderr.contains(&p), "{cmd}: {}", f.transcript());
    }
    let f = run(["migrate", "--control", &p, "tcp:127.0.0.1:1"], EXIT);
    assert_eq!(f.status.code(), Some(1), "{}", f.transcript());
    assert!(f.stderr.contains(&p), "{}", f.transcript());
}

#[test]
fn migrate_arguments_are_checked() {
    let f = run(
        [
            "migrate",
            "--control",
            "x",
            "--max-bandwidth",
            "0",
            "tcp:h:1",
        ],
        EXIT,
    );
    assert_eq!(f.status.code(), Some(2), "{}", f.transcript());
    assert!(
        f.stderr.contains("positive byte count"),
        "{}",
        f.transcript()
    );
    let help = run(["migrate", "--help"], EXIT).stdout();
    assert!(
        help.contains("--downtime-limit") && help.contains("300"),
        "{help}"
    );
    assert!(
        help.contains("--max-bandwidth") && help.contains("--json"),
        "{help}"
    );
}
