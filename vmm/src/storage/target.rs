//! A mirror's target: an NBD export, through the `nbd` client.

use std::sync::Arc;
use std::time::Duration;

use migration::secure::TlsClient;

use super::addr::Addr;
use super::mirror::Target;
use super::tls::ClientUpgrade;

/// Every connect, read and write to a target gives up after this long: a
/// target that goes away fails the job instead of stalling the guest.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An NBD export written by a mirror job.
pub struct NbdTarget {
    client: nbd::Client,
    what: String,
}

impl NbdTarget {
    /// Connects and negotiates (`NBD_OPT_GO`, structured replies,
    /// `base:allocation`); a read-only export is refused.
    pub fn connect(
        addr: &Addr,
        export: &str,
        tls: Option<Arc<TlsClient>>,
    ) -> Result<NbdTarget, String> {
        let what = format!("NBD export '{export}' at {addr}");
        let sock = addr
            .connect(TIMEOUT)
            .map_err(|e| format!("Failed to connect to {what}: {e}"))?;
        let plain = sock
            .try_clone()
            .map_err(|e| format!("Failed to connect to {what}: {e}"))?;
        let upgrade = tls.map(|tls| ClientUpgrade {
            sock,
            tls,
            host: addr.host().to_string(),
        });
        let client = nbd::Client::connect(
            Box::new(plain),
            export,
            upgrade.as_ref().map(|u| u as &dyn nbd::Upgrade),
        )
        .map_err(|e| format!("{what}: {e}"))?;
        if client.read_only() {
            return Err(format!("{what} is read-only"));
        }
        Ok(NbdTarget { client, what })
    }
}

impl Target for NbdTarget {
    fn size(&self) -> u64 {
        self.client.size()
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        self.client.write(offset, data, false).map_err(|e| {
            format!(
                "writing {} bytes at {offset} to {}: {e}",
                data.len(),
                self.what
            )
        })
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), String> {
        self.client
            .write_zeroes(offset, len, false)
            .map_err(|e| format!("zeroing {len} bytes at {offset} on {}: {e}", self.what))
    }

    fn reads_zero(&mut self, offset: u64, len: u64) -> Result<bool, String> {
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let ask = u32::try_from((end - at).min(u64::from(u32::MAX))).unwrap_or(u32::MAX);
            let runs = self
                .client
                .block_status(at, ask)
                .map_err(|e| format!("block status of {}: {e}", self.what))?;
            let mut moved = 0;
            for (n, flags) in runs {
                if flags & nbd::wire::STATE_ZERO == 0 {
                    return Ok(false);
                }
                moved += n;
            }
            if moved == 0 {
                return Ok(false);
            }
            at = at.saturating_add(moved);
        }
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), String> {
        self.client
            .flush()
            .map_err(|e| format!("flushing {}: {e}", self.what))
    }
}
