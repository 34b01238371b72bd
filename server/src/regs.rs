//! SMMUv3 register offsets and fields (ARM IHI 0070, chapter 6 "Memory map
//! and registers"; 6.2 "Register overview"). Page 0 at 0, page 1 at 0x1_0000.
//! Names follow the architecture and Linux's `arm-smmu-v3.h`.

#![allow(missing_docs)]

/// Offset of register page 1 (6.2).
pub const PAGE1: usize = 0x1_0000;

// 6.3.1 - 6.3.6 SMMU_IDR0..5
pub const IDR0: usize = 0x00;
pub const IDR1: usize = 0x04;
pub const IDR2: usize = 0x08;
pub const IDR3: usize = 0x0c;
pub const IDR4: usize = 0x10;
pub const IDR5: usize = 0x14;
pub const IIDR: usize = 0x18;
pub const AIDR: usize = 0x1c;
// 6.3.9 - 6.3.12
pub const CR0: usize = 0x20;
pub const CR0ACK: usize = 0x24;
pub const CR1: usize = 0x28;
pub const CR2: usize = 0x2c;
// 6.3.13 - 6.3.14
pub const STATUSR: usize = 0x40;
pub const GBPA: usize = 0x44;
// 6.3.16 - 6.3.17
pub const IRQ_CTRL: usize = 0x50;
pub const IRQ_CTRLACK: usize = 0x54;
// 6.3.18 - 6.3.22
pub const GERROR: usize = 0x60;
pub const GERRORN: usize = 0x64;
pub const GERROR_IRQ_CFG0: usize = 0x68;
pub const GERROR_IRQ_CFG1: usize = 0x70;
pub const GERROR_IRQ_CFG2: usize = 0x74;
// 6.3.23 - 6.3.24
pub const STRTAB_BASE: usize = 0x80;
pub const STRTAB_BASE_CFG: usize = 0x88;
// 6.3.25 - 6.3.27
pub const CMDQ_BASE: usize = 0x90;
pub const CMDQ_PROD: usize = 0x98;
pub const CMDQ_CONS: usize = 0x9c;
// 6.3.28 - 6.3.30 (PROD/CONS are also in page 1, where Linux accesses them)
pub const EVENTQ_BASE: usize = 0xa0;
pub const EVENTQ_PROD: usize = PAGE1 + 0xa8;
pub const EVENTQ_CONS: usize = PAGE1 + 0xac;
pub const EVENTQ_IRQ_CFG0: usize = 0xb0;
pub const EVENTQ_IRQ_CFG1: usize = 0xb8;
pub const EVENTQ_IRQ_CFG2: usize = 0xbc;

/// Extracts bits `[hi:lo]` of `v`.
#[inline]
pub const fn field(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & (u64::MAX >> (63 - (hi - lo)))
}

/// Places `v` into bits `[hi:lo]` (excess bits of `v` are dropped).
#[inline]
pub const fn prep(v: u64, hi: u32, lo: u32) -> u64 {
    (v & (u64::MAX >> (63 - (hi - lo)))) << lo
}

/// Mask of bits `[hi:lo]`.
#[inline]
pub const fn genmask(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - (hi - lo))) << lo
}

/// 6.3.1 SMMU_IDR0.
pub mod idr0 {
    pub const S2P: u32 = 1 << 0;
    pub const S1P: u32 = 1 << 1;
    /// TTF `[3:2]`: 0b10 AArch64 only, 0b11 AArch32 and AArch64.
    pub const TTF_SHIFT: u32 = 2;
    pub const COHACC: u32 = 1 << 4;
    pub const BTM: u32 = 1 << 5;
    /// HTTU `[7:6]`.
    pub const HTTU_SHIFT: u32 = 6;
    pub const HYP: u32 = 1 << 9;
    pub const ATS: u32 = 1 << 10;
    pub const ASID16: u32 = 1 << 12;
    pub const MSI: u32 = 1 << 13;
    pub const SEV: u32 = 1 << 14;
    pub const PRI: u32 = 1 << 16;
    pub const VMID16: u32 = 1 << 18;
    pub const CD2L: u32 = 1 << 19;
    /// TTENDIAN `[22:21]`: 0 mixed, 2 little, 3 big.
    pub const TTENDIAN_SHIFT: u32 = 21;
    /// STALL_MODEL `[25:24]`: 0 stall and terminate, 1 terminate only, 2
    /// stall forced (CD.S must be 1).
    pub const STALL_MODEL_SHIFT: u32 = 24;
    pub const STALL_MODEL_FORCED: u32 = 2;
    /// ST_LEVEL `[28:27]`: 0 linear only, 1 two-level supported.
    pub const ST_LEVEL_SHIFT: u32 = 27;
}

/// 6.3.2 SMMU_IDR1.
pub mod idr1 {
    /// SIDSIZE `[5:0]`.
    pub const SIDSIZE_SHIFT: u32 = 0;
    /// SSIDSIZE `[10:6]`.
    pub const SSIDSIZE_SHIFT: u32 = 6;
    /// PRIQS `[15:11]`.
    pub const PRIQS_SHIFT: u32 = 11;
    /// EVENTQS `[20:16]`.
    pub const EVENTQS_SHIFT: u32 = 16;
    /// CMDQS `[25:21]`.
    pub const CMDQS_SHIFT: u32 = 21;
    pub const REL: u32 = 1 << 28;
    pub const QUEUES_PRESET: u32 = 1 << 29;
    pub const TABLES_PRESET: u32 = 1 << 30;
}

