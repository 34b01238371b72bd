//! The hostile driver: attacks on the IOMMU server's capability boundary
//! (DESIGN.md section 5, "The capability boundary"), each judged from
//! memory, from what the server answered and from what the hostile's own
//! objects saw. The rule the server is held to:
//!
//! - only frames of the client's own `dma` pool may be registered: a cap
//!   that is no frame is `BadCapability`, a genuine frame from anywhere
//!   else (retyped from the client's own untyped) `NotPermitted`, and
//!   resolving a cap never IPCs to or signals an object the client holds;
//! - a `RegisterMemory` that carries an unwrapped cap (one to the very
//!   endpoint it is sent on) or more than one cap is `BadCapability`, and
//!   the band's receive slot keeps working for everyone;
//! - a process's fault-endpoint cap (slot 1) has no read right.
//!
//! After each attack the hostile lets the victim (same band) do a DMA
//! round trip (`step`, `step-done`). Its extra thread, the accomplice,
//! first receives on an endpoint the hostile registers as memory (and
//! answers like a frame would, with the kernel's physical base as the
//! address), then becomes the thief: it receives on slot 1.

use crate::checks::Checks;
use crate::common::{
    bring_up, connect, dma, pool_frame, signal, wait_for, Client, Device, Mem, PAGE, THIEF_ARMED,
    THIEF_STARTING, TRANSFER,
};
use crate::edu::Direction;
use core::sync::atomic::{AtomicU64, Ordering};
use iommu_client::{DomainId, Error, ErrorCode, Memory, MemoryHandle, Perms, Ssid, TransportError};
use iommu_protocol::{decode_reply, encode, pack_words, unpack_words, Reply, Request};
use procrt::procinfo::{control, slot};
use procrt::{println, StartInfo};
use sel4_abi::{
    ipc_buffer, syscalls, CNode, CPtr, CapData, CapRights, MessageInfo, Notification, ObjectType,
    Page, PageTable, Untyped, VMAttributes,
};

// IOVAs of the hostile's domain (below the edu's 28-bit DMA mask).
/// Bytes of a DMA that should fault.
const PROBE: usize = 256;

/// Pool page 3, read-only for the device: the pattern the edu copies.
const IOVA_SOURCE: u64 = 0x10_0000;
/// Pool page 4, read-write: where results land.
const IOVA_RESULT: u64 = 0x18_0000;
/// Pool page 0, whose frame cap the hostile then revokes and deletes.
const IOVA_REVOKED: u64 = 0x20_0000;
/// The frame retyped from the hostile's own untyped.
const IOVA_OWN_FRAME: u64 = 0x30_0000;
/// Where the "memory" the endpoint stood for would be mapped (2 MiB aligned).
const IOVA_FAKE: u64 = 0x40_0000;
/// The read-only copy of pool page 2.
const IOVA_READ_ONLY: u64 = 0x70_0000;
/// Pool page 5, registered after the wedge attempt.
const IOVA_AFTER_WEDGE: u64 = 0x80_0000;

const PAGE_REVOKED: usize = 0;
const PAGE_WEDGE: usize = 1;
const PAGE_READ_ONLY: usize = 2;
const PAGE_SOURCE: usize = 3;
const PAGE_RESULT: usize = 4;
const PAGE_AFTER_WEDGE: usize = 5;
/// Pages nothing maps until the wedge: their fingerprint shows stray DMA.
const PAGES_BYSTANDING: [usize; 3] = [5, 6, 7];

/// Where the hostile maps memory for the CPU: its own retyped frame, the
/// frame retyped into the same memory after the revoke (both in the page
/// table that maps the DMA pool), and a page table of its own.
const VADDR_OWN_FRAME: u64 = 0x2010_0000;
const VADDR_REUSED: u64 = 0x2011_0000;
const VADDR_PAGE_TABLE: u64 = 0x3000_0000;

/// The physical address the accomplice answers `Page_GetAddress` with:
/// the kernel's own image (PHYS_BASE).
const FAKE_PADDR: u64 = 0x4000_0000;
/// Where the kernel's `.text` starts in its image: the 64 KiB `.boot`
/// before it is reclaimed as untyped memory once the kernel has booted.
const KERNEL_TEXT_OFFSET: u64 = 0x1_0000;
/// How the main thread tells the accomplice to stop receiving on its
/// endpoint (a badged copy of it, so no server message can look alike).
const QUIT_BADGE: u64 = 0x77;
const QUIT_LABEL: u64 = 0x7175;
/// An unknown control message: the root task prints it and goes on
/// receiving, which moves it behind the thief in the endpoint's queue.
const PING_LABEL: u64 = 0x7069;
/// Receive slots of the accomplice for caps the server hands it.
const RECV_SLOTS: usize = 4;
/// Whole CPtrs in this process's CSpace (a single guarded CNode).
const DEPTH: u8 = 64;

