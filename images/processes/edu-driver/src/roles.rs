//! The three roles of the `dma-demo` system.

use crate::checks::Checks;
use crate::edu::Direction;
use crate::pci::{bring_up, Device};
use iommu_client::{
    DomainId, Error, ErrorCode, FaultKind, FaultRecord, Iommu, MemoryHandle, Perms, Region, Ssid,
    StreamId,
};
use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CPtr, Notification, Page};
use sel4_iommu::connect;
use sel4_iommu::platform::CounterDelay;
use sel4_iommu::transport::Sel4Transport;

type Client = Iommu<Sel4Transport>;

const PAGE: usize = 4096;
/// Bytes per DMA: half a page, clear of the end of the edu's buffer (see
/// `EduError::OutsideBuffer`).
const TRANSFER: usize = PAGE / 2;
/// Bytes of a DMA that is meant to fault: QEMU records one event per 4
/// bytes, and a short burst is all a check needs.
const FAULTING_TRANSFER: usize = 64;

// IOVAs driver A uses; all below the edu's 28-bit DMA mask.
const IOVA_SOURCE: u64 = 0x10_0000;
const IOVA_TARGET: u64 = 0x18_0000;
const IOVA_SCATTER: u64 = 0x20_0000;
const IOVA_UNMAPPED_LATER: u64 = 0x30_0000;
const IOVA_READ_ONLY: u64 = 0x40_0000;
const IOVA_NEVER_MAPPED: u64 = 0x0f00_0000;
/// A 2 MiB frame's IOVA (2 MiB-aligned, so one level-2 block maps it), and
/// where in it the device writes: past its first 4 KiB, which is all the
/// server would map of a frame it took for a small one.
const IOVA_LARGE: u64 = 0x60_0000;
const LARGE_WRITE_OFFSET: usize = 0x1f_e800;
const LARGE: usize = 2 << 20;

/// Pages of driver A's DMA pool, by job.
const PAGE_SOURCE: usize = 0;
const PAGE_TARGET: usize = 1;
const PAGE_SCATTER: [usize; 3] = [5, 3, 7];
const PAGE_UNMAPPED_LATER: usize = 4;
const PAGE_READ_ONLY: usize = 6;
const PAGES_USED: usize = 8;

/// How long a driver waits for a fault notification: the edu starts DMA
/// 100 ms (virtual) after the command, and the record then takes an IRQ and
/// an IPC to arrive.
const FAULT_WAIT_TICKS_US: u64 = 2_000_000;
/// CNTFRQ of QEMU's cortex-a53 (DESIGN.md section 3).
const COUNTER_HZ: u64 = 62_500_000;

/// The DMA pool's pages as the CPU sees them.
struct Pages {
    vaddr: usize,
    count: usize,
}

impl Pages {
    fn of(info: &StartInfo) -> Pages {
        Pages {
            vaddr: info.dma.vaddr as usize,
            count: info.dma.frames as usize,
        }
    }

    fn page(&self, index: usize) -> &'static mut [u8; PAGE] {
        assert!(index < self.count, "page {index} outside the DMA pool");
        // SAFETY: the pool is mapped read-write at vaddr for `count` pages and
        // used only by this single-threaded process; the device writes it
        // only during `Edu::dma`, which the callers do not overlap with a
        // live reference (each call site takes the page afresh).
        unsafe { &mut *((self.vaddr + index * PAGE) as *mut [u8; PAGE]) }
    }

    /// A cheap fingerprint of every page in use, to show DMA left them alone.
    fn fingerprint(&self) -> u64 {
        (0..PAGES_USED.min(self.count)).fold(0xcbf2_9ce4_8422_2325, |mut h, i| {
            for chunk in self.page(i).chunks(8) {
                let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                h = (h ^ word).wrapping_mul(0x100_0000_01b3);
            }
            h
        })
    }
}

fn frame_caps(info: &StartInfo) -> [CPtr; PAGES_USED] {
    core::array::from_fn(|i| CPtr(info.dma.first_frame_cap + i as u64))
}

/// Spins until the edu finishes; false if it did not within a second.
fn dma(device: &Device, direction: Direction, iova: u64, len: usize) -> bool {
    let start = CounterDelay::now();
    device
        .edu
        .dma(direction, iova, 0, len, || {
            CounterDelay::now().wrapping_sub(start) < COUNTER_HZ
        })
        .is_ok()
}

