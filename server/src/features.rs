//! The feature set probed from SMMU_IDR0/1/3/5 (6.3.1, 6.3.2, 6.3.4, 6.3.6).

use crate::hal::Mmio;
use crate::regs::{self, idr0, idr1, idr3, idr5};

/// What the SMMU implements, as far as this driver cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// IDR0.S1P: stage-1 translation.
    pub stage1: bool,
    /// IDR0.S2P: stage-2 translation.
    pub stage2: bool,
    /// IDR0.TTF includes AArch64 translation tables.
    pub ttf_aarch64: bool,
    /// IDR0.COHACC: coherent access to tables and queues.
    pub coherent: bool,
    /// IDR0.BTM: broadcast TLB maintenance.
    pub btm: bool,
    /// IDR0.HYP.
    pub hyp: bool,
    /// IDR0.ATS.
    pub ats: bool,
    /// IDR0.ASID16: 16-bit ASIDs (else 8).
    pub asid16: bool,
    /// IDR0.MSI.
    pub msi: bool,
    /// IDR0.SEV: CMD_SYNC can signal SEV.
    pub sev: bool,
    /// IDR0.PRI.
    pub pri: bool,
    /// IDR0.VMID16.
    pub vmid16: bool,
    /// IDR0.CD2L: two-level CD tables.
    pub cd_2lvl: bool,
    /// IDR0.ST_LEVEL == 1: two-level stream tables.
    pub strtab_2lvl: bool,
    /// IDR0.TTENDIAN allows little-endian walks (mixed or little).
    pub little_endian: bool,
    /// IDR0.HTTU (0 none, 1 access flag, 2 access and dirty).
    pub httu: u8,
    /// IDR0.STALL_MODEL == 0b10: faulting transactions always stall, and
    /// every CD must say so (CD.S = 1); each stall is then ended with
    /// CMD_RESUME.
    pub stall_forced: bool,
    /// IDR1.SIDSIZE: StreamID bits.
    pub sid_bits: u8,
    /// IDR1.SSIDSIZE: SubstreamID bits (0: no substreams).
    pub ssid_bits: u8,
    /// IDR1.CMDQS: log2 of the largest command queue.
    pub cmdq_max_log2: u8,
    /// IDR1.EVENTQS: log2 of the largest event queue.
    pub evtq_max_log2: u8,
    /// IDR1.TABLES_PRESET / QUEUES_PRESET (unsupported by this driver).
    pub tables_preset: bool,
    pub queues_preset: bool,
    /// IDR3.RIL: range invalidation.
    pub ril: bool,
    /// IDR3.BBML (0..2).
    pub bbml: u8,
    /// IDR5 granules.
    pub gran4k: bool,
    pub gran16k: bool,
    pub gran64k: bool,
    /// IDR5.OAS, raw encoding (also the CD.IPS encoding).
    pub oas_enc: u8,
    /// IDR5.OAS in bits.
    pub oas_bits: u8,
    /// The raw ID registers, for diagnostics.
    pub idr: [u32; 6],
}

/// Decodes IDR5.OAS / CD.IPS into a bit count (6.3.6).
pub const fn oas_bits(enc: u8) -> u8 {
    match enc {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        // 6 (52 bits) and reserved values: this driver's page tables are
        // 48-bit, so cap there.
        _ => 48,
    }
}

impl Features {
    /// Reads the ID registers.
    pub fn probe<M: Mmio>(mmio: &M) -> Self {
        let mut idr = [0u32; 6];
        for (i, r) in idr.iter_mut().enumerate() {
            *r = mmio.read32(regs::IDR0 + 4 * i);
        }
        Self::from_idr(idr)
    }

    /// Decodes raw IDR0..IDR5 values (index = register number).
    pub fn from_idr(idr: [u32; 6]) -> Self {
        let (i0, i1, i3, i5) = (idr[0], idr[1], idr[3], idr[5]);
        let ttf = (i0 >> idr0::TTF_SHIFT) & 3;
        let ttendian = (i0 >> idr0::TTENDIAN_SHIFT) & 3;
        let oas_enc = (i5 & idr5::OAS_MASK) as u8;
        Features {
            stage1: i0 & idr0::S1P != 0,
            stage2: i0 & idr0::S2P != 0,
            ttf_aarch64: ttf & 2 != 0,
            coherent: i0 & idr0::COHACC != 0,
            stall_forced: (i0 >> idr0::STALL_MODEL_SHIFT) & 3 == idr0::STALL_MODEL_FORCED,
            btm: i0 & idr0::BTM != 0,
            hyp: i0 & idr0::HYP != 0,
            ats: i0 & idr0::ATS != 0,
            asid16: i0 & idr0::ASID16 != 0,
            msi: i0 & idr0::MSI != 0,
            sev: i0 & idr0::SEV != 0,
            pri: i0 & idr0::PRI != 0,
            vmid16: i0 & idr0::VMID16 != 0,
            cd_2lvl: i0 & idr0::CD2L != 0,
            strtab_2lvl: (i0 >> idr0::ST_LEVEL_SHIFT) & 3 == 1,
            little_endian: ttendian == 0 || ttendian == 2,
            httu: ((i0 >> idr0::HTTU_SHIFT) & 3) as u8,
            sid_bits: ((i1 >> idr1::SIDSIZE_SHIFT) & 0x3f) as u8,
            ssid_bits: ((i1 >> idr1::SSIDSIZE_SHIFT) & 0x1f) as u8,
            cmdq_max_log2: ((i1 >> idr1::CMDQS_SHIFT) & 0x1f) as u8,
            evtq_max_log2: ((i1 >> idr1::EVENTQS_SHIFT) & 0x1f) as u8,
            tables_preset: i1 & idr1::TABLES_PRESET != 0,
            queues_preset: i1 & idr1::QUEUES_PRESET != 0,
            ril: i3 & idr3::RIL != 0,
            bbml: ((i3 >> idr3::BBML_SHIFT) & 3) as u8,
            gran4k: i5 & idr5::GRAN4K != 0,
            gran16k: i5 & idr5::GRAN16K != 0,
            gran64k: i5 & idr5::GRAN64K != 0,
            oas_enc,
            oas_bits: oas_bits(oas_enc),
            idr,
        }
    }

    /// Number of ASID bits (16 with IDR0.ASID16, else 8).
    pub fn asid_bits(&self) -> u8 {
        if self.asid16 {
            16
        } else {
            8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values QEMU 7.2 advertises (DESIGN.md section 4).
    #[test]
    fn qemu_7_2_idrs() {
        let f = Features::from_idr([0x0d40_101a, 0x0273_0010, 0, 0x1404, 0, 0x74]);
        assert!(f.stage1 && !f.stage2 && f.ttf_aarch64 && f.coherent);
        assert!(f.asid16 && f.strtab_2lvl && !f.msi && !f.sev && !f.btm && !f.pri);
        assert!(!f.ats && f.httu == 0 && f.little_endian);
        assert_eq!((f.sid_bits, f.ssid_bits), (16, 0));
        assert_eq!((f.cmdq_max_log2, f.evtq_max_log2), (19, 19));
        assert!(f.ril);
        assert_eq!(f.bbml, 2); // IDR3 bit 12: BBML = 0b10
        assert!(f.gran4k && f.gran16k && f.gran64k);
        assert_eq!((f.oas_enc, f.oas_bits), (4, 44));
        assert_eq!(f.asid_bits(), 16);
    }
}
