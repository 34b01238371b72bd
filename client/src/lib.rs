//! Typed client API of the IOMMU server.
//!
//! A driver holds a badged endpoint capability to the server; every method
//! of [`Iommu`] is one `seL4_Call` on it through a [`Transport`] (one per
//! frame for [`Iommu::register_memory`]: a seL4 receiver takes one cap per
//! message). Memory is
//! never named by physical address: the driver registers the frame
//! capabilities it holds and names memory by the returned [`MemoryHandle`],
//! so it can never map memory it does not hold.
//!
//! ```
//! use iommu_client::{Error, ErrorCode, Iommu, Perms, Ssid, StreamId, Transport};
//!
//! /// Give device 00:01.0 (StreamID 8) a 2-page DMA window at I/O address
//! /// 0x10_0000 over the frames `frames` (caps this driver holds).
//! fn setup_dma<T: Transport>(transport: T, frames: &[T::Cap]) -> Result<Iommu<T>, Error> {
//!     let mut iommu = Iommu::connect(transport)?; // negotiates the version
//!     let domain = iommu.alloc_domain()?;
//!     let memory = iommu.register_memory(frames)?;
//!     iommu.map(domain, 0x10_0000, memory.handle, 0, 0x2000, Perms::RW)?;
//!     iommu.attach(StreamId(8), Ssid(0), domain)?;
//!     // Errors are an enum: mapping the same range again is an Overlap.
//!     match iommu.map(domain, 0x10_0000, memory.handle, 0, 0x1000, Perms::READ) {
//!         Err(Error::Iommu(ErrorCode::Overlap)) => {}
//!         other => panic!("unexpected {other:?}"),
//!     }
//!     for fault in iommu.faults()?.records {
//!         let _ = (fault.stream, fault.iova, fault.kind);
//!     }
//!     Ok(iommu)
//! }
//! ```
//!
//! Host tests use [`InProcess`], which calls the server's request handler
//! directly (see `server/tests/client_*.rs`); on seL4 the transport packs the
//! request into message registers with [`iommu_protocol::pack_words`] and
//! makes one `seL4_Call`.
//!
//! Drivers that would rather not manage I/O addresses by hand use the
//! DMA-API-style layer in [`dma`]: a client-side IOVA allocator per domain,
//! map-for-one-request with a [`Direction`], scatter lists and persistent
//! mappings for rings.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use iommu_protocol::{
    decode_reply, decode_short_reply, encode, encode_hot, pack_words, unpack_words, words_for, Hot,
    MapEntry, MsgBuf, Reply, Request, FASTPATH_BYTES, FASTPATH_WORDS, MSG_MAX_WORDS, WORD_BYTES,
};
pub mod dma;
pub use dma::{Direction, DmaAddr, DmaDomain, IovaAllocator, Placement, Segment, UnmapError};

pub use iommu_protocol::{
    ClientStats, DomainId, ErrorCode, FaultBatch, FaultKind, FaultRecord, MemoryHandle, Perms,
    ServerInfo, Ssid, StreamId, WalkInfo, ABI_VERSION, MAX_BATCH, MAX_CAPS_PER_MSG, MSG_MAX_BYTES,
    WIRE_PAGE_SIZE,
};

/// How a transport failed (the request may or may not have reached the
/// server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// More than [`MAX_CAPS_PER_MSG`] capabilities.
    TooManyCaps,
    /// More than [`MSG_MAX_BYTES`] bytes.
    TooLong,
    /// The kernel refused the call (an seL4 error code).
    Ipc(u64),
}

/// Everything a call can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The server refused, or the library refused locally for the reason
    /// the server would give (e.g. [`ErrorCode::Misaligned`]).
    Iommu(ErrorCode),
    /// The message did not get through.
    Transport(TransportError),
    /// The server answered with a reply of the wrong kind or one that does
    /// not decode.
    UnexpectedReply,
    /// The client's own I/O address allocator ([`dma::IovaAllocator`]) has
    /// no free range of the size and alignment asked for in its window, or
    /// already tracks as many ranges as it can (`N - 1`). Nothing was sent
    /// to the server.
    IovaExhausted,
}

impl From<ErrorCode> for Error {
    fn from(e: ErrorCode) -> Self {
        Error::Iommu(e)
    }
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Error::Transport(e)
    }
}

