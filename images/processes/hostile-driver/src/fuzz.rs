//! The fuzzer: a client in the victim's band (the same server thread and
//! receive slot) with no stream, which sends the IOMMU server a few
//! thousand random requests, each with 0 to 3 random caps drawn from a pool
//! of every kind of cap it can make or holds:
//!
//! - its DMA pool's frames, read-only copies, a mapped copy; frames retyped
//!   from its own untyped (one mapped); an endpoint and a notification it
//!   made, and badged copies; its TCB, CNode and VSpace, its listener
//!   thread's TCB and wake notification; a mapped and an unmapped page
//!   table, a VSpace with no ASID, a CNode; its untyped (which has
//!   children: the kernel derives no copy) and a child untyped (which it
//!   does); its own cap to the server's endpoint and a write-only copy
//!   (the kernel unwraps both into the badge); its fault, control and
//!   console slots, its notifications to and from the victim; empty slots.
//!
//! Each message is a valid encoded [`Request`] with random fields, a
//! mutated one, or noise, of a random length up to the message maximum
//! (sometimes a length field that disagrees with it), with a random label.
//! A small xorshift generator with a fixed seed (printed first) makes a
//! run replayable; another seed, or more batches, at build time:
//! `HOSTILE_FUZZ_SEED=0x... HOSTILE_FUZZ_BATCHES=40 cargo xtask run hostile`.
//!
//! What the fuzzer holds the server to:
//! - every call returns, with label 0 and a reply that decodes
//!   (`answered-every-request`); the reply is one the request allows: what
//!   the fuzzer itself decodes from the words the kernel delivers, and
//!   which cap the kernel moves into the server's receive slot (seL4
//!   5.0.0's `transferCaps`: the first cap that is not the server's own
//!   endpoint, if it can be derived), decide between `Malformed`,
//!   `BadCapability`, the request's own refusals and its success; every
//!   `Stats` agrees with the domains and registrations the fuzzer was
//!   given;
//! - no message arrives on its own endpoint (a thread receives on it) and
//!   its notification is never signalled (`own-endpoint-never-called`);
//! - after the run, what it holds can be taken back, and a new
//!   registration, domain and map are served and counted exactly
//!   (`still-served-after-fuzz`).
//!
//! Between batches the victim does a DMA round trip (`fuzz`, `fuzz-done`),
//! while the next batch runs.

use crate::checks::Checks;
use crate::common::{pool_frame, signal, wait_for, COUNTER_HZ, FUZZ_OVER, FUZZ_ROUND_TRIP};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};
use iommu_protocol::ERROR_CODES as CODES;
use iommu_protocol::{
    decode_reply, decode_request, encode, pack_words, unpack_words, ClientStats, DomainId,
    ErrorCode, MapEntry, MemoryHandle, Perms, Reply, Request, Ssid, StreamId, ABI_VERSION,
    MAX_BATCH, MSG_MAX_BYTES, MSG_MAX_WORDS, WIRE_PAGE_SIZE,
};
use procrt::procinfo::slot;
use procrt::{println, StartInfo};
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::{
    ipc_buffer, syscalls, CNode, CPtr, CapData, CapRights, MessageInfo, Notification, ObjectType,
    Page, PageTable, Untyped, VMAttributes,
};
use sel4_iommu::platform::CounterDelay;

/// The generator's seed, unless `HOSTILE_FUZZ_SEED` (hex with `0x`, or
/// decimal) says another at build time.
const SEED: u64 = 0x5eed_f022_d00d_0001;
/// Batches (unless `HOSTILE_FUZZ_BATCHES` says otherwise at build time),
/// each with a round trip of the victim's.
const BATCHES: u64 = 12;
const PER_BATCH: u64 = 250;

/// A number given at build time, else `default`.
fn build_time(value: Option<&str>, default: u64) -> u64 {
    let Some(v) = value.map(str::trim) else {
        return default;
    };
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.ok().filter(|&n| n != 0).unwrap_or(default)
}

/// How long the fuzzer waits for the victim to be ready (the hostile's
/// attacks come first), and for each round trip.
const GO_WAIT_SECS: u64 = 40;
const TRIP_WAIT_SECS: u64 = 10;
/// Whole CPtrs in this process's CSpace (a single guarded CNode).
const DEPTH: u8 = 64;
/// Where the fuzzer maps its page table, with its own frame at the start
/// and a copy of a pool frame in the next page.
const VADDR_PAGE_TABLE: u64 = 0x3000_0000;
/// Pool pages whose own caps go into the cap pool, read-only copies,
/// the mapped copy, and the page of the final registration.
const POOL_PAGES: [usize; 4] = [0, 1, 2, 3];
const READ_ONLY_PAGES: [usize; 2] = [4, 5];
const MAPPED_PAGE: usize = 6;
const FINAL_PAGE: usize = 7;
/// Where the final map goes, in wire pages (1 MiB).
const FINAL_IOVA_PFN: u64 = 0x100;
/// Unexpected answers printed in full (all are counted).
const MAX_NOTES: u32 = 8;

/// What the listener thread saw on the fuzzer's own endpoint.
static LISTENED: AtomicU64 = AtomicU64::new(0);
static LISTENED_CAPS: AtomicU64 = AtomicU64::new(0);
static LISTENING: AtomicU64 = AtomicU64::new(0);
/// The listener's receive slot.
static LISTEN_SLOT: AtomicU64 = AtomicU64::new(0);

fn cnode() -> CNode {
    CNode(CPtr(slot::CNODE))
}

/// Marsaglia's xorshift64 (13, 7, 17).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Kinds of cap in the pool, and what the kernel does with each when it
/// travels with a message to the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    PoolFrame,
    ReadOnlyPoolFrame,
    MappedPoolFrame,
    OwnFrame,
    MappedOwnFrame,
    /// The fuzzer's endpoint (the listener receives on it) or a copy.
    OwnEndpoint,
    /// The fuzzer's notification or a copy.
    OwnNotification,
    Notification,
    Tcb,
    CNode,
    VSpace,
    MappedPageTable,
    UnmappedPageTable,
    VSpaceWithoutAsid,
    UntypedWithChildren,
    Untyped,
    /// The server's endpoint: the kernel unwraps it into its badge.
    ServerEndpoint,
    /// The root task's endpoints (fault, control) and the console.
    RootEndpoint,
    Empty,
}

impl Kind {
    /// Whether the kernel derives a copy (else it stops transferring).
    fn derivable(self) -> bool {
        !matches!(
            self,
            Kind::UnmappedPageTable
                | Kind::VSpaceWithoutAsid
                | Kind::UntypedWithChildren
                | Kind::Empty
        )
    }
    fn pool_frame(self) -> bool {
        matches!(
            self,
            Kind::PoolFrame | Kind::ReadOnlyPoolFrame | Kind::MappedPoolFrame
        )
    }
    fn own_frame(self) -> bool {
        matches!(self, Kind::OwnFrame | Kind::MappedOwnFrame)
    }
}

#[derive(Clone, Copy)]
struct PoolCap {
    cptr: u64,
    kind: Kind,
    name: &'static str,
}

const MAX_POOL: usize = 48;

struct Pool {
    caps: [PoolCap; MAX_POOL],
    len: usize,
}

