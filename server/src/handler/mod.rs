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
    Request, ServerInfo, Ssid, StreamId, ABI_VERSION, FASTPATH_WORDS, MAX_BATCH, MAX_CAPS_PER_MSG,
    MAX_FAULTS_PER_REPLY, WIRE_PAGE_SHIFT,
};

use crate::policy::{ClientPolicy, DmaGrant, Policy};

mod host;
/// The reference core (host builds: tests, fuzzing).
#[cfg(not(target_os = "none"))]
pub mod reference;
mod shared_core;
mod smmu;
#[cfg(test)]
mod tests;

pub use host::FakeFrames;
pub use smmu::error_code;

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

#[derive(Debug, Clone, Copy)]
struct FrameEntry {
    cap: ReceivedCap,
    paddr: u64,
    /// Size in wire pages.
    pages: u64,
    /// Offset of its first page in the memory (wire pages): a map finds
    /// the frame an offset falls in by binary search, not by a walk.
    first: u64,
}

#[derive(Debug)]
struct MemSlot {
    generation: u32,
    frames: Vec<FrameEntry, MAX_FRAMES>,
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
    offset_pfn: u64,
    perms: Perms,
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

    /// Lets the client with `badge` register frames inside `grant` (see
    /// [`DmaGrant`]): called at start-up with what the system builder gave
    /// each client, before any request is served. A client with no grant
    /// can register nothing. `NotPermitted` for a badge that is no client,
    /// `OutOfRange` for an empty, unaligned or wrapping region,
    /// `QuotaExceeded` past [`MAX_DMA_GRANTS`].
    pub fn grant_dma(&mut self, badge: u64, grant: DmaGrant) -> Result<(), ErrorCode> {
        let Some((ci, _)) = self.policy.client(badge) else {
            return Err(ErrorCode::NotPermitted);
        };
        if grant.size == 0
            || !grant.paddr.is_multiple_of(PAGE)
            || !grant.size.is_multiple_of(PAGE)
            || grant.paddr.checked_add(grant.size).is_none()
        {
            return Err(ErrorCode::OutOfRange);
        }
        self.clients[ci]
            .grants
            .push(grant)
            .map_err(|_| ErrorCode::QuotaExceeded)
    }

    /// Grants every client all of physical memory ([`DmaGrant::EVERYTHING`]):
    /// for host tests and software models, where frames are fakes that
    /// nobody can revoke. Never on seL4.
    pub fn grant_everything(&mut self) {
        for c in self.clients.iter_mut() {
            c.grants.clear();
            let _ = c.grants.push(DmaGrant::EVERYTHING);
        }
    }

