//! The destination's driver: validate the manifest, load, start, answer.

use super::PAGE_SIZE;
use super::channel::Receivers;
use super::manifest::Manifest;
use super::status::Status;
use super::stream::{DecodeError, Decoder, Limits, Record};
use super::transport::{self, Listener, TransportError, Uri};
use super::vm::{MigrationTarget, VmError};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// What the destination received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingSummary {
    /// The accepted manifest.
    pub manifest: Manifest,
    /// Stream bytes read.
    pub bytes: u64,
    /// Zero pages received.
    pub pages_zero: u64,
    /// Pages received with contents.
    pub pages_normal: u64,
    /// From the first byte to the guest running.
    pub elapsed: Duration,
}

/// Why an incoming migration failed; the guest was not started unless the
/// variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Refused(VmError),
    #[error("loading the guest failed: {0}")]
    Load(VmError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Channel(String),
    #[error("waiting for the source: {0}")]
    Accept(io::Error),
    #[error(
        "the guest started but the source could not be told ({0}); it will resume its copy, so stop this one"
    )]
    Unconfirmed(io::Error),
}

/// `vmm run --incoming URI`: binds, waits for one source, receives.
pub fn receive_from<T: MigrationTarget + ?Sized>(
    uri: &Uri,
    target: &mut T,
) -> Result<IncomingSummary, IncomingError> {
    receive_on(&transport::listen(uri)?, target)
}

/// Waits on an already bound listener (so a caller can print the resolved
/// `tcp:...:0` port first) and receives.
pub fn receive_on<T: MigrationTarget + ?Sized>(
    l: &Listener,
    target: &mut T,
) -> Result<IncomingSummary, IncomingError> {
    let conn = l.accept().map_err(IncomingError::Accept)?;
    let mut back = conn.back;
    let back = back.as_mut().map(|b| b as &mut dyn Write);
    let accept = || l.accept_channel(transport::CHANNEL_ACCEPT_TIMEOUT);
    receive_with(conn.reader, back, target, Limits::default(), Some(&accept))
}

/// Accepts one data channel's connection.
pub type ChannelAcceptor<'a> = &'a dyn Fn() -> io::Result<Box<dyn Read + Send>>;

/// Reads a whole stream into `target`; on a return channel, answers the
/// manifest (accepted/refused) and the outcome (running/failed).
pub fn receive<T: MigrationTarget + ?Sized>(
    reader: impl Read,
    back: Option<&mut dyn Write>,
    target: &mut T,
    limits: Limits,
) -> Result<IncomingSummary, IncomingError> {
    receive_with(reader, back, target, limits, None)
}

/// [`receive`], accepting a stream's data channels with `channels`.
pub fn receive_with<T: MigrationTarget + ?Sized>(
    reader: impl Read,
    mut back: Option<&mut dyn Write>,
    target: &mut T,
    limits: Limits,
    channels: Option<ChannelAcceptor>,
) -> Result<IncomingSummary, IncomingError> {
    let started = Instant::now();
    let mut tell = |s: Status| -> io::Result<()> {
        match back.as_mut() {
            Some(w) => s.write_to(*w),
            None => Ok(()),
        }
    };
    let result = load(reader, target, limits, channels, &mut tell);
    match result {
        Ok(mut summary) => {
            tell(Status::Running).map_err(IncomingError::Unconfirmed)?;
            summary.elapsed = started.elapsed();
            Ok(summary)
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = tell(match e {
                IncomingError::Refused(_) => Status::Refused(msg),
                _ => Status::Failed(msg),
            });
            Err(e)
        }
    }
}

