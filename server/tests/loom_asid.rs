//! Model checking of the ASID lock model (DESIGN.md 5) with loom: real
//! threads running the concurrent core (`iommu_server::shared`) against the
//! software SMMUv3 model, in every interleaving of their lock operations up
//! to a preemption bound. After every operation and at the end, the
//! invariants are checked from what the SMMU would fetch and what its
//! caches hold (`loom_support::Checker`); after every detach and unmap the
//! thread checks that its device no longer reaches the old translation.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! iommu-server --release --test loom_asid -- --nocapture --test-threads=1`.
//! `IOMMU_LOOM_PREEMPTIONS=3` widens the search (default 2).
//!
//! The seed's race: with the pre-fix attach ordering (device off the old
//! domain's list before the ASID lock), loom finds an execution where one
//! ASID names two translations, and prints it; with the design's ordering,
//! the same scenario passes in every execution.
#![cfg(loom)]

mod shared_support;

use std::sync::Arc;

use iommu_server::shared::AttachOrder;
use iommu_server::Error;
use shared_support::*;

const DEFAULT_BOUND: usize = 2;

/// The seed's race, SVA flavour (Linux's `arm_smmu_share_asid`): T1 moves
/// s1 from X to Y while T2 binds s2 to an SVA space whose ASID is pinned to
/// X's, so T2 moves X to a fresh ASID (rewriting X's CDs) and takes X's.
fn seed_sva(order: AttachOrder, checks: Checks) {
    let (m, mut core) = boot(4, 0);
    core.set_attach_order(order);
    let (s1, s2) = (1, 2);
    let x = core.alloc_domain().unwrap();
    let y = core.alloc_domain().unwrap();
    let pa_x = map_page(&m, &core, x);
    let pa_y = map_page(&m, &core, y);
    core.attach(s1, 0, x).unwrap();
    let a = core.domain_asid(x).unwrap();
    let space = core.alloc_sva_space(Some(a)).unwrap();
    let pa_s = map_page(&m, &core, space);
    // s1's DMA fills the TLB with (ASID a, IOVA -> pa_x).
    assert_eq!(reach(&m, &core, s1, 0), Some(pa_x));
    let checker = Checker::new(&m, vec![(s1, 0), (s2, 0)], checks);
    let trace = Trace::default();
    trace.note(
        &m,
        "setup",
        format_args!("X {x:?} ASID {a} has s1; Y {y:?}; SVA space {space:?} pinned to ASID {a}"),
    );
    let w = Arc::new((m, core, checker, trace));

    let t1 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            tr.note(
                m,
                "T1",
                format_args!("attach s1 -> Y (move from X) begins ({order:?} ordering)"),
            );
            let r = core.attach(s1, 0, y);
            tr.note(m, "T1", format_args!("attach s1 -> Y returned {r:?}"));
            ch.check(m, core, tr, "after T1's attach");
            if r.is_ok() {
                assert_eq!(
                    reach(m, core, s1, 0),
                    Some(pa_y),
                    "invariant 3: s1 after its move"
                );
            }
        })
    };
    let t2 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            tr.note(m, "T2", "bind_sva s2 -> space (takes X's ASID) begins");
            let r = core.bind_sva(s2, 0, space);
            tr.note(
                m,
                "T2",
                format_args!(
                    "bind_sva returned {r:?}; X now has ASID {:?}",
                    core.domain_asid(x)
                ),
            );
            ch.check(m, core, tr, "after T2's bind_sva");
            if r.is_ok() {
                assert_eq!(reach(m, core, s2, 0), Some(pa_s), "s2 reaches the space");
            }
        })
    };
    t1.join().unwrap();
    t2.join().unwrap();
    let (m, core, ch, tr) = &*w;
    ch.check(m, core, tr, "at the end");
}