/// What arrived after a DMA that should fault.
#[derive(Debug)]
struct Faults {
    records: usize,
    matched: bool,
    first: Option<FaultRecord>,
}

/// Waits for the server's fault notification, then drains this client's
/// records and says whether one of them is `wanted`.
fn await_fault(
    info: &StartInfo,
    client: &mut Client,
    wanted: impl Fn(&FaultRecord) -> bool,
) -> Faults {
    let mut seen = Faults {
        records: 0,
        matched: false,
        first: None,
    };
    let Some(badge) = sel4_iommu::server_endpoint(info).map(|cap| cap.badge) else {
        return seen;
    };
    let mut name = [0u8; 32];
    let Some(cap) = info.cap(sel4_iommu::fault_notification_name(badge, &mut name)) else {
        return seen;
    };
    let start = CounterDelay::now();
    let limit = FAULT_WAIT_TICKS_US * (COUNTER_HZ / 1_000_000);
    while syscalls::poll(Notification(CPtr(cap.cptr))).0 == 0 {
        if CounterDelay::now().wrapping_sub(start) > limit {
            return seen;
        }
        syscalls::yield_now();
    }
    while let Ok(batch) = client.faults() {
        for record in batch.records.iter() {
            seen.records += 1;
            seen.first.get_or_insert(*record);
            seen.matched |= wanted(record);
        }
        if !batch.more {
            break;
        }
    }
    seen
}

/// A device write at `iova`'s page from `stream`, of `kind`.
fn write_fault(stream: StreamId, iova: u64, kind: FaultKind) -> impl Fn(&FaultRecord) -> bool {
    move |r| r.stream == stream && r.iova >> 12 == iova >> 12 && r.kind == kind && r.write
}

fn fill(page: &mut [u8; PAGE], seed: u8) {
    for (i, byte) in page.iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(7).wrapping_add(seed);
    }
}

/// RAM -> edu -> RAM through two mappings; true if exactly the transferred
/// bytes of the (zeroed) target page now equal the source page's.
fn round_trip(device: &Device, pages: &Pages) -> bool {
    round_trip_via(device, pages, IOVA_SOURCE, IOVA_TARGET)
}

/// [`round_trip`] through the given IOVAs of the source and target pages.
fn round_trip_via(device: &Device, pages: &Pages, source: u64, target_iova: u64) -> bool {
    let target = pages.page(PAGE_TARGET);
    dma(device, Direction::ToDevice, source, TRANSFER)
        && dma(device, Direction::ToMemory, target_iova, TRANSFER)
        && target[..TRANSFER] == pages.page(PAGE_SOURCE)[..TRANSFER]
        && target[TRANSFER..].iter().all(|&b| b == 0)
}

