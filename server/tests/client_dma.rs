//! The client library's DMA layer (`iommu_client::dma`) end to end: the
//! real request handler and server core over the software SMMUv3 model,
//! reached through the in-process transport. Every claim is judged from
//! what the model's SMMU translates, what lands in memory, and the fault
//! records the client reads back.

#[path = "client_support.rs"]
mod support;

use iommu_client::{
    Direction, DmaAddr, DmaDomain, Error, ErrorCode, FaultKind, Iommu, Memory, Segment, Ssid,
    StreamId,
};
use smmu_model::{Access, Fault, Machine};
use support::*;

/// The I/O address window the tests hand out: [16 MiB, 16 MiB + 1 GiB).
const BASE: u64 = 0x100_0000;
const SIZE: u64 = 0x4000_0000;

/// Client A connected, a DMA domain over the window attached to A's
/// stream, and `size` bytes of memory in one frame (at `paddr`).
struct Setup {
    m: Machine,
    s: Server,
    iommu: Client,
    dma: DmaDomain,
    memory: Memory,
    paddr: u64,
}

fn setup(size: u64) -> Setup {
    let (m, s) = server();
    let mut iommu = connect(&s, A);
    let dma: DmaDomain = DmaDomain::create(&mut iommu, BASE, SIZE).unwrap();
    iommu
        .attach(StreamId(SID_A), Ssid(0), dma.domain())
        .unwrap();
    let (paddr, cap) = frame(&m, &s, size);
    let memory = iommu.register_memory(&[cap]).unwrap();
    Setup {
        m,
        s,
        iommu,
        dma,
        memory,
        paddr,
    }
}

/// The fault records the server routed to A since the last call.
fn faults(s: &Server, iommu: &mut Client) -> Vec<iommu_client::FaultRecord> {
    s.borrow_mut().route_faults();
    iommu.faults().unwrap().records.into_iter().collect()
}

fn is_permission(r: Result<u64, Fault>) -> bool {
    matches!(r, Err(f) if f.code() == Some(0x13))
}

#[test]
fn map_single_gives_the_device_the_permissions_of_its_direction() {
    let Setup {
        m,
        s,
        mut iommu,
        mut dma,
        memory,
        paddr,
    } = setup(0x4000);
    // The CPU's data for the device, at byte 0x1100 of the memory.
    m.mem.write(paddr + 0x1100, b"to the disk").unwrap();
    let to = dma
        .map_single(&mut iommu, memory.handle, 0x1100, 11, Direction::ToDevice)
        .unwrap();
    let from = dma
        .map_single(
            &mut iommu,
            memory.handle,
            0x2000,
            0x800,
            Direction::FromDevice,
        )
        .unwrap();
    let both = dma
        .map_single(
            &mut iommu,
            memory.handle,
            0x3000,
            0x1000,
            Direction::Bidirectional,
        )
        .unwrap();
    assert_eq!(to.addr() % 0x1000, 0x100, "the address keeps the offset");
    for x in [&to, &from, &both] {
        assert!(dma.allocator().window().contains(&x.addr()));
    }

    // ToDevice: the device reads the CPU's bytes, and may not write.
    let mut got = [0u8; 11];
    m.smmu.dma_read(SID_A, None, to.addr(), &mut got).unwrap();
    assert_eq!(&got, b"to the disk");
    assert_eq!(
        m.smmu.translate(SID_A, None, to.addr(), Access::READ),
        Ok(paddr + 0x1100)
    );
    let w = m.smmu.dma_write(SID_A, None, to.addr(), b"overwritten");
    assert!(matches!(w, Err(e) if e.done == 0), "{w:?}");
    m.mem.read(paddr + 0x1100, &mut got).unwrap();
    assert_eq!(&got, b"to the disk", "memory untouched");
    assert!(is_permission(m.smmu.translate(
        SID_A,
        None,
        to.addr(),
        Access::WRITE
    )));
    let records = faults(&s, &mut iommu);
    assert!(
        records.iter().any(|r| r.kind == FaultKind::Permission
            && r.write
            && r.iova & !0xfff == to.addr() & !0xfff),
        "{records:?}"
    );

    // FromDevice: the device writes (stage 1 lets it read too).
    m.smmu
        .dma_write(SID_A, None, from.addr(), &[0x5a; 0x800])
        .unwrap();
    let mut back = [0u8; 0x800];
    m.mem.read(paddr + 0x2000, &mut back).unwrap();
    assert_eq!(back, [0x5a; 0x800]);
    assert_eq!(
        m.smmu.translate(SID_A, None, from.addr(), Access::WRITE),
        Ok(paddr + 0x2000)
    );

    // Bidirectional: both.
    for acc in [Access::READ, Access::WRITE] {
        assert_eq!(
            m.smmu.translate(SID_A, None, both.addr() + 0x10, acc),
            Ok(paddr + 0x3010)
        );
    }
    for x in [to, from, both] {
        dma.unmap(&mut iommu, x).unwrap();
    }
    assert_eq!(iommu.stats().unwrap().mappings, 0);
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
}

