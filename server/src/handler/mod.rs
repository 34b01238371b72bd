//! Request handling: decode → authorise → validate → perform → encode.
//!
//! [`Handler::handle`] is the transport-agnostic entry point: the seL4 loop
//! calls it with the badge of the endpoint the message came through, the
//! message bytes (the message registers, zero padding included), the frame
//! capabilities that came with it and a reply buffer; host tests call it
//! through `iommu_client::InProcess`.
//!
//! # Authority
//!
//! The badge is the only identity ([`crate::policy`]). Every request is
//! checked against the caller's policy entry before any state is touched:
//!
//! * Streams: attaching, detaching, binding or unbinding a `(stream, ssid)`
//!   the caller's policy does not grant is [`ErrorCode::NotPermitted`],
//!   whatever the stream's state — so a client learns nothing about other
//!   clients' streams.
//! * Domains and memory: handles are **per client** (each client has its own
//!   table; a handle is a slot index, the client's index and a generation),
//!   so a client cannot even name another's domain or memory: such a handle is
//!   [`ErrorCode::NoSuchDomain`] / [`ErrorCode::NoSuchMemory`], exactly as for
//!   a handle that never existed.
//! * Memory: the server never accepts a physical address. A client registers
//!   frame capabilities; [`FrameResolver`] turns each into its physical
//!   address and size (on seL4 `seL4_ARM_Page_GetAddress`). Capabilities
//!   that arrive with any other request are released unused.
//! * Unknown badges (and badge 0) get [`ErrorCode::NotPermitted`]; clients
//!   that have not said `Hello` get [`ErrorCode::VersionMismatch`].
//!
//! # All or nothing
//!
//! Each request either completes or leaves every table, ASID, record and
//! quota as it was. Validation (ownership, ranges, overlaps, quotas, table
//! capacity) happens before the first change. The only steps that can still
//! fail afterwards are the core's (out of DMA memory for page tables, a
//! hardware error); then the handler undoes what it did:
//!
//! * `Map` of memory made of several frames is several core maps: those done
//!   are unmapped again.
//! * `MapBatch` is **all or none**: entries are validated together (against
//!   the domain and against each other), then applied in order; if the core
//!   fails on one, every entry already applied is unmapped (rolled back) and
//!   the error is returned.
//! * `BindSva` that creates the client's SVA domain frees it again if the
//!   attach fails.
//! * `RegisterMemory` resolves every capability before recording any; if one
//!   is not a usable frame, all of them are released and nothing is recorded.
//!   The client library unregisters a handle whose later frames fail.
//! * `Unmap` requires the whole range to be mapped ([`ErrorCode::NotMapped`]
//!   otherwise) and may cut a mapping in two; cutting a 2 MiB / 1 GiB block
//!   needs a table, and without memory for it nothing changes.
//!
//! A core that stops answering (a command-queue timeout) is reported as
//! [`ErrorCode::HardwareError`]; the core's documentation says what it left
//! behind, and the handler's records stay as they were before the request.
//!
//! # Memory still mapped
//!
//! `UnregisterMemory` of memory with any page still mapped is **refused**
//! with [`ErrorCode::InUse`]: silently unmapping would pull pages from under
//! a device the client may still be driving. `FreeDomain` of a domain with a
//! stream attached is refused with [`ErrorCode::InUse`]; its mappings are
//! removed with it.
//!
//! # Faults
//!
//! [`Handler::route_faults`] drains the core's decoded events and routes
//! each, by StreamID, to the owning client's bounded queue
//! ([`FAULT_QUEUE`] records). Repeats of the same fault coalesce into one
//! record's `count` (QEMU writes one event per 4 bytes of a faulting DMA);
//! each stream may hold at most its share of its client's queue, so a storm
//! on one stream cannot crowd out another stream's faults, and queues are
//! per client, so it cannot crowd out another client's. What does not fit is
//! counted (`dropped`). The return value says which clients to notify.

