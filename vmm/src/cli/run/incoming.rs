//! `vmm run --incoming URI|defer`: the destination's side of a migration,
//! before the guest runs. With `defer` the destination waits for QMP's
//! `migrate-incoming` (as the reference's `-incoming defer`); `quit` while
//! it waits ends the process.

use super::{RunArgs, RunError, incoming_settings};
use crate::builder::Machine;
use crate::builder::config::{MachineConfig, RunRequest};
use crate::control::runtime::{Deferred, RunShared};
use crate::migrate::MachineTarget;
use crate::release::persona::Persona;
use crate::vstate::vcpu::VmEvent;
use migration::incoming;
use migration::secure::Creds;
use migration::transport::{self, Listener, TransportError, Uri};
use std::sync::mpsc::{self, Receiver};

/// Where the stream comes from.
pub enum Incoming {
    /// `--incoming URI`.
    Uri(Uri),
    /// `--incoming defer`: from `migrate-incoming`.
    Defer,
}

impl Incoming {
    /// Parses `--incoming`.
    pub fn parse(arg: &str) -> Result<Self, RunError> {
        if arg == "defer" {
            return Ok(Incoming::Defer);
        }
        arg.parse()
            .map(Incoming::Uri)
            .map_err(RunError::IncomingUri)
    }
}

/// The machine an incoming migration built, its events and configuration.
pub type Received = (Machine, Receiver<VmEvent>, Option<MachineConfig>);

/// Credentials a destination requires of its source: the credentials and
/// the client subjects admitted (`tls-authz`).
pub type Required = (Creds, Vec<String>);

/// Loads `--tls-creds` / QMP's `tls-creds` with the subjects admitted.
pub fn required(creds: &str, authz: &[String]) -> Result<Required, String> {
    let creds = Creds::load(creds).map_err(|e| format!("--tls-creds: {e}"))?;
    Ok((creds, authz.to_vec()))
}

fn listen(uri: &Uri, tls: Option<&Required>) -> Result<Listener, TransportError> {
    if let Uri::File(p) = uri {
        // A snapshot must exist before anything is built.
        std::fs::metadata(p).map_err(|source| TransportError::Io {
            what: "cannot read snapshot",
            uri: format!("file:{}", p.display()),
            source,
        })?;
    }
    match tls {
        Some((creds, authz)) => transport::listen_secure(uri, Some(creds), authz.clone()),
        None => transport::listen(uri),
    }
}

/// Says where the destination listens: on stderr (`incoming: waiting on
/// URI`, the port of `:0` resolved) and to `query-migrate` (`setup`).
fn announce(shared: &RunShared, l: &Listener) {
    if let Ok(u) = l.uri() {
        eprintln!("incoming: waiting on {u}");
        shared.set_listening(u.to_string());
    }
    shared.set_incoming("setup");
}

/// Waits for `migrate-incoming` and listens where it says; `None` when
/// `quit` came first.
fn deferred(shared: &RunShared, cli: Option<&Required>) -> Option<Listener> {
    let (tx, rx) = mpsc::channel();
    shared.defer(tx);
    eprintln!("incoming: deferred, waiting for migrate-incoming");
    let got = loop {
        match rx.recv() {
            Ok(Deferred::Listen(uri, qmp_tls, reply)) => {
                // QMP's tls-* parameters, else the command line's.
                let tls = match qmp_tls
                    .as_ref()
                    .map(|t| required(&t.creds, &t.authz))
                    .transpose()
                {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                };
                let l = uri
                    .parse::<Uri>()
                    .and_then(|u| listen(&u, tls.as_ref().or(cli)))
                    .map_err(|e| e.to_string());
                match l {
                    Ok(l) => {
                        // Listening, and query-migrate says so, before
                        // migrate-incoming returns.
                        announce(shared, &l);
                        let _ = reply.send(Ok(l.uri().map(|u| u.to_string()).unwrap_or(uri)));
                        break Some(l);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Ok(Deferred::Quit) | Err(_) => break None,
        }
    };
    shared.undefer();
    got
}

/// Receives the guest; `None` when `quit` ended a deferred wait.
pub fn receive(
    how: &Incoming,
    args: &RunArgs,
    req: &RunRequest,
    persona: &Persona,
    kernel: &[u8],
    shared: &RunShared,
    tls: Option<&Required>,
) -> Result<Option<Received>, RunError> {
    let listener = match how {
        Incoming::Uri(uri) => {
            let l = listen(uri, tls).map_err(RunError::IncomingUri)?;
            announce(shared, &l);
            l
        }
        Incoming::Defer => match deferred(shared, tls) {
            Some(l) => l,
            None => return Ok(None),
        },
    };

    let mut target = MachineTarget::new(
        incoming_settings(args, req),
        persona,
        kernel,
        args.append.as_deref(),
    )
    .on_manifest(|| shared.set_incoming("active"));
    let summary = match incoming::receive_on(&listener, &mut target) {
        Ok(s) => s,
        Err(e) => {
            shared.set_incoming("failed");
            return Err(e.into());
        }
    };
    let adopted = target.adopted();
    let cfg = target.config().cloned();
    let (machine, rx) = target.into_machine().ok_or(RunError::VcpusGone)?;
    tracing::info!(
        "incoming: {} from release {}, {} bytes, {} zero / {} normal pages in {:.1} ms{}",
        summary.manifest.machine_type,
        summary.manifest.source_release,
        summary.bytes,
        summary.pages_zero,
        summary.pages_normal,
        summary.elapsed.as_secs_f64() * 1000.0,
        if adopted {
            " (configuration adopted from the stream)"
        } else {
            ""
        }
    );
    Ok(Some((machine, rx, cfg)))
}