fn load<T: MigrationTarget + ?Sized>(
    reader: impl Read,
    target: &mut T,
    limits: Limits,
    accept: Option<ChannelAcceptor>,
    tell: &mut dyn FnMut(Status) -> io::Result<()>,
) -> Result<IncomingSummary, IncomingError> {
    let mut d = Decoder::new(reader, limits)?;
    let manifest = d.read_manifest()?;
    if manifest.channels > 0 && accept.is_none() {
        return Err(IncomingError::Refused(VmError::new(
            "the stream has data channels, which this transport cannot take (a file: snapshot is one stream)",
        )));
    }
    target.validate(&manifest).map_err(IncomingError::Refused)?;
    let ram = target.ram();
    if manifest.channels > 0 && ram.is_none() {
        return Err(IncomingError::Refused(VmError::new(
            "this destination takes no data channels",
        )));
    }
    // A source that cannot hear this will fail on its own.
    let _ = tell(Status::Accepted);
    let receivers = match (accept, ram) {
        (Some(accept), Some(ram)) if manifest.channels > 0 => {
            Some(channels(&manifest, accept, ram, limits)?)
        }
        _ => None,
    };
    if let Some(ram) = target.ram() {
        d.land_in(ram);
    }
    let mut syncs = 0;
    let r = records(&mut d, target, receivers.as_ref(), &mut syncs, tell);
    if let (Err(e), Some(rx)) = (&r, &receivers) {
        // The main connection broke: a data channel that broke first says why.
        if let Some(c) = rx.failure(Duration::from_millis(200)) {
            return Err(IncomingError::Channel(format!("{c} (then: {e})")));
        }
    }
    let (sections, mut vcpus, mut zero, mut normal) = r?;
    let mut channel_bytes = 0;
    if let Some(r) = receivers {
        let (st, bytes) = r.finish().map_err(IncomingError::Channel)?;
        zero += st.zero;
        normal += st.normal;
        channel_bytes = bytes;
    }
    vcpus.sort_by_key(|v| v.index);
    target.load_devices(sections).map_err(IncomingError::Load)?;
    target.load_vcpus(vcpus).map_err(IncomingError::Load)?;
    target.start().map_err(IncomingError::Load)?;
    Ok(IncomingSummary {
        manifest,
        bytes: d.offset() + channel_bytes,
        pages_zero: zero,
        pages_normal: normal,
        elapsed: Duration::ZERO,
    })
}

/// Accepts the stream's data channels (each connection says which it is)
/// and starts their threads.
fn channels(
    m: &Manifest,
    accept: ChannelAcceptor,
    ram: std::sync::Arc<dyn super::vm::RamAccess>,
    limits: Limits,
) -> Result<Receivers, IncomingError> {
    let n = m.channels as usize;
    // Every connection first (with TLS each handshake needs this side),
    // then their headers.
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        conns.push(accept().map_err(|e| {
            IncomingError::Channel(format!(
                "waiting for data channel {} of {n}: {e}",
                conns.len() + 1
            ))
        })?);
    }
    let mut got: Vec<(u32, Decoder<Box<dyn Read + Send>>)> = Vec::with_capacity(n);
    for conn in conns {
        let (d, i) = Decoder::channel(conn, limits, m)
            .map_err(|e| IncomingError::Channel(format!("a data channel: {e}")))?;
        if got.iter().any(|(j, _)| *j == i) {
            return Err(IncomingError::Channel(format!(
                "data channel {i} connected twice"
            )));
        }
        got.push((i, d));
    }
    got.sort_by_key(|(i, _)| *i);
    Receivers::start(got, ram).map_err(|e| IncomingError::Channel(e.to_string()))
}

type Loaded = (
    Vec<super::stream::Section>,
    Vec<super::stream::VcpuRecord>,
    u64,
    u64,
);

/// The main connection's records after the manifest, up to its end.
fn records<T: MigrationTarget + ?Sized, R: Read>(
    d: &mut Decoder<R>,
    target: &mut T,
    receivers: Option<&Receivers>,
    syncs: &mut u64,
    tell: &mut dyn FnMut(Status) -> io::Result<()>,
) -> Result<Loaded, IncomingError> {
    let (mut zero, mut normal) = (0, 0);
    let mut sections = Vec::new();
    let mut vcpus = Vec::new();
    loop {
        match d.next_record()? {
            Record::Pages { first_page, data } => {
                normal += (data.len() / PAGE_SIZE) as u64;
                target
                    .write_pages(first_page, data)
                    .map_err(IncomingError::Load)?;
            }
            Record::Landed { count, .. } => normal += count,
            Record::ZeroPages { first_page, count } => {
                zero += count;
                target
                    .write_zero_pages(first_page, count)
                    .map_err(IncomingError::Load)?;
            }
            Record::Section(s) => sections.push(s),
            Record::Vcpu(v) => vcpus.push(v),
            Record::Sync => {
                *syncs += 1;
                if let Some(r) = receivers {
                    r.wait_sync(*syncs, transport::READ_TIMEOUT)
                        .map_err(IncomingError::Channel)?;
                }
                let _ = tell(Status::Synced);
            }
            Record::End => break,
        }
    }
    Ok((sections, vcpus, zero, normal))
}
