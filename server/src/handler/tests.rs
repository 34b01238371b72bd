//! Handler tests against the reference core ([`super::reference`]): a page
//! map per domain that checks the core contract (all-or-nothing map and
//! unmap), with failure injection to exercise rollback. End-to-end tests against the real core and
//! the SMMU model are in `server/tests/client_*.rs`.

extern crate std;

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec as StdVec;

use iommu_protocol::*;
use proptest::prelude::*;

use super::*;
use crate::policy::{ClientPolicy, Policy, Quotas, StreamGrant};

use super::reference::RefCore;

const QUOTAS: Quotas = Quotas {
    domains: 3,
    mapped_bytes: 256 << 12,
    mappings: 16,
    pt_pages: 24,
    asids: 3,
    memory_regions: 3,
    memory_frames: 8,
};

static CLIENTS: [ClientPolicy; 2] = [
    ClientPolicy {
        name: "a",
        badge: 0xa,
        streams: &[
            StreamGrant::new(StreamId(8)),
            StreamGrant::with_ssids(StreamId(9), 3),
        ],
        quotas: QUOTAS,
    },
    ClientPolicy {
        name: "b",
        badge: 0xb,
        streams: &[StreamGrant::new(StreamId(16))],
        quotas: QUOTAS,
    },
];
const POLICY: Policy = Policy::new(&CLIENTS);
const A: u64 = 0xa;
const B: u64 = 0xb;

type H = Handler<RefCore, FakeFrames>;

fn handler() -> std::boxed::Box<H> {
    let core = RefCore::with_ssid_bits(4);
    let mut h = std::boxed::Box::new(Handler::new(core, FakeFrames::new(), POLICY).unwrap());
    h.grant_everything();
    h
}

fn call(h: &mut H, badge: u64, req: &Request, caps: &[ReceivedCap]) -> Reply {
    let mut buf = [0u8; MSG_MAX_BYTES];
    let n = encode(req, &mut buf).unwrap();
    let mut out = [0u8; MSG_MAX_BYTES];
    let m = h.handle(badge, &buf[..n], caps, &mut out);
    decode_reply(&out[..m]).unwrap()
}

fn hello(h: &mut H, badge: u64) {
    let r = call(
        h,
        badge,
        &Request::Hello {
            min_version: 1,
            max_version: 1,
        },
        &[],
    );
    assert!(matches!(r, Reply::Hello(_)), "{r:?}");
}

fn domain(h: &mut H, badge: u64) -> DomainId {
    match call(h, badge, &Request::AllocDomain, &[]) {
        Reply::Domain(d) => d,
        r => panic!("{r:?}"),
    }
}

/// Registers `caps` as one handle, one cap per message as on seL4.
fn register(h: &mut H, badge: u64, caps: &[ReceivedCap]) -> MemoryHandle {
    let mut handle = None;
    for chunk in caps.chunks(MAX_CAPS_PER_MSG) {
        match call(h, badge, &Request::RegisterMemory { extend: handle }, chunk) {
            Reply::Memory { memory, .. } => handle = Some(memory),
            r => panic!("{r:?}"),
        }
    }
    handle.expect("at least one cap")
}

fn map(d: DomainId, iova_pfn: u64, memory: MemoryHandle, offset_pfn: u32, pages: u32) -> Request {
    Request::Map {
        domain: d,
        iova_pfn,
        memory,
        offset_pfn,
        pages,
        perms: Perms::RW,
    }
}

const ERR: fn(ErrorCode) -> Reply = Reply::Err;

#[test]
fn unknown_badge_and_no_hello_are_refused() {
    let mut h = handler();
    assert_eq!(
        call(&mut h, 0, &Request::Stats, &[]),
        ERR(ErrorCode::NotPermitted)
    );
    assert_eq!(
        call(
            &mut h,
            0x77,
            &Request::Hello {
                min_version: 1,
                max_version: 1
            },
            &[]
        ),
        ERR(ErrorCode::NotPermitted)
    );
    assert_eq!(
        call(&mut h, A, &Request::AllocDomain, &[]),
        ERR(ErrorCode::VersionMismatch)
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Hello {
                min_version: 2,
                max_version: 9
            },
            &[]
        ),
        ERR(ErrorCode::VersionMismatch)
    );
    hello(&mut h, A);
    domain(&mut h, A);
    // Garbage gets Malformed, not a panic.
    let mut out = [0u8; MSG_MAX_BYTES];
    let n = h.handle(A, &[0xff, 0xff, 0xff], &[], &mut out);
    assert_eq!(decode_reply(&out[..n]), Ok(ERR(ErrorCode::Malformed)));
    // A reply buffer too small for anything gets nothing.
    assert_eq!(h.handle(A, &[11], &[], &mut out[..1]), 0);
}

