//! The stream table (3.3 "Data structures", 3.3.1 "Stream table"; 6.3.23/24
//! SMMU_STRTAB_BASE/_CFG): linear, or two-level with level-2 tables of
//! 2^[`STRTAB_SPLIT`] STEs allocated on first use. Every STE the driver
//! creates starts as abort (V = 1, Config = abort), as in Linux.
//!
//! The two-level table's block holds the level-1 descriptors followed by a
//! shadow array of the level-2 tables' virtual addresses (the SMMU only reads
//! the first half).

use crate::dma;
use crate::entry::write_entry_offline;
use crate::error::{Error, Result};
use crate::hal::{DmaAllocator, DmaBlock};
use crate::regs::{genmask, strtab as reg};
use crate::ste;

/// StreamID bits resolved by one level-2 table (STRTAB_BASE_CFG.SPLIT; as Linux).
pub const STRTAB_SPLIT: u8 = 8;
const STE_SIZE: usize = 64;

/// The stream table.
#[derive(Debug)]
pub struct StreamTable {
    pub block: DmaBlock,
    pub sid_bits: u8,
    pub two_level: bool,
    /// Level-2 tables allocated so far.
    pub l2_tables: u32,
}

impl StreamTable {
    /// Allocates a table for `sid_bits` StreamIDs; two-level if `two_level`
    /// and `sid_bits > STRTAB_SPLIT`.
    pub fn new<A: DmaAllocator>(alloc: &mut A, sid_bits: u8, two_level: bool) -> Result<Self> {
        if sid_bits > 32 {
            return Err(Error::Unsupported);
        }
        let two_level = two_level && sid_bits > STRTAB_SPLIT;
        if two_level {
            let n = 1usize << (sid_bits - STRTAB_SPLIT);
            let block = alloc.alloc(16 * n, (8 * n).max(64))?;
            Ok(StreamTable {
                block,
                sid_bits,
                two_level,
                l2_tables: 0,
            })
        } else {
            let size = STE_SIZE << sid_bits;
            let block = alloc.alloc(size, size)?;
            let t = StreamTable {
                block,
                sid_bits,
                two_level,
                l2_tables: 0,
            };
            for i in 0..(1usize << sid_bits) {
                if let Some(s) = dma::sub_block(&t.block, i * STE_SIZE, STE_SIZE) {
                    write_entry_offline(&s, &ste::abort());
                }
            }
            Ok(t)
        }
    }

    /// SMMU_STRTAB_BASE: RA = 1, ADDR.
    pub fn base_reg(&self) -> u64 {
        reg::BASE_RA | (self.block.paddr & reg::BASE_ADDR_MASK)
    }

    /// SMMU_STRTAB_BASE_CFG: FMT, SPLIT, LOG2SIZE.
    pub fn cfg_reg(&self) -> u32 {
        let fmt = if self.two_level {
            reg::FMT_2LVL
        } else {
            reg::FMT_LINEAR
        };
        (fmt << reg::CFG_FMT_SHIFT)
            | ((STRTAB_SPLIT as u32) << reg::CFG_SPLIT_SHIFT)
            | ((self.sid_bits as u32) << reg::CFG_LOG2SIZE_SHIFT)
    }

    /// Whether `sid` is within the table.
    pub fn in_range(&self, sid: u32) -> bool {
        (sid as u64) < (1u64 << self.sid_bits)
    }

    /// The STE slot of `sid`. A missing level-2 table is allocated (all
    /// abort) when `alloc` is given, and its level-1 descriptor published
    /// (an invalid descriptor is not cached, so no invalidation is needed);
    /// without, `Ok(None)` if it is missing.
    pub fn slot<A: DmaAllocator>(
        &mut self,
        sid: u32,
        alloc: Option<&mut A>,
    ) -> Result<Option<DmaBlock>> {
        if !self.in_range(sid) {
            return Err(Error::StreamOutOfRange);
        }
        if !self.two_level {
            return Ok(dma::sub_block(
                &self.block,
                sid as usize * STE_SIZE,
                STE_SIZE,
            ));
        }
        let n = 1usize << (self.sid_bits - STRTAB_SPLIT);
        let l1 = (sid >> STRTAB_SPLIT) as usize;
        let desc = dma::read_u64(&self.block, l1);
        let l2_size = STE_SIZE << STRTAB_SPLIT;
        let l2 = if desc & 0x1f != 0 {
            DmaBlock {
                vaddr: dma::read_u64(&self.block, n + l1) as usize as *mut u8,
                paddr: desc & genmask(51, 6),
                size: l2_size,
            }
        } else {
            let Some(a) = alloc else { return Ok(None) };
            let b = a.alloc(l2_size, l2_size)?;
            for i in 0..(1usize << STRTAB_SPLIT) {
                if let Some(s) = dma::sub_block(&b, i * STE_SIZE, STE_SIZE) {
                    write_entry_offline(&s, &ste::abort());
                }
            }
            dma::write_u64(&self.block, n + l1, b.vaddr as usize as u64);
            crate::barrier::dma_wmb();
            dma::write_u64(&self.block, l1, ste::l1_desc(b.paddr, STRTAB_SPLIT + 1));
            self.l2_tables += 1;
            b
        };
        let idx = (sid as usize) & ((1 << STRTAB_SPLIT) - 1);
        Ok(dma::sub_block(&l2, idx * STE_SIZE, STE_SIZE))
    }

    /// The level-2 table holding `sid`'s STE, if the table is two-level and
    /// it exists.
    pub fn l2_block(&self, sid: u32) -> Option<DmaBlock> {
        if !self.two_level || !self.in_range(sid) {
            return None;
        }
        let n = 1usize << (self.sid_bits - STRTAB_SPLIT);
        let l1 = (sid >> STRTAB_SPLIT) as usize;
        let desc = dma::read_u64(&self.block, l1);
        (desc & 0x1f != 0).then(|| DmaBlock {
            vaddr: dma::read_u64(&self.block, n + l1) as usize as *mut u8,
            paddr: desc & genmask(51, 6),
            size: STE_SIZE << STRTAB_SPLIT,
        })
    }

    /// Returns every block to the allocator (the SMMU must be disabled).
    pub fn free<A: DmaAllocator>(self, alloc: &mut A) {
        if self.two_level {
            let n = 1usize << (self.sid_bits - STRTAB_SPLIT);
            for i in 0..n {
                let desc = dma::read_u64(&self.block, i);
                if desc & 0x1f != 0 {
                    alloc.free(DmaBlock {
                        vaddr: dma::read_u64(&self.block, n + i) as usize as *mut u8,
                        paddr: desc & genmask(51, 6),
                        size: STE_SIZE << STRTAB_SPLIT,
                    });
                }
            }
        }
        alloc.free(self.block);
    }
}