/// The seed's race, recycling flavour: two ASIDs, both in use (X has s1,
/// Y has s3). T1 moves s1 from X to Y while T2 attaches s2 to Z, which has
/// no ASID: T2 recycles the ASID of a domain whose device list is empty.
fn seed_recycle(order: AttachOrder, checks: Checks) {
    let (m, mut core) = boot(3, 0);
    core.set_attach_order(order);
    let (s1, s2, s3) = (1, 2, 3);
    let x = core.alloc_domain().unwrap();
    let y = core.alloc_domain().unwrap();
    let z = core.alloc_domain().unwrap();
    let pa_x = map_page(&m, &core, x);
    let pa_y = map_page(&m, &core, y);
    let pa_z = map_page(&m, &core, z);
    core.attach(s1, 0, x).unwrap();
    core.attach(s3, 0, y).unwrap();
    assert_eq!(reach(&m, &core, s1, 0), Some(pa_x));
    let checker = Checker::new(&m, vec![(s1, 0), (s2, 0), (s3, 0)], checks);
    let trace = Trace::default();
    trace.note(
        &m,
        "setup",
        format_args!(
            "X {x:?} ASID {:?} has s1; Y {y:?} ASID {:?} has s3; Z {z:?} has no ASID; no ASID free",
            core.domain_asid(x),
            core.domain_asid(y)
        ),
    );
    let w = Arc::new((m, core, checker, trace));
    let t1 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            tr.note(
                m,
                "T1",
                format_args!("attach s1 -> Y (move from X) begins ({order:?} ordering)"),
            );
            let r = core.attach(s1, 0, y);
            tr.note(m, "T1", format_args!("attach s1 -> Y returned {r:?}"));
            ch.check(m, core, tr, "after T1's attach");
            if r.is_ok() {
                assert_eq!(
                    reach(m, core, s1, 0),
                    Some(pa_y),
                    "invariant 3: s1 after its move"
                );
            }
        })
    };
    let t2 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            tr.note(
                m,
                "T2",
                "attach s2 -> Z (needs an ASID: recycles an idle domain's) begins",
            );
            let r = core.attach(s2, 0, z);
            tr.note(
                m,
                "T2",
                format_args!(
                    "attach s2 -> Z returned {r:?}; ASIDs now X {:?}, Z {:?}",
                    core.domain_asid(x),
                    core.domain_asid(z)
                ),
            );
            assert!(matches!(r, Ok(()) | Err(Error::NoAsid)), "{r:?}");
            ch.check(m, core, tr, "after T2's attach");
            if r.is_ok() {
                assert_eq!(reach(m, core, s2, 0), Some(pa_z), "s2 reaches Z");
            }
        })
    };
    t1.join().unwrap();
    t2.join().unwrap();
    let (m, core, ch, tr) = &*w;
    ch.check(m, core, tr, "at the end");
}

/// Invariant 1 only: the pre-fix ordering breaks invariant 2 by
/// construction inside its window (that is the bug); the question is
/// whether it also lets one ASID name two translations.
const INV1: Checks = Checks {
    inv1: true,
    inv2: false,
    inv4: false,
};