    /// Takes everything back from the client with `badge`, for a supervisor
    /// that retired it (the process ended or faulted): detaches its streams
    /// (their DMA aborts from here on), frees its domains with their page
    /// tables and ASIDs, releases its memory registrations (deleting the
    /// frame caps) and drops its pending faults. The global resources it
    /// held (table memory, ASIDs, receive slots) are free for other
    /// clients; its badge is refused (`NotPermitted`) from then on, like a
    /// stranger's, so a thread of the process that still runs can do
    /// nothing.
    /// Handles the client held are dead afterwards (generations bumped).
    ///
    /// Not reachable from a client: only the server's transport calls it,
    /// for a message on the supervisor's own badge. `NotPermitted` for a
    /// badge that is no client. If the core fails (a command-queue timeout),
    /// what was already taken back stays taken back and the error is
    /// returned; calling again continues.
    pub fn retire_client(&mut self, badge: u64) -> Result<Retired, ErrorCode> {
        let Some((ci, _)) = self.policy.client(badge) else {
            return Err(ErrorCode::NotPermitted);
        };
        // Refused from here on, even if taking back fails half-way below:
        // the process is gone, whatever of it still runs.
        self.clients[ci].retired = true;
        self.clients[ci].greeted = false;
        let mut r = Retired {
            pt_pages: self.client_pt_pages(ci),
            ..Retired::default()
        };
        // Streams first: no device may keep using tables about to go.
        while let Some(a) = self.clients[ci].attachments.last().copied() {
            self.core.detach(a.stream, a.ssid)?;
            self.clients[ci].attachments.pop();
            r.streams += 1;
        }
        for slot in 0..MAX_DOMAINS {
            let Some(d) = self.clients[ci].domains[slot] else {
                continue;
            };
            // TLBI by ASID and sync, then tables and ASID freed.
            self.core.free_domain(d.core)?;
            let c = &mut self.clients[ci];
            let mut i = 0;
            while i < c.mappings.len() {
                if c.mappings[i].domain == slot as u8 {
                    let m = c.mappings.swap_remove(i);
                    c.unmapped(m.memory, m.pages);
                    r.mappings += 1;
                    r.mapped_bytes += m.pages << WIRE_PAGE_SHIFT;
                } else {
                    i += 1;
                }
            }
            self.release_domain_slot(ci, slot as u8);
            r.domains += 1;
        }
        for slot in 0..MAX_MEMORY {
            let c = &mut self.clients[ci];
            let Some(m) = c.memory[slot].take() else {
                continue;
            };
            c.memory_gen[slot] += 1;
            c.frames -= m.frames.len() as u32;
            r.memory_regions += 1;
            r.frames += m.frames.len() as u32;
            for f in m.frames {
                self.resolver.release(f.cap);
            }
        }
        let c = &mut self.clients[ci];
        r.faults = c.faults.len() as u32;
        c.faults.clear();
        c.faults_dropped = 0;
        Ok(r)
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
        if let Request::RegisterMemory { extend } = request {
            // Takes ownership of the caps (keeps or releases them).
            if !self.clients[ci].greeted {
                self.release_all(caps);
                return Err(ErrorCode::VersionMismatch);
            }
            return self.register_memory(ci, extend, caps);
        }
        // Caps that come with anything else are not wanted.
        self.release_all(caps);
        if let Request::Hello {
            min_version,
            max_version,
        } = request
        {
            return self.hello(ci, min_version, max_version);
        }
        if !self.clients[ci].greeted {
            return Err(ErrorCode::VersionMismatch);
        }
        match request {
            Request::Hello { .. } | Request::RegisterMemory { .. } => Err(ErrorCode::Malformed),
            Request::AllocDomain => self.alloc_domain(ci).map(Reply::Domain),
            Request::FreeDomain { domain } => self.free_domain(ci, domain).map(|()| Reply::Ok),
            Request::Attach {
                stream,
                ssid,
                domain,
            } => self.attach(ci, stream, ssid, domain).map(|()| Reply::Ok),
            Request::Detach { stream, ssid } => {
                self.detach(ci, stream, ssid, false).map(|()| Reply::Ok)
            }
            Request::Map {
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
                self.map_batch(ci, domain, &entries).map(|()| Reply::Ok)
            }
            Request::Unmap {
                domain,
                iova_pfn,
                pages,
            } => self.unmap(ci, domain, iova_pfn, pages).map(|()| Reply::Ok),
            Request::BindSva { stream, ssid } => self.bind_sva(ci, stream, ssid).map(Reply::Domain),
            Request::UnbindSva { stream, ssid } => {
                self.detach(ci, stream, ssid, true).map(|()| Reply::Ok)
            }
            Request::Faults { max } => Ok(Reply::Faults(self.take_faults(ci, max))),
            Request::Stats => Ok(Reply::Stats(self.stats(ci))),
            Request::UnregisterMemory { memory } => {
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

    fn client_pt_pages(&self, ci: usize) -> u32 {
        self.clients[ci].live_slots().fold(0u32, |acc, d| {
            acc.saturating_add(self.core.pt_pages(d.core))
        })
    }

    fn alloc_domain(&mut self, ci: usize) -> Result<DomainId, ErrorCode> {
        let (slot, _) = self.alloc_domain_slot(ci)?;
        let c = &self.clients[ci];
        Ok(DomainId(make_handle(ci, slot, c.domain_gen[slot])))
    }

    /// Checks quotas, allocates the core's domain and records it.
    fn alloc_domain_slot(&mut self, ci: usize) -> Result<(usize, C::Domain), ErrorCode> {
        let c = &self.clients[ci];
        let q = c.policy.quotas;
        let n = c.domain_count();
        // One ASID per domain.
        if n >= q.domains || n >= q.asids {
            return Err(ErrorCode::QuotaExceeded);
        }
        // A new domain costs at least its root table.
        if self.client_pt_pages(ci).saturating_add(1) > q.pt_pages {
            return Err(ErrorCode::QuotaExceeded);
        }
        let slot = c
            .domains
            .iter()
            .position(|d| d.is_none())
            .ok_or(ErrorCode::QuotaExceeded)?;
        if c.domain_gen[slot] >= MAX_GENERATION {
            // Generations exhausted: retire the slot rather than reuse a handle.
            return Err(ErrorCode::QuotaExceeded);
        }
        let d = self.core.alloc_domain()?;
        let c = &mut self.clients[ci];
        c.domains[slot] = Some(DomainSlot {
            core: d,
            generation: c.domain_gen[slot],
        });
        c.live_domains |= 1 << slot;
        Ok((slot, d))
    }

    fn release_domain_slot(&mut self, ci: usize, slot: u8) {
        let c = &mut self.clients[ci];
        c.domains[slot as usize] = None;
        c.live_domains &= !(1 << slot);
        c.domain_gen[slot as usize] += 1;
        if c.sva_domain == Some(slot) {
            c.sva_domain = None;
        }
    }

    fn free_domain(&mut self, ci: usize, id: DomainId) -> Result<(), ErrorCode> {
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        if c.attachments.iter().any(|a| a.domain == slot) {
            return Err(ErrorCode::InUse);
        }
        self.core.free_domain(d)?;
        // The core dropped the page tables: forget the records.
        let c = &mut self.clients[ci];
        let mut i = 0;
        while i < c.mappings.len() {
            if c.mappings[i].domain == slot {
                let m = c.mappings.swap_remove(i);
                c.unmapped(m.memory, m.pages);
            } else {
                i += 1;
            }
        }
        self.release_domain_slot(ci, slot);
        Ok(())
    }

    fn check_stream(&self, ci: usize, stream: StreamId, ssid: Ssid) -> Result<(), ErrorCode> {
        if !self.clients[ci].policy.may_use(stream, ssid) {
            return Err(ErrorCode::NotPermitted);
        }
        let bits = self.core.caps().ssid_bits;
        if ssid.0 != 0 && (bits == 0 || (bits < 32 && ssid.0 >> bits != 0)) {
            return Err(ErrorCode::Unsupported);
        }
        Ok(())
    }

    fn attach(
        &mut self,
        ci: usize,
        stream: StreamId,
        ssid: Ssid,
        id: DomainId,
    ) -> Result<(), ErrorCode> {
        self.check_stream(ci, stream, ssid)?;
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        let existing = c
            .attachments
            .iter()
            .position(|a| a.stream == stream && a.ssid == ssid);
        if existing.is_none() && c.attachments.is_full() {
            return Err(ErrorCode::QuotaExceeded);
        }
        if let Err(e) = self.core.attach(stream, ssid, d) {
            self.resync_attachment(ci, stream, ssid);
            return Err(e);
        }
        let c = &mut self.clients[ci];
        match existing {
            Some(i) => c.attachments[i].domain = slot,
            // Cannot fail: checked not full above.
            None => {
                let _ = c.attachments.push(Attachment {
                    stream,
                    ssid,
                    domain: slot,
                });
            }
        }
        Ok(())
    }

    /// After a failed core attach, makes the client's record of
    /// `(stream, ssid)` say what the core holds (a timeout can leave the pair
    /// on the new domain, the old one, or none).
    fn resync_attachment(&mut self, ci: usize, stream: StreamId, ssid: Ssid) {
        let Some(now) = self.core.attached(stream, ssid) else {
            return;
        };
        let c = &mut self.clients[ci];
        let slot = now.and_then(|cd| {
            c.domains
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.core == cd))
        });
        let at = c
            .attachments
            .iter()
            .position(|a| a.stream == stream && a.ssid == ssid);
        match (slot, at) {
            (Some(s), Some(i)) => c.attachments[i].domain = s as u8,
            (Some(s), None) => {
                // Cannot fail: attach checked there is room.
                let _ = c.attachments.push(Attachment {
                    stream,
                    ssid,
                    domain: s as u8,
                });
            }
            (None, Some(i)) => {
                c.attachments.swap_remove(i);
            }
            (None, None) => {}
        }
    }

    /// Detach, or (with `sva`) unbind: the pair must be attached to the SVA
    /// domain for an unbind, and to any domain for a detach.
    fn detach(
        &mut self,
        ci: usize,
        stream: StreamId,
        ssid: Ssid,
        sva: bool,
    ) -> Result<(), ErrorCode> {
        self.check_stream(ci, stream, ssid)?;
        let c = &self.clients[ci];
        let i = c
            .attachments
            .iter()
            .position(|a| {
                a.stream == stream && a.ssid == ssid && (!sva || Some(a.domain) == c.sva_domain)
            })
            .ok_or(ErrorCode::NoSuchStream)?;
        self.core.detach(stream, ssid)?;
        self.clients[ci].attachments.swap_remove(i);
        Ok(())
    }

    fn bind_sva(&mut self, ci: usize, stream: StreamId, ssid: Ssid) -> Result<DomainId, ErrorCode> {
        self.check_stream(ci, stream, ssid)?;
        let (slot, created) = match self.clients[ci].sva_domain {
            Some(s) => (s as usize, false),
            None => (self.alloc_domain_slot(ci)?.0, true),
        };
        let id = DomainId(make_handle(ci, slot, self.clients[ci].domain_gen[slot]));
        if created {
            self.clients[ci].sva_domain = Some(slot as u8);
        }
        match self.attach(ci, stream, ssid, id) {
            Ok(()) => Ok(id),
            Err(e) => {
                // A bind that timed out half-way may have left the stream
                // on the new domain (recorded by `attach`): keep it then.
                let in_use = self.clients[ci]
                    .attachments
                    .iter()
                    .any(|a| a.domain == slot as u8);
                if created && !in_use {
                    // Roll back the domain we just made (it has nothing in it).
                    if let Ok((_, d)) = self.clients[ci].domain(id) {
                        let _ = self.core.free_domain(d);
                    }
                    self.release_domain_slot(ci, slot as u8);
                }
                Err(e)
            }
        }
    }

    /// Upper bound on the page-table pages that mapping `[pfn, pfn + pages)`
    /// into domain slot `domain` can add: one level-3 table per 2 MiB block,
    /// one level-2 per 1 GiB and one level-1 per 512 GiB block touched that
    /// holds no mapping yet (4 KiB granule; `extra` are ranges the same
    /// batch maps first). The cost depends on the number of records, not on
    /// the size of the range, so a huge request cannot stall the server.
    fn pt_bound(&self, ci: usize, domain: u8, pfn: u64, pages: u64, extra: &[(u64, u64)]) -> u64 {
        let c = &self.clients[ci];
        let end = pfn + pages;
        let mut total = 0u64;
        for (shift, weight) in TABLE_PAGES_PER_BLOCK {
            let first = pfn >> shift;
            let last = (end - 1) >> shift;
            // Blocks of [first, last] that already hold a mapping, as
            // merged intervals of block numbers.
            let mut used: Vec<(u64, u64), { MAX_MAPPINGS + MAX_BATCH }> = Vec::new();
            let ranges = c
                .mappings
                .iter()
                .filter(|m| m.domain == domain)
                .map(|m| (m.iova_pfn, m.end()))
                .chain(extra.iter().copied());
            for (s, e) in ranges {
                let lo = (s >> shift).max(first);
                let hi = ((e - 1) >> shift).min(last);
                if lo <= hi {
                    // Cannot fail: at most MAX_MAPPINGS records and
                    // MAX_BATCH batch entries.
                    let _ = used.push((lo, hi));
                }
            }
            used.sort_unstable();
            // Iterated by reference below: consuming the Vec would move all
            // of it (2.5 KiB, most of a 4 KiB map's server time on seL4).
            let mut covered = 0u64;
            let mut reach: Option<u64> = None; // last block counted so far
            for &(lo, hi) in used.iter() {
                let from = match reach {
                    Some(r) if r >= hi => continue,
                    Some(r) => lo.max(r + 1),
                    None => lo,
                };
                covered += hi - from + 1;
                reach = Some(hi);
            }
            total += ((last - first + 1) - covered) * weight;
        }
        total
    }

    fn map_batch(
        &mut self,
        ci: usize,
        id: DomainId,
        entries: &[MapEntry],
    ) -> Result<(), ErrorCode> {
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        let q = c.policy.quotas;
        let ias = u32::from(self.core.caps().ias_bits.clamp(WIRE_PAGE_SHIFT as u8, 64));
        let max_pfn: u64 = if ias >= 64 {
            u64::MAX >> WIRE_PAGE_SHIFT
        } else {
            1u64 << (ias - WIRE_PAGE_SHIFT)
        };
        if entries.is_empty() {
            return Err(ErrorCode::Malformed);
        }
        // Validate every entry, against the state and against the earlier
        // entries, before changing anything.
        let mut accepted: Vec<(u64, u64), MAX_BATCH> = Vec::new();
        let mut new_pages = 0u64;
        // Tables the batch can add at most: every 2 MiB / 1 GiB / 512 GiB
        // block it touches. Only if that could exceed the quota is the exact
        // bound (which discounts blocks already holding a mapping) worked out.
        let mut pt_touched = 0u64;
        let pt_now = u64::from(self.client_pt_pages(ci));
        let pt_left = u64::from(q.pt_pages).saturating_sub(pt_now);
        for e in entries {
            if !e.perms.is_valid() || e.pages == 0 {
                return Err(ErrorCode::Malformed);
            }
            let (_, mem) = c.memory(e.memory)?;
            if mem.read_only_frames > 0 && e.perms.contains(Perms::WRITE) {
                return Err(ErrorCode::NotPermitted);
            }
            let pages = u64::from(e.pages);
            let off = u64::from(e.offset_pfn);
            if off + pages > mem.pages {
                return Err(ErrorCode::OutOfRange);
            }
            let end = e.iova_pfn.checked_add(pages).ok_or(ErrorCode::OutOfRange)?;
            if end > max_pfn {
                return Err(ErrorCode::OutOfRange);
            }
            if c.overlaps(slot, e.iova_pfn, pages)
                || accepted.iter().any(|&(s, x)| s < end && e.iova_pfn < x)
            {
                return Err(ErrorCode::Overlap);
            }
            pt_touched += blocks_touched(e.iova_pfn, pages);
            new_pages += pages;
            // Cannot fail: entries.len() <= MAX_BATCH.
            accepted
                .push((e.iova_pfn, end))
                .map_err(|_| ErrorCode::Malformed)?;
        }
        let c = &self.clients[ci];
        let new_bytes = (c.mapped_pages + new_pages)
            .checked_mul(PAGE)
            .ok_or(ErrorCode::QuotaExceeded)?;
        if new_bytes > q.mapped_bytes {
            return Err(ErrorCode::QuotaExceeded);
        }
        let records = c.mappings.len() + entries.len();
        if records > q.mappings as usize {
            return Err(ErrorCode::QuotaExceeded);
        }
        if records > MAX_MAPPINGS {
            return Err(ErrorCode::NoMemory);
        }
        if pt_touched > pt_left {
            let mut pt_needed = 0u64;
            for (k, e) in entries.iter().enumerate() {
                let before = accepted.get(..k).unwrap_or(&[]);
                pt_needed += self.pt_bound(ci, slot, e.iova_pfn, u64::from(e.pages), before);
            }
            if pt_needed > pt_left {
                return Err(ErrorCode::QuotaExceeded);
            }
        }
        // Perform; on a core failure undo everything done so far. Each entry
        // covers one contiguous IOVA range, mapped run by run: frames that
        // are physically contiguous (a DMA pool's, say) go to the core as one
        // range, so it walks the tables once per run rather than once per
        // frame and may use 2 MiB / 1 GiB blocks where the run allows.
        let mut failure = None;
        let mut reached = 0usize;
        let mut partial = 0u64;
        'entries: for (k, e) in entries.iter().enumerate() {
            reached = k;
            partial = 0;
            let (_, mem) = self.clients[ci].memory(e.memory)?;
            let mut rest = u64::from(e.pages);
            let offset = u64::from(e.offset_pfn);
            let start = mem.frames.partition_point(|f| f.first + f.pages <= offset);
            let mut skip = offset - mem.frames.get(start).map_or(offset, |f| f.first);
            // (paddr, pages) gathered but not mapped yet.
            let mut run: Option<(u64, u64)> = None;
            for f in mem.frames.iter().skip(start) {
                if rest == 0 {
                    break;
                }
                if skip >= f.pages {
                    skip -= f.pages;
                    continue;
                }
                let n = (f.pages - skip).min(rest);
                let paddr = f.paddr + (skip << WIRE_PAGE_SHIFT);
                rest -= n;
                skip = 0;
                match run {
                    Some((p, m)) if p.checked_add(m << WIRE_PAGE_SHIFT) == Some(paddr) => {
                        run = Some((p, m + n));
                        continue;
                    }
                    _ => {}
                }
                if let Some((p, m)) = run.replace((paddr, n)) {
                    let iova = e.iova_pfn + partial;
                    if let Err(err) =
                        self.core
                            .map(d, iova << WIRE_PAGE_SHIFT, p, m << WIRE_PAGE_SHIFT, e.perms)
                    {
                        failure = Some(err);
                        break 'entries;
                    }
                    partial += m;
                }
            }
            if let Some((p, m)) = run {
                let iova = e.iova_pfn + partial;
                if let Err(err) =
                    self.core
                        .map(d, iova << WIRE_PAGE_SHIFT, p, m << WIRE_PAGE_SHIFT, e.perms)
                {
                    failure = Some(err);
                    break 'entries;
                }
                partial += m;
            }
        }
        if let Some(err) = failure {
            // Unmapping what we just mapped cannot meet a hole.
            for e in &entries[..reached] {
                let _ = self.core.unmap(
                    d,
                    e.iova_pfn << WIRE_PAGE_SHIFT,
                    u64::from(e.pages) << WIRE_PAGE_SHIFT,
                );
            }
            if partial > 0 {
                let e = &entries[reached];
                let _ =
                    self.core
                        .unmap(d, e.iova_pfn << WIRE_PAGE_SHIFT, partial << WIRE_PAGE_SHIFT);
            }
            return Err(err);
        }
        let c = &mut self.clients[ci];
        for e in entries {
            let (mslot, _) = c.memory(e.memory)?;
            let pages = u64::from(e.pages);
            // Cannot fail: capacity checked above.
            let _ = c.mappings.push(MapRec {
                domain: slot,
                iova_pfn: e.iova_pfn,
                pages,
                memory: mslot,
                offset_pfn: u64::from(e.offset_pfn),
                perms: e.perms,
            });
            c.mapped_pages += pages;
            if let Some(m) = c.memory[mslot as usize].as_mut() {
                m.mapped += pages;
            }
        }
        Ok(())
    }