/// One request/reply exchange with the server, shaped like one `seL4_Call`:
/// the request's bytes go in message registers (the transport sends
/// `ceil(len / 8)` words, zero-padded; the protocol tolerates the padding),
/// `caps` go as extra capabilities (at most [`MAX_CAPS_PER_MSG`]), and the reply's bytes come
/// back in `reply` (padding included).
pub trait Transport {
    /// A capability as the sender names it: an seL4 CPtr in the client's
    /// CSpace, or a host test's token.
    type Cap: Copy;
    /// Returns the reply's length in bytes.
    fn call(
        &mut self,
        request: &[u8],
        caps: &[Self::Cap],
        reply: &mut MsgBuf,
    ) -> Result<usize, TransportError>;

    /// A call of the first `words` (at most [`FASTPATH_WORDS`]) of
    /// `request` and no capability (the hot requests, from
    /// [`iommu_protocol::encode_hot`]): the reply's first words go into
    /// `reply` and its length in words is returned (a longer reply than
    /// `reply` holds is cut short). The default goes through
    /// [`Transport::call`]; the seL4 transport passes the words straight
    /// through the message registers.
    fn call_registers(
        &mut self,
        request: &[u64; FASTPATH_WORDS],
        words: usize,
        reply: &mut [u64; FASTPATH_WORDS],
    ) -> Result<usize, TransportError> {
        let request = request.get(..words).ok_or(TransportError::TooLong)?;
        let mut bytes = [0u8; FASTPATH_BYTES];
        let n = unpack_words(request, &mut bytes).ok_or(TransportError::TooLong)?;
        let mut out: MsgBuf = [0; MSG_MAX_BYTES];
        let len = self.call(&bytes[..n], &[], &mut out)?.min(MSG_MAX_BYTES);
        *reply = [0; FASTPATH_WORDS];
        let _ = pack_words(&out[..len.min(FASTPATH_BYTES)], reply);
        Ok(words_for(len))
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    type Cap = T::Cap;
    fn call(
        &mut self,
        request: &[u8],
        caps: &[Self::Cap],
        reply: &mut MsgBuf,
    ) -> Result<usize, TransportError> {
        (**self).call(request, caps, reply)
    }
    fn call_registers(
        &mut self,
        request: &[u64; FASTPATH_WORDS],
        words: usize,
        reply: &mut [u64; FASTPATH_WORDS],
    ) -> Result<usize, TransportError> {
        (**self).call_registers(request, words, reply)
    }
}

/// The server side of [`InProcess`]: what the server's request handler
/// looks like to a transport (`handle(badge, request, caps, reply) -> reply
/// length`). Implemented for every such closure.
pub trait LocalServer<C> {
    /// Handles one request from the client with `badge`, carrying `caps`;
    /// writes the reply into `reply` and returns its length in bytes.
    fn handle(&mut self, badge: u64, request: &[u8], caps: &[C], reply: &mut [u8]) -> usize;
}

impl<C, F: FnMut(u64, &[u8], &[C], &mut [u8]) -> usize> LocalServer<C> for F {
    fn handle(&mut self, badge: u64, request: &[u8], caps: &[C], reply: &mut [u8]) -> usize {
        self(badge, request, caps, reply)
    }
}

/// A transport that calls the server's handler in the same process, with
/// the client's badge, and does to the bytes what seL4 does: both ways they
/// travel as whole message words (zero-padded), at most 120 of them, with
/// at most [`MAX_CAPS_PER_MSG`] capabilities.
pub struct InProcess<S, C> {
    server: S,
    badge: u64,
    _cap: core::marker::PhantomData<fn(C)>,
}

impl<S: LocalServer<C>, C: Copy> InProcess<S, C> {
    /// A client whose endpoint carries `badge`.
    pub fn new(badge: u64, server: S) -> Self {
        InProcess {
            server,
            badge,
            _cap: core::marker::PhantomData,
        }
    }
}

impl<S: LocalServer<C>, C: Copy> Transport for InProcess<S, C> {
    type Cap = C;
    fn call(
        &mut self,
        request: &[u8],
        caps: &[C],
        reply: &mut MsgBuf,
    ) -> Result<usize, TransportError> {
        if caps.len() > MAX_CAPS_PER_MSG {
            return Err(TransportError::TooManyCaps);
        }
        // Through message registers and back, as the kernel would copy them.
        let mut words = [0u64; MSG_MAX_WORDS];
        let n = pack_words(request, &mut words).ok_or(TransportError::TooLong)?;
        let mut bytes: MsgBuf = [0; MSG_MAX_BYTES];
        let len = unpack_words(&words[..n], &mut bytes).ok_or(TransportError::TooLong)?;
        let mut out: MsgBuf = [0; MSG_MAX_BYTES];
        let reply_len = self
            .server
            .handle(self.badge, &bytes[..len], caps, &mut out)
            .min(MSG_MAX_BYTES);
        let n = pack_words(&out[..reply_len], &mut words).ok_or(TransportError::TooLong)?;
        unpack_words(&words[..n], reply).ok_or(TransportError::TooLong)
    }
}

/// Memory registered with [`Iommu::register_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// The handle to name it by in later calls.
    pub handle: MemoryHandle,
    /// Its size in bytes (the frames' sizes added up).
    pub len: u64,
}

