//! Layouts from the SMMUv3 architecture (ARM IHI 0070): register offsets
//! (chapter 6), the STE (5.2), the CD (5.4), L1 descriptors (5.1, 5.3),
//! commands (chapter 4) and event records (7.3). Decoders are written from
//! the specification's field tables, independently of the server's encoders.

/// Bits `[hi:lo]` of `v`.
pub const fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & (u64::MAX >> (63 - (hi - lo)))
}
pub const fn bit(v: u64, b: u32) -> bool {
    (v >> b) & 1 == 1
}

/// Register offsets (6.2, "Register overview"). Page 1 starts at 0x1_0000.
pub mod reg {
    pub const IDR0: usize = 0x00;
    pub const IDR1: usize = 0x04;
    pub const IDR2: usize = 0x08;
    pub const IDR3: usize = 0x0C;
    pub const IDR4: usize = 0x10;
    pub const IDR5: usize = 0x14;
    pub const IIDR: usize = 0x18;
    pub const AIDR: usize = 0x1C;
    pub const CR0: usize = 0x20;
    pub const CR0ACK: usize = 0x24;
    pub const CR1: usize = 0x28;
    pub const CR2: usize = 0x2C;
    pub const STATUSR: usize = 0x40;
    pub const GBPA: usize = 0x44;
    pub const AGBPA: usize = 0x48;
    pub const IRQ_CTRL: usize = 0x50;
    pub const IRQ_CTRLACK: usize = 0x54;
    pub const GERROR: usize = 0x60;
    pub const GERRORN: usize = 0x64;
    pub const GERROR_IRQ_CFG0: usize = 0x68;
    pub const GERROR_IRQ_CFG1: usize = 0x70;
    pub const GERROR_IRQ_CFG2: usize = 0x74;
    pub const STRTAB_BASE: usize = 0x80;
    pub const STRTAB_BASE_CFG: usize = 0x88;
    pub const CMDQ_BASE: usize = 0x90;
    pub const CMDQ_PROD: usize = 0x98;
    pub const CMDQ_CONS: usize = 0x9C;
    pub const EVENTQ_BASE: usize = 0xA0;
    pub const EVENTQ_IRQ_CFG0: usize = 0xB0;
    pub const EVENTQ_IRQ_CFG1: usize = 0xB8;
    pub const EVENTQ_IRQ_CFG2: usize = 0xBC;
    pub const PRIQ_BASE: usize = 0xC0;
    pub const PAGE1: usize = 0x1_0000;
    /// Page 1 (6.3.29/30). QEMU also answers at page-0 offsets 0xA8/0xAC.
    pub const EVENTQ_PROD: usize = PAGE1 + 0xA8;
    pub const EVENTQ_CONS: usize = PAGE1 + 0xAC;
    pub const PRIQ_PROD: usize = PAGE1 + 0xC8;
    pub const PRIQ_CONS: usize = PAGE1 + 0xCC;

    // CR0 (6.3.9)
    pub const CR0_SMMUEN: u32 = 1 << 0;
    pub const CR0_PRIQEN: u32 = 1 << 1;
    pub const CR0_EVENTQEN: u32 = 1 << 2;
    pub const CR0_CMDQEN: u32 = 1 << 3;
    pub const CR0_ATSCHK: u32 = 1 << 4;
    /// SMMUEN, PRIQEN, EVENTQEN, CMDQEN, ATSCHK, VMW`[8:6]`.
    pub const CR0_VALID: u32 = 0x1DF;
    // GBPA (6.3.14)
    pub const GBPA_UPDATE: u32 = 1 << 31;
    pub const GBPA_ABORT: u32 = 1 << 20;
    // IRQ_CTRL (6.3.16)
    pub const IRQ_CTRL_GERROR_IRQEN: u32 = 1 << 0;
    pub const IRQ_CTRL_PRIQ_IRQEN: u32 = 1 << 1;
    pub const IRQ_CTRL_EVENTQ_IRQEN: u32 = 1 << 2;
    // GERROR (6.3.18)
    pub const GERROR_CMDQ_ERR: u32 = 1 << 0;
    pub const GERROR_EVENTQ_ABT_ERR: u32 = 1 << 2;
    pub const GERROR_PRIQ_ABT_ERR: u32 = 1 << 3;
    pub const GERROR_MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
    pub const GERROR_MSI_EVENTQ_ABT_ERR: u32 = 1 << 5;
    pub const GERROR_SFM_ERR: u32 = 1 << 8;
    // Queue registers (6.3.25-6.3.30)
    pub const Q_BASE_ADDR_MASK: u64 = ((1 << 52) - 1) & !0x1F;
    pub const CONS_ERR_SHIFT: u32 = 24;
    pub const EVENTQ_PROD_OVFLG: u32 = 1 << 31;
    pub const EVENTQ_CONS_OVACKFLG: u32 = 1 << 31;
    // STRTAB_BASE (6.3.23), STRTAB_BASE_CFG (6.3.24)
    pub const STRTAB_BASE_ADDR_MASK: u64 = ((1 << 52) - 1) & !0x3F;
}

