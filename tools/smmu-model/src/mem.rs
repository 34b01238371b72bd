//! Physical memory of the modelled machine: one contiguous arena that the
//! server reaches through `DmaBlock::vaddr` and the SMMU model through
//! physical addresses.
//!
//! # Coherency
//!
//! By default the SMMU is I/O-coherent (IDR0.COHACC = 1): the CPU and the
//! SMMU see one copy of memory. [`PhysMem::set_coherent(false)`](PhysMem::set_coherent)
//! models a non-coherent SMMU (COHACC = 0) with two copies:
//!
//! * the arena behind `vaddr` pointers is the CPU's view (its data caches
//!   in front of memory);
//! * a second copy is memory at the point of coherency (PoC), which the SMMU
//!   and devices reach: [`read`](PhysMem::read), [`write`](PhysMem::write)
//!   and the other physical accessors, hence every table fetch, walk,
//!   queue access, event record, MSI and `dma_read`/`dma_write` of the model.
//!
//! Every cache line (64 bytes, [`CACHE_LINE`]) counts as always cached, the
//! worst case the architecture permits: a CPU write reaches the PoC only
//! through [`clean`](PhysMem::clean) (never by eviction), and the CPU sees a
//! PoC write (SMMU, device, [`write`](PhysMem::write)) only after
//! [`invalidate`](PhysMem::invalidate). A line is *dirty* when its CPU view
//! differs from what it held at its last synchronisation (clean of a dirty
//! line, invalidate, allocation, free, switching coherency); a third copy
//! keeps that content. `clean` writes dirty lines back whole (every byte of
//! the line, as hardware does) and leaves other lines alone; `invalidate`
//! is clean-and-invalidate: dirty lines are written back first, then the CPU
//! view of every line in the range is reloaded from the PoC. A write-back
//! over a line the PoC side also changed since the last synchronisation
//! loses those PoC bytes, as on hardware; [`CacheStats::lost_poc_writes`]
//! counts such lines. (A CPU store of the value a byte already held is not
//! seen as dirtying it.)
//!
//! Allocation and free synchronise their blocks: a fresh block is zero and a
//! freed one poisoned in both views (an allocator handing out zeroed memory
//! has cleaned it).
//!
//! The host buffer is allocated once, aligned to its own (power-of-two) size,
//! and the physical base is aligned at least as much, so `vaddr - host_base ==
//! paddr - phys_base` and every alignment the server asks for holds both
//! virtually and physically (the `DmaAllocator` contract).

use iommu_server::hal::{DmaAllocator, DmaBlock, OutOfMemory};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Cache line size of the modelled CPU: the granule of
/// [`PhysMem::clean`] and [`PhysMem::invalidate`].
pub const CACHE_LINE: usize = 64;

/// Smallest block handed out; also the granule of the free list. 64 bytes is
/// one STE / CD, so two blocks never share a configuration structure.
const MIN_BLOCK: u64 = 64;

/// How to build the arena.
#[derive(Debug, Clone)]
pub struct MemConfig {
    /// Physical address of the first byte. Must be aligned to `size`
    /// rounded up to a power of two.
    pub phys_base: u64,
    /// Bytes of memory.
    pub size: usize,
    /// Byte written over a block when it is freed, so that a table the SMMU
    /// still reaches after it was freed decodes as garbage (0xFF: every
    /// descriptor "valid" with an out-of-range address, every STE a stage-2
    /// config) instead of silently as zeros. `None` leaves freed memory as is.
    pub poison_on_free: Option<u8>,
}

impl Default for MemConfig {
    fn default() -> Self {
        MemConfig {
            phys_base: 0x8000_0000,
            size: 64 << 20,
            poison_on_free: Some(0xFF),
        }
    }
}

/// Who asked for a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Through `DmaAllocator` (the server: queues, tables).
    Dma,
    /// Through [`PhysMem::alloc_buffer`] (a test's "client buffer").
    Buffer,
}

/// A block that is currently allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveBlock {
    pub paddr: u64,
    pub size: usize,
    pub kind: BlockKind,
}

/// Allocation statistics (DmaAllocator side only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Successful `alloc` calls.
    pub allocs: u64,
    /// `free` calls.
    pub frees: u64,
    /// `alloc` calls that returned `OutOfMemory` (injected, budget or real).
    pub failures: u64,
    /// Bytes currently allocated through `DmaAllocator`.
    pub live_bytes: usize,
    /// Highest `live_bytes` seen.
    pub peak_bytes: usize,
}

