//! Context Descriptors (5.4 "Context Descriptor"), level-1 CD descriptors
//! (5.3 "Level 1 Context Descriptor") and CD tables (linear or two-level,
//! 3.4.3 "Context descriptors"; STE.S1Fmt). Names follow Linux
//! (`CTXDESC_CD_*`).

use crate::dma;
use crate::entry::{Entry, UsedBits};
use crate::error::Result;
use crate::hal::{DmaAllocator, DmaBlock};
use crate::regs::{genmask, prep};
use crate::ste::{CdTableRef, S1FMT_4K_L2, S1FMT_LINEAR};

/// CD.T0SZ, qword 0 `[5:0]`.
pub const CD_0_TCR_T0SZ: u64 = genmask(5, 0);
/// CD.TG0 `[7:6]`: 0 = 4 KiB, 1 = 64 KiB, 2 = 16 KiB.
pub const CD_0_TCR_TG0: u64 = genmask(7, 6);
/// CD.IR0 `[9:8]`, OR0 `[11:10]`: 1 = write-back write-allocate.
pub const CD_0_TCR_IRGN0: u64 = genmask(9, 8);
pub const CD_0_TCR_ORGN0: u64 = genmask(11, 10);
/// CD.SH0 `[13:12]`: 3 = inner shareable.
pub const CD_0_TCR_SH0: u64 = genmask(13, 12);
/// CD.EPD0 bit 14: TTB0 walks disabled.
pub const CD_0_TCR_EPD0: u64 = 1 << 14;
/// CD.ENDI bit 15: big-endian walks.
pub const CD_0_ENDI: u64 = 1 << 15;
/// CD.EPD1 bit 30: TTB1 walks disabled.
pub const CD_0_TCR_EPD1: u64 = 1 << 30;
/// CD.V bit 31.
pub const CD_0_V: u64 = 1 << 31;
/// CD.IPS `[34:32]` (IDR5.OAS encoding).
pub const CD_0_TCR_IPS: u64 = genmask(34, 32);
/// CD.AA64 bit 41: AArch64 translation tables.
pub const CD_0_AA64: u64 = 1 << 41;
/// CD.S bit 44: stall faults.
pub const CD_0_S: u64 = 1 << 44;
/// CD.R bit 45: record faults in the event queue.
pub const CD_0_R: u64 = 1 << 45;
/// CD.A bit 46: faulting transactions abort (rather than RAZ/WI).
pub const CD_0_A: u64 = 1 << 46;
/// CD.ASET bit 47: ASID not shared with PE broadcast TLBI.
pub const CD_0_ASET: u64 = 1 << 47;
/// CD.ASID `[63:48]`.
pub const CD_0_ASID: u64 = genmask(63, 48);
/// CD.TTB0, qword 1 `[51:4]`.
pub const CD_1_TTB0: u64 = genmask(51, 4);

/// Page-table MAIR attribute indices (as in Linux io-pgtable-arm).
pub const MAIR_IDX_NC: u8 = 0;
/// Normal, inner/outer write-back read/write-allocate.
pub const MAIR_IDX_CACHE: u8 = 1;
/// Device-nGnRE.
pub const MAIR_IDX_DEV: u8 = 2;
/// The MAIR value: idx0 0x44 (normal NC), idx1 0xff (normal WB RWA),
/// idx2 0x04 (Device-nGnRE).
pub const MAIR: u64 = 0x44 | (0xff << 8) | (0x04 << 16);

/// CDs per 4 KiB level-2 CD table (S1Fmt = 1).
pub const CDS_PER_L2: usize = 64;
const L2_LOG2: u8 = 6;

/// The stage-1 translation context a CD describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S1Context {
    /// Physical address of the level-0 table (4 KiB aligned).
    pub ttb0: u64,
    pub asid: u16,
    /// CD.IPS: the IDR5.OAS encoding.
    pub ips: u8,
    /// CD.S: faulting transactions stall (required when the SMMU forces
    /// stalls, IDR0.STALL_MODEL = 0b10).
    pub stall: bool,
    /// The SMMU snoops the CPU's caches (IDR0.COHACC = 1): table walks are
    /// write-back, inner shareable. Otherwise non-cacheable, outer
    /// shareable: the CPU cleans every descriptor to memory (Linux's
    /// `coherent_walk = false`).
    pub coherent: bool,
}

