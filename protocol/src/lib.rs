//! Wire protocol between driver processes and the IOMMU server.
//!
//! One definition of every message, shared by the server (`iommu-server`'s
//! request handler) and the client library (`iommu-client`). Messages are
//! [postcard] encodings of [`Request`] and [`Reply`], carried in the message
//! registers of one `seL4_Call` on the client's badged endpoint. The badge,
//! not anything in the message, says who the caller is.
//!
//! # Message registers and byte length
//!
//! An seL4 message is at most [`MSG_MAX_WORDS`] (120) 64-bit message
//! registers, i.e. [`MSG_MAX_BYTES`] (960) bytes. The first
//! [`FASTPATH_WORDS`] (4) travel in CPU registers; a message of at most 4
//! words **and no capability** takes the kernel's IPC fastpath, roughly a
//! third of the cost of any other call (see DESIGN.md section 7).
//!
//! Bytes are packed into words little-endian ([`pack_words`] /
//! [`unpack_words`]); the length *in words* goes into seL4's `MessageInfo`.
//! **No length prefix is sent**: postcard is self-delimiting, so the decoder
//! reads one value and then requires that what is left is *zero padding
//! shorter than one word* (at most 7 bytes, all zero). Anything else left over
//! is [`ErrorCode::Malformed`]. This costs nothing on the wire and keeps the
//! encoding of each value unique up to padding.
//!
//! Decoding any byte string returns a value or [`ErrorCode::Malformed`]; it
//! never panics (tested by proptest here and by the `fuzz/` target).
//!
//! ```
//! use iommu_protocol::*;
//!
//! // The client side of one map: encode, pack into message registers.
//! let req = Request::Map {
//!     domain: DomainId(1),
//!     iova_pfn: 0x10_0000 >> WIRE_PAGE_SHIFT,
//!     memory: MemoryHandle(0),
//!     offset_pfn: 0,
//!     pages: 2,
//!     perms: Perms::RW,
//! };
//! let mut buf = [0u8; MSG_MAX_BYTES];
//! let len = encode(&req, &mut buf).unwrap();
//! let mut mrs = [0u64; MSG_MAX_WORDS];
//! let words = pack_words(&buf[..len], &mut mrs).unwrap(); // MessageInfo.length
//! assert!(fastpath_eligible(len, 0) && words <= FASTPATH_WORDS);
//!
//! // The server side: only the word count travels; padding is tolerated.
//! let mut bytes = [0u8; MSG_MAX_BYTES];
//! let n = unpack_words(&mrs[..words], &mut bytes).unwrap();
//! assert_eq!(decode_request(&bytes[..n]), Ok(req));
//! assert_eq!(decode_request(&[0xff; 3]), Err(ErrorCode::Malformed));
//! ```
//!
//! # Units
//!
//! Addresses and lengths in [`Request::Map`], [`Request::MapBatch`] and
//! [`Request::Unmap`] are in **4 KiB wire pages** ([`WIRE_PAGE_SIZE`]):
//! `iova_pfn` is `iova >> 12`, `offset_pfn` the offset into the registered
//! memory in pages, `pages` the length in pages. This is what makes the worst
//! case of a single map fit the fastpath: a byte-granular encoding of the same
//! request can reach 42 bytes. The client library takes bytes and converts
//! (refusing unaligned values locally with [`ErrorCode::Misaligned`]). A server
//! whose domains use a larger granule still checks alignment against it.
//!
//! # Wire format
//!
//! Each [`Request`] is its postcard variant index (one byte, all indices are
//! below 128) followed by its fields: `u8` as one raw byte, every wider
//! integer (and every handle newtype) as a LEB128 varint (`u16` ≤ 3 bytes,
//! `u32` ≤ 5, `u64` ≤ 10), `Option` as a 0/1 byte then the value, `bool` as
//! 0/1, sequences as a varint length then the elements. Sizes below are the
//! full range over **every** value of the field types, not only valid ones
//! (the `sizes` tests assert each bound).
//!
//! | request | index | bytes | words (MRs) | extra caps | fastpath |
//! |---|---|---|---|---|---|
//! | `Hello { min_version, max_version }` | 0 | 3–7 | 1 | 0 | yes |
//! | `AllocDomain` | 1 | 1 | 1 | 0 | yes |
//! | `FreeDomain { domain }` | 2 | 2–6 | 1 | 0 | yes |
//! | `Attach { stream, ssid, domain }` | 3 | 4–16 | 1–2 | 0 | yes |
//! | `Detach { stream, ssid }` | 4 | 3–11 | 1–2 | 0 | yes |
//! | `Map { domain, iova_pfn, memory, offset_pfn, pages, perms }` | 5 | 7–**32** | 1–**4** | 0 | **yes, always** |
//! | `MapBatch { domain, entries[≤32] }` | 6 | 3–839 | 1–105 | 0 | only if ≤ 32 bytes (e.g. one small entry) |
//! | `Unmap { domain, iova_pfn, pages }` | 7 | 4–21 | 1–3 | 0 | **yes, always** |
//! | `BindSva { stream, ssid }` | 8 | 3–11 | 1–2 | 0 | yes |
//! | `UnbindSva { stream, ssid }` | 9 | 3–11 | 1–2 | 0 | yes |
//! | `Faults { max }` | 10 | 2 | 1 | 0 | yes |
//! | `Stats` | 11 | 1 | 1 | 0 | yes |
//! | `RegisterMemory { extend }` | 12 | 2–7 | 1 | 1 frame cap | no (carries a cap) |
//! | `UnregisterMemory { memory }` | 13 | 2–6 | 1 | 0 | yes |
//! | `Walk { domain, iova_pfn }` | 14 | 3–16 | 1–2 | 0 | yes |
//!
//! | reply | index | bytes | words (MRs) | fastpath |
//! |---|---|---|---|---|
//! | `Ok` | 0 | 1 | 1 | yes |
//! | `Hello(ServerInfo)` | 1 | 8–21 | 1–3 | yes |
//! | `Domain(id)` | 2 | 2–6 | 1 | yes |
//! | `Memory { memory, pages }` | 3 | 3–16 | 1–2 | yes |
//! | `Faults(FaultBatch)` | 4 | 4–872 | 1–109 | only if ≤ 32 bytes (≤ 1 small record) |
//! | `Stats(ClientStats)` | 5 | 17–91 | 3–12 | only if ≤ 32 bytes |
//! | `Err(code)` | 6 | 2 | 1 | yes |
//! | `Walk(WalkInfo)` | 7 | 4–13 | 1–2 | yes |
//!
//! (The reply's fastpath eligibility matters less: `seL4_ReplyRecv` takes the
//! fastpath under the same ≤ 4 words, no caps rule, and the hot replies,
//! `Ok` and `Err`, are one word.)
//!
//! # Capabilities
//!
//! Only [`Request::RegisterMemory`] carries capabilities, at most
//! [`MAX_CAPS_PER_MSG`] (1) per message: a sender may attach up to
//! `seL4_MsgMaxExtraCaps` (3) caps, but a seL4 5.0.0 receiver has a single
//! receive slot, so every cap past the first is dropped by the kernel unless
//! it is a badged cap to the receiving endpoint itself (which a frame never
//! is). A region made of more frames is registered by one call with
//! `extend: None` (creates a handle), then further calls with
//! `extend: Some(handle)` that append frames to the handle's offset space in
//! order. Any capability sent with another request is released by the server
//! and the request is still handled on its own merits; a `RegisterMemory` with
//! no capability or more than one is [`ErrorCode::Malformed`].
//!
//! # Versioning
//!
//! [`Request::Hello`] carries the range of ABI versions the client speaks; the
//! server picks the highest one it also speaks ([`ABI_VERSION`]) or answers
//! [`ErrorCode::VersionMismatch`]. Any other request before a successful
//! `Hello` is answered with [`ErrorCode::VersionMismatch`] as well.
#![no_std]
#![forbid(unsafe_code)]

