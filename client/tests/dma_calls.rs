//! What the DMA layer sends, checked with a recording transport that
//! answers like a server would (or as scripted): one call per map and
//! unmap, the right permissions per direction, scatter lists in one batch,
//! local refusals that send nothing, and the allocator put back exactly as
//! it was after any error the server undid.
use iommu_client::*;
use iommu_protocol::{decode_request, encode, MapEntry, MsgBuf, Reply, Request};

#[derive(Default)]
struct Recorder {
    sent: Vec<Request>,
    /// Replies to give, in order (default: a plausible success).
    script: Vec<Reply>,
    /// Fail this many calls from now on at the transport, without
    /// answering (whether the server saw them is unknown).
    broken: usize,
}

impl Transport for Recorder {
    type Cap = u32;
    fn call(
        &mut self,
        request: &[u8],
        _caps: &[u32],
        reply: &mut MsgBuf,
    ) -> Result<usize, TransportError> {
        let req = decode_request(request).expect("the client sends valid requests");
        self.sent.push(req.clone());
        if self.broken > 0 {
            self.broken -= 1;
            return Err(TransportError::Ipc(3));
        }
        let answer = if self.script.is_empty() {
            match &req {
                Request::Hello { .. } => Reply::Hello(ServerInfo {
                    version: ABI_VERSION,
                    max_batch: 4,
                    page_sizes: 1 << 12 | 1 << 21,
                    ias_bits: 40,
                    ssid_bits: 0,
                    max_faults: 8,
                    sva: false,
                }),
                Request::AllocDomain => Reply::Domain(DomainId(7)),
                _ => Reply::Ok,
            }
        } else {
            self.script.remove(0)
        };
        Ok(encode(&answer, reply).unwrap())
    }
}

const BASE: u64 = 0x100_0000;
const SIZE: u64 = 0x1000_0000;
const MEM: MemoryHandle = MemoryHandle(3);

fn setup() -> (Iommu<Recorder>, DmaDomain<16>) {
    let mut iommu = Iommu::connect(Recorder::default()).unwrap();
    let dma = DmaDomain::create(&mut iommu, BASE, SIZE).unwrap();
    assert_eq!(dma.domain(), DomainId(7));
    iommu.transport_mut().sent.clear();
    (iommu, dma)
}

fn take(iommu: &mut Iommu<Recorder>) -> Vec<Request> {
    std::mem::take(&mut iommu.transport_mut().sent)
}

fn map_req(iova: u64, offset: u64, len: u64, perms: Perms) -> Request {
    Request::Map {
        domain: DomainId(7),
        iova_pfn: iova >> 12,
        memory: MEM,
        offset_pfn: (offset >> 12) as u32,
        pages: (len >> 12) as u32,
        perms,
    }
}

fn unmap_req(iova: u64, len: u64) -> Request {
    Request::Unmap {
        domain: DomainId(7),
        iova_pfn: iova >> 12,
        pages: (len >> 12) as u32,
    }
}

fn page(p: u64) -> Segment {
    Segment {
        memory: MEM,
        offset: p << 12,
        len: 0x1000,
    }
}

#[test]
fn create_checks_the_window_before_allocating_a_domain() {
    let mut iommu = Iommu::connect(Recorder::default()).unwrap();
    take(&mut iommu);
    // 40-bit input addresses: a window past 1 TiB is refused locally.
    let r = DmaDomain::<4>::create(&mut iommu, (1 << 40) - 0x1000, 0x2000);
    assert_eq!(r.unwrap_err(), Error::Iommu(ErrorCode::OutOfRange));
    let r = DmaDomain::<4>::create(&mut iommu, 0x1800, 0x1000);
    assert_eq!(r.unwrap_err(), Error::Iommu(ErrorCode::Misaligned));
    assert!(take(&mut iommu).is_empty());
    DmaDomain::<4>::create(&mut iommu, (1 << 40) - 0x2000, 0x2000).unwrap();
    assert_eq!(take(&mut iommu), vec![Request::AllocDomain]);
}

