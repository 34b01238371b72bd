//! The event queue (3.5.2, 7.3 "Event records") and typed decoding of every
//! record type. Records are 32 bytes; the type is bits `[7:0]` of qword 0.

use crate::dma;
use crate::hal::DmaBlock;
use crate::queue::QueueGeom;
use crate::regs::field;

/// Event record type codes (7.3, Table 7.3).
pub mod id {
    pub const F_UUT: u8 = 0x01;
    pub const C_BAD_STREAMID: u8 = 0x02;
    pub const F_STE_FETCH: u8 = 0x03;
    pub const C_BAD_STE: u8 = 0x04;
    pub const F_BAD_ATS_TREQ: u8 = 0x05;
    pub const F_STREAM_DISABLED: u8 = 0x06;
    pub const F_TRANSL_FORBIDDEN: u8 = 0x07;
    pub const C_BAD_SUBSTREAMID: u8 = 0x08;
    pub const F_CD_FETCH: u8 = 0x09;
    pub const C_BAD_CD: u8 = 0x0a;
    pub const F_WALK_EABT: u8 = 0x0b;
    pub const F_TRANSLATION: u8 = 0x10;
    pub const F_ADDR_SIZE: u8 = 0x11;
    pub const F_ACCESS: u8 = 0x12;
    pub const F_PERMISSION: u8 = 0x13;
    pub const F_TLB_CONFLICT: u8 = 0x20;
    pub const F_CFG_CONFLICT: u8 = 0x21;
    pub const E_PAGE_REQUEST: u8 = 0x24;
    pub const F_VMS_FETCH: u8 = 0x25;
}

/// Details of a translation-stage fault (F_TRANSLATION, F_ADDR_SIZE,
/// F_ACCESS, F_PERMISSION, F_WALK_EABT; 7.3.10 - 7.3.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInfo {
    /// InputAddr, qword 2.
    pub addr: u64,
    /// RnW (qword 1 bit 35): the access was a read.
    pub read: bool,
    /// InD (bit 34): instruction fetch.
    pub instruction: bool,
    /// PnU (bit 33): privileged.
    pub privileged: bool,
    /// S2 (bit 39): the fault came from stage 2.
    pub stage2: bool,
    /// CLASS `[41:40]`: 0 CD, 1 TT, 2 IN (input address).
    pub class: u8,
    /// Stall (bit 31) and STAG `[15:0]`.
    pub stall: bool,
    pub stag: u16,
    /// IPA / FetchAddr, qword 3 `[51:3]` (valid for some records).
    pub ipa: u64,
}

/// What happened, by record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// F_UUT: unsupported upstream transaction.
    UnsupportedUpstream { addr: u64 },
    /// C_BAD_STREAMID: StreamID out of range of the stream table.
    BadStreamId,
    /// F_STE_FETCH: external abort fetching the STE.
    SteFetch { fetch_addr: u64 },
    /// C_BAD_STE: the STE is invalid (V = 0) or illegal.
    BadSte,
    /// F_BAD_ATS_TREQ.
    BadAtsTreq { addr: u64 },
    /// F_STREAM_DISABLED: non-substream traffic with S1DSS = terminate, or
    /// translation disabled.
    StreamDisabled,
    /// F_TRANSL_FORBIDDEN.
    TranslationForbidden { addr: u64 },
    /// C_BAD_SUBSTREAMID: SSID out of range or substreams disabled.
    BadSubstreamId,
    /// F_CD_FETCH: external abort fetching a CD.
    CdFetch { fetch_addr: u64 },
    /// C_BAD_CD: the CD is invalid or illegal.
    BadCd,
    /// F_WALK_EABT: external abort on a table walk.
    WalkExternalAbort(FaultInfo),
    /// F_TRANSLATION: no valid descriptor.
    Translation(FaultInfo),
    /// F_ADDR_SIZE: address beyond IPS/OAS.
    AddressSize(FaultInfo),
    /// F_ACCESS: access flag fault.
    Access(FaultInfo),
    /// F_PERMISSION.
    Permission(FaultInfo),
    /// F_TLB_CONFLICT.
    TlbConflict { addr: u64 },
    /// F_CFG_CONFLICT.
    ConfigConflict,
    /// E_PAGE_REQUEST.
    PageRequest { addr: u64 },
    /// F_VMS_FETCH.
    VmsFetch { fetch_addr: u64 },
    /// A record type this driver does not decode.
    Unknown { id: u8, raw: [u64; 4] },
}

/// A decoded event record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// StreamID, qword 0 `[63:32]`.
    pub sid: u32,
    /// SubstreamID `[31:12]` when SSV (bit 11) is set.
    pub ssid: Option<u32>,
    /// The raw record.
    pub raw: [u64; 4],
}