#[test]
fn map_translate_unmap_and_cross_client_refusals() {
    let mut h = handler();
    hello(&mut h, A);
    hello(&mut h, B);
    let f1 = h.resolver.frame(0x8000_0000, 0x2000);
    let f2 = h.resolver.frame(0x9000_0000, 0x1000);
    let da = domain(&mut h, A);
    let ma = register(&mut h, A, &[f1, f2]);
    assert_eq!(call(&mut h, A, &map(da, 0x100, ma, 0, 3), &[]), Reply::Ok);
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Attach {
                stream: StreamId(8),
                ssid: Ssid(0),
                domain: da
            },
            &[]
        ),
        Reply::Ok
    );
    let core = h.core();
    assert_eq!(
        core.translate(StreamId(8), Ssid(0), 0x100_123),
        Some((0x8000_0123, Perms::RW))
    );
    assert_eq!(
        core.translate(StreamId(8), Ssid(0), 0x101_000),
        Some((0x8000_1000, Perms::RW))
    );
    assert_eq!(
        core.translate(StreamId(8), Ssid(0), 0x102_008),
        Some((0x9000_0008, Perms::RW))
    );
    assert_eq!(core.translate(StreamId(8), Ssid(0), 0x103_000), None);

    // B cannot touch A's stream, domain or memory.
    // First while B has no domain, then while it has one (whose handle
    // must still not be A's).
    let no_domain = DomainId(0);
    assert_eq!(
        call(&mut h, B, &map(no_domain, 0x200, ma, 0, 1), &[]),
        ERR(ErrorCode::NoSuchDomain)
    );
    let db = domain(&mut h, B);
    assert_ne!(db, da);
    let before_b = h.core().clone();
    for req in [
        Request::Attach {
            stream: StreamId(8),
            ssid: Ssid(0),
            domain: db,
        },
        Request::Detach {
            stream: StreamId(8),
            ssid: Ssid(0),
        },
        Request::BindSva {
            stream: StreamId(8),
            ssid: Ssid(0),
        },
        Request::UnbindSva {
            stream: StreamId(8),
            ssid: Ssid(0),
        },
    ] {
        assert_eq!(
            call(&mut h, B, &req, &[]),
            ERR(ErrorCode::NotPermitted),
            "{req:?}"
        );
    }
    for req in [
        map(da, 0x200, ma, 0, 1),
        Request::Unmap {
            domain: da,
            iova_pfn: 0x100,
            pages: 1,
        },
        Request::FreeDomain { domain: da },
        Request::Attach {
            stream: StreamId(16),
            ssid: Ssid(0),
            domain: da,
        },
    ] {
        assert_eq!(
            call(&mut h, B, &req, &[]),
            ERR(ErrorCode::NoSuchDomain),
            "{req:?}"
        );
    }
    for req in [
        map(db, 0x200, ma, 0, 1),
        Request::UnregisterMemory { memory: ma },
    ] {
        assert_eq!(
            call(&mut h, B, &req, &[]),
            ERR(ErrorCode::NoSuchMemory),
            "{req:?}"
        );
    }
    assert_eq!(h.core(), &before_b);

    // Unmap the middle page: the record splits and the rest still works.
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Unmap {
                domain: da,
                iova_pfn: 0x101,
                pages: 1
            },
            &[]
        ),
        Reply::Ok
    );
    let core = h.core();
    assert_eq!(core.translate(StreamId(8), Ssid(0), 0x101_000), None);
    assert_eq!(
        core.translate(StreamId(8), Ssid(0), 0x102_000),
        Some((0x9000_0000, Perms::RW))
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Unmap {
                domain: da,
                iova_pfn: 0x100,
                pages: 2
            },
            &[]
        ),
        ERR(ErrorCode::NotMapped)
    );
    assert_eq!(
        call(&mut h, A, &Request::UnregisterMemory { memory: ma }, &[]),
        ERR(ErrorCode::InUse)
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Unmap {
                domain: da,
                iova_pfn: 0x100,
                pages: 1
            },
            &[]
        ),
        Reply::Ok
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Unmap {
                domain: da,
                iova_pfn: 0x102,
                pages: 1
            },
            &[]
        ),
        Reply::Ok
    );
    assert!(!h.resolver().is_released(f1));
    assert_eq!(
        call(&mut h, A, &Request::UnregisterMemory { memory: ma }, &[]),
        Reply::Ok
    );
    assert!(h.resolver().is_released(f1) && h.resolver().is_released(f2));
    // The handle is dead now, even for its owner.
    assert_eq!(
        call(&mut h, A, &map(da, 0x100, ma, 0, 1), &[]),
        ERR(ErrorCode::NoSuchMemory)
    );
    assert_eq!(
        call(&mut h, A, &Request::FreeDomain { domain: da }, &[]),
        ERR(ErrorCode::InUse)
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Detach {
                stream: StreamId(8),
                ssid: Ssid(0)
            },
            &[]
        ),
        Reply::Ok
    );
    assert_eq!(
        call(&mut h, A, &Request::FreeDomain { domain: da }, &[]),
        Reply::Ok
    );
    assert_eq!(
        call(&mut h, A, &Request::FreeDomain { domain: da }, &[]),
        ERR(ErrorCode::NoSuchDomain)
    );
    assert_eq!(h.resolver().double_releases(), 0);
}

#[test]
fn batch_is_all_or_nothing() {
    let mut h = handler();
    hello(&mut h, A);
    let f = h.resolver.frame(0x4000_0000, 0x10000);
    let d = domain(&mut h, A);
    let m = register(&mut h, A, &[f]);
    let e = |iova_pfn, offset_pfn, pages| MapEntry {
        iova_pfn,
        memory: m,
        offset_pfn,
        pages,
        perms: Perms::READ,
    };
    let entries = |v: &[MapEntry]| Request::MapBatch {
        domain: d,
        entries: Vec::from_slice(v).unwrap(),
    };
    // Overlap within the batch: nothing happens.
    let before = h.core().clone();
    assert_eq!(
        call(&mut h, A, &entries(&[e(0, 0, 2), e(1, 4, 1)]), &[]),
        ERR(ErrorCode::Overlap)
    );
    // Out of range in the last entry: nothing happens.
    assert_eq!(
        call(&mut h, A, &entries(&[e(0, 0, 2), e(8, 15, 2)]), &[]),
        ERR(ErrorCode::OutOfRange)
    );
    // The core fails on the third map: the first two are rolled back.
    h.core_mut().fail_map_in = Some(2);
    assert_eq!(
        call(
            &mut h,
            A,
            &entries(&[e(0, 0, 1), e(4, 1, 1), e(8, 2, 1)]),
            &[]
        ),
        ERR(ErrorCode::NoMemory)
    );
    assert_eq!(h.core(), &before);
    let stats = match call(&mut h, A, &Request::Stats, &[]) {
        Reply::Stats(s) => s,
        r => panic!("{r:?}"),
    };
    assert_eq!((stats.mapped_bytes, stats.mappings), (0, 0));
    assert_eq!(
        call(
            &mut h,
            A,
            &entries(&[e(0, 0, 1), e(4, 1, 1), e(8, 2, 1)]),
            &[]
        ),
        Reply::Ok
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::Unmap {
                domain: d,
                iova_pfn: 0,
                pages: 9
            },
            &[]
        ),
        ERR(ErrorCode::NotMapped)
    );
}