use heapless::{Deque, Vec};
use iommu_protocol::{
    decode_hot, decode_request, empty_faults_word, encode, reply_word, ClientStats, DomainId,
    ErrorCode, FaultBatch, FaultKind, FaultRecord, Hot, MapEntry, MemoryHandle, Perms, Reply,
    Request, ServerInfo, Ssid, StreamId, WalkInfo, ABI_VERSION, FASTPATH_WORDS, MAX_BATCH,
    MAX_CAPS_PER_MSG, MAX_FAULTS_PER_REPLY, WIRE_PAGE_SHIFT,
};

use crate::policy::{ClientPolicy, DmaGrant, Policy};

mod core_impl;
mod domains;
mod faults;
mod host;
mod lifecycle;
mod mapping;
mod memory;
/// The reference core (host builds: tests, fuzzing).
#[cfg(not(target_os = "none"))]
pub mod reference;
#[cfg(test)]
mod tests;

pub use core_impl::error_code;
pub use host::FakeFrames;

/// Clients one server serves.
pub const MAX_CLIENTS: usize = 8;
/// Domains per client (slots; the policy's quota may be lower).
pub const MAX_DOMAINS: usize = 16;
/// Memory handles per client.
pub const MAX_MEMORY: usize = 8;
/// Frames per memory handle.
pub const MAX_FRAMES: usize = 64;
/// Mapping records per client.
pub const MAX_MAPPINGS: usize = 128;
/// Attached `(stream, ssid)` pairs per client.
pub const MAX_ATTACHMENTS: usize = 16;
/// Fault records queued per client.
pub const FAULT_QUEUE: usize = 64;
/// DMA grants per client ([`Handler::grant_dma`]).
pub const MAX_DMA_GRANTS: usize = 4;

const PAGE: u64 = 1 << WIRE_PAGE_SHIFT;

/// A capability the transport received with a message, by the name the
/// server uses for it: on seL4 the CPtr of the slot the transport moved it
/// to; on the host a test's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceivedCap(pub u64);

/// A physical frame, as its capability says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub paddr: u64,
    pub size: u64,
}

/// Turns received capabilities into frames, and gets rid of them.
///
/// On seL4: `resolve` checks that the cap is a frame (the invocation fails
/// otherwise) and calls `seL4_ARM_Page_GetAddress`; `release` deletes the
/// cap and frees its slot. On the host: a table of fake frames.
pub trait FrameResolver {
    /// The frame `cap` names, or [`ErrorCode::BadCapability`].
    fn resolve(&mut self, cap: ReceivedCap) -> Result<Frame, ErrorCode>;
    /// The server will not use `cap` (any more).
    fn release(&mut self, cap: ReceivedCap);
}

/// What the server core's SMMU can do, for [`ServerInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreCaps {
    /// SubstreamID bits (0: only SSID 0).
    pub ssid_bits: u8,
    /// IOVA bits of a domain.
    pub ias_bits: u8,
    /// Page and block sizes (bit n: 2^n bytes).
    pub page_sizes: u64,
}

/// One decoded fault event of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreEvent {
    pub stream: StreamId,
    pub ssid: Ssid,
    pub iova: u64,
    pub kind: FaultKind,
    pub write: bool,
}

