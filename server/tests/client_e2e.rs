//! End to end: two clients, each with its own streams, through the client
//! library and the in-process transport, against the real server core and
//! the software SMMU model. DMA goes through the model's translation.

#[path = "client_support.rs"]
mod support;

use iommu_client::{Error, ErrorCode, FaultKind, Perms, Region, Ssid, StreamId};
use iommu_protocol::{Reply, Request};
use smmu_model::{Access, Machine};
use support::*;

/// What the hardware would do for every page of interest, plus the
/// commands issued so far: equal snapshots mean nothing changed.
fn snapshot(m: &Machine) -> (Vec<Option<u64>>, u64) {
    let mut t = Vec::new();
    for sid in [SID_A, SID_A2, SID_B] {
        for page in 0..0x40u64 {
            let iova = 0x10_0000 + page * 0x1000;
            t.push(
                m.smmu
                    .translate_uncached(sid, None, iova, Access::READ)
                    .ok()
                    .map(|x| x.paddr),
            );
        }
    }
    (t, m.smmu.counters().commands)
}

#[test]
fn two_clients_dma_lands_in_their_own_memory() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let mut b = connect(&s, B);
    assert_eq!(a.info().max_batch, 32);
    assert_eq!(a.info().ssid_bits, 0, "QEMU 7.2 has no substreams");

    // A: two separate frames, one contiguous IOVA range over both.
    let (pa1, ca1) = frame(&m, &s, 0x1000);
    let (pa2, ca2) = frame(&m, &s, 0x1000);
    let da = a.alloc_domain().unwrap();
    let mem_a = a.register_memory(&[ca1, ca2]).unwrap();
    assert_eq!(mem_a.len, 0x2000);
    a.map(da, 0x10_0000, mem_a.handle, 0, 0x2000, Perms::RW)
        .unwrap();
    a.attach(StreamId(SID_A), Ssid(0), da).unwrap();

    // B: one 8 KiB frame, mapped at the same IOVA in its own domain.
    let (pb, cb) = frame(&m, &s, 0x2000);
    let db = b.alloc_domain().unwrap();
    assert_ne!(da, db);
    let mem_b = b.register_memory(&[cb]).unwrap();
    b.map(db, 0x10_0000, mem_b.handle, 0, 0x2000, Perms::RW)
        .unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db).unwrap();

    // A DMA across A's page boundary lands in A's two frames.
    let data: Vec<u8> = (0..32u8).collect();
    m.smmu.dma_write(SID_A, None, 0x10_0ff0, &data).unwrap();
    let mut got = [0u8; 16];
    m.mem.read(pa1 + 0xff0, &mut got).unwrap();
    assert_eq!(got, data[..16]);
    m.mem.read(pa2, &mut got).unwrap();
    assert_eq!(got, data[16..]);
    // B's device at the same IOVA reaches B's frame only.
    m.smmu
        .dma_write(SID_B, None, 0x10_0ff0, &[0xbb; 32])
        .unwrap();
    m.mem.read(pb + 0xff0, &mut got).unwrap();
    assert_eq!(got, [0xbb; 16]);
    m.mem.read(pa1 + 0xff0, &mut got).unwrap();
    assert_eq!(got, data[..16], "B's DMA did not touch A's memory");
    let mut back = [0u8; 32];
    m.smmu.dma_read(SID_A, None, 0x10_0ff0, &mut back).unwrap();
    assert_eq!(back[..], data[..]);
    assert_eq!(
        m.smmu.translate(SID_A, None, 0x10_1000, Access::WRITE),
        Ok(pa2)
    );

    // Unmap: from the reply on, the device cannot reach the page (the TLB
    // entry filled by the DMA above is gone too).
    a.unmap(da, 0x10_1000, 0x1000).unwrap();
    assert!(m
        .smmu
        .translate(SID_A, None, 0x10_1000, Access::READ)
        .is_err());
    assert_eq!(
        m.smmu.translate(SID_A, None, 0x10_0000, Access::READ),
        Ok(pa1)
    );
    assert_eq!(
        a.unregister_memory(mem_a.handle),
        Err(Error::Iommu(ErrorCode::InUse))
    );
    a.unmap(da, 0x10_0000, 0x1000).unwrap();
    assert_eq!(
        a.unmap(da, 0x10_0000, 0x1000),
        Err(Error::Iommu(ErrorCode::NotMapped))
    );
    a.unregister_memory(mem_a.handle).unwrap();
    {
        let h = s.borrow();
        assert!(h.resolver().is_released(ca1) && h.resolver().is_released(ca2));
        assert!(!h.resolver().is_released(cb));
        assert_eq!(h.resolver().double_releases(), 0);
    }
    assert_eq!(a.free_domain(da), Err(Error::Iommu(ErrorCode::InUse)));
    a.detach(StreamId(SID_A), Ssid(0)).unwrap();
    assert!(m
        .smmu
        .translate(SID_A, None, 0x10_0000, Access::READ)
        .is_err());
    a.free_domain(da).unwrap();
    assert_eq!(
        m.smmu.translate(SID_B, None, 0x10_0000, Access::READ),
        Ok(pb)
    );
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
}

