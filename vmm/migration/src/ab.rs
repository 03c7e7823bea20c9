//! The a-b memory-consistency rule (DESIGN.md §4).
//!
//! The guest's `ab` workload increments the first byte of every page of a
//! range, in order, forever. A consistent image of that range therefore reads
//! `v+1 ... v+1 v ... v` (mod 256): each page's byte equals its predecessor's
//! or is exactly one less, and the one-less step happens at most once. Used on
//! fake RAM in unit tests and on real guests' memory in end-to-end tests.

/// A consistent image: where the guest was when it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbReport {
    /// Pages checked.
    pub pages: usize,
    /// Value of the first page (the newest round).
    pub first: u8,
    /// Index of the first page of the older round, if the guest was mid-round.
    pub step_at: Option<usize>,
}

/// An inconsistent image, naming the page at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AbViolation {
    #[error("no pages to check")]
    Empty,
    #[error("page {page} holds {value:#04x} after {prev:#04x}: neither equal nor one less")]
    BadStep { page: usize, prev: u8, value: u8 },
    #[error("page {page} steps down again (first step at page {first}): two rounds apart")]
    SecondStep { page: usize, first: usize },
}

/// Checks the first bytes of consecutive pages, in page order.
pub fn check_ab(first_bytes: impl IntoIterator<Item = u8>) -> Result<AbReport, AbViolation> {
    let mut it = first_bytes.into_iter();
    let first = it.next().ok_or(AbViolation::Empty)?;
    let (mut prev, mut pages, mut step_at) = (first, 1, None);
    for value in it {
        let page = pages;
        pages += 1;
        if value == prev {
            continue;
        }
        if value != prev.wrapping_sub(1) {
            return Err(AbViolation::BadStep { page, prev, value });
        }
        if let Some(first) = step_at {
            return Err(AbViolation::SecondStep { page, first });
        }
        step_at = Some(page);
        prev = value;
    }
    Ok(AbReport {
        pages,
        first,
        step_at,
    })
}

/// Checks a memory image: the first byte of every `page_size` chunk.
pub fn check_ab_image(mem: &[u8], page_size: usize) -> Result<AbReport, AbViolation> {
    check_ab(mem.chunks(page_size.max(1)).map(|p| p[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_images() {
        assert_eq!(
            check_ab([5, 5, 5]),
            Ok(AbReport {
                pages: 3,
                first: 5,
                step_at: None
            })
        );
        assert_eq!(
            check_ab([0, 0, 255, 255]),
            Ok(AbReport {
                pages: 4,
                first: 0,
                step_at: Some(2)
            })
        );
        let mut mem = vec![0u8; 4 * 16];
        mem[0] = 1;
        assert_eq!(check_ab_image(&mem, 16).unwrap().step_at, Some(1));
    }

    #[test]
    fn inconsistent_images() {
        assert_eq!(check_ab([]), Err(AbViolation::Empty));
        assert_eq!(
            check_ab([3, 3, 1]),
            Err(AbViolation::BadStep {
                page: 2,
                prev: 3,
                value: 1
            })
        );
        assert_eq!(
            check_ab([3, 4]),
            Err(AbViolation::BadStep {
                page: 1,
                prev: 3,
                value: 4
            })
        );
        assert_eq!(
            check_ab([3, 2, 2, 1]),
            Err(AbViolation::SecondStep { page: 3, first: 1 })
        );
        assert!(check_ab([3, 2, 3]).is_err());
    }
}
