//! Client death: `Handler::retire_client` (what the server does when the
//! root task, its supervisor, says a client is gone) takes back every
//! stream, domain, page table, ASID, memory registration and fault record,
//! and what it frees is usable by another client afterwards.

#[path = "client_support.rs"]
mod support;

use iommu_client::{Error, ErrorCode, Perms, Region, Ssid, StreamId};
use iommu_protocol::{decode_reply, encode, DomainId, MemoryHandle, Reply, Request, MSG_MAX_BYTES};
use iommu_server::handler::Retired;
use smmu_model::Access;
use support::*;

#[test]
fn retire_takes_back_everything_and_another_client_reuses_it() {
    let (m, s) = server();
    // The stream table's level-2 tables stay once made: make them first,
    // so that what remains after the retirement can be compared exactly.
    {
        let mut h = s.borrow_mut();
        let core = h.core_mut();
        let d = core.alloc_domain().unwrap();
        for sid in [SID_A, SID_A2] {
            core.attach(sid, 0, d).unwrap();
            core.detach(sid, 0).unwrap();
        }
        core.free_domain(d).unwrap();
    }
    let live_before = m.mem.stats().live_bytes;
    let asids_before = s.borrow().core().asids_in_use();
    let mut a = connect(&s, A);
    let d1 = a.alloc_domain().unwrap();
    let d2 = a.alloc_domain().unwrap();
    let (pa, cap) = frame(&m, &s, 0x4000);
    let mem = a.register_memory(&[cap]).unwrap();
    a.map(d1, 0x10_0000, mem.handle, 0, 0x2000, Perms::RW)
        .unwrap();
    a.map_batch(
        d2,
        &[Region {
            iova: 0x4000_0000,
            memory: mem.handle,
            offset: 0x2000,
            len: 0x2000,
            perms: Perms::READ,
        }],
    )
    .unwrap();
    a.attach(StreamId(SID_A), Ssid(0), d1).unwrap();
    a.attach(StreamId(SID_A2), Ssid(0), d2).unwrap();
    // A fault pending for A.
    let _ = m.smmu.dma_write(SID_A, None, 0x90_0000, &[1; 4]);
    s.borrow_mut().route_faults();
    assert_eq!(
        m.smmu
            .probe(SID_A, None, 0x10_0000, Access::READ)
            .map(|t| t.paddr),
        Ok(pa)
    );
    let held = a.stats().unwrap();
    assert_eq!(held.faults_pending, 1);
    // Table memory is exhausted (a budget at what is live now): B gets
    // nothing while A holds its tables.
    m.mem.set_budget(Some(m.mem.stats().live_bytes));
    let mut b = connect(&s, B);
    assert_eq!(b.alloc_domain(), Err(Error::Iommu(ErrorCode::NoMemory)));

    let r = s.borrow_mut().retire_client(A).unwrap();
    assert_eq!(
        r,
        Retired {
            streams: 2,
            domains: 2,
            pt_pages: held.pt_pages,
            mappings: 2,
            mapped_bytes: 0x4000,
            memory_regions: 1,
            frames: 1,
            faults: 1,
        }
    );
    // The devices abort now (the STEs went back to abort, caches invalidated).
    for sid in [SID_A, SID_A2] {
        assert!(m.smmu.probe(sid, None, 0x10_0000, Access::READ).is_err());
        assert_eq!(s.borrow().core().attached_domain(sid, 0), None);
    }
    // Tables, ASIDs and the frame cap are back.
    assert_eq!(m.mem.stats().live_bytes, live_before);
    assert_eq!(s.borrow().core().asids_in_use(), asids_before);
    assert!(s.borrow().resolver().is_released(cap));
    assert_eq!(s.borrow().resolver().double_releases(), 0);
    assert!(m.smmu.violations().is_empty());

    // Retired for good: the old connection and a new one are refused, and
    // its handles reach nothing.
    assert_eq!(a.stats(), Err(Error::Iommu(ErrorCode::NotPermitted)));
    assert!(hello_is_refused(&s, A));
    assert_eq!(
        a.map(d1, 0x20_0000, mem.handle, 0, 0x1000, Perms::RW),
        Err(Error::Iommu(ErrorCode::NotPermitted))
    );
    assert_eq!(
        a.unregister_memory(mem.handle),
        Err(Error::Iommu(ErrorCode::NotPermitted))
    );

    // Under the same budget, B now fits in the memory A's tables freed.
    let db = b.alloc_domain().unwrap();
    let (pb, capb) = frame(&m, &s, 0x1000);
    let memb = b.register_memory(&[capb]).unwrap();
    b.map(db, 0x10_0000, memb.handle, 0, 0x1000, Perms::RW)
        .unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db).unwrap();
    assert_eq!(
        m.smmu
            .probe(SID_B, None, 0x10_0000, Access::READ)
            .map(|t| t.paddr),
        Ok(pb)
    );
    m.mem.clear_failures();
}

#[test]
fn retire_refuses_strangers_and_is_idempotent() {
    let (m, s) = server();
    assert_eq!(
        s.borrow_mut().retire_client(STRANGER),
        Err(ErrorCode::NotPermitted)
    );
    assert_eq!(
        s.borrow_mut().retire_client(0),
        Err(ErrorCode::NotPermitted)
    );
    // A client that never said hello: nothing to take back, and it may
    // never start afterwards.
    assert_eq!(s.borrow_mut().retire_client(B), Ok(Retired::default()));
    assert!(hello_is_refused(&s, B));
    // One retired twice: the second time takes nothing, and whatever it
    // still sends is refused like a stranger's.
    let mut a = connect(&s, A);
    let d = a.alloc_domain().unwrap();
    a.attach(StreamId(SID_A), Ssid(0), d).unwrap();
    let first = s.borrow_mut().retire_client(A).unwrap();
    assert_eq!((first.streams, first.domains), (1, 1));
    assert_eq!(s.borrow_mut().retire_client(A), Ok(Retired::default()));
    assert_eq!(
        a.free_domain(DomainId(d.0)),
        Err(Error::Iommu(ErrorCode::NotPermitted))
    );
    assert_eq!(a.alloc_domain(), Err(Error::Iommu(ErrorCode::NotPermitted)));
    let _ = MemoryHandle(0);
    assert!(m.smmu.violations().is_empty());
}

/// Whether a new `Hello` from `badge` is refused as a stranger's.
fn hello_is_refused(s: &Server, badge: u64) -> bool {
    let mut request = [0u8; MSG_MAX_BYTES];
    let hello = Request::Hello {
        min_version: 1,
        max_version: 1,
    };
    let n = encode(&hello, &mut request).expect("fits");
    let mut reply = [0u8; MSG_MAX_BYTES];
    let m = s.borrow_mut().handle(badge, &request[..n], &[], &mut reply);
    decode_reply(&reply[..m]) == Ok(Reply::Err(ErrorCode::NotPermitted))
}
