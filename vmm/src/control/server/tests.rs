//! The QMP server over fake handlers: socket creation and its refusals,
//! peer check, connection cap, negotiation, every error class, events to
//! every connection, migration commands, bad input. The real runtime is
//! covered end to end in `tests/e2e/qmp.rs`.

use super::*;
use crate::control::events::Events;
use crate::control::handler::{Answered, ControlHandler, MachineView};
use crate::control::types::{MigrateRequest, StatusInfo, VerifyAbResult};
use migration::precopy::{CancelToken, Phase, Progress, Summary};
use migration::vm::VmError;
use qmp::{Client, ClientError};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Fake {
    paused: AtomicBool,
    events: Arc<Events>,
}

fn progress(i: u32, phase: Phase) -> Progress {
    Progress {
        phase,
        iteration: i,
        bytes: u64::from(i) * 100,
        pages_zero: 1,
        pages_normal: 2,
        dirty_pages: 3,
        bandwidth: 4,
        expected_downtime_ms: 5.0,
        throttle: 0,
    }
}

fn status_of(state: &str, machine: &str) -> StatusInfo {
    StatusInfo {
        devices: Vec::new(),
        state: state.into(),
        machine_type: machine.into(),
        release: "next".into(),
        pinned: vec![],
        migration: None,
    }
}

impl ControlHandler for Fake {
    fn status(&self) -> Result<StatusInfo, VmError> {
        let paused = self.paused.load(Ordering::SeqCst);
        Ok(status_of(
            if paused { "paused" } else { "running" },
            "pc-7.2",
        ))
    }
    fn view(&self) -> Option<MachineView> {
        None
    }
    fn migration_progress(&self) -> Option<Progress> {
        None
    }
    fn stop(&self) -> Result<(), VmError> {
        self.paused.store(true, Ordering::SeqCst);
        self.events.emit("STOP", json!({}));
        Ok(())
    }
    fn cont(&self) -> Result<(), VmError> {
        if !self.paused.swap(false, Ordering::SeqCst) {
            return Err(VmError::new("the guest is already running"));
        }
        Ok(())
    }
    fn quit(&self) -> Result<(), VmError> {
        Ok(())
    }
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress_cb: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError> {
        for i in 1..=3 {
            progress_cb(&progress(i, Phase::Precopy));
        }
        if req.uri.contains("slow") {
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Err(VmError::new("cancelled"));
        }
        progress_cb(&progress(4, Phase::Stopped));
        if req.uri.contains("refuse") {
            return Err(VmError::new(
                "the destination refused: pc-8.2 is not pc-5.1",
            ));
        }
        Ok(Summary {
            outcome: migration::precopy::Outcome::Snapshot,
            total_ms: 12.5,
            downtime_ms: 1.5,
            bytes: 300,
            pages_zero: 1,
            pages_normal: 2,
            iterations: req.channels,
            max_throttle: 0,
        })
    }
    fn migrate_incoming(
        &self,
        _: &str,
        _: Option<crate::control::types::TlsSettings>,
    ) -> Result<String, VmError> {
        Err(VmError::new(
            "'-incoming' was not specified on the command line",
        ))
    }
    fn incoming_status(&self) -> Option<(&'static str, Option<String>)> {
        None
    }
    fn answered(&self, _: Answered) {}
    fn verify_ab(&self, _: u64, _: u64) -> Result<VerifyAbResult, VmError> {
        Err(VmError::new("verify-ab needs a stopped guest"))
    }
    fn system_reset(&self) -> Result<(), VmError> {
        Ok(())
    }
    fn system_powerdown(&self) -> Result<(), VmError> {
        Ok(())
    }
}

fn socket(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-ctl-{}-{name}", std::process::id()));
    let _ = fs::create_dir_all(&dir);
    dir.join("ctl.sock")
}

fn started(name: &str) -> (PathBuf, std::thread::JoinHandle<()>) {
    let p = socket(name);
    let events = Arc::new(Events::default());
    let fake = Arc::new(Fake {
        events: events.clone(),
        ..Fake::default()
    });
    let srv = ControlServer::bind(&p).unwrap();
    (p, srv.spawn(State::new(fake, events)))
}

fn connect(p: &Path) -> Client {
    Client::connect(p, T).unwrap()
}

