//! The destination's channel threads: each decodes its channel (bounds,
//! checksum, compressed frames) and writes the pages straight into guest
//! memory.

use crate::PAGE_SIZE;
use crate::stream::{Decoder, PageStats, Record};
use crate::vm::RamAccess;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Sync points each channel has passed.
    syncs: Vec<u64>,
    /// The first channel failure.
    failed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// The channel threads of one incoming migration.
pub struct Receivers {
    threads: Vec<JoinHandle<Result<(PageStats, u64), String>>>,
    shared: Arc<Shared>,
}

impl Receivers {
    /// Starts one thread per channel decoder (`(index, decoder)`).
    pub fn start<R: Read + Send + 'static>(
        channels: Vec<(u32, Decoder<R>)>,
        ram: Arc<dyn RamAccess>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                syncs: vec![0; channels.len()],
                failed: None,
            }),
            cv: Condvar::new(),
        });
        let mut threads = Vec::new();
        for (slot, (index, mut d)) in channels.into_iter().enumerate() {
            let (ram, sh) = (ram.clone(), shared.clone());
            d.land_in(ram.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("mig-recv-{index}"))
                    .spawn(move || {
                        let r =
                            run(d, slot, &*ram, &sh).map_err(|e| format!("channel {index}: {e}"));
                        if let Err(e) = &r
                            && let Ok(mut st) = sh.state.lock()
                        {
                            st.failed.get_or_insert_with(|| e.clone());
                            sh.cv.notify_all();
                        }
                        r
                    })?,
            );
        }
        Ok(Self { threads, shared })
    }

    /// Waits until every channel has passed `n` sync points; a failed
    /// channel or `timeout` is an error.
    pub fn wait_sync(&self, n: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut st = self
            .shared
            .state
            .lock()
            .map_err(|_| "a channel thread panicked".to_string())?;
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.syncs.iter().all(|s| *s >= n) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the data channels did not reach sync point {n} in {} s",
                    timeout.as_secs()
                ));
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, left)
                .map_err(|_| "a channel thread panicked".to_string())?
                .0;
        }
    }

    /// The first channel failure, waiting up to `grace` for one (the main
    /// connection failed: a channel's own error usually says more).
    pub fn failure(&self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        let mut st = self.shared.state.lock().ok()?;
        loop {
            if let Some(e) = &st.failed {
                return Some(e.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self.shared.cv.wait_timeout(st, left).ok()?.0;
        }
    }

    /// Waits for every channel's end (its checksum checked); the pages and
    /// bytes they carried, or the first failure.
    pub fn finish(self) -> Result<(PageStats, u64), String> {
        let mut total = PageStats::default();
        let mut bytes = 0;
        let mut first_err = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok((s, b))) => {
                    total.zero += s.zero;
                    total.normal += s.normal;
                    bytes += b;
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert_with(|| "a channel thread panicked".to_string());
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((total, bytes)),
        }
    }
}

fn run<R: Read>(
    mut d: Decoder<R>,
    slot: usize,
    ram: &dyn RamAccess,
    sh: &Shared,
) -> Result<(PageStats, u64), String> {
    let mut stats = PageStats::default();
    loop {
        match d.next_record().map_err(|e| e.to_string())? {
            Record::Pages { first_page, data } => {
                stats.normal += (data.len() / PAGE_SIZE) as u64;
                ram.write_pages(first_page, data)
                    .map_err(|e| e.to_string())?;
            }
            Record::Landed { count, .. } => stats.normal += count,
            Record::ZeroPages { first_page, count } => {
                stats.zero += count;
                ram.write_zero_pages(first_page, count)
                    .map_err(|e| e.to_string())?;
            }
            Record::Sync => {
                let mut st = sh
                    .state
                    .lock()
                    .map_err(|_| "a channel thread panicked".to_string())?;
                if let Some(s) = st.syncs.get_mut(slot) {
                    *s += 1;
                }
                sh.cv.notify_all();
            }
            Record::End => return Ok((stats, d.offset())),
            Record::Section(_) | Record::Vcpu(_) => {
                return Err("device or vCPU state on a data channel".into());
            }
        }
    }
}