    fn unmap(&mut self, ci: usize, id: DomainId, pfn: u64, pages: u32) -> Result<(), ErrorCode> {
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        if pages == 0 {
            return Err(ErrorCode::Malformed);
        }
        let pages = u64::from(pages);
        let end = pfn.checked_add(pages).ok_or(ErrorCode::OutOfRange)?;
        // The usual unmap undoes one map exactly: that record alone covers
        // the range (records of a domain do not overlap) and nothing splits.
        if let Some(i) = c
            .mappings
            .iter()
            .position(|m| m.domain == slot && m.iova_pfn == pfn && m.pages == pages)
        {
            self.core
                .unmap(d, pfn << WIRE_PAGE_SHIFT, pages << WIRE_PAGE_SHIFT)?;
            let c = &mut self.clients[ci];
            let m = c.mappings.swap_remove(i);
            c.unmapped(m.memory, pages);
            return Ok(());
        }
        // The whole range must be mapped; count what it covers and how many
        // records a partial unmap splits in two.
        let mut covered = 0u64;
        let mut splits = 0usize;
        for m in c.mappings.iter().filter(|m| m.domain == slot) {
            let lo = m.iova_pfn.max(pfn);
            let hi = m.end().min(end);
            if lo < hi {
                covered += hi - lo;
                if m.iova_pfn < pfn && m.end() > end {
                    splits += 1;
                }
            }
        }
        if covered != pages {
            return Err(ErrorCode::NotMapped);
        }
        if c.mappings.len() + splits > MAX_MAPPINGS {
            return Err(ErrorCode::NoMemory);
        }
        self.core
            .unmap(d, pfn << WIRE_PAGE_SHIFT, pages << WIRE_PAGE_SHIFT)?;
        let c = &mut self.clients[ci];
        let mut i = 0;
        while i < c.mappings.len() {
            let m = c.mappings[i];
            let lo = m.iova_pfn.max(pfn);
            let hi = m.end().min(end);
            if m.domain != slot || lo >= hi {
                i += 1;
                continue;
            }
            c.unmapped(m.memory, hi - lo);
            let head = MapRec {
                pages: lo - m.iova_pfn,
                ..m
            };
            let tail = MapRec {
                iova_pfn: hi,
                pages: m.end() - hi,
                offset_pfn: m.offset_pfn + (hi - m.iova_pfn),
                ..m
            };
            c.mappings.swap_remove(i);
            // Pieces go to the end, past `i`, and are outside the range, so
            // they are skipped when the loop reaches them.
            if head.pages > 0 {
                let _ = c.mappings.push(head);
            }
            if tail.pages > 0 {
                let _ = c.mappings.push(tail);
            }
        }
        Ok(())
    }

