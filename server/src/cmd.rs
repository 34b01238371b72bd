//! Command encodings (4.1 "Commands overview", 4.2 "Prefetch", 4.3
//! "Configuration structure invalidation", 4.4 "TLB invalidation", 4.7
//! "Command queue synchronization"). Each command is two little-endian
//! qwords; the opcode is bits `[7:0]` of the first.

use crate::regs::prep;

/// Command opcodes (4.1.1, Table 4.1).
pub mod op {
    pub const PREFETCH_CONFIG: u8 = 0x01;
    pub const PREFETCH_ADDR: u8 = 0x02;
    pub const CFGI_STE: u8 = 0x03;
    pub const CFGI_STE_RANGE: u8 = 0x04;
    pub const CFGI_CD: u8 = 0x05;
    pub const CFGI_CD_ALL: u8 = 0x06;
    pub const CFGI_VMS_PIDM: u8 = 0x07;
    pub const TLBI_NH_ALL: u8 = 0x10;
    pub const TLBI_NH_ASID: u8 = 0x11;
    pub const TLBI_NH_VA: u8 = 0x12;
    pub const TLBI_NH_VAA: u8 = 0x13;
    pub const TLBI_EL3_ALL: u8 = 0x18;
    pub const TLBI_EL3_VA: u8 = 0x1a;
    pub const TLBI_EL2_ALL: u8 = 0x20;
    pub const TLBI_EL2_ASID: u8 = 0x21;
    pub const TLBI_EL2_VA: u8 = 0x22;
    pub const TLBI_EL2_VAA: u8 = 0x23;
    pub const TLBI_S12_VMALL: u8 = 0x28;
    pub const TLBI_S2_IPA: u8 = 0x2a;
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    pub const ATC_INV: u8 = 0x40;
    pub const PRI_RESP: u8 = 0x41;
    pub const RESUME: u8 = 0x44;
    pub const STALL_TERM: u8 = 0x45;
    pub const CMD_SYNC: u8 = 0x46;
}

/// TLBI_NH_VA range fields (4.4.1.1 "Range-based invalidation"): the range is
/// `(num + 1) << scale` granules of size `tg` starting at the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlbiRange {
    /// NUM `[16:12]` of qword 0 (0..=31).
    pub num: u8,
    /// SCALE `[24:20]` of qword 0 (0..=31).
    pub scale: u8,
    /// TG `[11:10]` of qword 1: 1 = 4 KiB, 2 = 16 KiB, 3 = 64 KiB (0: not a range).
    pub tg: u8,
    /// TTL `[9:8]` of qword 1: level of the leaf entries (0: unknown).
    pub ttl: u8,
}

/// A command this driver issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// 4.2.1 CMD_PREFETCH_CONFIG.
    PrefetchConfig { sid: u32 },
    /// 4.3.1 CMD_CFGI_STE: invalidate the STE of `sid` (`leaf`: the STE only,
    /// not a level-1 descriptor).
    CfgiSte { sid: u32, leaf: bool },
    /// 4.3.2 CMD_CFGI_STE_RANGE with Range = 31: all StreamIDs (CFGI_ALL).
    CfgiAll,
    /// 4.3.3 CMD_CFGI_CD.
    CfgiCd { sid: u32, ssid: u32, leaf: bool },
    /// 4.3.4 CMD_CFGI_CD_ALL.
    CfgiCdAll { sid: u32 },
    /// 4.4.2 CMD_TLBI_NH_ALL (non-secure, non-hyp, all ASIDs of VMID).
    TlbiNhAll,
    /// 4.4.3 CMD_TLBI_NH_ASID.
    TlbiNhAsid { asid: u16 },
    /// 4.4.4 CMD_TLBI_NH_VA. `leaf`: only last-level entries (walk caches kept).
    TlbiNhVa {
        asid: u16,
        addr: u64,
        leaf: bool,
        range: TlbiRange,
    },
    /// 4.4.7 CMD_TLBI_EL2_ALL.
    TlbiEl2All,
    /// 4.4.12 CMD_TLBI_NSNH_ALL.
    TlbiNsnhAll,
    /// 4.7.3 CMD_SYNC with CS = SIG_NONE (completion observed by polling CONS).
    Sync,
    /// 4.6.2 CMD_RESUME with Action = Abort: the stalled transaction `stag`
    /// of `sid` ends with an abort to the device (no retry).
    Resume { sid: u32, stag: u16 },
    /// Any raw command (tests and diagnostics).
    Raw([u64; 2]),
}

/// CMD_SYNC.CS, bits `[13:12]`: 0 SIG_NONE, 1 SIG_IRQ, 2 SIG_SEV.
pub const SYNC_CS_SIG_NONE: u64 = 0;

/// CMD_RESUME.Action, bits `[13:12]`: 0 Term, 1 Retry, 2 Abort.
pub const RESUME_ACTION_ABORT: u64 = 2;