#[test]
fn quotas_hold() {
    let mut h = handler();
    hello(&mut h, A);
    for _ in 0..3 {
        domain(&mut h, A);
    }
    assert_eq!(
        call(&mut h, A, &Request::AllocDomain, &[]),
        ERR(ErrorCode::QuotaExceeded)
    );
    // A cap that is not a frame is refused and released.
    let bad = h.resolver.not_a_frame();
    assert_eq!(
        call(&mut h, A, &Request::RegisterMemory { extend: None }, &[bad]),
        ERR(ErrorCode::BadCapability)
    );
    assert!(h.resolver().is_released(bad));
    // More caps than one message carries on seL4: malformed, all released.
    let (one, two) = (
        h.resolver.frame(0x2000, 0x1000),
        h.resolver.frame(0x4000, 0x1000),
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory { extend: None },
            &[one, two]
        ),
        ERR(ErrorCode::Malformed)
    );
    assert!(h.resolver().is_released(one) && h.resolver().is_released(two));
    let caps: StdVec<_> = (0..9)
        .map(|i| h.resolver.frame(0x1_0000_0000 + i * 0x1000, 0x1000))
        .collect();
    let m = register(&mut h, A, &caps[..6]);
    assert!(matches!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory { extend: Some(m) },
            &caps[6..7]
        ),
        Reply::Memory { pages: 7, .. }
    ));
    assert!(matches!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory { extend: Some(m) },
            &caps[7..8]
        ),
        Reply::Memory { pages: 8, .. }
    ));
    // 8 frames allowed: one more is over; the cap comes back.
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory { extend: Some(m) },
            &caps[8..9]
        ),
        ERR(ErrorCode::QuotaExceeded)
    );
    assert!(h.resolver().is_released(caps[8]));
    assert!(!h.resolver().is_released(caps[0]));
    // Caps sent with other requests are released.
    let stray = h.resolver.frame(0x3000, 0x1000);
    assert!(matches!(
        call(&mut h, A, &Request::Stats, &[stray]),
        Reply::Stats(_)
    ));
    assert!(h.resolver().is_released(stray));
    assert_eq!(h.resolver().double_releases(), 0);
}

#[test]
fn sva_binding_and_substreams() {
    let mut h = handler();
    hello(&mut h, A);
    let sva = match call(
        &mut h,
        A,
        &Request::BindSva {
            stream: StreamId(9),
            ssid: Ssid(2),
        },
        &[],
    ) {
        Reply::Domain(d) => d,
        r => panic!("{r:?}"),
    };
    let again = call(
        &mut h,
        A,
        &Request::BindSva {
            stream: StreamId(9),
            ssid: Ssid(3),
        },
        &[],
    );
    assert_eq!(again, Reply::Domain(sva), "one SVA domain per client");
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::BindSva {
                stream: StreamId(9),
                ssid: Ssid(4)
            },
            &[]
        ),
        ERR(ErrorCode::NotPermitted)
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::BindSva {
                stream: StreamId(8),
                ssid: Ssid(1)
            },
            &[]
        ),
        ERR(ErrorCode::NotPermitted)
    );
    let f = h.resolver.frame(0x5000_0000, 0x1000);
    let m = register(&mut h, A, &[f]);
    assert_eq!(
        call(&mut h, A, &map(sva, 0x7f00_0000, m, 0, 1), &[]),
        Reply::Ok
    );
    assert_eq!(
        h.core().translate(StreamId(9), Ssid(3), 0x7f0_0000_0000),
        Some((0x5000_0000, Perms::RW))
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::UnbindSva {
                stream: StreamId(9),
                ssid: Ssid(2)
            },
            &[]
        ),
        Reply::Ok
    );
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::UnbindSva {
                stream: StreamId(9),
                ssid: Ssid(2)
            },
            &[]
        ),
        ERR(ErrorCode::NoSuchStream)
    );
    assert_eq!(
        h.core().translate(StreamId(9), Ssid(2), 0x7f0_0000_0000),
        None
    );
    // Without substreams in the hardware, SSID != 0 is Unsupported.
    h.core_mut().ssid_bits = 0;
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::BindSva {
                stream: StreamId(9),
                ssid: Ssid(1)
            },
            &[]
        ),
        ERR(ErrorCode::Unsupported)
    );
}

/// A fault the core reports, on substream 0.
fn fault_event(stream: u32, iova: u64, kind: FaultKind, write: bool) -> CoreEvent {
    CoreEvent {
        stream: StreamId(stream),
        ssid: Ssid(0),
        iova,
        kind,
        write,
    }
}