fn error_of(r: Result<Value, ClientError>) -> (String, String) {
    match r {
        Err(ClientError::Command { class, desc }) => (class, desc),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// Sends raw bytes on a fresh connection (after the greeting) and returns
/// the first message back.
fn raw(p: &Path, negotiate: bool, bytes: &[u8]) -> Value {
    let mut s = UnixStream::connect(p).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut split = qmp::wire::Splitter::new(1 << 20);
    let mut next = |s: &mut UnixStream| -> Value {
        serde_json::from_slice(&split.next(s).unwrap().unwrap()).unwrap()
    };
    assert!(next(&mut s).get("QMP").is_some());
    if negotiate {
        s.write_all(br#"{"execute":"qmp_capabilities"}"#).unwrap();
        assert_eq!(next(&mut s)["return"], json!({}));
    }
    s.write_all(bytes).unwrap();
    next(&mut s)
}

#[test]
fn socket_is_private_and_exclusive() {
    let p = socket("mode");
    // A regular file at the path is never removed.
    fs::write(&p, b"precious").unwrap();
    assert!(matches!(
        ControlServer::bind(&p),
        Err(ControlError::NotASocket(_))
    ));
    assert_eq!(fs::read(&p).unwrap(), b"precious");
    fs::remove_file(&p).unwrap();
    // A stale socket (nobody listens) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
    let srv = ControlServer::bind(&p).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    // A live one is refused, and the refused side removes nothing.
    assert!(matches!(
        ControlServer::bind(&p),
        Err(ControlError::InUse(_))
    ));
    assert!(p.exists());
    drop(srv);
    assert!(!p.exists());
}

#[test]
fn a_guard_never_removes_a_socket_that_is_not_its_own() {
    let p = socket("guard");
    let srv = ControlServer::bind(&p).unwrap();
    let guard = srv.guard();
    drop(srv);
    // Another process took the path meanwhile.
    let other = std::os::unix::net::UnixListener::bind(&p).unwrap();
    drop(guard);
    assert!(p.exists(), "the other socket was removed");
    drop(other);
    let _ = fs::remove_file(&p);
}

#[test]
fn only_the_same_user_or_root_may_connect() {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert!(peer_allowed(Some(me)));
    assert!(peer_allowed(Some(0)));
    assert!(me == 12345 || !peer_allowed(Some(12345)));
    assert!(!peer_allowed(None));
    // A real connection's peer is this process's user.
    let (a, _b) = UnixStream::pair().unwrap();
    assert_eq!(peer_uid(&a), Some(me));
}

#[test]
fn connections_beyond_the_cap_are_told_and_closed_even_a_thousand() {
    let (p, _t) = started("cap");
    let held: Vec<Client> = (0..MAX_CLIENTS).map(|_| connect(&p)).collect();
    // 1,000 more at once: each is told why instead of a greeting.
    let flood: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&p).unwrap())
        .collect();
    for mut s in flood {
        s.set_read_timeout(Some(T)).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(text.contains("16 control connections are open"), "{text}");
    }
    let (class, desc) = match Client::connect(&p, T) {
        Err(ClientError::Command { class, desc }) => (class, desc),
        other => panic!("{:?}", other.err()),
    };
    assert_eq!(class, "GenericError");
    assert!(desc.contains("16 control connections are open"), "{desc}");
    drop(held);
    // Once they close, a client is served again (bounded retry: the
    // server's threads notice the closed connections).
    let ok = (0..200).any(|_| {
        let r = Client::connect(&p, T).and_then(|mut c| c.execute("query-status", json!({})));
        if r.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
        r.is_ok()
    });
    assert!(ok, "no client served after the held connections closed");
}

#[test]
fn negotiation_ids_and_the_references_error_classes() {
    let (p, _t) = started("errors");
    let greeting = raw(&p, false, br#"{"execute":"query-status","id":1}"#);
    assert_eq!(greeting["error"]["class"], "CommandNotFound");
    assert_eq!(greeting["id"], 1);
    let v = raw(&p, true, br#"{"execute":"query-status","id":{"n":[7]}}"#);
    assert_eq!(v["id"], json!({"n": [7]}));
    assert_eq!(v["return"]["status"], "running");
    for (input, class, text) in [
        (
            &br#"{"execute":"no-such"}"#[..],
            "CommandNotFound",
            "The command no-such has not been found",
        ),
        (
            br#"{"arguments":{}}"#,
            "GenericError",
            "QMP input lacks member 'execute'",
        ),
        (
            br#"{"execute":"stop","x":1}"#,
            "GenericError",
            "QMP input member 'x' is unexpected",
        ),
        (
            br#"{"execute":"stop","arguments":{"a":1}}"#,
            "GenericError",
            "Parameter 'a' is unexpected",
        ),
        (
            br#"{"execute":"migrate","arguments":{"uri":5}}"#,
            "GenericError",
            "Invalid parameter type for 'uri', expected: string",
        ),
        (
            br#"{"execute":"migrate"}"#,
            "GenericError",
            "Parameter 'uri' is missing",
        ),
        (
            br#"{"execute":"qmp_capabilities"}"#,
            "CommandNotFound",
            "already complete",
        ),
        (
            br#"{"execute": bad json}"#,
            "GenericError",
            "JSON parse error",
        ),
    ] {
        let v = raw(&p, true, input);
        assert_eq!(
            v["error"]["class"],
            class,
            "{}: {v}",
            String::from_utf8_lossy(input)
        );
        let desc = v["error"]["desc"].as_str().unwrap_or("");
        assert!(
            desc.contains(text),
            "{}: {desc}",
            String::from_utf8_lossy(input)
        );
    }
    // A 100 MB object is refused after its first 64 KiB, and the connection
    // closed; the server serves the next one.
    let mut s = UnixStream::connect(&p).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let _ = s.write_all(br#"{"execute":"a","arguments":{"s":""#);
    let sent = (0..100).take_while(|_| s.write_all(&chunk).is_ok()).count();
    assert!(sent < 100, "the server read a 100 MB command");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.contains("longer than 65536 bytes"), "{text}");
    assert_eq!(
        connect(&p).execute("query-status", json!({})).unwrap()["status"],
        "running"
    );
}

#[test]
fn commands_answer_and_events_go_to_every_connection() {
    let (p, _t) = started("events");
    let mut a = connect(&p);
    let mut b = connect(&p);
    let names: Vec<String> = a
        .execute("query-commands", json!({}))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for c in [
        "qom-get",
        "migrate-incoming",
        "query-cpus-fast",
        "x-vmm-status",
    ] {
        assert!(names.iter().any(|n| n == c), "{c} in {names:?}");
    }
    assert_eq!(
        a.execute("query-version", json!({})).unwrap()["qemu"]["major"],
        10
    );
    a.execute("stop", json!({})).unwrap();
    for c in [&mut a, &mut b] {
        let e = c.wait_event(T, |e| e["event"] == "STOP").unwrap();
        assert!(e["timestamp"]["seconds"].as_u64().unwrap() > 0, "{e}");
    }
    assert_eq!(
        a.execute("query-status", json!({})).unwrap()["status"],
        "paused"
    );
    a.execute("cont", json!({})).unwrap();
    let (class, desc) = error_of(a.execute("cont", json!({})));
    assert_eq!(class, "GenericError");
    assert!(desc.contains("already running"), "{desc}");
    let (_, desc) = error_of(a.execute("migrate-incoming", json!({"uri": "tcp:0:0"})));
    assert!(desc.contains("'-incoming' was not specified"), "{desc}");
    let (_, desc) = error_of(a.execute("qom-list", json!({"path": "/machine"})));
    assert!(desc.contains("no guest is running"), "{desc}");
}

#[test]
fn migrate_parameters_events_and_query_migrate() {
    let (p, _t) = started("migrate");
    let mut c = connect(&p);
    let mut watcher = connect(&p);
    let (_, desc) = error_of(c.execute("migrate-set-parameters", json!({"multifd-channels": 17})));
    assert!(desc.contains("1..16"), "{desc}");
    let (_, desc) = error_of(c.execute(
        "migrate-set-parameters",
        json!({"multifd-compression": "lz4"}),
    ));
    assert!(desc.contains("lz4"), "{desc}");
    c.execute(
        "migrate-set-parameters",
        json!({"multifd-channels": 4, "downtime-limit": 50}),
    )
    .unwrap();
    c.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "multifd", "state": true}]}),
    )
    .unwrap();
    let (_, desc) = error_of(c.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "return-path", "state": false}]}),
    ));
    assert!(desc.contains("always on"), "{desc}");
    let params = c.execute("query-migrate-parameters", json!({})).unwrap();
    assert_eq!(
        (
            params["multifd-channels"].as_u64(),
            params["downtime-limit"].as_u64()
        ),
        (Some(4), Some(50))
    );
    assert_eq!(c.execute("query-migrate", json!({})).unwrap(), json!({}));
    c.execute("migrate", json!({"uri": "file:/nonexistent/x"}))
        .unwrap();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("completed") {
        let e = watcher
            .wait_event(T, |e| e["event"] == "MIGRATION")
            .unwrap();
        seen.push(e["data"]["status"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["setup", "active", "device", "completed"]);
    let passes: Vec<Value> = watcher
        .take_events()
        .into_iter()
        .filter(|e| e["event"] == "MIGRATION_PASS")
        .collect();
    assert_eq!(passes.len(), 3, "{passes:?}");
    let q = c.execute("query-migrate", json!({})).unwrap();
    assert_eq!(q["status"], "completed");
    assert_eq!(
        (q["total-time"].as_u64(), q["downtime"].as_u64()),
        (Some(12), Some(1))
    );
    assert_eq!(
        q["x-vmm-summary"]["iterations"], 4,
        "multifd-channels reached the migration"
    );
    // A failure names the culprit in error-desc.
    c.execute("migrate", json!({"uri": "file:/refuse"}))
        .unwrap();
    let e = watcher
        .wait_event(T, |e| {
            e["event"] == "MIGRATION" && e["data"]["status"] == "failed"
        })
        .unwrap();
    assert_eq!(e["data"]["status"], "failed");
    let q = c.execute("query-migrate", json!({})).unwrap();
    assert!(q["error-desc"].as_str().unwrap().contains("pc-5.1"), "{q}");
    // The guest was stopped for the switch-over and resumed.
    let resumed = watcher.wait_event(T, |e| e["event"] == "RESUME");
    assert!(resumed.is_ok());
}

#[test]
fn migrate_cancel_from_another_connection_and_one_migration_at_a_time() {
    let (p, _t) = started("cancel");
    let mut c = connect(&p);
    c.execute("migrate", json!({"uri": "file:/slow"})).unwrap();
    let (_, desc) = error_of(c.execute("migrate", json!({"uri": "file:/x"})));
    assert!(desc.contains("in progress"), "{desc}");
    let mut other = connect(&p);
    other.execute("migrate_cancel", json!({})).unwrap();
    let e = c
        .wait_event(T, |e| {
            e["event"] == "MIGRATION" && e["data"]["status"] == "cancelled"
        })
        .unwrap();
    assert_eq!(e["data"]["status"], "cancelled");
    // Nothing to cancel is not an error (as in the reference).
    other.execute("migrate_cancel", json!({})).unwrap();
}

#[test]
fn an_idle_connection_is_closed_and_its_slot_freed() {
    let p = socket("idle");
    let events = Arc::new(Events::default());
    let fake = Arc::new(Fake {
        events: events.clone(),
        ..Fake::default()
    });
    let srv = ControlServer::bind(&p)
        .unwrap()
        .with_idle(Duration::from_millis(200));
    let _t = srv.spawn(State::new(fake, events));
    let mut held: Vec<Client> = (0..MAX_CLIENTS).map(|_| connect(&p)).collect();
    // Silent for longer than the idle time: the server closes every one
    // (each client sees the end of its stream, well before its own 10 s).
    for c in &mut held {
        assert!(matches!(c.next_event(T), Err(ClientError::Closed)));
    }
    // Their slots are free again (bounded retry: the threads end after
    // closing).
    let served = (0..200).any(|_| {
        let ok = Client::connect(&p, T).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(10));
        }
        ok
    });
    assert!(served, "the idle connections' slots were not freed");
}

