//! Allocation failure everywhere, through the request handler.
//!
//! For N = 1, 2, 3, … the N-th allocation of table or queue memory fails
//! during one client request (alloc domain, attach of a new stream, attach
//! that moves a stream, attach of a substream, maps that need new tables at
//! every level, a map of memory made of several frames, a map batch, SVA
//! binds, an unmap that splits a block), until N is past every allocation
//! the request makes. Each failing request must answer `NoMemory` and leave
//! everything exactly as before: the model's live memory blocks, the ASIDs,
//! every domain's tables and ASID, every stream's attachment, every
//! translation the devices can reach, and both clients' usage and quotas.
//!
//! `model_events.rs::allocation_failures_roll_back` does this for the core
//! alone with one fixed sequence; `client_props.rs` injects failures at
//! random points. This test is the exhaustive one, per request kind, with a
//! full snapshot. (There is no separate ASID-change request: ASIDs change
//! only with alloc/free domain and attach, covered here. Attaching another
//! substream of an attached stream allocates nothing here: its CD table
//! came with the stream's first attach, which is covered.)

#[path = "client_support.rs"]
mod support;

use iommu_client::{Error, ErrorCode, Perms, Region, Ssid, StreamId};
use iommu_protocol::{ClientStats, DomainId, MemoryHandle};
use smmu_model::{Access, LiveBlock, Machine};
use support::*;

const SSID_BITS: u8 = 3;

/// What the test compares before and after a failed request.
#[derive(Debug, PartialEq)]
struct Snapshot {
    live_blocks: Vec<LiveBlock>,
    live_bytes: usize,
    asids: u32,
    domains: Vec<(iommu_server::DomainId, iommu_server::DomainInfo)>,
    attached: Vec<Option<iommu_server::DomainId>>,
    translations: Vec<Option<(u64, Option<u16>)>>,
    a: ClientStats,
    b: ClientStats,
}

const IOVAS: [u64; 8] = [
    0x10_0000,
    0x10_1000,
    0x4000_0000,
    0x4000_1000,
    0x1_0000_0000,
    0x20_0000_0000,
    0x30_0000_0000,
    0x31_0000_0000,
];

fn snapshot(m: &Machine, s: &Server, a: &mut Client, b: &mut Client) -> Snapshot {
    let h = s.borrow();
    let core = h.core();
    let domains: Vec<_> = core
        .domains()
        .map(|d| (d, core.domain_info(d).unwrap()))
        .collect();
    let mut attached = Vec::new();
    let mut translations = Vec::new();
    for sid in [SID_A, SID_A2, SID_B] {
        for ssid in 0..4u32 {
            attached.push(core.attached_domain(sid, ssid));
            for iova in IOVAS {
                let ssid = (ssid != 0).then_some(ssid);
                translations.push(
                    m.smmu
                        .probe(sid, ssid, iova, Access::READ)
                        .ok()
                        .map(|t| (t.paddr, t.asid)),
                );
            }
        }
    }
    let asids = core.asids_in_use();
    drop(h);
    Snapshot {
        live_blocks: m.mem.live_blocks(),
        live_bytes: m.mem.stats().live_bytes,
        asids,
        domains,
        attached,
        translations,
        a: a.stats().unwrap(),
        b: b.stats().unwrap(),
    }
}

/// The state every request starts from: A has a domain with a stream
/// attached and mappings (pages and a 2 MiB block), an empty domain, and
/// three memory registrations (small, 2 MiB, two scattered frames); B has
/// its own domain, stream and mapping.
struct Base {
    m: Machine,
    s: Server,
    a: Client,
    b: Client,
    d1: DomainId,
    d2: DomainId,
    small: MemoryHandle,
    big: MemoryHandle,
    scattered: MemoryHandle,
}

fn base(ssid_bits: u8) -> Base {
    let (m, s) = server_with(ssid_bits);
    let mut a = connect(&s, A);
    let mut b = connect(&s, B);
    let d1 = a.alloc_domain().unwrap();
    let d2 = a.alloc_domain().unwrap();
    let (_, cap) = frame(&m, &s, 0x4000);
    let small = a.register_memory(&[cap]).unwrap().handle;
    let (_, cap) = frame(&m, &s, 0x20_0000);
    let big = a.register_memory(&[cap]).unwrap().handle;
    let (_, c1) = frame(&m, &s, 0x1000);
    let (_, c2) = frame(&m, &s, 0x1000);
    let scattered = a.register_memory(&[c1, c2]).unwrap().handle;
    a.map(d1, 0x10_0000, small, 0, 0x2000, Perms::RW).unwrap();
    a.map(d1, 0x4000_0000, big, 0, 0x20_0000, Perms::RW)
        .unwrap();
    a.attach(StreamId(SID_A), Ssid(0), d1).unwrap();
    let db = b.alloc_domain().unwrap();
    let (_, cap) = frame(&m, &s, 0x1000);
    let mb = b.register_memory(&[cap]).unwrap().handle;
    b.map(db, 0x10_0000, mb, 0, 0x1000, Perms::RW).unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db).unwrap();
    Base {
        m,
        s,
        a,
        b,
        d1,
        d2,
        small,
        big,
        scattered,
    }
}

