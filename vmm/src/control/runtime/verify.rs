//! `x-vmm-verify-ab`: the `ab` workload's memory rule (DESIGN.md §4)
//! checked over a stopped guest's RAM, with the first pages that break it.

use crate::control::types::{BadPage, VerifyAbResult};
use crate::vstate::memory::{GuestMemoryMmap, ram_end};
use migration::ab::{AbViolation, check_ab};
use migration::vm::VmError;
use vm_memory::{Bytes, GuestAddress};

/// At most this many inconsistent pages are listed.
const MAX_BAD_PAGES: usize = 8;

/// Checks `pages` pages from guest-physical `start` of `mem`.
pub fn verify_ab(mem: &GuestMemoryMmap, start: u64, pages: u64) -> Result<VerifyAbResult, VmError> {
    let page = migration::PAGE_SIZE as u64;
    if !start.is_multiple_of(page) {
        return Err(VmError::new(format!(
            "start {start:#x} is not page-aligned"
        )));
    }
    let inside = pages
        .checked_mul(page)
        .and_then(|n| start.checked_add(n))
        .is_some_and(|end| end <= ram_end(mem));
    if !inside {
        return Err(VmError::new(format!(
            "{pages} pages from {start:#x} go beyond guest RAM"
        )));
    }
    let mut bytes = Vec::with_capacity(pages.min(1 << 28) as usize);
    for i in 0..pages {
        let addr = start + i * page;
        let b: u8 = mem
            .read_obj(GuestAddress(addr))
            .map_err(|e| VmError::new(format!("page {i} at {addr:#x}: {e}")))?;
        bytes.push(b);
    }
    let bad_pages = bytes
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] != w[0] && w[1] != w[0].wrapping_sub(1))
        .take(MAX_BAD_PAGES)
        .map(|(i, w)| BadPage {
            page: i as u64 + 1,
            addr: start + (i as u64 + 1) * page,
            value: w[1],
            prev: w[0],
        })
        .collect();
    let first = bytes.first().copied().unwrap_or(0);
    Ok(match check_ab(bytes.iter().copied()) {
        Ok(r) => VerifyAbResult {
            pages: r.pages as u64,
            consistent: true,
            first: r.first,
            step_at: r.step_at.map(|p| p as u64),
            violation: None,
            bad_pages: Vec::new(),
        },
        Err(v) => {
            let mut bad_pages: Vec<BadPage> = bad_pages;
            if let AbViolation::SecondStep { page: p, .. } = v
                && bad_pages.is_empty()
            {
                let p = p as u64;
                bad_pages.push(BadPage {
                    page: p,
                    addr: start + p * page,
                    value: bytes[p as usize],
                    prev: bytes[p as usize - 1],
                });
            }
            VerifyAbResult {
                pages,
                consistent: false,
                first,
                step_at: None,
                violation: Some(v.to_string()),
                bad_pages,
            }
        }
    })
}