/// What the accomplice saw on its endpoint.
static MESSAGES: AtomicU64 = AtomicU64::new(0);
static LABELS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static CAPS: AtomicU64 = AtomicU64::new(0);
static CAP_KINDS: [AtomicU64; RECV_SLOTS] = [const { AtomicU64::new(0) }; RECV_SLOTS];
static RECV_BASE: AtomicU64 = AtomicU64::new(0);
/// 1: receiving on its endpoint; 2: left it; 3: the thief.
static PHASE: AtomicU64 = AtomicU64::new(0);
/// Messages the thief took from the root task's endpoint.
static STOLEN: AtomicU64 = AtomicU64::new(0);

/// Empty slots of the hostile's CSpace, handed out in order.
struct Slots {
    next: u64,
    end: u64,
}

impl Slots {
    fn take_n(&mut self, n: u64) -> Option<u64> {
        let first = self.next;
        (first + n <= self.end).then(|| {
            self.next += n;
            first
        })
    }
    fn take(&mut self) -> u64 {
        self.take_n(1).expect("no free slot left")
    }
}

struct Hostile {
    info: &'static StartInfo,
    checks: Checks,
    device: Device,
    iommu: Client,
    domain: DomainId,
    slots: Slots,
    untyped: CPtr,
    untyped_bits: u64,
}

fn cnode() -> CNode {
    CNode(CPtr(slot::CNODE))
}

/// The kernel's name for the type of the cap in `cptr` (the hostile system
/// runs on a debug kernel, as `hello-resources` does).
fn cap_kind(cptr: CPtr) -> u64 {
    u64::from(syscalls::debug_cap_identify(cptr))
}

fn kind_name(kind: u64) -> &'static str {
    match kind {
        0 => "null",
        1 => "frame",
        2 => "untyped",
        3 => "page table",
        4 => "endpoint",
        5 => "page directory",
        6 => "notification",
        7 => "page upper directory",
        8 => "reply",
        9 => "page global directory (a VSpace)",
        10 => "CNode",
        11 => "ASID control",
        12 => "TCB",
        13 => "ASID pool",
        14 => "IRQ control",
        16 => "IRQ handler",
        _ => "?",
    }
}

fn label_name(label: u64) -> &'static str {
    sel4_abi::generated::ALL_INVOCATION_LABELS
        .iter()
        .find(|(_, l)| *l == label)
        .map_or("?", |(name, _)| name)
}

fn is_err(r: &Result<Memory, Error>, code: ErrorCode) -> bool {
    matches!(r, Err(Error::Iommu(c)) if *c == code)
}

impl Hostile {
    fn retype(&self, ty: ObjectType, slot: u64, count: u64) -> Result<(), sel4_abi::Error> {
        Untyped(self.untyped).retype(ty, 0, cnode(), 0, 0, slot, count)
    }

    /// The pattern `seed` into the edu's buffer, read by the device from
    /// pool page 3 through [`IOVA_SOURCE`].
    fn stage(&self, seed: u8) -> bool {
        Mem::pool_page(self.info, PAGE_SOURCE).fill_pattern(seed);
        dma(&self.device, Direction::ToDevice, IOVA_SOURCE, TRANSFER)
    }

    /// The edu's buffer to `iova`.
    fn land(&self, iova: u64) -> bool {
        dma(&self.device, Direction::ToMemory, iova, TRANSFER)
    }

    /// A short write to `iova`, for DMA that should fault: QEMU records
    /// one fault event per 4 bytes, and a 2 KiB burst overflows the
    /// server's event queue.
    fn probe(&self, iova: u64) -> bool {
        dma(&self.device, Direction::ToMemory, iova, PROBE)
    }

    /// Forgets memory the server should not have taken (best effort).
    fn forget(&mut self, r: &Result<Memory, Error>) {
        if let Ok(m) = r {
            let _ = self.iommu.unregister_memory(m.handle);
        }
    }

    /// Lets the victim do one round trip, and waits until it did.
    fn step(&self, name: &str) {
        signal(self.info, "step", None);
        if wait_for(self.info, "step-done", 30).is_none() {
            println!("hostile: the victim did not finish its round trip after {name}");
        }
    }

    /// Registers a cap that is no frame: `BadCapability` is the answer.
    fn not_a_frame(&mut self, name: &str, cptr: CPtr, note: &str) {
        let kind = cap_kind(cptr);
        let r = self.iommu.register_memory(&[cptr]);
        self.checks.check(
            name,
            is_err(&r, ErrorCode::BadCapability),
            format_args!(
                "registered my {} cap (slot {}{note}): {r:?}",
                kind_name(kind),
                cptr.0
            ),
        );
        self.forget(&r);
    }
}