type Request = fn(&mut Base) -> Result<(), Error>;

/// Requests, each on a QEMU-like SMMU (no substreams, 0) or one with
/// substreams.
const REQUESTS: &[(&str, u8, Request)] = &[
    ("alloc domain", 0, |x| x.a.alloc_domain().map(|_| ())),
    ("attach a new stream", 0, |x| {
        x.a.attach(StreamId(SID_A2), Ssid(0), x.d2)
    }),
    ("attach moving a stream", 0, |x| {
        x.a.attach(StreamId(SID_A), Ssid(0), x.d2)
    }),
    ("map needing tables at every level", 0, |x| {
        x.a.map(x.d2, 0x20_0000_0000, x.small, 0, 0x1000, Perms::RW)
    }),
    ("map of a 2 MiB block", 0, |x| {
        x.a.map(x.d1, 0x1_0000_0000, x.big, 0, 0x20_0000, Perms::READ)
    }),
    ("map of two scattered frames", 0, |x| {
        x.a.map(x.d2, 0x20_0000_0000, x.scattered, 0, 0x2000, Perms::RW)
    }),
    ("map batch over three 1 GiB regions", 0, |x| {
        let r = |iova, memory, len| Region {
            iova,
            memory,
            offset: 0,
            len,
            perms: Perms::RW,
        };
        x.a.map_batch(
            x.d1,
            &[
                r(0x20_0000_0000, x.small, 0x1000),
                r(0x30_0000_0000, x.scattered, 0x2000),
                r(0x31_0000_0000, x.big, 0x20_0000),
            ],
        )
    }),
    ("bind SVA", 0, |x| {
        x.a.bind_sva(StreamId(SID_A2), Ssid(0)).map(|_| ())
    }),
    ("bind SVA to a substream", SSID_BITS, |x| {
        x.a.bind_sva(StreamId(SID_A), Ssid(3)).map(|_| ())
    }),
    ("unmap splitting a 2 MiB block", 0, |x| {
        x.a.unmap(x.d1, 0x4000_1000, 0x1000)
    }),
];

#[test]
fn every_allocation_failure_leaves_everything_as_it_was() {
    let mut report = Vec::new();
    for &(name, ssid_bits, request) in REQUESTS {
        let mut failed_at = Vec::new();
        let mut n = 1;
        loop {
            let mut x = base(ssid_bits);
            let before = snapshot(&x.m, &x.s, &mut x.a, &mut x.b);
            let failures = x.m.mem.stats().failures;
            let commands = x.m.smmu.counters().commands;
            x.m.mem.fail_nth_alloc(n);
            let result = request(&mut x);
            x.m.mem.clear_failures();
            let injected = x.m.mem.stats().failures > failures;
            match result {
                Err(e) => {
                    assert!(injected, "{name}: N = {n}: failed without a failure: {e:?}");
                    assert_eq!(
                        e,
                        Error::Iommu(ErrorCode::NoMemory),
                        "{name}: N = {n}: wrong error"
                    );
                    let after = snapshot(&x.m, &x.s, &mut x.a, &mut x.b);
                    assert_eq!(before, after, "{name}: N = {n}: state changed");
                    assert!(x.m.smmu.violations().is_empty(), "{name}: N = {n}");
                    assert_eq!(x.s.borrow().resolver().double_releases(), 0);
                    failed_at.push(n);
                }
                Ok(()) => {
                    // Past the last allocation: the request made n - 1.
                    assert!(
                        !injected,
                        "{name}: N = {n}: succeeded although an allocation failed"
                    );
                    assert!(x.m.smmu.counters().commands >= commands);
                    break;
                }
            }
            n += 1;
            assert!(n < 64, "{name}: more than 64 allocations?");
        }
        assert!(
            !failed_at.is_empty(),
            "{name}: allocates nothing, so the test shows nothing"
        );
        report.push(format!("{name}: {} allocations", failed_at.len()));
    }
    println!("{}", report.join("\n"));
}