/// Cache maintenance done on [`PhysMem`] (counted in both coherency modes;
/// the line counts only change when non-coherent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// [`PhysMem::clean`] calls.
    pub cleans: u64,
    /// [`PhysMem::invalidate`] calls.
    pub invalidates: u64,
    /// Sum of the `len` arguments of `clean`.
    pub clean_bytes: u64,
    /// Sum of the `len` arguments of `invalidate`.
    pub invalidate_bytes: u64,
    /// Dirty lines written back to the PoC (by `clean` or `invalidate`).
    pub lines_written_back: u64,
    /// Lines whose write-back overwrote bytes the PoC side (SMMU, device,
    /// physical `write`) had changed since the line's last synchronisation:
    /// CPU and device data sharing a cache line without maintenance
    /// between, a driver bug on non-coherent hardware.
    pub lost_poc_writes: u64,
}

/// Injected allocation failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FailPlan {
    /// Fail the allocation when this reaches 1 (counted down per call).
    nth: Option<u64>,
    /// After this many more successful allocations, fail every one.
    after: Option<u64>,
    /// Upper bound on `live_bytes`.
    budget: Option<usize>,
}

struct Arena {
    host: *mut u8,
    layout: Layout,
    phys_base: u64,
    size: u64,
    poison: Option<u8>,
    /// offset -> length of free ranges, coalesced.
    free: BTreeMap<u64, u64>,
    /// offset -> live block.
    live: BTreeMap<u64, LiveBlock>,
    stats: AllocStats,
    plan: FailPlan,
    /// The point-of-coherency copies; `None` when coherent.
    nc: Option<NonCoherent>,
    cache: CacheStats,
}

/// The extra copies of memory of a non-coherent machine (see module doc).
struct NonCoherent {
    /// Memory at the point of coherency: what the SMMU and devices see.
    poc: Vec<u8>,
    /// Per line, the CPU view at its last synchronisation; a line whose CPU
    /// view differs is dirty.
    synced: Vec<u8>,
}

// SAFETY: the arena owns its host buffer exclusively; every access from the
// model goes through the Mutex around it. (The server writes through the
// `vaddr` of blocks it owns; that is the memory-sharing the hardware has too.)
unsafe impl Send for Arena {}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `host` came from `alloc_zeroed(self.layout)` and is freed once.
        unsafe { dealloc(self.host, self.layout) }
    }
}

/// The machine's physical memory. Cheap to clone; all clones share one arena.
#[derive(Clone)]
pub struct PhysMem {
    inner: Arc<Mutex<Arena>>,
}

impl std::fmt::Debug for PhysMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.lock();
        f.debug_struct("PhysMem")
            .field("phys_base", &format_args!("{:#x}", a.phys_base))
            .field("size", &a.size)
            .field("stats", &a.stats)
            .field("coherent", &a.nc.is_none())
            .field("cache", &a.cache)
            .finish()
    }
}