/// Command errors, SMMU_CMDQ_CONS.ERR (4.7.3 / 6.3.27).
pub mod cerror {
    pub const NONE: u8 = 0;
    pub const ILL: u8 = 1;
    pub const ABT: u8 = 2;
    pub const ATC_INV_SYNC: u8 = 3;
}

/// Command opcodes (4.1.1).
pub mod op {
    pub const PREFETCH_CONFIG: u8 = 0x01;
    pub const PREFETCH_ADDR: u8 = 0x02;
    pub const CFGI_STE: u8 = 0x03;
    /// Also CMD_CFGI_ALL, which is CFGI_STE_RANGE with Range = 31.
    pub const CFGI_STE_RANGE: u8 = 0x04;
    pub const CFGI_CD: u8 = 0x05;
    pub const CFGI_CD_ALL: u8 = 0x06;
    pub const TLBI_NH_ALL: u8 = 0x10;
    pub const TLBI_NH_ASID: u8 = 0x11;
    pub const TLBI_NH_VA: u8 = 0x12;
    pub const TLBI_NH_VAA: u8 = 0x13;
    pub const TLBI_EL3_ALL: u8 = 0x18;
    pub const TLBI_EL3_VA: u8 = 0x1A;
    pub const TLBI_EL2_ALL: u8 = 0x20;
    pub const TLBI_EL2_ASID: u8 = 0x21;
    pub const TLBI_EL2_VA: u8 = 0x22;
    pub const TLBI_EL2_VAA: u8 = 0x23;
    pub const TLBI_S12_VMALL: u8 = 0x28;
    pub const TLBI_S2_IPA: u8 = 0x2A;
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    pub const ATC_INV: u8 = 0x40;
    pub const PRI_RESP: u8 = 0x41;
    pub const RESUME: u8 = 0x44;
    pub const STALL_TERM: u8 = 0x45;
    pub const SYNC: u8 = 0x46;
}

/// Event record types (7.3).
pub mod evt {
    pub const F_UUT: u8 = 0x01;
    pub const C_BAD_STREAMID: u8 = 0x02;
    pub const F_STE_FETCH: u8 = 0x03;
    pub const C_BAD_STE: u8 = 0x04;
    pub const F_BAD_ATS_TREQ: u8 = 0x05;
    pub const F_STREAM_DISABLED: u8 = 0x06;
    pub const F_TRANSL_FORBIDDEN: u8 = 0x07;
    pub const C_BAD_SUBSTREAMID: u8 = 0x08;
    pub const F_CD_FETCH: u8 = 0x09;
    pub const C_BAD_CD: u8 = 0x0A;
    pub const F_WALK_EABT: u8 = 0x0B;
    pub const F_TRANSLATION: u8 = 0x10;
    pub const F_ADDR_SIZE: u8 = 0x11;
    pub const F_ACCESS: u8 = 0x12;
    pub const F_PERMISSION: u8 = 0x13;
    pub const F_TLB_CONFLICT: u8 = 0x20;
    pub const F_CFG_CONFLICT: u8 = 0x21;

