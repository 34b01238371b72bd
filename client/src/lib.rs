//! Typed client API of the IOMMU server.
//!
//! A driver never programs the SMMU: one isolated server owns it, and the
//! driver asks that server to let its device reach its memory. [`Iommu`] is
//! the driver's connection; each of its methods is one request and one
//! reply over a [`Transport`] (one per frame for
//! [`Iommu::register_memory`]: a seL4 receiver takes one cap per message).
//!
//! # Transports
//!
//! - On seL4 the transport is the driver's badged endpoint to the server
//!   (`Sel4Transport` in `images/sel4-iommu`): the request is packed into
//!   message registers with [`iommu_protocol::pack_words`] and sent with one
//!   `seL4_Call`. The badge is the driver's only identity: the server
//!   decides what a driver may do from the endpoint the call came through,
//!   never from the message.
//! - On the host, [`InProcess`] calls the server's request handler in the
//!   same process, copying the bytes through whole message words as the
//!   kernel does, so that host tests see what seL4 would deliver
//!   (`server/tests/client_*.rs` drive the real server this way).
//! - Anything else, such as a test double, implements [`Transport`].
//!
//! Memory is never named by physical address: the driver registers the
//! frame capabilities it holds and names memory by the returned
//! [`MemoryHandle`], so it can never map memory it does not hold. Domain
//! and memory handles are per client: another driver's handle means nothing
//! here ([`ErrorCode::NoSuchDomain`] or [`ErrorCode::NoSuchMemory`], as for
//! a handle that never existed), so a driver learns nothing about others.
//!
//! # A driver's calls, in order
//!
//! 1. [`Iommu::connect`] says hello, which settles the protocol version;
//!    the server refuses every other request before it
//!    ([`ErrorCode::VersionMismatch`]). [`Iommu::info`] then holds the
//!    server's limits.
//! 2. [`Iommu::register_memory`] turns the frame caps of the driver's DMA
//!    memory into a [`MemoryHandle`]. The server accepts only frames of the
//!    memory the system gave this driver ([`ErrorCode::NotPermitted`]
//!    otherwise).
//! 3. [`Iommu::alloc_domain`] makes an empty I/O address space.
//! 4. [`Iommu::attach`] makes the device's StreamID (and substream)
//!    translate through the domain; until something is mapped, every DMA
//!    of the device faults. Only streams the system's policy grants this
//!    driver can be attached: any other is [`ErrorCode::NotPermitted`],
//!    whatever its state, so a driver cannot probe other drivers' devices.
//! 5. [`Iommu::map`] (or [`Iommu::map_batch`] for a scatter list) says
//!    which memory the device may reach at which I/O addresses, and
//!    whether to read or write it. [`Iommu::unmap`] returns only after the
//!    SMMU's TLBs are invalidated and synced, so the memory may be reused
//!    as soon as it returns. Drivers that would rather not pick I/O
//!    addresses use the [`dma`] layer instead (below).
//! 6. [`Iommu::faults`] takes the records of the DMAs the SMMU refused on
//!    this driver's streams (no other driver's). On seL4 the server signals
//!    the driver's notification, if the system gave it one, when new
//!    records arrive; call until [`FaultBatch::more`] is false. A
//!    [`FaultRecord`] prints as a sentence.
//! 7. [`Iommu::walk`] tells where the SMMU's walk of one I/O address ends:
//!    nothing mapped there, or mapped without the permission the device
//!    needed.
//! 8. Teardown goes in the reverse order, because the server refuses to
//!    pull anything from under a device: [`Iommu::detach`] first (the
//!    device's DMA aborts from the reply on), then [`Iommu::free_domain`]
//!    (refused with [`ErrorCode::InUse`] while a stream is attached; the
//!    domain's mappings go with it), then [`Iommu::unregister_memory`]
//!    (refused with [`ErrorCode::InUse`] while any of it is mapped).
//!
//! ```
//! # use std::{cell::RefCell, rc::Rc};
//! # use iommu_client::{FaultBatch, FaultRecord, InProcess, MemoryHandle, DomainId};
//! # use iommu_client::{ServerInfo, WalkInfo, ABI_VERSION};
//! # use iommu_protocol::{decode_request, encode, MapEntry, Reply, Request};
//! # // A toy server (the real one is `iommu-server`): one client, whose
//! # // policy grants stream 8 only, memory of 4 KiB frames, and a device
//! # // on stream 8 whose writes fault where no mapping lets it write.
//! # #[derive(Default)]
//! # struct Toy { maps: Vec<(u64, u64, Perms)>, faults: Vec<FaultRecord>, pages: u64, log: Vec<Request> }
//! # impl Toy {
//! #     fn at(&self, pfn: u64) -> Option<Perms> {
//! #         self.maps.iter().find(|m| m.0 <= pfn && pfn < m.0 + m.1).map(|m| m.2)
//! #     }
//! #     fn device_write(&mut self, iova: u64) {
//! #         let kind = match self.at(iova >> 12) {
//! #             Some(p) if p.contains(Perms::WRITE) => return,
//! #             Some(_) => FaultKind::Permission,
//! #             None => FaultKind::Translation,
//! #         };
//! #         let (stream, ssid, write, count) = (StreamId(8), Ssid(0), true, 1);
//! #         self.faults.push(FaultRecord { stream, ssid, iova, kind, write, count });
//! #     }
//! #     fn map(&mut self, entries: &[MapEntry]) -> Reply {
//! #         if entries.iter().any(|e| (e.iova_pfn..e.iova_pfn + u64::from(e.pages)).any(|p| self.at(p).is_some())) {
//! #             return Reply::Err(ErrorCode::Overlap);
//! #         }
//! #         self.maps.extend(entries.iter().map(|e| (e.iova_pfn, u64::from(e.pages), e.perms)));
//! #         Reply::Ok
//! #     }
//! #     fn answer(&mut self, request: Request, caps: u64) -> Reply {
//! #         self.log.push(request.clone());
//! #         match request {
//! #             Request::Hello { .. } => Reply::Hello(ServerInfo {
//! #                 version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21 | 1 << 30,
//! #                 ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: true,
//! #             }),
//! #             Request::AllocDomain => Reply::Domain(DomainId(1)),
//! #             Request::RegisterMemory { .. } => {
//! #                 self.pages += caps;
//! #                 Reply::Memory { memory: MemoryHandle(1), pages: self.pages }
//! #             }
//! #             Request::Attach { stream, .. } if stream != StreamId(8) => Reply::Err(ErrorCode::NotPermitted),
//! #             Request::Map { iova_pfn, memory, offset_pfn, pages, perms, .. } => {
//! #                 self.map(&[MapEntry { iova_pfn, memory, offset_pfn, pages, perms }])
//! #             }
//! #             Request::MapBatch { entries, .. } => self.map(&entries),
//! #             Request::Unmap { iova_pfn, pages, .. } => {
//! #                 let n = self.maps.len();
//! #                 self.maps.retain(|m| m.0 < iova_pfn || m.0 >= iova_pfn + u64::from(pages));
//! #                 if self.maps.len() == n { Reply::Err(ErrorCode::NotMapped) } else { Reply::Ok }
//! #             }
//! #             Request::Faults { .. } => Reply::Faults(FaultBatch {
//! #                 records: self.faults.drain(..).collect(), dropped: 0, more: false,
//! #             }),
//! #             Request::Walk { iova_pfn, .. } => Reply::Walk(match self.at(iova_pfn) {
//! #                 Some(perms) => WalkInfo { level: 3, descriptor: iova_pfn << 12 | 0x403, perms },
//! #                 None => WalkInfo { level: 3, descriptor: 0, perms: Perms(0) },
//! #             }),
//! #             _ => Reply::Ok,
//! #         }
//! #     }
//! # }
//! # let toy = Rc::new(RefCell::new(Toy::default()));
//! # let server = toy.clone();
//! # let transport = InProcess::new(1, move |_: u64, req: &[u8], caps: &[u32], out: &mut [u8]| {
//! #     let reply = server.borrow_mut().answer(decode_request(req).unwrap(), caps.len() as u64);
//! #     encode(&reply, out).unwrap()
//! # });
//! # let frames = [10, 11];
//! use iommu_client::{Error, ErrorCode, FaultKind, Iommu, Perms, Ssid, StreamId};
//!
//! // 1. On seL4, `transport` is the driver's endpoint; here, a toy server.
//! let mut iommu = Iommu::connect(transport)?;
//! assert!(iommu.info().max_batch >= 1);
//!
//! // 2. Two 4 KiB frames of the driver's DMA pool (caps it holds).
//! let memory = iommu.register_memory(&frames)?;
//! assert_eq!(memory.len, 0x2000);
//!
//! // 3. and 4. The device (StreamID 8) translates through a new domain.
//! let domain = iommu.alloc_domain()?;
//! iommu.attach(StreamId(8), Ssid(0), domain)?;
//! // Another driver's device is not this driver's to attach.
//! let theirs = iommu.attach(StreamId(0x10), Ssid(0), domain);
//! assert_eq!(theirs, Err(Error::Iommu(ErrorCode::NotPermitted)));
//!
//! // 5. A command page the device reads at 1 MiB, and a page it writes.
//! iommu.map(domain, 0x10_0000, memory.handle, 0, 0x1000, Perms::READ)?;
//! iommu.map(domain, 0x10_1000, memory.handle, 0x1000, 0x1000, Perms::WRITE)?;
//! // Mapping over a live mapping is refused, and changes nothing.
//! let again = iommu.map(domain, 0x10_0000, memory.handle, 0, 0x1000, Perms::RW);
//! assert_eq!(again, Err(Error::Iommu(ErrorCode::Overlap)));
//! // An address that is not a multiple of 4 KiB is refused before sending.
//! let odd = iommu.map(domain, 0x10_0800, memory.handle, 0, 0x1000, Perms::READ);
//! assert_eq!(odd, Err(Error::Iommu(ErrorCode::Misaligned)));
//!
//! // 6. A buggy device writes to its command page: the SMMU refuses.
//! # toy.borrow_mut().device_write(0x10_0040);
//! let batch = iommu.faults()?;
//! let fault = batch.records[0];
//! assert_eq!((fault.stream, fault.iova, fault.kind), (StreamId(8), 0x10_0040, FaultKind::Permission));
//! assert_eq!(
//!     fault.to_string(),
//!     "stream 0x8 ssid 0: write at 0x100040: permission fault (no such access allowed)"
//! );
//!
//! // 7. Why: the page is mapped, but read-only.
//! let walk = iommu.walk(domain, fault.iova)?;
//! assert!(walk.mapped() && !walk.perms.contains(Perms::WRITE));
//!
//! // The strict unmap: when it returns, the device cannot reach the page.
//! iommu.unmap(domain, 0x10_1000, 0x1000)?;
//! assert!(!iommu.walk(domain, 0x10_1000)?.mapped());
//!
//! // 8. Teardown.
//! iommu.detach(StreamId(8), Ssid(0))?;
//! iommu.free_domain(domain)?; // its remaining mapping goes with it
//! iommu.unregister_memory(memory.handle)?;
//! # Ok::<(), Error>(())
//! ```
//!
//! # Errors
//!
//! Every call returns an [`Error`]:
//!
//! - [`Error::Iommu`] carries the server's [`ErrorCode`]. Each request is
//!   all or nothing, so a refused one changed nothing on the server and may
//!   be corrected and sent again; the exception is
//!   [`ErrorCode::HardwareError`] (the SMMU failed part-way), after which
//!   part of it may have been done. The library also refuses locally, with
//!   the code the server would give and without sending anything, what it
//!   can see is wrong: an address, offset or length that is not a multiple
//!   of 4 KiB ([`ErrorCode::Misaligned`]), one too long for the wire or a
//!   batch longer than the server takes ([`ErrorCode::OutOfRange`]), no
//!   frames to register ([`ErrorCode::Malformed`]).
//! - [`Error::Transport`]: the message did not get through or no reply
//!   came back; whether the server acted on the request is unknown.
//! - [`Error::UnexpectedReply`]: the reply did not decode, or answered
//!   another request.
//! - [`Error::IovaExhausted`] comes only from the [`dma`] layer's
//!   allocator, before anything is sent.
//!
//! # The DMA-API layer
//!
//! Drivers that would rather not manage I/O addresses by hand use [`dma`],
//! modelled on Linux's DMA API: the driver says which memory the device may
//! reach and in which [`Direction`], and gets back the address to program
//! into the device.
//!
//! - A [`DmaDomain`] is one domain and an [`IovaAllocator`] over an I/O
//!   address window the driver chooses once. Picking an address is local,
//!   so a map or an unmap stays one server call.
//! - The [`Direction`] decides the device's permissions, so that a device
//!   cannot write a buffer it was only meant to read.
//! - [`DmaDomain::map_single`] maps one buffer for one request and
//!   [`DmaDomain::unmap`] takes it away on completion, strictly (as
//!   [`Iommu::unmap`]). [`DmaDomain::map_persistent`] maps rings and other
//!   long-lived structures. Addresses are handed out top-down, so the
//!   rings (mapped first) take the top of the window and per-request
//!   buffers come right below them, in the same leaf table, which the
//!   server then never frees and builds again per request.
//!   [`DmaDomain::map_sg`] maps a scatter list so that the device sees one
//!   contiguous buffer.
//! - A map that fails in a way that leaves the server's state unknown keeps
//!   its I/O addresses allocated, in quarantine
//!   ([`DmaDomain::quarantined_bytes`]): the device might still reach part
//!   of them, so they are never handed out for another buffer. A failed
//!   unmap hands the mapping back ([`UnmapError`]) to retry.
//!
//! # The examples
//!
//! The examples in this documentation run as doctests against a toy server
//! in their hidden lines: a closure behind [`InProcess`] that answers the
//! calls they make as the server would, with a "device" on stream 8 whose
//! writes fault where no mapping lets it write. What the real server and
//! the SMMU do with the same calls is tested in `server/tests/client_*.rs`.
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