pub fn driver_a(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("driver-a");
    let Some(device) = bring_up(info, &mut checks) else {
        return false;
    };
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let pages = Pages::of(info);
    let Ok(memory) = iommu.register_memory(&frame_caps(info)) else {
        println!("driver-a: registering {PAGES_USED} DMA frames failed");
        return false;
    };
    let Ok(domain) = iommu.alloc_domain() else {
        println!("driver-a: no domain");
        return false;
    };
    let attached = iommu.attach(device.stream, Ssid(0), domain);
    checks.check("attach", attached.is_ok(), format_args!("{attached:?}"));

    // Mapped DMA, both directions.
    fill(pages.page(PAGE_SOURCE), 1);
    pages.page(PAGE_TARGET).fill(0);
    let maps = (
        iommu.map(
            domain,
            IOVA_SOURCE,
            memory.handle,
            (PAGE_SOURCE * PAGE) as u64,
            PAGE as u64,
            Perms::READ,
        ),
        iommu.map(
            domain,
            IOVA_TARGET,
            memory.handle,
            (PAGE_TARGET * PAGE) as u64,
            PAGE as u64,
            Perms::RW,
        ),
    );
    println!("driver-a: mapped IOVA {IOVA_SOURCE:#x} (read-only) and {IOVA_TARGET:#x} (read-write): {maps:?}");
    let landed = round_trip(&device, &pages);
    checks.check(
        "dma-round-trip",
        landed,
        format_args!(
            "{TRANSFER} bytes RAM -> edu via {IOVA_SOURCE:#x}, edu -> RAM via {IOVA_TARGET:#x}"
        ),
    );

    // A scatter list: three frames out of order behind one IOVA range; one
    // DMA that straddles the first two.
    let scatter: [Region; 3] = core::array::from_fn(|i| Region {
        iova: IOVA_SCATTER + (i * PAGE) as u64,
        memory: memory.handle,
        offset: (PAGE_SCATTER[i] * PAGE) as u64,
        len: PAGE as u64,
        perms: Perms::RW,
    });
    for &p in &PAGE_SCATTER {
        pages.page(p).fill(0);
    }
    let batch = iommu.map_batch(domain, &scatter);
    // The edu still holds the round trip's bytes; write them so that half
    // lands at the end of the first frame and half at the start of the second.
    let quarter = PAGE / 4;
    let iova = IOVA_SCATTER + (PAGE - quarter) as u64;
    let moved = batch.is_ok() && dma(&device, Direction::ToMemory, iova, TRANSFER);
    let source = pages.page(PAGE_SOURCE);
    let first = pages.page(PAGE_SCATTER[0]);
    let second = pages.page(PAGE_SCATTER[1]);
    let third = pages.page(PAGE_SCATTER[2]);
    checks.check(
        "scatter-map",
        moved
            && first[..PAGE - quarter].iter().all(|&b| b == 0)
            && first[PAGE - quarter..] == source[..quarter]
            && second[..quarter] == source[quarter..TRANSFER]
            && second[quarter..].iter().all(|&b| b == 0)
            && third.iter().all(|&b| b == 0),
        format_args!(
            "map_batch {batch:?}; {TRANSFER} bytes to {iova:#x} split over frames {} and {}",
            PAGE_SCATTER[0], PAGE_SCATTER[1]
        ),
    );

    // DMA to an IOVA that was never mapped.
    let before = pages.fingerprint();
    let moved = dma(
        &device,
        Direction::ToMemory,
        IOVA_NEVER_MAPPED,
        FAULTING_TRANSFER,
    );
    let faults = await_fault(
        info,
        &mut iommu,
        write_fault(device.stream, IOVA_NEVER_MAPPED, FaultKind::Translation),
    );
    checks.check(
        "fault-never-mapped",
        moved && faults.matched && pages.fingerprint() == before,
        format_args!("{faults:?}"),
    );

    // Map, DMA, unmap, DMA again: the second must fault, which it does only
    // if the unmap's TLBI and CMD_SYNC completed before the reply.
    pages.page(PAGE_UNMAPPED_LATER).fill(0);
    let mapped = iommu.map(
        domain,
        IOVA_UNMAPPED_LATER,
        memory.handle,
        (PAGE_UNMAPPED_LATER * PAGE) as u64,
        PAGE as u64,
        Perms::RW,
    );
    let moved = dma(&device, Direction::ToMemory, IOVA_UNMAPPED_LATER, TRANSFER);
    let first_landed =
        pages.page(PAGE_UNMAPPED_LATER)[..TRANSFER] == pages.page(PAGE_SOURCE)[..TRANSFER];
    pages.page(PAGE_UNMAPPED_LATER).fill(0);
    let unmapped = iommu.unmap(domain, IOVA_UNMAPPED_LATER, PAGE as u64);
    let before = pages.fingerprint();
    let moved_again = dma(
        &device,
        Direction::ToMemory,
        IOVA_UNMAPPED_LATER,
        FAULTING_TRANSFER,
    );
    let faults = await_fault(
        info,
        &mut iommu,
        write_fault(device.stream, IOVA_UNMAPPED_LATER, FaultKind::Translation),
    );
    checks.check(
        "fault-after-unmap",
        mapped.is_ok()
            && moved
            && first_landed
            && unmapped.is_ok()
            && moved_again
            && faults.matched
            && pages.fingerprint() == before,
        format_args!("first DMA landed: {first_landed}; unmap {unmapped:?}; then {faults:?}"),
    );

    // A device write to a read-only mapping.
    pages.page(PAGE_READ_ONLY).fill(0);
    let mapped = iommu.map(
        domain,
        IOVA_READ_ONLY,
        memory.handle,
        (PAGE_READ_ONLY * PAGE) as u64,
        PAGE as u64,
        Perms::READ,
    );
    let before = pages.fingerprint();
    let moved = dma(
        &device,
        Direction::ToMemory,
        IOVA_READ_ONLY,
        FAULTING_TRANSFER,
    );
    let faults = await_fault(
        info,
        &mut iommu,
        write_fault(device.stream, IOVA_READ_ONLY, FaultKind::Permission),
    );
    checks.check(
        "fault-read-only",
        mapped.is_ok() && moved && faults.matched && pages.fingerprint() == before,
        format_args!("{faults:?}"),
    );

    large_frame(info, &mut iommu, &device, &pages, domain, &mut checks);

    // Let driver B try to reach this driver's stream, domains and memory,
    // then show nothing changed: the round trip still works.
    signal(info, "a-ready");
    wait(info, "b-done");
    pages.page(PAGE_TARGET).fill(0);
    checks.check(
        "dma-after-intrusions",
        round_trip(&device, &pages),
        format_args!(
            "round trip through {IOVA_SOURCE:#x}/{IOVA_TARGET:#x} after driver B's attempts"
        ),
    );

    // Detach: the stream goes back to abort, so the device reaches nothing.
    let detached = iommu.detach(device.stream, Ssid(0));
    pages.page(PAGE_TARGET).fill(0);
    let before = pages.fingerprint();
    let moved = dma(&device, Direction::ToMemory, IOVA_TARGET, TRANSFER);
    checks.check(
        "blocked-after-detach",
        detached.is_ok() && moved && pages.fingerprint() == before,
        format_args!("detach {detached:?}; DMA to {IOVA_TARGET:#x} left memory untouched"),
    );
    report_stats(&mut iommu, "driver-a");
    checks.passed()
}