impl Command {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Command::PrefetchConfig { .. } => op::PREFETCH_CONFIG,
            Command::CfgiSte { .. } => op::CFGI_STE,
            Command::CfgiAll => op::CFGI_STE_RANGE,
            Command::CfgiCd { .. } => op::CFGI_CD,
            Command::CfgiCdAll { .. } => op::CFGI_CD_ALL,
            Command::TlbiNhAll => op::TLBI_NH_ALL,
            Command::TlbiNhAsid { .. } => op::TLBI_NH_ASID,
            Command::TlbiNhVa { .. } => op::TLBI_NH_VA,
            Command::TlbiEl2All => op::TLBI_EL2_ALL,
            Command::TlbiNsnhAll => op::TLBI_NSNH_ALL,
            Command::Sync => op::CMD_SYNC,
            Command::Resume { .. } => op::RESUME,
            Command::Raw(r) => r[0] as u8,
        }
    }

    /// The two qwords as the SMMU reads them.
    pub fn encode(&self) -> [u64; 2] {
        let opc = self.opcode() as u64;
        match *self {
            // StreamID [63:32]
            Command::PrefetchConfig { sid } => [opc | prep(sid as u64, 63, 32), 0],
            // StreamID [63:32]; qword1 Leaf [0]
            Command::CfgiSte { sid, leaf } => [opc | prep(sid as u64, 63, 32), leaf as u64],
            // qword1 Range [4:0] = 31: every StreamID
            Command::CfgiAll => [opc, 31],
            // SubstreamID [31:12], StreamID [63:32]; qword1 Leaf [0]
            Command::CfgiCd { sid, ssid, leaf } => [
                opc | prep(ssid as u64, 31, 12) | prep(sid as u64, 63, 32),
                leaf as u64,
            ],
            Command::CfgiCdAll { sid } => [opc | prep(sid as u64, 63, 32), 0],
            // VMID [47:32] = 0 (no stage 2)
            Command::TlbiNhAll | Command::TlbiEl2All | Command::TlbiNsnhAll => [opc, 0],
            // ASID [63:48], VMID [47:32]
            Command::TlbiNhAsid { asid } => [opc | prep(asid as u64, 63, 48), 0],
            // qword0: NUM [16:12], SCALE [24:20], VMID [47:32], ASID [63:48]
            // qword1: Leaf [0], TTL [9:8], TG [11:10], Address [63:12]
            Command::TlbiNhVa {
                asid,
                addr,
                leaf,
                range,
            } => [
                opc | prep(range.num as u64, 16, 12)
                    | prep(range.scale as u64, 24, 20)
                    | prep(asid as u64, 63, 48),
                leaf as u64
                    | prep(range.ttl as u64, 9, 8)
                    | prep(range.tg as u64, 11, 10)
                    | (addr & !0xfff),
            ],
            // CS [13:12] = SIG_NONE, MSH/MSIAttr/MSIData/MSIAddress 0
            Command::Sync => [opc | prep(SYNC_CS_SIG_NONE, 13, 12), 0],
            // StreamID [63:32], Action [13:12]; STAG [15:0] of qword 1.
            Command::Resume { sid, stag } => [
                opc | prep(RESUME_ACTION_ABORT, 13, 12) | prep(sid as u64, 63, 32),
                stag as u64,
            ],
            Command::Raw(r) => r,
        }
    }

    /// Whether this is a configuration-cache invalidation (CFGI_*).
    pub fn is_cfgi(&self) -> bool {
        matches!(self.opcode(), op::CFGI_STE..=op::CFGI_VMS_PIDM)
    }

    /// Whether this is a TLB invalidation (TLBI_*).
    pub fn is_tlbi(&self) -> bool {
        matches!(self.opcode(), 0x10..=0x3f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_chapter_4() {
        assert_eq!(
            Command::CfgiSte {
                sid: 0x1234,
                leaf: true
            }
            .encode(),
            [0x0000_1234_0000_0003, 1]
        );
        assert_eq!(Command::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(
            Command::CfgiCd {
                sid: 8,
                ssid: 0xabcde,
                leaf: true
            }
            .encode(),
            [0x0000_0008_abcd_e005, 1]
        );
        assert_eq!(
            Command::TlbiNhAsid { asid: 0xbeef }.encode(),
            [0xbeef_0000_0000_0011, 0]
        );
        assert_eq!(Command::TlbiNsnhAll.encode(), [0x30, 0]);
        assert_eq!(Command::Sync.encode(), [0x46, 0]);
        assert_eq!(
            Command::Resume {
                sid: 0x10,
                stag: 0xbeef
            }
            .encode(),
            [0x0000_0010_0000_2044, 0xbeef]
        );
        let r = TlbiRange {
            num: 3,
            scale: 5,
            tg: 1,
            ttl: 3,
        };
        assert_eq!(
            Command::TlbiNhVa {
                asid: 7,
                addr: 0x1234_5678_9000,
                leaf: true,
                range: r
            }
            .encode(),
            [
                0x0007_0000_0000_0012 | (3 << 12) | (5 << 20),
                0x1234_5678_9000 | 1 | (3 << 8) | (1 << 10)
            ]
        );
        assert!(Command::CfgiAll.is_cfgi() && !Command::CfgiAll.is_tlbi());
        assert!(Command::TlbiNhAsid { asid: 1 }.is_tlbi());
        assert!(!Command::Sync.is_tlbi() && !Command::Sync.is_cfgi());
    }
}
