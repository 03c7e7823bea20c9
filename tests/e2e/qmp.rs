//! QMP, the one control protocol, against the real binary: driven by the
//! reference's own client library (`qemu.qmp`, installed by .ci/run;
//! tests/qmp/*.py) and its `qmp-shell`, and by hostile input.

use crate::common::{BOOT, EXIT, MIGRATE, Running, TempPath, Vmm, wait_until};
use crate::require_kvm;
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

fn python_with_qemu_qmp() -> bool {
    let ok = Command::new("python3")
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
    let out = Command::new("timeout")
        .arg(MIGRATE.as_secs().to_string())
        .arg("python3")
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
    let vm = Vmm::spawn([
        "run", "-M", "pc-5.1", "--smp", "2", "-m", "64M", "--qmp", &qmp,
    ]);
    assert!(wait_until(BOOT, || sock.path().exists()), "no QMP socket");
    python("client.py", &[&sock.arg()], "qmp: ok");
    // `quit` over QMP ends the process by itself, and removes the socket.
    let f = vm.finish(EXIT);
    assert!(f.status.success(), "{}", f.transcript());
    assert!(!sock.path().exists(), "the socket was left behind");
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
fn a_live_migration_driven_only_through_qmp_with_incoming_defer() {
    require_kvm!();
    if !python_with_qemu_qmp() {
        return;
    }
    let sock = TempPath::new("qmp-mig", "sock");
    let qmp = format!("unix:{}", sock.arg());
    let src = Running::ab_source(
        &["-m", "128M", "--append", "workload=ab", "--qmp", &qmp],
        "QMP source",
    );
    let mut dst = Running::deferred(&[], "deferred destination");
    let out = python(
        "migrate.py",
        &[&sock.arg(), &dst.sock.arg()],
        "setup -> active",
    );
    assert!(out.contains("-> device -> completed"), "{out}");
    let range = src.ab.expect("ab range");
    src.handed_over(&mut dst, "over QMP");
    dst.verify_ab(range, "over QMP");
    dst.quit("destination");
}

#[test]
fn qmp_shell_runs_a_scripted_session() {
    require_kvm!();
    if !python_with_qemu_qmp() {
        return;
    }
    let vm = Running::start(&["-M", "pc-7.1", "-m", "64M"], "vmm");
    let script = "query-status\n\
                  qom-get path=/machine/peripheral/pcie-root-port0 property=x-pcie-err-unc-mask\n\
                  stop\n\
                  query-status\n\
                  no-such-command\n\
                  quit\n";
    // `qmp-shell` as the package installs it, run through python3 so that
    // no PATH entry for pip's scripts is needed.
    let mut child = Command::new("timeout")
        .args(["30", "python3", "-m", "qemu.qmp.qmp_shell", &vm.sock.arg()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qmp-shell");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script");
    let out = child.wait_with_output().expect("qmp-shell output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#""status": "running""#), "{text}");
    // pc-7.1 gets hw_compat_7_2's value.
    assert!(text.contains(r#"{"return": false}"#), "{text}");
    assert!(text.contains(r#""status": "paused""#), "{text}");
    assert!(text.contains("CommandNotFound"), "{text}");
    let f = vm.vmm.finish(EXIT);
    assert!(
        f.status.success(),
        "quit through qmp-shell\n{}",
        f.transcript()
    );
}

/// The first message of a fresh raw connection after `bytes` (sent after
/// negotiating when `negotiate`), or the text the server sent before it
/// closed.
fn raw(sock: &std::path::Path, negotiate: bool, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(EXIT)).expect("timeout");
    let mut split = qmp::wire::Splitter::new(1 << 20);
    let greeting = split.next(&mut s).expect("greeting").expect("greeting");
    assert!(greeting.starts_with(br#"{"QMP""#));
    if negotiate {
        s.write_all(br#"{"execute":"qmp_capabilities"}"#)
            .expect("send");
        split.next(&mut s).expect("answer").expect("answer");
    }
    let _ = s.write_all(bytes);
    match split.next(&mut s) {
        Ok(Some(m)) => String::from_utf8_lossy(&m).into_owned(),
        other => format!("{other:?}"),
    }
}

#[test]
fn hostile_qmp_input_gets_the_references_errors_and_the_guest_counts_on() {
    require_kvm!();
    let mut vm = Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "vmm");
    let p = vm.sock.path().to_path_buf();
    for (input, negotiate, want) in [
        (&b"{\"execute\": nope}"[..], true, "JSON parse error"),
        (b"[1, 2]", true, "expecting an object"),
        (b"{\"arguments\": {}}", true, "lacks member 'execute'"),
        (b"{\"execute\": \"no-such\"}", true, "CommandNotFound"),
        (
            b"{\"execute\": \"migrate\", \"arguments\": {\"uri\": 7}}",
            true,
            "expected: string",
        ),
        (
            b"{\"execute\": \"query-status\"}",
            false,
            "Expecting capabilities negotiation",
        ),
    ] {
        let got = raw(&p, negotiate, input);
        assert!(
            got.contains(want),
            "{}: {got}",
            String::from_utf8_lossy(input)
        );
    }
    // A 100 MB command: refused after 64 KiB, connection closed.
    let mut s = UnixStream::connect(&p).expect("connect");
    s.set_read_timeout(Some(EXIT)).expect("timeout");
    let chunk = vec![b'x'; 1 << 20];
    let _ = s.write_all(b"{\"execute\": \"");
    let sent = (0..100).take_while(|_| s.write_all(&chunk).is_ok()).count();
    assert!(sent < 100, "the vmm read a 100 MB command");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.contains("longer than 65536 bytes"), "{text}");
    // 1,000 connections at once: 16 served, the rest told and closed.
    let flood: Vec<UnixStream> = (0..1000)
        .filter_map(|_| UnixStream::connect(&p).ok())
        .collect();
    // Every one is read while all are held, so none frees a slot early.
    let firsts: Vec<String> = flood
        .iter()
        .map(|s| {
            let _ = s.set_read_timeout(Some(EXIT));
            let mut first = [0u8; 256];
            let n = (&*s).read(&mut first).unwrap_or(0);
            String::from_utf8_lossy(&first[..n]).into_owned()
        })
        .collect();
    let refused = firsts
        .iter()
        .filter(|t| t.contains("control connections are open"))
        .count();
    let greeted = firsts.iter().filter(|t| t.starts_with(r#"{"QMP""#)).count();
    assert_eq!(refused + greeted, 1000, "every connection is answered");
    drop(flood);
    assert!(refused >= 1000 - 16, "{refused} of 1000 refused");
    // Once they are gone, the VM is controllable and its guest counted on.
    let served = wait_until(EXIT, || vm.qmp_ok());
    assert!(served, "no QMP session after the flood");
    vm.assert_counting("after hostile input");
    let mut q = vm.qmp();
    assert_eq!(
        q.execute("query-status", json!({})).expect("status")["status"],
        "running"
    );
    drop(q);
    vm.quit("vmm");
}

#[test]
fn the_qemu_qmp_library_drives_a_storage_migration() {
    require_kvm!();
    if !python_with_qemu_qmp() {
        return;
    }
    let ctx = "storage over qemu.qmp";
    let a = TempPath::sized("qmp-st-src", 64 << 20);
    let b = TempPath::sized("qmp-st-dst", 64 << 20);
    let src = crate::storage::disk_writer(&a, ctx);
    let mut dst = Running::deferred(&["--drive", &b.drive()], ctx);
    let (nbd, mig) = (
        TempPath::new("qmp-st-nbd", "sock"),
        TempPath::new("qmp-st-mig", "sock"),
    );
    let out = python(
        "storage.py",
        &[&src.sock.arg(), &dst.sock.arg(), &nbd.arg(), &mig.arg()],
        "storage: ok",
    );
    assert!(out.contains("BLOCK_JOB_READY 67108864"), "{out}");
    assert!(out.contains("-> completed"), "{out}");
    let before = crate::storage::last_seq_after_exit(src);
    let after = crate::storage::writes_on(&mut dst, before, ctx);
    dst.ctl_ok(&["stop"], ctx);
    dst.quit(ctx);
    assert!(
        after < (64 << 20) / vmm_guest::SECTOR as u64,
        "no wrap-around"
    );
    crate::storage::assert_pattern(&b, after, "destination image");
}