pub fn hostile(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("hostile");
    let Some(device) = bring_up(info, &mut checks) else {
        return false;
    };
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let (Some(untyped), Some(accomplice)) = (info.untyped().first(), info.thread("accomplice"))
    else {
        println!("hostile: the system gave me no untyped or no accomplice thread");
        return false;
    };
    let mut slots = Slots {
        next: info.free_first,
        end: info.free_first + info.free_count,
    };
    RECV_BASE.store(
        slots.take_n(RECV_SLOTS as u64).unwrap_or(0),
        Ordering::Relaxed,
    );

    // Its own DMA works: pool pages 3 (source) and 4 (result).
    let setup = (|| -> Result<(MemoryHandle, DomainId), Error> {
        let memory = iommu
            .register_memory(&[pool_frame(info, PAGE_SOURCE), pool_frame(info, PAGE_RESULT)])?
            .handle;
        let domain = iommu.alloc_domain()?;
        iommu.attach(device.stream, Ssid(0), domain)?;
        let page = PAGE as u64;
        iommu.map(domain, IOVA_SOURCE, memory, 0, page, Perms::READ)?;
        iommu.map(domain, IOVA_RESULT, memory, page, page, Perms::RW)?;
        Ok((memory, domain))
    })();
    let Ok((_, domain)) = setup else {
        checks.check("own-dma", false, format_args!("setup: {setup:?}"));
        return false;
    };
    let mut h = Hostile {
        info,
        checks,
        device,
        iommu,
        domain,
        slots,
        untyped: CPtr(untyped.cptr),
        untyped_bits: untyped.size_bits,
    };
    let result = Mem::pool_page(info, PAGE_RESULT);
    result.fill_with(0);
    let landed = h.stage(0x31) && h.land(IOVA_RESULT) && result.holds(0x31, TRANSFER, 0);
    h.checks.check(
        "own-dma",
        landed,
        format_args!(
            "StreamID {:#x}: {TRANSFER} bytes via {IOVA_SOURCE:#x} -> edu -> {IOVA_RESULT:#x}",
            h.device.stream.0
        ),
    );
    if wait_for(info, "victim-ready", 30).is_none() {
        println!("hostile: the victim never said it was ready; attacking anyway");
    }

    not_a_frame(&mut h);
    h.step("not-a-frame");
    endpoint_as_frame(&mut h, accomplice);
    h.step("endpoint-as-frame");
    notification_as_frame(&mut h);
    h.step("notification-as-frame");
    let own = own_untyped_frame(&mut h);
    h.step("own-untyped-frame");
    println!(
        "hostile: device-frame: skipped: my edu's BAR frames are mapped for me, but their caps stay in the root task's CSpace (StartInfo gives vaddrs, not caps), so I have no frame cap of them to register"
    );
    read_only(&mut h);
    h.step("read-only");
    revoke_after_map(&mut h);
    h.step("revoke-after-map");
    untyped_revoked(&mut h, own);
    h.step("untyped-revoked");
    wedge(&mut h);
    h.step("wedge");

    let (messages, caps) = (
        MESSAGES.load(Ordering::Relaxed),
        CAPS.load(Ordering::Relaxed),
    );
    h.checks.check(
        "accomplice-never-called",
        messages == 0 && caps == 0,
        format_args!(
            "over the whole run the server sent my accomplice's endpoint {messages} messages and {caps} caps"
        ),
    );
    if let Ok(stats) = h.iommu.stats() {
        println!("hostile: server's account of me: {stats:?}");
    }
    println!(
        "hostile: DMA pool at physical {:#x} size {:#x}; every check printed ({}); I never report done: the thief goes last",
        info.dma.paddr,
        info.dma.size,
        if h.checks.passed() {
            "all ok"
        } else {
            "some FAILED"
        }
    );
    thief(info, accomplice)
}

/// Caps of every kind that is no frame: the untyped first (while it has
/// no children: the kernel derives no copy of an untyped with children,
/// so it would never reach the server), the TCB, CNode and VSpace, and a
/// page table (mapped: an unmapped one cannot be derived either).
fn not_a_frame(h: &mut Hostile) {
    let untyped = h.untyped;
    h.not_a_frame("not-a-frame-untyped", untyped, ", no children yet");
    h.not_a_frame("not-a-frame-tcb", CPtr(slot::TCB), "");
    h.not_a_frame("not-a-frame-cnode", CPtr(slot::CNODE), "");
    h.not_a_frame("not-a-frame-vspace", CPtr(slot::VSPACE), "");
    let pt = h.slots.take();
    let made = h
        .retype(ObjectType::ARM_PageTableObject, pt, 1)
        .and_then(|()| {
            PageTable(CPtr(pt)).map(CPtr(slot::VSPACE), VADDR_PAGE_TABLE, VMAttributes::DEFAULT)
        });
    if made.is_ok() {
        h.not_a_frame("not-a-frame-page-table", CPtr(pt), ", mapped at 0x30000000");
    } else {
        h.checks.check(
            "not-a-frame-page-table",
            false,
            format_args!("could not make and map a page table: {made:?}"),
        );
    }
    // What the kernel does with caps it cannot derive: nothing arrives.
    let unmapped = h.slots.take();
    if h.retype(ObjectType::ARM_PageTableObject, unmapped, 1)
        .is_ok()
    {
        let r = h.iommu.register_memory(&[CPtr(unmapped)]);
        println!("hostile: an unmapped page table (the kernel derives no copy of it): {r:?}");
        h.forget(&r);
    }
    let r = h.iommu.register_memory(&[untyped]);
    println!(
        "hostile: my untyped again, now with children (the kernel derives no copy of it): {r:?}"
    );
    h.forget(&r);
}