    fn register_memory(
        &mut self,
        ci: usize,
        extend: Option<MemoryHandle>,
        caps: &[ReceivedCap],
    ) -> Result<Reply, ErrorCode> {
        let result = self.register_memory_inner(ci, extend, caps);
        if result.is_err() {
            self.release_all(caps);
        }
        result
    }

    fn register_memory_inner(
        &mut self,
        ci: usize,
        extend: Option<MemoryHandle>,
        caps: &[ReceivedCap],
    ) -> Result<Reply, ErrorCode> {
        if caps.is_empty() || caps.len() > MAX_CAPS_PER_MSG {
            return Err(ErrorCode::Malformed);
        }
        let c = &self.clients[ci];
        let q = c.policy.quotas;
        let slot = match extend {
            Some(h) => {
                let (slot, m) = c.memory(h)?;
                if m.frames.len() + caps.len() > MAX_FRAMES {
                    return Err(ErrorCode::QuotaExceeded);
                }
                slot as usize
            }
            None => {
                if c.region_count() >= q.memory_regions {
                    return Err(ErrorCode::QuotaExceeded);
                }
                let slot = c
                    .memory
                    .iter()
                    .position(|m| m.is_none())
                    .ok_or(ErrorCode::QuotaExceeded)?;
                if c.memory_gen[slot] >= MAX_GENERATION {
                    return Err(ErrorCode::QuotaExceeded);
                }
                slot
            }
        };
        if c.frames + caps.len() as u32 > q.memory_frames {
            return Err(ErrorCode::QuotaExceeded);
        }
        // Resolve all before recording any.
        let mut resolved: Vec<FrameEntry, MAX_CAPS_PER_MSG> = Vec::new();
        let mut read_only = 0u32;
        for &cap in caps {
            let f = self.resolver.resolve(cap)?;
            if f.size == 0
                || f.size % PAGE != 0
                || f.paddr % PAGE != 0
                || f.paddr.checked_add(f.size).is_none()
            {
                return Err(ErrorCode::BadCapability);
            }
            // A genuine frame, but is it memory the system gave this client?
            let grant = self.clients[ci]
                .grants
                .iter()
                .find(|g| g.covers(f.paddr, f.size))
                .ok_or(ErrorCode::NotPermitted)?;
            read_only += u32::from(!grant.writable);
            let _ = resolved.push(FrameEntry {
                cap,
                paddr: f.paddr,
                pages: f.size >> WIRE_PAGE_SHIFT,
                first: 0,
            });
        }
        let added: u64 = resolved.iter().map(|f| f.pages).sum();
        let c = &mut self.clients[ci];
        let current = c.memory[slot].as_ref().map_or(0, |m| m.pages);
        // Offsets on the wire are u32 pages.
        if current + added > u64::from(u32::MAX) {
            return Err(ErrorCode::OutOfRange);
        }
        let generation = c.memory_gen[slot];
        let m = c.memory[slot].get_or_insert_with(|| MemSlot {
            generation,
            frames: Vec::new(),
            pages: 0,
            mapped: 0,
            read_only_frames: 0,
        });
        m.read_only_frames += read_only;
        for mut f in resolved {
            f.first = m.pages;
            m.pages += f.pages;
            // Cannot fail: capacity checked above.
            let _ = m.frames.push(f);
        }
        let pages = m.pages;
        c.frames += caps.len() as u32;
        Ok(Reply::Memory {
            memory: MemoryHandle(make_handle(ci, slot, generation)),
            pages,
        })
    }

