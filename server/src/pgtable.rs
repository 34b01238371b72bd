//! ARM VMSAv8-64 stage-1 I/O page tables: 4 KiB granule, 48-bit input,
//! levels 0..=3 (ARM DDI 0487, D8 "The AArch64 Virtual Memory System
//! Architecture"; used by the SMMU through the CD, SMMUv3 3.4 and 5.4).
//!
//! Leaf sizes are chosen automatically: 1 GiB blocks at level 1, 2 MiB
//! blocks at level 2, 4 KiB pages at level 3. Levels 0..=2 tables are
//! 8 KiB blocks: the 4 KiB hardware table followed by a 4 KiB shadow array
//! with the virtual addresses of the child tables (the SMMU never reads it).
//! Level-3 tables are plain 4 KiB blocks.
//!
//! This module only edits memory. Invalidation is gathered into a [`Gather`]
//! that the caller turns into TLBI commands ([`crate::Smmu::unmap`]).

use crate::barrier;
use crate::cd::{MAIR_IDX_CACHE, MAIR_IDX_DEV, MAIR_IDX_NC};
use crate::dma;
use crate::error::{Error, Result};
use crate::hal::{CacheMaintenance, DmaAllocator, DmaBlock, NoCache};
use crate::regs::{field, genmask, prep};

/// The translation granule.
pub const GRANULE: u64 = 4096;
/// Input address bits (T0SZ = 16).
pub const IAS_BITS: u32 = 48;
/// Largest IOVA + 1.
pub const IOVA_LIMIT: u64 = 1 << IAS_BITS;
const ENTRIES: usize = 512;
/// A table's second half (levels 0-2) shadows each table entry with the
/// child's virtual address in these bits, and in the bits above
/// ([`COUNT_SHIFT`]) the number of valid entries in that child: an unmap
/// then knows a table became empty without scanning its 512 entries.
const SHADOW_VADDR: u64 = (1 << 48) - 1;
const COUNT_SHIFT: u32 = 48;
const SHIFT: [u32; 4] = [39, 30, 21, 12];

/// Descriptor bit 0: valid.
pub const PTE_VALID: u64 = 1 << 0;
/// Descriptor bit 1: table (levels 0..=2) or page (level 3); 0 = block.
pub const PTE_TYPE: u64 = 1 << 1;
/// AttrIndx `[4:2]`: index into the CD's MAIR.
pub const PTE_ATTRINDX: u64 = genmask(4, 2);
/// AP`[1]` (bit 6): unprivileged access allowed.
pub const PTE_AP_UNPRIV: u64 = 1 << 6;
/// AP`[2]` (bit 7): read-only.
pub const PTE_AP_RDONLY: u64 = 1 << 7;
/// SH `[9:8]`: 3 = inner shareable.
pub const PTE_SH_IS: u64 = 3 << 8;
/// SH = outer shareable.
pub const PTE_SH_OS: u64 = 2 << 8;
/// AF (bit 10): access flag.
pub const PTE_AF: u64 = 1 << 10;
/// nG (bit 11): not global (ASID-tagged).
pub const PTE_NG: u64 = 1 << 11;
/// Output address `[47:12]`.
pub const PTE_ADDR: u64 = genmask(47, 12);
/// PXN (bit 53) and UXN/XN (bit 54).
pub const PTE_PXN: u64 = 1 << 53;
pub const PTE_UXN: u64 = 1 << 54;

/// Access permissions and memory type of a mapping (like Linux `IOMMU_*` prot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Perms(pub u8);

impl Perms {
    /// Device may read.
    pub const READ: Perms = Perms(1 << 0);
    /// Device may write (stage 1 cannot express write-only: implies READ).
    pub const WRITE: Perms = Perms(1 << 1);
    /// Instruction fetch allowed (else UXN = PXN = 1).
    pub const EXEC: Perms = Perms(1 << 2);
    /// Privileged only (AP`[1]` = 0); else unprivileged and privileged.
    pub const PRIV: Perms = Perms(1 << 3);
    /// Device memory (MAIR index Device-nGnRE) instead of normal write-back.
    pub const DEVICE: Perms = Perms(1 << 4);
    /// READ | WRITE.
    pub const RW: Perms = Perms(0b11);

    /// Whether every flag of `o` is set.
    pub const fn contains(self, o: Perms) -> bool {
        self.0 & o.0 == o.0
    }
    /// Union.
    pub const fn union(self, o: Perms) -> Perms {
        Perms(self.0 | o.0)
    }
}

impl core::ops::BitOr for Perms {
    type Output = Perms;
    fn bitor(self, o: Perms) -> Perms {
        self.union(o)
    }
}

/// Leaf descriptor attribute bits for `p` (without address and type bits).
pub fn pte_attrs(p: Perms) -> u64 {
    let mut pte = PTE_AF | PTE_NG | PTE_SH_IS;
    let idx = if p.contains(Perms::DEVICE) {
        MAIR_IDX_DEV
    } else {
        MAIR_IDX_CACHE
    };
    pte |= prep(idx as u64, 4, 2);
    if !p.contains(Perms::WRITE) {
        pte |= PTE_AP_RDONLY;
    }
    if !p.contains(Perms::PRIV) {
        pte |= PTE_AP_UNPRIV;
    }
    if !p.contains(Perms::EXEC) {
        pte |= PTE_UXN | PTE_PXN;
    }
    pte
}

/// The permissions a leaf descriptor grants (inverse of [`pte_attrs`];
/// READ is always set).
pub fn pte_perms(pte: u64) -> Perms {
    let mut p = Perms::READ;
    if pte & PTE_AP_RDONLY == 0 {
        p = p | Perms::WRITE;
    }
    if pte & PTE_AP_UNPRIV == 0 {
        p = p | Perms::PRIV;
    }
    if pte & (PTE_UXN | PTE_PXN) == 0 {
        p = p | Perms::EXEC;
    }
    if field(pte, 4, 2) == MAIR_IDX_DEV as u64 {
        p = p | Perms::DEVICE;
    }
    p
}

/// Bytes mapped by one leaf at `level` (1, 2 or 3).
pub const fn level_size(level: usize) -> u64 {
    1 << SHIFT[level]
}