    /// Name of an event type, for messages.
    pub fn name(code: u8) -> &'static str {
        match code {
            F_UUT => "F_UUT",
            C_BAD_STREAMID => "C_BAD_STREAMID",
            F_STE_FETCH => "F_STE_FETCH",
            C_BAD_STE => "C_BAD_STE",
            F_BAD_ATS_TREQ => "F_BAD_ATS_TREQ",
            F_STREAM_DISABLED => "F_STREAM_DISABLED",
            F_TRANSL_FORBIDDEN => "F_TRANSL_FORBIDDEN",
            C_BAD_SUBSTREAMID => "C_BAD_SUBSTREAMID",
            F_CD_FETCH => "F_CD_FETCH",
            C_BAD_CD => "C_BAD_CD",
            F_WALK_EABT => "F_WALK_EABT",
            F_TRANSLATION => "F_TRANSLATION",
            F_ADDR_SIZE => "F_ADDR_SIZE",
            F_ACCESS => "F_ACCESS",
            F_PERMISSION => "F_PERMISSION",
            F_TLB_CONFLICT => "F_TLB_CONFLICT",
            F_CFG_CONFLICT => "F_CFG_CONFLICT",
            _ => "?",
        }
    }
}

/// Translation/fault classes in event records (7.3.11, CLASS field).
pub mod class {
    pub const CD: u8 = 0b00;
    pub const TT: u8 = 0b01;
    pub const IN: u8 = 0b10;
}

/// STE.Config (5.2, word 0 bits `[3:1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteConfig {
    /// 0b000: every transaction aborted, no event.
    Abort,
    /// 0b100: both stages bypassed.
    Bypass,
    /// 0b101: stage 1 translates, stage 2 bypassed.
    S1Trans,
    /// 0b110: stage 2 only.
    S2Trans,
    /// 0b111: nested.
    Nested,
    /// 0b001..=0b011.
    Reserved(u8),
}

impl SteConfig {
    pub fn from_bits(v: u8) -> Self {
        match v & 7 {
            0b000 => SteConfig::Abort,
            0b100 => SteConfig::Bypass,
            0b101 => SteConfig::S1Trans,
            0b110 => SteConfig::S2Trans,
            0b111 => SteConfig::Nested,
            r => SteConfig::Reserved(r),
        }
    }
}

/// S1DSS (5.2, word 1 bits `[1:0]`): what non-substream traffic does when
/// substreams are enabled (S1CDMax != 0).
pub mod s1dss {
    pub const TERMINATE: u8 = 0b00;
    pub const BYPASS: u8 = 0b01;
    pub const SSID0: u8 = 0b10;
}

/// A decoded Stream Table Entry (5.2). `raw` keeps the eight words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ste {
    pub raw: [u64; 8],
    pub valid: bool,
    pub config: SteConfig,
    pub s1fmt: u8,
    /// S1ContextPtr, bits `[51:6]` of the CD / CD table address.
    pub s1_context_ptr: u64,
    pub s1cdmax: u8,
    pub s1dss: u8,
    pub s1cir: u8,
    pub s1cor: u8,
    pub s1csh: u8,
    pub dcp: bool,
    pub ppar: bool,
    pub mev: bool,
    pub s1stalld: bool,
    pub eats: u8,
    pub strw: u8,
    pub memattr: u8,
    pub mtcfg: bool,
    pub alloccfg: u8,
    pub shcfg: u8,
    pub nscfg: u8,
    pub privcfg: u8,
    pub instcfg: u8,
    pub s2vmid: u16,
}

impl Ste {
    pub fn decode(raw: [u64; 8]) -> Ste {
        let (w0, w1, w2) = (raw[0], raw[1], raw[2]);
        Ste {
            raw,
            valid: bit(w0, 0),
            config: SteConfig::from_bits(bits(w0, 3, 1) as u8),
            s1fmt: bits(w0, 5, 4) as u8,
            s1_context_ptr: w0 & 0x000F_FFFF_FFFF_FFC0,
            s1cdmax: bits(w0, 63, 59) as u8,
            s1dss: bits(w1, 1, 0) as u8,
            s1cir: bits(w1, 3, 2) as u8,
            s1cor: bits(w1, 5, 4) as u8,
            s1csh: bits(w1, 7, 6) as u8,
            dcp: bit(w1, 17),
            ppar: bit(w1, 18),
            mev: bit(w1, 19),
            s1stalld: bit(w1, 27),
            eats: bits(w1, 29, 28) as u8,
            strw: bits(w1, 31, 30) as u8,
            memattr: bits(w1, 35, 32) as u8,
            mtcfg: bit(w1, 36),
            alloccfg: bits(w1, 40, 37) as u8,
            shcfg: bits(w1, 45, 44) as u8,
            nscfg: bits(w1, 47, 46) as u8,
            privcfg: bits(w1, 49, 48) as u8,
            instcfg: bits(w1, 51, 50) as u8,
            s2vmid: bits(w2, 15, 0) as u16,
        }
    }
}

