//! Allocation failure everywhere, on the concurrent core (`SharedSmmu`,
//! the one with ASID reassignment and recycling under the ASID lock).
//!
//! For N = 1, 2, … the N-th table allocation fails during each operation
//! (alloc domain, SVA space, attach of a new stream, attach that moves a
//! stream, attach that must recycle another domain's ASID, SVA bind, map
//! needing tables), until N is past every allocation it makes. A failing
//! operation must return `NoMemory` and leave everything as it was: live
//! memory blocks, ASIDs in use, every domain's ASID and translations, every
//! stream's attachment and what every device reaches; and DESIGN.md 5's
//! invariants must hold (the shared checker). ASID reassignment allocates
//! no table memory: shown by N = 1 not being consumed.
//!
//! An attach or SVA bind that must recycle an idle domain's ASID
//! allocates the stream's CD memory first, so a failed allocation leaves
//! every ASID where it was too.

#[path = "shared_support/mod.rs"]
mod support;

use iommu_server::sync::StdLocks;
use iommu_server::{DomainId, Error, Perms};
use smmu_model::{Access, LiveBlock, Machine};
use support::{boot_with, Checker, Checks, Trace};

type Core = support::Core<StdLocks>;

/// (StreamID, SSID) pairs the test programs.
/// (The shared invariant checker reads single-CD streams: no substreams.)
const UNIVERSE: [(u32, u32); 4] = [(1, 0), (2, 0), (3, 0), (4, 0)];
const IOVAS: [u64; 4] = [0x10_0000, 0x10_1000, 0x4000_0000, 0x20_0000_0000];

/// A domain's ASID and what it translates at [`IOVAS`].
type DomainView = (Result<u16, Error>, Vec<Option<(u64, Perms)>>);

#[derive(Debug, PartialEq)]
struct Snapshot {
    live: Vec<LiveBlock>,
    asids: u32,
    domains: Vec<DomainView>,
    attached: Vec<Option<DomainId>>,
    reach: Vec<Option<(u64, Option<u16>)>>,
}

fn snapshot(m: &Machine, core: &Core, ids: &[DomainId]) -> Snapshot {
    Snapshot {
        live: m.mem.live_blocks(),
        asids: core.asids_in_use(),
        domains: ids
            .iter()
            .map(|&d| {
                (
                    core.domain_asid(d),
                    IOVAS.iter().map(|&i| core.iova_to_phys(d, i)).collect(),
                )
            })
            .collect(),
        attached: UNIVERSE
            .iter()
            .map(|&(s, ss)| core.attached_domain(s, ss))
            .collect(),
        reach: UNIVERSE
            .iter()
            .flat_map(|&(s, ss)| {
                IOVAS.iter().map(move |&i| {
                    m.smmu
                        .probe(s, (core.ssid_bits() != 0).then_some(ss), i, Access::READ)
                        .ok()
                        .map(|t| (t.paddr, t.asid))
                })
            })
            .collect(),
    }
}

/// Two ASIDs only (1 and 2): d1 attached to stream 1, d2 idle (stream 2
/// detached again, so its ASID may be recycled), d3 without devices, an
/// SVA space not bound yet.
struct Base {
    m: Machine,
    core: Core,
    ids: Vec<DomainId>,
    space: DomainId,
}

/// (The shared support gives 4 domain slots: the SVA space only where the
/// operation needs it.)
fn base(with_space: bool) -> Base {
    let (m, core) = boot_with::<StdLocks>(3, 0);
    let d1 = core.alloc_domain().unwrap();
    let d2 = core.alloc_domain().unwrap();
    let d3 = core.alloc_domain().unwrap();
    let pa = m.mem.alloc_buffer(0x2000, 0x1000).unwrap();
    core.map(d1, 0x10_0000, pa, 0x2000, Perms::RW).unwrap();
    core.map(d2, 0x10_0000, pa, 0x1000, Perms::READ).unwrap();
    core.attach(1, 0, d1).unwrap();
    core.attach(2, 0, d2).unwrap();
    core.detach(2, 0).unwrap();
    let mut ids = vec![d1, d2, d3];
    let space = if with_space {
        let space = core.alloc_sva_space(None).unwrap();
        ids.push(space);
        space
    } else {
        d3
    };
    Base {
        m,
        core,
        ids,
        space,
    }
}

type Op = fn(&Base) -> Result<(), Error>;

const OPS: &[(&str, Op)] = &[
    ("alloc domain", |b| b.core.alloc_domain().map(|_| ())),
    ("alloc SVA space", |b| {
        b.core.alloc_sva_space(None).map(|_| ())
    }),
    ("attach a new stream", |b| b.core.attach(3, 0, b.ids[0])),
    ("attach moving a stream", |b| b.core.attach(1, 0, b.ids[1])),
    ("attach recycling an idle domain's ASID", |b| {
        b.core.attach(3, 0, b.ids[2])
    }),
    ("map needing tables at every level", |b| {
        b.core
            .map(b.ids[0], 0x20_0000_0000, 0x8010_0000, 0x1000, Perms::RW)
    }),
    ("SVA bind", |b| b.core.bind_sva(4, 0, b.space)),
];

#[test]
fn every_allocation_failure_leaves_the_shared_core_as_it_was() {
    let mut report = Vec::new();
    for &(name, op) in OPS {
        let mut failed = 0;
        for n in 1..64 {
            let b = base(name.starts_with("SVA bind"));
            let before = snapshot(&b.m, &b.core, &b.ids);
            let failures = b.m.mem.stats().failures;
            b.m.mem.fail_nth_alloc(n);
            let r = op(&b);
            b.m.mem.clear_failures();
            let injected = b.m.mem.stats().failures > failures;
            let checker = Checker::new(&b.m, UNIVERSE.to_vec(), Checks::ALL);
            checker.check(&b.m, &b.core, &Trace::default(), name);
            match r {
                Err(e) => {
                    assert!(injected, "{name}: N = {n}: {e:?} without a failure");
                    assert_eq!(e, Error::NoMemory, "{name}: N = {n}");
                    let after = snapshot(&b.m, &b.core, &b.ids);
                    assert_eq!(before, after, "{name}: N = {n}: state changed");
                    failed += 1;
                }
                Ok(()) => {
                    assert!(!injected, "{name}: N = {n}: succeeded past a failure");
                    break;
                }
            }
        }
        assert!(failed > 0, "{name}: allocates nothing");
        report.push(format!("{name}: {failed} allocations"));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn asid_reassignment_allocates_no_table_memory() {
    let b = base(false);
    let before = b.m.mem.live_blocks();
    b.m.mem.fail_nth_alloc(1);
    let old = b.core.domain_asid(b.ids[0]).unwrap();
    let new = b.core.reassign_asid(b.ids[0]).unwrap();
    assert_eq!(b.m.mem.stats().failures, 0, "reassignment allocated");
    b.m.mem.clear_failures();
    assert_ne!(old, new);
    assert_eq!(b.m.mem.live_blocks(), before);
    let checker = Checker::new(&b.m, UNIVERSE.to_vec(), Checks::ALL);
    checker.check(&b.m, &b.core, &Trace::default(), "reassign");
    assert_eq!(
        b.m.smmu
            .probe(1, None, 0x10_0000, Access::READ)
            .map(|t| t.asid),
        Ok(Some(new))
    );
}