/// An endpoint the accomplice receives on, registered as memory: to learn
/// its "address" the server must not invoke it (that is an IPC to the
/// accomplice, who may answer anything and is handed the invocation's caps).
fn endpoint_as_frame(h: &mut Hostile, accomplice: &procrt::ThreadInfo) {
    let ep = h.slots.take();
    let quit = h.slots.take();
    let made = h.retype(ObjectType::EndpointObject, ep, 1).and_then(|()| {
        cnode().mint(
            quit,
            DEPTH,
            cnode(),
            ep,
            DEPTH,
            CapRights::new(true, false, true),
            CapData::badge(QUIT_BADGE),
        )
    });
    if let Err(e) = made {
        h.checks.check(
            "endpoint-as-frame",
            false,
            format_args!("could not make an endpoint: {e:?}"),
        );
        return;
    }
    ENDPOINTS.store(ep << 32 | quit, Ordering::Relaxed);
    if let Err(e) = procrt::spawn(accomplice, accomplice_main, ep as usize) {
        h.checks.check(
            "endpoint-as-frame",
            false,
            format_args!("could not start the accomplice: {e:?}"),
        );
        return;
    }
    // It runs above this thread: it is receiving by now.
    while PHASE.load(Ordering::Relaxed) == 0 {
        syscalls::yield_now();
    }
    let r = h.iommu.register_memory(&[CPtr(ep)]);
    let messages = MESSAGES.load(Ordering::Relaxed);
    let caps = CAPS.load(Ordering::Relaxed);
    let labels: [&str; 4] = core::array::from_fn(|i| label_name(LABELS[i].load(Ordering::Relaxed)));
    let kinds: [&str; RECV_SLOTS] =
        core::array::from_fn(|i| kind_name(CAP_KINDS[i].load(Ordering::Relaxed)));
    h.checks.check(
        "endpoint-as-frame",
        is_err(&r, ErrorCode::BadCapability) && messages == 0,
        format_args!(
            "registered an endpoint my accomplice receives on: {r:?}; the server sent it {messages} messages (first labels {:?}) and {caps} caps (kinds {:?})",
            &labels[..(messages as usize).min(4)],
            &kinds[..(caps as usize).min(RECV_SLOTS)]
        ),
    );
    if let Ok(m) = r {
        // The damage: the device reads the kernel's image.
        let mapped = h.iommu.map(
            h.domain,
            IOVA_FAKE,
            m.handle,
            KERNEL_TEXT_OFFSET,
            PAGE as u64,
            Perms::READ,
        );
        let result = Mem::pool_page(h.info, PAGE_RESULT);
        result.fill_with(0);
        let read = mapped.is_ok()
            && dma(&h.device, Direction::ToDevice, IOVA_FAKE, TRANSFER)
            && h.land(IOVA_RESULT);
        println!(
            "hostile: the server took my endpoint for {:#x} bytes at {FAKE_PADDR:#x} (the kernel's image); its page at {:#x} (the kernel's .text) mapped at {IOVA_FAKE:#x}: {mapped:?}; the device read {}: {:#018x} {:#018x} {:#018x} {:#018x}",
            m.len,
            FAKE_PADDR + KERNEL_TEXT_OFFSET,
            if read { "it" } else { "nothing" },
            result.word(0),
            result.word(1),
            result.word(2),
            result.word(3)
        );
        let _ = h.iommu.unmap(h.domain, IOVA_FAKE, PAGE as u64);
        h.forget(&r);
    }
}

/// The accomplice's endpoint and its quit copy (ep << 32 | quit).
static ENDPOINTS: AtomicU64 = AtomicU64::new(0);

