//! Migrations between hosts that do not trust the network: TLS 1.3 with
//! x509 (`vmm tls gen`) and pre-shared keys, a destination that survives
//! strangers (`openssl s_client` among them), a source that checks the
//! destination's name, sealed snapshots.

use crate::common::{BOOT, EXIT, MIGRATE, Running, TempPath, flat, migrate, run};
use crate::require_kvm;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// `vmm tls gen DIR [EXTRA]` into a fresh directory.
pub(crate) fn creds(extra: &[&str]) -> TempPath {
    let d = TempPath::new("tls", "d");
    let dir = d.arg();
    let mut args = vec!["tls", "gen", &dir];
    args.extend_from_slice(extra);
    let f = run(&args, EXIT);
    assert!(f.status.success(), "vmm tls gen\n{}", f.transcript());
    d
}

fn psk() -> (TempPath, String) {
    let d = creds(&["--psk"]);
    let arg = format!("psk:{}/keys.psk", d.arg());
    (d, arg)
}

fn addr(uri: &str) -> String {
    uri.trim_start_matches("tcp:").to_string()
}

/// Migrates `src` to `dst` at `uri` with `extra` options, then checks the
/// guest lives on consistent.
fn migrate_and_verify(src: Running, mut dst: Running, uri: &str, extra: &[&str], ctx: &str) {
    let m = migrate(src.sock.path(), uri, extra);
    assert!(m.status.success(), "{ctx}: vmm migrate\n{}", m.transcript());
    let range = src.ab.expect("ab range");
    src.handed_over(&mut dst, ctx);
    dst.verify_ab(range, ctx);
    dst.quit(ctx);
}

#[test]
fn x509_and_psk_migrations_of_an_ab_guest_are_consistent() {
    require_kvm!();
    let x = creds(&[]);
    let src = Running::ab_source(&["-m", "128M", "--append", "workload=ab"], "x509 source");
    let (dst, uri) = Running::destination(
        &["--tls-creds", &x.arg(), "--tls-authz", "CN=source,O=vmm"],
        "x509 destination",
    );
    migrate_and_verify(
        src,
        dst,
        &uri,
        &["--tls-creds", &x.arg(), "--channels", "2"],
        "x509",
    );

    let (_k, key) = psk();
    let src = Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "psk source");
    let (dst, uri) = Running::destination(&["--tls-creds", &key], "psk destination");
    migrate_and_verify(src, dst, &uri, &["--tls-creds", &key], "psk");
}

/// `openssl s_client` against `addr` with `args`, input closed: it must end
/// by itself (the destination drops it).
fn s_client(addr: &str, args: &[&str]) {
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect", addr, "-tls1_3"])
        .args(args)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if std::env::var_os("CI").is_some() => panic!("openssl: {e} (.ci/run installs it)"),
        Err(e) => {
            eprintln!("SKIP (openssl part): {e}");
            return;
        }
    };
    assert_ne!(out.status.code(), Some(124), "s_client was not dropped");
}

#[test]
fn a_waiting_destination_survives_strangers_then_migrates() {
    require_kvm!();
    let x = creds(&[]);
    let other = creds(&[]);
    let (mut dst, uri) = Running::destination(&["--tls-creds", &x.arg()], "destination");
    let a = addr(&uri);
    // Plaintext garbage, a plaintext stream header, a client that says nothing.
    let mut garbage = TcpStream::connect(&a).expect("connect");
    garbage.write_all(&[0x42; 4096]).expect("garbage");
    let mut plain = TcpStream::connect(&a).expect("connect");
    let _ = plain.write_all(b"VMMSTRM\0");
    let _silent = TcpStream::connect(&a).expect("connect");
    // 200 connections at once.
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&a).ok())
        .collect();
    assert_eq!(flood.len(), 200);
    // TLS clients: no certificate, a certificate of another CA.
    s_client(&a, &["-CAfile", &format!("{}/ca-cert.pem", x.arg())]);
    s_client(
        &a,
        &[
            "-cert",
            &format!("{}/client-cert.pem", other.arg()),
            "-key",
            &format!("{}/client-key.pem", other.arg()),
        ],
    );
    // A vmm source with the other CA's credentials: refused, runs on.
    let mut src = Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "source");
    let m = migrate(src.sock.path(), &uri, &["--tls-creds", &other.arg()]);
    assert!(
        !m.status.success(),
        "a source of another CA got in\n{}",
        m.transcript()
    );
    src.assert_counting("after the refused source");
    drop(flood);
    assert!(
        dst.vmm.is_running(),
        "the destination gave up\n{}",
        dst.vmm.transcript()
    );
    assert!(
        dst.vmm
            .wait_stderr(BOOT, "dropped a connection from 127.0.0.1:"),
        "strangers are logged with their address\n{}",
        dst.vmm.transcript()
    );
    migrate_and_verify(
        src,
        dst,
        &uri,
        &["--tls-creds", &x.arg()],
        "after strangers",
    );
}

#[test]
fn a_wrong_psk_is_refused_and_the_right_one_migrates() {
    require_kvm!();
    let (_k, key) = psk();
    let (_w, wrong) = psk();
    let (dst, uri) = Running::destination(&["--tls-creds", &key], "psk destination");
    let mut src = Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "source");
    let m = migrate(src.sock.path(), &uri, &["--tls-creds", &wrong]);
    assert!(!m.status.success(), "{}", m.transcript());
    assert!(
        flat(&m.stderr).contains("pre-shared key"),
        "{}",
        m.transcript()
    );
    src.assert_counting("after the wrong key");
    migrate_and_verify(src, dst, &uri, &["--tls-creds", &key], "right key");
}