/// The 2 MiB frame of driver A's DMA pool registers as 2 MiB and DMA
/// reaches all of it; a 4 KiB frame at a 2 MiB-aligned address (the pool's
/// first small page, right above the large one) registers as 4 KiB and no
/// more. The
/// server tells the two apart by the frame-size probe
/// (`sel4_iommu::platform::FrameProbe`); the QEMU trace shows the SMMU
/// walking a 2 MiB block for the write (`dma-demo/trace/large-frame-block`).
fn large_frame(
    info: &StartInfo,
    iommu: &mut Client,
    device: &Device,
    pages: &Pages,
    domain: DomainId,
    checks: &mut Checks,
) {
    let (large, small, vaddr_large) = match large_and_small_frame(info) {
        Ok(caps) => caps,
        Err(why) => {
            checks.check("large-frame", false, format_args!("{why}"));
            checks.check("small-frame-at-2mib", false, format_args!("{why}"));
            return;
        }
    };
    let registered = iommu.register_memory(&[large]);
    let mapped =
        registered.map(|m| iommu.map(domain, IOVA_LARGE, m.handle, 0, LARGE as u64, Perms::RW));
    // SAFETY: the root task mapped the pool's 2 MiB frame read-write at
    // `vaddr_large` for this process; the device writes it only during
    // `dma`, before the read.
    let frame = unsafe { &*(vaddr_large as *const [u8; LARGE]) };
    let iova = IOVA_LARGE + LARGE_WRITE_OFFSET as u64;
    let moved = matches!(mapped, Ok(Ok(())))
        && dma(device, Direction::ToDevice, IOVA_SOURCE, TRANSFER)
        && dma(device, Direction::ToMemory, iova, TRANSFER);
    let write = LARGE_WRITE_OFFSET..LARGE_WRITE_OFFSET + TRANSFER;
    let landed = moved
        && frame[write.clone()] == pages.page(PAGE_SOURCE)[..TRANSFER]
        && frame[..write.start].iter().all(|&b| b == 0)
        && frame[write.end..].iter().all(|&b| b == 0);
    let unmapped = iommu.unmap(domain, IOVA_LARGE, LARGE as u64);
    checks.check(
        "large-frame",
        registered.map(|m| m.len) == Ok(LARGE as u64) && landed && unmapped.is_ok(),
        format_args!(
            "2 MiB frame registered as {:?} bytes; mapped at {IOVA_LARGE:#x}: {mapped:?}; \
             {TRANSFER} bytes to {iova:#x} landed at offset {LARGE_WRITE_OFFSET:#x} \
             and nowhere else: {landed}; unmap {unmapped:?}",
            registered.map(|m| m.len)
        ),
    );

    let registered = iommu.register_memory(&[small]);
    let beyond =
        registered.map(|m| iommu.map(domain, IOVA_LARGE, m.handle, 0, 2 * PAGE as u64, Perms::RW));
    checks.check(
        "small-frame-at-2mib",
        registered.map(|m| m.len) == Ok(PAGE as u64)
            && beyond == Ok(Err(Error::Iommu(ErrorCode::OutOfRange))),
        format_args!(
            "4 KiB frame at a 2 MiB-aligned address registered as {:?} bytes; \
             mapping 8 KiB of it: {beyond:?}",
            registered.map(|m| m.len)
        ),
    );
}