/// A badged notification cap with the write right: registering it must
/// not signal it.
fn notification_as_frame(h: &mut Hostile) {
    let ntfn = h.slots.take();
    let badged = h.slots.take();
    let made = h
        .retype(ObjectType::NotificationObject, ntfn, 1)
        .and_then(|()| {
            cnode().mint(
                badged,
                DEPTH,
                cnode(),
                ntfn,
                DEPTH,
                CapRights::WRITE,
                CapData::badge(1),
            )
        });
    if let Err(e) = made {
        h.checks.check(
            "notification-as-frame",
            false,
            format_args!("could not make a notification: {e:?}"),
        );
        return;
    }
    let r = h.iommu.register_memory(&[CPtr(badged)]);
    let signalled = syscalls::poll(Notification(CPtr(ntfn))).0;
    h.checks.check(
        "notification-as-frame",
        is_err(&r, ErrorCode::BadCapability) && signalled == 0,
        format_args!(
            "registered a notification cap with the write right: {r:?}; the notification was signalled: {}",
            signalled != 0
        ),
    );
    h.forget(&r);
}

/// A frame the hostile retyped from its own untyped (so it can revoke it
/// and reuse the memory): `NotPermitted`, and DMA never reaches it.
/// Returns the frame's physical address, and keeps whatever registration
/// the server made, for [`untyped_revoked`].
fn own_untyped_frame(h: &mut Hostile) -> Option<u64> {
    let f = h.slots.take();
    let made = h
        .retype(ObjectType::ARM_SmallPageObject, f, 1)
        .and_then(|()| {
            Page(CPtr(f)).map(
                CPtr(slot::VSPACE),
                VADDR_OWN_FRAME,
                CapRights::READ_WRITE,
                VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER,
            )
        });
    let paddr = Page(CPtr(f)).get_address();
    let (Ok(()), Ok(paddr)) = (made, paddr) else {
        h.checks.check(
            "own-untyped-frame",
            false,
            format_args!("could not retype and map a frame: {made:?}, {paddr:?}"),
        );
        return None;
    };
    let frame = Mem::at(VADDR_OWN_FRAME);
    frame.fill_with(0xa5);
    let r = h.iommu.register_memory(&[CPtr(f)]);
    h.checks.check(
        "own-untyped-frame",
        is_err(&r, ErrorCode::NotPermitted),
        format_args!("registered a frame retyped from my untyped (physical {paddr:#x}, outside my pool): {r:?}"),
    );
    // Map it anyway if the server took it, then DMA to where it would be.
    let mapped = r.map(|m| {
        h.iommu.map(
            h.domain,
            IOVA_OWN_FRAME,
            m.handle,
            0,
            PAGE as u64,
            Perms::RW,
        )
    });
    let moved = h.stage(0x42) && h.probe(IOVA_OWN_FRAME);
    let untouched = frame.all(0xa5);
    h.checks.check(
        "own-untyped-frame-unreachable",
        moved && untouched,
        format_args!(
            "map at {IOVA_OWN_FRAME:#x}: {mapped:?}; {PROBE} bytes DMA to it: {}",
            if untouched {
                "my frame is unchanged"
            } else {
                "the device wrote my retyped frame"
            }
        ),
    );
    Some(paddr)
}

/// A read-only copy of pool page 2: its own pool, so accepted; what the
/// server lets the device do with it is printed (the rule for rights is
/// still open).
fn read_only(h: &mut Hostile) {
    let ro = h.slots.take();
    if let Err(e) = cnode().copy(
        ro,
        DEPTH,
        cnode(),
        pool_frame(h.info, PAGE_READ_ONLY).0,
        DEPTH,
        CapRights::READ,
    ) {
        println!("hostile: read-only: could not copy pool page 2 read-only: {e:?}");
        return;
    }
    let page = Mem::pool_page(h.info, PAGE_READ_ONLY);
    page.fill_with(0x5a);
    let r = h.iommu.register_memory(&[CPtr(ro)]);
    let mut writable = None;
    let mut readable = None;
    let mut device_wrote = false;
    if let Ok(m) = &r {
        let rw = h.iommu.map(
            h.domain,
            IOVA_READ_ONLY,
            m.handle,
            0,
            PAGE as u64,
            Perms::RW,
        );
        if rw.is_ok() {
            device_wrote = h.stage(0x63) && h.land(IOVA_READ_ONLY) && !page.all(0x5a);
            let _ = h.iommu.unmap(h.domain, IOVA_READ_ONLY, PAGE as u64);
        }
        let r_only = h.iommu.map(
            h.domain,
            IOVA_READ_ONLY,
            m.handle,
            0,
            PAGE as u64,
            Perms::READ,
        );
        if r_only.is_ok() {
            let _ = h.iommu.unmap(h.domain, IOVA_READ_ONLY, PAGE as u64);
        }
        writable = Some(rw);
        readable = Some(r_only);
    }
    println!(
        "hostile: read-only: registered a read-only copy of pool page 2: {r:?}; map device-writable: {writable:?} (the device wrote the page: {device_wrote}); map device-read-only: {readable:?}"
    );
    h.forget(&r);
    let _ = cnode().delete(ro, DEPTH);
}

