//! The control socket: a JSON-lines protocol on a unix socket (mode 0600),
//! documented in `docs/control.md`.
//!
//! The runtime implements [`server::ControlHandler`] and runs a
//! [`server::ControlServer`]; `vmm ctl` and `vmm migrate` ([`cli`]) talk to it
//! through [`client::Client`].

pub mod client;
pub mod handler;
pub mod protocol;
pub mod qmp;
pub mod runtime;
pub mod server;
mod state;

/// Errors of the control socket, on either side.
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
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("control protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Remote(String),
}