#[test]
fn cross_client_requests_are_refused_and_change_nothing() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let mut b = connect(&s, B);
    let (_, ca) = frame(&m, &s, 0x4000);
    let da = a.alloc_domain().unwrap();
    let mem_a = a.register_memory(&[ca]).unwrap();
    a.map(da, 0x10_0000, mem_a.handle, 0, 0x4000, Perms::RW)
        .unwrap();
    a.attach(StreamId(SID_A), Ssid(0), da).unwrap();
    let (_, cb) = frame(&m, &s, 0x1000);
    let db = b.alloc_domain().unwrap();
    let mem_b = b.register_memory(&[cb]).unwrap();

    let before = snapshot(&m);
    let stats_a = a.stats().unwrap();
    let np = Err(Error::Iommu(ErrorCode::NotPermitted));
    let nd = Err(Error::Iommu(ErrorCode::NoSuchDomain));
    let nm = Err(Error::Iommu(ErrorCode::NoSuchMemory));
    // A's stream: whatever B does with it is NotPermitted.
    assert_eq!(b.attach(StreamId(SID_A), Ssid(0), db), np);
    assert_eq!(b.detach(StreamId(SID_A), Ssid(0)), np);
    assert_eq!(b.bind_sva(StreamId(SID_A), Ssid(0)).map(|_| ()), np);
    assert_eq!(b.unbind_sva(StreamId(SID_A), Ssid(0)), np);
    // A stream nobody owns, too.
    assert_eq!(b.attach(StreamId(99), Ssid(0), db), np);
    // A's domain: B cannot name it.
    assert_eq!(b.map(da, 0x20_0000, mem_b.handle, 0, 0x1000, Perms::RW), nd);
    assert_eq!(b.unmap(da, 0x10_0000, 0x1000), nd);
    assert_eq!(b.free_domain(da), nd);
    assert_eq!(b.attach(StreamId(SID_B), Ssid(0), da), nd);
    let r = Region {
        iova: 0x20_0000,
        memory: mem_b.handle,
        offset: 0,
        len: 0x1000,
        perms: Perms::RW,
    };
    assert_eq!(b.map_batch(da, &[r]), nd);
    // A's memory: B cannot name it either, not even into its own domain.
    assert_eq!(b.map(db, 0x10_0000, mem_a.handle, 0, 0x1000, Perms::RW), nm);
    assert_eq!(b.unregister_memory(mem_a.handle), nm);
    // Extending A's registration (not in the client API: sent by hand).
    let (_, extra) = frame(&m, &s, 0x1000);
    let r = raw_call(
        &s,
        B,
        &Request::RegisterMemory {
            extend: Some(mem_a.handle),
        },
        &[extra],
    );
    assert_eq!(r, Reply::Err(ErrorCode::NoSuchMemory));
    assert!(
        s.borrow().resolver().is_released(extra),
        "the refused cap is released"
    );
    // A stranger (a badge not in the policy) cannot even say hello.
    assert!(matches!(
        iommu_client::Iommu::connect(transport(&s, STRANGER)),
        Err(Error::Iommu(ErrorCode::NotPermitted))
    ));
    assert_eq!(
        snapshot(&m),
        before,
        "no translation changed and no command was issued"
    );
    assert_eq!(a.stats().unwrap(), stats_a);
    // A's DMA still works.
    m.smmu
        .dma_write(SID_A, None, 0x10_0000, b"still mine")
        .unwrap();
}