impl Default for PhysMem {
    fn default() -> Self {
        Self::new(MemConfig::default())
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

impl PhysMem {
    pub fn new(cfg: MemConfig) -> Self {
        assert!(
            cfg.size > 0 && cfg.size.is_multiple_of(4096),
            "arena size must be pages"
        );
        let align = cfg.size.next_power_of_two().max(4096);
        assert!(
            cfg.phys_base.is_multiple_of(align as u64),
            "phys_base must be aligned to the arena size rounded up to a power of two"
        );
        let layout = Layout::from_size_align(cfg.size, align).expect("arena layout");
        // SAFETY: layout has non-zero size.
        let host = unsafe { alloc_zeroed(layout) };
        assert!(!host.is_null(), "could not allocate the arena");
        let mut free = BTreeMap::new();
        free.insert(0, cfg.size as u64);
        PhysMem {
            inner: Arc::new(Mutex::new(Arena {
                host,
                layout,
                phys_base: cfg.phys_base,
                size: cfg.size as u64,
                poison: cfg.poison_on_free,
                free,
                live: BTreeMap::new(),
                stats: AllocStats::default(),
                plan: FailPlan::default(),
                nc: None,
                cache: CacheStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arena> {
        // A panic in a test while the lock was held must not hide the memory
        // from the rest of the test's diagnostics.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First physical address of the arena.
    pub fn phys_base(&self) -> u64 {
        self.lock().phys_base
    }
    /// Size of the arena in bytes.
    pub fn size(&self) -> usize {
        self.lock().size as usize
    }
    /// Whether `[paddr, paddr+len)` is RAM.
    pub fn contains(&self, paddr: u64, len: usize) -> bool {
        self.lock().offset(paddr, len).is_some()
    }

    /// Reads physical memory; `None` if any byte is outside the arena
    /// (an external abort on the bus).
    pub fn read(&self, paddr: u64, buf: &mut [u8]) -> Option<()> {
        self.lock().read(paddr, buf)
    }
    /// Writes physical memory; `None` (and nothing written) if any byte is
    /// outside the arena.
    pub fn write(&self, paddr: u64, data: &[u8]) -> Option<()> {
        self.lock().write(paddr, data)
    }
    /// Little-endian 64-bit read.
    pub fn read_u64(&self, paddr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(paddr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }
    /// Little-endian 64-bit write.
    pub fn write_u64(&self, paddr: u64, v: u64) -> Option<()> {
        self.write(paddr, &v.to_le_bytes())
    }
    pub fn read_u32(&self, paddr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(paddr, &mut b)?;
        Some(u32::from_le_bytes(b))
    }
    pub fn write_u32(&self, paddr: u64, v: u32) -> Option<()> {
        self.write(paddr, &v.to_le_bytes())
    }
    /// Reads `N` consecutive little-endian 64-bit words.
    pub fn read_words<const N: usize>(&self, paddr: u64) -> Option<[u64; N]> {
        let a = self.lock();
        let mut out = [0u64; N];
        for (i, w) in out.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            a.read(paddr + 8 * i as u64, &mut b)?;
            *w = u64::from_le_bytes(b);
        }
        Some(out)
    }
    /// Writes consecutive little-endian 64-bit words.
    pub fn write_words(&self, paddr: u64, words: &[u64]) -> Option<()> {
        let mut a = self.lock();
        a.offset(paddr, words.len() * 8)?;
        for (i, w) in words.iter().enumerate() {
            a.write(paddr + 8 * i as u64, &w.to_le_bytes())?;
        }
        Some(())
    }
    /// Host pointer for a physical address (as a `DmaBlock` would carry).
    pub fn vaddr_of(&self, paddr: u64) -> Option<*mut u8> {
        let a = self.lock();
        let off = a.offset(paddr, 1)?;
        // SAFETY: off < size, so the result stays inside the host buffer.
        Some(unsafe { a.host.add(off as usize) })
    }
    /// Physical address of a host pointer into the arena.
    pub fn paddr_of(&self, vaddr: *const u8) -> Option<u64> {
        let a = self.lock();
        let off = (vaddr as usize).checked_sub(a.host as usize)? as u64;
        (off < a.size).then(|| a.phys_base + off)
    }

    // ---- coherency ------------------------------------------------------

    /// Switches between a coherent (default) and a non-coherent SMMU's view
    /// of memory (module doc). Turning non-coherency on snapshots the
    /// memory: both views start equal and every line clean. Turning it off
    /// writes back dirty lines, then makes the PoC the one copy (as a clean
    /// and invalidate of everything). [`Smmu::with_options`](crate::Smmu::with_options)
    /// calls this with `false` for `Features { coherent: false, .. }`.
    pub fn set_coherent(&self, coherent: bool) {
        let mut a = self.lock();
        match (coherent, a.nc.is_some()) {
            (false, false) => {
                let n = a.size as usize;
                let mut nc = NonCoherent {
                    poc: vec![0; n],
                    synced: vec![0; n],
                };
                // SAFETY: the host buffer is `n` bytes.
                let host = unsafe { std::slice::from_raw_parts(a.host, n) };
                // Copy only non-zero pages: the zeroed copies stay untouched
                // (and unbacked) where the arena is zero.
                for (i, page) in host.chunks(4096).enumerate() {
                    if page.iter().any(|&b| b != 0) {
                        let r = i * 4096..i * 4096 + page.len();
                        nc.poc[r.clone()].copy_from_slice(page);
                        nc.synced[r].copy_from_slice(page);
                    }
                }
                a.nc = Some(nc);
            }
            (true, true) => {
                let size = a.size;
                a.sync_lines(0, size, true);
                a.nc = None;
            }
            _ => {}
        }
    }
    /// Whether the CPU and the SMMU share one view of memory.
    pub fn is_coherent(&self) -> bool {
        self.lock().nc.is_none()
    }

    /// Cleans the data cache lines covering `[vaddr, vaddr + len)` to the
    /// point of coherency (DC CVAC): dirty lines are written back, whole.
    /// Lines are 64 bytes; the range is rounded outward. Counted, and
    /// otherwise a no-op, when coherent. Panics if the range is not inside
    /// the arena.
    pub fn clean(&self, vaddr: *const u8, len: usize) {
        let mut a = self.lock();
        a.cache.cleans += 1;
        a.cache.clean_bytes += len as u64;
        if let Some((lo, hi)) = a.lines_of(vaddr, len, "clean") {
            a.sync_lines(lo, hi, false);
        }
    }

    /// Cleans and invalidates the data cache lines covering `[vaddr, vaddr
    /// + len)` (DC CIVAC): dirty lines are written back, then the CPU view
    /// of every line is reloaded from the point of coherency. Rounded,
    /// counted and checked as [`clean`](Self::clean).
    pub fn invalidate(&self, vaddr: *const u8, len: usize) {
        let mut a = self.lock();
        a.cache.invalidates += 1;
        a.cache.invalidate_bytes += len as u64;
        if let Some((lo, hi)) = a.lines_of(vaddr, len, "invalidate") {
            a.sync_lines(lo, hi, true);
        }
    }

    /// `(clean calls, invalidate calls)` so far.
    pub fn cache_ops(&self) -> (u64, u64) {
        let c = self.lock().cache;
        (c.cleans, c.invalidates)
    }
    /// Cache maintenance statistics so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.lock().cache
    }

    /// Reads through the CPU's view (what a load through `vaddr` would
    /// return); the same as [`read`](Self::read) when coherent.
    pub fn cpu_read(&self, paddr: u64, buf: &mut [u8]) -> Option<()> {
        let a = self.lock();
        let off = a.offset(paddr, buf.len())?;
        // SAFETY: [off, off+len) is inside the host buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(a.host.add(off as usize), buf.as_mut_ptr(), buf.len())
        };
        Some(())
    }
    /// Writes through the CPU's view (a store through `vaddr`: not seen by
    /// the SMMU until cleaned when non-coherent).
    pub fn cpu_write(&self, paddr: u64, data: &[u8]) -> Option<()> {
        let a = self.lock();
        let off = a.offset(paddr, data.len())?;
        // SAFETY: as in `cpu_read`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), a.host.add(off as usize), data.len())
        };
        Some(())
    }
    pub fn cpu_read_u64(&self, paddr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.cpu_read(paddr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }
    pub fn cpu_write_u64(&self, paddr: u64, v: u64) -> Option<()> {
        self.cpu_write(paddr, &v.to_le_bytes())
    }

    /// A test's "client buffer": zeroed, `align`-aligned physical memory,
    /// outside the DmaAllocator accounting (no budget, no injected failure).
    pub fn alloc_buffer(&self, size: usize, align: usize) -> Option<u64> {
        self.lock()
            .carve(size, align, BlockKind::Buffer)
            .map(|(p, _)| p)
    }
    /// Returns a buffer from [`alloc_buffer`](Self::alloc_buffer).
    pub fn free_buffer(&self, paddr: u64) {
        let mut a = self.lock();
        let off = paddr.wrapping_sub(a.phys_base);
        match a.live.get(&off) {
            Some(b) if b.kind == BlockKind::Buffer => {
                let size = b.size;
                a.release(off, size);
            }
            _ => panic!("free_buffer({paddr:#x}): not a live client buffer"),
        }
    }

    /// Fails the `n`-th `DmaAllocator::alloc` call from now (`n = 1`: the
    /// next one), once.
    pub fn fail_nth_alloc(&self, n: u64) {
        assert!(n >= 1);
        self.lock().plan.nth = Some(n);
    }
    /// After `n` more successful allocations, every allocation fails, until
    /// [`clear_failures`](Self::clear_failures).
    pub fn fail_allocs_after(&self, n: u64) {
        self.lock().plan.after = Some(n);
    }
    /// Caps the bytes live through `DmaAllocator` (`None`: no cap).
    pub fn set_budget(&self, bytes: Option<usize>) {
        self.lock().plan.budget = bytes;
    }
    /// Removes every injected failure and the budget.
    pub fn clear_failures(&self) {
        self.lock().plan = FailPlan::default();
    }
    pub fn stats(&self) -> AllocStats {
        self.lock().stats
    }
    /// Every live block, in address order.
    pub fn live_blocks(&self) -> Vec<LiveBlock> {
        self.lock().live.values().copied().collect()
    }
    /// The live block containing `paddr`, if any.
    pub fn block_containing(&self, paddr: u64) -> Option<LiveBlock> {
        let a = self.lock();
        let off = paddr.checked_sub(a.phys_base)?;
        let (_, b) = a.live.range(..=off).next_back()?;
        (paddr < b.paddr + b.size as u64).then_some(*b)
    }
}

impl Arena {
    fn offset(&self, paddr: u64, len: usize) -> Option<u64> {
        let off = paddr.checked_sub(self.phys_base)?;
        let end = off.checked_add(len as u64)?;
        (end <= self.size).then_some(off)
    }

    /// Physical read: the PoC copy when non-coherent.
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Option<()> {
        let off = self.offset(paddr, buf.len())?;
        if let Some(nc) = &self.nc {
            let off = off as usize;
            buf.copy_from_slice(&nc.poc[off..off + buf.len()]);
            return Some(());
        }
        // SAFETY: [off, off+len) is inside the host buffer (checked above);
        // `buf` is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.host.add(off as usize), buf.as_mut_ptr(), buf.len())
        };
        Some(())
    }

    /// Physical write: the PoC copy when non-coherent.
    fn write(&mut self, paddr: u64, data: &[u8]) -> Option<()> {
        let off = self.offset(paddr, data.len())?;
        if let Some(nc) = &mut self.nc {
            let off = off as usize;
            nc.poc[off..off + data.len()].copy_from_slice(data);
            return Some(());
        }
        // SAFETY: as in `read`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.host.add(off as usize), data.len())
        };
        Some(())
    }

    /// Fills a range in every view (allocation and free synchronise).
    fn fill(&mut self, off: u64, len: u64, byte: u8) {
        // SAFETY: callers pass ranges of the arena (a block being handed out
        // or returned).
        unsafe { std::ptr::write_bytes(self.host.add(off as usize), byte, len as usize) };
        if let Some(nc) = &mut self.nc {
            let r = off as usize..(off + len) as usize;
            nc.poc[r.clone()].fill(byte);
            nc.synced[r].fill(byte);
        }
    }

    /// The line-aligned arena offsets `[lo, hi)` covering a CPU range, or
    /// `None` for an empty one. Panics outside the arena.
    fn lines_of(&self, vaddr: *const u8, len: usize, what: &str) -> Option<(u64, u64)> {
        let start = (vaddr as usize).wrapping_sub(self.host as usize) as u64;
        let ok = start < self.size && (len as u64) <= self.size - start;
        assert!(
            ok,
            "{what}({vaddr:p}, {len:#x}): not inside the arena at {:p} (+{:#x})",
            self.host, self.size
        );
        if len == 0 {
            return None;
        }
        let l = CACHE_LINE as u64;
        Some((start & !(l - 1), align_up(start + len as u64, l)))
    }

    /// Clean (`invalidate` false) or clean-and-invalidate the lines in
    /// `[lo, hi)` (line-aligned offsets); nothing when coherent.
    fn sync_lines(&mut self, lo: u64, hi: u64, invalidate: bool) {
        let host = self.host;
        let Some(nc) = &mut self.nc else { return };
        let mut off = lo as usize;
        while off < hi as usize {
            let r = off..off + CACHE_LINE;
            let mut cpu = [0u8; CACHE_LINE];
            // SAFETY: `r` is inside the host buffer (lines_of / the whole
            // arena, whose size is a multiple of the line size).
            unsafe { std::ptr::copy_nonoverlapping(host.add(off), cpu.as_mut_ptr(), CACHE_LINE) };
            if cpu[..] != nc.synced[r.clone()] {
                if nc.poc[r.clone()] != nc.synced[r.clone()] {
                    self.cache.lost_poc_writes += 1;
                }
                nc.poc[r.clone()].copy_from_slice(&cpu);
                nc.synced[r.clone()].copy_from_slice(&cpu);
                self.cache.lines_written_back += 1;
            }
            if invalidate {
                // SAFETY: as above; `poc` is a distinct allocation.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        nc.poc[r.clone()].as_ptr(),
                        host.add(off),
                        CACHE_LINE,
                    )
                };
                nc.synced[r.clone()].copy_from_slice(&nc.poc[r]);
            }
            off += CACHE_LINE;
        }
    }

    /// First fit, physical alignment (== virtual alignment, see module doc).
    fn carve(&mut self, size: usize, align: usize, kind: BlockKind) -> Option<(u64, *mut u8)> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let len = align_up(size as u64, MIN_BLOCK);
        let align = (align as u64).max(MIN_BLOCK);
        let mut pick = None;
        for (&off, &flen) in &self.free {
            let start = align_up(self.phys_base + off, align) - self.phys_base;
            if start + len <= off + flen {
                pick = Some((off, flen, start));
                break;
            }
        }
        let (off, flen, start) = pick?;
        self.free.remove(&off);
        if start > off {
            self.free.insert(off, start - off);
        }
        if start + len < off + flen {
            self.free.insert(start + len, off + flen - (start + len));
        }
        self.fill(start, len, 0);
        let paddr = self.phys_base + start;
        self.live.insert(
            start,
            LiveBlock {
                paddr,
                size: len as usize,
                kind,
            },
        );
        // SAFETY: start < size.
        Some((paddr, unsafe { self.host.add(start as usize) }))
    }

    fn release(&mut self, off: u64, len: usize) {
        self.live.remove(&off);
        let mut start = off;
        let mut len = len as u64;
        if let Some(p) = self.poison {
            self.fill(start, len, p);
        }
        // Coalesce with the neighbours.
        if let Some((&poff, &plen)) = self.free.range(..start).next_back() {
            if poff + plen == start {
                self.free.remove(&poff);
                start = poff;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nlen;
        }
        self.free.insert(start, len);
    }
}

impl DmaAllocator for PhysMem {
    type Cache = PhysMem;
    fn cache(&self) -> Option<PhysMem> {
        Some(self.clone())
    }
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory> {
        let mut a = self.lock();
        let mut fail = false;
        if let Some(n) = a.plan.nth {
            if n <= 1 {
                a.plan.nth = None;
                fail = true;
            } else {
                a.plan.nth = Some(n - 1);
            }
        }
        if a.plan.after == Some(0) {
            fail = true;
        }
        let rounded = align_up(size as u64, MIN_BLOCK) as usize;
        if let Some(b) = a.plan.budget {
            if a.stats.live_bytes + rounded > b {
                fail = true;
            }
        }
        let got = if fail {
            None
        } else {
            a.carve(size, align, BlockKind::Dma)
        };
        match got {
            None => {
                a.stats.failures += 1;
                Err(OutOfMemory)
            }
            Some((paddr, vaddr)) => {
                if let Some(n) = a.plan.after {
                    a.plan.after = Some(n.saturating_sub(1));
                }
                a.stats.allocs += 1;
                a.stats.live_bytes += rounded;
                a.stats.peak_bytes = a.stats.peak_bytes.max(a.stats.live_bytes);
                Ok(DmaBlock { vaddr, paddr, size })
            }
        }
    }

    fn free(&mut self, block: DmaBlock) {
        let mut a = self.lock();
        let off = block.paddr.wrapping_sub(a.phys_base);
        let ok = matches!(a.live.get(&off), Some(b) if b.kind == BlockKind::Dma
            && align_up(block.size as u64, MIN_BLOCK) == b.size as u64
            && block.vaddr as usize == a.host as usize + off as usize);
        if !ok {
            drop(a);
            panic!("DmaAllocator::free of a block this allocator did not hand out (or freed twice): {block:?}");
        }
        let len = a.live[&off].size;
        a.stats.frees += 1;
        a.stats.live_bytes -= len;
        a.release(off, len);
    }
}

impl iommu_server::hal::CacheMaintenance for PhysMem {
    fn clean(&self, vaddr: *const u8, len: usize) {
        PhysMem::clean(self, vaddr, len)
    }
    fn invalidate(&self, vaddr: *const u8, len: usize) {
        PhysMem::invalidate(self, vaddr, len)
    }
}