use heapless::Vec;
use serde::{Deserialize, Serialize};

mod hot;
pub use hot::{
    decode_hot, decode_short_reply, empty_faults_word, encode_hot, is_error_word, reply_word, Hot,
    ERROR_CODES,
};

/// The protocol version this crate speaks.
pub const ABI_VERSION: u16 = 1;

/// Message registers in one seL4 message (`seL4_MsgMaxLength`).
pub const MSG_MAX_WORDS: usize = 120;
/// Bytes in one message register.
pub const WORD_BYTES: usize = 8;
/// Largest message in bytes: the request and reply buffers have this size.
pub const MSG_MAX_BYTES: usize = MSG_MAX_WORDS * WORD_BYTES;
/// Messages of at most this many words (and no capability) take seL4's IPC
/// fastpath on AArch64.
pub const FASTPATH_WORDS: usize = 4;
/// [`FASTPATH_WORDS`] in bytes.
pub const FASTPATH_BYTES: usize = FASTPATH_WORDS * WORD_BYTES;
/// Extra capabilities per seL4 message (`seL4_MsgMaxExtraCaps`).
pub const MAX_CAPS_PER_MSG: usize = 1;

/// Unit of addresses and lengths in map and unmap requests.
pub const WIRE_PAGE_SHIFT: u32 = 12;
/// `1 << WIRE_PAGE_SHIFT`.
pub const WIRE_PAGE_SIZE: u64 = 1 << WIRE_PAGE_SHIFT;