#[test]
fn faults_reach_the_owner_only() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let mut b = connect(&s, B);
    let db = b.alloc_domain().unwrap();
    let (_, cb) = frame(&m, &s, 0x1000);
    let mem_b = b.register_memory(&[cb]).unwrap();
    b.map(db, 0x10_0000, mem_b.handle, 0, 0x1000, Perms::READ)
        .unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db).unwrap();
    // An unmapped IOVA, and a write to a read-only page.
    assert!(m.smmu.dma_write(SID_B, None, 0x30_0000, &[1; 64]).is_err());
    assert!(m.smmu.dma_write(SID_B, None, 0x10_0000, &[1; 8]).is_err());
    let notify = s.borrow_mut().route_faults();
    assert_eq!(notify.as_slice(), &[B], "only B is notified");
    let fb = b.faults().unwrap();
    assert!(!fb.more);
    assert!(fb.records.iter().any(|r| r.stream == StreamId(SID_B)
        && r.iova == 0x30_0000
        && r.kind == FaultKind::Translation
        && r.write));
    assert!(fb
        .records
        .iter()
        .any(|r| r.iova == 0x10_0000 && r.kind == FaultKind::Permission));
    assert!(a.faults().unwrap().records.is_empty());
    assert!(
        b.faults().unwrap().records.is_empty(),
        "records are taken once"
    );
}

#[test]
fn map_batch_is_all_or_nothing_on_the_real_core() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let d = a.alloc_domain().unwrap();
    a.attach(StreamId(SID_A), Ssid(0), d).unwrap();
    let (pa, ca) = frame(&m, &s, 0x8000);
    let mem = a.register_memory(&[ca]).unwrap();
    // Entries far apart, so each needs new page-table pages.
    let regions: Vec<Region> = (0..4u64)
        .map(|i| Region {
            iova: i << 30,
            memory: mem.handle,
            offset: i * 0x1000,
            len: 0x1000,
            perms: Perms::RW,
        })
        .collect();
    let stats = a.stats().unwrap();
    let tables = m.mem.stats();
    // A page-table allocation of a later entry fails (entry 0 needs up to
    // three new tables, each further one two).
    m.mem.fail_nth_alloc(4);
    assert_eq!(
        a.map_batch(d, &regions),
        Err(Error::Iommu(ErrorCode::NoMemory))
    );
    m.mem.clear_failures();
    let after = m.mem.stats();
    assert!(
        after.allocs >= tables.allocs + 3,
        "earlier entries were mapped before the failure"
    );
    assert_eq!(
        after.live_bytes, tables.live_bytes,
        "their page tables were freed again"
    );
    for r in &regions {
        assert!(
            m.smmu
                .translate_uncached(SID_A, None, r.iova, Access::READ)
                .is_err(),
            "{:#x} rolled back",
            r.iova
        );
    }
    assert_eq!(a.stats().unwrap(), stats);
    // Now all of it.
    a.map_batch(d, &regions).unwrap();
    for (i, r) in regions.iter().enumerate() {
        assert_eq!(
            m.smmu.translate(SID_A, None, r.iova + 8, Access::WRITE),
            Ok(pa + i as u64 * 0x1000 + 8)
        );
    }
    // A batch with one bad entry does nothing.
    let mut more: Vec<Region> = (0..3u64)
        .map(|i| Region {
            iova: 0x10_0000 + (i << 12),
            memory: mem.handle,
            offset: 0,
            len: 0x1000,
            perms: Perms::READ,
        })
        .collect();
    more[2].offset = 0x8000;
    assert_eq!(
        a.map_batch(d, &more),
        Err(Error::Iommu(ErrorCode::OutOfRange))
    );
    assert!(m
        .smmu
        .translate_uncached(SID_A, None, 0x10_0000, Access::READ)
        .is_err());
    let too_many = vec![more[0]; 33];
    assert_eq!(
        a.map_batch(d, &too_many),
        Err(Error::Iommu(ErrorCode::OutOfRange))
    );
}