/// L1 Stream Table Descriptor (5.1): Span `[4:0]`, L2Ptr `[51:6]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Std {
    pub raw: u64,
    pub span: u8,
    pub l2ptr: u64,
}
impl L1Std {
    pub fn decode(raw: u64) -> Self {
        L1Std {
            raw,
            span: bits(raw, 4, 0) as u8,
            l2ptr: raw & 0x000F_FFFF_FFFF_FFC0,
        }
    }
}

/// L1 Context Descriptor (5.3): V `[0]`, L2Ptr `[51:12]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Cd {
    pub raw: u64,
    pub valid: bool,
    pub l2ptr: u64,
}
impl L1Cd {
    pub fn decode(raw: u64) -> Self {
        L1Cd {
            raw,
            valid: bit(raw, 0),
            l2ptr: raw & 0x000F_FFFF_FFFF_F000,
        }
    }
}

/// A decoded Context Descriptor (5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cd {
    pub raw: [u64; 8],
    pub t0sz: u8,
    pub tg0: u8,
    pub ir0: u8,
    pub or0: u8,
    pub sh0: u8,
    pub epd0: bool,
    pub endi: bool,
    pub t1sz: u8,
    pub tg1: u8,
    pub epd1: bool,
    pub valid: bool,
    pub ips: u8,
    pub affd: bool,
    pub wxn: bool,
    pub uwxn: bool,
    pub tbi: u8,
    pub pan: bool,
    pub aa64: bool,
    pub hd: bool,
    pub ha: bool,
    /// Stall on fault.
    pub s: bool,
    /// Record faults (translation-class events are written only when set).
    pub r: bool,
    /// Abort (1) or RAZ/WI (0) for a faulting transaction.
    pub a: bool,
    pub aset: bool,
    pub asid: u16,
    pub nscfg0: bool,
    pub had0: bool,
    /// TTB0, bits `[51:4]`.
    pub ttb0: u64,
    pub nscfg1: bool,
    pub had1: bool,
    pub ttb1: u64,
    pub mair: u64,
    pub amair: u64,
}

impl Cd {
    pub fn decode(raw: [u64; 8]) -> Cd {
        let (w0, w1, w2) = (raw[0], raw[1], raw[2]);
        Cd {
            raw,
            t0sz: bits(w0, 5, 0) as u8,
            tg0: bits(w0, 7, 6) as u8,
            ir0: bits(w0, 9, 8) as u8,
            or0: bits(w0, 11, 10) as u8,
            sh0: bits(w0, 13, 12) as u8,
            epd0: bit(w0, 14),
            endi: bit(w0, 15),
            t1sz: bits(w0, 21, 16) as u8,
            tg1: bits(w0, 23, 22) as u8,
            epd1: bit(w0, 30),
            valid: bit(w0, 31),
            ips: bits(w0, 34, 32) as u8,
            affd: bit(w0, 35),
            wxn: bit(w0, 36),
            uwxn: bit(w0, 37),
            tbi: bits(w0, 39, 38) as u8,
            pan: bit(w0, 40),
            aa64: bit(w0, 41),
            hd: bit(w0, 42),
            ha: bit(w0, 43),
            s: bit(w0, 44),
            r: bit(w0, 45),
            a: bit(w0, 46),
            aset: bit(w0, 47),
            asid: bits(w0, 63, 48) as u16,
            nscfg0: bit(w1, 0),
            had0: bit(w1, 1),
            ttb0: w1 & 0x000F_FFFF_FFFF_FFF0,
            nscfg1: bit(w2, 0),
            had1: bit(w2, 1),
            ttb1: w2 & 0x000F_FFFF_FFFF_FFF0,
            mair: raw[3],
            amair: raw[4],
        }
    }