fn idx(va: u64, level: usize) -> usize {
    ((va >> SHIFT[level]) as usize) & (ENTRIES - 1)
}

fn table_size(level: usize) -> usize {
    if level < 3 {
        8192
    } else {
        4096
    }
}

fn is_table(desc: u64, level: usize) -> bool {
    level < 3 && desc & 3 == 3
}

/// Leaf TLB invalidations still owed for a change, and table memory that may
/// only be freed after they completed.
#[derive(Debug, Default)]
pub struct Gather {
    /// Lowest and highest+1 IOVA of removed leaves (empty if start >= end).
    pub start: u64,
    pub end: u64,
    /// Removed leaves (IOVA, level), up to [`GATHER_LEAVES`]; see `overflow`.
    pub leaves: heapless::Vec<(u64, u8), GATHER_LEAVES>,
    /// More leaves were removed than `leaves` holds.
    pub overflow: bool,
    /// Table entries were removed: walk caches must be invalidated as well
    /// (TLBI with Leaf = 0).
    pub tables_removed: bool,
    /// Bit `n` set: a leaf (or a block replaced by a table) at level `n`
    /// was removed; the TLBI TTL hint may name the level only if it is the
    /// only one.
    pub levels: u8,
    /// Unlinked tables waiting for the invalidation to complete.
    pub free_list: heapless::Vec<(DmaBlock, u8), GATHER_TABLES>,
}

/// Leaves a [`Gather`] remembers individually.
pub const GATHER_LEAVES: usize = 32;
/// Tables a [`Gather`] holds before it must be flushed.
pub const GATHER_TABLES: usize = 16;

impl Gather {
    /// Empty again, for reuse: a fresh `Gather` is about 1 KiB to clear,
    /// more than a single-page unmap costs otherwise. A gather whose flush
    /// failed keeps everything: its tables are unlinked but may still be
    /// walked, so they wait (still counted in the table's size) for the
    /// next flush, which invalidates their ranges too.
    pub fn reset(&mut self) {
        if self.free_list.is_empty() {
            self.reset_ranges();
        }
    }

    /// Whether there is nothing to invalidate.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end && !self.tables_removed
    }

    fn add_leaf(&mut self, va: u64, level: usize) {
        self.add_span(va, va + level_size(level), level);
        if self.leaves.push((va, level as u8)).is_err() {
            self.overflow = true;
        }
    }

    /// The range part of [`Self::add_leaf`] for leaves at `level` spanning
    /// `[start, end)` (the caller lists them in `leaves`).
    fn add_span(&mut self, start: u64, end: u64, level: usize) {
        self.levels |= 1 << level;
        if self.start >= self.end {
            self.start = start;
            self.end = end;
        } else {
            self.start = self.start.min(start);
            self.end = self.end.max(end);
        }
    }

    /// Forgets everything except the tables (after invalidation).
    fn reset_ranges(&mut self) {
        self.start = 0;
        self.end = 0;
        self.leaves.clear();
        self.overflow = false;
        self.tables_removed = false;
        self.levels = 0;
    }

    /// The level all removed leaves were at, if there is exactly one (for
    /// the TTL hint; 4.4.1 "TTL").
    pub fn leaf_level(&self) -> Option<u8> {
        if self.levels.count_ones() == 1 && !self.tables_removed {
            Some(self.levels.trailing_zeros() as u8)
        } else {
            None
        }
    }
}

/// Where a page-table walk stopped ([`IoPageTable::walk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// 0-3: the level of the entry the walk ended at.
    pub level: u8,
    /// That entry if it is a leaf (a 4 KiB page at level 3, a block at
    /// level 1 or 2); 0 if it is invalid (or the address is out of range).
    pub descriptor: u64,
}

impl Walk {
    /// Whether the walk found a translation.
    pub fn mapped(&self) -> bool {
        self.descriptor & PTE_VALID != 0
    }
    /// What the leaf grants (empty if none).
    pub fn perms(&self) -> Perms {
        if self.mapped() {
            pte_perms(self.descriptor)
        } else {
            Perms(0)
        }
    }
}

/// Called to invalidate everything a [`Gather`] describes and wait for it
/// (TLBI… + CMD_SYNC), before its tables are freed.
pub type FlushFn<'a> = &'a mut dyn FnMut(&Gather) -> Result<()>;

/// One domain's stage-1 page table. With a [`CacheMaintenance`] (an SMMU
/// that does not snoop the CPU's caches) every descriptor written is
/// cleaned to memory before anything makes the SMMU look (a link above it,
/// an invalidation, the end of the map), and leaves map memory
/// non-cacheable, outer shareable.
#[derive(Debug)]
pub struct IoPageTable<C = NoCache> {
    root: DmaBlock,
    /// Table blocks in use, including the root (for quotas).
    pages: u32,
    /// Bytes of table memory in use.
    bytes: usize,
    oas_bits: u8,
    /// Replace a live block by a table only through an invalid entry and a
    /// completed TLBI (break-before-make): the SMMU lacks BBML level 2.
    break_before_make: bool,
    cache: Option<C>,
}

impl IoPageTable<NoCache> {
    /// Allocates an empty level-0 table for a coherent SMMU. Output
    /// addresses must fit `oas_bits`. `bbml`: SMMU_IDR3.BBML, which decides
    /// how a block is split ([`Self::unmap`]).
    pub fn new<A: DmaAllocator>(alloc: &mut A, oas_bits: u8, bbml: u8) -> Result<Self> {
        Self::with_cache(alloc, oas_bits, bbml, None)
    }
}

impl<C: CacheMaintenance> IoPageTable<C> {
    /// As [`IoPageTable::new`]; `cache` for an SMMU that does not snoop the
    /// CPU's caches.
    pub fn with_cache<A: DmaAllocator>(
        alloc: &mut A,
        oas_bits: u8,
        bbml: u8,
        cache: Option<C>,
    ) -> Result<Self> {
        let root = alloc.alloc(table_size(0), 4096)?;
        Ok(IoPageTable {
            root,
            pages: 1,
            bytes: table_size(0),
            oas_bits: oas_bits.min(48),
            break_before_make: bbml < 2,
            cache,
        })
    }

