//! ASID allocation. ASID 0 is never handed out. An ASID whose TLB entries
//! may still exist ("dirty": freed without a completed TLBI_NH_ASID + sync)
//! is only handed out with `needs_invalidate = true`, and the caller must
//! invalidate it before use (DESIGN.md 5, invariant 4).
//!
//! Separate from the domain table so that a later ASID lock can own it alone.

const WORDS: usize = 1024; // 65536 ASIDs
/// Dirty ASIDs remembered; an ASID freed dirty when the list is full stays
/// allocated (leaked) rather than risk reuse without invalidation.
pub const MAX_DIRTY: usize = 64;

/// An allocated ASID and whether it must be invalidated before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsidGrant {
    pub asid: u16,
    pub needs_invalidate: bool,
}

/// Bitmap ASID allocator (fixed size, no allocation).
#[derive(Clone)]
pub struct AsidAllocator {
    in_use: [u64; WORDS],
    /// Free but not yet invalidated (only after a failed TLBI).
    dirty: heapless::Vec<u16, MAX_DIRTY>,
    /// Number of ASIDs handed out (1..limit).
    limit: u32,
    next: u32,
    used: u32,
}

impl core::fmt::Debug for AsidAllocator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AsidAllocator")
            .field("limit", &self.limit)
            .field("used", &self.used)
            .finish()
    }
}

impl AsidAllocator {
    /// ASIDs 1..`limit` (limit ≤ 65536, e.g. `1 << asid_bits`).
    pub fn new(limit: u32) -> Self {
        AsidAllocator {
            in_use: [0; WORDS],
            dirty: heapless::Vec::new(),
            limit: limit.min(65536),
            next: 1,
            used: 0,
        }
    }

    fn get(map: &[u64; WORDS], a: u32) -> bool {
        map[(a / 64) as usize] & (1 << (a % 64)) != 0
    }

    fn set(map: &mut [u64; WORDS], a: u32, v: bool) {
        let w = &mut map[(a / 64) as usize];
        if v {
            *w |= 1 << (a % 64);
        } else {
            *w &= !(1 << (a % 64));
        }
    }

    /// ASIDs in use.
    pub fn in_use(&self) -> u32 {
        self.used
    }

    /// Whether `asid` is allocated.
    pub fn is_allocated(&self, asid: u16) -> bool {
        (asid as u32) < self.limit && Self::get(&self.in_use, asid as u32)
    }

    /// Allocates an ASID, preferring one that needs no invalidation.
    pub fn alloc(&mut self) -> Option<AsidGrant> {
        if self.limit <= 1 {
            return None;
        }
        let span = self.limit - 1;
        let mut dirty_candidate = None;
        for k in 0..span {
            let a = 1 + (self.next - 1 + k) % span;
            if Self::get(&self.in_use, a) {
                continue;
            }
            if self.dirty.contains(&(a as u16)) {
                if dirty_candidate.is_none() {
                    dirty_candidate = Some(a);
                }
                continue;
            }
            return Some(self.take(a, false));
        }
        dirty_candidate.map(|a| self.take(a, true))
    }

    /// Allocates `asid` itself if it is free (an address space whose ASID
    /// is fixed from outside, e.g. shared with a CPU context for broadcast
    /// TLB maintenance: [`crate::shared`] SVA spaces). `None` if it is 0,
    /// out of range or in use.
    pub fn claim(&mut self, asid: u16) -> Option<AsidGrant> {
        let a = asid as u32;
        if a == 0 || a >= self.limit || Self::get(&self.in_use, a) {
            return None;
        }
        let dirty = self.dirty.contains(&asid);
        Some(self.take(a, dirty))
    }

    /// The number of ASIDs this allocator manages, plus one (ASID 0).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn take(&mut self, a: u32, needs_invalidate: bool) -> AsidGrant {
        Self::set(&mut self.in_use, a, true);
        self.used += 1;
        self.next = if a + 1 >= self.limit { 1 } else { a + 1 };
        AsidGrant {
            asid: a as u16,
            needs_invalidate,
        }
    }

    /// Records that `asid` was invalidated (TLBI_NH_ASID + sync completed).
    pub fn mark_clean(&mut self, asid: u16) {
        self.dirty.retain(|&d| d != asid);
    }

    /// Returns `asid`; `clean` says whether it was invalidated already.
    pub fn free(&mut self, asid: u16, clean: bool) {
        let a = asid as u32;
        if a == 0 || a >= self.limit || !Self::get(&self.in_use, a) {
            return;
        }
        if clean {
            self.dirty.retain(|&d| d != asid);
        } else if !self.dirty.contains(&asid) && self.dirty.push(asid).is_err() {
            return; // no room to remember it: never hand it out again
        }
        Self::set(&mut self.in_use, a, false);
        self.used -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_exhaustion() {
        let mut a = AsidAllocator::new(8);
        let mut got = [0u16; 7];
        for g in got.iter_mut() {
            let x = a.alloc().unwrap();
            assert!(!x.needs_invalidate);
            assert_ne!(x.asid, 0);
            *g = x.asid;
        }
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(a.alloc(), None);
        a.free(3, false);
        // only a dirty one left: handed out with needs_invalidate
        assert_eq!(
            a.alloc(),
            Some(AsidGrant {
                asid: 3,
                needs_invalidate: true
            })
        );
        a.free(3, true);
        assert_eq!(
            a.alloc(),
            Some(AsidGrant {
                asid: 3,
                needs_invalidate: false
            })
        );
        assert_eq!(a.in_use(), 7);
    }

    #[test]
    fn prefers_clean() {
        let mut a = AsidAllocator::new(4);
        let x = a.alloc().unwrap().asid;
        a.free(x, false);
        let y = a.alloc().unwrap();
        assert_ne!(y.asid, x);
        assert!(!y.needs_invalidate);
        a.free(0, true); // ignored
        a.free(200, true); // ignored
        assert!(AsidAllocator::new(1).alloc().is_none());
    }

    #[test]
    fn dirty_list_full_leaks_instead_of_reusing() {
        let mut a = AsidAllocator::new(1 << 16);
        let got: heapless::Vec<u16, 100> = (0..100).map(|_| a.alloc().unwrap().asid).collect();
        for &x in got.iter() {
            a.free(x, false);
        }
        // MAX_DIRTY remembered, the rest stay allocated
        assert_eq!(a.in_use() as usize, 100 - MAX_DIRTY);
        for _ in 0..1000 {
            let g = a.alloc().unwrap();
            assert!(!got.contains(&g.asid) || g.needs_invalidate);
        }
    }
}