/// A CD for a 4 KiB-granule, 48-bit stage-1 table (Linux
/// `arm_smmu_make_s1_cd`): T0SZ = 16, TG0 = 4K, IR0/OR0 = WBWA, SH0 = inner,
/// EPD1 = 1, V = 1, IPS, AA64 = 1, R = 1, A = 1, ASET = 1, ASID; TTB0; MAIR.
pub fn s1_cd(ctx: &S1Context) -> Entry {
    let mut e = [0u64; 8];
    // IRGN0/ORGN0: 1 write-back write-allocate, 0 non-cacheable; SH0: 3
    // inner, 2 outer shareable.
    let (rgn, sh) = if ctx.coherent { (1, 3) } else { (0, 2) };
    e[0] = prep(16, 5, 0)
        | prep(0, 7, 6)
        | prep(rgn, 9, 8)
        | prep(rgn, 11, 10)
        | prep(sh, 13, 12)
        | CD_0_TCR_EPD1
        | CD_0_V
        | prep(ctx.ips as u64, 34, 32)
        | CD_0_AA64
        | CD_0_R
        | CD_0_A
        | CD_0_ASET
        | if ctx.stall { CD_0_S } else { 0 }
        | prep(ctx.asid as u64, 63, 48);
    e[1] = ctx.ttb0 & CD_1_TTB0;
    e[3] = MAIR;
    e
}

/// Used bits of a CD (Linux `arm_smmu_get_cd_used`): only V when invalid,
/// everything when valid (minus the TTB0 fields when EPD0 = 1).
pub struct CdUsed;

impl UsedBits for CdUsed {
    fn used(ent: &Entry) -> Entry {
        let mut u = [0u64; 8];
        u[0] = CD_0_V;
        if ent[0] & CD_0_V == 0 {
            return u;
        }
        u = [u64::MAX; 8];
        if ent[0] & CD_0_TCR_EPD0 != 0 {
            u[0] &=
                !(CD_0_TCR_T0SZ | CD_0_TCR_TG0 | CD_0_TCR_IRGN0 | CD_0_TCR_ORGN0 | CD_0_TCR_SH0);
            u[1] &= !CD_1_TTB0;
        }
        u
    }
}

/// Level-1 CD descriptor (5.3): V `[0]`, L2Ptr `[51:12]`.
pub fn l1cd_desc(l2_paddr: u64) -> u64 {
    1 | (l2_paddr & genmask(51, 12))
}

/// A stream's CD table: one CD (S1CDMax = 0), a linear table of up to 64
/// CDs, or a two-level table with 4 KiB leaves allocated on first use. The
/// two-level table's block holds the L1 descriptors followed by a shadow
/// array with the leaves' virtual addresses.
#[derive(Debug)]
pub struct CdTable {
    pub block: DmaBlock,
    /// log2 of the number of SSIDs (S1CDMax).
    pub ssid_bits: u8,
    pub two_level: bool,
    /// Blocks currently allocated (table pages), for accounting.
    pub blocks: u32,
}

impl CdTable {
    /// Allocates an empty CD table for `ssid_bits` SSIDs (0: one CD).
    /// Two-level when `ssid_bits > 6` (needs IDR0.CD2L).
    pub fn new<A: DmaAllocator>(alloc: &mut A, ssid_bits: u8) -> Result<Self> {
        if ssid_bits <= L2_LOG2 {
            let size = 64usize << ssid_bits;
            let block = alloc.alloc(size, size.max(64))?;
            Ok(CdTable {
                block,
                ssid_bits,
                two_level: false,
                blocks: 1,
            })
        } else {
            let n = 1usize << (ssid_bits - L2_LOG2);
            let block = alloc.alloc(16 * n, (8 * n).max(64))?;
            Ok(CdTable {
                block,
                ssid_bits,
                two_level: true,
                blocks: 1,
            })
        }
    }

    /// What the STE points at.
    pub fn ste_ref(&self) -> CdTableRef {
        CdTableRef {
            paddr: self.block.paddr,
            s1fmt: if self.two_level {
                S1FMT_4K_L2
            } else {
                S1FMT_LINEAR
            },
            s1cdmax: self.ssid_bits,
        }
    }

    fn l1_entries(&self) -> usize {
        1usize << self.ssid_bits.saturating_sub(L2_LOG2)
    }