#[test]
fn faults_are_routed_coalesced_and_bounded() {
    let mut h = handler();
    hello(&mut h, A);
    hello(&mut h, B);
    let ev = |stream, iova| fault_event(stream, iova, FaultKind::Translation, true);
    // A storm on stream 8: 1024 events per page over 100 pages.
    for page in 0..100u64 {
        for off in (0..4096).step_by(4) {
            h.core_mut().events.push(ev(8, page * 4096 + off));
        }
    }
    h.core_mut().events.push(ev(9, 0x5000));
    h.core_mut().events.push(ev(16, 0x6000));
    h.core_mut().events.push(ev(99, 0x7000));
    let notify = h.route_faults();
    assert_eq!(notify.as_slice(), &[A, B]);
    assert_eq!(h.unrouted_faults(), 1);
    let mut seen9 = false;
    let mut total = 0;
    let mut dropped = 0;
    loop {
        let Reply::Faults(b) = call(&mut h, A, &Request::Faults { max: 255 }, &[]) else {
            panic!()
        };
        for r in &b.records {
            seen9 |= r.stream == StreamId(9);
            if r.stream == StreamId(8) {
                assert_eq!(r.count, 1024);
            }
        }
        total += b.records.len();
        dropped += b.dropped;
        if !b.more {
            break;
        }
    }
    assert!(seen9, "stream 9's fault survives stream 8's storm");
    assert_eq!(total, FAULT_QUEUE / 2 + 1);
    assert_eq!(
        dropped as usize,
        (100 - FAULT_QUEUE / 2) * 1024,
        "dropped counts events"
    );
    let Reply::Faults(b) = call(&mut h, B, &Request::Faults { max: 4 }, &[]) else {
        panic!()
    };
    assert_eq!(b.records.len(), 1);
    assert_eq!(b.records[0].stream, StreamId(16));
}

/// Events an event thread drained for several handlers: each takes only
/// its own clients' (same queues as `route_faults`), counting none as
/// unrouted.
#[test]
fn events_routed_from_outside_reach_only_their_owners() {
    let mut h = handler();
    hello(&mut h, A);
    hello(&mut h, B);
    let ev = |stream, iova| fault_event(stream, iova, FaultKind::Permission, false);
    assert!(h.serves_stream(StreamId(16)) && !h.serves_stream(StreamId(99)));
    let notify = h.route_events(&[ev(16, 0x6000), ev(99, 0x7000), ev(16, 0x6008)]);
    assert_eq!(notify.as_slice(), &[B]);
    assert_eq!(h.unrouted_faults(), 0);
    assert!(h.route_events(&[ev(99, 0)]).is_empty());
    let Reply::Faults(b) = call(&mut h, B, &Request::Faults { max: 4 }, &[]) else {
        panic!()
    };
    assert_eq!(b.records.len(), 1);
    assert_eq!((b.records[0].iova, b.records[0].count), (0x6000, 2));
    let Reply::Faults(a) = call(&mut h, A, &Request::Faults { max: 4 }, &[]) else {
        panic!()
    };
    assert!(a.records.is_empty());
}

/// What a client may ask for, over a small space so that sequences collide.
fn request(d: u32, m: u32) -> impl Strategy<Value = (bool, Request, u8)> {
    // Handles are generation << 12 | client << 8 | slot: cover both
    // clients' numbers and a stale generation.
    let handle = |n: u32| (0u32..2, 0u32..2, 0..n).prop_map(|(g, c, s)| (g << 12) | (c << 8) | s);
    let dom = handle(d).prop_map(DomainId);
    let mem = handle(m).prop_map(MemoryHandle);
    let stream = prop::sample::select(std::vec![8u32, 9, 16]).prop_map(StreamId);
    let ssid = (0u32..3).prop_map(Ssid);
    let req = prop_oneof![
        Just(Request::AllocDomain),
        dom.clone()
            .prop_map(|domain| Request::FreeDomain { domain }),
        (stream.clone(), ssid.clone(), dom.clone()).prop_map(|(stream, ssid, domain)| {
            Request::Attach {
                stream,
                ssid,
                domain,
            }
        }),
        (stream.clone(), ssid.clone()).prop_map(|(stream, ssid)| Request::Detach { stream, ssid }),
        (dom.clone(), 0u64..24, mem.clone(), 0u32..6, 0u32..6, 0u8..4).prop_map(
            |(domain, iova_pfn, memory, offset_pfn, pages, p)| {
                Request::Map {
                    domain,
                    iova_pfn: iova_pfn * 300,
                    memory,
                    offset_pfn,
                    pages,
                    perms: Perms(p),
                }
            }
        ),
        (
            dom.clone(),
            prop::collection::vec((0u64..24, mem.clone(), 0u32..6, 1u32..4), 0..4)
        )
            .prop_map(|(domain, es)| {
                Request::MapBatch {
                    domain,
                    entries: es
                        .into_iter()
                        .map(|(i, memory, offset_pfn, pages)| MapEntry {
                            iova_pfn: i * 300,
                            memory,
                            offset_pfn,
                            pages,
                            perms: Perms::RW,
                        })
                        .collect(),
                }
            }),
        (dom.clone(), 0u64..7200, 0u32..8).prop_map(|(domain, iova_pfn, pages)| Request::Unmap {
            domain,
            iova_pfn,
            pages
        }),
        (stream.clone(), ssid.clone()).prop_map(|(stream, ssid)| Request::BindSva { stream, ssid }),
        (stream, ssid).prop_map(|(stream, ssid)| Request::UnbindSva { stream, ssid }),
        (0u8..8).prop_map(|max| Request::Faults { max }),
        Just(Request::Stats),
        proptest::option::of(mem.clone()).prop_map(|extend| Request::RegisterMemory { extend }),
        mem.prop_map(|memory| Request::UnregisterMemory { memory }),
    ];
    (any::<bool>(), req, 0u8..4)
}

