//! A page-granular allocator of DMA-visible memory over one physically
//! contiguous region.
//!
//! On seL4 the root task retypes the server's DMA pool frame by frame, in
//! order, from one untyped, so the frames are physically contiguous, and maps
//! them at one virtual range; this allocator hands out aligned runs of those
//! pages as [`DmaBlock`]s. A bitmap keeps it allocation-free and bounded.

use crate::hal::{DmaAllocator, DmaBlock, OutOfMemory};

const PAGE: usize = 4096;

/// Allocates from `WORDS * 64` pages at most.
pub struct DmaPool<const WORDS: usize> {
    vaddr: usize,
    paddr: u64,
    pages: usize,
    /// Bit set = page in use.
    used: [u64; WORDS],
    in_use: usize,
}

impl<const WORDS: usize> DmaPool<WORDS> {
    /// A pool over `size` bytes mapped at `vaddr`, physically at `paddr`.
    /// Pages beyond the bitmap's capacity are ignored.
    ///
    /// # Safety
    /// `vaddr..vaddr + size` must be mapped, writable, backed by the physical
    /// range `paddr..paddr + size`, and used by nothing else for the pool's life.
    pub unsafe fn new(vaddr: usize, paddr: u64, size: usize) -> Self {
        let pages = (size / PAGE).min(WORDS * 64);
        DmaPool {
            vaddr,
            paddr,
            pages,
            used: [0; WORDS],
            in_use: 0,
        }
    }

    /// Pages handed out and not yet freed.
    pub fn pages_in_use(&self) -> usize {
        self.in_use
    }

    /// Pages the pool manages.
    pub fn capacity_pages(&self) -> usize {
        self.pages
    }

    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, first: usize, count: usize, used: bool) {
        for page in first..first + count {
            if used {
                self.used[page / 64] |= 1 << (page % 64);
            } else {
                self.used[page / 64] &= !(1 << (page % 64));
            }
        }
    }

    /// First run of `count` free pages whose physical start is a multiple of
    /// `align` (the SMMU's view is what needs the alignment).
    fn find_run(&self, count: usize, align: usize) -> Option<usize> {
        let step = align / PAGE;
        // First page index whose physical address is aligned.
        let misalign = (self.paddr as usize) & (align - 1);
        let mut first = ((align - misalign) & (align - 1)) / PAGE;
        while first + count <= self.pages {
            match (first..first + count).rfind(|&p| self.is_used(p)) {
                None => return Some(first),
                // The next aligned candidate past the last busy page.
                Some(busy) => first += (busy + 1 - first).div_ceil(step) * step,
            }
        }
        None
    }
}

impl<const WORDS: usize> DmaAllocator for DmaPool<WORDS> {
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory> {
        if size == 0 || !align.is_power_of_two() {
            return Err(OutOfMemory);
        }
        let align = align.max(PAGE);
        let count = size.div_ceil(PAGE);
        let first = self.find_run(count, align).ok_or(OutOfMemory)?;
        self.set(first, count, true);
        self.in_use += count;
        let vaddr = (self.vaddr + first * PAGE) as *mut u8;
        // SAFETY: the run lies inside the pool, which `new`'s contract says is
        // mapped and exclusively ours; the pages were free, so nobody else
        // holds a block over them.
        unsafe { core::ptr::write_bytes(vaddr, 0, count * PAGE) };
        Ok(DmaBlock {
            vaddr,
            paddr: self.paddr + (first * PAGE) as u64,
            size: count * PAGE,
        })
    }

    fn free(&mut self, block: DmaBlock) {
        let offset = (block.paddr.wrapping_sub(self.paddr)) as usize;
        let first = offset / PAGE;
        let count = block.size.div_ceil(PAGE);
        // A block that is not ours is ignored rather than corrupting the map.
        if !offset.is_multiple_of(PAGE) || first + count > self.pages {
            return;
        }
        let freed = (first..first + count).filter(|&p| self.is_used(p)).count();
        self.set(first, count, false);
        self.in_use -= freed;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    fn pool(pages: usize, paddr: u64) -> (std::vec::Vec<u8>, DmaPool<4>) {
        let mut backing = vec![0u8; pages * PAGE + PAGE];
        let base = (backing.as_mut_ptr() as usize).next_multiple_of(PAGE);
        // SAFETY: `backing` outlives the pool in every test and is only
        // touched through it.
        let pool = unsafe { DmaPool::<4>::new(base, paddr, pages * PAGE) };
        (backing, pool)
    }

    #[test]
    fn aligned_runs_are_physically_aligned_and_reused_after_free() {
        let (_backing, mut pool) = pool(64, 0x4010_3000);
        let a = pool.alloc(PAGE, PAGE).unwrap();
        assert_eq!(a.paddr, 0x4010_3000);
        let b = pool.alloc(4 * PAGE, 16 * PAGE).unwrap();
        assert_eq!(b.paddr % (16 * PAGE as u64), 0);
        assert_eq!(b.size, 4 * PAGE);
        assert_eq!(pool.pages_in_use(), 5);
        pool.free(b);
        assert_eq!(pool.pages_in_use(), 1);
        let c = pool.alloc(4 * PAGE, 16 * PAGE).unwrap();
        assert_eq!(c.paddr, b.paddr);
    }

    #[test]
    fn exhaustion_is_an_error_and_memory_comes_back_zeroed() {
        let (_backing, mut pool) = pool(4, 0x8000_0000);
        let a = pool.alloc(3 * PAGE, PAGE).unwrap();
        // SAFETY: `a` is a live block of at least one page.
        unsafe { a.vaddr.write(0xaa) };
        assert_eq!(pool.alloc(2 * PAGE, PAGE), Err(OutOfMemory));
        pool.free(a);
        let again = pool.alloc(4 * PAGE, PAGE).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { again.vaddr.read() }, 0);
        assert_eq!(pool.alloc(PAGE, PAGE), Err(OutOfMemory));
    }

    #[test]
    fn foreign_blocks_are_ignored_on_free() {
        let (_backing, mut pool) = pool(4, 0x8000_0000);
        let a = pool.alloc(PAGE, PAGE).unwrap();
        pool.free(DmaBlock {
            vaddr: a.vaddr,
            paddr: 0x1000,
            size: PAGE,
        });
        assert_eq!(pool.pages_in_use(), 1);
    }
}