    /// The 64-byte slot of `ssid`'s CD. With `alloc`, a missing level-2 table
    /// is allocated (zeroed, so every CD in it is invalid) and its L1
    /// descriptor published; an invalid L1CD is never cached, so no
    /// invalidation is needed. Without, `Ok(None)` if it is missing.
    pub fn slot<A: DmaAllocator>(
        &mut self,
        ssid: u32,
        alloc: Option<&mut A>,
    ) -> Result<Option<DmaBlock>> {
        if (ssid as u64) >= (1u64 << self.ssid_bits) {
            return Ok(None);
        }
        if !self.two_level {
            return Ok(dma::sub_block(&self.block, ssid as usize * 64, 64));
        }
        let l1 = (ssid as usize) >> L2_LOG2;
        let n = self.l1_entries();
        let desc = dma::read_u64(&self.block, l1);
        let l2 = if desc & 1 != 0 {
            DmaBlock {
                vaddr: dma::read_u64(&self.block, n + l1) as usize as *mut u8,
                paddr: desc & genmask(51, 12),
                size: 4096,
            }
        } else {
            let Some(a) = alloc else { return Ok(None) };
            let b = a.alloc(4096, 4096)?;
            dma::write_u64(&self.block, n + l1, b.vaddr as usize as u64);
            crate::barrier::dma_wmb();
            dma::write_u64(&self.block, l1, l1cd_desc(b.paddr));
            self.blocks += 1;
            b
        };
        Ok(dma::sub_block(&l2, (ssid as usize % CDS_PER_L2) * 64, 64))
    }

    /// Returns every block to the allocator. The SMMU must no longer reach
    /// the table (STE changed and invalidated first).
    pub fn free<A: DmaAllocator>(self, alloc: &mut A) {
        if self.two_level {
            let n = self.l1_entries();
            for i in 0..n {
                let desc = dma::read_u64(&self.block, i);
                if desc & 1 != 0 {
                    alloc.free(DmaBlock {
                        vaddr: dma::read_u64(&self.block, n + i) as usize as *mut u8,
                        paddr: desc & genmask(51, 12),
                        size: 4096,
                    });
                }
            }
        }
        alloc.free(self.block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::qword_diff;

    #[test]
    fn cd_by_hand() {
        let cd = s1_cd(&S1Context {
            ttb0: 0x4567_8000,
            asid: 0x1234,
            ips: 4,
            stall: false,
            coherent: true,
        });
        // 5.4: T0SZ=16 (0x10), TG0=0, IR0=1 (bit 8), OR0=1 (bit 10), SH0=3
        // (bits 12,13), EPD1 (bit 30), V (bit 31), IPS=4 (bit 34), AA64 (41),
        // R (45), A (46), ASET (47), ASID at 48.
        let q0 = 0x10u64
            | (1 << 8)
            | (1 << 10)
            | (3 << 12)
            | (1 << 30)
            | (1 << 31)
            | (4 << 32)
            | (1 << 41)
            | (1 << 45)
            | (1 << 46)
            | (1 << 47)
            | (0x1234 << 48);
        assert_eq!(cd[0], q0);
        assert_eq!(cd[1], 0x4567_8000);
        assert_eq!(cd[2], 0);
        assert_eq!(cd[3], 0x04ff44);
        assert_eq!(l1cd_desc(0x9000_1000), 0x9000_1001);
        let stalling = s1_cd(&S1Context {
            ttb0: 0x4567_8000,
            asid: 0x1234,
            ips: 4,
            stall: true,
            coherent: true,
        });
        assert_eq!(stalling[0], q0 | CD_0_S);
        let walks_memory = s1_cd(&S1Context {
            ttb0: 0x4567_8000,
            asid: 0x1234,
            ips: 4,
            stall: false,
            coherent: false,
        });
        // IRGN0 = ORGN0 = 0 (non-cacheable), SH0 = 2 (outer shareable).
        assert_eq!(walks_memory[0], q0 & !(1 << 8) & !(1 << 10) & !(1 << 12));
    }

    #[test]
    fn cd_changes() {
        let a = s1_cd(&S1Context {
            ttb0: 0x1000,
            asid: 1,
            ips: 4,
            stall: false,
            coherent: true,
        });
        let b = s1_cd(&S1Context {
            ttb0: 0x2000,
            asid: 2,
            ips: 4,
            stall: false,
            coherent: true,
        });
        // invalid -> valid: only qword 0 is critical (hitless)
        assert_eq!(qword_diff::<CdUsed>(&[0; 8], &a).1, 1);
        // valid -> invalid: qword 0
        assert_eq!(qword_diff::<CdUsed>(&a, &[0; 8]).1, 1);
        // domain change in place: ASID (q0) and TTB0 (q1): breaking
        assert_eq!(qword_diff::<CdUsed>(&a, &b).1, 0b11);
    }
}
