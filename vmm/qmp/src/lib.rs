//! QMP, the reference VMM's management protocol (QEMU's
//! `docs/interop/qmp-spec.rst`), both sides of it:
//!
//! - [`wire`]: the object stream (JSON objects back to back, with or
//!   without newlines), split with a bound on every object;
//! - [`command`]: an `execute` message validated into a [`command::Command`],
//!   its arguments read with the reference's error texts
//!   ([`command::Args`]), and the messages a server sends;
//! - [`client`]: a blocking client over a unix socket (greeting,
//!   negotiation, commands, events), every read bounded in size and time.
//!
//! Nothing here knows what a command does: that is the server's business.

pub mod client;
pub mod command;
pub mod wire;

pub use client::{Client, ClientError};
pub use command::{Args, Command, ErrorClass, QmpError};
