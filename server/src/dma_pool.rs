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
    /// Set once the core asked for cache maintenance (a non-coherent
    /// SMMU): every block is then cleaned after zeroing, so that no dirty
    /// line of the CPU's zeroes is later written back over what the SMMU
    /// wrote, and the SMMU never reads what the memory held before.
    clean_fresh: core::cell::Cell<Option<ArmCache>>,
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
            clean_fresh: core::cell::Cell::new(None),
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
        if step == 1 {
            // Page-aligned (every table): no run starts before the first
            // free page, found a word (64 pages) at a time.
            first = self
                .used
                .iter()
                .position(|&w| w != u64::MAX)
                .map_or(self.pages, |i| {
                    i * 64 + self.used[i].trailing_ones() as usize
                });
        }
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
    type Cache = ArmCache;
    fn cache(&self) -> Option<ArmCache> {
        let cache = ArmCache::new();
        self.clean_fresh.set(cache);
        cache
    }
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
        unsafe { zero_pages(vaddr, count * PAGE) };
        if let Some(c) = self.clean_fresh.get() {
            crate::hal::CacheMaintenance::clean(&c, vaddr, count * PAGE);
        }
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

/// Data-cache maintenance from the server process by `DC CVAC` / `DC
/// CIVAC` (Arm ARM D7.5.9 "Data cache maintenance instructions"), which EL0
/// may execute when SCTLR_EL1.UCI = 1 and whose line size it reads from
/// CTR_EL0 (SCTLR_EL1.UCT = 1): the image's loader sets both, and seL4
/// keeps them. Only an SMMU that does not snoop the CPU's caches needs it.
#[derive(Debug, Clone, Copy)]
pub struct ArmCache {
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    line: usize,
}

impl ArmCache {
    /// The smallest data-cache line (CTR_EL0.DminLine); `None` off AArch64.
    pub fn new() -> Option<Self> {
        #[cfg(target_arch = "aarch64")]
        {
            let ctr: u64;
            // SAFETY: reads a system register (EL0-readable with UCT = 1).
            unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
            Some(ArmCache {
                line: 4 << ((ctr >> 16) & 0xf),
            })
        }
        #[cfg(not(target_arch = "aarch64"))]
        None
    }

    #[cfg_attr(not(target_arch = "aarch64"), allow(unused_variables))]
    fn each_line(&self, vaddr: *const u8, len: usize, invalidate: bool) {
        #[cfg(target_arch = "aarch64")]
        {
            let mut at = vaddr as usize & !(self.line - 1);
            let end = vaddr as usize + len;
            while at < end {
                // SAFETY: cache maintenance of a line of memory this process
                // maps (a block of its DMA pool); no effect Rust can observe.
                unsafe {
                    if invalidate {
                        core::arch::asm!("dc civac, {}", in(reg) at, options(nostack, preserves_flags))
                    } else {
                        core::arch::asm!("dc cvac, {}", in(reg) at, options(nostack, preserves_flags))
                    }
                }
                at += self.line;
            }
            // SAFETY: a barrier: the maintenance completes before what follows.
            unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
        }
    }
}

/// Zeroes `len` bytes (whole pages) at `vaddr`: with `DC ZVA` a block at
/// a time where EL0 may use it (the loader sets SCTLR_EL1.DZE; DCZID_EL0.DZP
/// reads 1 where it may not: ARM ARM, DCZID_EL0), a page table's 4 KiB in
/// some 70 instructions instead of the 1,500 of the byte-generic `memset`.
///
/// # Safety
/// `vaddr..vaddr + len` is page aligned, mapped writable Normal memory,
/// and no reference to it is live.
unsafe fn zero_pages(vaddr: *mut u8, len: usize) {
    #[cfg(target_arch = "aarch64")]
    {
        let dczid: u64;
        // SAFETY: DCZID_EL0 is readable at EL0.
        unsafe { core::arch::asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack)) };
        let block = 4usize << (dczid & 0xf);
        if dczid & (1 << 4) == 0 && block <= PAGE {
            let mut at = vaddr as usize;
            let end = at + len;
            while at < end {
                // SAFETY: `at` lies in the caller's range and `block`
                // divides a page, so the zeroed block does too.
                unsafe {
                    core::arch::asm!("dc zva, {}", in(reg) at, options(nostack, preserves_flags))
                };
                at += block;
            }
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_bytes(vaddr, 0, len) };
}

impl crate::hal::CacheMaintenance for ArmCache {
    fn clean(&self, vaddr: *const u8, len: usize) {
        self.each_line(vaddr, len, false)
    }
    fn invalidate(&self, vaddr: *const u8, len: usize) {
        self.each_line(vaddr, len, true)
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
    fn page_aligned_runs_start_at_the_first_free_page_past_full_words() {
        let (_backing, mut pool) = pool(200, 0x4000_0000);
        let blocks: std::vec::Vec<DmaBlock> =
            (0..140).map(|_| pool.alloc(PAGE, PAGE).unwrap()).collect();
        pool.free(blocks[130]);
        pool.free(blocks[66]);
        pool.free(blocks[3]);
        pool.free(blocks[4]);
        // Two pages: the first free pair, below the single free pages.
        assert_eq!(pool.alloc(2 * PAGE, PAGE).unwrap().paddr, blocks[3].paddr);
        assert_eq!(pool.alloc(PAGE, PAGE).unwrap().paddr, blocks[66].paddr);
        assert_eq!(pool.alloc(PAGE, PAGE).unwrap().paddr, blocks[130].paddr);
        assert_eq!(
            pool.alloc(PAGE, PAGE).unwrap().paddr,
            0x4000_0000 + 140 * PAGE as u64
        );
        // Past the end of the pool nothing is found, free bits or not.
        while pool.alloc(PAGE, PAGE).is_ok() {}
        assert_eq!(pool.pages_in_use(), 200);
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