/// One region of a scatter list for [`Iommu::map_batch`], in bytes (each a
/// multiple of [`WIRE_PAGE_SIZE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The I/O address the region starts at.
    pub iova: u64,
    /// The registered memory mapped there.
    pub memory: MemoryHandle,
    /// The byte offset in `memory` of the region's first byte.
    pub offset: u64,
    /// The region's length in bytes.
    pub len: u64,
    /// What the device may do there.
    pub perms: Perms,
}

/// A connection to the IOMMU server.
pub struct Iommu<T: Transport> {
    transport: T,
    info: ServerInfo,
    /// The reply buffer of every call that may get a long reply, kept
    /// (not cleared: only the reply's own bytes are read): clearing a
    /// fresh one per call was most of the cost of an empty `faults` call.
    reply: MsgBuf,
}

fn pages(bytes: u64) -> Result<u32, Error> {
    if bytes & (WIRE_PAGE_SIZE - 1) != 0 {
        return Err(Error::Iommu(ErrorCode::Misaligned));
    }
    u32::try_from(bytes / WIRE_PAGE_SIZE).map_err(|_| Error::Iommu(ErrorCode::OutOfRange))
}

fn pfn(addr: u64) -> Result<u64, Error> {
    if addr & (WIRE_PAGE_SIZE - 1) != 0 {
        return Err(Error::Iommu(ErrorCode::Misaligned));
    }
    Ok(addr / WIRE_PAGE_SIZE)
}

fn entry(r: &Region) -> Result<MapEntry, Error> {
    Ok(MapEntry {
        iova_pfn: pfn(r.iova)?,
        memory: r.memory,
        offset_pfn: pages(r.offset)?,
        pages: pages(r.len)?,
        perms: r.perms,
    })
}

fn expect_ok(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Ok => Ok(()),
        _ => Err(Error::UnexpectedReply),
    }
}

/// Whether `bytes` is `Reply::Ok` as [`iommu_protocol::decode`] accepts it:
/// the variant byte 0, then less than one word of zero padding. Checked on
/// the raw bytes because decoding builds a whole `Reply` (hundreds of bytes,
/// its largest variant is a fault batch) and moves it several times: most of
/// a map or unmap round trip's cost in the client before this.
fn is_ok_reply(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len() <= WORD_BYTES && bytes.iter().all(|&b| b == 0)
}

/// `Reply::Faults` with no records, dropped count below 128: the bytes
/// [variant 4, length 0, dropped, more (0/1)] and zero padding, decoded
/// without building a `Reply` (see [`is_ok_reply`]). `None` for anything
/// else, which then takes the full decoder.
fn empty_fault_batch(bytes: &[u8]) -> Option<FaultBatch> {
    match bytes {
        [4, 0, dropped, more, rest @ ..]
            if *dropped < 0x80
                && *more <= 1
                && rest.len() < WORD_BYTES
                && rest.iter().all(|&b| b == 0) =>
        {
            Some(FaultBatch {
                records: heapless::Vec::new(),
                dropped: u32::from(*dropped),
                more: *more == 1,
            })
        }
        _ => None,
    }
}