    /// Granule size in bits for TG0 (TCR encoding: 00 4K, 01 64K, 10 16K).
    pub fn tg0_bits(&self) -> Option<u32> {
        tg_bits(self.tg0)
    }
    /// Granule size in bits for TG1 (TCR_EL1.TG1 encoding: 01 16K, 10 4K, 11 64K).
    pub fn tg1_bits(&self) -> Option<u32> {
        match self.tg1 {
            0b01 => Some(14),
            0b10 => Some(12),
            0b11 => Some(16),
            _ => None,
        }
    }
}

/// TG0 encoding (5.4, as TCR_ELx.TG0).
pub fn tg_bits(tg0: u8) -> Option<u32> {
    match tg0 {
        0b00 => Some(12),
        0b01 => Some(16),
        0b10 => Some(14),
        _ => None,
    }
}

/// Physical address size encoding shared by IDR5.OAS and CD.IPS.
pub fn pa_bits(enc: u8) -> u32 {
    match enc {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// Inverse of [`pa_bits`].
pub fn pa_enc(bits: u32) -> u8 {
    match bits {
        0..=32 => 0,
        33..=36 => 1,
        37..=40 => 2,
        41..=42 => 3,
        43..=44 => 4,
        45..=48 => 5,
        _ => 6,
    }
}

/// Range fields of a TLBI by VA (4.4.1, SMMUv3.2 range invalidation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbiRange {
    pub num: u8,
    pub scale: u8,
    /// 01 4K, 10 16K, 11 64K.
    pub tg: u8,
    /// 00 no hint, else the level of the leaf entries.
    pub ttl: u8,
}

impl TlbiRange {
    pub fn granule_bits(&self) -> u32 {
        match self.tg {
            1 => 12,
            2 => 14,
            _ => 16,
        }
    }
    /// Bytes covered: (NUM+1) * 2^SCALE granules.
    pub fn bytes(&self) -> u128 {
        ((self.num as u128) + 1) << (self.scale as u32 + self.granule_bits())
    }
}

/// A decoded command (chapter 4). `raw` is kept by the command log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    PrefetchConfig {
        sid: u32,
        ssid: Option<u32>,
    },
    PrefetchAddr {
        sid: u32,
        ssid: Option<u32>,
        addr: u64,
    },
    CfgiSte {
        sid: u32,
        leaf: bool,
    },
    /// Invalidates StreamIDs `[sid & !mask, (sid & !mask) + mask]`,
    /// mask = 2^(range+1) - 1; range 31 is CMD_CFGI_ALL.
    CfgiSteRange {
        sid: u32,
        range: u8,
    },
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        asid: u16,
        vmid: u16,
    },
    TlbiNhVa {
        asid: u16,
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: Option<TlbiRange>,
    },
    TlbiNhVaa {
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: Option<TlbiRange>,
    },
    TlbiEl2All,
    TlbiEl2Asid {
        asid: u16,
    },
    TlbiEl2Va {
        asid: u16,
        addr: u64,
        leaf: bool,
    },
    TlbiEl2Vaa {
        addr: u64,
        leaf: bool,
    },
    TlbiS12Vmall {
        vmid: u16,
    },
    TlbiS2Ipa {
        vmid: u16,
        addr: u64,
    },
    TlbiNsnhAll,
    AtcInv,
    PriResp,
    Resume,
    StallTerm,
    Sync {
        /// 00 none, 01 IRQ, 10 SEV.
        cs: u8,
        msh: u8,
        msi_attr: u8,
        msi_data: u32,
        /// MSIAddress, bits `[51:2]`.
        msi_addr: u64,
    },
}