    /// Writes descriptor `i` of `t` (cleaned for a non-coherent SMMU).
    #[inline(always)]
    fn put(&self, t: &DmaBlock, i: usize, v: u64) {
        dma::write_u64(t, i, v);
        if let Some(c) = &self.cache {
            c.clean(t.vaddr.wrapping_add(i * 8), 8);
        }
    }

    /// Cleans descriptors `range` of `t` (written with `dma::write_u64`).
    #[inline(always)]
    fn clean_range(&self, t: &DmaBlock, range: core::ops::Range<usize>) {
        if let Some(c) = &self.cache {
            if !range.is_empty() {
                c.clean(t.vaddr.wrapping_add(range.start * 8), range.len() * 8);
            }
        }
    }

    /// Leaf attributes for `p`: write-back inner-shareable memory for a
    /// coherent SMMU; non-cacheable outer-shareable for one that does not
    /// snoop (Linux maps without IOMMU_CACHE so).
    fn leaf_attrs(&self, p: Perms) -> u64 {
        let a = pte_attrs(p);
        if self.cache.is_none() || p.contains(Perms::DEVICE) {
            return a;
        }
        (a & !(PTE_SH_IS | prep(7, 4, 2))) | PTE_SH_OS | prep(MAIR_IDX_NC as u64, 4, 2)
    }

    /// TTB0 for the CD.
    pub fn ttbr(&self) -> u64 {
        self.root.paddr
    }

    /// Table blocks in use (including the root).
    pub fn table_pages(&self) -> u32 {
        self.pages
    }

    /// Bytes of DMA memory the tables use.
    pub fn table_bytes(&self) -> usize {
        self.bytes
    }

    /// The tables' memory in 4 KiB pages: the page-table quota's unit (a
    /// level 0-2 table is 8 KiB with its shadow of child addresses, a leaf
    /// table 4 KiB), so a quota bounds the memory a client really holds.
    pub fn memory_pages(&self) -> u32 {
        self.bytes.div_ceil(4096) as u32
    }

    #[inline(always)]
    fn child(&self, t: &DmaBlock, i: usize, level: usize) -> DmaBlock {
        let desc = dma::read_u64(t, i);
        DmaBlock {
            vaddr: (dma::read_u64(t, ENTRIES + i) & SHADOW_VADDR) as usize as *mut u8,
            paddr: desc & PTE_ADDR,
            size: table_size(level + 1),
        }
    }

    /// Points entry `i` of `t` at the table `child`, which holds `count`
    /// valid entries (already cleaned, for a non-coherent SMMU).
    fn link(&self, t: &DmaBlock, i: usize, child: &DmaBlock, count: u64) {
        let vaddr = child.vaddr as usize as u64;
        debug_assert!(vaddr & !SHADOW_VADDR == 0, "table above 2^48");
        dma::write_u64(
            t,
            ENTRIES + i,
            (vaddr & SHADOW_VADDR) | count << COUNT_SHIFT,
        );
        // The child's contents must be visible before the pointer to it.
        barrier::dma_wmb();
        self.put(t, i, (child.paddr & PTE_ADDR) | PTE_TYPE | PTE_VALID);
    }

    /// Valid entries of the table that entry `i` of `t` points to.
    fn count(t: &DmaBlock, i: usize) -> u64 {
        dma::read_u64(t, ENTRIES + i) >> COUNT_SHIFT
    }

    /// Adds `delta` (may be negative) to that count; `slot` is `(t, i)`, or
    /// `None` for the root, which no count describes.
    #[inline(always)]
    fn add_count(slot: Option<(DmaBlock, usize)>, delta: i64) {
        if let Some((t, i)) = slot {
            let w = dma::read_u64(&t, ENTRIES + i);
            let n = ((w >> COUNT_SHIFT) as i64 + delta).clamp(0, ENTRIES as i64) as u64;
            dma::write_u64(&t, ENTRIES + i, (w & SHADOW_VADDR) | n << COUNT_SHIFT);
        }
    }

    fn check_range(&self, iova: u64, len: u64) -> Result<()> {
        if len == 0 || !iova.is_multiple_of(GRANULE) || !len.is_multiple_of(GRANULE) {
            return Err(Error::Misaligned);
        }
        match iova.checked_add(len) {
            Some(end) if end <= IOVA_LIMIT => Ok(()),
            _ => Err(Error::OutOfRange),
        }
    }

    /// Translates `iova`: the physical address and the leaf's permissions.
    /// The walk the SMMU does for `iova`, for a person finding out why a
    /// DMA faulted: the level it stops at and the descriptor there (a
    /// leaf, or an invalid entry: table descriptors, which hold the
    /// server's own table addresses, are not returned).
    pub fn walk(&self, iova: u64) -> Walk {
        let mut t = self.root;
        let mut level = 0;
        if iova < IOVA_LIMIT {
            while level < 4 {
                let i = idx(iova, level);
                let desc = dma::read_u64(&t, i);
                if desc & PTE_VALID != 0 && is_table(desc, level) {
                    t = self.child(&t, i, level);
                    level += 1;
                    continue;
                }
                // No level-0 blocks with 4 KiB granules: an invalid entry.
                let leaf = desc & PTE_VALID != 0 && level > 0;
                return Walk {
                    level: level as u8,
                    descriptor: if leaf { desc } else { 0 },
                };
            }
        }
        Walk {
            level: level as u8,
            descriptor: 0,
        }
    }

    pub fn iova_to_phys(&self, iova: u64) -> Option<(u64, Perms)> {
        if iova >= IOVA_LIMIT {
            return None;
        }
        let mut t = self.root;
        for level in 0..4 {
            let desc = dma::read_u64(&t, idx(iova, level));
            if desc & PTE_VALID == 0 {
                return None;
            }
            if is_table(desc, level) {
                t = self.child(&t, idx(iova, level), level);
                continue;
            }
            if level == 0 {
                return None; // no level-0 blocks with 4 KiB granules
            }
            let off = iova & (level_size(level) - 1);
            return Some((
                (desc & PTE_ADDR & !(level_size(level) - 1)) + off,
                pte_perms(desc),
            ));
        }
        None
    }

