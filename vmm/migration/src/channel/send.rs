//! The source's channel threads: each reads its pages from guest RAM,
//! skips zero pages, compresses if asked, and writes its own stream.

use super::channel_of;
use crate::PAGE_SIZE;
use crate::compress::Compression;
use crate::stream::format::MAX_RUN_PAGES;
use crate::stream::{Encoder, PageStats};
use crate::vm::RamAccess;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// What the driver asks of a channel thread.
enum Work {
    /// Send pages `first..first + count` (within one stripe).
    Pages { first: u64, count: u32 },
    /// Flush, then answer (the end of a pass).
    Flush(SyncSender<Result<(), String>>),
    /// Write a sync point, flush, answer.
    Sync(SyncSender<Result<(), String>>),
    /// Write the end marker and checksum, flush, answer.
    End(SyncSender<Result<(), String>>),
}

/// Counters every channel thread adds to.
#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    zero: AtomicU64,
    normal: AtomicU64,
}

/// The channel threads of one outgoing migration.
pub struct Senders {
    queues: Vec<SyncSender<Work>>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// Runs of work a channel may have queued before the driver waits.
const QUEUE: usize = 8;

impl Senders {
    /// Starts one thread per writer (`writers[i]` is channel `i`, its
    /// connection already open), writing the channel headers.
    pub fn start(
        writers: Vec<Box<dyn Write + Send>>,
        session: u64,
        compression: Compression,
        ram: Arc<dyn RamAccess>,
    ) -> io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let (mut queues, mut threads) = (Vec::new(), Vec::new());
        for (i, w) in writers.into_iter().enumerate() {
            let mut enc = Encoder::channel(w, session, i as u32)?;
            enc.compress(compression)?;
            let (tx, rx) = sync_channel(QUEUE);
            let (ram, counters) = (ram.clone(), counters.clone());
            let t = std::thread::Builder::new()
                .name(format!("mig-send-{i}"))
                .spawn(move || run(enc, rx, ram, counters))?;
            queues.push(tx);
            threads.push(t);
        }
        Ok(Self {
            queues,
            threads,
            counters,
        })
    }

    /// Number of channels.
    pub fn len(&self) -> u32 {
        self.queues.len() as u32
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queues pages `first..first + count`, each stripe to its channel.
    pub fn send_run(&self, first: u64, count: u64) -> Result<(), String> {
        let n = self.len();
        let stripe = u64::from(MAX_RUN_PAGES);
        let mut p = first;
        while p < first + count {
            let end = ((p / stripe + 1) * stripe).min(first + count);
            let q = &self.queues[channel_of(p, n) as usize];
            q.send(Work::Pages {
                first: p,
                count: (end - p) as u32,
            })
            .map_err(|_| format!("channel {} is gone", channel_of(p, n)))?;
            p = end;
        }
        Ok(())
    }

    fn all(&self, what: fn(SyncSender<Result<(), String>>) -> Work) -> Result<(), String> {
        let mut answers = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            let (tx, rx) = sync_channel(1);
            q.send(what(tx))
                .map_err(|_| format!("channel {i} is gone"))?;
            answers.push((i, rx));
        }
        for (i, rx) in answers {
            rx.recv()
                .map_err(|_| format!("channel {i} is gone"))?
                .map_err(|e| format!("channel {i}: {e}"))?;
        }
        Ok(())
    }

    /// Waits until every channel has sent what it was given.
    pub fn flush(&self) -> Result<(), String> {
        self.all(Work::Flush)
    }

    /// A sync point on every channel.
    pub fn sync(&self) -> Result<(), String> {
        self.all(Work::Sync)
    }

    /// Ends every channel (end marker, checksum) and joins the threads.
    pub fn end(&mut self) -> Result<(), String> {
        let r = self.all(Work::End);
        self.queues.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        r
    }

    /// Bytes written on all channels so far.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    /// Pages sent so far, by kind.
    pub fn stats(&self) -> PageStats {
        PageStats {
            zero: self.counters.zero.load(Ordering::Relaxed),
            normal: self.counters.normal.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Senders {
    fn drop(&mut self) {
        // Closing the queues ends the threads (a failed migration).
        self.queues.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run(
    mut enc: Encoder<Box<dyn Write + Send>>,
    rx: Receiver<Work>,
    ram: Arc<dyn RamAccess>,
    c: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_RUN_PAGES as usize * PAGE_SIZE];
    let mut failed: Option<String> = None;
    let mut reported = enc.bytes_written();
    c.bytes.fetch_add(reported, Ordering::Relaxed);
    while let Ok(w) = rx.recv() {
        let answer = match w {
            Work::Pages { first, count } => {
                if failed.is_none() {
                    let b = &mut buf[..count as usize * PAGE_SIZE];
                    let r = ram
                        .read_pages(first, b)
                        .map_err(|e| e.to_string())
                        .and_then(|()| enc.pages(first, b).map_err(|e| e.to_string()));
                    match r {
                        Ok(st) => {
                            c.zero.fetch_add(st.zero, Ordering::Relaxed);
                            c.normal.fetch_add(st.normal, Ordering::Relaxed);
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                None
            }
            Work::Flush(tx) => Some((tx, enc.flush().map_err(|e| e.to_string()))),
            Work::Sync(tx) => Some((
                tx,
                enc.sync()
                    .and_then(|()| enc.flush())
                    .map_err(|e| e.to_string()),
            )),
            Work::End(tx) => {
                let r = match failed.take() {
                    Some(e) => Err(e),
                    None => enc.end_in_place().map_err(|e| e.to_string()),
                };
                let now = enc.bytes_written();
                c.bytes.fetch_add(now - reported, Ordering::Relaxed);
                let _ = tx.send(r);
                return;
            }
        };
        let now = enc.bytes_written();
        c.bytes.fetch_add(now - reported, Ordering::Relaxed);
        reported = now;
        if let Some((tx, r)) = answer {
            let r = match (&failed, r) {
                (Some(e), _) => Err(e.clone()),
                (None, r) => r,
            };
            if let Err(e) = &r {
                failed = Some(e.clone());
            }
            let _ = tx.send(r);
        }
    }
}