impl Command {
    /// Field-level decode; the model then applies feature-dependent
    /// legality checks. `Err` is a CERROR code.
    pub fn decode(raw: [u64; 2], ril: bool) -> Result<Command, u8> {
        let (w0, w1) = (raw[0], raw[1]);
        let opcode = (w0 & 0xFF) as u8;
        let sid = bits(w0, 63, 32) as u32;
        let ssec = bit(w0, 10);
        let ssv = bit(w0, 11);
        let ssid20 = bits(w0, 31, 12) as u32;
        let vmid = bits(w0, 47, 32) as u16;
        let asid = bits(w0, 63, 48) as u16;
        let leaf = bit(w1, 0);
        let addr = w1 & !0xFFF;
        let range = || {
            let tg = bits(w1, 11, 10) as u8;
            (ril && tg != 0).then(|| TlbiRange {
                num: bits(w0, 16, 12) as u8,
                scale: bits(w0, 24, 20) as u8,
                tg,
                ttl: bits(w1, 9, 8) as u8,
            })
        };
        // Commands that name a StreamID from the Non-secure queue with
        // SSec = 1 are illegal (4.3).
        let ns_only = |c: Command| if ssec { Err(cerror::ILL) } else { Ok(c) };
        match opcode {
            op::PREFETCH_CONFIG => ns_only(Command::PrefetchConfig {
                sid,
                ssid: ssv.then_some(ssid20),
            }),
            op::PREFETCH_ADDR => ns_only(Command::PrefetchAddr {
                sid,
                ssid: ssv.then_some(ssid20),
                addr,
            }),
            op::CFGI_STE => ns_only(Command::CfgiSte { sid, leaf }),
            op::CFGI_STE_RANGE => ns_only(Command::CfgiSteRange {
                sid,
                range: bits(w1, 4, 0) as u8,
            }),
            op::CFGI_CD => ns_only(Command::CfgiCd {
                sid,
                ssid: ssid20,
                leaf,
            }),
            op::CFGI_CD_ALL => ns_only(Command::CfgiCdAll { sid }),
            op::TLBI_NH_ALL => Ok(Command::TlbiNhAll { vmid }),
            op::TLBI_NH_ASID => Ok(Command::TlbiNhAsid { asid, vmid }),
            // 4.4.1.1: with TG != 0, NUM = SCALE = TTL = 0 is Reserved.
            op::TLBI_NH_VA | op::TLBI_NH_VAA if matches!(range(), Some(r) if r.num == 0 && r.scale == 0 && r.ttl == 0) => {
                Err(cerror::ILL)
            }
            op::TLBI_NH_VA => Ok(Command::TlbiNhVa {
                asid,
                vmid,
                addr,
                leaf,
                range: range(),
            }),
            op::TLBI_NH_VAA => Ok(Command::TlbiNhVaa {
                vmid,
                addr,
                leaf,
                range: range(),
            }),
            op::TLBI_EL2_ALL => Ok(Command::TlbiEl2All),
            op::TLBI_EL2_ASID => Ok(Command::TlbiEl2Asid { asid }),
            op::TLBI_EL2_VA => Ok(Command::TlbiEl2Va { asid, addr, leaf }),
            op::TLBI_EL2_VAA => Ok(Command::TlbiEl2Vaa { addr, leaf }),
            op::TLBI_S12_VMALL => Ok(Command::TlbiS12Vmall { vmid }),
            op::TLBI_S2_IPA => Ok(Command::TlbiS2Ipa { vmid, addr }),
            op::TLBI_NSNH_ALL => Ok(Command::TlbiNsnhAll),
            op::ATC_INV => Ok(Command::AtcInv),
            op::PRI_RESP => Ok(Command::PriResp),
            op::RESUME => Ok(Command::Resume),
            op::STALL_TERM => Ok(Command::StallTerm),
            op::SYNC => {
                let cs = bits(w0, 13, 12) as u8;
                if cs == 0b11 {
                    return Err(cerror::ILL);
                }
                Ok(Command::Sync {
                    cs,
                    msh: bits(w0, 23, 22) as u8,
                    msi_attr: bits(w0, 27, 24) as u8,
                    msi_data: bits(w0, 63, 32) as u32,
                    msi_addr: w1 & 0x000F_FFFF_FFFF_FFFC,
                })
            }
            // TLBI_EL3_* are Secure-only: illegal on the Non-secure queue.
            _ => Err(cerror::ILL),
        }
    }