/// Most entries in one [`Request::MapBatch`] (its worst case is 839 bytes).
pub const MAX_BATCH: usize = 32;
/// Most fault records in one [`Reply::Faults`].
pub const MAX_FAULTS_PER_REPLY: usize = 32;

/// A buffer of one message's size.
pub type MsgBuf = [u8; MSG_MAX_BYTES];

/// A client's name for one of its I/O address spaces. Handles are per
/// client: the same number held by two clients names two different domains
/// (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DomainId(
    /// The handle's bits, as the server made them (opaque to the client).
    pub u32,
);

/// A client's name for memory it registered (a list of frames). Per client,
/// like [`DomainId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemoryHandle(
    /// The handle's bits, as the server made them (opaque to the client).
    pub u32,
);

/// An SMMUv3 StreamID (a PCI requester ID on QEMU `virt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId(
    /// The StreamID's value.
    pub u32,
);

/// A SubstreamID (PASID). `Ssid(0)` is the substream of a device without
/// PASIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ssid(
    /// The SubstreamID's value.
    pub u32,
);

/// Access permissions of a mapping (bits; unknown bits are refused by the
/// server with [`ErrorCode::Malformed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Perms(
    /// The bits: [`Perms::READ`], [`Perms::WRITE`].
    pub u8,
);

impl Perms {
    /// The device may read.
    pub const READ: Perms = Perms(1);
    /// The device may write. (Stage 1 cannot express write-only: the
    /// server's page tables make a WRITE mapping readable too.)
    pub const WRITE: Perms = Perms(2);
    /// Read and write.
    pub const RW: Perms = Perms(3);
    /// Every defined bit.
    pub const ALL: Perms = Perms(3);

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }
    /// Only defined bits, and at least one of them (a mapping nobody can use
    /// is a client bug).
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::ALL.0 == 0 && self.0 != 0
    }
}

impl core::ops::BitOr for Perms {
    type Output = Perms;
    fn bitor(self, rhs: Perms) -> Perms {
        Perms(self.0 | rhs.0)
    }
}

/// One region of a scatter list: `pages` wire pages of `memory` starting at
/// page `offset_pfn`, mapped at I/O page `iova_pfn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    /// The first I/O page (`iova >> 12`).
    pub iova_pfn: u64,
    /// The registered memory mapped there.
    pub memory: MemoryHandle,
    /// The first page of `memory` mapped, counted from its start.
    pub offset_pfn: u32,
    /// How many wire pages (not 0).
    pub pages: u32,
    /// What the device may do there.
    pub perms: Perms,
}