#[test]
fn map_single_is_one_map_with_the_direction_s_permissions() {
    let (mut iommu, mut dma) = setup();
    let mut maps = Vec::new();
    for (dir, perms) in [
        (Direction::ToDevice, Perms::READ),
        (Direction::FromDevice, Perms::WRITE),
        (Direction::Bidirectional, Perms::RW),
    ] {
        let m = dma
            .map_single(&mut iommu, MEM, 0x5200, 0x1000, dir)
            .unwrap();
        // Two pages hold [0x5200, 0x6200); the address keeps the offset.
        assert_eq!(m.addr() % 0x1000, 0x200);
        assert_eq!(m.size(), 0x1000);
        assert_eq!(m.mapped().end - m.mapped().start, 0x2000);
        assert_eq!(m.direction(), dir);
        assert!(!m.is_persistent());
        assert_eq!(
            take(&mut iommu),
            vec![map_req(m.mapped().start, 0x5000, 0x2000, perms)]
        );
        maps.push(m);
    }
    // Top-down from the end of the window, back to back.
    let top = BASE + SIZE;
    let starts: Vec<u64> = maps.iter().map(|m| m.mapped().start).collect();
    assert_eq!(starts, vec![top - 0x2000, top - 0x4000, top - 0x6000]);
    for m in maps {
        let (iova, len) = (m.mapped().start, 0x2000);
        dma.unmap(&mut iommu, m).unwrap();
        assert_eq!(take(&mut iommu), vec![unmap_req(iova, len)]);
    }
    assert_eq!(dma.allocator().live(), 0);
    assert_eq!(dma.allocator().free_bytes(), SIZE);
}

#[test]
fn persistent_mappings_come_from_the_top() {
    let (mut iommu, mut dma) = setup();
    let ring = dma
        .map_persistent(&mut iommu, MEM, 0, 0x1000, Direction::Bidirectional)
        .unwrap();
    assert!(ring.is_persistent());
    assert_eq!(ring.addr(), BASE + SIZE - 0x1000);
    // A per-request buffer right below it: the same leaf table.
    let buf = dma
        .map_single(&mut iommu, MEM, 0x1000, 0x1000, Direction::ToDevice)
        .unwrap();
    assert_eq!(buf.addr(), BASE + SIZE - 0x2000);
    dma.unmap(&mut iommu, buf).unwrap();
    dma.unmap(&mut iommu, ring).unwrap();
}

#[test]
fn large_buffers_are_2mib_congruent_to_their_memory() {
    let (mut iommu, mut dma) = setup();
    let small = dma
        .map_single(&mut iommu, MEM, 0, 0x1000, Direction::ToDevice)
        .unwrap();
    // 2 MiB from offset 2 MiB + 4 KiB: I/O address = 4 KiB mod 2 MiB.
    let big = dma
        .map_single(&mut iommu, MEM, 0x20_1000, 0x20_0000, Direction::ToDevice)
        .unwrap();
    assert_eq!(big.addr() % 0x20_0000, 0x1000);
    // And from a 2 MiB-aligned offset: a 2 MiB-aligned address.
    let aligned = dma
        .map_single(&mut iommu, MEM, 0x40_0000, 0x40_0000, Direction::ToDevice)
        .unwrap();
    assert_eq!(aligned.addr() % 0x20_0000, 0);
    for m in [small, big, aligned] {
        dma.unmap(&mut iommu, m).unwrap();
    }
    assert_eq!(dma.allocator().free_ranges().count(), 1);
}