/// Pool page 0 registered and mapped, then the hostile revokes and deletes
/// its own cap of it: the server's mapping stays its own memory (a copy
/// the root task made has no children to revoke), and nothing else moves.
fn revoke_after_map(h: &mut Hostile) {
    let cap = pool_frame(h.info, PAGE_REVOKED);
    let r = h.iommu.register_memory(&[cap]);
    let mapped = r.map(|m| {
        h.iommu
            .map(h.domain, IOVA_REVOKED, m.handle, 0, PAGE as u64, Perms::RW)
    });
    let revoked = cnode().revoke(cap.0, DEPTH);
    let deleted = cnode().delete(cap.0, DEPTH);
    let page = Mem::pool_page(h.info, PAGE_REVOKED);
    page.fill_with(0);
    let before: [u64; 3] =
        core::array::from_fn(|i| Mem::pool_page(h.info, PAGES_BYSTANDING[i]).fingerprint());
    let moved = h.stage(0x77) && h.land(IOVA_REVOKED);
    let landed = page.holds(0x77, TRANSFER, 0);
    let after: [u64; 3] =
        core::array::from_fn(|i| Mem::pool_page(h.info, PAGES_BYSTANDING[i]).fingerprint());
    h.checks.check(
        "revoke-after-map",
        matches!(mapped, Ok(Ok(()))) && moved && landed && before == after,
        format_args!(
            "pool page 0 registered: {r:?}, mapped at {IOVA_REVOKED:#x}: {mapped:?}; my cap revoked: {revoked:?}, deleted: {deleted:?}; DMA to {IOVA_REVOKED:#x} landed in pool page 0: {landed}; pages {PAGES_BYSTANDING:?} unchanged: {}",
            before == after
        ),
    );
}

/// The hostile revokes its whole untyped (every object it retyped dies,
/// the server's copies included) and retypes the memory again: DMA to
/// where its own frame was mapped must not reach the new objects, and
/// what it registered from its pool still works.
fn untyped_revoked(h: &mut Hostile, own: Option<u64>) {
    // The accomplice leaves the endpoint the revoke is about to delete
    // (a thread blocked on a deleted endpoint restarts its receive on an
    // empty slot: a capability fault).
    let quit = ENDPOINTS.load(Ordering::Relaxed) & 0xffff_ffff;
    if quit != 0 && PHASE.load(Ordering::Relaxed) == 1 {
        syscalls::send_with_mrs(CPtr(quit), MessageInfo::new(QUIT_LABEL, 0, 0, 0), [0; 4]);
        while PHASE.load(Ordering::Relaxed) == 1 {
            syscalls::yield_now();
        }
    }
    let revoked = cnode().revoke(h.untyped.0, DEPTH);
    let frames = 1u64 << h.untyped_bits.saturating_sub(12);
    let first = h.slots.take_n(frames);
    let retyped = first
        .ok_or(sel4_abi::Error::NotEnoughMemory)
        .and_then(|f| h.retype(ObjectType::ARM_SmallPageObject, f, frames));
    // The new frame over the memory of the one registered before.
    let reused = match (own, first, &retyped) {
        (Some(paddr), Some(f), Ok(())) => (f..f + frames)
            .find(|&s| Page(CPtr(s)).get_address() == Ok(paddr))
            .filter(|&s| {
                Page(CPtr(s))
                    .map(
                        CPtr(slot::VSPACE),
                        VADDR_REUSED,
                        CapRights::READ_WRITE,
                        VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER,
                    )
                    .is_ok()
            }),
        _ => None,
    };
    let new_frame = Mem::at(VADDR_REUSED);
    if reused.is_some() {
        new_frame.fill_with(0);
    }
    let moved = h.stage(0x88) && h.probe(IOVA_OWN_FRAME);
    let untouched = reused.is_some() && new_frame.all(0);
    h.checks.check(
        "revoked-untyped-unreachable",
        revoked.is_ok() && moved && untouched,
        format_args!(
            "revoked my untyped: {revoked:?}; retyped it into {frames} frames: {retyped:?}; the one over my old frame's memory (physical {:#x}) mapped: {}; DMA to {IOVA_OWN_FRAME:#x}: {}",
            own.unwrap_or(0),
            reused.is_some(),
            if untouched {
                "the new frame is unchanged"
            } else {
                "the device wrote the reused memory (or no frame to check)"
            }
        ),
    );
    let page = Mem::pool_page(h.info, PAGE_REVOKED);
    page.fill_with(0);
    let landed = h.stage(0x89) && h.land(IOVA_REVOKED) && page.holds(0x89, TRANSFER, 0);
    h.checks.check(
        "registered-survives-untyped-revoke",
        landed,
        format_args!("after the revoke, DMA to {IOVA_REVOKED:#x} still lands in pool page 0"),
    );
}