/// The 2 MiB frame of driver A's DMA pool (mapped for the CPU by the root
/// task) and the pool's first 4 KiB frame, which sits right above it and
/// so is 2 MiB-aligned. Both come from the pool: memory from the driver's
/// own untyped is never DMA memory (the server refuses it, `hostile`).
fn large_and_small_frame(info: &StartInfo) -> Result<(CPtr, CPtr, u64), &'static str> {
    let large = info.dma_large;
    if large.frames == 0 {
        return Err("no 2 MiB frame in the DMA pool (dma.large_pages)");
    }
    match Page(CPtr(info.dma.first_frame_cap)).get_address() {
        Ok(paddr) if paddr.is_multiple_of(LARGE as u64) => {}
        _ => return Err("the pool's first 4 KiB frame is not 2 MiB-aligned"),
    }
    Ok((
        CPtr(large.first_frame_cap),
        CPtr(info.dma.first_frame_cap),
        large.vaddr,
    ))
}

pub fn driver_b(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("driver-b");
    let Some(device) = bring_up(info, &mut checks) else {
        return false;
    };
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let pages = Pages::of(info);
    let (Ok(memory), Ok(domain)) = (
        iommu.register_memory(&frame_caps(info)[..2]),
        iommu.alloc_domain(),
    ) else {
        println!("driver-b: registering memory or allocating a domain failed");
        return false;
    };
    // Its own device works through its own domain.
    fill(pages.page(PAGE_SOURCE), 9);
    pages.page(PAGE_TARGET).fill(0);
    let own = (
        iommu.attach(device.stream, Ssid(0), domain),
        iommu.map(
            domain,
            IOVA_SOURCE,
            memory.handle,
            0,
            PAGE as u64,
            Perms::READ,
        ),
        iommu.map(
            domain,
            IOVA_TARGET,
            memory.handle,
            PAGE as u64,
            PAGE as u64,
            Perms::RW,
        ),
    );
    checks.check(
        "own-dma",
        own.0.is_ok() && own.1.is_ok() && own.2.is_ok() && round_trip(&device, &pages),
        format_args!("second edu, StreamID {:#x}: {own:?}", device.stream.0),
    );

    wait(info, "a-ready");
    let foreign = StreamId(0x8);
    let refused = |r: Result<(), Error>, code: ErrorCode| r == Err(Error::Iommu(code));
    let attach = iommu.attach(foreign, Ssid(0), domain);
    checks.check(
        "attach-foreign-stream",
        refused(attach, ErrorCode::NotPermitted),
        format_args!("attach StreamID {:#x}: {attach:?}", foreign.0),
    );
    let detach = iommu.detach(foreign, Ssid(0));
    checks.check(
        "detach-foreign-stream",
        refused(detach, ErrorCode::NotPermitted),
        format_args!("detach StreamID {:#x}: {detach:?}", foreign.0),
    );
    // Domain and memory handles are per client: every number that is not
    // one of B's own names nothing, whoever else holds that number.
    let mut other_domains = true;
    let mut other_memory = true;
    for n in 0..8u32 {
        if DomainId(n) != domain {
            let map = iommu.map(
                DomainId(n),
                0x50_0000,
                memory.handle,
                0,
                PAGE as u64,
                Perms::RW,
            );
            let unmap = iommu.unmap(DomainId(n), IOVA_SOURCE, PAGE as u64);
            other_domains &=
                refused(map, ErrorCode::NoSuchDomain) && refused(unmap, ErrorCode::NoSuchDomain);
        }
        if MemoryHandle(n) != memory.handle {
            let map = iommu.map(
                domain,
                0x50_0000,
                MemoryHandle(n),
                0,
                PAGE as u64,
                Perms::RW,
            );
            other_memory &= refused(map, ErrorCode::NoSuchMemory);
        }
    }
    checks.check(
        "foreign-domains",
        other_domains,
        format_args!("map/unmap into domain numbers 0..8 other than its own: NoSuchDomain"),
    );
    checks.check(
        "foreign-memory",
        other_memory,
        format_args!("map of memory handles 0..8 other than its own: NoSuchMemory"),
    );
    signal(info, "b-done");
    shared_virtual_addressing(&mut iommu, &device, &pages, memory.handle, &mut checks);
    report_stats(&mut iommu, "driver-b");
    checks.passed()
}