impl Pool {
    fn add(&mut self, cptr: u64, kind: Kind, name: &'static str) {
        if self.len < MAX_POOL {
            self.caps[self.len] = PoolCap { cptr, kind, name };
            self.len += 1;
        }
    }
    fn pick(&self, r: &mut Rng) -> PoolCap {
        self.caps[r.below(self.len as u64) as usize]
    }
    fn has(&self, kind: Kind) -> bool {
        self.caps[..self.len].iter().any(|c| c.kind == kind)
    }
}

/// Empty slots of the fuzzer's CSpace, handed out in order.
struct Slots {
    next: u64,
    end: u64,
}

impl Slots {
    fn take(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

/// What seL4 5.0.0's `transferCaps` makes of the caps of one message: it
/// unwraps each cap to the endpoint the message is sent on into its
/// badge, moves the first other cap (if it can derive it) into the
/// receiver's one slot, and stops at the first it cannot move;
/// `extraCaps` is the number of caps it went through.
#[derive(Clone, Copy)]
struct Transfer {
    delivered: usize,
    unwrapped: u64,
    landed: Option<Kind>,
}

impl Transfer {
    fn of(caps: &[PoolCap]) -> Transfer {
        let mut t = Transfer {
            delivered: caps.len(),
            unwrapped: 0,
            landed: None,
        };
        for (i, c) in caps.iter().enumerate() {
            if c.kind == Kind::ServerEndpoint {
                t.unwrapped |= 1 << i;
                continue;
            }
            if t.landed.is_some() || !c.kind.derivable() {
                t.delivered = i;
                break;
            }
            t.landed = Some(c.kind);
        }
        t
    }
}

// Successful reply variants (wire order, `Err` left out).
const OK: u8 = 0;
const HELLO: u8 = 1;
const DOMAIN: u8 = 2;
const MEMORY: u8 = 3;
const FAULTS: u8 = 4;
const STATS: u8 = 5;
const WALK: u8 = 6;
const REPLY_NAMES: [&str; 7] = ["Ok", "Hello", "Domain", "Memory", "Faults", "Stats", "Walk"];

fn variant(reply: &Reply) -> u8 {
    match reply {
        Reply::Ok => OK,
        Reply::Hello(_) => HELLO,
        Reply::Domain(_) => DOMAIN,
        Reply::Memory { .. } => MEMORY,
        Reply::Faults(_) => FAULTS,
        Reply::Stats(_) => STATS,
        Reply::Walk(_) => WALK,
        Reply::Err(_) => u8::MAX,
    }
}

fn bit(code: ErrorCode) -> u32 {
    1 << (code as u32)
}

fn bits(codes: &[ErrorCode]) -> u32 {
    codes.iter().fold(0, |b, &c| b | bit(c))
}

/// The replies a request allows: one success variant (or none), and a
/// set of error codes.
#[derive(Clone, Copy)]
struct Expect {
    success: Option<u8>,
    errors: u32,
}

impl Expect {
    const ANY_ERROR: u32 = u32::MAX;
    fn only(code: ErrorCode) -> Expect {
        Expect {
            success: None,
            errors: bit(code),
        }
    }
    fn success(v: u8) -> Expect {
        Expect {
            success: Some(v),
            errors: 0,
        }
    }
    fn or(v: u8, errors: u32) -> Expect {
        Expect {
            success: Some(v),
            errors,
        }
    }
    fn allows(&self, reply: &Reply) -> bool {
        match reply {
            Reply::Err(c) => self.errors & bit(*c) != 0,
            other => self.success == Some(variant(other)),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(v) = self.success {
            write!(f, "{} or ", REPLY_NAMES[v as usize])?;
        }
        if self.errors == Expect::ANY_ERROR {
            return write!(f, "any error");
        }
        write!(f, "Err(")?;
        let mut first = true;
        for c in CODES {
            if self.errors & bit(c) != 0 {
                write!(f, "{}{c:?}", if first { "" } else { "|" })?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

/// The domains and registrations the server gave the fuzzer (by handle),
/// and handles it has seen, for requests that name them.
const MODEL_CAP: usize = 32;
const SEEN: usize = 16;

struct Model {
    domains: [u32; MODEL_CAP],
    n_domains: usize,
    memory: [(u32, u64); MODEL_CAP],
    n_memory: usize,
    seen_domains: [u32; SEEN],
    seen_memory: [u32; SEEN],
    n_seen_domains: usize,
    n_seen_memory: usize,
}

impl Model {
    fn new() -> Model {
        Model {
            domains: [0; MODEL_CAP],
            n_domains: 0,
            memory: [(0, 0); MODEL_CAP],
            n_memory: 0,
            seen_domains: [0; SEEN],
            seen_memory: [0; SEEN],
            n_seen_domains: 0,
            n_seen_memory: 0,
        }
    }
    fn has_domain(&self, d: u32) -> bool {
        self.domains[..self.n_domains].contains(&d)
    }
    fn memory_index(&self, m: u32) -> Option<usize> {
        self.memory[..self.n_memory].iter().position(|e| e.0 == m)
    }
    /// False if the model overflowed (more than any quota allows).
    fn add_domain(&mut self, d: u32) -> bool {
        self.seen_domains[self.n_seen_domains % SEEN] = d;
        self.n_seen_domains += 1;
        if self.n_domains == MODEL_CAP {
            return false;
        }
        self.domains[self.n_domains] = d;
        self.n_domains += 1;
        true
    }
    fn remove_domain(&mut self, d: u32) {
        if let Some(i) = self.domains[..self.n_domains].iter().position(|&x| x == d) {
            self.domains[i] = self.domains[self.n_domains - 1];
            self.n_domains -= 1;
        }
    }
    fn add_memory(&mut self, m: u32, pages: u64) -> bool {
        self.seen_memory[self.n_seen_memory % SEEN] = m;
        self.n_seen_memory += 1;
        if self.n_memory == MODEL_CAP {
            return false;
        }
        self.memory[self.n_memory] = (m, pages);
        self.n_memory += 1;
        true
    }
    fn remove_memory(&mut self, m: u32) {
        if let Some(i) = self.memory_index(m) {
            self.memory[i] = self.memory[self.n_memory - 1];
            self.n_memory -= 1;
        }
    }
    fn frames(&self) -> u64 {
        self.memory[..self.n_memory].iter().map(|e| e.1).sum()
    }

    /// A handle: mostly live ones, else stale, small, another client's
    /// layout (generation, client index, slot) or anything.
    fn pick(r: &mut Rng, live: &[u32], seen: &[u32]) -> u32 {
        match r.below(10) {
            0..=4 if !live.is_empty() => live[r.below(live.len() as u64) as usize],
            5 if !seen.is_empty() => seen[r.below(seen.len() as u64) as usize],
            0..=6 => r.below(8) as u32,
            7 | 8 => (r.below(4) << 12 | r.below(6) << 8 | r.below(8)) as u32,
            _ => r.next() as u32,
        }
    }
    fn domain(&self, r: &mut Rng) -> DomainId {
        let seen = &self.seen_domains[..self.n_seen_domains.min(SEEN)];
        DomainId(Model::pick(r, &self.domains[..self.n_domains], seen))
    }
    fn memory(&self, r: &mut Rng) -> MemoryHandle {
        let mut live = [0u32; MODEL_CAP];
        for (l, e) in live.iter_mut().zip(&self.memory[..self.n_memory]) {
            *l = e.0;
        }
        let seen = &self.seen_memory[..self.n_seen_memory.min(SEEN)];
        MemoryHandle(Model::pick(r, &live[..self.n_memory], seen))
    }

    /// Whether `s` agrees with the model and with its own limits (the
    /// fuzzer has no stream: no fault is ever pending).
    fn agrees(&self, s: &ClientStats) -> bool {
        s.domains as usize == self.n_domains
            && s.memory_regions as usize == self.n_memory
            && u64::from(s.memory_frames) == self.frames()
            && s.domains <= s.max_domains
            && s.asids <= s.max_asids
            && s.mappings <= s.max_mappings
            && s.mapped_bytes <= s.max_mapped_bytes
            && s.pt_pages <= s.max_pt_pages
            && s.memory_regions <= s.max_memory_regions
            && s.memory_frames <= s.max_memory_frames
            && s.faults_pending == 0
            && (s.domains != 0 || (s.mappings == 0 && s.mapped_bytes == 0 && s.pt_pages == 0))
    }
}

/// Nothing in use: no domain, table, ASID, mapping or registration.
fn idle(s: &ClientStats) -> bool {
    s.domains == 0
        && s.mapped_bytes == 0
        && s.mappings == 0
        && s.pt_pages == 0
        && s.asids == 0
        && s.memory_regions == 0
        && s.memory_frames == 0
}

/// A short account of a `ClientStats`.
struct Usage<'a>(&'a ClientStats);

impl fmt::Display for Usage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = self.0;
        write!(
            f,
            "domains {}/{}, ASIDs {}/{}, regions {}/{}, frames {}/{}, mappings {}/{}, {}/{} bytes, table pages {}/{}",
            s.domains,
            s.max_domains,
            s.asids,
            s.max_asids,
            s.memory_regions,
            s.max_memory_regions,
            s.memory_frames,
            s.max_memory_frames,
            s.mappings,
            s.max_mappings,
            s.mapped_bytes,
            s.max_mapped_bytes,
            s.pt_pages,
            s.max_pt_pages
        )
    }
}

/// A line of bounded length (longer text is cut), so that one console
/// message carries it whole.
struct Line {
    buf: [u8; 800],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 800],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Bytes in hex (the first 64).
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for b in self.0.iter().take(64) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > 64 {
            write!(f, "..")?;
        }
        Ok(())
    }
}

/// Why a call has no reply to judge.
#[derive(Debug)]
enum NoReply {
    /// The reply's label was not 0 (printed with the answer).
    #[allow(dead_code)]
    Ipc(u64),
    /// The reply's words do not decode.
    Undecodable,
}

struct Answer {
    tag: MessageInfo,
    reply: Result<Reply, NoReply>,
}

#[derive(Default)]
struct Counts {
    requests: u64,
    valid: u64,
    mutated: u64,
    noise: u64,
    odd_length: u64,
    with_caps: u64,
    unwrapped: u64,
    landed: u64,
    own_endpoint_landed: u64,
    own_notification_landed: u64,
    replies: [u64; 7],
    errors: [u64; 18],
    ipc_errors: u64,
    undecodable: u64,
    unexpected: u64,
    stats_off: u64,
    caps_in_replies: u64,
    signals: u64,
    victim_late: u64,
}

/// Non-zero error counts, `Name n, ...`.
struct ErrorCounts<'a>(&'a [u64; 18]);

impl fmt::Display for ErrorCounts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut first = true;
        for (c, n) in CODES.iter().zip(self.0) {
            if *n != 0 {
                write!(f, "{}{c:?} {n}", if first { "" } else { ", " })?;
                first = false;
            }
        }
        if first {
            write!(f, "none")?;
        }
        Ok(())
    }
}