/// `RegisterMemory` by hand, with any extra caps (the client library
/// sends one at most).
fn register_raw(endpoint: CPtr, caps: &[CPtr]) -> Result<Memory, Error> {
    let mut bytes = [0u8; 16];
    let n = encode(&Request::RegisterMemory { extend: None }, &mut bytes)
        .map_err(|_| Error::Transport(TransportError::TooLong))?;
    let mut registers = [0u64; 4];
    let words =
        pack_words(&bytes[..n], &mut registers).ok_or(Error::Transport(TransportError::TooLong))?;
    let buffer = ipc_buffer().ok_or(Error::Transport(TransportError::Ipc(0)))?;
    for (i, c) in caps.iter().enumerate() {
        buffer.set_cap(i, *c);
    }
    let info = MessageInfo::new(0, 0, caps.len() as u64, words as u64);
    let answer = syscalls::call_with_mrs(endpoint, info, &mut registers);
    if answer.label() != 0 {
        return Err(Error::Transport(TransportError::Ipc(answer.label())));
    }
    let mut reply = [0u8; 32];
    let len = unpack_words(&registers[..answer.length().min(4)], &mut reply)
        .ok_or(Error::UnexpectedReply)?;
    match decode_reply(&reply[..len]) {
        Ok(Reply::Memory { memory, pages }) => Ok(Memory {
            handle: memory,
            len: pages * PAGE as u64,
        }),
        Ok(Reply::Err(code)) => Err(Error::Iommu(code)),
        _ => Err(Error::UnexpectedReply),
    }
}

/// Its own badged cap to the server endpoint as an extra cap: the kernel
/// unwraps it (the server gets the badge, not the cap) and puts the next
/// cap into the receive slot. Refused, and the slot keeps working.
fn wedge(h: &mut Hostile) {
    let Some(me) = sel4_iommu::server_endpoint(h.info).map(|c| CPtr(c.cptr)) else {
        return;
    };
    let r = register_raw(me, &[me]);
    h.checks.check(
        "unwrapped-cap-refused",
        is_err(&r, ErrorCode::BadCapability),
        format_args!("RegisterMemory carrying only my cap to the server's endpoint (unwrapped by the kernel): {r:?}"),
    );
    h.forget(&r);
    // Two frames: the kernel moves the first into the receive slot and
    // drops the second (one receive slot); the server sees one cap.
    let two = [
        pool_frame(h.info, PAGE_WEDGE),
        pool_frame(h.info, PAGE_READ_ONLY),
    ];
    let r = register_raw(me, &two);
    println!(
        "hostile: two frame caps in one RegisterMemory (pool pages 1 and 2): {r:?} (the kernel transfers one cap per receive slot)"
    );
    h.forget(&r);
    let r = register_raw(me, &[me, pool_frame(h.info, PAGE_WEDGE)]);
    h.checks.check(
        "wedge-refused",
        is_err(&r, ErrorCode::BadCapability),
        format_args!(
            "RegisterMemory carrying [my cap to the server's endpoint, pool page 1]: {r:?}"
        ),
    );
    h.forget(&r);
    // Two registrations: a slot the server still thinks free may be a
    // lower one it freed earlier, so the wedged slot can bite the second.
    let page = Mem::pool_page(h.info, PAGE_AFTER_WEDGE);
    page.fill_with(0);
    let r = h
        .iommu
        .register_memory(&[pool_frame(h.info, PAGE_AFTER_WEDGE)]);
    let second = h
        .iommu
        .register_memory(&[pool_frame(h.info, PAGE_AFTER_WEDGE + 1)]);
    let mapped = r.map(|m| {
        h.iommu.map(
            h.domain,
            IOVA_AFTER_WEDGE,
            m.handle,
            0,
            PAGE as u64,
            Perms::RW,
        )
    });
    let landed = matches!(mapped, Ok(Ok(())))
        && h.stage(0x95)
        && h.land(IOVA_AFTER_WEDGE)
        && page.holds(0x95, TRANSFER, 0);
    h.checks.check(
        "registers-after-wedge",
        landed && second.is_ok(),
        format_args!(
            "registered pool page 5 afterwards: {r:?}, mapped at {IOVA_AFTER_WEDGE:#x}: {mapped:?}, DMA landed: {landed}; then pool page 6: {second:?}"
        ),
    );
    h.forget(&second);
}