/// How a transport failed. The request may or may not have reached the
/// server, so the driver cannot tell whether it took effect: a DMA layer
/// that sees this after a map keeps the addresses in quarantine (see
/// [`DmaDomain::quarantined_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// More than [`MAX_CAPS_PER_MSG`] capabilities: a seL4 receiver has one
    /// receive slot and the kernel would drop the others silently, so the
    /// transport refuses rather than send.
    TooManyCaps,
    /// More than [`MSG_MAX_BYTES`] bytes (or, for
    /// [`Transport::call_registers`], more than its words).
    TooLong,
    /// The call itself failed, with a transport-specific code: the seL4
    /// transport gives the reply's label (the kernel's error for a failed
    /// invocation, e.g. of a capability that is not an endpoint), or 0 when
    /// the thread has no IPC buffer.
    Ipc(u64),
}

/// Everything a call can fail with (see [Errors](crate#errors) in the crate
/// documentation for what each means for the server's state).
///
/// ```
/// use iommu_client::{Error, ErrorCode, TransportError};
///
/// /// Whether the server is known to be as it was before the failed call
/// /// (the rule the DMA layer uses to free or quarantine addresses).
/// fn unchanged(e: Error) -> bool {
///     match e {
///         Error::Iommu(code) => code != ErrorCode::HardwareError,
///         Error::IovaExhausted => true, // nothing was sent
///         Error::Transport(_) | Error::UnexpectedReply => false,
///     }
/// }
/// assert!(unchanged(ErrorCode::Overlap.into()));
/// assert!(!unchanged(ErrorCode::HardwareError.into()));
/// assert!(!unchanged(TransportError::Ipc(3).into()));
/// ```
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

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransportError::TooManyCaps => {
                f.write_str("more capabilities than one message carries")
            }
            TransportError::TooLong => f.write_str("longer than one message"),
            TransportError::Ipc(label) => write!(f, "IPC failed (label {label})"),
        }
    }
}