#[test]
fn unmap_makes_the_device_fault_and_the_address_is_reused() {
    let Setup {
        m,
        s,
        mut iommu,
        mut dma,
        memory,
        paddr,
    } = setup(0x2000);
    let buf = dma
        .map_single(&mut iommu, memory.handle, 0, 0x1000, Direction::FromDevice)
        .unwrap();
    let addr = buf.addr();
    // The device's DMA fills the TLB.
    m.smmu.dma_write(SID_A, None, addr, b"first").unwrap();
    dma.unmap(&mut iommu, buf).unwrap();
    // From the reply on, the device reaches nothing there: the TLB entry is
    // gone with the page-table entry (strict unmap).
    let w = m.smmu.dma_write(SID_A, None, addr, b"late!");
    assert!(matches!(w, Err(e) if e.done == 0), "{w:?}");
    let mut got = [0u8; 5];
    m.mem.read(paddr, &mut got).unwrap();
    assert_eq!(&got, b"first");
    let records = faults(&s, &mut iommu);
    assert!(
        records
            .iter()
            .any(|r| r.kind == FaultKind::Translation && r.iova == addr && r.write),
        "{records:?}"
    );
    // The next request gets the same address, now to the second page.
    let next = dma
        .map_single(
            &mut iommu,
            memory.handle,
            0x1000,
            0x1000,
            Direction::FromDevice,
        )
        .unwrap();
    assert_eq!(next.addr(), addr);
    m.smmu.dma_write(SID_A, None, addr, b"second").unwrap();
    m.mem.read(paddr, &mut got).unwrap();
    assert_eq!(&got, b"first", "the old page is not reached");
    let mut got = [0u8; 6];
    m.mem.read(paddr + 0x1000, &mut got).unwrap();
    assert_eq!(&got, b"second");
    dma.unmap(&mut iommu, next).unwrap();
}

#[test]
fn map_sg_of_scattered_frames_is_one_contiguous_range() {
    let (m, s) = server();
    let mut iommu = connect(&s, A);
    let mut dma: DmaDomain = DmaDomain::create(&mut iommu, BASE, SIZE).unwrap();
    iommu
        .attach(StreamId(SID_A), Ssid(0), dma.domain())
        .unwrap();
    // Six separate 4 KiB frames, in two registrations.
    let frames: Vec<(u64, _)> = (0..6).map(|_| frame(&m, &s, 0x1000)).collect();
    let caps: Vec<_> = frames.iter().map(|f| f.1).collect();
    let mem1 = iommu.register_memory(&caps[..3]).unwrap();
    let mem2 = iommu.register_memory(&caps[3..]).unwrap();
    // Device order: mem2 page 1, mem1 page 2, mem1 page 0, mem2 page 2 and
    // (continuing it) nothing more; the first piece starts mid-page.
    let seg = |mem: &Memory, offset: u64, len: u64| Segment {
        memory: mem.handle,
        offset,
        len,
    };
    let segs = [
        seg(&mem2, 0x1800, 0x800),
        seg(&mem1, 0x2000, 0x1000),
        seg(&mem1, 0x0000, 0x1000),
        seg(&mem2, 0x2000, 0x1000),
    ];
    let stats = iommu.stats().unwrap();
    let sg = dma
        .map_sg(&mut iommu, &segs, Direction::FromDevice)
        .unwrap();
    assert_eq!(sg.size(), 0x3800);
    assert_eq!(
        iommu.stats().unwrap().mappings,
        stats.mappings + 4,
        "one batch entry per piece"
    );
    // One DMA across the whole range lands piece by piece, in order.
    let data: Vec<u8> = (0..0x3800u32).map(|i| (i % 251) as u8).collect();
    m.smmu.dma_write(SID_A, None, sg.addr(), &data).unwrap();
    let landing = [
        (frames[4].0 + 0x800, 0x800),
        (frames[2].0, 0x1000),
        (frames[0].0, 0x1000),
        (frames[5].0, 0x1000),
    ];
    let mut at = 0usize;
    for (paddr, len) in landing {
        let mut got = vec![0u8; len];
        m.mem.read(paddr, &mut got).unwrap();
        assert_eq!(got[..], data[at..at + len], "piece at {paddr:#x}");
        at += len;
    }
    // Untouched: the frames and the half page not in the list.
    let mut got = [0u8; 0x800];
    m.mem.read(frames[4].0, &mut got).unwrap();
    assert_eq!(got, [0u8; 0x800]);
    for f in [frames[1].0, frames[3].0] {
        let mut got = [0u8; 0x1000];
        m.mem.read(f, &mut got).unwrap();
        assert_eq!(got, [0u8; 0x1000]);
    }
    // One unmap takes it all away.
    let range = sg.mapped();
    dma.unmap(&mut iommu, sg).unwrap();
    assert_eq!(iommu.stats().unwrap(), stats);
    for page in range.step_by(0x1000) {
        assert!(m.smmu.translate(SID_A, None, page, Access::READ).is_err());
    }
    assert_eq!(dma.allocator().live(), 0);
}

