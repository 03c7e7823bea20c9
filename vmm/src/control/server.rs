//! The server side: binds the socket with mode 0600 and serves requests
//! (the same user's or root's processes only, at most [`MAX_CLIENTS`] at
//! once, each closed after [`IDLE`] without a request).

use super::ControlError;
pub use super::handler::ControlHandler;
use super::protocol::{Event, Request, Response};
use super::state::{MAX_LINE, State};
use migration::precopy::Progress;
use migration::vm::VmError;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A bound control socket; removes its path when dropped.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket as bound.
    id: Option<(u64, u64)>,
}

/// What a control socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// This project's JSON lines (`--control`, docs/control.md).
    Lines,
    /// The reference's QMP (`--qmp unix:PATH`, docs/control.md).
    Qmp,
}

impl ControlServer {
    /// Binds `path` with mode 0600. The socket is created inside a fresh
    /// private (0700) directory and renamed into place, so it is never
    /// reachable with wider permissions. A stale socket (nobody listening) is
    /// replaced; a live one is an error.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let err = |source| ControlError::Socket {
            path: path.display().to_string(),
            source,
        };
        if let Ok(meta) = fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket(path.display().to_string()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.display().to_string()));
            }
            fs::remove_file(path).map_err(err)?;
        }
        let listener = migration::transport::bind_private_unix(path).map_err(err)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            id: file_id(path),
        })
    }

    /// Removes the socket when dropped, if the path still is this server's
    /// socket (never another process's that took the path since).
    pub fn guard(&self) -> SocketGuard {
        SocketGuard {
            path: self.path.clone(),
            id: self.id,
        }
    }

    /// Serves connections (one thread each) until a `quit` succeeded.
    pub fn serve(self, handler: Arc<dyn ControlHandler>) {
        self.serve_as(handler, Protocol::Lines)
    }

    /// Serves connections speaking `proto` until a `quit` succeeded.
    pub fn serve_as(self, handler: Arc<dyn ControlHandler>, proto: Protocol) {
        let state = Arc::new(State {
            handler,
            migration: Mutex::new(None),
            qmp: Mutex::default(),
            quitting: AtomicBool::new(false),
            path: self.path.clone(),
        });
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for conn in self.listener.incoming() {
            if state.quitting.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let uid = peer_uid(&conn);
            if !peer_allowed(uid) {
                let who = uid.map_or("unknown".to_string(), |u| u.to_string());
                refuse(
                    conn,
                    format!("refused: peer uid {who} may not control this vmm"),
                );
                continue;
            }
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                active.fetch_sub(1, Ordering::SeqCst);
                refuse(
                    conn,
                    format!("refused: {MAX_CLIENTS} control connections are open"),
                );
                continue;
            }
            let _ = conn.set_read_timeout(Some(IDLE));
            let (st, n) = (state.clone(), active.clone());
            std::thread::spawn(move || {
                match proto {
                    Protocol::Lines => connection(&st, conn),
                    Protocol::Qmp => super::qmp::connection(&st, conn),
                }
                n.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Serves on a background thread.
    pub fn spawn(self, handler: Arc<dyn ControlHandler>) -> std::thread::JoinHandle<()> {
        self.spawn_as(handler, Protocol::Lines)
    }

    /// Serves `proto` on a background thread.
    pub fn spawn_as(
        self,
        handler: Arc<dyn ControlHandler>,
        proto: Protocol,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || self.serve_as(handler, proto))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        drop(self.guard());
    }
}

/// Removes a control socket this process bound, once, if it is still there
/// (same device and inode).
pub struct SocketGuard {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Most control connections served at once (the rest are told so and closed).
pub const MAX_CLIENTS: usize = 16;
/// A connection that sends no request this long is closed.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// The uid of the process at the other end of `conn` (`SO_PEERCRED`).
fn peer_uid(conn: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of a `ucred`, the size
    // passed; the fd is a live unix socket owned by `conn`.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Whether a peer may drive this VMM: the same user, or root.
fn peer_allowed(uid: Option<u32>) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    uid.is_some_and(|u| u == me || u == 0)
}

fn connection(st: &State, conn: UnixStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE => {
                let _ = answer_error(&mut out, "request line too long");
                return;
            }
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut answered = None;
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                answered = Some(req.clone());
                handle(st, req, &mut out)
            }
            Err(e) => Err(format!("bad request: {e}")),
        };
        let ok = resp.is_ok();
        let resp = match resp {
            Ok(result) => Response {
                ok: true,
                result,
                error: None,
            },
            Err(e) => Response {
                ok: false,
                result: None,
                error: Some(e),
            },
        };
        let sent = send(&mut out, &resp);
        if let Some(req) = answered.filter(|_| ok) {
            // After the answer is on its way (or the client is gone).
            st.handler.answered(&req);
        }
        if sent.is_err() {
            return;
        }
        if st.quitting.load(Ordering::SeqCst) {
            // Wake the acceptor so it sees the flag.
            let _ = UnixStream::connect(&st.path);
            return;
        }
    }
}

/// Answers a connection that is not served: after its first request line
/// (read with a short time-out, so the client's write never hits a closed
/// socket), one error response; on a thread of its own.
fn refuse(conn: UnixStream, why: String) {
    std::thread::spawn(move || {
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(1)));
        let mut line = String::new();
        let _ = BufReader::new(&conn).take(MAX_LINE).read_line(&mut line);
        let mut out = conn;
        let _ = answer_error(&mut out, &why);
    });
}

fn answer_error(out: &mut UnixStream, why: &str) -> std::io::Result<()> {
    send(
        out,
        &Response {
            ok: false,
            result: None,
            error: Some(why.to_string()),
        },
    )
}

fn send<T: serde::Serialize>(out: &mut UnixStream, v: &T) -> std::io::Result<()> {
    let mut s = serde_json::to_string(v).map_err(std::io::Error::other)?;
    s.push('\n');
    out.write_all(s.as_bytes())
}

type Answer = Result<Option<serde_json::Value>, String>;

fn handle(st: &State, req: Request, out: &mut UnixStream) -> Answer {
    let h = &st.handler;
    let done = |r: Result<(), VmError>| r.map(|()| None).map_err(|e| e.to_string());
    match req {
        Request::Status => {
            let s = h.status().map_err(|e| e.to_string())?;
            serde_json::to_value(s).map(Some).map_err(|e| e.to_string())
        }
        Request::Stop => done(h.stop()),
        Request::SystemReset => done(h.system_reset()),
        Request::Cont => done(h.cont()),
        Request::Quit => {
            h.quit().map_err(|e| e.to_string())?;
            st.quitting.store(true, Ordering::SeqCst);
            Ok(None)
        }
        Request::VerifyAb(r) => {
            let v = h.verify_ab(r.start, r.pages).map_err(|e| e.to_string())?;
            serde_json::to_value(v).map(Some).map_err(|e| e.to_string())
        }
        Request::MigrateCancel if st.cancel_migration() => Ok(None),
        Request::MigrateCancel => Err("no migration is running".into()),
        Request::Migrate(req) => {
            let cancel = st.begin_migration()?;
            let mut progress = |p: &Progress| {
                // A client that went away does not stop the migration.
                let _ = send(out, &Event::Progress(p.clone()));
            };
            let r = h.migrate(&req, &mut progress, &cancel);
            st.end_migration();
            let sum = r.map_err(|e| e.to_string())?;
            serde_json::to_value(sum)
                .map(Some)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests;
