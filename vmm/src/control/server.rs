//! The server side: binds the socket with mode 0600 and serves requests.

use super::ControlError;
use super::protocol::{Event, MigrateRequest, Request, Response, StatusInfo, VerifyAbResult};
use migration::precopy::{CancelToken, Progress, Summary};
use migration::vm::VmError;
use std::fs::{self, DirBuilder, Permissions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the runtime does for each request. Called from the server's
/// connection threads, possibly concurrently (`migrate-cancel` and `status`
/// arrive while `migrate` runs).
pub trait ControlHandler: Send + Sync {
    /// State, machine type, pinned properties, migration progress.
    fn status(&self) -> Result<StatusInfo, VmError>;
    /// Pauses the vCPUs.
    fn stop(&self) -> Result<(), VmError>;
    /// Resumes the vCPUs.
    fn cont(&self) -> Result<(), VmError>;
    /// Shuts the VM down; the process should exit once this returns.
    fn quit(&self) -> Result<(), VmError>;
    /// Runs an outgoing migration (typically `precopy::migrate_to`), calling
    /// `progress` as it goes and honouring `cancel`.
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError>;
    /// Called once the successful answer to `req` was written (or the client
    /// went away): the place to end the process after `quit` or a migration
    /// handed over, without cutting the answer off.
    fn answered(&self, req: &Request) {
        let _ = req;
    }
    /// Checks the a-b workload's memory image (`pages` pages from
    /// guest-physical `start`) on a stopped guest.
    fn verify_ab(&self, start: u64, pages: u64) -> Result<VerifyAbResult, VmError> {
        let _ = (start, pages);
        Err(VmError::new("verify-ab is not supported here"))
    }
    /// Resets the guest as its own reset through port 0xcf9 would.
    fn system_reset(&self) -> Result<(), VmError> {
        Err(VmError::new("system-reset is not supported here"))
    }
}

/// A bound control socket; removes its path when dropped.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

struct State {
    handler: Arc<dyn ControlHandler>,
    migration: Mutex<Option<CancelToken>>,
    quitting: AtomicBool,
    path: PathBuf,
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
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.display().to_string()));
            }
            fs::remove_file(path).map_err(err)?;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let dir = path.parent().unwrap_or(Path::new(".")).join(format!(
            ".{}.{}.tmp",
            name.unwrap_or_default(),
            std::process::id()
        ));
        DirBuilder::new().mode(0o700).create(&dir).map_err(err)?;
        let tmp = dir.join("s");
        let bound = UnixListener::bind(&tmp)
            .and_then(|l| fs::set_permissions(&tmp, Permissions::from_mode(0o600)).map(|()| l))
            .and_then(|l| fs::rename(&tmp, path).map(|()| l));
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_dir(&dir);
        Ok(Self {
            listener: bound.map_err(err)?,
            path: path.to_path_buf(),
        })
    }

    /// Serves connections (one thread each) until a `quit` succeeded.
    pub fn serve(self, handler: Arc<dyn ControlHandler>) {
        let state = Arc::new(State {
            handler,
            migration: Mutex::new(None),
            quitting: AtomicBool::new(false),
            path: self.path.clone(),
        });
        for conn in self.listener.incoming() {
            if state.quitting.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let st = state.clone();
            std::thread::spawn(move || connection(&st, conn));
        }
    }

    /// Serves on a background thread.
    pub fn spawn(self, handler: Arc<dyn ControlHandler>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || self.serve(handler))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Longest request line accepted.
const MAX_LINE: u64 = 64 << 10;

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
                let _ = send(
                    &mut out,
                    &Response {
                        ok: false,
                        result: None,
                        error: Some("request line too long".into()),
                    },
                );
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
        Request::MigrateCancel => match lock(st).as_ref() {
            Some(c) => {
                c.cancel();
                Ok(None)
            }
            None => Err("no migration is running".into()),
        },
        Request::Migrate(req) => {
            let cancel = CancelToken::default();
            {
                let mut cur = lock(st);
                if cur.is_some() {
                    return Err("a migration is already running".into());
                }
                *cur = Some(cancel.clone());
            }
            let mut progress = |p: &Progress| {
                // A client that went away does not stop the migration.
                let _ = send(out, &Event::Progress(p.clone()));
            };
            let r = h.migrate(&req, &mut progress, &cancel);
            *lock(st) = None;
            let sum = r.map_err(|e| e.to_string())?;
            serde_json::to_value(sum)
                .map(Some)
                .map_err(|e| e.to_string())
        }
    }
}

fn lock(st: &State) -> std::sync::MutexGuard<'_, Option<CancelToken>> {
    st.migration.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
