use super::*;
use crate::control::client::Client;
use crate::control::protocol::{MigrateRequest, StatusInfo};
use migration::precopy::{CancelToken, Summary};
use migration::precopy::{Outcome, Phase};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

#[derive(Default)]
struct Fake {
    paused: AtomicBool,
}

fn progress(i: u32) -> Progress {
    Progress {
        phase: Phase::Precopy,
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

impl ControlHandler for Fake {
    fn status(&self) -> Result<StatusInfo, VmError> {
        let paused = self.paused.load(Ordering::SeqCst);
        Ok(StatusInfo {
            devices: Vec::new(),
            state: if paused { "paused" } else { "running" }.into(),
            machine_type: "pc-7.2".into(),
            release: "next".into(),
            pinned: vec![],
            migration: None,
        })
    }
    fn stop(&self) -> Result<(), VmError> {
        self.paused.store(true, Ordering::SeqCst);
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
        request: &MigrateRequest,
        progress_cb: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError> {
        for i in 1..=3 {
            progress_cb(&progress(i));
        }
        if request.uri == "tcp:wait:1" {
            for _ in 0..500 {
                if cancel.is_cancelled() {
                    return Err(VmError::new("cancelled"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(VmError::new("never cancelled"));
        }
        Ok(Summary {
            outcome: Outcome::Handover,
            total_ms: 1.0,
            downtime_ms: 0.5,
            bytes: 300,
            pages_zero: 1,
            pages_normal: 2,
            iterations: 3,
            max_throttle: 0,
        })
    }
}

fn socket(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-ctl-{}-{name}", std::process::id()));
    let _ = fs::create_dir_all(&dir);
    dir.join("ctl.sock")
}

fn started(name: &str) -> (PathBuf, std::thread::JoinHandle<()>) {
    let p = socket(name);
    let srv = ControlServer::bind(&p).unwrap();
    (p, srv.spawn(Arc::new(Fake::default())))
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
fn connections_beyond_the_cap_are_told_and_closed() {
    let (p, _t) = started("cap");
    let held: Vec<UnixStream> = (0..MAX_CLIENTS)
        .map(|_| UnixStream::connect(&p).unwrap())
        .collect();
    // Each held connection is served by its thread; one more is refused.
    let mut c = Client::connect(&p).unwrap();
    let e = c
        .call(&Request::Status, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("16 control connections are open"), "{e}");
    drop(held);
    // Once they close, a client is served again (bounded retry: the
    // server's threads notice the closed connections).
    let ok = (0..200).any(|_| {
        let r = Client::connect(&p).and_then(|mut c| c.call(&Request::Status, &mut |_| {}));
        if r.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
        r.is_ok()
    });
    assert!(ok, "no client served after the held connections closed");
}

#[test]
fn stop_cont_status_and_errors() {
    let (p, _t) = started("basic");
    let mut c = Client::connect(&p).unwrap();
    let mut none = |_: &Event| panic!("no events expected");
    let st = c.call(&Request::Status, &mut none).unwrap();
    assert_eq!(st["state"], "running");
    assert_eq!(
        c.call(&Request::Stop, &mut none).unwrap(),
        serde_json::Value::Null
    );
    assert_eq!(
        c.call(&Request::Status, &mut none).unwrap()["state"],
        "paused"
    );
    c.call(&Request::Cont, &mut none).unwrap();
    let e = c.call(&Request::Cont, &mut none).unwrap_err();
    assert_eq!(e.to_string(), "the guest is already running");
    let e = c.call(&Request::MigrateCancel, &mut none).unwrap_err();
    assert!(e.to_string().contains("no migration"));
    // A malformed line gets an error response, and the connection lives on.
    let mut raw = UnixStream::connect(&p).unwrap();
    raw.write_all(b"{\"cmd\":\"fly\"}\n").unwrap();
    let mut l = String::new();
    BufReader::new(raw).read_line(&mut l).unwrap();
    assert!(
        l.contains("\"ok\":false") && l.contains("bad request"),
        "{l}"
    );
    assert_eq!(
        c.call(&Request::Status, &mut none).unwrap()["machine_type"],
        "pc-7.2"
    );
}

#[test]
fn migrate_streams_progress_then_the_summary() {
    let (p, _t) = started("migrate");
    let mut c = Client::connect(&p).unwrap();
    let mut events = Vec::new();
    let req = Request::Migrate(MigrateRequest {
        uri: "tcp:h:1".into(),
        downtime_limit: 300,
        max_bandwidth: None,
        channels: 0,
        compress: None,
    });
    let sum = c.call(&req, &mut |e| events.push(e.clone())).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], Event::Progress(progress(3)));
    let sum: Summary = serde_json::from_value(sum).unwrap();
    assert_eq!(sum.iterations, 3);
}

#[test]
fn migrate_cancel_from_another_connection() {
    let (p, _t) = started("cancel");
    let p2 = p.clone();
    let t = std::thread::spawn(move || {
        let mut c = Client::connect(&p2).unwrap();
        let req = Request::Migrate(MigrateRequest {
            uri: "tcp:wait:1".into(),
            downtime_limit: 300,
            max_bandwidth: None,
            channels: 0,
            compress: None,
        });
        c.call(&req, &mut |_| {})
    });
    let mut c = Client::connect(&p).unwrap();
    let mut ok = false;
    for _ in 0..200 {
        if c.call(&Request::MigrateCancel, &mut |_| {}).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ok, "migrate-cancel never found the migration");
    let e = t.join().unwrap().unwrap_err();
    assert_eq!(e.to_string(), "cancelled");
}

#[test]
fn quit_stops_the_server_and_removes_the_socket() {
    let (p, t) = started("quit");
    let mut c = Client::connect(&p).unwrap();
    c.call(&Request::Quit, &mut |_| {}).unwrap();
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
        Ok(StatusInfo {
            devices: Vec::new(),
            state: if vm.is_paused() { "paused" } else { "running" }.into(),
            machine_type: vm.machine_type.clone(),
            release: "test".into(),
            pinned: vec![],
            migration: None,
        })
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
        migration::precopy::migrate_to(
            &mut *vm,
            &uri,
            &req.params().map_err(VmError::new)?,
            progress,
            cancel,
        )
        .map_err(VmError::new)
    }
}

#[test]
fn migrate_a_fake_vm_through_the_control_socket() {
    use migration::fake::{FakeSource, FakeTarget, GuestSpec, IMAGE_PAGES};
    use migration::{PAGE_SIZE, ab, incoming, transport};
    let pages = 1024;
    let p = socket("vm");
    let handler = Arc::new(VmHandler {
        vm: Mutex::new(FakeSource::new(GuestSpec::ab(pages))),
    });
    let _srv = ControlServer::bind(&p).unwrap().spawn(handler.clone());
    let mut c = Client::connect(&p).unwrap();

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
    let req = Request::Migrate(MigrateRequest {
        uri: dest_uri.to_string(),
        downtime_limit: 300,
        max_bandwidth: None,
        channels: 0,
        compress: None,
    });
    let e = c.call(&req, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("pc-8.2") && e.contains("pc-5.1"), "{e}");
    assert!(refusing.join().unwrap().is_err());
    assert_eq!(
        c.call(&Request::Status, &mut |_| {}).unwrap()["state"],
        "running"
    );

    // Accepted: live migration, progress events, summary, source stopped.
    let l = transport::listen(&dest_uri).unwrap();
    let dest = std::thread::spawn(move || {
        let mut t = FakeTarget::default();
        incoming::receive_on(&l, &mut t).map(|_| t)
    });
    let mut events = 0;
    let sum = c.call(&req, &mut |_| events += 1).unwrap();
    let sum: Summary = serde_json::from_value(sum).unwrap();
    assert_eq!(sum.outcome, migration::precopy::Outcome::Handover);
    assert!(events >= 2, "{events} events");
    let t = dest.join().unwrap().unwrap();
    let range = &t.ram[IMAGE_PAGES as usize * PAGE_SIZE..];
    ab::check_ab_image(range, PAGE_SIZE).unwrap();
    assert_eq!(
        c.call(&Request::Status, &mut |_| {}).unwrap()["state"],
        "paused"
    );
}