/// A request from a client. See the crate docs for sizes.
///
/// Variant order is the wire format: append new variants, never reorder.
// Boxing is not available (no allocator); a message is decoded once per
// call into one stack value, so the size of the largest variant is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Negotiate the protocol version; the reply carries the server's
    /// limits. Must be the first request of a client.
    Hello {
        /// The oldest version the client speaks.
        min_version: u16,
        /// The newest version the client speaks.
        max_version: u16,
    },
    /// Create an empty I/O address space (one page table, one ASID).
    AllocDomain,
    /// Destroy a domain. Refused with [`ErrorCode::InUse`] while a stream is
    /// attached; its remaining mappings are removed.
    FreeDomain {
        /// The domain to destroy.
        domain: DomainId,
    },
    /// Make `(stream, ssid)` translate through `domain`. If the pair is
    /// attached elsewhere it moves (the server detaches it first, under its
    /// ASID lock).
    Attach {
        /// The device's stream; the client's policy must grant it.
        stream: StreamId,
        /// The substream (`Ssid(0)` for a device without PASIDs).
        ssid: Ssid,
        /// One of the client's domains.
        domain: DomainId,
    },
    /// Stop translating `(stream, ssid)` (its DMA then aborts).
    Detach {
        /// The device's stream.
        stream: StreamId,
        /// The substream.
        ssid: Ssid,
    },
    /// Map `pages` wire pages of registered memory. Always ≤ 32 bytes.
    Map {
        /// The domain to map into.
        domain: DomainId,
        /// The first I/O page (`iova >> 12`).
        iova_pfn: u64,
        /// The registered memory to map.
        memory: MemoryHandle,
        /// The first page of `memory` mapped.
        offset_pfn: u32,
        /// How many wire pages (not 0).
        pages: u32,
        /// What the device may do there.
        perms: Perms,
    },
    /// Map a scatter list into one domain: all entries or none.
    MapBatch {
        /// The domain to map into.
        domain: DomainId,
        /// The regions, at most [`ServerInfo::max_batch`] of them.
        entries: Vec<MapEntry, MAX_BATCH>,
    },
    /// Remove every translation in `[iova_pfn, iova_pfn + pages)`; the whole
    /// range must be mapped. Always ≤ 21 bytes.
    Unmap {
        /// The domain to unmap from.
        domain: DomainId,
        /// The first I/O page (`iova >> 12`).
        iova_pfn: u64,
        /// How many wire pages.
        pages: u32,
    },
    /// Give `(stream, ssid)` the client's shared virtual address space (one
    /// per client, one ASID shared by all its bindings). The reply names the
    /// SVA domain, which the client fills with `Map` at its own virtual
    /// addresses.
    BindSva {
        /// The device's stream.
        stream: StreamId,
        /// The substream.
        ssid: Ssid,
    },
    /// Undo [`Request::BindSva`].
    UnbindSva {
        /// The device's stream.
        stream: StreamId,
        /// The substream.
        ssid: Ssid,
    },
    /// Take up to `max` (capped at [`MAX_FAULTS_PER_REPLY`]) pending fault
    /// records of this client's streams.
    Faults {
        /// The most records the client wants in the reply.
        max: u8,
    },
    /// This client's usage and quotas.
    Stats,
    /// Register the frames whose caps travel with this message (1 to 3).
    /// `extend: None` creates a handle; `Some(h)` appends to `h`.
    RegisterMemory {
        /// `None` for a new handle, or the handle to append the frames to.
        extend: Option<MemoryHandle>,
    },
    /// Forget registered memory and release its caps. Refused with
    /// [`ErrorCode::InUse`] while any page of it is mapped (unmap first).
    UnregisterMemory {
        /// The memory to forget.
        memory: MemoryHandle,
    },
    /// Where the SMMU's walk of I/O address `iova_pfn` (a wire page) in one
    /// of the client's domains ends: for finding out why a DMA faulted.
    Walk {
        /// One of the client's domains.
        domain: DomainId,
        /// The I/O page to look up (`iova >> 12`).
        iova_pfn: u64,
    },
}

/// What the server can do, returned by [`Request::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The version both sides now speak.
    pub version: u16,
    /// Most entries in one [`Request::MapBatch`] (≤ [`MAX_BATCH`]).
    pub max_batch: u16,
    /// Page and block sizes the server's page tables use: bit n set means
    /// 2^n bytes.
    pub page_sizes: u64,
    /// Input (IOVA) address bits.
    pub ias_bits: u8,
    /// SubstreamID bits (0: no substreams, only `Ssid(0)`).
    pub ssid_bits: u8,
    /// Most records one [`Request::Faults`] returns.
    pub max_faults: u8,
    /// Whether [`Request::BindSva`] is available.
    pub sva: bool,
}