#[test]
fn map_sg_is_one_batch_at_one_contiguous_range() {
    let (mut iommu, mut dma) = setup();
    // Pages 9, 2, 3 (continuing 2: merged), 30; the first piece starts
    // mid-page, the last ends mid-page.
    let segs = [
        Segment {
            memory: MEM,
            offset: 0x9800,
            len: 0x800,
        },
        page(2),
        page(3),
        Segment {
            memory: MEM,
            offset: 0x1e000,
            len: 0x10,
        },
    ];
    let m = dma
        .map_sg(&mut iommu, &segs, Direction::FromDevice)
        .unwrap();
    let start = BASE + SIZE - 0x4000;
    assert_eq!(m.addr(), start + 0x800);
    assert_eq!(m.size(), 0x800 + 0x2000 + 0x10);
    assert_eq!(m.mapped(), start..start + 0x4000);
    let entry = |iova: u64, off: u64, pages: u32| MapEntry {
        iova_pfn: iova >> 12,
        memory: MEM,
        offset_pfn: (off >> 12) as u32,
        pages,
        perms: Perms::WRITE,
    };
    let sent = take(&mut iommu);
    assert_eq!(sent.len(), 1);
    match &sent[0] {
        Request::MapBatch { domain, entries } => {
            assert_eq!(*domain, DomainId(7));
            assert_eq!(
                entries.as_slice(),
                &[
                    entry(start, 0x9000, 1),
                    entry(start + 0x1000, 0x2000, 2),
                    entry(start + 0x3000, 0x1e000, 1),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // One unmap takes the whole range.
    dma.unmap(&mut iommu, m).unwrap();
    assert_eq!(take(&mut iommu), vec![unmap_req(start, 0x4000)]);

    // Pieces that merge into one region go as one (fastpath) Map.
    let m = dma
        .map_sg(
            &mut iommu,
            &[page(4), page(5), page(6)],
            Direction::ToDevice,
        )
        .unwrap();
    assert_eq!(
        take(&mut iommu),
        vec![map_req(BASE + SIZE - 0x3000, 0x4000, 0x3000, Perms::READ)]
    );
    dma.unmap(&mut iommu, m).unwrap();
}

#[test]
fn map_sg_refuses_gaps_locally() {
    let (mut iommu, mut dma) = setup();
    let before = dma.allocator().clone();
    let mis = Error::Iommu(ErrorCode::Misaligned);
    // A piece after the first that starts mid-page, one before the last
    // that ends mid-page, an empty piece, an empty list.
    let mid = Segment {
        memory: MEM,
        offset: 0x2200,
        len: 0xe00,
    };
    let short = Segment {
        memory: MEM,
        offset: 0x2000,
        len: 0x800,
    };
    let empty = Segment {
        memory: MEM,
        offset: 0x2000,
        len: 0,
    };
    let d = Direction::ToDevice;
    assert_eq!(dma.map_sg(&mut iommu, &[page(1), mid], d).unwrap_err(), mis);
    assert_eq!(
        dma.map_sg(&mut iommu, &[short, page(1)], d).unwrap_err(),
        mis
    );
    assert_eq!(
        dma.map_sg(&mut iommu, &[page(1), empty], d).unwrap_err(),
        Error::Iommu(ErrorCode::Malformed)
    );
    assert_eq!(
        dma.map_sg(&mut iommu, &[], d).unwrap_err(),
        Error::Iommu(ErrorCode::Malformed)
    );
    assert_eq!(
        dma.map_single(&mut iommu, MEM, 0, 0, d).unwrap_err(),
        Error::Iommu(ErrorCode::Malformed)
    );
    assert!(take(&mut iommu).is_empty());
    assert_eq!(dma.allocator(), &before);
}

#[test]
fn long_scatter_lists_take_several_batches_and_roll_back() {
    let (mut iommu, mut dma) = setup();
    // max_batch is 4 here: 10 scattered pages are batches of 4, 4, 2.
    let segs: Vec<Segment> = (0..10).map(|i| page(i * 2)).collect();
    let m = dma
        .map_sg(&mut iommu, &segs, Direction::Bidirectional)
        .unwrap();
    let sent = take(&mut iommu);
    let sizes: Vec<usize> = sent
        .iter()
        .map(|r| match r {
            Request::MapBatch { entries, .. } => entries.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    dma.unmap(&mut iommu, m).unwrap();
    take(&mut iommu);

    // The second batch is refused: the first is unmapped again and the
    // addresses are free.
    let before = dma.allocator().clone();
    iommu.transport_mut().script = vec![Reply::Ok, Reply::Err(ErrorCode::QuotaExceeded)];
    let e = dma
        .map_sg(&mut iommu, &segs, Direction::Bidirectional)
        .unwrap_err();
    assert_eq!(e, Error::Iommu(ErrorCode::QuotaExceeded));
    let sent = take(&mut iommu);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2], unmap_req(BASE + SIZE - 0xa000, 0x4000));
    assert_eq!(dma.allocator(), &before);
    assert_eq!(dma.quarantined_bytes(), 0);

    // If that unmap fails too, the device may reach the first batch: the
    // whole range stays allocated.
    iommu.transport_mut().script = vec![
        Reply::Ok,
        Reply::Err(ErrorCode::QuotaExceeded),
        Reply::Err(ErrorCode::HardwareError),
    ];
    dma.map_sg(&mut iommu, &segs, Direction::Bidirectional)
        .unwrap_err();
    assert_eq!(dma.quarantined_bytes(), 0xa000);
    assert_eq!(dma.allocator().live(), 1);
    assert!(dma.allocator().is_allocated(BASE + SIZE - 0xa000, 0xa000));
}

#[test]
fn server_refusals_give_the_addresses_back() {
    let (mut iommu, mut dma) = setup();
    let keep = dma
        .map_single(&mut iommu, MEM, 0, 0x1000, Direction::ToDevice)
        .unwrap();
    let before = dma.allocator().clone();
    for code in [
        ErrorCode::QuotaExceeded,
        ErrorCode::NoSuchMemory,
        ErrorCode::OutOfRange,
        ErrorCode::NoMemory,
        ErrorCode::NotPermitted,
        ErrorCode::Overlap,
    ] {
        iommu.transport_mut().script = vec![Reply::Err(code)];
        assert_eq!(
            dma.map_single(&mut iommu, MEM, 0x1000, 0x3000, Direction::FromDevice),
            Err(Error::Iommu(code))
        );
        iommu.transport_mut().script = vec![Reply::Err(code)];
        assert_eq!(
            dma.map_sg(&mut iommu, &[page(1), page(5)], Direction::ToDevice),
            Err(Error::Iommu(code))
        );
        assert_eq!(dma.allocator(), &before, "{code:?}");
    }
    assert_eq!(dma.quarantined_bytes(), 0);
    dma.unmap(&mut iommu, keep).unwrap();
}

#[test]
fn unknown_outcomes_quarantine_the_addresses() {
    let (mut iommu, mut dma) = setup();
    iommu.transport_mut().script = vec![Reply::Err(ErrorCode::HardwareError)];
    assert_eq!(
        dma.map_single(&mut iommu, MEM, 0, 0x2000, Direction::ToDevice),
        Err(Error::Iommu(ErrorCode::HardwareError))
    );
    iommu.transport_mut().broken = 1;
    assert_eq!(
        dma.map_single(&mut iommu, MEM, 0, 0x1000, Direction::ToDevice),
        Err(Error::Transport(TransportError::Ipc(3)))
    );
    assert_eq!(dma.quarantined_bytes(), 0x3000);
    assert_eq!(dma.allocator().live(), 2);
    // Never handed out again.
    let next = dma
        .map_single(&mut iommu, MEM, 0, 0x1000, Direction::ToDevice)
        .unwrap();
    assert_eq!(next.addr(), BASE + SIZE - 0x4000);
    dma.unmap(&mut iommu, next).unwrap();
}

#[test]
fn a_failed_unmap_keeps_the_mapping_to_retry() {
    let (mut iommu, mut dma) = setup();
    let m = dma
        .map_single(&mut iommu, MEM, 0, 0x1000, Direction::FromDevice)
        .unwrap();
    let addr = m.addr();
    iommu.transport_mut().script = vec![Reply::Err(ErrorCode::HardwareError)];
    let e = dma.unmap(&mut iommu, m).unwrap_err();
    assert_eq!(e.error, Error::Iommu(ErrorCode::HardwareError));
    assert!(dma.allocator().is_allocated(addr, 0x1000));
    // Not handed out while the device may still reach it.
    let other = dma
        .map_single(&mut iommu, MEM, 0, 0x1000, Direction::FromDevice)
        .unwrap();
    assert_ne!(other.addr(), addr);
    take(&mut iommu);
    // The retry goes through.
    dma.unmap(&mut iommu, e.mapping).unwrap();
    assert_eq!(take(&mut iommu), vec![unmap_req(addr, 0x1000)]);
    assert!(!dma.allocator().is_allocated(addr, 0x1000));
    // `?` turns an UnmapError into an Error.
    let f = |iommu: &mut Iommu<Recorder>, dma: &mut DmaDomain<16>| -> Result<(), Error> {
        iommu.transport_mut().broken = 1;
        dma.unmap(iommu, other)?;
        Ok(())
    };
    assert_eq!(
        f(&mut iommu, &mut dma),
        Err(Error::Transport(TransportError::Ipc(3)))
    );
}

#[test]
fn mappings_of_another_domain_are_refused_locally() {
    let (mut iommu, mut dma) = setup();
    let mut other: DmaDomain<16> = DmaDomain::new(DomainId(9), BASE, SIZE).unwrap();
    let m = other
        .map_single(&mut iommu, MEM, 0, 0x1000, Direction::ToDevice)
        .unwrap();
    take(&mut iommu);
    let e = dma.unmap(&mut iommu, m).unwrap_err();
    assert_eq!(e.error, Error::Iommu(ErrorCode::NoSuchDomain));
    assert!(take(&mut iommu).is_empty());
    other.unmap(&mut iommu, e.mapping).unwrap();
}

#[test]
fn exhaustion_sends_nothing() {
    let mut iommu = Iommu::connect(Recorder::default()).unwrap();
    // Three pages; at most 3 live mappings.
    let mut dma: DmaDomain<4> = DmaDomain::new(DomainId(7), BASE, 0x3000).unwrap();
    let a = dma
        .map_single(&mut iommu, MEM, 0, 0x2000, Direction::ToDevice)
        .unwrap();
    take(&mut iommu);
    assert_eq!(
        dma.map_single(&mut iommu, MEM, 0, 0x2000, Direction::ToDevice),
        Err(Error::IovaExhausted)
    );
    assert_eq!(
        dma.map_sg(&mut iommu, &[page(0), page(1)], Direction::ToDevice),
        Err(Error::IovaExhausted)
    );
    assert!(take(&mut iommu).is_empty());
    let b = dma
        .map_single(&mut iommu, MEM, 0, 0x1000, Direction::ToDevice)
        .unwrap();
    dma.unmap(&mut iommu, a).unwrap();
    dma.unmap(&mut iommu, b).unwrap();
}