/// The operations the handler needs from the server core, each all or
/// nothing. Implemented for the real core (`Smmu`) in this module's
/// `smmu` adapter, and by a reference model in tests.
pub trait Core {
    /// The core's name for a domain.
    type Domain: Copy + Eq + core::fmt::Debug;
    fn caps(&self) -> CoreCaps;
    fn alloc_domain(&mut self) -> Result<Self::Domain, ErrorCode>;
    /// Frees a domain with no stream attached, mappings and all.
    fn free_domain(&mut self, domain: Self::Domain) -> Result<(), ErrorCode>;
    /// Attaches `(stream, ssid)` to `domain`, moving it if it is attached
    /// elsewhere.
    fn attach(
        &mut self,
        stream: StreamId,
        ssid: Ssid,
        domain: Self::Domain,
    ) -> Result<(), ErrorCode>;
    fn detach(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), ErrorCode>;
    /// Maps physically contiguous `[paddr, paddr + len)` at `iova`.
    fn map(
        &mut self,
        domain: Self::Domain,
        iova: u64,
        paddr: u64,
        len: u64,
        perms: Perms,
    ) -> Result<(), ErrorCode>;
    /// Unmaps `[iova, iova + len)`, all of it mapped; TLBs invalidated and
    /// synced before it returns.
    fn unmap(&mut self, domain: Self::Domain, iova: u64, len: u64) -> Result<(), ErrorCode>;
    /// Page-table pages the domain holds now (root included).
    fn pt_pages(&self, domain: Self::Domain) -> u32;
    /// Hands every pending fault event to `sink`; true if the hardware
    /// lost events since the last drain (event queue overflow).
    fn drain_events(&mut self, sink: &mut dyn FnMut(CoreEvent)) -> bool;
    /// Where the SMMU's walk of `iova` in `domain` ends; `None` if the
    /// core cannot say.
    fn walk(&self, _domain: Self::Domain, _iova: u64) -> Option<WalkInfo> {
        None
    }
    /// Where the core has `(stream, ssid)` attached now: `Some(None)` for
    /// nowhere, `None` if the core does not say (its attach is all or
    /// nothing). After an attach that failed half-way (a command-queue
    /// timeout) the handler records what the core really holds, so that the
    /// pair can still be detached, and taken back when the client dies.
    fn attached(&self, _stream: StreamId, _ssid: Ssid) -> Option<Option<Self::Domain>> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
struct DomainSlot<D> {
    core: D,
    generation: u32,
}

/// A frame cap resolved while registering, before it is recorded.
#[derive(Debug, Clone, Copy)]
struct FrameEntry {
    cap: ReceivedCap,
    paddr: u64,
    /// Size in wire pages.
    pages: u64,
}

/// Frames of a memory that follow each other both in the memory and
/// physically, as one: a map walks the runs its range covers, not the
/// frames (a DMA pool's 4 KiB frames are one run).
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Offset of its first page in the memory (wire pages; offsets on the
    /// wire are u32): a map finds the run an offset falls in by binary
    /// search.
    first: u32,
    pages: u32,
    paddr: u64,
}

impl Run {
    fn end(&self) -> u64 {
        u64::from(self.first) + u64::from(self.pages)
    }
}

#[derive(Debug)]
struct MemSlot {
    generation: u32,
    /// The frame caps, kept to release them; where their pages are is in
    /// `runs`.
    frames: Vec<ReceivedCap, MAX_FRAMES>,
    /// The memory's pages in order, physically contiguous frames merged.
    runs: Vec<Run, MAX_FRAMES>,
    pages: u64,
    /// Pages of this memory mapped anywhere (with multiplicity).
    mapped: u64,
    /// Frames from a read-only grant: then no part of the memory maps
    /// device-writable.
    read_only_frames: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapRec {
    domain: u8,
    iova_pfn: u64,
    pages: u64,
    memory: u8,
    /// Where in the memory the mapping starts: the books the tests hold
    /// the core's translations against.
    offset_pfn: u64,
}

impl MapRec {
    fn end(&self) -> u64 {
        self.iova_pfn + self.pages
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attachment {
    stream: StreamId,
    ssid: Ssid,
    domain: u8,
}

/// Everything the server holds for one client.
struct ClientState<D> {
    policy: &'static ClientPolicy,
    /// Position in the policy (and in handles).
    index: usize,
    greeted: bool,
    /// Retired by the supervisor: refused like a stranger from then on.
    retired: bool,
    /// The physical memory it may register ([`Handler::grant_dma`]).
    grants: Vec<DmaGrant, MAX_DMA_GRANTS>,
    domains: [Option<DomainSlot<D>>; MAX_DOMAINS],
    /// Bit `n` set: `domains[n]` is live (so the per-request sums visit
    /// only live slots).
    live_domains: u16,
    memory: [Option<MemSlot>; MAX_MEMORY],
    /// Generation counters, bumped when a slot is freed so stale handles die.
    domain_gen: [u32; MAX_DOMAINS],
    memory_gen: [u32; MAX_MEMORY],
    mappings: Vec<MapRec, MAX_MAPPINGS>,
    attachments: Vec<Attachment, MAX_ATTACHMENTS>,
    sva_domain: Option<u8>,
    mapped_pages: u64,
    frames: u32,
    faults: Deque<FaultRecord, FAULT_QUEUE>,
    faults_dropped: u32,
}

// A handle is `generation << 12 | client << 8 | slot`: the client index
// makes another client's handle name nothing here (rather than a slot of
// the caller's that happens to have the same number), the generation makes
// a freed handle stay dead after its slot is reused.
const SLOT_BITS: u32 = 8;
const CLIENT_BITS: u32 = 4;
const GEN_SHIFT: u32 = SLOT_BITS + CLIENT_BITS;
const MAX_GENERATION: u32 = u32::MAX >> GEN_SHIFT;
const _: () = assert!(
    MAX_DOMAINS <= u16::BITS as usize
        && MAX_CLIENTS <= 1 << CLIENT_BITS
        && MAX_DOMAINS <= 1 << SLOT_BITS
        && MAX_MEMORY <= 1 << SLOT_BITS
);

fn make_handle(client: usize, slot: usize, generation: u32) -> u32 {
    (generation << GEN_SHIFT) | ((client as u32) << SLOT_BITS) | slot as u32
}

/// `(client, slot, generation)`.
fn split_handle(h: u32) -> (usize, usize, u32) {
    (
        ((h >> SLOT_BITS) & ((1 << CLIENT_BITS) - 1)) as usize,
        (h & ((1 << SLOT_BITS) - 1)) as usize,
        h >> GEN_SHIFT,
    )
}

impl<D: Copy + Eq + core::fmt::Debug> ClientState<D> {
    fn new(index: usize, policy: &'static ClientPolicy) -> Self {
        ClientState {
            policy,
            index,
            greeted: false,
            retired: false,
            grants: Vec::new(),
            domains: [None; MAX_DOMAINS],
            live_domains: 0,
            memory: Default::default(),
            domain_gen: [0; MAX_DOMAINS],
            memory_gen: [0; MAX_MEMORY],
            mappings: Vec::new(),
            attachments: Vec::new(),
            sva_domain: None,
            mapped_pages: 0,
            frames: 0,
            faults: Deque::new(),
            faults_dropped: 0,
        }
    }

    fn domain(&self, id: DomainId) -> Result<(u8, D), ErrorCode> {
        let (client, slot, generation) = split_handle(id.0);
        match self.domains.get(slot) {
            Some(Some(d)) if client == self.index && d.generation == generation => {
                Ok((slot as u8, d.core))
            }
            _ => Err(ErrorCode::NoSuchDomain),
        }
    }

    fn memory(&self, h: MemoryHandle) -> Result<(u8, &MemSlot), ErrorCode> {
        let (client, slot, generation) = split_handle(h.0);
        match self.memory.get(slot) {
            Some(Some(m)) if client == self.index && m.generation == generation => {
                Ok((slot as u8, m))
            }
            _ => Err(ErrorCode::NoSuchMemory),
        }
    }

    /// Takes `pages` of memory slot `memory` off the mapped counts (the
    /// client's and the memory's), when a mapping record shrinks or goes.
    fn unmapped(&mut self, memory: u8, pages: u64) {
        self.mapped_pages -= pages;
        if let Some(mem) = self.memory[memory as usize].as_mut() {
            mem.mapped -= pages;
        }
    }

    fn domain_count(&self) -> u32 {
        self.live_domains.count_ones()
    }

    /// The live domain slots, lowest first.
    fn live_slots(&self) -> impl Iterator<Item = &DomainSlot<D>> {
        let mut live = self.live_domains;
        core::iter::from_fn(move || {
            while live != 0 {
                let slot = live.trailing_zeros() as usize;
                live &= live - 1;
                if let Some(Some(d)) = self.domains.get(slot) {
                    return Some(d);
                }
            }
            None
        })
    }

    fn region_count(&self) -> u32 {
        self.memory.iter().filter(|m| m.is_some()).count() as u32
    }

    fn overlaps(&self, domain: u8, iova_pfn: u64, pages: u64) -> bool {
        let end = iova_pfn + pages;
        self.mappings
            .iter()
            .any(|m| m.domain == domain && m.iova_pfn < end && iova_pfn < m.end())
    }
}

/// What [`Handler::retire_client`] took back from one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retired {
    /// `(stream, ssid)` pairs detached (their STEs/CDs now abort).
    pub streams: u32,
    /// Domains freed, with their ASIDs.
    pub domains: u32,
    /// Page-table pages those domains held.
    pub pt_pages: u32,
    /// Mapping records dropped with them, and the bytes they covered.
    pub mappings: u32,
    pub mapped_bytes: u64,
    /// Memory registrations forgotten, and frame caps released.
    pub memory_regions: u32,
    pub frames: u32,
    /// Pending fault records dropped.
    pub faults: u32,
}

/// Which clients have new fault records (their badges), for the transport
/// to signal.
pub type Notify = Vec<u64, MAX_CLIENTS>;

/// Why a handler could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    Policy(crate::policy::PolicyError),
}

/// The server's request handler: per-client state on top of the core.
pub struct Handler<C: Core, R: FrameResolver> {
    core: C,
    resolver: R,
    policy: Policy,
    clients: Vec<ClientState<C::Domain>, MAX_CLIENTS>,
    /// Events for streams no client owns.
    unrouted_faults: u64,
    /// Drains that found the hardware event queue had overflowed.
    event_overflows: u64,
}

impl<C: Core, R: FrameResolver> Handler<C, R> {
    /// A handler for the clients of `policy` (validated first).
    pub fn new(core: C, resolver: R, policy: Policy) -> Result<Self, SetupError> {
        policy
            .validate_for(MAX_CLIENTS)
            .map_err(SetupError::Policy)?;
        let mut clients = Vec::new();
        for (i, c) in policy.clients.iter().enumerate() {
            // Cannot fail: validate_for checked the count.
            let _ = clients.push(ClientState::new(i, c));
        }
        Ok(Handler {
            core,
            resolver,
            policy,
            clients,
            unrouted_faults: 0,
            event_overflows: 0,
        })
    }