#[test]
fn the_source_refuses_a_destination_not_named_tls_hostname_and_runs_on() {
    require_kvm!();
    let x = creds(&[]);
    let (dst, uri) = Running::destination(&["--tls-creds", &x.arg()], "destination");
    let mut src = Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "source");
    let m = migrate(
        src.sock.path(),
        &uri,
        &[
            "--tls-creds",
            &x.arg(),
            "--tls-hostname",
            "elsewhere.example",
        ],
    );
    assert!(!m.status.success(), "{}", m.transcript());
    let e = flat(&m.stderr);
    assert!(
        e.contains("TLS handshake") && e.contains("certificate"),
        "{e}"
    );
    src.assert_counting("after the refusal");
    // The name the certificate has is accepted.
    migrate_and_verify(
        src,
        dst,
        &uri,
        &["--tls-creds", &x.arg(), "--tls-hostname", "localhost"],
        "tls-hostname",
    );
}

#[test]
fn a_sealed_snapshot_restores_and_one_flipped_byte_is_refused() {
    require_kvm!();
    let (_k, key) = psk();
    let snap = TempPath::new("sealed", "snap");
    let src = Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "source");
    let m = migrate(src.sock.path(), &snap.uri("file"), &["--tls-creds", &key]);
    assert!(m.status.success(), "{}", m.transcript());
    let range = src.ab.expect("ab range");
    src.quit("source");
    let bytes = std::fs::read(snap.path()).expect("snapshot");
    assert!(bytes.starts_with(b"VMMSEAL1"), "not sealed");
    // No key: refused, naming why.
    let f = run(["run", "--incoming", &snap.uri("file")], EXIT);
    assert_eq!(f.status.code(), Some(1), "{}", f.transcript());
    assert!(flat(&f.stderr).contains("sealed"), "{}", f.transcript());
    // One flipped byte: refused before any state is loaded.
    let mut bad = bytes.clone();
    let at = bad.len() / 3;
    bad[at] ^= 0x01;
    std::fs::write(snap.path(), &bad).expect("tamper");
    let f = run(
        ["run", "--incoming", &snap.uri("file"), "--tls-creds", &key],
        EXIT,
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.transcript());
    assert!(
        flat(&f.stderr).contains("altered or cut short"),
        "{}",
        f.transcript()
    );
    assert!(
        !f.stderr.contains("incoming: running"),
        "{}",
        f.transcript()
    );
    // The intact snapshot restores with the key.
    std::fs::write(snap.path(), &bytes).expect("restore the file");
    let (mut dst, _) = Running::incoming(&snap.uri("file"), &["--tls-creds", &key], "restore");
    dst.wait_running("restore");
    dst.ab = Some(range);
    dst.vmm.wait_pass_above(0, MIGRATE, "restored guest");
    dst.verify_ab(range, "restored");
    dst.quit("restored");
}

#[test]
fn qmp_tls_parameters_on_both_sides_with_incoming_defer() {
    use serde_json::json;
    require_kvm!();
    let x = creds(&[]);
    let src = Running::ab_source(&["-m", "64M", "--append", "workload=ab"], "source");
    let mut dst = Running::deferred(&[], "deferred destination");
    let mut d = dst.qmp();
    let bad = d.execute(
        "migrate-set-parameters",
        json!({ "tls-creds": "/nonexistent" }),
    );
    assert!(bad.is_err_and(|e| e.to_string().contains("tls-creds")));
    d.execute(
        "migrate-set-parameters",
        json!({ "tls-creds": x.arg(), "tls-authz": "CN=source,O=vmm" }),
    )
    .expect("tls on the destination");
    d.execute("migrate-incoming", json!({ "uri": "tcp:127.0.0.1:0" }))
        .expect("migrate-incoming");
    let info = d
        .execute("query-migrate", json!({}))
        .expect("query-migrate");
    let port = info["socket-address"][0]["port"]
        .as_str()
        .expect("port")
        .to_string();
    let mut s = src.qmp();
    s.execute(
        "migrate-set-parameters",
        json!({ "tls-creds": x.arg(), "tls-hostname": "localhost" }),
    )
    .expect("tls on the source");
    let p = s
        .execute("query-migrate-parameters", json!({}))
        .expect("parameters");
    assert_eq!(p["tls-creds"], x.arg());
    s.execute("migrate", json!({ "uri": format!("tcp:127.0.0.1:{port}") }))
        .expect("migrate");
    let done = s
        .wait_event(MIGRATE, |e| {
            e["event"] == "MIGRATION"
                && matches!(e["data"]["status"].as_str(), Some("completed" | "failed"))
        })
        .expect("MIGRATION");
    assert_eq!(
        done["data"]["status"],
        "completed",
        "{:?}",
        s.execute("query-migrate", json!({}))
    );
    drop((s, d));
    let range = src.ab.expect("ab range");
    src.handed_over(&mut dst, "QMP TLS");
    dst.verify_ab(range, "QMP TLS");
    dst.quit("QMP TLS");
}