#[test]
fn persistent_rings_stay_while_requests_come_and_go() {
    let Setup {
        m,
        s: _s,
        mut iommu,
        mut dma,
        memory,
        paddr,
    } = setup(0x8000);
    let ring = dma
        .map_persistent(
            &mut iommu,
            memory.handle,
            0,
            0x1000,
            Direction::Bidirectional,
        )
        .unwrap();
    assert!(ring.addr() >= BASE + SIZE / 2, "rings live at the top");
    let mut seen = Vec::new();
    for i in 0..50u64 {
        let offset = 0x1000 + (i % 7) * 0x1000;
        let buf = dma
            .map_single(
                &mut iommu,
                memory.handle,
                offset,
                0x1000,
                Direction::ToDevice,
            )
            .unwrap();
        seen.push(buf.addr());
        // The device reads the request's buffer and writes the ring.
        let mut b = [0u8; 8];
        m.smmu.dma_read(SID_A, None, buf.addr(), &mut b).unwrap();
        m.smmu
            .dma_write(SID_A, None, ring.addr() + i * 8, &i.to_le_bytes())
            .unwrap();
        dma.unmap(&mut iommu, buf).unwrap();
    }
    seen.dedup();
    // Top-down: right below the ring, in its leaf table, reused.
    assert_eq!(
        seen,
        vec![BASE + SIZE - 0x2000],
        "requests reuse the page below the ring"
    );
    assert_eq!(m.mem.read_u64(paddr + 49 * 8), Some(49));
    dma.unmap(&mut iommu, ring).unwrap();
    assert!(m
        .smmu
        .translate(SID_A, None, BASE + SIZE - 0x1000, Access::READ)
        .is_err());
    assert_eq!(dma.allocator().free_bytes(), SIZE);
}

#[test]
fn a_2mib_buffer_is_mapped_with_a_block() {
    let Setup {
        m,
        s: _s,
        mut iommu,
        mut dma,
        memory,
        paddr,
    } = setup(0x20_0000);
    assert_eq!(paddr % 0x20_0000, 0);
    // Something small first, so the window's start is taken.
    let small = dma
        .map_single(&mut iommu, memory.handle, 0, 0x1000, Direction::ToDevice)
        .unwrap();
    let big = dma
        .map_single(
            &mut iommu,
            memory.handle,
            0,
            0x20_0000,
            Direction::FromDevice,
        )
        .unwrap();
    assert_eq!(big.addr() % 0x20_0000, 0);
    let t = m
        .smmu
        .translate_ex(SID_A, None, big.addr() + 0x12_3456, Access::WRITE)
        .unwrap();
    assert_eq!(t.paddr, paddr + 0x12_3456);
    assert_eq!(t.page_size, 0x20_0000, "one 2 MiB block");
    dma.unmap(&mut iommu, big).unwrap();
    dma.unmap(&mut iommu, small).unwrap();
}