    pub fn is_cfgi(&self) -> bool {
        matches!(
            self,
            Command::CfgiSte { .. }
                | Command::CfgiSteRange { .. }
                | Command::CfgiCd { .. }
                | Command::CfgiCdAll { .. }
        )
    }
    pub fn is_tlbi(&self) -> bool {
        matches!(
            self,
            Command::TlbiNhAll { .. }
                | Command::TlbiNhAsid { .. }
                | Command::TlbiNhVa { .. }
                | Command::TlbiNhVaa { .. }
                | Command::TlbiEl2All
                | Command::TlbiEl2Asid { .. }
                | Command::TlbiEl2Va { .. }
                | Command::TlbiEl2Vaa { .. }
                | Command::TlbiS12Vmall { .. }
                | Command::TlbiS2Ipa { .. }
                | Command::TlbiNsnhAll
        )
    }
    /// A TLBI by VA carrying range fields.
    pub fn is_range_tlbi(&self) -> bool {
        matches!(
            self,
            Command::TlbiNhVa { range: Some(_), .. } | Command::TlbiNhVaa { range: Some(_), .. }
        )
    }
    pub fn is_sync(&self) -> bool {
        matches!(self, Command::Sync { .. })
    }
}

/// An event record (7.3), decoded. The same struct encodes the record the
/// model writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Event {
    pub code: u8,
    pub sid: u32,
    pub ssid: Option<u32>,
    pub stag: u16,
    pub stall: bool,
    /// Privileged (1) / unprivileged.
    pub pnu: bool,
    /// Instruction (1) / data.
    pub ind: bool,
    /// Read (1) / write.
    pub rnw: bool,
    pub s2: bool,
    pub class: u8,
    /// Input address (translation-class faults, F_WALK_EABT).
    pub addr: u64,
    /// Fetch address (F_STE_FETCH, F_CD_FETCH, F_WALK_EABT), bits `[51:3]`.
    pub fetch_addr: u64,
}

impl Event {
    fn has_txn_info(code: u8) -> bool {
        matches!(
            code,
            evt::F_TRANSLATION
                | evt::F_ADDR_SIZE
                | evt::F_ACCESS
                | evt::F_PERMISSION
                | evt::F_WALK_EABT
                | evt::F_TRANSL_FORBIDDEN
        )
    }

    /// The 32-byte record (7.3): word 0 type/SSV/SSID/StreamID; word 1
    /// STAG, Stall, PnU, InD, RnW, S2, CLASS; word 2 input address; word 3
    /// fetch address (IPA for stage-2 faults).
    pub fn encode(&self) -> [u64; 4] {
        let mut w = [0u64; 4];
        w[0] = self.code as u64 | (self.sid as u64) << 32;
        if let Some(s) = self.ssid {
            w[0] |= 1 << 11 | ((s as u64) & 0xF_FFFF) << 12;
        }
        if Self::has_txn_info(self.code) {
            w[1] = self.stag as u64
                | (self.stall as u64) << 31
                | (self.pnu as u64) << 33
                | (self.ind as u64) << 34
                | (self.rnw as u64) << 35
                | (self.s2 as u64) << 39
                | ((self.class as u64) & 3) << 40;
            w[2] = self.addr;
        }
        if matches!(
            self.code,
            evt::F_STE_FETCH | evt::F_CD_FETCH | evt::F_WALK_EABT
        ) {
            w[3] = self.fetch_addr & 0x000F_FFFF_FFFF_FFF8;
        }
        w
    }

    pub fn decode(w: [u64; 4]) -> Event {
        let code = (w[0] & 0xFF) as u8;
        Event {
            code,
            sid: bits(w[0], 63, 32) as u32,
            ssid: bit(w[0], 11).then(|| bits(w[0], 31, 12) as u32),
            stag: bits(w[1], 15, 0) as u16,
            stall: bit(w[1], 31),
            pnu: bit(w[1], 33),
            ind: bit(w[1], 34),
            rnw: bit(w[1], 35),
            s2: bit(w[1], 39),
            class: bits(w[1], 41, 40) as u8,
            addr: w[2],
            fetch_addr: w[3] & 0x000F_FFFF_FFFF_FFF8,
        }
    }

    pub fn name(&self) -> &'static str {
        evt::name(self.code)
    }
}