impl<T: Transport> Iommu<T> {
    /// Says hello (negotiating the protocol version) and returns the
    /// connection.
    pub fn connect(mut transport: T) -> Result<Self, Error> {
        let hello = Request::Hello {
            min_version: ABI_VERSION,
            max_version: ABI_VERSION,
        };
        let mut reply: MsgBuf = [0; MSG_MAX_BYTES];
        match call(&mut transport, &hello, &[], &mut reply)? {
            Reply::Hello(info) if info.version == ABI_VERSION => Ok(Iommu {
                transport,
                info,
                reply,
            }),
            Reply::Hello(_) => Err(Error::Iommu(ErrorCode::VersionMismatch)),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// The server's limits, from the hello.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The transport (e.g. for its own diagnostics).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The transport, e.g. to drop the connection.
    pub fn into_transport(self) -> T {
        self.transport
    }

    fn call(&mut self, request: &Request, caps: &[T::Cap]) -> Result<Reply, Error> {
        call(&mut self.transport, request, caps, &mut self.reply)
    }

    /// A call whose only success is `Reply::Ok`; same results as
    /// `expect_ok(self.call(..)?)`, without decoding a `Reply` when the
    /// answer is `Ok`.
    fn call_ok(&mut self, request: &Request, caps: &[T::Cap]) -> Result<(), Error> {
        let len = send(&mut self.transport, request, caps, &mut self.reply)?;
        let bytes = self.reply.get(..len).ok_or(Error::UnexpectedReply)?;
        if is_ok_reply(bytes) {
            return Ok(());
        }
        expect_ok(decoded(bytes)?)
    }

    /// A hot request whose only success is `Reply::Ok`, through
    /// [`Transport::call_registers`]: no `Request`, `Reply` or byte buffer
    /// is built. Same results as [`Iommu::call_ok`] (the reply words are
    /// read as [`iommu_protocol::decode_reply`] reads them).
    #[inline(always)]
    fn call_hot(&mut self, hot: Hot) -> Result<(), Error> {
        let (words, n) = encode_hot(&hot);
        let mut reply = [0u64; FASTPATH_WORDS];
        let len = self.transport.call_registers(&words, n, &mut reply)?;
        match reply.get(..len).and_then(decode_short_reply) {
            Some(Ok(())) => Ok(()),
            Some(Err(code)) => Err(Error::Iommu(code)),
            None => Err(Error::UnexpectedReply),
        }
    }

    /// A new, empty I/O address space.
    pub fn alloc_domain(&mut self) -> Result<DomainId, Error> {
        match self.call(&Request::AllocDomain, &[])? {
            Reply::Domain(d) => Ok(d),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// Destroys a domain with no attached stream (its mappings go with it).
    pub fn free_domain(&mut self, domain: DomainId) -> Result<(), Error> {
        self.call_ok(&Request::FreeDomain { domain }, &[])
    }

    /// Makes `(stream, ssid)` translate through `domain`.
    pub fn attach(&mut self, stream: StreamId, ssid: Ssid, domain: DomainId) -> Result<(), Error> {
        self.call_ok(
            &Request::Attach {
                stream,
                ssid,
                domain,
            },
            &[],
        )
    }

    /// Stops translating `(stream, ssid)`; its DMA aborts from the reply on.
    pub fn detach(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), Error> {
        self.call_ok(&Request::Detach { stream, ssid }, &[])
    }

    /// Registers the frames `frames` (in order: the handle's offset 0 is the
    /// start of the first frame). Sends [`MAX_CAPS_PER_MSG`] per call (one:
    /// a seL4 receiver has a single receive slot); if a later call fails,
    /// the partly registered handle is unregistered again and the error
    /// returned.
    pub fn register_memory(&mut self, frames: &[T::Cap]) -> Result<Memory, Error> {
        let mut chunks = frames.chunks(MAX_CAPS_PER_MSG);
        let first = chunks.next().ok_or(Error::Iommu(ErrorCode::Malformed))?;
        let (handle, mut pages) = self.register_chunk(None, first)?;
        for chunk in chunks {
            match self.register_chunk(Some(handle), chunk) {
                Ok((_, p)) => pages = p,
                Err(e) => {
                    // Best effort: the caller gets the first error either way.
                    let _ = self.unregister_memory(handle);
                    return Err(e);
                }
            }
        }
        Ok(Memory {
            handle,
            len: pages.saturating_mul(WIRE_PAGE_SIZE),
        })
    }

    fn register_chunk(
        &mut self,
        extend: Option<MemoryHandle>,
        caps: &[T::Cap],
    ) -> Result<(MemoryHandle, u64), Error> {
        match self.call(&Request::RegisterMemory { extend }, caps)? {
            Reply::Memory { memory, pages } => Ok((memory, pages)),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// Forgets registered memory; refused with [`ErrorCode::InUse`] while
    /// any of it is mapped.
    pub fn unregister_memory(&mut self, memory: MemoryHandle) -> Result<(), Error> {
        self.call_ok(&Request::UnregisterMemory { memory }, &[])
    }

    /// Maps `len` bytes of `memory` from `offset` at `iova`. All three are
    /// multiples of 4 KiB. One fastpath IPC.
    pub fn map(
        &mut self,
        domain: DomainId,
        iova: u64,
        memory: MemoryHandle,
        offset: u64,
        len: u64,
        perms: Perms,
    ) -> Result<(), Error> {
        let e = entry(&Region {
            iova,
            memory,
            offset,
            len,
            perms,
        })?;
        self.call_hot(Hot::Map { domain, entry: e })
    }

    /// Maps a scatter list into `domain` in one call: every region or none.
    /// At most `info().max_batch` regions ([`ErrorCode::OutOfRange`]
    /// otherwise, before anything is sent).
    pub fn map_batch(&mut self, domain: DomainId, regions: &[Region]) -> Result<(), Error> {
        if regions.len() > usize::from(self.info.max_batch).min(MAX_BATCH) {
            return Err(Error::Iommu(ErrorCode::OutOfRange));
        }
        let mut entries = heapless::Vec::new();
        for r in regions {
            // Cannot overflow: checked against MAX_BATCH above.
            entries
                .push(entry(r)?)
                .map_err(|_| Error::Iommu(ErrorCode::OutOfRange))?;
        }
        self.call_ok(&Request::MapBatch { domain, entries }, &[])
    }

    /// Removes the translations of `[iova, iova + len)`, all of which must be
    /// mapped. When it returns, no DMA can reach the old pages (TLBs are
    /// invalidated and synced first). One fastpath IPC.
    pub fn unmap(&mut self, domain: DomainId, iova: u64, len: u64) -> Result<(), Error> {
        self.call_hot(Hot::Unmap {
            domain,
            iova_pfn: pfn(iova)?,
            pages: pages(len)?,
        })
    }

    /// Binds `(stream, ssid)` to this client's shared virtual address space;
    /// returns the SVA domain, to fill with [`Iommu::map`] at the client's own
    /// virtual addresses.
    pub fn bind_sva(&mut self, stream: StreamId, ssid: Ssid) -> Result<DomainId, Error> {
        match self.call(&Request::BindSva { stream, ssid }, &[])? {
            Reply::Domain(d) => Ok(d),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// Undoes [`Iommu::bind_sva`].
    pub fn unbind_sva(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), Error> {
        self.call_ok(&Request::UnbindSva { stream, ssid }, &[])
    }

    /// Takes the pending fault records of this client's streams (as many as
    /// one reply holds; `more` says whether to call again).
    pub fn faults(&mut self) -> Result<FaultBatch, Error> {
        let max = self.info.max_faults;
        let len = send(
            &mut self.transport,
            &Request::Faults { max },
            &[],
            &mut self.reply,
        )?;
        let bytes = self.reply.get(..len).ok_or(Error::UnexpectedReply)?;
        if let Some(batch) = empty_fault_batch(bytes) {
            return Ok(batch);
        }
        match decoded(bytes)? {
            Reply::Faults(batch) => Ok(batch),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// This client's usage and quotas.
    pub fn stats(&mut self) -> Result<ClientStats, Error> {
        match self.call(&Request::Stats, &[])? {
            Reply::Stats(s) => Ok(s),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// Where the SMMU's walk of `iova` in `domain` ends: the level and the
    /// leaf descriptor there (or that the entry is invalid), to find out why
    /// a DMA faulted. `iova` is rounded down to its wire page.
    pub fn walk(&mut self, domain: DomainId, iova: u64) -> Result<WalkInfo, Error> {
        let iova_pfn = iova / WIRE_PAGE_SIZE;
        match self.call(&Request::Walk { domain, iova_pfn }, &[])? {
            Reply::Walk(w) => Ok(w),
            _ => Err(Error::UnexpectedReply),
        }
    }
}

/// Encodes, calls, decodes; a `Reply::Err` becomes `Err(Error::Iommu)`.
fn call<T: Transport>(
    transport: &mut T,
    request: &Request,
    caps: &[T::Cap],
    reply: &mut MsgBuf,
) -> Result<Reply, Error> {
    let len = send(transport, request, caps, reply)?;
    decoded(reply.get(..len).ok_or(Error::UnexpectedReply)?)
}

/// Encodes `request` and makes the call; the reply's bytes are in `reply`,
/// its length is returned.
fn send<T: Transport>(
    transport: &mut T,
    request: &Request,
    caps: &[T::Cap],
    reply: &mut MsgBuf,
) -> Result<usize, Error> {
    // Most requests (every Map and Unmap) fit the fastpath's 32 bytes:
    // encode those without clearing a whole message buffer first.
    // (A batch rarely does; it goes straight to the full buffer.)
    if !matches!(request, Request::MapBatch { .. }) {
        let mut short = [0u8; FASTPATH_BYTES];
        if let Ok(n) = encode(request, &mut short) {
            return Ok(transport.call(&short[..n], caps, reply)?);
        }
    }
    let mut buf: MsgBuf = [0; MSG_MAX_BYTES];
    // Every request fits one message (protocol size tests).
    let n = encode(request, &mut buf).map_err(|_| Error::Transport(TransportError::TooLong))?;
    Ok(transport.call(&buf[..n], caps, reply)?)
}

/// Decodes a reply; a `Reply::Err` becomes `Err(Error::Iommu)`.
fn decoded(bytes: &[u8]) -> Result<Reply, Error> {
    match decode_reply(bytes) {
        Ok(Reply::Err(code)) => Err(Error::Iommu(code)),
        Ok(r) => Ok(r),
        Err(_) => Err(Error::UnexpectedReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_protocol::{FaultKind, FaultRecord, Ssid, StreamId};

    /// Encodes `reply` and pads it to whole words, as the transport does.
    fn wire(reply: &Reply) -> ([u8; 1024], usize) {
        let mut b = [0u8; 1024];
        let n = encode(reply, &mut b).unwrap();
        (b, n.div_ceil(WORD_BYTES) * WORD_BYTES)
    }

    #[test]
    fn fast_paths_agree_with_the_decoder() {
        let (b, n) = wire(&Reply::Ok);
        assert!(is_ok_reply(&b[..n]) && is_ok_reply(&b[..1]));
        assert_eq!(decode_reply(&b[..n]), Ok(Reply::Ok));
        // Too much padding, a non-zero byte, or nothing: not Ok (nor is it for
        // the decoder).
        let mut long = [0u8; 9];
        assert!(!is_ok_reply(&long) && decode_reply(&long).is_err());
        long[3] = 1;
        assert!(!is_ok_reply(&long[..8]) && decode_reply(&long[..8]) != Ok(Reply::Ok));
        assert!(!is_ok_reply(&[]));
        let (b, n) = wire(&Reply::Err(ErrorCode::Overlap));
        assert!(!is_ok_reply(&b[..n]));

        for (dropped, more) in [
            (0, false),
            (5, true),
            (127, false),
            (128, true),
            (70_000, false),
        ] {
            let batch = FaultBatch {
                records: heapless::Vec::new(),
                dropped,
                more,
            };
            let (b, n) = wire(&Reply::Faults(batch.clone()));
            let fast = empty_fault_batch(&b[..n]);
            // The fast path takes what it can and agrees; the rest goes to
            // the decoder.
            assert_eq!(fast.is_some(), dropped < 128);
            if let Some(f) = fast {
                assert_eq!(f, batch);
            }
            assert_eq!(decode_reply(&b[..n]), Ok(Reply::Faults(batch)));
        }
        let mut records = heapless::Vec::new();
        records
            .push(FaultRecord {
                stream: StreamId(8),
                ssid: Ssid(0),
                iova: 0x1000,
                kind: FaultKind::Translation,
                write: true,
                count: 1,
            })
            .unwrap();
        let (b, n) = wire(&Reply::Faults(FaultBatch {
            records,
            dropped: 0,
            more: false,
        }));
        assert_eq!(empty_fault_batch(&b[..n]), None);
        assert_eq!(empty_fault_batch(&[4, 0, 0, 2, 0, 0, 0, 0]), None);
        assert_eq!(empty_fault_batch(&[4, 0, 0, 0, 0, 0, 0, 1]), None);
    }
}