    /// The core, e.g. for tests to check invariants.
    pub fn core(&self) -> &C {
        &self.core
    }

    /// The core, mutably (tests drive DMA through the model behind it).
    pub fn core_mut(&mut self) -> &mut C {
        &mut self.core
    }

    /// The frame resolver.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// The frame resolver, mutably (host tests mint fake caps through it).
    pub fn resolver_mut(&mut self) -> &mut R {
        &mut self.resolver
    }

    /// Fault events seen for streams that no client owns.
    pub fn unrouted_faults(&self) -> u64 {
        self.unrouted_faults
    }

    /// How often the hardware event queue overflowed (events lost before
    /// they could be routed; they cannot be attributed to a client).
    pub fn event_overflows(&self) -> u64 {
        self.event_overflows
    }

    /// Handles one message from the client whose endpoint badge is `badge`.
    /// Writes the reply into `reply` and returns its length in bytes (0 only
    /// if `reply` cannot hold even an error). Every cap in `received_caps` is
    /// either kept (a successful `RegisterMemory`) or released through the
    /// [`FrameResolver`] before this returns. Never panics.
    ///
    /// `received_caps` must hold only capabilities the kernel reports as
    /// transferred (`MessageInfo.extraCaps`, not unwrapped badges): seL4
    /// drops a cap silently when the receive slot is unusable, and the
    /// handler cannot tell an empty slot from a cap that is not a frame
    /// except through [`FrameResolver::resolve`].
    pub fn handle(
        &mut self,
        badge: u64,
        request: &[u8],
        received_caps: &[ReceivedCap],
        reply: &mut [u8],
    ) -> usize {
        let result = self.dispatch(badge, request, received_caps);
        // Every reply fits MSG_MAX_BYTES (protocol size tests); a smaller
        // buffer is the transport's bug, answered with the shortest error
        // that fits. Encoded in place: a `Reply` is ~780 bytes to move.
        match &result {
            Ok(r) => encode(r, reply),
            Err(e) => encode(&Reply::Err(*e), reply),
        }
        .or_else(|_| encode(&Reply::Err(ErrorCode::Busy), reply))
        .unwrap_or(0)
    }