    fn unregister_memory(&mut self, ci: usize, h: MemoryHandle) -> Result<(), ErrorCode> {
        let c = &mut self.clients[ci];
        let (slot, m) = c.memory(h)?;
        if m.mapped > 0 {
            return Err(ErrorCode::InUse);
        }
        let Some(m) = c.memory[slot as usize].take() else {
            return Err(ErrorCode::NoSuchMemory);
        };
        c.memory_gen[slot as usize] += 1;
        c.frames -= m.frames.len() as u32;
        for f in m.frames {
            self.resolver.release(f.cap);
        }
        Ok(())
    }

    fn take_faults(&mut self, ci: usize, max: u8) -> FaultBatch {
        let c = &mut self.clients[ci];
        let mut records = Vec::new();
        let n = usize::from(max).min(MAX_FAULTS_PER_REPLY);
        while records.len() < n {
            match c.faults.pop_front() {
                Some(r) => {
                    let _ = records.push(r);
                }
                None => break,
            }
        }
        let dropped = core::mem::take(&mut c.faults_dropped);
        FaultBatch {
            records,
            dropped,
            more: !c.faults.is_empty(),
        }
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

    /// Drains the core's fault events into the owning clients' queues;
    /// returns the badges of the clients that got new records (to notify).
    pub fn route_faults(&mut self) -> Notify {
        let mut notify_mask = 0u32;
        let policy = self.policy;
        let clients = &mut self.clients;
        let unrouted = &mut self.unrouted_faults;
        let overflowed = self.core.drain_events(&mut |ev| {
            if !route_event(policy, clients, ev, &mut notify_mask) {
                *unrouted = unrouted.saturating_add(1);
            }
        });
        if overflowed {
            self.event_overflows = self.event_overflows.saturating_add(1);
        }
        self.badges(notify_mask)
    }

    /// Routes events drained by someone else (a server's event thread that
    /// serves several handlers, each with its own clients) into the owning
    /// clients' queues; returns the badges to notify. An event for a
    /// stream none of this handler's clients owns is left out (and not
    /// counted: it belongs to another handler).
    pub fn route_events(&mut self, events: &[CoreEvent]) -> Notify {
        let mut notify_mask = 0u32;
        for &ev in events {
            route_event(self.policy, &mut self.clients, ev, &mut notify_mask);
        }
        self.badges(notify_mask)
    }

    /// Whether one of this handler's clients owns `stream`.
    pub fn serves_stream(&self, stream: StreamId) -> bool {
        self.policy.owner_of(stream).is_some()
    }

    fn badges(&self, mask: u32) -> Notify {
        let mut out = Notify::new();
        for (i, c) in self.clients.iter().enumerate() {
            if mask & (1 << i) != 0 {
                let _ = out.push(c.policy.badge);
            }
        }
        out
    }
}

/// Queues `ev` for the client that owns its stream, marking it in
/// `notify_mask` if a new record was added; false if no client owns it.
fn route_event<D>(
    policy: Policy,
    clients: &mut [ClientState<D>],
    ev: CoreEvent,
    notify_mask: &mut u32,
) -> bool {
    let Some(ci) = policy.owner_of(ev.stream) else {
        return false;
    };
    if let Some(c) = clients.get_mut(ci) {
        if queue_fault(c, ev) {
            *notify_mask |= 1 << ci;
        }
    }
    true
}

/// Level-3, level-2 and level-1 blocks (2 MiB, 1 GiB, 512 GiB) that
/// `[pfn, pfn + pages)` touches: at most the tables mapping it can add.
fn blocks_touched(pfn: u64, pages: u64) -> u64 {
    let last = pfn + pages - 1;
    TABLE_PAGES_PER_BLOCK
        .iter()
        .map(|&(shift, weight)| ((last >> shift) - (pfn >> shift) + 1) * weight)
        .sum()
}

/// For each block size a map can need a new table for (2 MiB, 1 GiB,
/// 512 GiB, as a shift of 4 KiB pages), the 4 KiB pages of that table: a
/// leaf table is 4 KiB, a level 1-2 table 8 KiB with its shadow
/// (`pgtable::table_size`), so the quota counts memory, not tables.
const TABLE_PAGES_PER_BLOCK: [(u32, u64); 3] = [(9, 1), (18, 2), (27, 2)];

/// Queues one event for a client; true if a new record was added.
fn queue_fault<D>(c: &mut ClientState<D>, ev: CoreEvent) -> bool {
    let page = ev.iova >> WIRE_PAGE_SHIFT;
    if let Some(r) = c.faults.iter_mut().find(|r| {
        r.stream == ev.stream
            && r.ssid == ev.ssid
            && r.iova >> WIRE_PAGE_SHIFT == page
            && r.kind == ev.kind
            && r.write == ev.write
    }) {
        r.count = r.count.saturating_add(1);
        return false;
    }
    // Each of the client's streams gets an equal share of its queue.
    let streams = c.policy.streams.len().max(1);
    let share = (FAULT_QUEUE / streams).max(1);
    let held = c.faults.iter().filter(|r| r.stream == ev.stream).count();
    if held >= share || c.faults.is_full() {
        c.faults_dropped = c.faults_dropped.saturating_add(1);
        return false;
    }
    let rec = FaultRecord {
        stream: ev.stream,
        ssid: ev.ssid,
        iova: ev.iova,
        kind: ev.kind,
        write: ev.write,
        count: 1,
    };
    c.faults.push_back(rec).is_ok()
}