/// The last attack. The accomplice becomes the thief: it receives on
/// slot 1, the fault endpoint (the root task's endpoint, badged as this
/// process's faults). A fault endpoint with the read right hands it the
/// messages meant for the root task: after one control message of its own
/// (which moves the root task behind the thief in the endpoint's queue)
/// the victim's `done` is the next. The main thread never reports done.
fn thief(info: &'static StartInfo, accomplice: &procrt::ThreadInfo) -> ! {
    // The accomplice waits for its wake-up off any endpoint of ours
    // (started now if the endpoint attack never started it).
    match PHASE.load(Ordering::Relaxed) {
        0 => {
            if let Err(e) = procrt::spawn(accomplice, accomplice_main, 0) {
                println!("hostile: cannot start the thief: {e:?}");
            }
        }
        1 => {
            let quit = ENDPOINTS.load(Ordering::Relaxed) & 0xffff_ffff;
            syscalls::send_with_mrs(CPtr(quit), MessageInfo::new(QUIT_LABEL, 0, 0, 0), [0; 4]);
        }
        _ => {}
    }
    signal(info, "thief", Some(THIEF_STARTING));
    syscalls::signal(Notification(CPtr(accomplice.wake)));
    // A fixed root task stops this process as the thief faults; what
    // follows runs only if the thief is receiving.
    while PHASE.load(Ordering::Relaxed) < 3 {
        syscalls::yield_now();
    }
    let ping = || {
        syscalls::send_with_mrs(
            CPtr(slot::CONTROL_EP),
            MessageInfo::new(PING_LABEL, 0, 0, 0),
            [0; 4],
        )
    };
    let before = STOLEN.load(Ordering::Relaxed);
    ping();
    if STOLEN.load(Ordering::Relaxed) != before {
        // The thief was first in the queue and took it: now the root is.
        ping();
    }
    println!("hostile: the thief is first in the root task's queue; telling the victim");
    signal(info, "thief", Some(THIEF_ARMED));
    let wake = info.threads().first().map_or(0, |t| t.wake);
    loop {
        syscalls::wait(Notification(CPtr(wake)));
    }
}

/// The accomplice's thread: receives on the endpoint the hostile
/// registers, answering each message like a frame would (label 0, the
/// kernel's physical base as the address), and keeps any cap it is
/// handed; then waits, and becomes the thief.
extern "C" fn accomplice_main(endpoint: usize) -> ! {
    let info = procrt::info();
    if endpoint != 0 {
        listen(CPtr(endpoint as u64));
    }
    PHASE.store(2, Ordering::Relaxed);
    let wake = info.thread("accomplice").map_or(0, |t| t.wake);
    syscalls::wait(Notification(CPtr(wake)));
    PHASE.store(3, Ordering::Relaxed);
    println!(
        "hostile: thief: receiving on my fault endpoint (slot {})",
        slot::FAULT_EP
    );
    loop {
        let mut mrs = [0u64; 4];
        let (tag, badge) = syscalls::recv_with_mrs(CPtr(slot::FAULT_EP), &mut mrs);
        STOLEN.fetch_add(1, Ordering::Relaxed);
        println!(
            "hostile: thief stole a message meant for the root task: label {:#x}{}, badge {:#x}, MR0 {:#x}",
            tag.label(),
            if tag.label() == control::DONE {
                " (done)"
            } else {
                ""
            },
            badge.0,
            mrs[0]
        );
    }
}

/// The accomplice on `endpoint` until the main thread's quit message.
fn listen(endpoint: CPtr) {
    let recv_base = RECV_BASE.load(Ordering::Relaxed);
    let mut received = 0usize;
    if let Some(buffer) = ipc_buffer() {
        buffer.set_receive_path(CPtr(slot::CNODE), recv_base, DEPTH as u64);
    }
    PHASE.store(1, Ordering::Relaxed);
    loop {
        let mut mrs = [0u64; 4];
        let (tag, badge) = syscalls::recv_with_mrs(endpoint, &mut mrs);
        if badge.0 == QUIT_BADGE && tag.label() == QUIT_LABEL {
            break;
        }
        let n = MESSAGES.fetch_add(1, Ordering::Relaxed) as usize;
        if let Some(l) = LABELS.get(n) {
            l.store(tag.label(), Ordering::Relaxed);
        }
        if tag.extra_caps() > 0 && tag.caps_unwrapped() == 0 && received < RECV_SLOTS {
            let kind = cap_kind(CPtr(recv_base + received as u64));
            CAP_KINDS[received].store(kind, Ordering::Relaxed);
            CAPS.fetch_add(1, Ordering::Relaxed);
            received += 1;
            if let Some(buffer) = ipc_buffer() {
                if received < RECV_SLOTS {
                    buffer.set_receive_path(
                        CPtr(slot::CNODE),
                        recv_base + received as u64,
                        DEPTH as u64,
                    );
                } else {
                    buffer.set_receive_path(CPtr(0), 0, 0);
                }
            }
        }
        syscalls::reply_with_mrs(MessageInfo::new(0, 0, 0, 1), [FAKE_PADDR, 0, 0, 0]);
    }
}