    /// The hot requests (`Map`, `Unmap`, `Faults` with nothing to return)
    /// straight from and to message registers, for a message that came
    /// with no capability: writes the one-word reply into `reply` and
    /// returns its length in words (1). `None` if the message is anything
    /// else, or from a caller the full path must answer (unknown badge, no
    /// `Hello` yet): then [`Handler::handle`] has the answer, the same one
    /// this gives where it gives one. Never panics.
    pub fn handle_registers(
        &mut self,
        badge: u64,
        words: &[u64],
        reply: &mut [u64; FASTPATH_WORDS],
    ) -> Option<usize> {
        let (ci, _) = self.policy.client(badge)?;
        if !self.clients[ci].greeted {
            return None;
        }
        let result = match decode_hot(words)? {
            Hot::Map { domain, entry } => self.map_batch(ci, domain, core::slice::from_ref(&entry)),
            Hot::Unmap {
                domain,
                iova_pfn,
                pages,
            } => self.unmap(ci, domain, iova_pfn, pages),
            Hot::Faults { .. } => {
                // Only when there is no record to return: the full path
                // encodes records.
                let c = &mut self.clients[ci];
                if !c.faults.is_empty() {
                    return None;
                }
                let word = empty_faults_word(c.faults_dropped, false)?;
                c.faults_dropped = 0;
                reply[0] = word;
                return Some(1);
            }
        };
        reply[0] = reply_word(result);
        Some(1)
    }