/// Kinds of fault record, after SMMUv3 event types (F_TRANSLATION etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultKind {
    /// No translation for the address (F_TRANSLATION).
    Translation,
    /// Translation exists but forbids the access (F_PERMISSION).
    Permission,
    /// Access flag fault (F_ACCESS).
    Access,
    /// Address out of the table's range (F_ADDR_SIZE).
    AddressSize,
    /// Stream or substream not configured (C_BAD_STE, C_BAD_CD, …).
    BadConfig,
    /// Anything else.
    Other,
}

/// One fault on one of the client's streams. Repeats of the same fault (same
/// stream, substream, page, kind and direction) are coalesced into `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// The stream whose access faulted (always one the client owns).
    pub stream: StreamId,
    /// Its substream.
    pub ssid: Ssid,
    /// Faulting input address.
    pub iova: u64,
    /// What kind of fault the SMMU reported.
    pub kind: FaultKind,
    /// The access was a write.
    pub write: bool,
    /// How many events this record stands for.
    pub count: u32,
}

/// Decoded for a person, the StreamID in hex as PCI requester IDs are
/// written (bus:device.function packed): `stream 0x8 ssid 0: write at
/// 0x100000: translation fault (nothing mapped there) x3`.
///
/// ```
/// use iommu_protocol::{FaultKind, FaultRecord, Ssid, StreamId};
/// let r = FaultRecord {
///     stream: StreamId(8),
///     ssid: Ssid(0),
///     iova: 0x10_0000,
///     kind: FaultKind::Permission,
///     write: true,
///     count: 3,
/// };
/// assert_eq!(
///     r.to_string(),
///     "stream 0x8 ssid 0: write at 0x100000: permission fault (no such access allowed) x3"
/// );
/// ```
impl core::fmt::Display for ErrorCode {
    /// What the code means to the caller, in a few words.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ErrorCode::NotPermitted => "not permitted by the policy",
            ErrorCode::NoSuchStream => "no such stream",
            ErrorCode::NoSuchDomain => "no such domain",
            ErrorCode::NoSuchMemory => "no such memory",
            ErrorCode::Overlap => "overlaps a mapping",
            ErrorCode::NotMapped => "not mapped",
            ErrorCode::Misaligned => "misaligned",
            ErrorCode::OutOfRange => "out of range",
            ErrorCode::QuotaExceeded => "quota exceeded",
            ErrorCode::NoMemory => "the server is out of table memory",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Malformed => "malformed request",
            ErrorCode::Busy => "the reply did not fit the transport",
            ErrorCode::HardwareError => "SMMU error",
            ErrorCode::VersionMismatch => "no common protocol version (or no Hello)",
            ErrorCode::InUse => "in use",
            ErrorCode::BadCapability => "not a capability the server accepts",
            ErrorCode::NoAsid => "no ASID left",
        })
    }
}

impl core::error::Error for ErrorCode {}

impl core::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self.kind {
            FaultKind::Translation => "translation fault (nothing mapped there)",
            FaultKind::Permission => "permission fault (no such access allowed)",
            FaultKind::Access => "access flag fault",
            FaultKind::AddressSize => "address size fault (beyond the table's range)",
            FaultKind::BadConfig => "configuration fault (stream or substream not attached)",
            FaultKind::Other => "other fault",
        };
        write!(
            f,
            "stream {:#x} ssid {}: {} at {:#x}: {what}",
            self.stream.0,
            self.ssid.0,
            if self.write { "write" } else { "read" },
            self.iova
        )?;
        if self.count > 1 {
            write!(f, " x{}", self.count)?;
        }
        Ok(())
    }
}

/// Reply to [`Request::Faults`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultBatch {
    /// The records taken, oldest first.
    pub records: Vec<FaultRecord, MAX_FAULTS_PER_REPLY>,
    /// Fault events that could not be queued since the last `Faults` call
    /// (queue full or the stream over its share).
    pub dropped: u32,
    /// More records are still pending.
    pub more: bool,
}