/// 6.3.4 SMMU_IDR3.
pub mod idr3 {
    pub const HAD: u32 = 1 << 2;
    /// RIL: range invalidation (TLBI_* with NUM/SCALE/TG).
    pub const RIL: u32 = 1 << 10;
    /// BBML `[12:11]`.
    pub const BBML_SHIFT: u32 = 11;
}

/// 6.3.6 SMMU_IDR5.
pub mod idr5 {
    /// OAS `[2:0]`: 0:32 1:36 2:40 3:42 4:44 5:48 6:52 bits.
    pub const OAS_MASK: u32 = 0x7;
    pub const GRAN4K: u32 = 1 << 4;
    pub const GRAN16K: u32 = 1 << 5;
    pub const GRAN64K: u32 = 1 << 6;
}

/// 6.3.9 SMMU_CR0 (and CR0ACK).
pub mod cr0 {
    pub const SMMUEN: u32 = 1 << 0;
    pub const PRIQEN: u32 = 1 << 1;
    pub const EVENTQEN: u32 = 1 << 2;
    pub const CMDQEN: u32 = 1 << 3;
    pub const ATSCHK: u32 = 1 << 4;
}

/// 6.3.11 SMMU_CR1: cacheability/shareability of table and queue accesses.
pub mod cr1 {
    pub const QUEUE_IC_SHIFT: u32 = 0;
    pub const QUEUE_OC_SHIFT: u32 = 2;
    pub const QUEUE_SH_SHIFT: u32 = 4;
    pub const TABLE_IC_SHIFT: u32 = 6;
    pub const TABLE_OC_SHIFT: u32 = 8;
    pub const TABLE_SH_SHIFT: u32 = 10;
    /// Cacheability: non-cacheable.
    pub const CACHE_NC: u32 = 0;
    /// Cacheability: write-back.
    pub const CACHE_WB: u32 = 1;
    /// Shareability: outer shareable.
    pub const SH_OSH: u32 = 2;
    /// Shareability: inner shareable.
    pub const SH_ISH: u32 = 3;
}

/// 6.3.12 SMMU_CR2.
pub mod cr2 {
    pub const E2H: u32 = 1 << 0;
    /// Record C_BAD_STREAMID for out-of-range StreamIDs.
    pub const RECINVSID: u32 = 1 << 1;
    /// Private TLB maintenance: ignore broadcast TLBI.
    pub const PTM: u32 = 1 << 2;
}

/// 6.3.14 SMMU_GBPA.
pub mod gbpa {
    pub const ABORT: u32 = 1 << 20;
    pub const UPDATE: u32 = 1 << 31;
}

/// 6.3.16 SMMU_IRQ_CTRL.
pub mod irq_ctrl {
    pub const GERROR_IRQEN: u32 = 1 << 0;
    pub const PRIQ_IRQEN: u32 = 1 << 1;
    pub const EVENTQ_IRQEN: u32 = 1 << 2;
}

/// 6.3.18 SMMU_GERROR (and GERRORN, which acknowledges by toggling).
pub mod gerror {
    pub const CMDQ_ERR: u32 = 1 << 0;
    pub const EVENTQ_ABT_ERR: u32 = 1 << 2;
    pub const PRIQ_ABT_ERR: u32 = 1 << 3;
    pub const MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
    pub const MSI_EVENTQ_ABT_ERR: u32 = 1 << 5;
    pub const MSI_PRIQ_ABT_ERR: u32 = 1 << 6;
    pub const MSI_GERROR_ABT_ERR: u32 = 1 << 7;
    pub const SFM_ERR: u32 = 1 << 8;
    /// Every bit the architecture defines.
    pub const ALL: u32 = 0x1fd;
}

/// 6.3.23 SMMU_STRTAB_BASE and 6.3.24 SMMU_STRTAB_BASE_CFG.
pub mod strtab {
    /// STRTAB_BASE.RA (read-allocate hint), bit 62.
    pub const BASE_RA: u64 = 1 << 62;
    /// STRTAB_BASE.ADDR `[51:6]`.
    pub const BASE_ADDR_MASK: u64 = super::genmask(51, 6);
    /// STRTAB_BASE_CFG.LOG2SIZE `[5:0]`.
    pub const CFG_LOG2SIZE_SHIFT: u32 = 0;
    /// STRTAB_BASE_CFG.SPLIT `[10:6]`.
    pub const CFG_SPLIT_SHIFT: u32 = 6;
    /// STRTAB_BASE_CFG.FMT `[17:16]`: 0 linear, 1 two-level.
    pub const CFG_FMT_SHIFT: u32 = 16;
    pub const FMT_LINEAR: u32 = 0;
    pub const FMT_2LVL: u32 = 1;
}

/// 6.3.25 SMMU_CMDQ_BASE / 6.3.28 SMMU_EVENTQ_BASE (same layout).
pub mod qbase {
    /// RA (CMDQ) / WA (EVENTQ) allocation hint, bit 62.
    pub const ALLOC_HINT: u64 = 1 << 62;
    /// ADDR `[51:5]`.
    pub const ADDR_MASK: u64 = super::genmask(51, 5);
    /// LOG2SIZE `[4:0]`.
    pub const LOG2SIZE_MASK: u64 = 0x1f;
}

/// 6.3.26/27 SMMU_CMDQ_PROD/CONS, 6.3.29/30 SMMU_EVENTQ_PROD/CONS.
pub mod qptr {
    /// CMDQ_CONS.ERR `[30:24]`.
    pub const CMDQ_CONS_ERR_SHIFT: u32 = 24;
    pub const CMDQ_CONS_ERR_MASK: u32 = 0x7f;
    /// EVENTQ_PROD.OVFLG / EVENTQ_CONS.OVACKFLG, bit 31.
    pub const OVF: u32 = 1 << 31;
}