/// The SMMU's ASIDs run out (here: a core limited to two, the first of
/// which it keeps). A domain gets its ASID at its first attach, and an idle
/// domain's ASID is recycled; with the one ASID carried by A's attached
/// stream, B's attach is told `NoAsid`, not `NoMemory`, and nothing
/// changed; once A detaches, its idle domain's ASID serves B.
#[test]
fn asid_exhaustion_is_reported_as_such() {
    let (m, s) = server_on(
        smmu_model::Features::qemu_7_2(),
        iommu_server::Config {
            max_asids: 2,
            ..iommu_server::Config::default()
        },
    );
    let mut a = connect(&s, A);
    let mut b = connect(&s, B);
    let da = a.alloc_domain().unwrap();
    a.attach(StreamId(SID_A), Ssid(0), da)
        .expect("the one usable ASID");
    let db = b.alloc_domain().expect("a domain without an ASID yet");
    assert_eq!(
        b.attach(StreamId(SID_B), Ssid(0), db),
        Err(Error::Iommu(ErrorCode::NoAsid))
    );
    assert!(m
        .smmu
        .translate_uncached(SID_B, None, 0x10_0000, Access::READ)
        .is_err());
    a.detach(StreamId(SID_A), Ssid(0)).unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db)
        .expect("A's idle domain's ASID serves B");
}

#[test]
fn quotas_and_client_side_checks() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let d = a.alloc_domain().unwrap();
    let (_, c) = frame(&m, &s, 0x2000);
    let mem = a.register_memory(&[c]).unwrap();
    assert_eq!(
        a.map(d, 0x10_0800, mem.handle, 0, 0x1000, Perms::RW),
        Err(Error::Iommu(ErrorCode::Misaligned))
    );
    assert_eq!(
        a.map(d, 0x10_0000, mem.handle, 0, 0x3000, Perms::RW),
        Err(Error::Iommu(ErrorCode::OutOfRange))
    );
    assert_eq!(
        a.map(d, 1 << 48, mem.handle, 0, 0x1000, Perms::RW),
        Err(Error::Iommu(ErrorCode::OutOfRange))
    );
    assert_eq!(
        a.map(d, 0x10_0000, mem.handle, 0, 0x1000, Perms(0)),
        Err(Error::Iommu(ErrorCode::Malformed))
    );
    a.alloc_domain().unwrap();
    a.alloc_domain().unwrap();
    assert_eq!(
        a.alloc_domain(),
        Err(Error::Iommu(ErrorCode::QuotaExceeded))
    );
    // SSIDs on an SMMU without substreams.
    assert_eq!(
        a.attach(StreamId(SID_A), Ssid(1), d),
        Err(Error::Iommu(ErrorCode::Unsupported))
    );
    let st = a.stats().unwrap();
    assert_eq!((st.domains, st.max_domains, st.memory_frames), (3, 3, 1));
    assert!(st.pt_pages >= 3);
}

#[test]
fn sva_with_substreams() {
    let (m, s) = server_with(4);
    let mut a = connect(&s, A);
    assert_eq!(a.info().ssid_bits, 4);
    let sva = a.bind_sva(StreamId(SID_A), Ssid(1)).unwrap();
    assert_eq!(
        a.bind_sva(StreamId(SID_A), Ssid(2)).unwrap(),
        sva,
        "one address space per client"
    );
    let (pa, c) = frame(&m, &s, 0x1000);
    let mem = a.register_memory(&[c]).unwrap();
    // The client's own virtual address.
    let va = 0x7f12_3456_7000;
    a.map(sva, va, mem.handle, 0, 0x1000, Perms::RW).unwrap();
    for ssid in [1, 2] {
        assert_eq!(
            m.smmu
                .translate(SID_A, Some(ssid), va + 0x10, Access::WRITE),
            Ok(pa + 0x10)
        );
    }
    assert_eq!(
        a.bind_sva(StreamId(SID_A), Ssid(4)),
        Err(Error::Iommu(ErrorCode::NotPermitted))
    );
    a.unbind_sva(StreamId(SID_A), Ssid(1)).unwrap();
    assert!(m.smmu.translate(SID_A, Some(1), va, Access::READ).is_err());
    assert_eq!(m.smmu.translate(SID_A, Some(2), va, Access::READ), Ok(pa));
    assert_eq!(
        a.unbind_sva(StreamId(SID_A), Ssid(1)),
        Err(Error::Iommu(ErrorCode::NoSuchStream))
    );
}

