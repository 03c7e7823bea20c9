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

#[test]
fn a_second_vmm_on_a_live_socket_is_refused_and_leaves_it_alone() {
    crate::require_kvm!();
    let first = crate::common::Running::start(&["-m", "64M"], "first vmm");
    let sock = first.sock.arg();
    let f = run(["run", "-m", "64M", "--control", &sock], EXIT);
    assert!(!f.status.success(), "{}", f.transcript());
    assert!(
        f.stderr.contains("in use by a running vmm"),
        "{}",
        f.transcript()
    );
    // The first VM can still be controlled through its socket.
    first.ctl_ok(&["status"], "the first vmm after the refusal");
    first.quit("first vmm");
}

#[test]
fn control_never_removes_a_file_that_is_not_a_socket() {
    let file = TempPath::new("precious", "txt");
    std::fs::write(file.path(), b"keep me").expect("write");
    let f = run(["run", "-m", "64M", "--control", &file.arg()], EXIT);
    assert!(!f.status.success(), "{}", f.transcript());
    assert!(
        f.stderr.contains("not a socket (it is left alone)"),
        "{}",
        f.transcript()
    );
    assert_eq!(std::fs::read(file.path()).expect("read"), b"keep me");
}

#[test]
fn an_incoming_unix_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    crate::require_kvm!();
    let listen = TempPath::new("incoming", "sock");
    let (dst, _uri) = crate::common::Running::incoming(&listen.uri("unix"), &[], "destination");
    let mode = std::fs::metadata(listen.path())
        .expect("the incoming socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the umask must not widen it");
    let sock = dst.sock.path().to_path_buf();
    dst.quit("a destination waiting on a unix socket");
    assert!(!sock.exists(), "the control socket was left behind");
}

#[test]
fn a_waiting_destination_ends_on_quit_deferred_or_listening() {
    crate::require_kvm!();
    let (dst, _uri) = crate::common::Running::destination(&[], "listening destination");
    let sock = dst.sock.path().to_path_buf();
    dst.quit("a destination listening on tcp");
    assert!(!sock.exists(), "its control socket was left behind");
    let dst = crate::common::Running::deferred(&[], "deferred destination");
    let mut q = dst.qmp();
    assert_eq!(
        q.execute("query-status", serde_json::json!({}))
            .expect("status")["status"],
        "inmigrate"
    );
    // migrate-incoming with a bad URI is refused and it keeps waiting.
    let e = q
        .execute(
            "migrate-incoming",
            serde_json::json!({ "uri": "ftp:nowhere" }),
        )
        .expect_err("a bad URI");
    assert!(e.to_string().contains("ftp:nowhere"), "{e}");
    drop(q);
    dst.quit("a deferred destination");
}

#[test]
fn a_snapshot_never_overwrites_a_file_unless_asked() {
    crate::require_kvm!();
    let mut vm =
        crate::common::Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "vmm");
    let file = TempPath::new("precious", "img");
    std::fs::write(file.path(), b"keep me").expect("write");
    let m = vm.migrate(&file.uri("file"));
    assert_eq!(m.status.code(), Some(1), "{}", m.transcript());
    assert!(
        m.stderr
            .contains("exists: a snapshot never replaces a file unless asked"),
        "{}",
        m.transcript()
    );
    assert_eq!(std::fs::read(file.path()).expect("read"), b"keep me");
    vm.assert_counting("after the refused snapshot");
    let m = crate::common::migrate(vm.sock.path(), &file.uri("file"), &["--overwrite"]);
    assert!(m.status.success(), "{}", m.transcript());
    assert!(std::fs::metadata(file.path()).expect("snapshot").len() > 1 << 20);
    vm.quit("vmm");
}

#[test]
fn another_user_is_refused_even_where_the_socket_lets_it_connect() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    crate::require_kvm!();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to run a client as another user");
        return;
    }
    let vm = crate::common::Running::start(&["-m", "64M"], "vmm");
    // Loosen the socket as a careless operator might (/tmp lets anyone in).
    std::fs::set_permissions(vm.sock.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let out = std::process::Command::new(crate::common::vmm_bin())
        .args(["ctl", "--control", &vm.sock.arg(), "status"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("vmm ctl as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refused: peer uid 65534 may not control this vmm"),
        "{err}"
    );
    vm.ctl_ok(&["status"], "the owner still controls it");
    vm.quit("vmm");
}