impl core::error::Error for TransportError {}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Iommu(code) => write!(f, "IOMMU server: {code}"),
            Error::Transport(e) => write!(f, "transport: {e}"),
            Error::UnexpectedReply => f.write_str("unexpected reply from the IOMMU server"),
            Error::IovaExhausted => f.write_str("no free I/O addresses left in the window"),
        }
    }
}

impl core::error::Error for Error {}

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
///
/// [`Iommu`] is generic over it so that the same driver code runs on seL4
/// (the driver's endpoint) and in host tests ([`InProcess`], or a double
/// like the one below). The request and reply bytes are the
/// [`iommu_protocol`] encodings of its `Request` and `Reply`.
///
/// ```
/// use iommu_client::{DomainId, Iommu, MemoryHandle, Perms, ServerInfo, Transport};
/// use iommu_client::{TransportError, ABI_VERSION, MAX_CAPS_PER_MSG, MSG_MAX_BYTES};
/// use iommu_protocol::{decode_request, encode, Reply, Request};
///
/// /// A test double: records each request and accepts everything.
/// #[derive(Default)]
/// struct Recorder {
///     sent: Vec<Request>,
/// }
///
/// impl Transport for Recorder {
///     type Cap = u32; // a CPtr on seL4
///     fn call(
///         &mut self,
///         request: &[u8],
///         caps: &[u32],
///         reply: &mut [u8; MSG_MAX_BYTES],
///     ) -> Result<usize, TransportError> {
///         if caps.len() > MAX_CAPS_PER_MSG {
///             return Err(TransportError::TooManyCaps);
///         }
///         let request = decode_request(request).expect("the client sends valid requests");
///         let answer = match request {
///             Request::Hello { .. } => Reply::Hello(ServerInfo {
///                 version: ABI_VERSION,
///                 max_batch: 32,
///                 page_sizes: 1 << 12,
///                 ias_bits: 48,
///                 ssid_bits: 0,
///                 max_faults: 32,
///                 sva: false,
///             }),
///             _ => Reply::Ok,
///         };
///         self.sent.push(request);
///         Ok(encode(&answer, reply).expect("every reply fits a message"))
///     }
/// }
///
/// let mut iommu = Iommu::connect(Recorder::default())?;
/// iommu.map(DomainId(1), 0x10_0000, MemoryHandle(2), 0x3000, 0x2000, Perms::READ)?;
/// // The hello, then the map, in 4 KiB pages on the wire.
/// let sent = iommu.into_transport().sent;
/// assert_eq!(sent.len(), 2);
/// assert_eq!(
///     sent[1],
///     Request::Map {
///         domain: DomainId(1),
///         iova_pfn: 0x100,
///         memory: MemoryHandle(2),
///         offset_pfn: 3,
///         pages: 2,
///         perms: Perms::READ,
///     }
/// );
/// # Ok::<(), iommu_client::Error>(())
/// ```
pub trait Transport {
    /// A capability as the sender names it: an seL4 CPtr in the client's
    /// CSpace, or a host test's token.
    type Cap: Copy;
    /// Sends `request` (its bytes, unpadded) with `caps` and waits for the
    /// reply, whose bytes it writes at the start of `reply`; returns the
    /// reply's length in bytes (zero padding to whole words may be
    /// included: the decoder tolerates it). A transport that cannot
    /// deliver the message returns a [`TransportError`] rather than send
    /// part of it.
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
    ///
    /// [`Iommu::map`] and [`Iommu::unmap`] use it: they are most of a
    /// driver's calls, and a transport that overrides this builds no
    /// message-sized byte buffer for them. One that does not is as
    /// correct, only slower.
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

/// A connection over a borrowed transport (`Iommu<&mut T>`), for a driver
/// that keeps the transport for other uses.
impl<T: Transport + ?Sized> Transport for &mut T {
    type Cap = T::Cap;
    /// Forwards to `T`'s.
    fn call(
        &mut self,
        request: &[u8],
        caps: &[Self::Cap],
        reply: &mut MsgBuf,
    ) -> Result<usize, TransportError> {
        (**self).call(request, caps, reply)
    }
    /// Forwards to `T`'s, so that its fastpath is kept.
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
/// length`). Implemented for every such closure, so that host tests can
/// wrap the real handler (`iommu_server::handler::Handler::handle`, shared
/// with the test through an `Rc<RefCell<_>>`) or a toy one in a closure.
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
/// at most [`MAX_CAPS_PER_MSG`] capabilities. The server thus sees the
/// padding a seL4 server sees, and a message too long for seL4 fails here
/// too ([`TransportError::TooLong`]).
///
/// `C` is the capability type the server side takes (the real handler's
/// `ReceivedCap`, say); a driver's frames are passed as `C`s.
///
/// ```
/// use iommu_client::{Error, ErrorCode, InProcess, Iommu, ServerInfo, ABI_VERSION};
/// use iommu_protocol::{decode_request, encode, Reply, Request};
///
/// // A server that greets the client with badge 7 and refuses the rest.
/// let server = |badge: u64, request: &[u8], _caps: &[u32], reply: &mut [u8]| {
///     assert_eq!(request.len() % 8, 0, "whole message words");
///     let answer = match decode_request(request) {
///         Ok(Request::Hello { .. }) if badge == 7 => Reply::Hello(ServerInfo {
///             version: ABI_VERSION,
///             max_batch: 32,
///             page_sizes: 1 << 12,
///             ias_bits: 48,
///             ssid_bits: 0,
///             max_faults: 32,
///             sva: false,
///         }),
///         _ => Reply::Err(ErrorCode::NotPermitted),
///     };
///     encode(&answer, reply).unwrap()
/// };
/// let mut iommu = Iommu::connect(InProcess::new(7, server))?;
/// assert_eq!(iommu.alloc_domain(), Err(Error::Iommu(ErrorCode::NotPermitted)));
///
/// // Another badge is another client.
/// let stranger = Iommu::connect(InProcess::new(5, server));
/// assert!(matches!(stranger, Err(Error::Iommu(ErrorCode::NotPermitted))));
/// # Ok::<(), Error>(())
/// ```
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

/// A connection to the IOMMU server: [`Iommu::connect`] makes one, and
/// each method is one call to the server (one per frame for
/// [`Iommu::register_memory`]). The [crate documentation](crate) says in
/// which order a driver makes them.
///
/// The methods take `&mut self` because a connection makes one call at a
/// time (a seL4 thread has one IPC buffer, and the connection keeps one
/// reply buffer). Beyond that buffer it holds only the server's limits:
/// the server keeps the books, so dropping a connection changes nothing
/// on the server, and handles stay valid for a new connection on the same
/// endpoint.
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
    /// connection. The client speaks [`ABI_VERSION`] only.
    ///
    /// Errors: [`ErrorCode::VersionMismatch`] if the server does not speak
    /// it, [`ErrorCode::NotPermitted`] if the endpoint's badge is no
    /// client the server knows.
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