impl Event {
    /// Decodes a 32-byte record. Never panics; unknown types become
    /// [`EventKind::Unknown`].
    pub fn decode(raw: [u64; 4]) -> Event {
        let q0 = raw[0];
        let type_id = (q0 & 0xff) as u8;
        let sid = field(q0, 63, 32) as u32;
        let ssid = if q0 & (1 << 11) != 0 {
            Some(field(q0, 31, 12) as u32)
        } else {
            None
        };
        let addr = raw[2];
        let fetch_addr = raw[3] & crate::regs::genmask(51, 3);
        let info = FaultInfo {
            addr,
            read: raw[1] & (1 << 35) != 0,
            instruction: raw[1] & (1 << 34) != 0,
            privileged: raw[1] & (1 << 33) != 0,
            stage2: raw[1] & (1 << 39) != 0,
            class: field(raw[1], 41, 40) as u8,
            stall: raw[1] & (1 << 31) != 0,
            stag: field(raw[1], 15, 0) as u16,
            ipa: raw[3] & crate::regs::genmask(51, 3),
        };
        let kind = match type_id {
            id::F_UUT => EventKind::UnsupportedUpstream { addr },
            id::C_BAD_STREAMID => EventKind::BadStreamId,
            id::F_STE_FETCH => EventKind::SteFetch { fetch_addr },
            id::C_BAD_STE => EventKind::BadSte,
            id::F_BAD_ATS_TREQ => EventKind::BadAtsTreq { addr },
            id::F_STREAM_DISABLED => EventKind::StreamDisabled,
            id::F_TRANSL_FORBIDDEN => EventKind::TranslationForbidden { addr },
            id::C_BAD_SUBSTREAMID => EventKind::BadSubstreamId,
            id::F_CD_FETCH => EventKind::CdFetch { fetch_addr },
            id::C_BAD_CD => EventKind::BadCd,
            id::F_WALK_EABT => EventKind::WalkExternalAbort(info),
            id::F_TRANSLATION => EventKind::Translation(info),
            id::F_ADDR_SIZE => EventKind::AddressSize(info),
            id::F_ACCESS => EventKind::Access(info),
            id::F_PERMISSION => EventKind::Permission(info),
            id::F_TLB_CONFLICT => EventKind::TlbConflict { addr },
            id::F_CFG_CONFLICT => EventKind::ConfigConflict,
            id::E_PAGE_REQUEST => EventKind::PageRequest { addr: raw[3] },
            id::F_VMS_FETCH => EventKind::VmsFetch { fetch_addr },
            other => EventKind::Unknown { id: other, raw },
        };
        Event {
            kind,
            sid,
            ssid,
            raw,
        }
    }

    /// The fault details of a translation-stage fault.
    pub fn fault(&self) -> Option<&FaultInfo> {
        match &self.kind {
            EventKind::Translation(f)
            | EventKind::AddressSize(f)
            | EventKind::Access(f)
            | EventKind::Permission(f)
            | EventKind::WalkExternalAbort(f) => Some(f),
            _ => None,
        }
    }
}

/// Result of one [`crate::Smmu::drain_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Records consumed.
    pub events: u32,
    /// The SMMU signalled an overflow (events were lost) since the last drain.
    pub overflowed: bool,
}

/// The event queue's driver-side state.
#[derive(Debug)]
pub struct Evtq {
    pub block: DmaBlock,
    pub geom: QueueGeom,
    /// Our consumer pointer (index + wrap, plus OVACKFLG in bit 31).
    pub cons: u32,
}

impl Evtq {
    /// Reads the record at queue index `idx`.
    pub fn record(&self, idx: u32) -> [u64; 4] {
        let base = idx as usize * 4;
        [
            dma::read_u64(&self.block, base),
            dma::read_u64(&self.block, base + 1),
            dma::read_u64(&self.block, base + 2),
            dma::read_u64(&self.block, base + 3),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_translation_fault() {
        // F_TRANSLATION, SSV, SSID 5, SID 8; RnW read, PnU; InputAddr.
        let q0 = 0x10 | (1 << 11) | (5 << 12) | (8u64 << 32);
        let q1 = (1u64 << 35) | (1 << 33) | (1 << 40);
        let e = Event::decode([q0, q1, 0x1234_5000, 0]);
        assert_eq!(e.sid, 8);
        assert_eq!(e.ssid, Some(5));
        let EventKind::Translation(f) = e.kind else {
            panic!("{e:?}")
        };
        assert!(f.read && f.privileged && !f.instruction && !f.stage2);
        assert_eq!((f.addr, f.class), (0x1234_5000, 1));
    }

    #[test]
    fn decode_every_type_without_panic() {
        for t in 0..=255u64 {
            let e = Event::decode([t | (3u64 << 32), u64::MAX, u64::MAX, u64::MAX]);
            assert_eq!(e.sid, 3);
            assert_eq!(e.ssid, None);
        }
        assert_eq!(
            Event::decode([0x04 | (9u64 << 32), 0, 0, 0]).kind,
            EventKind::BadSte
        );
        assert_eq!(Event::decode([0x0a, 0, 0, 0]).kind, EventKind::BadCd);
        assert_eq!(
            Event::decode([0x06, 0, 0, 0]).kind,
            EventKind::StreamDisabled
        );
        assert_eq!(Event::decode([0x02, 0, 0, 0]).kind, EventKind::BadStreamId);
        assert!(
            matches!(Event::decode([0x13, 0, 7, 0]).kind, EventKind::Permission(f) if f.addr == 7)
        );
        assert!(matches!(
            Event::decode([0x12, 0, 0, 0]).kind,
            EventKind::Access(_)
        ));
        assert!(matches!(
            Event::decode([0x11, 0, 0, 0]).kind,
            EventKind::AddressSize(_)
        ));
        let raw = [0x7f, 1, 2, 3];
        assert_eq!(
            Event::decode(raw).kind,
            EventKind::Unknown { id: 0x7f, raw }
        );
    }
}
