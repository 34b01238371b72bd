//! Stream Table Entries (5.2 "Stream Table Entry") and level-1 stream table
//! descriptors (5.1 "Level 1 Stream Table Descriptor"). Field names follow
//! the architecture and Linux (`STRTAB_STE_*`).

use crate::entry::{Entry, UsedBits};
use crate::regs::{field, genmask, prep};

/// STE.V, qword 0 bit 0.
pub const STE_0_V: u64 = 1 << 0;
/// STE.Config, qword 0 `[3:1]`.
pub const STE_0_CFG: u64 = genmask(3, 1);
/// Config = 0b000: abort all traffic (no event).
pub const CFG_ABORT: u64 = 0;
/// Config = 0b100: stage 1 and stage 2 bypass.
pub const CFG_BYPASS: u64 = 4;
/// Config = 0b101: stage 1 translate, stage 2 bypass.
pub const CFG_S1_TRANS: u64 = 5;
/// Config = 0b110: stage 2 translate.
pub const CFG_S2_TRANS: u64 = 6;
/// STE.S1Fmt, qword 0 `[5:4]`: CD table format.
pub const STE_0_S1FMT: u64 = genmask(5, 4);
/// S1Fmt 0: linear CD table.
pub const S1FMT_LINEAR: u64 = 0;
/// S1Fmt 1: two-level, 4 KiB leaf tables (64 CDs each).
pub const S1FMT_4K_L2: u64 = 1;
/// S1Fmt 2: two-level, 64 KiB leaf tables (1024 CDs each).
pub const S1FMT_64K_L2: u64 = 2;
/// STE.S1ContextPtr, qword 0 `[51:6]`.
pub const STE_0_S1CTXPTR: u64 = genmask(51, 6);
/// STE.S1CDMax, qword 0 `[63:59]`: log2 of the number of CDs.
pub const STE_0_S1CDMAX: u64 = genmask(63, 59);

/// STE.S1DSS, qword 1 `[1:0]`: what non-substream traffic does when S1CDMax > 0.
pub const STE_1_S1DSS: u64 = genmask(1, 0);
/// STE.S1CIR `[3:2]`, S1COR `[5:4]`, S1CSH `[7:6]`: CD table fetch attributes.
pub const STE_1_S1CIR: u64 = genmask(3, 2);
pub const STE_1_S1COR: u64 = genmask(5, 4);
pub const STE_1_S1CSH: u64 = genmask(7, 6);
/// STE.S1STALLD, qword 1 bit 27 (QEMU 7.2 rejects 1: C_BAD_STE).
pub const STE_1_S1STALLD: u64 = 1 << 27;
/// STE.EATS `[29:28]`.
pub const STE_1_EATS: u64 = genmask(29, 28);
/// STE.STRW `[31:30]`: 0 = NS-EL1.
pub const STE_1_STRW: u64 = genmask(31, 30);
/// STE.SHCFG `[45:44]`: 1 = use incoming shareability.
pub const STE_1_SHCFG: u64 = genmask(45, 44);
/// STE.S2VMID, qword 2 `[15:0]`.
pub const STE_2_S2VMID: u64 = genmask(15, 0);

/// Cacheability: write-back read-allocate (S1CIR/S1COR encoding).
pub const CACHE_WBRA: u64 = 1;
/// Shareability: inner shareable.
pub const SH_ISH: u64 = 3;
/// Non-cacheable (S1CIR/S1COR).
pub const CACHE_NC: u64 = 0;
/// Outer shareable (S1CSH).
pub const SH_OSH: u64 = 2;
/// SHCFG = 1: incoming.
pub const SHCFG_INCOMING: u64 = 1;

/// Default-substream behaviour (STE.S1DSS), 5.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S1Dss {
    /// 0b00: terminate non-substream traffic (abort, F_STREAM_DISABLED).
    Terminate = 0,
    /// 0b01: bypass stage 1 for non-substream traffic.
    Bypass = 1,
    /// 0b10: non-substream traffic uses the CD of SSID 0.
    Ssid0 = 2,
}

/// Where an STE's stage-1 contexts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdTableRef {
    /// Physical address of the CD table (64-byte aligned; 4 KiB for L1 tables).
    pub paddr: u64,
    /// S1Fmt.
    pub s1fmt: u64,
    /// S1CDMax: log2 of the number of SSIDs (0: one CD, no substreams).
    pub s1cdmax: u8,
}

/// An STE that aborts all traffic: V = 1, Config = abort.
pub fn abort() -> Entry {
    let mut e = [0u64; 8];
    e[0] = STE_0_V | prep(CFG_ABORT, 3, 1);
    e
}

/// An STE that bypasses translation: V = 1, Config = bypass, SHCFG = incoming.
pub fn bypass() -> Entry {
    let mut e = [0u64; 8];
    e[0] = STE_0_V | prep(CFG_BYPASS, 3, 1);
    e[1] = prep(SHCFG_INCOMING, 45, 44);
    e
}