    fn release_all(&mut self, caps: &[ReceivedCap]) {
        for &c in caps {
            self.resolver.release(c);
        }
    }

    fn dispatch(
        &mut self,
        badge: u64,
        bytes: &[u8],
        caps: &[ReceivedCap],
    ) -> Result<Reply, ErrorCode> {
        // Authorise the caller before even decoding; a retired client is
        // gone for good, whatever thread of it still runs.
        let Some(ci) = self
            .policy
            .client(badge)
            .map(|(ci, _)| ci)
            .filter(|&ci| !self.clients[ci].retired)
        else {
            self.release_all(caps);
            return Err(ErrorCode::NotPermitted);
        };
        let request = match decode_request(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.release_all(caps);
                return Err(e);
            }
        };
        if let Request::RegisterMemory { extend } = &request {
            let extend = *extend;
            // Takes ownership of the caps (keeps or releases them).
            if !self.clients[ci].greeted {
                self.release_all(caps);
                return Err(ErrorCode::VersionMismatch);
            }
            return self.register_memory(ci, extend, caps);
        }
        // Caps that come with anything else are not wanted.
        self.release_all(caps);
        if let &Request::Hello {
            min_version,
            max_version,
        } = &request
        {
            return self.hello(ci, min_version, max_version);
        }
        if !self.clients[ci].greeted {
            return Err(ErrorCode::VersionMismatch);
        }
        // By reference: a MapBatch's entries (1 KiB) are not moved again.
        match &request {
            Request::Hello { .. } | Request::RegisterMemory { .. } => Err(ErrorCode::Malformed),
            Request::AllocDomain => self.alloc_domain(ci).map(Reply::Domain),
            &Request::FreeDomain { domain } => self.free_domain(ci, domain).map(|()| Reply::Ok),
            &Request::Attach {
                stream,
                ssid,
                domain,
            } => self.attach(ci, stream, ssid, domain).map(|()| Reply::Ok),
            &Request::Detach { stream, ssid } => {
                self.detach(ci, stream, ssid, false).map(|()| Reply::Ok)
            }
            &Request::Map {
                domain,
                iova_pfn,
                memory,
                offset_pfn,
                pages,
                perms,
            } => {
                let e = MapEntry {
                    iova_pfn,
                    memory,
                    offset_pfn,
                    pages,
                    perms,
                };
                self.map_batch(ci, domain, core::slice::from_ref(&e))
                    .map(|()| Reply::Ok)
            }
            Request::MapBatch { domain, entries } => {
                self.map_batch(ci, *domain, entries).map(|()| Reply::Ok)
            }
            &Request::Unmap {
                domain,
                iova_pfn,
                pages,
            } => self.unmap(ci, domain, iova_pfn, pages).map(|()| Reply::Ok),
            &Request::BindSva { stream, ssid } => {
                self.bind_sva(ci, stream, ssid).map(Reply::Domain)
            }
            &Request::UnbindSva { stream, ssid } => {
                self.detach(ci, stream, ssid, true).map(|()| Reply::Ok)
            }
            &Request::Faults { max } => Ok(Reply::Faults(self.take_faults(ci, max))),
            Request::Stats => Ok(Reply::Stats(self.stats(ci))),
            &Request::Walk { domain, iova_pfn } => {
                let (_, d) = self.clients[ci].domain(domain)?;
                let iova = iova_pfn.checked_mul(PAGE).ok_or(ErrorCode::OutOfRange)?;
                self.core
                    .walk(d, iova)
                    .map(Reply::Walk)
                    .ok_or(ErrorCode::Unsupported)
            }
            &Request::UnregisterMemory { memory } => {
                self.unregister_memory(ci, memory).map(|()| Reply::Ok)
            }
        }
    }