/// Every translation the core has is backed by a record of the client that
/// owns the stream, into memory that client registered.
fn check_translation_invariant(h: &H, frames: &BTreeMap<u64, u64>) {
    let core = h.core();
    for (&(stream, ssid), &d) in &core.attached {
        let owner = POLICY
            .owner_of(StreamId(stream))
            .expect("attached stream has an owner");
        let c = &h.clients[owner];
        let att = c
            .attachments
            .iter()
            .find(|a| a.stream.0 == stream && a.ssid.0 == ssid)
            .expect("recorded");
        let slot = c.domains[att.domain as usize].expect("live domain");
        assert_eq!(slot.core, d);
        let _ = ssid;
    }
    for (ci, c) in h.clients.iter().enumerate() {
        let mut expect: BTreeMap<(u32, u64), u64> = BTreeMap::new();
        for m in &c.mappings {
            let d = c.domains[m.domain as usize]
                .expect("record of live domain")
                .core;
            let mem = c.memory[m.memory as usize]
                .as_ref()
                .expect("record of live memory");
            let mut pages = StdVec::new();
            // From the resolver, not from the server's own runs.
            for &cap in &mem.frames {
                let f = h.resolver.frame_of(cap).expect("a frame cap");
                for i in 0..f.size >> 12 {
                    pages.push((f.paddr >> 12) + i);
                }
            }
            for i in 0..m.pages {
                expect.insert((d, m.iova_pfn + i), pages[(m.offset_pfn + i) as usize]);
            }
        }
        let mut actual = BTreeMap::new();
        for (slot, d) in c.domains.iter().enumerate() {
            if let Some(d) = d {
                for (&v, &(p, _)) in &core.domains[&d.core] {
                    actual.insert((d.core, v), p);
                    // Only frames someone gave this server.
                    assert!(
                        frames.contains_key(&p),
                        "client {ci} slot {slot} maps unregistered page {p:#x}"
                    );
                }
            }
        }
        assert_eq!(expect, actual, "client {ci}");
        for (slot, d) in c.domains.iter().enumerate() {
            assert_eq!(
                d.is_some(),
                c.live_domains & (1 << slot) != 0,
                "live bit {slot}"
            );
        }
        let mapped: u64 = c.mappings.iter().map(|m| m.pages).sum();
        assert_eq!(mapped, c.mapped_pages);
        assert!(c.mapped_pages * 4096 <= c.policy.quotas.mapped_bytes);
        assert!(c.domain_count() <= c.policy.quotas.domains);
        assert!(c.mappings.len() as u32 <= c.policy.quotas.mappings);
        for (i, m) in c.memory.iter().enumerate() {
            if let Some(m) = m {
                let n: u64 = c
                    .mappings
                    .iter()
                    .filter(|r| r.memory as usize == i)
                    .map(|r| r.pages)
                    .sum();
                assert_eq!(n, m.mapped);
            }
        }
    }
    // Domains in the core are exactly the clients' live domains.
    let live: usize = h.clients.iter().map(|c| c.domain_count() as usize).sum();
    assert_eq!(live, core.domains.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn request_sequences_keep_the_invariants(
        seq in prop::collection::vec(request(3, 3), 1..60),
        fail in proptest::option::of(0usize..6),
    ) {
        let mut h = handler();
        h.core_mut().fail_map_in = fail;
        let mut frames = BTreeMap::new();
        hello(&mut h, A);
        hello(&mut h, B);
        for (i, (who, req, ncaps)) in seq.into_iter().enumerate() {
            let badge = if who { A } else { B };
            let caps: StdVec<ReceivedCap> = (0..ncaps)
                .map(|k| {
                    let paddr = 0x1_0000_0000 + ((i as u64 * 4 + k as u64) << 16);
                    for p in 0..4 {
                        frames.insert((paddr >> 12) + p, 0);
                    }
                    h.resolver.frame(paddr, 0x4000)
                })
                .collect();
            let before = h.core().clone();
            let r = call(&mut h, badge, &req, &caps);
            if let Reply::Err(_) = r {
                // A failed request changed nothing in the core.
                prop_assert_eq!(&before.domains, &h.core().domains);
                prop_assert_eq!(&before.attached, &h.core().attached);
            }
            // Every cap sent is now either held or released, never twice.
            prop_assert_eq!(h.resolver().double_releases(), 0);
            check_translation_invariant(&h, &frames);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_handler(bytes in prop::collection::vec(any::<u8>(), 0..200), badge in prop::sample::select(std::vec![0u64, A, B, 5])) {
        let mut h = handler();
        hello(&mut h, A);
        let mut out = [0u8; MSG_MAX_BYTES];
        let n = h.handle(badge, &bytes, &[], &mut out);
        prop_assert!(decode_reply(&out[..n]).is_ok());
    }
}

#[test]
fn page_table_bound_counts_new_blocks_only_and_is_cheap() {
    let mut h = handler();
    hello(&mut h, A);
    let f = h.resolver.frame(0x4000_0000, 0x2000);
    let d = domain(&mut h, A);
    let m = register(&mut h, A, &[f]);
    assert_eq!(call(&mut h, A, &map(d, 0, m, 0, 1), &[]), Reply::Ok);
    let (slot, _) = h.clients[0].domain(d).unwrap();
    // Same 2 MiB block: no new table.
    assert_eq!(h.pt_bound(0, slot, 1, 1, &[]), 0);
    // Next 2 MiB block: one level-3 table.
    assert_eq!(h.pt_bound(0, slot, 512, 1, &[]), 1);
    // ... unless the same batch maps there first.
    assert_eq!(h.pt_bound(0, slot, 512, 1, &[(600, 601)]), 0);
    // Next 1 GiB: a level-3 table (4 KiB) and a level-2 one (8 KiB with
    // its shadow): three pages of memory.
    assert_eq!(h.pt_bound(0, slot, 1 << 18, 1, &[]), 3);
    // Next 512 GiB: level 3, 2 and 1.
    assert_eq!(h.pt_bound(0, slot, 1 << 27, 1, &[]), 5);
    // The largest request a message can carry: answered at once.
    let n = u64::from(u32::MAX);
    let l3 = n.div_ceil(512) - 1;
    let l2 = n.div_ceil(1 << 18) - 1;
    let l1 = n.div_ceil(1 << 27) - 1;
    assert_eq!(h.pt_bound(0, slot, 0, n, &[]), l3 + 2 * (l2 + l1));
}

/// The reply words of `req` through [`Handler::handle_registers`] where it
/// answers (a hot request without caps), else through [`Handler::handle`].
fn call_words(h: &mut H, badge: u64, req: &Request, caps: &[ReceivedCap]) -> StdVec<u64> {
    let mut buf = [0u8; MSG_MAX_BYTES];
    let n = encode(req, &mut buf).unwrap();
    let mut words = [0u64; MSG_MAX_WORDS];
    let k = pack_words(&buf[..n], &mut words).unwrap();
    if caps.is_empty() && k <= FASTPATH_WORDS {
        let mut out = [0u64; FASTPATH_WORDS];
        if let Some(m) = h.handle_registers(badge, &words[..k], &mut out) {
            return out[..m].to_vec();
        }
    }
    let mut bytes = [0u8; MSG_MAX_BYTES];
    let len = unpack_words(&words[..k], &mut bytes).unwrap();
    let mut out = [0u8; MSG_MAX_BYTES];
    let m = h.handle(badge, &bytes[..len], caps, &mut out);
    let k = pack_words(&out[..m], &mut words).unwrap();
    words[..k].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Two handlers fed the same requests, one only through the full path,
    /// one through the register path where it answers: same replies, same
    /// core state, every step (including refusals, before `Hello`, from
    /// strangers, and with pending faults).
    #[test]
    fn register_path_answers_as_the_full_path(
        seq in prop::collection::vec(request(3, 3), 1..60),
        greet_b in any::<bool>(),
        fault_at in 0usize..60,
    ) {
        let mut full = handler();
        let mut fast = handler();
        for h in [&mut full, &mut fast] {
            hello(h, A);
            if greet_b {
                hello(h, B);
            }
        }
        for (i, (who, req, ncaps)) in seq.into_iter().enumerate() {
            let badge = match (who, i % 7) {
                (_, 6) => 5, // no client
                (true, _) => A,
                (false, _) => B,
            };
            if i == fault_at {
                for h in [&mut full, &mut fast] {
                    h.core_mut()
                        .events
                        .push(fault_event(8, 0x1000, FaultKind::Translation, true));
                    let _ = h.route_faults();
                }
            }
            let mut replies = StdVec::new();
            for (h, via_registers) in [(&mut full, false), (&mut fast, true)] {
                let caps: StdVec<ReceivedCap> = (0..ncaps)
                    .map(|k| h.resolver.frame(0x1_0000_0000 + ((i as u64 * 4 + k as u64) << 16), 0x4000))
                    .collect();
                replies.push(if via_registers {
                    call_words(h, badge, &req, &caps)
                } else {
                    let r = call(h, badge, &req, &caps);
                    let mut buf = [0u8; MSG_MAX_BYTES];
                    let n = encode(&r, &mut buf).unwrap();
                    let mut words = [0u64; MSG_MAX_WORDS];
                    let k = pack_words(&buf[..n], &mut words).unwrap();
                    words[..k].to_vec()
                });
            }
            prop_assert_eq!(&replies[0], &replies[1], "request {} {:?}", i, req);
            prop_assert_eq!(full.core(), fast.core());
        }
    }
}

#[test]
fn only_granted_memory_registers_and_read_only_grants_never_map_writable() {
    let core = RefCore::with_ssid_bits(4);
    let mut h = std::boxed::Box::new(Handler::new(core, FakeFrames::new(), POLICY).unwrap());
    hello(&mut h, A);
    // No grant yet: a genuine frame is still not memory A may give a device.
    let early = h.resolver.frame(0x8000_0000, 0x1000);
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory { extend: None },
            &[early]
        ),
        ERR(ErrorCode::NotPermitted)
    );
    assert!(h.resolver().is_released(early));
    let rw = DmaGrant {
        paddr: 0x8000_0000,
        size: 0x4000,
        writable: true,
    };
    let ro = DmaGrant {
        paddr: 0x9000_0000,
        size: 0x2000,
        writable: false,
    };
    assert_eq!(h.grant_dma(A, rw), Ok(()));
    assert_eq!(h.grant_dma(A, ro), Ok(()));
    assert_eq!(h.grant_dma(0x77, rw), Err(ErrorCode::NotPermitted));
    for bad in [
        DmaGrant { size: 0, ..rw },
        DmaGrant {
            paddr: 0x8000_0800,
            ..rw
        },
        DmaGrant { size: 0x800, ..rw },
        DmaGrant {
            paddr: u64::MAX - 0xfff,
            ..rw
        },
    ] {
        assert_eq!(h.grant_dma(A, bad), Err(ErrorCode::OutOfRange), "{bad:?}");
    }
    // Frames straddling the grant's ends, or only next to it, or granted
    // to B: NotPermitted, released, nothing recorded.
    for (paddr, size) in [
        (0x7fff_f000, 0x1000),
        (0x8000_3000, 0x2000),
        (0x8000_4000, 0x1000),
        (0x9000_1000, 0x2000),
    ] {
        let f = h.resolver.frame(paddr, size);
        assert_eq!(
            call(&mut h, A, &Request::RegisterMemory { extend: None }, &[f]),
            ERR(ErrorCode::NotPermitted),
            "{paddr:#x}+{size:#x}"
        );
        assert!(h.resolver().is_released(f));
    }
    hello(&mut h, B);
    let f = h.resolver.frame(0x8000_0000, 0x1000);
    assert_eq!(
        call(&mut h, B, &Request::RegisterMemory { extend: None }, &[f]),
        ERR(ErrorCode::NotPermitted)
    );
    let stats = |h: &mut H| match call(h, A, &Request::Stats, &[]) {
        Reply::Stats(s) => (s.memory_regions, s.memory_frames),
        r => panic!("{r:?}"),
    };
    assert_eq!(stats(&mut h), (0, 0));

    // Inside: accepted. The read-only grant's frame maps read-only only,
    // and so does any memory it is part of.
    let d = domain(&mut h, A);
    let whole = h.resolver.frame(0x8000_0000, 0x4000);
    let writable = register(&mut h, A, &[whole]);
    assert_eq!(
        call(&mut h, A, &map(d, 0x100, writable, 0, 4), &[]),
        Reply::Ok
    );
    let ro_frame = h.resolver.frame(0x9000_1000, 0x1000);
    let read_only = register(&mut h, A, &[ro_frame]);
    assert_eq!(
        call(&mut h, A, &map(d, 0x200, read_only, 0, 1), &[]),
        ERR(ErrorCode::NotPermitted)
    );
    let write_only = Request::Map {
        domain: d,
        iova_pfn: 0x200,
        memory: read_only,
        offset_pfn: 0,
        pages: 1,
        perms: Perms::WRITE,
    };
    assert_eq!(
        call(&mut h, A, &write_only, &[]),
        ERR(ErrorCode::NotPermitted)
    );
    let read = Request::Map {
        domain: d,
        iova_pfn: 0x200,
        memory: read_only,
        offset_pfn: 0,
        pages: 1,
        perms: Perms::READ,
    };
    assert_eq!(call(&mut h, A, &read, &[]), Reply::Ok);
    let rw_frame = h.resolver.frame(0x8000_0000, 0x1000);
    let mixed = register(&mut h, A, &[rw_frame]);
    let ro_again = h.resolver.frame(0x9000_0000, 0x1000);
    assert!(matches!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory {
                extend: Some(mixed)
            },
            &[ro_again]
        ),
        Reply::Memory { pages: 2, .. }
    ));
    assert_eq!(
        call(&mut h, A, &map(d, 0x300, mixed, 0, 1), &[]),
        ERR(ErrorCode::NotPermitted)
    );
    assert_eq!(stats(&mut h), (3, 4));
}