#[test]
fn quit_stops_the_server_and_removes_the_socket() {
    let (p, t) = started("quit");
    let mut c = connect(&p);
    c.execute("quit", json!({})).unwrap();
    t.join().unwrap();
    assert!(!p.exists());
}

/// The recipe the runtime follows: a handler around the VM whose `migrate`
/// is `precopy::migrate_to`. Here the VM is the migration tests' fake.
struct VmHandler {
    vm: Mutex<migration::fake::FakeSource>,
}

impl ControlHandler for VmHandler {
    fn status(&self) -> Result<StatusInfo, VmError> {
        let vm = self.vm.lock().map_err(VmError::new)?;
        let state = if vm.is_paused() { "paused" } else { "running" };
        Ok(status_of(state, &vm.machine_type))
    }
    fn view(&self) -> Option<MachineView> {
        None
    }
    fn migration_progress(&self) -> Option<Progress> {
        None
    }
    fn stop(&self) -> Result<(), VmError> {
        use migration::vm::MigrationSource;
        self.vm.lock().map_err(VmError::new)?.pause()
    }
    fn cont(&self) -> Result<(), VmError> {
        use migration::vm::MigrationSource;
        self.vm.lock().map_err(VmError::new)?.resume()
    }
    fn quit(&self) -> Result<(), VmError> {
        Ok(())
    }
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError> {
        let uri = req.uri.parse().map_err(VmError::new)?;
        let mut vm = self.vm.lock().map_err(VmError::new)?;
        let params = req.params().map_err(VmError::new)?;
        migration::precopy::migrate_to(&mut *vm, &uri, &params, progress, cancel)
            .map_err(VmError::new)
    }
    fn migrate_incoming(
        &self,
        _: &str,
        _: Option<crate::control::types::TlsSettings>,
    ) -> Result<String, VmError> {
        Err(VmError::new("not a destination"))
    }
    fn incoming_status(&self) -> Option<(&'static str, Option<String>)> {
        None
    }
    fn answered(&self, _: Answered) {}
    fn verify_ab(&self, _: u64, _: u64) -> Result<VerifyAbResult, VmError> {
        Err(VmError::new("no"))
    }
    fn system_reset(&self) -> Result<(), VmError> {
        Ok(())
    }
    fn system_powerdown(&self) -> Result<(), VmError> {
        Ok(())
    }
}