fn payload(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// Runs `scenario` with the pre-fix ordering, which must fail with an
/// invariant-1 violation; prints the report.
fn expect_seed_race(name: &str, scenario: fn(AttachOrder, Checks)) {
    let before = EXECUTIONS.load(std::sync::atomic::Ordering::Relaxed);
    let r = std::panic::catch_unwind(|| {
        explore(DEFAULT_BOUND, move || scenario(AttachOrder::SeedRace, INV1))
    });
    let n = EXECUTIONS.load(std::sync::atomic::Ordering::Relaxed) - before;
    match r {
        Ok(n) => {
            panic!("{name}: the pre-fix ordering passed all {n} executions: this test cannot fail")
        }
        Err(p) => {
            let msg = payload(&*p);
            println!(
                "SEED RACE, {name}, PRE-FIX ORDERING: violation found in execution {n}:\n{msg}\n\
                 -- how: T1's attach took s1 off X's device list before the ASID lock, its CD still\n\
                 -- carrying X's ASID; T2 changed X's ASID in that window, rewrote the CDs on X's list\n\
                 -- (none: no CFGI_CD for StreamID 1 above), invalidated and freed the ASID, and gave\n\
                 -- it to another translation while s1's CD still named it.\n-- end of report"
            );
            assert!(
                msg.contains("invariant 1"),
                "expected invariant 1, got: {msg}"
            );
        }
    }
}

/// Runs `scenario` with the design's ordering: invariant 1 alone, then all.
fn expect_no_race(name: &str, scenario: fn(AttachOrder, Checks)) {
    let n = explore(DEFAULT_BOUND, move || scenario(AttachOrder::Fixed, INV1));
    println!("SEED RACE, {name}, FIXED ORDERING: invariant 1 held in all {n} executions");
    let n = explore(DEFAULT_BOUND, move || {
        scenario(AttachOrder::Fixed, Checks::ALL)
    });
    println!("SEED RACE, {name}, FIXED ORDERING: invariants 1-4 held in all {n} executions");
}

#[test]
fn seed_race_sva_prefix_ordering_violates_invariant_1() {
    expect_seed_race("SVA sharing", seed_sva);
}

#[test]
fn seed_race_sva_fixed_ordering_holds() {
    expect_no_race("SVA sharing", seed_sva);
}

#[test]
fn seed_race_recycle_prefix_ordering_violates_invariant_1() {
    expect_seed_race("ASID recycling", seed_recycle);
}

#[test]
fn seed_race_recycle_fixed_ordering_holds() {
    expect_no_race("ASID recycling", seed_recycle);
}

/// ≥3 threads over 2 domains and an SVA space: a move then a detach, ASID
/// reassignment of X and of Y, SVA bind then unbind; all invariants.
fn move_reassign_sva() {
    let (m, core) = boot(4, 0);
    let (s1, s2, s3) = (1, 2, 3);
    let x = core.alloc_domain().unwrap();
    let y = core.alloc_domain().unwrap();
    let pa_x = map_page(&m, &core, x);
    let pa_y = map_page(&m, &core, y);
    core.attach(s1, 0, x).unwrap();
    core.attach(s3, 0, y).unwrap();
    let a = core.domain_asid(x).unwrap();
    let space = core.alloc_sva_space(Some(a)).unwrap();
    let pa_s = map_page(&m, &core, space);
    assert_eq!(reach(&m, &core, s1, 0), Some(pa_x));
    assert_eq!(reach(&m, &core, s3, 0), Some(pa_y));
    let checker = Checker::new(&m, vec![(s1, 0), (s2, 0), (s3, 0)], Checks::ALL);
    let w = Arc::new((m, core, checker, Trace::default()));

    let t1 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.attach(s1, 0, y);
            tr.note(m, "T1", format_args!("attach s1 -> Y: {r:?}"));
            ch.check(m, core, tr, "after T1's attach");
            assert_eq!(
                reach(m, core, s1, 0),
                Some(pa_y),
                "invariant 3: s1 after its move"
            );
            let r = core.detach(s1, 0);
            tr.note(m, "T1", format_args!("detach s1: {r:?}"));
            ch.check(m, core, tr, "after T1's detach");
            assert_eq!(reach(m, core, s1, 0), None, "invariant 3: s1 after detach");
        })
    };
    let t2 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.reassign_asid(x);
            tr.note(m, "T2", format_args!("reassign X: {r:?}"));
            assert!(matches!(r, Ok(_) | Err(Error::NoAsid)), "{r:?}");
            ch.check(m, core, tr, "after T2's reassign of X");
            let r = core.reassign_asid(y);
            tr.note(m, "T2", format_args!("reassign Y: {r:?}"));
            assert!(matches!(r, Ok(_) | Err(Error::NoAsid)), "{r:?}");
            ch.check(m, core, tr, "after T2's reassign of Y");
            assert_eq!(reach(m, core, s3, 0), Some(pa_y), "s3 stays on Y");
        })
    };
    let t3 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.bind_sva(s2, 0, space);
            tr.note(m, "T3", format_args!("bind_sva s2: {r:?}"));
            ch.check(m, core, tr, "after T3's bind");
            if r.is_ok() {
                assert_eq!(reach(m, core, s2, 0), Some(pa_s), "s2 reaches the space");
                let r = core.unbind_sva(s2, 0);
                tr.note(m, "T3", format_args!("unbind_sva s2: {r:?}"));
                r.unwrap();
                ch.check(m, core, tr, "after T3's unbind");
                assert_eq!(reach(m, core, s2, 0), None, "invariant 3: s2 after unbind");
            }
        })
    };
    for t in [t1, t2, t3] {
        t.join().unwrap();
    }
    let (m, core, ch, tr) = &*w;
    ch.check(m, core, tr, "at the end");
}

#[test]
fn move_reassign_sva_all_invariants() {
    let n = explore(DEFAULT_BOUND, move_reassign_sva);
    println!("move/reassign/SVA (3 threads): invariants 1-4 held in all {n} executions");
}