#[test]
fn a_retired_client_is_refused_for_good() {
    let mut h = handler();
    hello(&mut h, A);
    let d = domain(&mut h, A);
    assert!(h.retire_client(A).is_ok());
    for req in [
        Request::Hello {
            min_version: 1,
            max_version: 1,
        },
        Request::Stats,
        Request::AllocDomain,
        Request::FreeDomain { domain: d },
    ] {
        assert_eq!(
            call(&mut h, A, &req, &[]),
            ERR(ErrorCode::NotPermitted),
            "{req:?}"
        );
    }
    // A cap it sends is released, not kept.
    let f = h.resolver.frame(0x1000, 0x1000);
    assert_eq!(
        call(&mut h, A, &Request::RegisterMemory { extend: None }, &[f]),
        ERR(ErrorCode::NotPermitted)
    );
    assert!(h.resolver().is_released(f));
    // The hot path too.
    let mut out = [0u64; FASTPATH_WORDS];
    let mut words = [0u64; FASTPATH_WORDS];
    let n = pack_words(
        &{
            let mut buf = [0u8; MSG_MAX_BYTES];
            let n = encode(&Request::Faults { max: 1 }, &mut buf).unwrap();
            buf[..n].to_vec()
        },
        &mut words,
    )
    .unwrap();
    assert_eq!(h.handle_registers(A, &words[..n], &mut out), None);
    // Retiring again changes nothing; B is untouched.
    assert_eq!(h.retire_client(A), Ok(Retired::default()));
    hello(&mut h, B);
}