/// `migrate` then `query-migrate` until it ends: its last answer.
fn migrated(c: &mut Client, uri: &str) -> Value {
    c.execute("migrate", json!({ "uri": uri })).unwrap();
    loop {
        c.pause(Duration::from_millis(20)).unwrap();
        let q = c.execute("query-migrate", json!({})).unwrap();
        if matches!(
            q["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return q;
        }
    }
}

#[test]
fn migrate_a_fake_vm_through_qmp() {
    use migration::fake::{FakeSource, FakeTarget, GuestSpec, IMAGE_PAGES};
    use migration::{PAGE_SIZE, ab, incoming, transport};
    let pages = 1024;
    let p = socket("vm");
    let handler = Arc::new(VmHandler {
        vm: Mutex::new(FakeSource::new(GuestSpec::ab(pages))),
    });
    let events = Arc::new(Events::default());
    let _srv = ControlServer::bind(&p)
        .unwrap()
        .spawn(State::new(handler, events));
    let mut c = connect(&p);

    // Refused from the manifest: the message names both machine types.
    let dest_uri = transport::Uri::Unix(p.with_file_name("dest.sock"));
    let l = transport::listen(&dest_uri).unwrap();
    let refusing = std::thread::spawn(move || {
        let mut t = FakeTarget {
            local_machine: Some("pc-5.1".into()),
            ..Default::default()
        };
        incoming::receive_on(&l, &mut t).map(|_| ())
    });
    let q = migrated(&mut c, &dest_uri.to_string());
    assert_eq!(q["status"], "failed");
    let e = q["error-desc"].as_str().unwrap();
    assert!(e.contains("pc-8.2") && e.contains("pc-5.1"), "{e}");
    assert!(refusing.join().unwrap().is_err());
    assert_eq!(
        c.execute("query-status", json!({})).unwrap()["status"],
        "running"
    );

    // Accepted: live migration, MIGRATION_PASS events, summary, source stopped.
    let l = transport::listen(&dest_uri).unwrap();
    let dest = std::thread::spawn(move || {
        let mut t = FakeTarget::default();
        incoming::receive_on(&l, &mut t).map(|_| t)
    });
    let q = migrated(&mut c, &dest_uri.to_string());
    assert_eq!(q["status"], "completed", "{q}");
    assert_eq!(q["x-vmm-summary"]["outcome"], "handover");
    let passes = c
        .take_events()
        .into_iter()
        .filter(|e| e["event"] == "MIGRATION_PASS")
        .count();
    assert!(passes >= 1, "{passes} passes");
    let t = dest.join().unwrap().unwrap();
    let range = &t.ram[IMAGE_PAGES as usize * PAGE_SIZE..];
    ab::check_ab_image(range, PAGE_SIZE).unwrap();
    assert_eq!(
        c.execute("query-status", json!({})).unwrap()["status"],
        "paused"
    );
}