    /// Whether any leaf lies in `[start, end)` below table `t` at `level`.
    fn any_mapped(&self, t: &DmaBlock, level: usize, start: u64, end: u64) -> bool {
        let base = start & !(level_size(level) * ENTRIES as u64 - 1);
        for i in idx(start, level)..=idx(end - 1, level) {
            let desc = dma::read_u64(t, i);
            if desc & PTE_VALID == 0 {
                continue;
            }
            if !is_table(desc, level) {
                return true;
            }
            let va = base + ((i as u64) << SHIFT[level]);
            let (s, e) = (start.max(va), end.min(va + level_size(level)));
            if self.any_mapped(&self.child(t, i, level), level + 1, s, e) {
                return true;
            }
        }
        false
    }

    /// Whether any part of `[iova, iova + len)` is mapped.
    pub fn is_mapped(&self, iova: u64, len: u64) -> bool {
        match iova.checked_add(len) {
            Some(end) if len > 0 && end <= IOVA_LIMIT => self.any_mapped(&self.root, 0, iova, end),
            _ => false,
        }
    }

    /// Maps `[iova, iova + len)` to `[paddr, paddr + len)`.
    ///
    /// Checks the whole range first: any existing mapping is
    /// [`Error::Overlap`] and nothing changes. Issues no invalidation (the
    /// range was invalid, and invalid entries are not cached). If table
    /// memory runs out half-way, what was mapped is removed again (through
    /// `flush`, since the SMMU may have walked it) and [`Error::NoMemory`]
    /// is returned. See [`Self::map_in`] for a caller that keeps a gather.
    pub fn map<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        iova: u64,
        paddr: u64,
        len: u64,
        perms: Perms,
        flush: FlushFn<'_>,
    ) -> Result<()> {
        self.map_in(
            alloc,
            iova,
            paddr,
            len,
            perms,
            &mut Gather::default(),
            flush,
        )
    }

    /// As [`Self::map`], undoing a failure through `g` (the domain's
    /// gather, see [`Gather::reset`]): when the undo's invalidation fails,
    /// the tables it unlinked stay in `g` for the next flush, and that
    /// error is returned instead of `NoMemory` (the SMMU may still hold
    /// what was written).
    #[allow(clippy::too_many_arguments)]
    pub fn map_in<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        iova: u64,
        paddr: u64,
        len: u64,
        perms: Perms,
        g: &mut Gather,
        flush: FlushFn<'_>,
    ) -> Result<()> {
        self.check_range(iova, len)?;
        if !paddr.is_multiple_of(GRANULE) {
            return Err(Error::Misaligned);
        }
        match paddr.checked_add(len) {
            Some(e) if e <= (1u64 << self.oas_bits) => {}
            _ => return Err(Error::OutOfRange),
        }
        if !perms.contains(Perms::READ) && !perms.contains(Perms::WRITE) {
            return Err(Error::Unsupported);
        }
        let attrs = self.leaf_attrs(perms);
        if let Some(r) = self.map_in_leaf_table(iova, paddr, len, attrs) {
            return r;
        }
        // One leaf (a 4 KiB page or one block): `map_one`'s walk finds any
        // overlap itself and then links nothing, so no separate walk first.
        let one_leaf = (1..=3)
            .any(|l| len == level_size(l) && iova.is_multiple_of(len) && paddr.is_multiple_of(len));
        if !one_leaf && self.any_mapped(&self.root, 0, iova, iova + len) {
            return Err(Error::Overlap);
        }
        let mut done = 0u64;
        while done < len {
            let (va, pa, rem) = (iova + done, paddr + done, len - done);
            let level = (1..=3)
                .find(|&l| {
                    let s = level_size(l);
                    va.is_multiple_of(s) && pa.is_multiple_of(s) && rem >= s
                })
                .unwrap_or(3);
            let mut r = self.map_one(alloc, va, pa, level, attrs);
            if r.is_ok() {
                done += level_size(level);
                if level == 3 {
                    // The rest of this leaf table can only hold 4 KiB
                    // leaves (no block starts before its end): write them
                    // without walking from the root for each.
                    let (n, fill) = self.fill_leaves(iova + done, paddr + done, len - done, attrs);
                    done += n;
                    r = fill;
                }
            }
            if let Err(e) = r {
                if done > 0 {
                    // Undo: the range holds exactly the leaves just written.
                    g.reset();
                    let cleared = self.clear_range(alloc, iova, iova + done, g, flush);
                    let finished = self.finish(alloc, g, flush);
                    cleared.and(finished)?;
                }
                return Err(e);
            }
        }
        barrier::dma_wmb();
        Ok(())
    }

    /// The level-3 table holding all of `[iova, iova + len)`, if the range
    /// lies within one 2 MiB region smaller than it (so it takes 4 KiB
    /// leaves only) and the walk reaches that table; with the parent entry
    /// and the range's first index in it.
    #[inline(always)]
    fn leaf_table_of(&self, iova: u64, len: u64) -> Option<(DmaBlock, (DmaBlock, usize), usize)> {
        let region = level_size(2);
        if len >= region || iova / region != (iova + len - 1) / region {
            return None;
        }
        let (t, slot) = self.table_for(iova, 3)?;
        Some((t, slot, idx(iova, 3)))
    }

    /// [`Self::map`] of a checked range inside one existing level-3 table:
    /// one walk, no table to allocate, nothing to undo (every entry is
    /// checked before the first is written). `None` if the range is not
    /// such a range (the general path then maps it).
    fn map_in_leaf_table(&self, iova: u64, paddr: u64, len: u64, attrs: u64) -> Option<Result<()>> {
        let (t, slot, first) = self.leaf_table_of(iova, len)?;
        let n = (len / GRANULE) as usize;
        if dma::any_set(&t, first..first + n, PTE_VALID) {
            return Some(Err(Error::Overlap));
        }
        let leaf = attrs | PTE_TYPE | PTE_VALID;
        dma::write_each(&t, first..first + n, |k| {
            leaf | ((paddr + k * GRANULE) & PTE_ADDR)
        });
        self.clean_range(&t, first..first + n);
        Self::add_count(Some(slot), n as i64);
        barrier::dma_wmb();
        Some(Ok(()))
    }

    /// [`Self::unmap`] of a checked range inside one existing level-3 table
    /// that keeps other leaves (so no table is freed and no block split):
    /// one walk. `None` if the range is not such a range.
    fn unmap_in_leaf_table(&self, iova: u64, len: u64, g: &mut Gather) -> Option<Result<u64>> {
        let (t, slot, first) = self.leaf_table_of(iova, len)?;
        let n = (len / GRANULE) as usize;
        let valid = (first..first + n)
            .filter(|&i| dma::read_u64(&t, i) & PTE_VALID != 0)
            .count() as u64;
        if valid == 0 {
            return Some(Err(Error::NotMapped));
        }
        if valid >= Self::count(&slot.0, slot.1) {
            // The table becomes empty: the general path frees it.
            return None;
        }
        let base = iova & !(level_size(3) * ENTRIES as u64 - 1);
        self.clear_leaves(&t, base, first..first + n, g);
        Self::add_count(Some(slot), -(valid as i64));
        Some(Ok(valid * GRANULE))
    }

    /// [`Self::unmap`] of exactly one valid level-2 entry, a 2 MiB block or
    /// a leaf table the range covers whole, in a level-2 table that keeps
    /// other entries (so only that entry changes): one walk, one write,
    /// where the general path recurses from the root. The leaf table goes
    /// as [`Self::clear`] lets it go, listed for freeing after the
    /// invalidation. `None` if the range is not such a range.
    fn unmap_level2_entry(&self, iova: u64, len: u64, g: &mut Gather) -> Option<Result<u64>> {
        if len != level_size(2) || !iova.is_multiple_of(len) {
            return None;
        }
        let (t, slot) = self.table_for(iova, 2)?;
        let i = idx(iova, 2);
        let desc = dma::read_u64(&t, i);
        if desc & PTE_VALID == 0 || Self::count(&slot.0, slot.1) < 2 {
            return None;
        }
        let removed = if is_table(desc, 2) {
            if Self::count(&t, i) == 0 || g.free_list.is_full() {
                return None;
            }
            self.unlink_leaf_table(&t, i, self.child(&t, i, 2), iova, g)
        } else {
            self.put(&t, i, 0);
            g.add_leaf(iova, 2);
            len
        };
        Self::add_count(Some(slot), -1);
        Some(Ok(removed))
    }

    /// Unlinks `child`, the leaf table entry `i` of level-2 table `t`
    /// points at (it maps `[va, va + 2 MiB)`), as a unit: one write, its
    /// 2 MiB listed for one range invalidation with the walk caches, the
    /// table queued in `g` to be freed after it (the caller made room).
    /// Returns the bytes its leaves mapped; the caller fixes `t`'s count.
    #[inline(always)]
    fn unlink_leaf_table(
        &self,
        t: &DmaBlock,
        i: usize,
        child: DmaBlock,
        va: u64,
        g: &mut Gather,
    ) -> u64 {
        let removed = Self::count(t, i) * GRANULE;
        self.put(t, i, 0);
        g.tables_removed = true;
        g.add_span(va, va + level_size(2), 3);
        // Not listed leaf by leaf: without range invalidation the whole
        // ASID goes.
        g.overflow = true;
        let _ = g.free_list.push((child, 3));
        removed
    }

    /// Clears the valid 4 KiB leaves among entries `range` of the level-3
    /// table `t` (which maps from `base`), listing them in `g` with one
    /// range update for all; returns how many. The caller fixes the count.
    #[inline(always)]
    fn clear_leaves(
        &self,
        t: &DmaBlock,
        base: u64,
        range: core::ops::Range<usize>,
        g: &mut Gather,
    ) -> u64 {
        let mut cleared = 0u64;
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for i in range {
            if dma::read_u64(t, i) & PTE_VALID != 0 {
                self.put(t, i, 0);
                let va = base + ((i as u64) << SHIFT[3]);
                lo = lo.min(va);
                hi = va + GRANULE;
                if !g.overflow && g.leaves.push((va, 3)).is_err() {
                    g.overflow = true;
                }
                cleared += 1;
            }
        }
        if cleared > 0 {
            g.add_span(lo, hi, 3);
        }
        cleared
    }

    /// The table at `level` (≥ 1) on the walk of `va`, if the walk reaches
    /// one, and the parent entry that points to it.
    #[inline(always)]
    fn table_for(&self, va: u64, level: usize) -> Option<(DmaBlock, (DmaBlock, usize))> {
        let mut t = self.root;
        let mut slot = None;
        for l in 0..level {
            let i = idx(va, l);
            let desc = dma::read_u64(&t, i);
            if desc & PTE_VALID == 0 || !is_table(desc, l) {
                return None;
            }
            slot = Some((t, i));
            t = self.child(&t, i, l);
        }
        slot.map(|s| (t, s))
    }

    /// Writes 4 KiB leaves for `[va, va + len)` into the existing level-3
    /// table of `va`, up to that table's end (nothing if `va` starts a new
    /// table or has none). Returns the bytes written, and `Overlap` if it
    /// stopped at a valid entry (the caller undoes what was written).
    fn fill_leaves(&self, va: u64, pa: u64, len: u64, attrs: u64) -> (u64, Result<()>) {
        let first = idx(va, 3);
        if len == 0 || first == 0 {
            return (0, Ok(()));
        }
        let Some((t, slot)) = self.table_for(va, 3) else {
            return (0, Ok(()));
        };
        let mut done = 0u64;
        let mut result = Ok(());
        for i in first..ENTRIES {
            if done >= len {
                break;
            }
            if dma::read_u64(&t, i) & PTE_VALID != 0 {
                result = Err(Error::Overlap);
                break;
            }
            let leaf = attrs | ((pa + done) & PTE_ADDR) | PTE_TYPE | PTE_VALID;
            dma::write_u64(&t, i, leaf);
            done += GRANULE;
        }
        self.clean_range(&t, first..first + (done / GRANULE) as usize);
        Self::add_count(Some(slot), (done / GRANULE) as i64);
        (done, result)
    }

    /// Writes one leaf at `level`, allocating all missing tables on its path
    /// first (so a failure links nothing).
    fn map_one<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        va: u64,
        pa: u64,
        level: usize,
        attrs: u64,
    ) -> Result<()> {
        // Find how deep the existing path goes.
        let mut t = self.root;
        // The entry pointing to `t` (None: `t` is the root).
        let mut slot = None;
        let mut l = 0;
        while l < level {
            let i = idx(va, l);
            let desc = dma::read_u64(&t, i);
            if desc & PTE_VALID == 0 {
                break;
            }
            if !is_table(desc, l) {
                return Err(Error::Overlap);
            }
            slot = Some((t, i));
            t = self.child(&t, i, l);
            l += 1;
        }
        // Allocate tables for levels l+1..=level.
        let mut fresh: heapless::Vec<DmaBlock, 3> = heapless::Vec::new();
        for nl in (l + 1)..=level {
            match alloc.alloc(table_size(nl), 4096) {
                Ok(b) => {
                    let _ = fresh.push(b);
                }
                Err(_) => {
                    for b in fresh {
                        alloc.free(b);
                    }
                    return Err(Error::NoMemory);
                }
            }
        }
        // Fill from the bottom up, then link the top one.
        let type_bit = if level == 3 { PTE_TYPE } else { 0 };
        let leaf = attrs | (pa & PTE_ADDR) | type_bit | PTE_VALID;
        if fresh.is_empty() {
            let i = idx(va, level);
            if dma::read_u64(&t, i) & PTE_VALID != 0 {
                return Err(Error::Overlap);
            }
            self.put(&t, i, leaf);
            Self::add_count(slot, 1);
            return Ok(());
        }
        let n = fresh.len();
        // Each fresh table holds one entry: the leaf, or the next table.
        self.put(&fresh[n - 1], idx(va, level), leaf);
        for k in (0..n - 1).rev() {
            let nl = l + 1 + k; // level of fresh[k]
            self.link(&fresh[k], idx(va, nl), &fresh[k + 1], 1);
        }
        self.link(&t, idx(va, l), &fresh[0], 1);
        Self::add_count(slot, 1);
        for (k, b) in fresh.iter().enumerate() {
            self.pages += 1;
            self.bytes += table_size(l + 1 + k);
            let _ = b;
        }
        Ok(())
    }

    /// Tables (8 KiB, 4 KiB) a split at boundary `b` would need.
    fn splits_needed(&self, b: u64) -> (usize, usize) {
        if b == 0 || b >= IOVA_LIMIT || b.is_multiple_of(level_size(1)) {
            return (0, 0);
        }
        // On a 2 MiB boundary only a 1 GiB block can straddle `b`: the
        // walk stops at level 1 (the usual unmap of whole 2 MiB ranges).
        let deepest = if b.is_multiple_of(level_size(2)) {
            2
        } else {
            3
        };
        let mut t = self.root;
        for level in 0..deepest {
            let i = idx(b, level);
            let desc = dma::read_u64(&t, i);
            if desc & PTE_VALID == 0 {
                return (0, 0);
            }
            if is_table(desc, level) {
                t = self.child(&t, i, level);
                continue;
            }
            if b.is_multiple_of(level_size(level)) {
                return (0, 0);
            }
            // block at level 1 or 2 covering b
            return if level == 1 {
                (1, !b.is_multiple_of(level_size(2)) as usize)
            } else {
                (0, 1)
            };
        }
        (0, 0)
    }

    /// Splits blocks so that `b` becomes a leaf boundary, using `spare`.
    ///
    /// A block becomes an equivalent table (same output, same attributes).
    /// With BBML level 2 (SMMUv3 3.21.1.2, what QEMU and the model
    /// advertise) the table replaces the live block directly, as Linux
    /// `arm_lpae_split_blk_unmap` does, and the caller's TLBI of the
    /// unmapped range (with the block's level in the TTL hint) also removes
    /// the old block. Without it the SMMU may hold both translations at once
    /// (a TLB conflict), so the block is broken first: entry invalid, TLBI
    /// of the block, CMD_SYNC (`flush`), then the table. DMA to the part of
    /// the block that stays mapped faults during that window.
    ///
    /// On a `flush` failure the block is put back and the error returned;
    /// an earlier split of this call stays (it changed no translation).
    fn split_at(
        &mut self,
        b: u64,
        spare: &mut heapless::Vec<(DmaBlock, usize), 4>,
        g: &mut Gather,
        flush: FlushFn<'_>,
    ) -> Result<()> {
        if b == 0 || b >= IOVA_LIMIT {
            return Ok(());
        }
        let mut t = self.root;
        for level in 0..3 {
            let i = idx(b, level);
            let desc = dma::read_u64(&t, i);
            if desc & PTE_VALID == 0 {
                return Ok(());
            }
            if !is_table(desc, level) {
                if level == 0 || b.is_multiple_of(level_size(level)) {
                    return Ok(());
                }
                let want = table_size(level + 1);
                let Some(pos) = spare.iter().position(|(_, sz)| *sz == want) else {
                    return Ok(()); // cannot happen: counted by splits_needed
                };
                let attrs = desc & !(PTE_ADDR | PTE_TYPE | PTE_VALID);
                let base_pa = desc & PTE_ADDR & !(level_size(level) - 1);
                let sub = level_size(level + 1);
                let type_bit = if level + 1 == 3 { PTE_TYPE } else { 0 };
                let nt = spare[pos].0;
                for k in 0..ENTRIES {
                    let pa = base_pa + k as u64 * sub;
                    dma::write_u64(&nt, k, attrs | pa | type_bit | PTE_VALID);
                }
                self.clean_range(&nt, 0..ENTRIES);
                if self.break_before_make {
                    let base_va = b & !(level_size(level) - 1);
                    self.put(&t, i, 0);
                    barrier::dma_wmb();
                    let mut broken = Gather::default();
                    broken.add_leaf(base_va, level);
                    if let Err(e) = flush(&broken) {
                        self.put(&t, i, desc);
                        return Err(e);
                    }
                }
                spare.swap_remove(pos);
                // Same number of entries in `t` (a block became a table).
                self.link(&t, i, &nt, ENTRIES as u64);
                // The TLB may hold the old block: its level joins the hint.
                g.levels |= 1 << level;
                self.pages += 1;
                self.bytes += want;
            }
            t = self.child(&t, i, level);
        }
        Ok(())
    }

    /// Unmaps everything in `[iova, iova + len)`, splitting blocks that
    /// straddle either end, freeing tables that become empty (after `flush`).
    /// Returns the bytes unmapped; [`Error::NotMapped`] if none were.
    ///
    /// On [`Error::NoMemory`] (no memory for a split) nothing changed. The
    /// leaves removed are left in `g` for the caller to invalidate; tables in
    /// `g.free_list` must be passed to [`Self::finish`] after that.
    pub fn unmap<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        iova: u64,
        len: u64,
        g: &mut Gather,
        flush: FlushFn<'_>,
    ) -> Result<u64> {
        self.check_range(iova, len)?;
        if let Some(r) = self.unmap_in_leaf_table(iova, len, g) {
            return r;
        }
        if let Some(r) = self.unmap_level2_entry(iova, len, g) {
            return r;
        }
        let end = iova + len;
        let (a8, a4) = self.splits_needed(iova);
        let (b8, b4) = self.splits_needed(end);
        if a8 + a4 + b8 + b4 == 0 {
            // No block straddles either end (the usual case: 4 KiB leaves),
            // so `split_at` would find nothing to do. The clear removes
            // nothing and changes nothing if nothing is mapped (no separate
            // walk to find that out first).
            return match self.clear_range(alloc, iova, end, g, flush)? {
                0 => Err(Error::NotMapped),
                n => Ok(n),
            };
        }
        // A block straddles an end, so part of the range is mapped.
        let mut spare: heapless::Vec<(DmaBlock, usize), 4> = heapless::Vec::new();
        for (count, size) in [(a8 + b8, 8192usize), (a4 + b4, 4096)] {
            for _ in 0..count {
                match alloc.alloc(size, 4096) {
                    Ok(b) => {
                        let _ = spare.push((b, size));
                    }
                    Err(_) => {
                        for (b, _) in spare {
                            alloc.free(b);
                        }
                        return Err(Error::NoMemory);
                    }
                }
            }
        }
        let split = self
            .split_at(iova, &mut spare, g, &mut *flush)
            .and_then(|()| self.split_at(end, &mut spare, g, &mut *flush));
        for (b, _) in spare {
            alloc.free(b);
        }
        split?;
        self.clear_range(alloc, iova, end, g, flush)
    }

    /// Removes leaves fully inside `[start, end)` and the tables that become
    /// empty (never the root).
    fn clear_range<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        start: u64,
        end: u64,
        g: &mut Gather,
        flush: FlushFn<'_>,
    ) -> Result<u64> {
        let root = self.root;
        self.clear(alloc, &root, 0, start, end, g, flush, None)
            .map(|(n, _)| n)
    }

    #[allow(clippy::too_many_arguments)]
    fn clear<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        t: &DmaBlock,
        level: usize,
        start: u64,
        end: u64,
        g: &mut Gather,
        flush: FlushFn<'_>,
        slot: Option<(DmaBlock, usize)>,
    ) -> Result<(u64, bool)> {
        let base = start & !(level_size(level) * ENTRIES as u64 - 1);
        if level == 3 {
            // A leaf table: each valid entry in range is a 4 KiB page wholly
            // inside `[start, end)` (both page-aligned), so the general
            // loop's checks reduce to this.
            let cleared = self.clear_leaves(t, base, idx(start, 3)..idx(end - 1, 3) + 1, g);
            Self::add_count(slot, -(cleared as i64));
            let empty = cleared > 0 && slot.is_some_and(|(p, pi)| Self::count(&p, pi) == 0);
            return Ok((cleared * GRANULE, empty));
        }
        let mut removed = 0u64;
        let mut touched = false;
        // Entries of `t` cleared, taken off its count once at the end (also
        // when an error stops the loop, so the count stays exact).
        let mut cleared = 0i64;
        let mut result = Ok(());
        for i in idx(start, level)..=idx(end - 1, level) {
            let desc = dma::read_u64(t, i);
            if desc & PTE_VALID == 0 {
                continue;
            }
            let va = base + ((i as u64) << SHIFT[level]);
            let (s, e) = (start.max(va), end.min(va + level_size(level)));
            if is_table(desc, level) {
                let child = self.child(t, i, level);
                if level == 2 && s == va && e == va + level_size(2) {
                    // A leaf table wholly inside the range goes as a unit:
                    // one write unlinks it, and one range invalidation of
                    // its 2 MiB (walk caches included) covers its leaves,
                    // instead of clearing up to 512 entries one by one (as
                    // Linux's `__arm_lpae_unmap` drops a table entry).
                    if g.free_list.is_full() {
                        if let Err(err) = self.flush_and_free(alloc, g, flush) {
                            result = Err(err);
                            break;
                        }
                    }
                    removed += self.unlink_leaf_table(t, i, child, va, g);
                    cleared += 1;
                    touched = true;
                    continue;
                }
                let (n, empty) =
                    match self.clear(alloc, &child, level + 1, s, e, g, flush, Some((*t, i))) {
                        Ok(r) => r,
                        Err(err) => {
                            result = Err(err);
                            break;
                        }
                    };
                removed += n;
                if empty {
                    // Room first: an empty table left linked (when the flush
                    // fails) is consistent, one unlinked and in no list is
                    // lost.
                    if g.free_list.is_full() {
                        if let Err(err) = self.flush_and_free(alloc, g, flush) {
                            result = Err(err);
                            break;
                        }
                    }
                    self.put(t, i, 0);
                    cleared += 1;
                    touched = true;
                    g.tables_removed = true;
                    let _ = g.free_list.push((child, (level + 1) as u8));
                }
            } else if level > 0 && s == va && e == va + level_size(level) {
                self.put(t, i, 0);
                cleared += 1;
                touched = true;
                g.add_leaf(va, level);
                removed += level_size(level);
            }
        }
        Self::add_count(slot, -cleared);
        result?;
        // The count says whether `t` is empty now (the root never is freed).
        let empty = touched && slot.is_some_and(|(p, pi)| Self::count(&p, pi) == 0);
        Ok((removed, empty))
    }

    fn flush_and_free<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        g: &mut Gather,
        flush: FlushFn<'_>,
    ) -> Result<()> {
        flush(g)?;
        for (b, level) in g.free_list.iter() {
            alloc.free(*b);
            self.pages -= 1;
            self.bytes -= table_size(*level as usize);
        }
        g.free_list.clear();
        g.reset_ranges();
        Ok(())
    }

    /// Invalidates what `g` holds (through `flush`) and frees its tables.
    pub fn finish<A: DmaAllocator>(
        &mut self,
        alloc: &mut A,
        g: &mut Gather,
        flush: FlushFn<'_>,
    ) -> Result<()> {
        if g.is_empty() && g.free_list.is_empty() {
            return Ok(());
        }
        self.flush_and_free(alloc, g, flush)
    }

    /// Frees every table, and those `g` still holds unlinked. The SMMU must
    /// no longer reach them: no CD points here and the ASID was
    /// invalidated.
    pub fn destroy_with<A: DmaAllocator>(self, alloc: &mut A, g: &mut Gather) {
        for (b, _) in g.free_list.iter() {
            alloc.free(*b);
        }
        g.free_list.clear();
        g.reset_ranges();
        self.destroy(alloc);
    }

    /// Frees every table. The SMMU must no longer reach them: no CD points
    /// here and the ASID was invalidated.
    pub fn destroy<A: DmaAllocator>(self, alloc: &mut A) {
        fn free_rec<A: DmaAllocator, C: CacheMaintenance>(
            pt: &IoPageTable<C>,
            alloc: &mut A,
            t: &DmaBlock,
            level: usize,
        ) {
            if level < 3 {
                for i in 0..ENTRIES {
                    let desc = dma::read_u64(t, i);
                    if desc & PTE_VALID != 0 && is_table(desc, level) {
                        let c = pt.child(t, i, level);
                        free_rec(pt, alloc, &c, level + 1);
                    }
                }
            }
            alloc.free(*t);
        }
        let root = self.root;
        free_rec(&self, alloc, &root, 0);
    }

    /// Visits every leaf: `f(iova, paddr, size, perms)`, in IOVA order.
    pub fn for_each_leaf(&self, f: &mut dyn FnMut(u64, u64, u64, Perms)) {
        fn rec<C: CacheMaintenance>(
            pt: &IoPageTable<C>,
            t: &DmaBlock,
            level: usize,
            base: u64,
            f: &mut dyn FnMut(u64, u64, u64, Perms),
        ) {
            for i in 0..ENTRIES {
                let desc = dma::read_u64(t, i);
                if desc & PTE_VALID == 0 {
                    continue;
                }
                let va = base + ((i as u64) << SHIFT[level]);
                if is_table(desc, level) {
                    rec(pt, &pt.child(t, i, level), level + 1, va, f);
                } else if level > 0 {
                    f(va, desc & PTE_ADDR, level_size(level), pte_perms(desc));
                }
            }
        }
        rec(self, &self.root, 0, 0, f);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::dma_pool::DmaPool;
    use std::vec;

    const PAGE: usize = 4096;

    /// Every table's count (in its parent's shadow) equals its valid
    /// entries; returns the number of tables below `t`.
    fn check_counts(pt: &IoPageTable, t: &DmaBlock, level: usize) -> u32 {
        let mut tables = 0;
        for i in 0..ENTRIES {
            let desc = dma::read_u64(t, i);
            if desc & PTE_VALID != 0 && is_table(desc, level) {
                let c = pt.child(t, i, level);
                let valid = (0..ENTRIES)
                    .filter(|&k| dma::read_u64(&c, k) & PTE_VALID != 0)
                    .count() as u64;
                assert_eq!(
                    IoPageTable::<NoCache>::count(t, i),
                    valid,
                    "level {level} entry {i}"
                );
                assert!(valid > 0, "an empty table stayed linked");
                tables += 1 + check_counts(pt, &c, level + 1);
            }
        }
        tables
    }

    #[test]
    fn valid_entry_counts_follow_maps_unmaps_and_splits() {
        let pages = 512;
        let mut backing = vec![0u8; pages * PAGE + PAGE];
        let base = (backing.as_mut_ptr() as usize).next_multiple_of(PAGE);
        // SAFETY: `backing` outlives the pool and is only touched through it.
        let mut pool = unsafe { DmaPool::<8>::new(base, 0x4000_0000, pages * PAGE) };
        let mut pt = IoPageTable::new(&mut pool, 44, 2).unwrap();
        let mut flush = |_: &Gather| Ok(());
        let rw = Perms::READ | Perms::WRITE;
        let k = 4096u64;
        let m2 = 2 << 20;
        // A pseudo-random sequence: maps of pages, runs and blocks (some
        // failing on overlap), unmaps that cut blocks and empty tables.
        let mut x = 0x1234_5678_9abc_def0u64;
        for step in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let va = (x % 2048) * k + ((x >> 20) % 3) * (1 << 30);
            let len = match (x >> 32) % 4 {
                0 => k,
                1 => ((x >> 40) % 700 + 1) * k,
                2 => m2,
                _ => ((x >> 40) % 3 + 1) * m2,
            };
            if (x >> 60).is_multiple_of(2) {
                let va = if len >= m2 { va & !(m2 - 1) } else { va };
                let _ = pt.map(&mut pool, va, 0x1_0000_0000 + va, len, rw, &mut flush);
            } else {
                let mut g = Gather::default();
                let r = pt.unmap(&mut pool, va, len, &mut g, &mut flush);
                pt.finish(&mut pool, &mut g, &mut flush).unwrap();
                let _ = r;
            }
            let root = pt.root;
            let tables = check_counts(&pt, &root, 0);
            assert_eq!(tables + 1, pt.table_pages(), "step {step}");
        }
    }
}