#[test]
fn a_fault_storm_on_one_stream_does_not_crowd_out_others() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let mut b = connect(&s, B);
    let da = a.alloc_domain().unwrap();
    a.attach(StreamId(SID_A), Ssid(0), da).unwrap();
    a.attach(StreamId(SID_A2), Ssid(0), da).unwrap();
    let db = b.alloc_domain().unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db).unwrap();
    // 100 faulting pages on A's first stream (distinct pages: no coalescing),
    // one fault on A's second stream and one on B's, then one drain.
    for page in 0..100u64 {
        assert!(m
            .smmu
            .dma_write(SID_A, None, 0x100_0000 + (page << 12), &[0; 4])
            .is_err());
    }
    assert!(m.smmu.dma_write(SID_A2, None, 0x5000, &[0; 4]).is_err());
    assert!(m.smmu.dma_write(SID_B, None, 0x6000, &[0; 4]).is_err());
    let notify = s.borrow_mut().route_faults();
    assert_eq!(notify.as_slice(), &[A, B]);
    let mut records = Vec::new();
    let mut dropped = 0;
    loop {
        let batch = a.faults().unwrap();
        records.extend(batch.records.iter().copied());
        dropped += batch.dropped;
        if !batch.more {
            break;
        }
    }
    let storm = records
        .iter()
        .filter(|r| r.stream == StreamId(SID_A))
        .count();
    assert!(records
        .iter()
        .any(|r| r.stream == StreamId(SID_A2) && r.iova == 0x5000));
    // Two streams: the storming one may hold half of A's queue.
    assert_eq!(storm, iommu_server::handler::FAULT_QUEUE / 2);
    assert_eq!(dropped as usize, 100 - storm);
    let fb = b.faults().unwrap();
    assert_eq!(fb.records.len(), 1);
    assert_eq!(
        (fb.records[0].stream, fb.records[0].iova, fb.dropped),
        (StreamId(SID_B), 0x6000, 0)
    );
}

#[test]
fn handles_die_with_their_objects_and_partial_registrations_roll_back() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    // A freed domain's handle does not name the next domain in its slot.
    let d1 = a.alloc_domain().unwrap();
    a.free_domain(d1).unwrap();
    let d2 = a.alloc_domain().unwrap();
    assert_ne!(d1, d2);
    let (_, c) = frame(&m, &s, 0x1000);
    let mem = a.register_memory(&[c]).unwrap();
    assert_eq!(
        a.map(d1, 0x10_0000, mem.handle, 0, 0x1000, Perms::RW),
        Err(Error::Iommu(ErrorCode::NoSuchDomain))
    );
    a.map(d2, 0x10_0000, mem.handle, 0, 0x1000, Perms::RW)
        .unwrap();

    // Three frames, the last not a frame at all: the client unregisters the
    // two that got in, and every cap is released once.
    let (_, f1) = frame(&m, &s, 0x1000);
    let (_, f2) = frame(&m, &s, 0x2000);
    let bad = s.borrow_mut().resolver_mut().not_a_frame();
    let before = a.stats().unwrap();
    assert_eq!(
        a.register_memory(&[f1, f2, bad]),
        Err(Error::Iommu(ErrorCode::BadCapability))
    );
    assert_eq!(a.stats().unwrap(), before);
    let h = s.borrow();
    for cap in [f1, f2, bad] {
        assert!(h.resolver().is_released(cap));
    }
    assert!(!h.resolver().is_released(c));
    assert_eq!(h.resolver().double_releases(), 0);
}

#[test]
fn partial_unmap_of_a_block_splits_it_or_changes_nothing() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let d = a.alloc_domain().unwrap();
    a.attach(StreamId(SID_A), Ssid(0), d).unwrap();
    let (pa, c) = frame(&m, &s, 0x20_0000);
    let mem = a.register_memory(&[c]).unwrap();
    a.map(d, 0x4000_0000, mem.handle, 0, 0x20_0000, Perms::RW)
        .unwrap();
    let t = m
        .smmu
        .translate_ex(SID_A, None, 0x4000_5000, Access::READ)
        .unwrap();
    assert_eq!(
        (t.paddr, t.page_size),
        (pa + 0x5000, 0x20_0000),
        "one 2 MiB block"
    );
    // Splitting the block needs a table; without memory nothing changes.
    let stats = a.stats().unwrap();
    m.mem.fail_nth_alloc(1);
    assert_eq!(
        a.unmap(d, 0x4000_5000, 0x1000),
        Err(Error::Iommu(ErrorCode::NoMemory))
    );
    m.mem.clear_failures();
    assert_eq!(a.stats().unwrap(), stats);
    assert_eq!(
        m.smmu.translate(SID_A, None, 0x4000_5000, Access::READ),
        Ok(pa + 0x5000)
    );
    // With memory, the page goes and its neighbours stay.
    a.unmap(d, 0x4000_5000, 0x1000).unwrap();
    assert!(m
        .smmu
        .translate(SID_A, None, 0x4000_5000, Access::READ)
        .is_err());
    assert_eq!(
        m.smmu.translate(SID_A, None, 0x4000_4000, Access::READ),
        Ok(pa + 0x4000)
    );
    assert_eq!(
        m.smmu.translate(SID_A, None, 0x4000_6000, Access::READ),
        Ok(pa + 0x6000)
    );
    let st = a.stats().unwrap();
    assert_eq!((st.mapped_bytes, st.mappings), (0x20_0000 - 0x1000, 2));
    // The two pieces are separate records now; the hole is not mapped.
    assert_eq!(
        a.unmap(d, 0x4000_0000, 0x20_0000),
        Err(Error::Iommu(ErrorCode::NotMapped))
    );
    a.unmap(d, 0x4000_0000, 0x5000).unwrap();
    a.unmap(d, 0x4000_6000, 0x20_0000 - 0x6000).unwrap();
    assert_eq!(a.stats().unwrap().mapped_bytes, 0);
    a.unregister_memory(mem.handle).unwrap();
}