struct ReplyCounts<'a>(&'a [u64; 7]);

impl fmt::Display for ReplyCounts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, (name, n)) in REPLY_NAMES.iter().zip(self.0).enumerate() {
            write!(f, "{}{name} {n}", if i == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

struct Fuzzer {
    info: &'static StartInfo,
    endpoint: CPtr,
    /// Where a cap in a reply would land (none ever should).
    reply_slot: u64,
    notification: CPtr,
    pool: Pool,
    model: Model,
    counts: Counts,
    /// Every call to the server, and those answered with an error: the
    /// server prints its own count when it retires the fuzzer.
    calls: u64,
    refused: u64,
    notes: u32,
    seed: u64,
    words: [u64; MSG_MAX_WORDS],
    bytes: [u8; MSG_MAX_BYTES],
    view: [u8; MSG_MAX_BYTES],
    reply: [u8; MSG_MAX_BYTES],
}

pub fn fuzzer(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("fuzzer");
    let seed = build_time(option_env!("HOSTILE_FUZZ_SEED"), SEED);
    let batches = build_time(option_env!("HOSTILE_FUZZ_BATCHES"), BATCHES);
    println!(
        "fuzzer: seed {seed:#018x}, {batches} batches of {PER_BATCH} requests (replay: HOSTILE_FUZZ_SEED={seed:#x} HOSTILE_FUZZ_BATCHES={batches} cargo xtask run hostile)"
    );
    let Some(endpoint) = sel4_iommu::server_endpoint(info).map(|c| CPtr(c.cptr)) else {
        println!("fuzzer: no cap to the IOMMU server");
        return false;
    };
    let mut slots = Slots {
        next: info.free_first,
        end: info.free_first + info.free_count,
    };
    let (Some(reply_slot), Some(listen_slot)) = (slots.take(), slots.take()) else {
        println!("fuzzer: no free slots");
        return false;
    };
    LISTEN_SLOT.store(listen_slot, Ordering::Relaxed);
    let mut pool = Pool {
        caps: [PoolCap {
            cptr: 0,
            kind: Kind::Empty,
            name: "",
        }; MAX_POOL],
        len: 0,
    };
    let made = make_pool(info, &mut slots, &mut pool, endpoint);
    let Some((own_endpoint, own_notification)) = made else {
        checks.check(
            "cap-pool",
            false,
            format_args!("could not make my endpoint and notification"),
        );
        return false;
    };
    let kinds = [
        Kind::PoolFrame,
        Kind::ReadOnlyPoolFrame,
        Kind::MappedPoolFrame,
        Kind::OwnFrame,
        Kind::MappedOwnFrame,
        Kind::OwnEndpoint,
        Kind::OwnNotification,
        Kind::Notification,
        Kind::Tcb,
        Kind::CNode,
        Kind::VSpace,
        Kind::MappedPageTable,
        Kind::UnmappedPageTable,
        Kind::VSpaceWithoutAsid,
        Kind::UntypedWithChildren,
        Kind::Untyped,
        Kind::ServerEndpoint,
        Kind::RootEndpoint,
        Kind::Empty,
    ];
    let missing = kinds.iter().filter(|k| !pool.has(**k)).count();
    // Caps by kind (each cap's own name is in the notes of unexpected
    // answers).
    let mut pool_line = Line::new();
    for k in kinds {
        let n = pool.caps[..pool.len].iter().filter(|c| c.kind == k).count();
        let _ = write!(
            pool_line,
            "{}{k:?} {n}",
            if k == kinds[0] { "" } else { ", " }
        );
    }
    checks.check(
        "cap-pool",
        missing == 0,
        format_args!(
            "{} caps, {} of {} kinds: {}",
            pool.len,
            kinds.len() - missing,
            kinds.len(),
            pool_line.as_str()
        ),
    );

    // The listener receives on the fuzzer's endpoint for the whole run
    // (above this thread's priority: it is receiving once spawned).
    let Some(listener) = info.thread("listener") else {
        println!("fuzzer: the system gave me no thread named listener");
        return false;
    };
    if let Err(e) = procrt::spawn(listener, listen, own_endpoint as usize) {
        println!("fuzzer: cannot start the listener: {e:?}");
        return false;
    }
    while LISTENING.load(Ordering::Relaxed) == 0 {
        syscalls::yield_now();
    }

    let mut f = Fuzzer {
        info,
        endpoint,
        reply_slot,
        notification: CPtr(own_notification),
        pool,
        model: Model::new(),
        counts: Counts::default(),
        calls: 0,
        refused: 0,
        notes: 0,
        seed,
        words: [0; MSG_MAX_WORDS],
        bytes: [0; MSG_MAX_BYTES],
        view: [0; MSG_MAX_BYTES],
        reply: [0; MSG_MAX_BYTES],
    };
    let hello = f.request(
        &Request::Hello {
            min_version: ABI_VERSION,
            max_version: ABI_VERSION,
        },
        &[],
    );
    let stats = f.request(&Request::Stats, &[]);
    match (&hello.reply, &stats.reply) {
        (Ok(Reply::Hello(_)), Ok(Reply::Stats(s))) => {
            println!("fuzzer: connected; my quotas: {}", Usage(s))
        }
        _ => {
            println!(
                "fuzzer: cannot connect to the IOMMU server: {:?}, {:?}",
                hello.reply, stats.reply
            );
            return false;
        }
    }

    if wait_for(info, "fuzz-done", GO_WAIT_SECS).is_none() {
        println!("fuzzer: the victim never said it was ready; fuzzing anyway");
    }
    let mut rng = Rng(seed);
    let start = CounterDelay::now();
    for batch in 0..batches {
        // The victim's round trip runs while this batch does.
        signal(info, "fuzz", Some(FUZZ_ROUND_TRIP));
        for k in 0..PER_BATCH {
            f.fuzz_one(&mut rng, batch * PER_BATCH + k);
        }
        if wait_for(info, "fuzz-done", TRIP_WAIT_SECS).is_none() {
            f.counts.victim_late += 1;
            println!("fuzzer: the victim did not finish its round trip after batch {batch}");
        }
    }
    let ms = CounterDelay::now().wrapping_sub(start) * 1000 / COUNTER_HZ;

    let c = &f.counts;
    println!(
        "fuzzer: counts: seed {seed:#x}: {} requests in {ms} ms ({} valid, {} mutated, {} noise; {} with a length field off the bytes; {} with caps, {} of them unwrapped, {} moved a cap into the server's slot); replies: {}; errors: {}; IPC errors {}, undecodable {}, unexpected {}, Stats off {}, caps in replies {}",
        c.requests,
        c.valid,
        c.mutated,
        c.noise,
        c.odd_length,
        c.with_caps,
        c.unwrapped,
        c.landed,
        ReplyCounts(&c.replies),
        ErrorCounts(&c.errors),
        c.ipc_errors,
        c.undecodable,
        c.unexpected,
        c.stats_off,
        c.caps_in_replies
    );
    let answered = c.requests == batches * PER_BATCH;
    checks.check(
        "answered-every-request",
        answered
            && c.ipc_errors == 0
            && c.undecodable == 0
            && c.unexpected == 0
            && c.stats_off == 0
            && c.caps_in_replies == 0,
        format_args!(
            "{} requests in {ms} ms, each answered with label 0 and a reply that decodes and the request allows; errors: {}; IPC errors {}, undecodable {}, unexpected {}, Stats off {}, caps in replies {}",
            c.requests,
            ErrorCounts(&c.errors),
            c.ipc_errors,
            c.undecodable,
            c.unexpected,
            c.stats_off,
            c.caps_in_replies
        ),
    );
    let (listened, listened_caps) = (
        LISTENED.load(Ordering::Relaxed),
        LISTENED_CAPS.load(Ordering::Relaxed),
    );
    checks.check(
        "own-endpoint-never-called",
        listened == 0 && listened_caps == 0 && c.signals == 0,
        format_args!(
            "my endpoint (or a copy) reached the server with {} requests and my notification with {}; the server sent my endpoint {listened} messages ({listened_caps} caps) and signalled my notification {} times",
            c.own_endpoint_landed, c.own_notification_landed, c.signals
        ),
    );
    if c.victim_late != 0 {
        println!(
            "fuzzer: the victim was late {} times (its own checks judge its DMA)",
            c.victim_late
        );
    }

    f.still_served(&mut checks);
    signal(info, "fuzz", Some(FUZZ_OVER));
    println!(
        "fuzzer: calls {} refused {} (every call of mine to the server)",
        f.calls, f.refused
    );
    checks.passed()
}

/// Makes and collects the cap pool; the fuzzer's endpoint and
/// notification (their original caps), or None.
fn make_pool(
    info: &'static StartInfo,
    slots: &mut Slots,
    pool: &mut Pool,
    server: CPtr,
) -> Option<(u64, u64)> {
    let untyped = info.untyped().first().map(|u| CPtr(u.cptr))?;
    let retype = |ty: ObjectType, size_bits: u64, at: u64| {
        Untyped(untyped).retype(ty, size_bits, cnode(), 0, 0, at, 1)
    };
    let mut new = |ty: ObjectType, size_bits: u64| -> Option<u64> {
        let s = slots.take()?;
        match retype(ty, size_bits, s) {
            Ok(()) => Some(s),
            Err(e) => {
                println!("fuzzer: cannot retype a {ty:?}: {e:?}");
                None
            }
        }
    };
    // The 4 KiB objects first (retype aligns each to its size).
    let vspace = new(ObjectType::ARM_PageGlobalDirectoryObject, 0);
    let pt = new(ObjectType::ARM_PageTableObject, 0);
    let pt_unmapped = new(ObjectType::ARM_PageTableObject, 0);
    let frame_mapped = new(ObjectType::ARM_SmallPageObject, 0);
    let frame = new(ObjectType::ARM_SmallPageObject, 0);
    let child = new(ObjectType::UntypedObject, 12);
    let cnode_object = new(ObjectType::CapTableObject, 2);
    let endpoint = new(ObjectType::EndpointObject, 0)?;
    let notification = new(ObjectType::NotificationObject, 0)?;

    if let Some(v) = vspace {
        pool.add(v, Kind::VSpaceWithoutAsid, "a VSpace (PGD) with no ASID");
    }
    if let Some(p) = pt {
        match PageTable(CPtr(p)).map(CPtr(slot::VSPACE), VADDR_PAGE_TABLE, VMAttributes::DEFAULT) {
            Ok(()) => pool.add(
                p,
                Kind::MappedPageTable,
                "a page table mapped at 0x30000000",
            ),
            Err(e) => println!("fuzzer: cannot map my page table: {e:?}"),
        }
    }
    if let Some(p) = pt_unmapped {
        pool.add(p, Kind::UnmappedPageTable, "an unmapped page table");
    }
    let attrs = VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER;
    if let Some(fr) = frame_mapped {
        match Page(CPtr(fr)).map(
            CPtr(slot::VSPACE),
            VADDR_PAGE_TABLE,
            CapRights::READ_WRITE,
            attrs,
        ) {
            Ok(()) => pool.add(
                fr,
                Kind::MappedOwnFrame,
                "a frame from my untyped, mapped at 0x30000000",
            ),
            Err(e) => println!("fuzzer: cannot map my frame: {e:?}"),
        }
    }
    if let Some(fr) = frame {
        pool.add(fr, Kind::OwnFrame, "a frame from my untyped");
    }
    if let Some(u) = child {
        pool.add(u, Kind::Untyped, "a 4 KiB untyped retyped from mine");
    }
    if let Some(c) = cnode_object {
        pool.add(c, Kind::CNode, "a CNode of 4 slots");
    }
    pool.add(
        untyped.0,
        Kind::UntypedWithChildren,
        "my untyped (with children)",
    );

    // Copies: badged, of other rights.
    let mut copy = |src: u64, rights: CapRights, badge: Option<u64>| -> Option<u64> {
        let s = slots.take()?;
        let r = match badge {
            Some(b) => cnode().mint(s, DEPTH, cnode(), src, DEPTH, rights, CapData::badge(b)),
            None => cnode().copy(s, DEPTH, cnode(), src, DEPTH, rights),
        };
        match r {
            Ok(()) => Some(s),
            Err(e) => {
                println!("fuzzer: cannot copy slot {src}: {e:?}");
                None
            }
        }
    };
    pool.add(endpoint, Kind::OwnEndpoint, "my endpoint");
    if let Some(s) = copy(endpoint, CapRights::new(true, false, true), Some(0x55)) {
        pool.add(s, Kind::OwnEndpoint, "my endpoint, badge 0x55, write+grant");
    }
    if let Some(s) = copy(endpoint, CapRights::WRITE, Some(0x0fff_ffff)) {
        pool.add(s, Kind::OwnEndpoint, "my endpoint, badge 0xfffffff, write");
    }
    pool.add(notification, Kind::OwnNotification, "my notification");
    if let Some(s) = copy(notification, CapRights::WRITE, Some(1)) {
        pool.add(s, Kind::OwnNotification, "my notification, badge 1, write");
    }
    if let Some(s) = copy(notification, CapRights::ALL, Some(0x0fff_ffff)) {
        pool.add(s, Kind::OwnNotification, "my notification, badge 0xfffffff");
    }
    for i in POOL_PAGES {
        pool.add(pool_frame(info, i).0, Kind::PoolFrame, "a frame of my pool");
    }
    for i in READ_ONLY_PAGES {
        if let Some(s) = copy(pool_frame(info, i).0, CapRights::READ, None) {
            pool.add(
                s,
                Kind::ReadOnlyPoolFrame,
                "a read-only copy of a pool frame",
            );
        }
    }
    if let Some(s) = copy(pool_frame(info, MAPPED_PAGE).0, CapRights::READ_WRITE, None) {
        match Page(CPtr(s)).map(
            CPtr(slot::VSPACE),
            VADDR_PAGE_TABLE + WIRE_PAGE_SIZE,
            CapRights::READ_WRITE,
            attrs,
        ) {
            Ok(()) => pool.add(
                s,
                Kind::MappedPoolFrame,
                "a copy of a pool frame, mapped at 0x30001000",
            ),
            Err(e) => println!("fuzzer: cannot map the pool frame copy: {e:?}"),
        }
    }
    pool.add(server.0, Kind::ServerEndpoint, "my cap to the server");
    if let Some(s) = copy(server.0, CapRights::WRITE, None) {
        pool.add(s, Kind::ServerEndpoint, "my cap to the server, write only");
    }
    pool.add(slot::TCB, Kind::Tcb, "my TCB");
    pool.add(slot::CNODE, Kind::CNode, "my CNode");
    pool.add(slot::VSPACE, Kind::VSpace, "my VSpace");
    pool.add(slot::FAULT_EP, Kind::RootEndpoint, "my fault endpoint");
    pool.add(slot::CONTROL_EP, Kind::RootEndpoint, "my control endpoint");
    pool.add(slot::CONSOLE, Kind::RootEndpoint, "my console endpoint");
    if let Some(t) = info.thread("listener") {
        pool.add(t.tcb, Kind::Tcb, "my listener's TCB");
        pool.add(
            t.wake,
            Kind::Notification,
            "my listener's wake notification",
        );
    }
    for c in info.caps() {
        if c.name.as_str().starts_with("fuzz") {
            pool.add(
                c.cptr,
                Kind::Notification,
                "a notification shared with the victim",
            );
        }
    }
    pool.add(0, Kind::Empty, "slot 0");
    if let Some(s) = slots.take() {
        pool.add(s, Kind::Empty, "an empty slot");
    }
    Some((endpoint, notification))
}

/// A mostly plausible value of each field type.
fn version(r: &mut Rng) -> u16 {
    match r.below(5) {
        0 => 0,
        1 | 2 => ABI_VERSION,
        3 => u16::MAX,
        _ => r.next() as u16,
    }
}

fn stream(r: &mut Rng) -> StreamId {
    StreamId(match r.below(6) {
        // The victim's and the hostile's.
        0 => 0x8,
        1 => 0x10,
        2 => 0,
        3 => r.below(0x20) as u32,
        4 => r.next() as u16 as u32,
        _ => r.next() as u32,
    })
}

fn ssid(r: &mut Rng) -> Ssid {
    Ssid(match r.below(4) {
        0 | 1 => 0,
        2 => 1,
        _ => r.next() as u32,
    })
}

fn iova_pfn(r: &mut Rng) -> u64 {
    match r.below(8) {
        0..=3 => 0x100 + r.below(32),
        4 => 0,
        // The top of a 48-bit space, and of u64.
        5 => (1 << 36) - 1 - r.below(4),
        6 => u64::MAX - r.below(4),
        _ => r.next(),
    }
}

fn pages(r: &mut Rng) -> u32 {
    match r.below(8) {
        0..=3 => 1,
        4 => 1 + r.below(16) as u32,
        5 => 0,
        6 => u32::MAX - r.below(2) as u32,
        _ => r.next() as u32,
    }
}

fn offset_pfn(r: &mut Rng) -> u32 {
    match r.below(6) {
        0..=3 => 0,
        4 => r.below(4) as u32,
        _ => r.next() as u32,
    }
}

fn perms(r: &mut Rng) -> Perms {
    Perms(match r.below(8) {
        0..=2 => 3,
        3 | 4 => 1,
        5 => 2,
        6 => 0,
        _ => r.byte(),
    })
}

/// A request of any kind with random fields, weighted towards the ones
/// that change state.
fn request(r: &mut Rng, m: &Model) -> Request {
    match r.below(100) {
        0..=2 => Request::Hello {
            min_version: version(r),
            max_version: version(r),
        },
        3..=10 => Request::AllocDomain,
        11..=16 => Request::FreeDomain {
            domain: m.domain(r),
        },
        17..=20 => Request::Attach {
            stream: stream(r),
            ssid: ssid(r),
            domain: m.domain(r),
        },
        21..=23 => Request::Detach {
            stream: stream(r),
            ssid: ssid(r),
        },
        24..=37 => Request::Map {
            domain: m.domain(r),
            iova_pfn: iova_pfn(r),
            memory: m.memory(r),
            offset_pfn: offset_pfn(r),
            pages: pages(r),
            perms: perms(r),
        },
        38..=43 => {
            let n = if r.chance(70) {
                r.below(5)
            } else {
                r.below(MAX_BATCH as u64 + 1)
            } as usize;
            let mut entries = [MapEntry {
                iova_pfn: 0,
                memory: MemoryHandle(0),
                offset_pfn: 0,
                pages: 0,
                perms: Perms(0),
            }; MAX_BATCH];
            for e in entries.iter_mut().take(n) {
                *e = MapEntry {
                    iova_pfn: iova_pfn(r),
                    memory: m.memory(r),
                    offset_pfn: offset_pfn(r),
                    pages: pages(r),
                    perms: perms(r),
                };
            }
            Request::MapBatch {
                domain: m.domain(r),
                entries: entries[..n].try_into().unwrap_or_default(),
            }
        }
        44..=53 => Request::Unmap {
            domain: m.domain(r),
            iova_pfn: iova_pfn(r),
            pages: pages(r),
        },
        54..=56 => Request::BindSva {
            stream: stream(r),
            ssid: ssid(r),
        },
        57..=59 => Request::UnbindSva {
            stream: stream(r),
            ssid: ssid(r),
        },
        60..=63 => Request::Faults { max: r.byte() },
        64..=69 => Request::Stats,
        70..=91 => Request::RegisterMemory {
            extend: if r.chance(60) {
                None
            } else {
                Some(m.memory(r))
            },
        },
        92..=95 => Request::Walk {
            domain: m.domain(r),
            iova_pfn: iova_pfn(r),
        },
        _ => Request::UnregisterMemory {
            memory: m.memory(r),
        },
    }
}

/// A few random edits of an encoded message.
fn mutate(r: &mut Rng, bytes: &mut [u8; MSG_MAX_BYTES], len: &mut usize) {
    for _ in 0..1 + r.below(3) {
        let at = r.below(*len as u64) as usize;
        match r.below(6) {
            0 if *len > 0 => bytes[at] ^= 1 << r.below(8),
            1 if *len > 0 => bytes[at] = r.byte(),
            2 if *len > 0 => *len = at,
            3 => {
                for _ in 0..1 + r.below(16) {
                    if *len < MSG_MAX_BYTES {
                        bytes[*len] = r.byte();
                        *len += 1;
                    }
                }
            }
            4 if *len > 0 => bytes[at] = [0, 0x01, 0x7f, 0x80, 0xff][r.below(5) as usize],
            // Another request's variant index over these fields.
            _ if *len > 0 => bytes[0] = r.below(16) as u8,
            _ => {}
        }
    }
}

/// What a request allows as its reply, from what the server will decode
/// (`local`), what the kernel does with its caps, and the model.
fn expect(local: &Result<Request, ErrorCode>, t: &Transfer, m: &Model) -> Expect {
    use ErrorCode::*;
    if t.delivered > 1 || t.unwrapped != 0 {
        return Expect::only(BadCapability);
    }
    let Ok(request) = local else {
        return Expect::only(Malformed);
    };
    match request {
        Request::Hello {
            min_version,
            max_version,
        } => {
            if (*min_version..=*max_version).contains(&ABI_VERSION) {
                Expect::success(HELLO)
            } else {
                Expect::only(VersionMismatch)
            }
        }
        Request::AllocDomain => Expect::or(DOMAIN, bits(&[QuotaExceeded, NoAsid, NoMemory])),
        // No stream is ever attached: a live domain is freed.
        Request::FreeDomain { domain } => {
            if m.has_domain(domain.0) {
                Expect::success(OK)
            } else {
                Expect::only(NoSuchDomain)
            }
        }
        // The fuzzer has no stream.
        Request::Attach { .. }
        | Request::Detach { .. }
        | Request::BindSva { .. }
        | Request::UnbindSva { .. } => Expect {
            success: None,
            errors: Expect::ANY_ERROR,
        },
        Request::Map { .. } | Request::MapBatch { .. } | Request::Unmap { .. } => {
            Expect::or(OK, Expect::ANY_ERROR)
        }
        Request::Faults { .. } => Expect::success(FAULTS),
        Request::Stats => Expect::success(STATS),
        Request::RegisterMemory { extend } => {
            let Some(kind) = t.landed else {
                return Expect::only(Malformed);
            };
            if let Some(h) = extend {
                if m.memory_index(h.0).is_none() {
                    return Expect::only(NoSuchMemory);
                }
            }
            if kind.pool_frame() {
                Expect::or(MEMORY, bit(QuotaExceeded))
            } else if kind.own_frame() {
                Expect {
                    success: None,
                    errors: bits(&[QuotaExceeded, NotPermitted]),
                }
            } else {
                Expect {
                    success: None,
                    errors: bits(&[QuotaExceeded, BadCapability]),
                }
            }
        }
        Request::UnregisterMemory { memory } => {
            if m.memory_index(memory.0).is_some() {
                Expect::or(OK, bit(InUse))
            } else {
                Expect::only(NoSuchMemory)
            }
        }
        // An address whose byte offset overflows is OutOfRange.
        Request::Walk { domain, .. } => {
            if m.has_domain(domain.0) {
                Expect::or(WALK, bit(OutOfRange))
            } else {
                Expect::only(NoSuchDomain)
            }
        }
    }
}

impl Fuzzer {
    /// One `seL4_Call` to the server: `length` words of `self.words` (the
    /// kernel delivers at most 120) and `caps` in the IPC buffer's cap
    /// slots. Counts the call, and an error reply as refused.
    fn call(&mut self, label: u64, unwrapped: u64, length: u64, caps: &[CPtr]) -> Answer {
        let Some(buffer) = ipc_buffer() else {
            return Answer {
                tag: MessageInfo::new(0, 0, 0, 0),
                reply: Err(NoReply::Ipc(0)),
            };
        };
        let mut registers = [0u64; MSG_REGISTERS];
        let n = (length as usize).min(MSG_MAX_WORDS);
        for (i, &w) in self.words.iter().enumerate().take(n) {
            if i < MSG_REGISTERS {
                registers[i] = w;
            } else {
                buffer.set_mr(i, w);
            }
        }
        for (i, c) in caps.iter().enumerate() {
            buffer.set_cap(i, *c);
        }
        buffer.set_receive_path(CPtr(slot::CNODE), self.reply_slot, DEPTH as u64);
        let info = MessageInfo::new(label, unwrapped, caps.len() as u64, length);
        let tag = syscalls::call_with_mrs(self.endpoint, info, &mut registers);
        self.calls += 1;
        if tag.extra_caps() > 0 {
            self.counts.caps_in_replies += 1;
            let _ = cnode().delete(self.reply_slot, DEPTH);
        }
        if tag.label() != 0 {
            return Answer {
                tag,
                reply: Err(NoReply::Ipc(tag.label())),
            };
        }
        let Some(buffer) = ipc_buffer() else {
            return Answer {
                tag,
                reply: Err(NoReply::Ipc(0)),
            };
        };
        let words = tag.length().min(MSG_MAX_WORDS);
        let mut reply_words = [0u64; MSG_MAX_WORDS];
        for (i, w) in reply_words.iter_mut().enumerate().take(words) {
            *w = if i < MSG_REGISTERS {
                registers[i]
            } else {
                buffer.mr(i)
            };
        }
        let len = unpack_words(&reply_words[..words], &mut self.reply).unwrap_or(0);
        let reply = decode_reply(&self.reply[..len]).map_err(|_| NoReply::Undecodable);
        if matches!(reply, Ok(Reply::Err(_))) {
            self.refused += 1;
        }
        Answer { tag, reply }
    }

    /// A well-formed request with `caps`.
    fn request(&mut self, request: &Request, caps: &[CPtr]) -> Answer {
        let len = encode(request, &mut self.bytes).unwrap_or(0);
        self.words = [0; MSG_MAX_WORDS];
        let words = pack_words(&self.bytes[..len], &mut self.words).unwrap_or(0);
        self.call(0, 0, words as u64, caps)
    }

    fn stats(&mut self) -> Option<ClientStats> {
        match self.request(&Request::Stats, &[]).reply {
            Ok(Reply::Stats(s)) => Some(s),
            _ => None,
        }
    }

    /// One random request.
    fn fuzz_one(&mut self, r: &mut Rng, index: u64) {
        self.counts.requests += 1;
        let mode = r.below(100);
        let mut len;
        let mut register = false;
        if mode < 75 {
            let request = request(r, &self.model);
            register = matches!(request, Request::RegisterMemory { .. });
            len = encode(&request, &mut self.bytes).unwrap_or(0);
            if mode < 45 {
                self.counts.valid += 1;
            } else {
                self.counts.mutated += 1;
                mutate(r, &mut self.bytes, &mut len);
            }
        } else {
            self.counts.noise += 1;
            len = match r.below(10) {
                0..=4 => r.below(33),
                5..=7 => r.below(129),
                _ => r.below(MSG_MAX_BYTES as u64 + 1),
            } as usize;
            for b in self.bytes[..len].iter_mut() {
                *b = r.byte();
            }
            if len > 0 && r.chance(50) {
                self.bytes[0] = r.below(16) as u8;
            }
        }
        self.words = [0; MSG_MAX_WORDS];
        let words = pack_words(&self.bytes[..len], &mut self.words).unwrap_or(0);
        let length = if r.chance(90) {
            words as u64
        } else {
            self.counts.odd_length += 1;
            r.below(128)
        };
        // What the server decodes: the words the kernel delivers.
        let delivered = (length as usize).min(MSG_MAX_WORDS);
        for w in self.words[words.min(delivered)..delivered].iter_mut() {
            *w = if r.chance(50) { 0 } else { r.next() };
        }
        let n = unpack_words(&self.words[..delivered], &mut self.view).unwrap_or(0);
        let local = decode_request(&self.view[..n]);

        let ncaps = if register && r.chance(70) {
            1
        } else {
            match r.below(10) {
                0..=3 => 0,
                4..=6 => 1,
                7 | 8 => 2,
                _ => 3,
            }
        };
        let mut chosen = [self.pool.caps[0]; 3];
        let mut cptrs = [CPtr(0); 3];
        for i in 0..ncaps {
            chosen[i] = self.pool.pick(r);
            cptrs[i] = CPtr(chosen[i].cptr);
        }
        let chosen = &chosen[..ncaps];
        let label = if r.chance(70) { 0 } else { r.below(1 << 20) };
        let unwrapped = if r.chance(90) { 0 } else { r.below(8) };
        let transfer = Transfer::of(chosen);
        if ncaps > 0 {
            self.counts.with_caps += 1;
        }
        if transfer.unwrapped != 0 {
            self.counts.unwrapped += 1;
        }
        if let Some(kind) = transfer.landed {
            self.counts.landed += 1;
            match kind {
                Kind::OwnEndpoint => self.counts.own_endpoint_landed += 1,
                Kind::OwnNotification => self.counts.own_notification_landed += 1,
                _ => {}
            }
        }
        let expected = expect(&local, &transfer, &self.model);

        let answer = self.call(label, unwrapped, length, &cptrs[..ncaps]);

        let mut problem: Option<&str> = None;
        match &answer.reply {
            Err(NoReply::Ipc(_)) => {
                self.counts.ipc_errors += 1;
                problem = Some("IPC error");
            }
            Err(NoReply::Undecodable) => {
                self.counts.undecodable += 1;
                problem = Some("undecodable reply");
            }
            Ok(reply) => {
                match reply {
                    Reply::Err(c) => self.counts.errors[*c as usize] += 1,
                    other => self.counts.replies[variant(other) as usize] += 1,
                }
                if !expected.allows(reply) {
                    self.counts.unexpected += 1;
                    problem = Some("reply the request does not allow");
                } else if let Ok(request) = &local {
                    problem = self.learn(request, reply);
                }
            }
        }
        if let Some(what) = problem {
            self.note(
                what, index, label, length, len, chosen, &transfer, &local, &expected, &answer,
            );
        }
        if syscalls::poll(Notification(self.notification)).0 != 0 {
            self.counts.signals += 1;
        }
    }

    /// Updates the model from an allowed reply; what is wrong, if the
    /// reply disagrees with it.
    fn learn(&mut self, request: &Request, reply: &Reply) -> Option<&'static str> {
        match (request, reply) {
            (Request::AllocDomain, Reply::Domain(d)) => {
                if self.model.has_domain(d.0) {
                    self.counts.unexpected += 1;
                    return Some("a live domain's handle given again");
                }
                if !self.model.add_domain(d.0) {
                    self.counts.unexpected += 1;
                    return Some("more domains than any quota");
                }
            }
            (Request::FreeDomain { domain }, Reply::Ok) => self.model.remove_domain(domain.0),
            (Request::RegisterMemory { extend: None }, Reply::Memory { memory, pages }) => {
                if self.model.memory_index(memory.0).is_some() || *pages != 1 {
                    self.counts.unexpected += 1;
                    return Some("a live handle given again, or not one page for one frame");
                }
                if !self.model.add_memory(memory.0, *pages) {
                    self.counts.unexpected += 1;
                    return Some("more registrations than any quota");
                }
            }
            (Request::RegisterMemory { extend: Some(h) }, Reply::Memory { memory, pages }) => {
                match self.model.memory_index(h.0) {
                    Some(i) if *memory == *h && *pages == self.model.memory[i].1 + 1 => {
                        self.model.memory[i].1 = *pages;
                    }
                    _ => {
                        self.counts.unexpected += 1;
                        return Some("an extension that is not one more page of that handle");
                    }
                }
            }
            (Request::UnregisterMemory { memory }, Reply::Ok) => self.model.remove_memory(memory.0),
            (Request::Stats, Reply::Stats(s)) if !self.model.agrees(s) => {
                self.counts.stats_off += 1;
                return Some("Stats disagree with what I was given");
            }
            _ => {}
        }
        None
    }

    /// Prints one unexpected answer in full (the first few).
    #[allow(clippy::too_many_arguments)]
    fn note(
        &mut self,
        what: &str,
        index: u64,
        label: u64,
        length: u64,
        len: usize,
        caps: &[PoolCap],
        t: &Transfer,
        local: &Result<Request, ErrorCode>,
        expected: &Expect,
        answer: &Answer,
    ) {
        self.notes += 1;
        if self.notes > MAX_NOTES {
            return;
        }
        let mut line = Line::new();
        let _ = write!(
            line,
            "fuzzer: UNEXPECTED ({what}) at request #{index} of seed {:#x}: label {label:#x}, length field {length}, {len} bytes {}; caps [",
            self.seed,
            Hex(&self.bytes[..len])
        );
        for (i, c) in caps.iter().enumerate() {
            let _ = write!(
                line,
                "{}slot {} ({})",
                if i == 0 { "" } else { ", " },
                c.cptr,
                c.name
            );
        }
        let _ = write!(
            line,
            "] (the kernel: {} through, unwrapped {:#b}, landed {:?}); it decodes as {:?}; allowed {expected}; reply tag {:#x}: {:?}; model: domains {:?}, memory {:?}",
            t.delivered,
            t.unwrapped,
            t.landed,
            local,
            answer.tag.0,
            answer.reply,
            &self.model.domains[..self.model.n_domains],
            &self.model.memory[..self.model.n_memory]
        );
        println!("{}", line.as_str());
    }

    /// After the run: takes back every domain and registration the model
    /// holds, checks the server counts nothing in use, then registers a
    /// pool frame, makes a domain and maps it, and checks the count.
    fn still_served(&mut self, checks: &mut Checks) {
        let (domains, regions) = (self.model.n_domains, self.model.n_memory);
        let mut taken_back = true;
        while self.model.n_domains > 0 {
            let d = self.model.domains[0];
            let a = self.request(
                &Request::FreeDomain {
                    domain: DomainId(d),
                },
                &[],
            );
            taken_back &= matches!(a.reply, Ok(Reply::Ok));
            self.model.remove_domain(d);
        }
        while self.model.n_memory > 0 {
            let m = self.model.memory[0].0;
            let a = self.request(
                &Request::UnregisterMemory {
                    memory: MemoryHandle(m),
                },
                &[],
            );
            taken_back &= matches!(a.reply, Ok(Reply::Ok));
            self.model.remove_memory(m);
        }
        let before = self.stats();

        let frame = pool_frame(self.info, FINAL_PAGE);
        let registered = self
            .request(&Request::RegisterMemory { extend: None }, &[frame])
            .reply;
        let domain = self.request(&Request::AllocDomain, &[]).reply;
        let (memory, domain) = match (&registered, &domain) {
            (Ok(Reply::Memory { memory, pages: 1 }), Ok(Reply::Domain(d))) => (*memory, *d),
            _ => {
                checks.check(
                    "still-served-after-fuzz",
                    false,
                    format_args!(
                        "took back {domains} domains and {regions} registrations: {taken_back}; then registering pool page {FINAL_PAGE}: {registered:?}, a domain: {domain:?}"
                    ),
                );
                return;
            }
        };
        let mapped = self
            .request(
                &Request::Map {
                    domain,
                    iova_pfn: FINAL_IOVA_PFN,
                    memory,
                    offset_pfn: 0,
                    pages: 1,
                    perms: Perms::RW,
                },
                &[],
            )
            .reply;
        let during = self.stats();
        let unmapped = self
            .request(
                &Request::Unmap {
                    domain,
                    iova_pfn: FINAL_IOVA_PFN,
                    pages: 1,
                },
                &[],
            )
            .reply;
        let freed = self.request(&Request::FreeDomain { domain }, &[]).reply;
        let unregistered = self
            .request(&Request::UnregisterMemory { memory }, &[])
            .reply;
        let after = self.stats();

        let counted = during.as_ref().is_some_and(|s| {
            s.domains == 1
                && s.memory_regions == 1
                && s.memory_frames == 1
                && s.mappings == 1
                && s.mapped_bytes == WIRE_PAGE_SIZE
                && (1..=s.max_pt_pages).contains(&s.pt_pages)
                && (1..=s.max_asids).contains(&s.asids)
                && s.faults_pending == 0
        });
        let ok = taken_back
            && before.as_ref().is_some_and(idle)
            && matches!(mapped, Ok(Reply::Ok))
            && counted
            && matches!(unmapped, Ok(Reply::Ok))
            && matches!(freed, Ok(Reply::Ok))
            && matches!(unregistered, Ok(Reply::Ok))
            && after.as_ref().is_some_and(idle);
        let none = ClientStats::default();
        checks.check(
            "still-served-after-fuzz",
            ok,
            format_args!(
                "took back the run's {domains} domains and {regions} registrations (all Ok: {taken_back}), then nothing in use: {}; registered pool page {FINAL_PAGE} as {memory:?}, {domain:?}, map 1 page at {:#x}: {mapped:?}; the server counts {}; unmap {unmapped:?}, free {freed:?}, unregister {unregistered:?}; then nothing in use: {}",
                before.as_ref().is_some_and(idle),
                FINAL_IOVA_PFN * WIRE_PAGE_SIZE,
                Usage(during.as_ref().unwrap_or(&none)),
                after.as_ref().is_some_and(idle)
            ),
        );
    }
}

/// The listener: receives on the fuzzer's endpoint for the whole run and
/// counts what arrives (nothing should); answers each message, so that no
/// sender stays blocked on it.
extern "C" fn listen(endpoint: usize) -> ! {
    let receive = LISTEN_SLOT.load(Ordering::Relaxed);
    if let Some(buffer) = ipc_buffer() {
        buffer.set_receive_path(CPtr(slot::CNODE), receive, DEPTH as u64);
    }
    LISTENING.store(1, Ordering::Relaxed);
    loop {
        let mut mrs = [0u64; MSG_REGISTERS];
        let (tag, badge) = syscalls::recv_with_mrs(CPtr(endpoint as u64), &mut mrs);
        LISTENED.fetch_add(1, Ordering::Relaxed);
        if tag.extra_caps() > tag.caps_unwrapped().count_ones() as usize {
            LISTENED_CAPS.fetch_add(1, Ordering::Relaxed);
            let _ = cnode().delete(receive, DEPTH);
        }
        println!(
            "fuzzer: my endpoint received a message: label {:#x}, badge {:#x}, {} words, {} caps, MR0 {:#x}",
            tag.label(),
            badge.0,
            tag.length(),
            tag.extra_caps(),
            mrs[0]
        );
        syscalls::reply_with_mrs(MessageInfo::new(0, 0, 0, 0), [0; MSG_REGISTERS]);
    }
}
