//! Faults, the event queue, command errors and allocation failures, with the
//! model as the device: device DMA through the server's tables produces the
//! model's architectural event records, which the server must decode; an
//! illegal command must not wedge the queue; an allocation failure in any
//! operation must leave translations and memory as they were.

#[path = "model_harness.rs"]
mod harness;

use harness::*;
use iommu_server::{Command, Config, Error, EventKind, Perms};
use smmu_model::spec::evt;
use smmu_model::{Access, Fault, Features};

const SID: u32 = 8;

#[test]
fn dma_fault_is_recorded_and_decoded() {
    let (m, s) = boot_qemu();
    let d = s.alloc_domain().unwrap();
    let buf = m.mem.alloc_buffer(0x2000, 0x1000).unwrap();
    s.map(d, 0x10_0000, buf, 0x1000, Perms::RW).unwrap();
    s.map(d, 0x10_1000, buf + 0x1000, 0x1000, Perms::READ)
        .unwrap();
    s.attach(SID, 0, d).unwrap();
    // Mapped DMA lands.
    m.smmu.dma_write(SID, None, 0x10_0010, b"hello").unwrap();
    let mut got = [0u8; 5];
    m.mem.read(buf + 0x10, &mut got).unwrap();
    assert_eq!(&got, b"hello");
    // Unmapped DMA faults, changes nothing, and is recorded: the server's CD
    // must have R = 1 or no fault ever reaches a client (QEMU behaves so).
    let f = m.smmu.dma_write(SID, None, 0x30_0000, b"x").unwrap_err();
    assert!(
        matches!(f.fault, Fault::Event { recorded: true, .. }),
        "translation fault not recorded (CD.R = 0?): {f:?}"
    );
    // A write to the read-only page: permission fault.
    let f = m.smmu.dma_write(SID, None, 0x10_1000, b"y").unwrap_err();
    assert_eq!(f.fault.code(), Some(evt::F_PERMISSION));
    let mut got = [0u8; 1];
    m.mem.read(buf + 0x1000, &mut got).unwrap();
    assert_eq!(got, [0]);
    let mut events = Vec::new();
    let rep = s.drain_events(|e| events.push(e));
    assert_eq!(rep.events, 2);
    assert!(!rep.overflowed);
    match events[0].kind {
        EventKind::Translation(i) => {
            assert_eq!((events[0].sid, events[0].ssid), (SID, None));
            assert_eq!(i.addr, 0x30_0000);
            assert!(!i.read);
        }
        k => panic!("expected F_TRANSLATION, got {k:?}"),
    }
    assert!(
        matches!(events[1].kind, EventKind::Permission(i) if i.addr == 0x10_1000 && !i.read),
        "{:?}",
        events[1]
    );
    // The queue is now empty from the model's side too.
    assert!(m.smmu.pending_events().is_empty());
}