#[test]
fn iova_exhaustion_is_reported_and_sends_nothing() {
    let (m, s) = server();
    let mut iommu = connect(&s, A);
    // Four pages of window, at most 3 live mappings.
    let mut dma: DmaDomain<4> = DmaDomain::create(&mut iommu, BASE, 0x4000).unwrap();
    iommu
        .attach(StreamId(SID_A), Ssid(0), dma.domain())
        .unwrap();
    let (_, cap) = frame(&m, &s, 0x8000);
    let memory = iommu.register_memory(&[cap]).unwrap();
    let d = Direction::ToDevice;
    let a = dma
        .map_single(&mut iommu, memory.handle, 0, 0x3000, d)
        .unwrap();
    let commands = m.smmu.counters().commands;
    let stats = iommu.stats().unwrap();
    assert_eq!(
        dma.map_single(&mut iommu, memory.handle, 0, 0x2000, d),
        Err(Error::IovaExhausted)
    );
    let b = dma
        .map_single(&mut iommu, memory.handle, 0x4000, 0x1000, d)
        .unwrap();
    dma.unmap(&mut iommu, a).unwrap();
    // By count: three small ones fit the space, a fourth the bookkeeping
    // does not.
    let c = dma
        .map_single(&mut iommu, memory.handle, 0, 0x1000, d)
        .unwrap();
    let e = dma
        .map_single(&mut iommu, memory.handle, 0, 0x1000, d)
        .unwrap();
    let stats2 = iommu.stats().unwrap();
    let commands2 = m.smmu.counters().commands;
    assert_eq!(
        dma.map_single(&mut iommu, memory.handle, 0, 0x1000, d),
        Err(Error::IovaExhausted)
    );
    assert_eq!(iommu.stats().unwrap(), stats2);
    assert_eq!(m.smmu.counters().commands, commands2, "nothing sent");
    for x in [b, c, e] {
        dma.unmap(&mut iommu, x).unwrap();
    }
    assert_eq!(iommu.stats().unwrap().mappings, stats.mappings - 1);
    assert!(commands2 > commands);
}

/// Fills A's mapping-record quota (32) with one-page mappings, leaving
/// `left` records free; returns them.
fn fill_records(
    dma: &mut DmaDomain,
    iommu: &mut Client,
    memory: &Memory,
    left: u32,
) -> Vec<DmaAddr> {
    let used = iommu.stats().unwrap().mappings;
    (used..QUOTAS.mappings - left)
        .map(|_| {
            dma.map_single(iommu, memory.handle, 0, 0x1000, Direction::ToDevice)
                .unwrap()
        })
        .collect()
}

#[test]
fn a_quota_refusal_leaves_the_allocator_as_it_was() {
    let Setup {
        m,
        s: _s,
        mut iommu,
        mut dma,
        memory,
        paddr: _,
    } = setup(0x8_0000);
    let held = fill_records(&mut dma, &mut iommu, &memory, 0);
    let before = dma.allocator().clone();
    let stats = iommu.stats().unwrap();
    let quota = Err(Error::Iommu(ErrorCode::QuotaExceeded));
    assert_eq!(
        dma.map_single(&mut iommu, memory.handle, 0, 0x1000, Direction::ToDevice),
        quota
    );
    assert_eq!(
        dma.map_persistent(&mut iommu, memory.handle, 0, 0x1000, Direction::ToDevice),
        quota
    );
    let two = [
        Segment {
            memory: memory.handle,
            offset: 0,
            len: 0x1000,
        },
        Segment {
            memory: memory.handle,
            offset: 0x3000,
            len: 0x1000,
        },
    ];
    assert_eq!(dma.map_sg(&mut iommu, &two, Direction::ToDevice), quota);
    // Mapped bytes: A may map 16 MiB in all; the memory is 512 KiB.
    assert_eq!(
        dma.map_single(&mut iommu, memory.handle, 0, 0x10_0000, Direction::ToDevice),
        Err(Error::Iommu(ErrorCode::OutOfRange)),
        "past the memory's end"
    );
    assert_eq!(dma.allocator(), &before);
    assert_eq!(dma.quarantined_bytes(), 0);
    assert_eq!(iommu.stats().unwrap(), stats);
    for x in held {
        dma.unmap(&mut iommu, x).unwrap();
    }
    assert_eq!(dma.allocator().free_ranges().count(), 1);
    assert!(m.smmu.violations().is_empty());
}