/// A client's usage and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientStats {
    /// Domains the client holds (its SVA domain included).
    pub domains: u32,
    /// The most domains it may hold.
    pub max_domains: u32,
    /// Bytes mapped across all its domains.
    pub mapped_bytes: u64,
    /// The most bytes it may have mapped.
    pub max_mapped_bytes: u64,
    /// Mapping records across all its domains (each map entry, or each
    /// piece a partial unmap left of one).
    pub mappings: u32,
    /// The most mapping records it may hold.
    pub max_mappings: u32,
    /// I/O page-table pages (4 KiB each) of its domains.
    pub pt_pages: u32,
    /// The most page-table pages its domains may use.
    pub max_pt_pages: u32,
    /// ASIDs it holds: one per domain.
    pub asids: u32,
    /// The most ASIDs it may hold.
    pub max_asids: u32,
    /// Registered memory handles.
    pub memory_regions: u32,
    /// The most memory handles it may hold.
    pub max_memory_regions: u32,
    /// Frame capabilities the server holds for it, across all its handles.
    pub memory_frames: u32,
    /// The most frame capabilities it may register.
    pub max_memory_frames: u32,
    /// Fault records waiting for a [`Request::Faults`].
    pub faults_pending: u32,
    /// Fault events dropped since the last [`Request::Faults`].
    pub faults_dropped: u32,
}

/// Why a request failed. Variant order is the wire format: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The policy does not let this client do that (e.g. a stream it does not
    /// own), or the badge is unknown.
    NotPermitted,
    /// The stream (or substream) does not exist on this SMMU, or the pair is
    /// not attached.
    NoSuchStream,
    /// No domain of this client has that handle.
    NoSuchDomain,
    /// No memory of this client has that handle.
    NoSuchMemory,
    /// The IOVA range overlaps an existing mapping.
    Overlap,
    /// Part of the range is not mapped.
    NotMapped,
    /// An address or length is not aligned to the domain's granule.
    Misaligned,
    /// An address or length is outside what the domain or memory covers.
    OutOfRange,
    /// The request would exceed one of the client's quotas.
    QuotaExceeded,
    /// The server ran out of memory for tables.
    NoMemory,
    /// Not supported by this server or SMMU (e.g. SSIDs without substreams).
    Unsupported,
    /// The message does not decode, or carries invalid values.
    Malformed,
    /// The server could not put its reply in the reply buffer (a
    /// transport too small for the reply: the transport's bug, not the
    /// request's). What the request did stands; asking again does not help.
    Busy,
    /// The SMMU reported an error (command queue error, timeout).
    HardwareError,
    /// No common protocol version, or no successful `Hello` yet.
    VersionMismatch,
    /// The object is still in use (attached domain, mapped memory).
    InUse,
    /// A transferred capability is not a frame the server can use.
    BadCapability,
    /// The SMMU has no ASID left for one more domain in use: every ASID is
    /// held by a domain with devices attached (idle domains' ASIDs are
    /// recycled first).
    NoAsid,
}

/// A reply from the server. Variant order is the wire format: append only.
// Boxing is not available (no allocator); a message is decoded once per
// call into one stack value, so the size of the largest variant is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Success with nothing to return.
    Ok,
    /// To [`Request::Hello`]: the version picked and the server's limits.
    Hello(ServerInfo),
    /// To [`Request::AllocDomain`] and [`Request::BindSva`]: the domain.
    Domain(DomainId),
    /// A registration: the handle and its total size in wire pages so far.
    Memory {
        /// The handle, new or extended.
        memory: MemoryHandle,
        /// The memory's size in wire pages, every frame so far included.
        pages: u64,
    },
    /// To [`Request::Faults`].
    Faults(FaultBatch),
    /// To [`Request::Stats`].
    Stats(ClientStats),
    /// The request was refused, and changed nothing; after
    /// [`ErrorCode::HardwareError`] (the SMMU failed part-way) part of it
    /// may have been done.
    Err(ErrorCode),
    /// To [`Request::Walk`].
    Walk(WalkInfo),
}

/// Where the SMMU's stage-1 walk of an I/O address ends ([`Request::Walk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkInfo {
    /// 0-3: the level of the last entry the walk read (3: a 4 KiB page's
    /// leaf table; 1 or 2: a 1 GiB or 2 MiB block's table).
    pub level: u8,
    /// The leaf descriptor there (VMSAv8-64 stage 1: output address,
    /// AP, XN, AttrIndx...), 0 if that entry is invalid: then the device's
    /// access to this address is a translation fault at `level`. Table
    /// descriptors (the server's own memory) are never shown.
    pub descriptor: u64,
    /// What the leaf lets the device do (empty if not mapped).
    pub perms: Perms,
}