#[test]
fn event_storm_overflows_and_recovers() {
    let (m, s) = boot(
        Features::qemu_7_2(),
        Config {
            evtq_log2: 3,
            ..Config::default()
        },
    );
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    for i in 0..20u64 {
        let _ = m.smmu.dma_read(SID, None, i << 12, &mut [0u8; 4]);
    }
    let c = m.smmu.counters();
    assert_eq!(c.events_written, 8);
    assert!(c.eventq_overflows > 0);
    let mut n = 0;
    let rep = s.drain_events(|_| n += 1);
    assert_eq!(n, 8);
    assert!(rep.overflowed, "the server did not see EVENTQ_PROD.OVFLG");
    // After the drain the overflow is acknowledged and new faults land.
    let _ = m.smmu.dma_read(SID, None, 0x99_0000, &mut [0u8; 4]);
    let mut events = Vec::new();
    let rep = s.drain_events(|e| events.push(e));
    assert_eq!(rep.events, 1);
    assert!(!rep.overflowed, "overflow reported twice");
    assert!(matches!(events[0].kind, EventKind::Translation(i) if i.addr == 0x99_0000));
    // Many drains over the wrap.
    for round in 0..5u64 {
        for i in 0..5u64 {
            let _ = m
                .smmu
                .dma_read(SID, None, (round << 20) | (i << 12), &mut [0u8; 4]);
        }
        let mut got = Vec::new();
        s.drain_events(|e| got.push(e));
        let addrs: Vec<u64> = got
            .iter()
            .map(|e| match e.kind {
                EventKind::Translation(i) => i.addr,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(
            addrs,
            (0..5)
                .map(|i| (round << 20) | (i << 12))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn configuration_errors_are_decoded() {
    let (m, s) = boot_pasid(8);
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 5, d).unwrap();
    // A StreamID beyond the stream table, a missing substream, an unused SSID.
    let _ = m.smmu.translate(1 << 16, None, 0, Access::READ);
    let _ = m.smmu.translate(SID, None, 0, Access::READ);
    let _ = m.smmu.translate(SID, Some(6), 0, Access::READ);
    let mut kinds = Vec::new();
    s.drain_events(|e| kinds.push((e.kind, e.sid, e.ssid)));
    let model: Vec<u8> = m.smmu.events().iter().map(|e| e.0.code).collect();
    assert_eq!(kinds.len(), model.len(), "{kinds:?} vs model {model:x?}");
    assert!(
        matches!(kinds[0], (EventKind::BadStreamId, 0x10000, None)),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds[1], (EventKind::StreamDisabled, SID, None)),
        "{kinds:?}"
    );
    assert!(
        matches!(
            kinds[2],
            (EventKind::BadCd | EventKind::BadSubstreamId, SID, Some(6))
        ),
        "{kinds:?}"
    );
}

#[test]
fn illegal_command_does_not_wedge_the_queue() {
    let (m, s) = boot_qemu();
    let d = s.alloc_domain().unwrap();
    s.map(d, 0x10_0000, 0x1_0000_0000, 0x1000, Perms::RW)
        .unwrap();
    s.attach(SID, 0, d).unwrap();
    let r = s.issue_commands(&[Command::Raw([0x7f, 0])]);
    assert!(
        matches!(r, Err(Error::Hardware(_))),
        "an illegal command should be reported: {r:?}"
    );
    let _ = s.handle_gerror();
    assert_eq!(m.smmu.counters().cmd_errors, 1);
    // The queue still works: an unmap must invalidate.
    assert!(m.smmu.probe(SID, None, 0x10_0000, Access::READ).is_ok());
    assert_eq!(s.unmap(d, 0x10_0000, 0x1000), Ok(0x1000));
    assert_eq!(
        m.smmu
            .probe(SID, None, 0x10_0000, Access::READ)
            .map_err(|f| f.code()),
        Err(Some(evt::F_TRANSLATION))
    );
    assert_eq!(
        m.smmu.counters().cmd_errors,
        1,
        "the rejected command ran again"
    );
    use iommu_server::hal::Mmio;
    let gerr = m.smmu.read32(0x60) ^ m.smmu.read32(0x64);
    assert_eq!(gerr, 0, "GERROR left active");
}

/// Every operation under an allocation failure at every possible point
/// either succeeds or fails with NoMemory leaving translations, the
/// server's view and DMA memory as they were.
#[test]
fn allocation_failures_roll_back() {
    for features in [Features::qemu_7_2(), Features::with_substreams(8)] {
        let pasid = features.ssidsize > 0;
        let cfg = Config {
            ssid_bits: features.ssidsize,
            ..Config::default()
        };
        for nth in 1..12u64 {
            let (m, s) = boot(features.clone(), cfg);
            let a = s.alloc_domain().unwrap();
            s.map(a, 0x10_0000, 0x1_0000_0000, 0x1000, Perms::RW)
                .unwrap();
            s.attach(SID, 0, a).unwrap();
            let before_blocks = m.mem.live_blocks();
            let see = |m: &smmu_model::Machine| {
                (
                    m.smmu
                        .probe(SID, None, 0x10_0000, Access::READ)
                        .map(|t| t.paddr),
                    m.smmu
                        .probe(SID, None, 0x4000_0000, Access::READ)
                        .map(|t| t.paddr),
                    m.smmu
                        .probe(SID + 1, None, 0x10_0000, Access::READ)
                        .map(|t| t.paddr),
                )
            };
            let before = see(&m);
            m.mem.fail_nth_alloc(nth);
            // A sequence that allocates: new domain, 1 GiB-range tables,
            // attach of a new stream, block split.
            let steps: Vec<(&str, Result<(), Error>)> = vec![
                ("alloc_domain", s.alloc_domain().map(|_| ())),
                (
                    "map",
                    s.map(a, 0x4000_0000, 0x1_4000_0000, 2 << 20, Perms::RW),
                ),
                ("attach", s.attach(SID + 1, 0, a)),
                ("split", s.unmap(a, 0x4000_0000, 0x1000).map(|_| ())),
                (
                    "attach ssid",
                    if pasid { s.attach(SID, 3, a) } else { Ok(()) },
                ),
            ];
            m.mem.clear_failures();
            let ok = |name: &str| steps.iter().any(|(w, r)| *w == name && r.is_ok());
            let mapped = ok("map");
            // The split finds nothing to unmap when the map failed.
            let failed: Vec<_> = steps
                .iter()
                .filter(|(w, r)| r.is_err() && (*w != "split" || mapped))
                .collect();
            for (what, r) in &failed {
                assert_eq!(*r, Err(Error::NoMemory), "nth {nth}: {what}");
            }
            if failed.is_empty() {
                continue;
            }
            assert_eq!(m.smmu.counters().cmd_errors, 0);
            // What succeeded is visible, what failed is not.
            let after = see(&m);
            assert_eq!(after.0, before.0, "nth {nth}: existing mapping disturbed");
            if !ok("map") {
                assert!(after.1.is_err(), "nth {nth}: failed map left a translation");
                assert_eq!(s.iova_to_phys(a, 0x4000_0000), None);
            } else if ok("split") {
                assert!(after.1.is_err(), "nth {nth}: split page still mapped");
                assert_eq!(
                    m.smmu
                        .probe(SID, None, 0x4000_1000, Access::READ)
                        .map(|t| t.paddr),
                    Ok(0x1_4000_1000),
                    "nth {nth}: rest of the split block"
                );
            } else {
                assert_eq!(
                    after.1,
                    Ok(0x1_4000_0000),
                    "nth {nth}: failed split changed the block"
                );
            }
            if !ok("attach") {
                assert_eq!(
                    after.2, before.2,
                    "nth {nth}: failed attach changed the stream"
                );
                assert_eq!(s.attached_domain(SID + 1, 0), None);
            }
            // Nothing leaked by the failures: undo the successes and compare.
            if ok("attach") {
                s.detach(SID + 1, 0).unwrap();
            }
            if pasid && ok("attach ssid") {
                s.detach(SID, 3).unwrap();
            }
            let _ = s.unmap(a, 0x4000_0000, 2 << 20);
            let ids: Vec<_> = s.domains().filter(|&x| x != a).collect();
            for x in ids {
                s.free_domain(x).unwrap();
            }
            let leaked = leaked_blocks(&m, &before_blocks);
            assert!(
                leaked.is_empty(),
                "nth {nth}: leaked {leaked:x?} after failures {failed:?}"
            );
            assert!(m.smmu.violations().is_empty());
        }
    }
}