/// SVA on QEMU's SMMU, which has no substreams: PASID 0 binds the driver's
/// own address space (the device uses the driver's virtual addresses as
/// IOVAs), any other PASID is `Unsupported`, and unbinding cuts the device off.
fn shared_virtual_addressing(
    iommu: &mut Client,
    device: &Device,
    pages: &Pages,
    memory: MemoryHandle,
    checks: &mut Checks,
) {
    let detached = iommu.detach(device.stream, Ssid(0));
    let pasid = iommu.bind_sva(device.stream, Ssid(1));
    checks.check(
        "sva-pasid-unsupported",
        detached.is_ok() && pasid == Err(Error::Iommu(ErrorCode::Unsupported)),
        format_args!("detach {detached:?}; bind PASID 1: {pasid:?}"),
    );
    let source = pages.page(PAGE_SOURCE).as_ptr() as u64;
    let target = pages.page(PAGE_TARGET).as_ptr() as u64;
    let bound = iommu.bind_sva(device.stream, Ssid(0));
    let mapped = bound.and_then(|sva| {
        iommu.map(
            sva,
            source,
            memory,
            (PAGE_SOURCE * PAGE) as u64,
            PAGE as u64,
            Perms::READ,
        )?;
        iommu.map(
            sva,
            target,
            memory,
            (PAGE_TARGET * PAGE) as u64,
            PAGE as u64,
            Perms::RW,
        )
    });
    fill(pages.page(PAGE_SOURCE), 77);
    pages.page(PAGE_TARGET).fill(0);
    checks.check(
        "sva-bind-dma",
        mapped.is_ok() && round_trip_via(device, pages, source, target),
        format_args!("PASID 0 bound: {bound:?}; DMA through the driver's own addresses {source:#x} -> {target:#x}: {mapped:?}"),
    );
    let unbound = iommu.unbind_sva(device.stream, Ssid(0));
    pages.page(PAGE_TARGET).fill(0);
    let before = pages.fingerprint();
    let moved = dma(device, Direction::ToMemory, target, TRANSFER);
    checks.check(
        "sva-unbind",
        unbound.is_ok() && moved && pages.fingerprint() == before,
        format_args!("unbind {unbound:?}; DMA to {target:#x} afterwards left memory untouched"),
    );
}

pub fn bystander(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("bystander");
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let attach = iommu.attach(StreamId(0x8), Ssid(0), DomainId(0));
    checks.check(
        "attach-refused",
        matches!(attach, Err(Error::Iommu(ErrorCode::NotPermitted))),
        format_args!("attach StreamID 0x8: {attach:?}"),
    );
    let domain = iommu.alloc_domain();
    checks.check(
        "no-domains",
        matches!(domain, Err(Error::Iommu(ErrorCode::QuotaExceeded))),
        format_args!("alloc_domain: {domain:?}"),
    );
    checks.passed()
}

fn report_stats(iommu: &mut Client, role: &str) {
    if let Ok(stats) = iommu.stats() {
        println!("{role}: server's account of me: {stats:?}");
    }
}

fn signal(info: &StartInfo, name: &str) {
    if let Some(cap) = info.cap(name) {
        syscalls::signal(Notification(CPtr(cap.cptr)));
    }
}

fn wait(info: &StartInfo, name: &str) {
    if let Some(cap) = info.cap(name) {
        syscalls::wait(Notification(CPtr(cap.cptr)));
    }
}