#[test]
fn the_cheap_page_table_bound_counts_each_block_touched_once() {
    // A page inside one 2 MiB, one 1 GiB and one 512 GiB block: a leaf
    // table (1 page), a level-2 and a level-1 table (2 pages each).
    assert_eq!(mapping::blocks_touched(0, 1), 5);
    assert_eq!(mapping::blocks_touched(511, 1), 5);
    // The last page of a 2 MiB block and the first of the next.
    assert_eq!(mapping::blocks_touched(511, 2), 6);
    // A whole 2 MiB block, exactly.
    assert_eq!(mapping::blocks_touched(512, 512), 5);
    // Across a 1 GiB boundary: two leaf tables, two level-2 tables.
    assert_eq!(mapping::blocks_touched((1 << 18) - 1, 2), 2 + 4 + 2);
}

#[test]
fn the_pieces_a_partial_unmap_leaves_keep_their_place_in_the_memory() {
    let mut h = handler();
    hello(&mut h, A);
    let d = domain(&mut h, A);
    let f = h.resolver.frame(0x4000_0000, 0x8000);
    let m = register(&mut h, A, &[f]);
    assert_eq!(call(&mut h, A, &map(d, 0x100, m, 2, 6), &[]), Reply::Ok);
    // Unmap the middle: a head (memory pages 2-3) and a tail (6-7) stay.
    let unmap = Request::Unmap {
        domain: d,
        iova_pfn: 0x102,
        pages: 2,
    };
    assert_eq!(call(&mut h, A, &unmap, &[]), Reply::Ok);
    let frames: BTreeMap<u64, u64> = (0..8).map(|i| (0x4_0000 + i, 0)).collect();
    check_translation_invariant(&h, &frames);
    let c = &h.clients[0];
    let mut pieces: StdVec<(u64, u64, u64)> = c
        .mappings
        .iter()
        .map(|r| (r.iova_pfn, r.pages, r.offset_pfn))
        .collect();
    pieces.sort_unstable();
    assert_eq!(pieces, [(0x100, 2, 2), (0x104, 2, 6)]);
}