/// ASID recycling (2 ASIDs for 3 domains) against unmap/map: T1 attaches
/// to a domain without an ASID (recycles the idle Y's), T2 re-attaches to
/// Y (recycles again or finds none), T3 unmaps and remaps X's page.
fn recycle_unmap() {
    let (m, core) = boot(3, 0);
    let (s1, s2, s3) = (1, 2, 3);
    let x = core.alloc_domain().unwrap();
    let y = core.alloc_domain().unwrap();
    let z = core.alloc_domain().unwrap();
    let pa_x = map_page(&m, &core, x);
    let pa_y = map_page(&m, &core, y);
    let pa_z = map_page(&m, &core, z);
    let pa_x2 = m.mem.alloc_buffer(4096, 4096).unwrap();
    core.attach(s1, 0, x).unwrap();
    core.attach(s3, 0, y).unwrap();
    assert_eq!(reach(&m, &core, s3, 0), Some(pa_y));
    core.detach(s3, 0).unwrap(); // Y idle, still holding ASID 2
    assert_eq!(reach(&m, &core, s1, 0), Some(pa_x));
    assert_eq!(core.asids_in_use(), 2);
    let checker = Checker::new(&m, vec![(s1, 0), (s2, 0), (s3, 0)], Checks::ALL);
    let w = Arc::new((m, core, checker, Trace::default()));

    let t1 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.attach(s2, 0, z);
            tr.note(m, "T1", format_args!("attach s2 -> Z: {r:?}"));
            assert!(matches!(r, Ok(()) | Err(Error::NoAsid)), "{r:?}");
            ch.check(m, core, tr, "after T1's attach");
            if r.is_ok() {
                assert_eq!(reach(m, core, s2, 0), Some(pa_z));
            }
        })
    };
    let t2 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.attach(s3, 0, y);
            tr.note(m, "T2", format_args!("attach s3 -> Y: {r:?}"));
            assert!(matches!(r, Ok(()) | Err(Error::NoAsid)), "{r:?}");
            ch.check(m, core, tr, "after T2's attach");
            if r.is_ok() {
                assert_eq!(reach(m, core, s3, 0), Some(pa_y));
            }
        })
    };
    let t3 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.unmap(x, IOVA, 4096);
            tr.note(m, "T3", format_args!("unmap X: {r:?}"));
            assert_eq!(r, Ok(4096));
            ch.check(m, core, tr, "after T3's unmap");
            assert_eq!(reach(m, core, s1, 0), None, "invariant 3: s1 after unmap");
            core.map(x, IOVA, pa_x2, 4096, iommu_server::Perms::RW)
                .unwrap();
            tr.note(m, "T3", "map X again");
            ch.check(m, core, tr, "after T3's map");
            assert_eq!(reach(m, core, s1, 0), Some(pa_x2));
        })
    };
    for t in [t1, t2, t3] {
        t.join().unwrap();
    }
    let (m, core, ch, tr) = &*w;
    ch.check(m, core, tr, "at the end");
    // Two ASIDs for three domains: at least one attach got one by recycling.
    assert!(core.asids_in_use() <= 2);
}

#[test]
fn recycle_unmap_all_invariants() {
    let n = explore(DEFAULT_BOUND, recycle_unmap);
    println!("recycling/unmap (3 threads): invariants 1-4 held in all {n} executions");
}

/// SVA with PASIDs (substreams on the model): one address space bound to
/// (s1, PASID 1) and (s2, PASID 1) carries one ASID in both CDs, pinned to
/// the ASID of X, which s1's PASID 0 uses; T3 reassigns X meanwhile.
fn sva_pasids() {
    let (m, core) = boot(4, 2);
    let (s1, s2) = (1, 2);
    let x = core.alloc_domain().unwrap();
    let pa_x = map_page(&m, &core, x);
    core.attach(s1, 0, x).unwrap();
    let a = core.domain_asid(x).unwrap();
    let space = core.alloc_sva_space(Some(a)).unwrap();
    let pa_s = map_page(&m, &core, space);
    assert_eq!(reach(&m, &core, s1, 0), Some(pa_x));
    let checker = Checker::new(&m, vec![(s1, 0), (s1, 1), (s2, 1)], Checks::ALL);
    let w = Arc::new((m, core, checker, Trace::default()));
    let binder = |sid: u32, who: &'static str| {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.bind_sva(sid, 1, space);
            tr.note(m, who, format_args!("bind_sva ({sid}, PASID 1): {r:?}"));
            ch.check(m, core, tr, "after a bind");
            if r.is_ok() {
                assert_eq!(reach(m, core, sid, 1), Some(pa_s));
                let r = core.unbind_sva(sid, 1);
                tr.note(m, who, format_args!("unbind_sva ({sid}, PASID 1): {r:?}"));
                r.unwrap();
                ch.check(m, core, tr, "after an unbind");
                assert_eq!(reach(m, core, sid, 1), None, "invariant 3 after unbind");
            }
        })
    };
    let t1 = binder(s1, "T1");
    let t2 = binder(s2, "T2");
    let t3 = {
        let w = w.clone();
        spawn(move || {
            let (m, core, ch, tr) = &*w;
            let r = core.reassign_asid(x);
            tr.note(m, "T3", format_args!("reassign X: {r:?}"));
            assert!(matches!(r, Ok(_) | Err(Error::NoAsid)), "{r:?}");
            ch.check(m, core, tr, "after T3's reassign");
            assert_eq!(reach(m, core, s1, 0), Some(pa_x), "s1 PASID 0 stays on X");
        })
    };
    for t in [t1, t2, t3] {
        t.join().unwrap();
    }
    let (m, core, ch, tr) = &*w;
    ch.check(m, core, tr, "at the end");
}

#[test]
fn sva_pasids_all_invariants() {
    let n = explore(DEFAULT_BOUND, sva_pasids);
    println!("SVA with PASIDs (3 threads): invariants 1-4 held in all {n} executions");
}