    /// The server's limits, from the hello: the most regions a
    /// [`Iommu::map_batch`] takes, the I/O address bits a domain has
    /// ([`DmaDomain::create`] checks its window against them), whether
    /// substreams and SVA are available.
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

    /// A new, empty I/O address space (with an ASID of its own): nothing is
    /// mapped, so a device attached to it faults on every access until
    /// [`Iommu::map`].
    ///
    /// Errors: [`ErrorCode::QuotaExceeded`] past the client's quota of
    /// domains, ASIDs or page-table pages.
    pub fn alloc_domain(&mut self) -> Result<DomainId, Error> {
        match self.call(&Request::AllocDomain, &[])? {
            Reply::Domain(d) => Ok(d),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// Destroys a domain with no attached stream (its mappings go with it,
    /// and the memory they mapped may then be unregistered).
    ///
    /// Errors: [`ErrorCode::InUse`] while a stream is attached (detach it
    /// first: the server never pulls mappings from under a device),
    /// [`ErrorCode::NoSuchDomain`].
    pub fn free_domain(&mut self, domain: DomainId) -> Result<(), Error> {
        self.call_ok(&Request::FreeDomain { domain }, &[])
    }

    /// Makes `(stream, ssid)` translate through `domain`. A pair attached
    /// to another of the client's domains moves.
    ///
    /// Errors: [`ErrorCode::NotPermitted`] for a stream the client's policy
    /// does not grant (whatever the stream's state),
    /// [`ErrorCode::Unsupported`] for an `ssid` other than 0 on an SMMU
    /// without substreams ([`ServerInfo::ssid_bits`]),
    /// [`ErrorCode::NoSuchDomain`], [`ErrorCode::QuotaExceeded`].
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
    ///
    /// Errors: [`ErrorCode::NotPermitted`] as for [`Iommu::attach`],
    /// [`ErrorCode::NoSuchStream`] if the pair is not attached.
    pub fn detach(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), Error> {
        self.call_ok(&Request::Detach { stream, ssid }, &[])
    }

    /// Registers the frames `frames` (in order: the handle's offset 0 is the
    /// start of the first frame). Sends [`MAX_CAPS_PER_MSG`] per call (one:
    /// a seL4 receiver has a single receive slot); if a later call fails,
    /// the partly registered handle is unregistered again and the error
    /// returned.
    ///
    /// The server keeps the caps until [`Iommu::unregister_memory`]: it
    /// never takes a physical address, so these frames are all a driver
    /// can ever map.
    ///
    /// Errors: [`ErrorCode::Malformed`] for no frames (nothing sent),
    /// [`ErrorCode::BadCapability`] for a cap that is not a frame,
    /// [`ErrorCode::NotPermitted`] for a frame outside the memory the
    /// system gave this client, [`ErrorCode::QuotaExceeded`] past its quota
    /// of handles or frames.
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

    /// Forgets registered memory, and the server gives up its frame caps;
    /// refused with [`ErrorCode::InUse`] while any of it is mapped (the
    /// server never pulls pages from under a device), and
    /// [`ErrorCode::NoSuchMemory`] for a handle this client does not hold.
    pub fn unregister_memory(&mut self, memory: MemoryHandle) -> Result<(), Error> {
        self.call_ok(&Request::UnregisterMemory { memory }, &[])
    }

    /// Maps `len` bytes of `memory` from `offset` at `iova`. All three are
    /// multiples of 4 KiB. One fastpath IPC.
    ///
    /// The server uses 2 MiB and 1 GiB blocks where the I/O address and
    /// the memory behind it are aligned alike and physically contiguous
    /// (see [`ServerInfo::page_sizes`]). It maps all of it or nothing.
    ///
    /// Errors, refused locally (nothing sent): [`ErrorCode::Misaligned`],
    /// and [`ErrorCode::OutOfRange`] for a length or offset past what the
    /// wire carries. From the server: [`ErrorCode::Overlap`] with a live
    /// mapping of the domain, [`ErrorCode::OutOfRange`] past the end of the
    /// memory or of the domain's I/O addresses, [`ErrorCode::NotPermitted`]
    /// for [`Perms::WRITE`] on memory the client may only read,
    /// [`ErrorCode::Malformed`] for `len` 0 or invalid `perms`,
    /// [`ErrorCode::QuotaExceeded`], [`ErrorCode::NoSuchDomain`],
    /// [`ErrorCode::NoSuchMemory`].
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
    ///
    /// One call for many regions costs less than one [`Iommu::map`] each,
    /// and a failure leaves nothing half-mapped to clean up. The regions
    /// may not overlap each other either ([`ErrorCode::Overlap`]); other
    /// errors as for [`Iommu::map`], and an empty list is
    /// [`ErrorCode::Malformed`] (from the server).
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
    ///
    /// The range need not be one whole earlier map: part of a mapping can
    /// be unmapped, and a range can cover several.
    ///
    /// Errors: [`ErrorCode::Misaligned`] (nothing sent),
    /// [`ErrorCode::Malformed`] for `len` 0,
    /// [`ErrorCode::NotMapped`] if any page of the range is not mapped
    /// (nothing is unmapped then), [`ErrorCode::NoMemory`] if cutting a
    /// block in two needs a page table the server cannot get,
    /// [`ErrorCode::NoSuchDomain`].
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
    ///
    /// The client has one SVA domain (made by its first bind, counted in
    /// its domain quota) and every bound pair shares it: what the driver
    /// maps there at its own virtual addresses, each bound device sees at
    /// the same addresses. Errors as for [`Iommu::attach`].
    pub fn bind_sva(&mut self, stream: StreamId, ssid: Ssid) -> Result<DomainId, Error> {
        match self.call(&Request::BindSva { stream, ssid }, &[])? {
            Reply::Domain(d) => Ok(d),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// Undoes [`Iommu::bind_sva`]: the pair's DMA aborts from the reply on.
    /// [`ErrorCode::NoSuchStream`] if the pair is not bound to the SVA
    /// domain.
    pub fn unbind_sva(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), Error> {
        self.call_ok(&Request::UnbindSva { stream, ssid }, &[])
    }

    /// Takes the pending fault records of this client's streams (as many as
    /// one reply holds; `more` says whether to call again).
    ///
    /// The server queues records per client, so another driver's faults
    /// never show here and cannot crowd this driver's out. Repeats of one
    /// fault (same stream, substream, page, kind and direction) come as
    /// one record with a `count`; what did not fit the queue is counted in
    /// [`FaultBatch::dropped`]. See [`Iommu::walk`] for an example.
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

    /// This client's usage and quotas: what is left before the server
    /// answers [`ErrorCode::QuotaExceeded`].
    ///
    /// ```
    /// # use iommu_client::{ClientStats, InProcess, ServerInfo, ABI_VERSION};
    /// # use iommu_protocol::{decode_request, encode, Reply, Request};
    /// # let server = |_: u64, request: &[u8], _: &[u32], reply: &mut [u8]| {
    /// #     let answer = match decode_request(request).unwrap() {
    /// #         Request::Hello { .. } => Reply::Hello(ServerInfo {
    /// #             version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12,
    /// #             ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: false,
    /// #         }),
    /// #         _ => Reply::Stats(ClientStats {
    /// #             mapped_bytes: 60 << 20, max_mapped_bytes: 64 << 20, ..ClientStats::default()
    /// #         }),
    /// #     };
    /// #     encode(&answer, reply).unwrap()
    /// # };
    /// # let mut iommu = iommu_client::Iommu::connect(InProcess::new(1, server))?;
    /// // `iommu`: a connection (here to a toy server that has 60 of the
    /// // client's 64 MiB mapped).
    /// let s = iommu.stats()?;
    /// let room = s.max_mapped_bytes - s.mapped_bytes;
    /// assert_eq!(room, 4 << 20, "4 MiB more may be mapped");
    /// # Ok::<(), iommu_client::Error>(())
    /// ```
    pub fn stats(&mut self) -> Result<ClientStats, Error> {
        match self.call(&Request::Stats, &[])? {
            Reply::Stats(s) => Ok(s),
            _ => Err(Error::UnexpectedReply),
        }
    }

    /// Where the SMMU's walk of `iova` in `domain` ends: the level and the
    /// leaf descriptor there (or that the entry is invalid), to find out why
    /// a DMA faulted. `iova` is rounded down to its wire page.
    ///
    /// A fault record says what the device tried; the walk says what the
    /// page tables hold now, which tells a missing mapping
    /// ([`WalkInfo::mapped`] false) from one without the permission the
    /// access needed. The server never shows a table descriptor (its own
    /// memory), only the leaf.
    ///
    /// Errors: [`ErrorCode::NoSuchDomain`] for a domain this client does
    /// not hold.
    ///
    /// ```
    /// # use std::{cell::RefCell, rc::Rc};
    /// # use iommu_client::{FaultBatch, FaultRecord, InProcess, MemoryHandle, DomainId, ErrorCode};
    /// # use iommu_client::{ServerInfo, WalkInfo, ABI_VERSION};
    /// # use iommu_protocol::{decode_request, encode, MapEntry, Reply, Request};
    /// # // The toy server of the crate documentation's example.
    /// # #[derive(Default)]
    /// # struct Toy { maps: Vec<(u64, u64, Perms)>, faults: Vec<FaultRecord>, pages: u64, log: Vec<Request> }
    /// # impl Toy {
    /// #     fn at(&self, pfn: u64) -> Option<Perms> {
    /// #         self.maps.iter().find(|m| m.0 <= pfn && pfn < m.0 + m.1).map(|m| m.2)
    /// #     }
    /// #     fn device_write(&mut self, iova: u64) {
    /// #         let kind = match self.at(iova >> 12) {
    /// #             Some(p) if p.contains(Perms::WRITE) => return,
    /// #             Some(_) => FaultKind::Permission,
    /// #             None => FaultKind::Translation,
    /// #         };
    /// #         let (stream, ssid, write, count) = (StreamId(8), Ssid(0), true, 1);
    /// #         self.faults.push(FaultRecord { stream, ssid, iova, kind, write, count });
    /// #     }
    /// #     fn map(&mut self, entries: &[MapEntry]) -> Reply {
    /// #         if entries.iter().any(|e| (e.iova_pfn..e.iova_pfn + u64::from(e.pages)).any(|p| self.at(p).is_some())) {
    /// #             return Reply::Err(ErrorCode::Overlap);
    /// #         }
    /// #         self.maps.extend(entries.iter().map(|e| (e.iova_pfn, u64::from(e.pages), e.perms)));
    /// #         Reply::Ok
    /// #     }
    /// #     fn answer(&mut self, request: Request, caps: u64) -> Reply {
    /// #         self.log.push(request.clone());
    /// #         match request {
    /// #             Request::Hello { .. } => Reply::Hello(ServerInfo {
    /// #                 version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21 | 1 << 30,
    /// #                 ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: true,
    /// #             }),
    /// #             Request::AllocDomain => Reply::Domain(DomainId(1)),
    /// #             Request::RegisterMemory { .. } => {
    /// #                 self.pages += caps;
    /// #                 Reply::Memory { memory: MemoryHandle(1), pages: self.pages }
    /// #             }
    /// #             Request::Attach { stream, .. } if stream != StreamId(8) => Reply::Err(ErrorCode::NotPermitted),
    /// #             Request::Map { iova_pfn, memory, offset_pfn, pages, perms, .. } => {
    /// #                 self.map(&[MapEntry { iova_pfn, memory, offset_pfn, pages, perms }])
    /// #             }
    /// #             Request::MapBatch { entries, .. } => self.map(&entries),
    /// #             Request::Unmap { iova_pfn, pages, .. } => {
    /// #                 let n = self.maps.len();
    /// #                 self.maps.retain(|m| m.0 < iova_pfn || m.0 >= iova_pfn + u64::from(pages));
    /// #                 if self.maps.len() == n { Reply::Err(ErrorCode::NotMapped) } else { Reply::Ok }
    /// #             }
    /// #             Request::Faults { .. } => Reply::Faults(FaultBatch {
    /// #                 records: self.faults.drain(..).collect(), dropped: 0, more: false,
    /// #             }),
    /// #             Request::Walk { iova_pfn, .. } => Reply::Walk(match self.at(iova_pfn) {
    /// #                 Some(perms) => WalkInfo { level: 3, descriptor: iova_pfn << 12 | 0x403, perms },
    /// #                 None => WalkInfo { level: 3, descriptor: 0, perms: Perms(0) },
    /// #             }),
    /// #             _ => Reply::Ok,
    /// #         }
    /// #     }
    /// # }
    /// # let toy = Rc::new(RefCell::new(Toy::default()));
    /// # let server = toy.clone();
    /// # let transport = InProcess::new(1, move |_: u64, req: &[u8], caps: &[u32], out: &mut [u8]| {
    /// #     let reply = server.borrow_mut().answer(decode_request(req).unwrap(), caps.len() as u64);
    /// #     encode(&reply, out).unwrap()
    /// # });
    /// # let mut iommu = iommu_client::Iommu::connect(transport)?;
    /// # let memory = iommu.register_memory(&[10, 11])?;
    /// # let domain = iommu.alloc_domain()?;
    /// # iommu.attach(StreamId(8), Ssid(0), domain)?;
    /// use iommu_client::{FaultKind, Perms, Ssid, StreamId};
    ///
    /// // A descriptor page the device should only read, and nothing at
    /// // 0x20_0000, which the device was told to write to by mistake.
    /// iommu.map(domain, 0x10_0000, memory.handle, 0, 0x1000, Perms::READ)?;
    /// # toy.borrow_mut().device_write(0x10_0008);
    /// # toy.borrow_mut().device_write(0x20_0000);
    ///
    /// let mut report = Vec::new();
    /// loop {
    ///     let batch = iommu.faults()?;
    ///     for fault in &batch.records {
    ///         let walk = iommu.walk(domain, fault.iova)?;
    ///         let why = if !walk.mapped() {
    ///             "nothing is mapped there"
    ///         } else if fault.write && !walk.perms.contains(Perms::WRITE) {
    ///             "the page is mapped read-only"
    ///         } else {
    ///             "mapped as needed now"
    ///         };
    ///         report.push(format!("{fault}: {why}"));
    ///     }
    ///     if !batch.more {
    ///         break;
    ///     }
    /// }
    /// assert_eq!(
    ///     report,
    ///     [
    ///         "stream 0x8 ssid 0: write at 0x100008: permission fault (no such access allowed): \
    ///          the page is mapped read-only",
    ///         "stream 0x8 ssid 0: write at 0x200000: translation fault (nothing mapped there): \
    ///          nothing is mapped there",
    ///     ]
    /// );
    /// # Ok::<(), iommu_client::Error>(())
    /// ```
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

    /// A driver's error message names the layer and the reason.
    #[test]
    fn errors_print_what_failed() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            Error::Iommu(ErrorCode::NotMapped).to_string(),
            "IOMMU server: not mapped"
        );
        assert_eq!(
            Error::from(TransportError::Ipc(3)).to_string(),
            "transport: IPC failed (label 3)"
        );
        assert_eq!(
            Error::IovaExhausted.to_string(),
            "no free I/O addresses left in the window"
        );
    }

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