/// A scatter list longer than one batch (the server's 32) goes as two
/// `MapBatch`es; the second is refused (the record quota) and the first is
/// unmapped again: no translation, no record, no address is left.
#[test]
fn a_refused_second_batch_is_rolled_back() {
    let Setup {
        m,
        s: _s,
        mut iommu,
        mut dma,
        memory,
        paddr: _,
    } = setup(0x8_0000);
    assert_eq!(iommu.info().max_batch, 32);
    // 36 pieces that do not continue each other: 36 entries.
    let segs: Vec<Segment> = (0..36u64)
        .map(|i| Segment {
            memory: memory.handle,
            offset: i * 2 * 0x1000,
            len: 0x1000,
        })
        .collect();
    let stats = iommu.stats().unwrap();
    let before = dma.allocator().clone();
    assert_eq!(
        dma.map_sg(&mut iommu, &segs, Direction::ToDevice),
        Err(Error::Iommu(ErrorCode::QuotaExceeded))
    );
    assert_eq!(iommu.stats().unwrap(), stats);
    assert_eq!(dma.allocator(), &before);
    let top = BASE + SIZE;
    for i in 1..=36u64 {
        assert!(m
            .smmu
            .translate_uncached(SID_A, None, top - i * 0x1000, Access::READ)
            .is_err());
    }
    // 30 pieces fit one batch and the quota.
    let sg = dma
        .map_sg(&mut iommu, &segs[..30], Direction::ToDevice)
        .unwrap();
    assert_eq!(sg.mapped(), top - 30 * 0x1000..top);
    assert_eq!(iommu.stats().unwrap().mappings, 30);
    dma.unmap(&mut iommu, sg).unwrap();
}

/// An unmap the server refuses (here: the range was unmapped behind the
/// layer's back with the raw API) keeps the addresses allocated and gives
/// the mapping back.
#[test]
fn a_refused_unmap_keeps_the_addresses() {
    let Setup {
        m: _m,
        s: _s,
        mut iommu,
        mut dma,
        memory,
        paddr: _,
    } = setup(0x2000);
    let buf = dma
        .map_single(&mut iommu, memory.handle, 0, 0x2000, Direction::ToDevice)
        .unwrap();
    iommu.unmap(dma.domain(), buf.addr(), 0x1000).unwrap();
    let e = dma.unmap(&mut iommu, buf).unwrap_err();
    assert_eq!(e.error, Error::Iommu(ErrorCode::NotMapped));
    let top = BASE + SIZE;
    assert!(dma.allocator().is_allocated(top - 0x2000, 0x2000));
    let other = dma
        .map_single(&mut iommu, memory.handle, 0, 0x1000, Direction::ToDevice)
        .unwrap();
    assert_eq!(other.addr(), top - 0x3000, "not handed out again");
    dma.unmap(&mut iommu, other).unwrap();
    // Once the rest is unmapped the same way, the layer still holds it: a
    // driver that knows better can only leave it (nothing double-frees).
    iommu.unmap(dma.domain(), top - 0x1000, 0x1000).unwrap();
    let e = dma.unmap(&mut iommu, e.mapping).unwrap_err();
    assert_eq!(e.error, Error::Iommu(ErrorCode::NotMapped));
    assert_eq!(dma.allocator().live(), 1);
}

/// Two DMA domains of two clients on one connection each never interfere:
/// each client's allocator hands out the same addresses, and each device
/// reaches its own memory.
#[test]
fn two_clients_same_addresses_own_memory() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let mut b: Iommu<Transport> = connect(&s, B);
    let mut da: DmaDomain = DmaDomain::create(&mut a, BASE, SIZE).unwrap();
    let mut db: DmaDomain = DmaDomain::create(&mut b, BASE, SIZE).unwrap();
    a.attach(StreamId(SID_A), Ssid(0), da.domain()).unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db.domain()).unwrap();
    let (pa, ca) = frame(&m, &s, 0x1000);
    let (pb, cb) = frame(&m, &s, 0x1000);
    let ma = a.register_memory(&[ca]).unwrap();
    let mb = b.register_memory(&[cb]).unwrap();
    let xa = da
        .map_single(&mut a, ma.handle, 0, 0x1000, Direction::FromDevice)
        .unwrap();
    let xb = db
        .map_single(&mut b, mb.handle, 0, 0x1000, Direction::FromDevice)
        .unwrap();
    assert_eq!(xa.addr(), xb.addr());
    m.smmu.dma_write(SID_A, None, xa.addr(), b"A").unwrap();
    m.smmu.dma_write(SID_B, None, xb.addr(), b"B").unwrap();
    let mut got = [0u8; 1];
    m.mem.read(pa, &mut got).unwrap();
    assert_eq!(&got, b"A");
    m.mem.read(pb, &mut got).unwrap();
    assert_eq!(&got, b"B");
    // B's layer cannot take A's mapping away (another domain): refused
    // locally, A's device still reaches its buffer.
    let e = db.unmap(&mut b, xa).unwrap_err();
    assert_eq!(e.error, Error::Iommu(ErrorCode::NoSuchDomain));
    m.smmu
        .dma_write(SID_A, None, e.mapping.addr(), b"a")
        .unwrap();
    da.unmap(&mut a, e.mapping).unwrap();
    db.unmap(&mut b, xb).unwrap();
}
