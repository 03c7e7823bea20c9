//! The server side: binds a QMP socket with mode 0600 and serves it (the
//! same user's or root's processes only, at most [`MAX_CLIENTS`] at once
//! over every socket of the process, each closed after [`IDLE`] without a
//! command).

use super::ControlError;
use super::state::State;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A bound control socket; removes its path when dropped.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket as bound.
    id: Option<(u64, u64)>,
    /// A connection idle this long is closed ([`IDLE`]).
    idle: std::time::Duration,
}

impl ControlServer {
    /// Binds `path` with mode 0600. The socket is created inside a fresh
    /// private (0700) directory and renamed into place, so it is never
    /// reachable with wider permissions. A stale socket (nobody listening) is
    /// replaced; a live one, or anything that is not a socket, is an error.
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
        }
        // The rename replaces a stale socket atomically.
        let listener = migration::transport::bind_private_unix(path).map_err(err)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            id: file_id(path),
            idle: IDLE,
        })
    }

    /// Closes connections idle for `idle` instead of [`IDLE`].
    pub fn with_idle(mut self, idle: std::time::Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Removes the socket when dropped, if the path still is this server's
    /// socket (never another process's that took the path since).
    pub fn guard(&self) -> SocketGuard {
        SocketGuard {
            path: self.path.clone(),
            id: self.id,
        }
    }

    /// Serves QMP connections (one thread each) until a `quit` succeeded.
    pub fn serve(self, state: Arc<State>) {
        for conn in self.listener.incoming() {
            if state.quitting.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let uid = peer_uid(&conn);
            if !peer_allowed(uid) {
                let who = uid.map_or("unknown".to_string(), |u| u.to_string());
                tracing::warn!(
                    "control socket {}: refused peer uid {who}",
                    self.path.display()
                );
                refuse(
                    conn,
                    &format!("refused: peer uid {who} may not control this vmm"),
                );
                continue;
            }
            if state.active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                state.active.fetch_sub(1, Ordering::SeqCst);
                refuse(
                    conn,
                    &format!("refused: {MAX_CLIENTS} control connections are open"),
                );
                continue;
            }
            let _ = conn.set_read_timeout(Some(self.idle));
            let (st, path) = (state.clone(), self.path.clone());
            let spawned = std::thread::Builder::new()
                .name("qmp".into())
                .spawn(move || {
                    super::qmp::connection(&st, conn);
                    st.active.fetch_sub(1, Ordering::SeqCst);
                    if st.quitting.load(Ordering::SeqCst) {
                        // Wake the acceptor so it sees the flag.
                        let _ = UnixStream::connect(&path);
                    }
                });
            if spawned.is_err() {
                state.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Serves on a background thread.
    pub fn spawn(self, state: Arc<State>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || self.serve(state))
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

/// Tells a connection that is not served why, in place of the greeting,
/// and closes it (no thread: a flood costs one write each).
fn refuse(mut conn: UnixStream, why: &str) {
    let _ = conn.set_write_timeout(Some(std::time::Duration::from_millis(100)));
    let e = qmp::command::answer(&Err(qmp::QmpError::generic(why)), None);
    let _ = conn.write_all(&qmp::command::encode(&e));
}

#[cfg(test)]
mod tests;