/// A memory's frames merge into physically contiguous runs; a map that
/// starts inside one run and crosses into others takes each page from the
/// frame the offset names, and no page past the range.
#[test]
fn maps_across_runs_take_each_page_from_its_own_frame() {
    let mut h = handler();
    hello(&mut h, A);
    let d = domain(&mut h, A);
    // Runs: pages 0-1 at 0x4000_0000 (two adjacent frames), 2-3 at
    // 0x5000_0000, 4 at 0x6000_0000.
    let caps = [
        h.resolver.frame(0x4000_0000, 0x1000),
        h.resolver.frame(0x4000_1000, 0x1000),
        h.resolver.frame(0x5000_0000, 0x2000),
        h.resolver.frame(0x6000_0000, 0x1000),
    ];
    let m = register(&mut h, A, &caps);
    let mut frames: BTreeMap<u64, u64> = BTreeMap::new();
    for (base, n) in [(0x4_0000u64, 2u64), (0x5_0000, 2), (0x6_0000, 1)] {
        for i in 0..n {
            frames.insert(base + i, 0);
        }
    }
    for (iova_pfn, offset, pages) in [(0x100, 1, 4), (0x200, 1, 2), (0x300, 3, 2), (0x400, 0, 5)] {
        assert_eq!(
            call(&mut h, A, &map(d, iova_pfn, m, offset, pages), &[]),
            Reply::Ok,
            "offset {offset} pages {pages}"
        );
        check_translation_invariant(&h, &frames);
    }
    // Past the memory's last page: refused, nothing mapped.
    assert_eq!(
        call(&mut h, A, &map(d, 0x500, m, 4, 2), &[]),
        ERR(ErrorCode::OutOfRange)
    );
    check_translation_invariant(&h, &frames);

    // Frames that follow each other in the memory but not upwards in
    // physical memory (one below the other, one frame twice) are runs of
    // their own.
    let caps = [
        h.resolver.frame(0x7000_1000, 0x1000),
        h.resolver.frame(0x7000_0000, 0x1000),
        h.resolver.frame(0x7000_0000, 0x1000),
    ];
    let m = register(&mut h, A, &caps);
    frames.insert(0x7_0000, 0);
    frames.insert(0x7_0001, 0);
    assert_eq!(call(&mut h, A, &map(d, 0x600, m, 0, 3), &[]), Reply::Ok);
    check_translation_invariant(&h, &frames);
}

/// A "frame" the resolver describes oddly is refused whole and released:
/// empty, not whole pages, not page aligned, wrapping the address space;
/// and a memory may not grow past 2^32 pages (offsets on the wire are u32).
#[test]
fn odd_frames_and_oversized_memory_are_refused() {
    let mut h = handler();
    hello(&mut h, A);
    for (paddr, size) in [
        (0x4000_0000u64, 0u64),
        (0x4000_0000, 0x1800),
        (0x4000_0800, 0x1000),
        (!0xfff, 0x2000),
    ] {
        let cap = h.resolver.frame(paddr, size);
        assert_eq!(
            call(&mut h, A, &Request::RegisterMemory { extend: None }, &[cap]),
            ERR(ErrorCode::BadCapability),
            "{paddr:#x}+{size:#x}"
        );
        assert!(h.resolver().is_released(cap));
    }
    // 2^32 - 1 pages fit; one page more does not.
    let big = h.resolver.frame(0, (u64::from(u32::MAX)) << 12);
    let m = register(&mut h, A, &[big]);
    let one = h.resolver.frame(0x1_0000_0000_0000, 0x1000);
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory { extend: Some(m) },
            &[one]
        ),
        ERR(ErrorCode::OutOfRange)
    );
    assert!(h.resolver().is_released(one));
}

/// One memory holds at most MAX_FRAMES frames, even when the client's
/// frame quota would allow more.
#[test]
fn a_memory_holds_at_most_max_frames() {
    static ROOMY: [ClientPolicy; 1] = [ClientPolicy {
        name: "roomy",
        badge: 0xa,
        streams: &[StreamGrant::new(StreamId(8))],
        quotas: Quotas {
            memory_frames: MAX_FRAMES as u32 + 8,
            ..QUOTAS
        },
    }];
    let mut h = std::boxed::Box::new(
        Handler::new(
            RefCore::with_ssid_bits(4),
            FakeFrames::new(),
            Policy::new(&ROOMY),
        )
        .unwrap(),
    );
    h.grant_everything();
    hello(&mut h, A);
    let caps: StdVec<ReceivedCap> = (0..MAX_FRAMES as u64)
        .map(|i| h.resolver.frame(0x4000_0000 + i * 0x1000, 0x1000))
        .collect();
    let m = register(&mut h, A, &caps);
    let one_more = h.resolver.frame(0x5000_0000, 0x1000);
    assert_eq!(
        call(
            &mut h,
            A,
            &Request::RegisterMemory { extend: Some(m) },
            &[one_more]
        ),
        ERR(ErrorCode::QuotaExceeded)
    );
    assert!(h.resolver().is_released(one_more));
    // A new memory takes a frame.
    let again = h.resolver.frame(0x5000_0000, 0x1000);
    register(&mut h, A, &[again]);
}