impl WalkInfo {
    /// Whether a leaf translates the address.
    pub fn mapped(&self) -> bool {
        self.descriptor & 1 != 0
    }
}

/// Why encoding failed: only a buffer too small for the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Encodes `value` at the start of `buf`; returns the byte length.
///
/// Every [`Request`] and [`Reply`] fits [`MSG_MAX_BYTES`], so with a
/// [`MsgBuf`] this only fails for a buffer that is too small.
pub fn encode<T: Serialize>(value: &T, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
    postcard::to_slice(value, buf)
        .map(|s| s.len())
        .map_err(|_| BufferTooSmall)
}

/// Decodes one value from `bytes`, tolerating up to 7 bytes of zero padding
/// after it (the rest of the last message word). Anything else, including
/// trailing bytes, is [`ErrorCode::Malformed`]. Never panics.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ErrorCode> {
    // The value is returned straight from the deserializer: `take_from_bytes` hands back
    // a `(T, &[u8])` that then moves through `map_err` and `?`, and a
    // `Request` or `Reply` is ~800 bytes (four copies were most of the
    // server's decoding time on seL4).
    let mut de = postcard::Deserializer::from_bytes(bytes);
    match T::deserialize(&mut de) {
        Ok(value) => match de.finalize() {
            Ok(rest) if rest.len() < WORD_BYTES && rest.iter().all(|&b| b == 0) => Ok(value),
            _ => Err(ErrorCode::Malformed),
        },
        Err(_) => Err(ErrorCode::Malformed),
    }
}

/// Decodes a request; see [`decode`].
pub fn decode_request(bytes: &[u8]) -> Result<Request, ErrorCode> {
    decode(bytes)
}

/// Decodes a reply; see [`decode`].
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, ErrorCode> {
    decode(bytes)
}

/// Message words needed for `bytes` bytes (what goes into `MessageInfo`).
pub const fn words_for(bytes: usize) -> usize {
    bytes.div_ceil(WORD_BYTES)
}

/// Packs `bytes` into message-register words, little-endian, zero-padding
/// the last word. Returns the number of words written, or `None` if `words`
/// is too short.
pub fn pack_words(bytes: &[u8], words: &mut [u64]) -> Option<usize> {
    let n = words_for(bytes.len());
    let out = words.get_mut(..n)?;
    // Whole words as fixed-size arrays (a copy of a slice whose length the
    // compiler cannot see is a call to memcpy per word).
    let (whole, tail) = bytes.as_chunks::<WORD_BYTES>();
    for (word, chunk) in out.iter_mut().zip(whole) {
        *word = u64::from_le_bytes(*chunk);
    }
    if let Some(last) = out.get_mut(whole.len()) {
        // Little-endian, byte by byte (a slice copy here is a memcpy call).
        *last = tail
            .iter()
            .rev()
            .fold(0, |word, &b| word << 8 | u64::from(b));
    }
    Some(n)
}

/// Unpacks message-register words into bytes (the inverse of
/// [`pack_words`]); returns the byte length, `8 * words.len()`, padding
/// included (which [`decode`] tolerates), or `None` if `bytes` is too short.
pub fn unpack_words(words: &[u64], bytes: &mut [u8]) -> Option<usize> {
    let n = words.len().checked_mul(WORD_BYTES)?;
    let (out, _) = bytes.get_mut(..n)?.as_chunks_mut::<WORD_BYTES>();
    for (chunk, word) in out.iter_mut().zip(words) {
        *chunk = word.to_le_bytes();
    }
    Some(n)
}

/// Whether a message of `bytes` bytes and `caps` capabilities takes the
/// seL4 IPC fastpath.
pub const fn fastpath_eligible(bytes: usize, caps: usize) -> bool {
    caps == 0 && words_for(bytes) <= FASTPATH_WORDS
}

impl Request {
    /// Whether this request must carry capabilities.
    pub fn carries_caps(&self) -> bool {
        matches!(self, Request::RegisterMemory { .. })
    }
}

impl From<ErrorCode> for Reply {
    fn from(e: ErrorCode) -> Reply {
        Reply::Err(e)
    }
}