    fn hello(&mut self, ci: usize, min: u16, max: u16) -> Result<Reply, ErrorCode> {
        if !(min..=max).contains(&ABI_VERSION) {
            return Err(ErrorCode::VersionMismatch);
        }
        self.clients[ci].greeted = true;
        let caps = self.core.caps();
        Ok(Reply::Hello(ServerInfo {
            version: ABI_VERSION,
            max_batch: MAX_BATCH as u16,
            page_sizes: caps.page_sizes,
            ias_bits: caps.ias_bits,
            ssid_bits: caps.ssid_bits,
            max_faults: MAX_FAULTS_PER_REPLY as u8,
            sva: true,
        }))
    }

    fn stats(&self, ci: usize) -> ClientStats {
        let c = &self.clients[ci];
        let q = c.policy.quotas;
        let domains = c.domain_count();
        ClientStats {
            domains,
            max_domains: q.domains,
            mapped_bytes: c.mapped_pages << WIRE_PAGE_SHIFT,
            max_mapped_bytes: q.mapped_bytes,
            mappings: c.mappings.len() as u32,
            max_mappings: q.mappings,
            pt_pages: self.client_pt_pages(ci),
            max_pt_pages: q.pt_pages,
            asids: domains,
            max_asids: q.asids,
            memory_regions: c.region_count(),
            max_memory_regions: q.memory_regions,
            memory_frames: c.frames,
            max_memory_frames: q.memory_frames,
            faults_pending: c.faults.len() as u32,
            faults_dropped: c.faults_dropped,
        }
    }
}
