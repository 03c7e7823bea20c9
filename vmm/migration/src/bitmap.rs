//! A dirty-page bitmap: one bit per guest page, 64 pages per word (KVM's layout).

/// Pages dirtied during an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyBitmap {
    pages: u64,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// A bitmap of `pages` clean pages.
    pub fn new(pages: u64) -> Self {
        Self {
            pages,
            words: vec![0; pages.div_ceil(64) as usize],
        }
    }

    /// A bitmap with every page dirty (the first pre-copy iteration).
    pub fn full(pages: u64) -> Self {
        let mut b = Self::new(pages);
        b.words.iter_mut().for_each(|w| *w = u64::MAX);
        b.clear_tail();
        b
    }

    /// Wraps KVM-style words (bit `i % 64` of word `i / 64` is page `i`);
    /// missing words are clean, extra bits past `pages` are dropped.
    pub fn from_words(pages: u64, mut words: Vec<u64>) -> Self {
        words.resize(pages.div_ceil(64) as usize, 0);
        let mut b = Self { pages, words };
        b.clear_tail();
        b
    }

    fn clear_tail(&mut self) {
        let rem = self.pages % 64;
        if rem != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << rem) - 1;
        }
    }

    /// Number of pages covered.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Marks a page dirty; pages past the end are ignored.
    pub fn set(&mut self, page: u64) {
        if page < self.pages {
            self.words[(page / 64) as usize] |= 1 << (page % 64);
        }
    }

    /// Whether a page is dirty.
    pub fn get(&self, page: u64) -> bool {
        page < self.pages && self.words[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// ORs another bitmap in (e.g. the VMM-written pages into KVM's log).
    pub fn or_with(&mut self, other: &DirtyBitmap) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        self.clear_tail();
    }

    /// Number of dirty pages.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Maximal runs of dirty pages as `(first_page, count)`, in order.
    pub fn runs(&self) -> Runs<'_> {
        Runs { map: self, next: 0 }
    }
}

/// Iterator over runs of dirty pages.
pub struct Runs<'a> {
    map: &'a DirtyBitmap,
    next: u64,
}

impl Iterator for Runs<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let m = self.map;
        let mut p = self.next;
        while p < m.pages {
            let w = m.words[(p / 64) as usize] >> (p % 64);
            if w == 0 {
                p = (p / 64 + 1) * 64;
                continue;
            }
            p += u64::from(w.trailing_zeros());
            break;
        }
        if p >= m.pages {
            self.next = m.pages;
            return None;
        }
        let start = p;
        while p < m.pages && m.get(p) {
            p += 1;
        }
        self.next = p;
        Some((start, p - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_counts() {
        let mut b = DirtyBitmap::new(200);
        for p in [0, 1, 2, 63, 64, 65, 130, 199] {
            b.set(p);
        }
        b.set(500);
        assert_eq!(b.count(), 8);
        let runs: Vec<_> = b.runs().collect();
        assert_eq!(runs, vec![(0, 3), (63, 3), (130, 1), (199, 1)]);
    }

    #[test]
    fn full_and_from_words() {
        let f = DirtyBitmap::full(70);
        assert_eq!(f.count(), 70);
        assert_eq!(f.runs().collect::<Vec<_>>(), vec![(0, 70)]);
        let w = DirtyBitmap::from_words(70, vec![u64::MAX, u64::MAX, 7]);
        assert_eq!(w, f);
        let mut e = DirtyBitmap::new(70);
        e.or_with(&w);
        assert_eq!(e.count(), 70);
        assert_eq!(DirtyBitmap::new(0).runs().count(), 0);
    }
}
