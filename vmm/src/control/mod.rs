//! The control plane: QMP on unix sockets (mode 0600, same user or root),
//! documented in `docs/control.md`.
//!
//! The runtime implements [`handler::ControlHandler`]; `vmm run` binds a
//! [`server::ControlServer`] per socket (`--qmp`, `--control`) and serves
//! them all from one [`state::State`], sending events through one
//! [`events::Events`]. `vmm ctl` and `vmm migrate` are QMP clients
//! (`qmp::Client`).

pub mod events;
pub mod handler;
pub mod qmp;
pub mod runtime;
pub mod server;
pub mod state;
pub mod types;

/// Errors of the control plane, on either side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {0} is in use by a running vmm")]
    InUse(String),
    #[error("control socket {0}: the path exists and is not a socket (it is left alone)")]
    NotASocket(String),
    #[error(transparent)]
    Client(#[from] ::qmp::ClientError),
    #[error("{0}")]
    Remote(String),
}