/// A stage-1 STE pointing at a CD table (Linux `arm_smmu_make_cdtable_ste`):
/// S1CIR/S1COR write-back, S1CSH inner shareable, STRW NS-EL1, S1STALLD = 0.
/// `s1dss` only matters when `cd.s1cdmax > 0`; it is written as Terminate
/// otherwise.
/// With `coherent` false (an SMMU that does not snoop the CPU's caches,
/// IDR0.COHACC = 0) CD fetches are non-cacheable, outer shareable: the CPU
/// cleans every CD to memory.
pub fn s1_cdtable(cd: CdTableRef, s1dss: S1Dss, coherent: bool) -> Entry {
    let mut e = [0u64; 8];
    e[0] = STE_0_V
        | prep(CFG_S1_TRANS, 3, 1)
        | prep(cd.s1fmt, 5, 4)
        | (cd.paddr & STE_0_S1CTXPTR)
        | prep(cd.s1cdmax as u64, 63, 59);
    let dss = if cd.s1cdmax == 0 {
        S1Dss::Terminate
    } else {
        s1dss
    };
    let (cache, sh) = if coherent {
        (CACHE_WBRA, SH_ISH)
    } else {
        (CACHE_NC, SH_OSH)
    };
    e[1] = prep(dss as u64, 1, 0) | prep(cache, 3, 2) | prep(cache, 5, 4) | prep(sh, 7, 6);
    if dss == S1Dss::Bypass {
        e[1] |= prep(SHCFG_INCOMING, 45, 44);
    }
    e
}

/// Used bits of an STE (Linux `arm_smmu_get_ste_used`, stage 1/bypass/abort).
pub struct SteUsed;

impl UsedBits for SteUsed {
    fn used(ent: &Entry) -> Entry {
        let mut u = [0u64; 8];
        u[0] = STE_0_V;
        if ent[0] & STE_0_V == 0 {
            return u;
        }
        u[0] |= STE_0_CFG;
        let cfg = field(ent[0], 3, 1);
        if cfg & 1 != 0 {
            // stage 1 translates
            u[0] |= STE_0_S1FMT | STE_0_S1CTXPTR | STE_0_S1CDMAX;
            u[1] |= STE_1_S1DSS
                | STE_1_S1CIR
                | STE_1_S1COR
                | STE_1_S1CSH
                | STE_1_S1STALLD
                | STE_1_STRW
                | STE_1_EATS;
            u[2] |= STE_2_S2VMID;
            if field(ent[1], 1, 0) == S1Dss::Bypass as u64 {
                u[1] |= STE_1_SHCFG;
            }
        }
        if cfg & 2 != 0 {
            // stage 2 translates: this driver never writes one; treat every
            // bit of qwords 1..3 as used so that a move away is breaking.
            u[1] = u64::MAX;
            u[2] = u64::MAX;
            u[3] = u64::MAX;
        }
        if cfg == CFG_BYPASS {
            u[1] |= STE_1_SHCFG;
        }
        u
    }
}

/// Level-1 stream table descriptor (5.1): Span `[4:0]`, L2Ptr `[51:6]`.
/// `span` = log2(number of STEs in the level-2 table) + 1; 0 = invalid.
pub fn l1_desc(l2_paddr: u64, span: u8) -> u64 {
    prep(span as u64, 4, 0) | (l2_paddr & genmask(51, 6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{qword_diff, UsedBits};

    #[test]
    fn encodings_by_hand() {
        // 5.2: V=1, Config=0b000 -> 0x1; Config=0b100 -> 0x9; 0b101 -> 0xb.
        assert_eq!(abort()[0], 0x1);
        assert_eq!(bypass()[0], 0x9);
        assert_eq!(bypass()[1], 1 << 44);
        let ste = s1_cdtable(
            CdTableRef {
                paddr: 0x4123_4540,
                s1fmt: S1FMT_LINEAR,
                s1cdmax: 0,
            },
            S1Dss::Ssid0,
            true,
        );
        assert_eq!(ste[0], 0x4123_4540 | 0xb);
        // S1DSS forced to terminate with S1CDMax = 0; S1CIR=1, S1COR=1, S1CSH=3.
        assert_eq!(ste[1], (1 << 2) | (1 << 4) | (3 << 6));
        assert_eq!(ste[1] & STE_1_S1STALLD, 0);
        let ste = s1_cdtable(
            CdTableRef {
                paddr: 0x8000_0000,
                s1fmt: S1FMT_4K_L2,
                s1cdmax: 10,
            },
            S1Dss::Ssid0,
            true,
        );
        assert_eq!(ste[0], 0x8000_0000 | 0xb | (1 << 4) | (10u64 << 59));
        assert_eq!(ste[1] & 3, 2);
        assert_eq!(l1_desc(0x1234_0000, 9), 0x1234_0009);
    }

    #[test]
    fn abort_to_s1_is_hitless_single_qword() {
        let s1 = s1_cdtable(
            CdTableRef {
                paddr: 0x1000,
                s1fmt: 0,
                s1cdmax: 0,
            },
            S1Dss::Terminate,
            true,
        );
        let (_, diff) = qword_diff::<SteUsed>(&abort(), &s1);
        assert_eq!(diff, 1);
        let (_, diff) = qword_diff::<SteUsed>(&s1, &abort());
        assert_eq!(diff, 1);
        // Changing only the CD pointer: qword 0 only.
        let s1b = s1_cdtable(
            CdTableRef {
                paddr: 0x2000,
                s1fmt: 0,
                s1cdmax: 0,
            },
            S1Dss::Terminate,
            true,
        );
        let (_, diff) = qword_diff::<SteUsed>(&s1, &s1b);
        assert_eq!(diff, 1);
        // target bits are always a subset of its used bits
        for t in [abort(), bypass(), s1, s1b] {
            let u = SteUsed::used(&t);
            for i in 0..8 {
                assert_eq!(t[i] & !u[i], 0);
            }
        }
    }
}