#[test]
fn the_page_table_quota_bounds_the_table_memory_really_held() {
    // Mappings one per 512 GiB, each needing a leaf, a level-2 and a
    // level-1 table (4 + 8 + 8 KiB): the quota of 64 pages must stop the
    // client before its tables hold more than 64 x 4 KiB of memory.
    let (m, s) = server();
    let mut a = connect(&s, A);
    let (_, c) = frame(&m, &s, 0x1000);
    let mem = a.register_memory(&[c]).unwrap();
    let before = m.mem.stats().live_bytes;
    let d = a.alloc_domain().unwrap();
    let mut mapped = 0;
    let refused = loop {
        let iova = (mapped + 1) << 39;
        match a.map(d, iova, mem.handle, 0, 0x1000, Perms::RW) {
            Ok(()) => mapped += 1,
            Err(e) => break e,
        }
        assert!(mapped < 64, "the quota never stopped the client");
    };
    assert_eq!(refused, Error::Iommu(ErrorCode::QuotaExceeded));
    let held = m.mem.stats().live_bytes - before;
    let quota = u64::from(QUOTAS.pt_pages) * 0x1000;
    assert!(
        held as u64 <= quota,
        "tables hold {held} bytes, quota {quota}"
    );
    // The quota is what stopped it: one more such mapping would pass it.
    assert!(held as u64 + 5 * 0x1000 > quota, "held {held} of {quota}");
    assert_eq!(u64::from(a.stats().unwrap().pt_pages) * 0x1000, held as u64);
}

/// A client asks where the SMMU's walk of an address in its domain ends:
/// the leaf (level 3 for a page, 2 for a 2 MiB block) with its descriptor
/// and permissions, or the level where the entry is invalid; only its own
/// domains (issue 15: "when a DMA faults, a person can see why").
#[test]
fn a_client_sees_where_the_walk_of_an_address_ends() {
    let (m, s) = server();
    let mut a = connect(&s, A);
    let mut b = connect(&s, B);
    let d = a.alloc_domain().unwrap();
    let (pa, ca) = frame(&m, &s, 0x1000);
    let mem = a.register_memory(&[ca]).unwrap();
    a.map(d, 0x10_0000, mem.handle, 0, 0x1000, Perms::READ)
        .unwrap();
    let w = a.walk(d, 0x10_0000 + 0x123).unwrap();
    assert!(w.mapped());
    assert_eq!((w.level, w.perms), (3, Perms::READ));
    assert_eq!(w.descriptor & 0x0000_ffff_ffff_f000, pa);
    // The next page: same leaf table, invalid entry.
    let w = a.walk(d, 0x10_1000).unwrap();
    assert_eq!((w.mapped(), w.level, w.descriptor), (false, 3, 0));
    // Far away: no level-1 table there.
    let w = a.walk(d, 0x40_0000_0000).unwrap();
    assert_eq!((w.mapped(), w.level), (false, 1));
    // Out of range, and someone else's domain.
    assert!(!a.walk(d, 1 << 60).unwrap().mapped());
    assert_eq!(
        b.walk(d, 0x10_0000),
        Err(Error::Iommu(ErrorCode::NoSuchDomain))
    );
}
