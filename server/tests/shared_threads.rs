//! The concurrent core (`iommu_server::shared`) under real OS threads with
//! `std` and spin locks: four workers attach/move/detach, reassign ASIDs,
//! bind/unbind SVA and unmap/map at once on the software SMMUv3 model, each
//! checking what its own device reaches after every operation, and the
//! invariants of DESIGN.md 5 checked after every operation. Not exhaustive
//! (that is `loom_asid.rs`, under `--cfg loom`), but it runs in every
//! `cargo test` and with true parallelism.
#![cfg(not(loom))]

mod shared_support;

use std::sync::Arc;

use iommu_server::sync::{LockFamily, SpinLocks, StdLocks};
use iommu_server::{Error, Perms};
use shared_support::*;

const ROUNDS: usize = 300;

fn run<F: LockFamily>() {
    let (m, core) = boot_with::<F>(4, 0);
    let (s1, s2, s3, s4) = (1, 2, 3, 4);
    let x = core.alloc_domain().unwrap();
    let y = core.alloc_domain().unwrap();
    let w = core.alloc_domain().unwrap();
    let pa_x = map_page(&m, &core, x);
    let pa_y = map_page(&m, &core, y);
    let pa_w = map_page(&m, &core, w);
    core.attach(s1, 0, x).unwrap();
    core.attach(s3, 0, y).unwrap();
    core.attach(s4, 0, w).unwrap();
    let a = core.domain_asid(x).unwrap();
    let space = core.alloc_sva_space(Some(a)).unwrap();
    let pa_s = map_page(&m, &core, space);
    let checker = Checker::new(&m, vec![(s1, 0), (s2, 0), (s3, 0), (s4, 0)], Checks::ALL);
    let world = Arc::new((m, core, checker, Trace::default()));
    let mut handles = Vec::new();

    // T1: s1 moves X -> Y -> detached -> X ...
    let wd = world.clone();
    handles.push(std::thread::spawn(move || {
        let (m, core, ch, tr) = &*wd;
        for _ in 0..ROUNDS {
            core.attach(s1, 0, y).unwrap();
            ch.check(m, core, tr, "T1 attach s1 -> Y");
            assert_eq!(reach(m, core, s1, 0), Some(pa_y));
            core.detach(s1, 0).unwrap();
            ch.check(m, core, tr, "T1 detach s1");
            assert_eq!(reach(m, core, s1, 0), None, "invariant 3 after detach");
            match core.attach(s1, 0, x) {
                Ok(()) => assert_eq!(reach(m, core, s1, 0), Some(pa_x)),
                Err(e) => assert_eq!(e, Error::NoAsid),
            }
            ch.check(m, core, tr, "T1 attach s1 -> X");
        }
    }));
    // T2: ASID reassignment of X and Y.
    let wd = world.clone();
    handles.push(std::thread::spawn(move || {
        let (m, core, ch, tr) = &*wd;
        for _ in 0..ROUNDS {
            for d in [x, y] {
                let r = core.reassign_asid(d);
                assert!(matches!(r, Ok(_) | Err(Error::NoAsid)), "{r:?}");
                ch.check(m, core, tr, "T2 reassign");
            }
            assert_eq!(reach(m, core, s3, 0), Some(pa_y));
        }
    }));
    // T3: SVA bind (takes X's ASID from whoever holds it) and unbind.
    let wd = world.clone();
    handles.push(std::thread::spawn(move || {
        let (m, core, ch, tr) = &*wd;
        for _ in 0..ROUNDS {
            match core.bind_sva(s2, 0, space) {
                Ok(()) => {
                    ch.check(m, core, tr, "T3 bind");
                    assert_eq!(reach(m, core, s2, 0), Some(pa_s));
                    core.unbind_sva(s2, 0).unwrap();
                    ch.check(m, core, tr, "T3 unbind");
                    assert_eq!(reach(m, core, s2, 0), None, "invariant 3 after unbind");
                }
                Err(e) => assert_eq!(e, Error::NoAsid),
            }
        }
    }));
    // T4: unmap and map again in W.
    let wd = world.clone();
    handles.push(std::thread::spawn(move || {
        let (m, core, ch, tr) = &*wd;
        for _ in 0..ROUNDS {
            assert_eq!(core.unmap(w, IOVA, 4096), Ok(4096));
            ch.check(m, core, tr, "T4 unmap");
            assert_eq!(reach(m, core, s4, 0), None, "invariant 3 after unmap");
            core.map(w, IOVA, pa_w, 4096, Perms::RW).unwrap();
            assert_eq!(reach(m, core, s4, 0), Some(pa_w));
        }
    }));
    for h in handles {
        h.join().unwrap();
    }
    let (m, core, ch, tr) = &*world;
    ch.check(m, core, tr, "at the end");
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
}

#[test]
fn four_threads_std_locks() {
    run::<StdLocks>();
}

#[test]
fn four_threads_spin_locks() {
    run::<SpinLocks>();
}

/// Shutdown of the concurrent core: every stream aborts afterwards (nothing
/// bypasses) and every table, queue and CD table is freed.
#[test]
fn shutdown_aborts_traffic_and_frees_every_table() {
    use smmu_model::{Access, BlockKind, Fault};
    let (m, core) = boot_with::<StdLocks>(4, 0);
    let d = core.alloc_domain().unwrap();
    let space = core.alloc_sva_space(None).unwrap();
    let pa = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
    core.map(d, 0x10_0000, pa, 0x1000, Perms::RW).unwrap();
    core.map(space, 0x10_0000, pa, 0x1000, Perms::READ).unwrap();
    core.attach(1, 0, d).unwrap();
    core.bind_sva(2, 0, space).unwrap();
    for sid in [1, 2] {
        assert_eq!(m.smmu.translate(sid, None, 0x10_0000, Access::READ), Ok(pa));
    }
    let (_mmio, _alloc, _delay, r) = core.shutdown();
    assert_eq!(r, Ok(()));
    for sid in [1, 2, 3] {
        assert_eq!(
            m.smmu.translate(sid, None, 0x10_0000, Access::READ),
            Err(Fault::Abort),
            "stream {sid} after shutdown"
        );
    }
    let live: Vec<_> = m
        .mem
        .live_blocks()
        .into_iter()
        .filter(|b| b.kind == BlockKind::Dma)
        .collect();
    assert!(live.is_empty(), "DMA memory left after shutdown: {live:x?}");
}
