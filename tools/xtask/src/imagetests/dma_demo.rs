//! The `dma-demo` system: the IOMMU server drives QEMU's SMMUv3 for two `edu`
//! drivers. Judged twice: from the checks the processes print (what the
//! drivers saw in memory and in their fault records), and from QEMU's own
//! SMMU trace (what the SMMU really translated, aborted and recorded).

use super::trace::{hex_field, nothing_bypassed, on_page, Event, Trace};
use super::{boot, ended_with_pass, process_check, Checks};
use crate::qemu::BootOutcome;
use crate::Ctx;

/// Every check the processes must report; one missing is a failure, so a
/// process that dies half-way cannot pass by saying less.
const EXPECTED: &[&str] = &[
    "driver-a/pci-probe",
    "driver-a/attach",
    "driver-a/dma-round-trip",
    "driver-a/scatter-map",
    "driver-a/fault-never-mapped",
    "driver-a/fault-after-unmap",
    "driver-a/fault-read-only",
    "driver-a/large-frame",
    "driver-a/small-frame-at-2mib",
    "driver-a/dma-after-intrusions",
    "driver-a/blocked-after-detach",
    "driver-b/pci-probe",
    "driver-b/own-dma",
    "driver-b/attach-foreign-stream",
    "driver-b/detach-foreign-stream",
    "driver-b/foreign-domains",
    "driver-b/foreign-memory",
    "driver-b/sva-pasid-unsupported",
    "driver-b/sva-bind-dma",
    "driver-b/sva-unbind",
    "bystander/attach-refused",
    "bystander/no-domains",
];

// Must match images/processes/edu-driver/src/roles.rs.
const STREAM_A: u64 = 0x8;
const STREAM_B: u64 = 0x10;
const IOVA_SOURCE: u64 = 0x10_0000;
const IOVA_TARGET: u64 = 0x18_0000;
const IOVA_UNMAPPED_LATER: u64 = 0x30_0000;
const IOVA_READ_ONLY: u64 = 0x40_0000;
const IOVA_NEVER_MAPPED: u64 = 0x0f00_0000;
const IOVA_LARGE: u64 = 0x60_0000;
const LARGE_WRITE_OFFSET: u64 = 0x1f_e800;
const PAGE_SOURCE: u64 = 0;
const PAGE_TARGET: u64 = 1;
/// Driver B's DMA pool virtual address (images/systems/dma-demo.toml), which
/// its SVA binding uses as the IOVA of its first page.
const SVA_SOURCE: u64 = 0x2000_0000;

pub fn run(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot(ctx, t, "dma-demo") else {
        return;
    };
    for name in EXPECTED {
        t.check(&format!("dma-demo/{name}"), process_check(&out, name));
    }
    t.check("dma-demo/run-ends-with-pass", ended_with_pass(&out));
    // Driver B holds a cap to iommu-b only, so its checks above went
    // through the band-b thread; the fault checks through the event thread.
    t.check("dma-demo/server-threads", server_threads(&out.serial));
    t.check(
        "dma-demo/pci-by-the-root-task",
        pci_by_the_root_task(&out.serial),
    );
    let Some(trace) = Trace::of_run(&out, t, "dma-demo") else {
        return;
    };
    let pool_a = pool_paddr(&out, "driver-a");
    t.check(
        "dma-demo/trace/translations-driver-a",
        translations_a(&trace, pool_a),
    );
    let pool_b = pool_paddr(&out, "driver-b");
    t.check(
        "dma-demo/trace/sva-translation-driver-b",
        translations_b(&trace, pool_b),
    );
    t.check("dma-demo/trace/faults", faults_a(&trace));
    t.check(
        "dma-demo/trace/unmap-invalidated",
        unmap_invalidated(&trace),
    );
    t.check("dma-demo/trace/detach-aborts", detach_aborts(&trace));
    t.check(
        "dma-demo/trace/large-frame-block",
        large_frame_block(&trace),
    );
    t.check("dma-demo/trace/nothing-bypassed", nothing_bypassed(&trace));
}

fn pool_paddr(out: &BootOutcome, role: &str) -> Option<u64> {
    out.serial
        .lines()
        .filter(|l| l.contains(role))
        .find_map(|l| hex_field(l, "DMA pool at physical "))
}

/// Driver A's first round trip: the SMMU translated its two IOVAs to the
/// physical pages of its DMA pool that the server was asked to map.
fn translations_a(trace: &Trace, pool: Option<u64>) -> Result<(), String> {
    let pool = pool.ok_or("driver-a never printed its DMA pool's physical address")?;
    for (iova, page) in [(IOVA_SOURCE, PAGE_SOURCE), (IOVA_TARGET, PAGE_TARGET)] {
        let want = pool + page * 4096;
        let seen = trace.events.iter().find_map(|e| match e {
            Event::Translated {
                sid,
                iova: i,
                paddr,
                ..
            } if *sid == STREAM_A && on_page(*i, iova) => Some(*paddr),
            _ => None,
        });
        match seen {
            Some(paddr) if paddr >> 12 == want >> 12 => {}
            Some(paddr) => {
                return Err(format!(
                    "IOVA {iova:#x} translated to {paddr:#x}, expected page {want:#x}"
                ))
            }
            None => {
                return Err(format!(
                    "no translation of IOVA {iova:#x} for StreamID {STREAM_A:#x}"
                ))
            }
        }
    }
    Ok(())
}

/// Driver B's SVA binding: the SMMU translated the driver's own virtual
/// address of its source page to that page's physical address.
fn translations_b(trace: &Trace, pool: Option<u64>) -> Result<(), String> {
    let pool = pool.ok_or("driver-b never printed its DMA pool's physical address")?;
    let seen = trace.events.iter().find_map(|e| match e {
        Event::Translated {
            sid, iova, paddr, ..
        } if *sid == STREAM_B && on_page(*iova, SVA_SOURCE) => Some(*paddr),
        _ => None,
    });
    match seen {
        Some(paddr) if on_page(paddr, pool) => Ok(()),
        Some(paddr) => Err(format!(
            "SVA address {SVA_SOURCE:#x} translated to {paddr:#x}, expected page {pool:#x}"
        )),
        None => Err(format!(
            "no translation of SVA address {SVA_SOURCE:#x} for StreamID {STREAM_B:#x}"
        )),
    }
}

/// The SMMU itself recorded a translation fault for the never-mapped page
/// and a permission fault for the read-only page, on driver A's stream.
fn faults_a(trace: &Trace) -> Result<(), String> {
    for (page, kind) in [
        (IOVA_NEVER_MAPPED, "SMMU_EVT_F_TRANSLATION"),
        (IOVA_READ_ONLY, "SMMU_EVT_F_PERMISSION"),
    ] {
        if trace.position(0, |e| faulted(e, page, kind)).is_none() {
            return Err(format!(
                "no {kind} recorded at {page:#x} for StreamID {STREAM_A:#x}"
            ));
        }
    }
    Ok(())
}

fn faulted(event: &Event, page: u64, want: &str) -> bool {
    matches!(event, Event::Recorded { kind, sid, iova: Some(iova) }
        if *sid == STREAM_A && kind == want && on_page(*iova, page))
}

/// Between the successful DMA to the page that is later unmapped and the
/// fault of the DMA after the unmap, the SMMU saw that page invalidated and
/// translated it no more.
fn unmap_invalidated(trace: &Trace) -> Result<(), String> {
    let page = IOVA_UNMAPPED_LATER;
    let mapped = trace
        .position(0, |e| matches!(e, Event::Translated { sid, iova, .. } if *sid == STREAM_A && on_page(*iova, page)))
        .ok_or(format!("no successful DMA to {page:#x}"))?;
    let aborted = trace
        .position(mapped, |e| faulted(e, page, "SMMU_EVT_F_TRANSLATION"))
        .ok_or(format!(
            "the DMA to {page:#x} after unmap raised no translation fault"
        ))?;
    if let Some(stale) = trace.events[mapped + 1..aborted].iter().find(|e| {
        matches!(e, Event::Translated { sid, iova, .. } if *sid == STREAM_A && on_page(*iova, page))
    }) {
        return Err(format!("{page:#x} still translated after the unmap: {stale:?}"));
    }
    let invalidated = trace.events[mapped..aborted].iter().any(|e| match e {
        Event::RangeInvalidated { addr: a, .. } | Event::IovaInvalidated { addr: Some(a) } => {
            on_page(*a, page)
        }
        Event::IovaInvalidated { addr: None } | Event::Invalidated { .. } => true,
        _ => false,
    });
    if invalidated {
        Ok(())
    } else {
        Err(format!(
            "no TLB invalidation covering {page:#x} between the DMA and the abort"
        ))
    }
}

/// After detach, the last DMA of driver A (to the round-trip target) is
/// aborted rather than translated.
fn detach_aborts(trace: &Trace) -> Result<(), String> {
    let last = trace.events.iter().rev().find(|e| match e {
        Event::Translated { sid, iova, .. } | Event::Aborted { sid, iova } => {
            *sid == STREAM_A && on_page(*iova, IOVA_TARGET)
        }
        _ => false,
    });
    match last {
        Some(Event::Aborted { .. }) => Ok(()),
        other => Err(format!("last access to {IOVA_TARGET:#x} was {other:?}")),
    }
}

/// Driver A's write into its 2 MiB frame: the SMMU walked to a 2 MiB block
/// at level 2 (one descriptor for the whole frame, not 512 pages), and
/// translated the write to that block's address plus the offset.
fn large_frame_block(trace: &Trace) -> Result<(), String> {
    let iova = IOVA_LARGE + LARGE_WRITE_OFFSET;
    let walk = trace
        .position(
            0,
            |e| matches!(e, Event::BlockWalk { iova: i, .. } if on_page(*i, iova)),
        )
        .ok_or(format!("no block walk for IOVA {iova:#x}"))?;
    let Event::BlockWalk {
        level,
        block,
        size_mib,
        ..
    } = trace.events[walk]
    else {
        unreachable!("position found a block walk");
    };
    if (level, size_mib) != (2, 2) {
        return Err(format!(
            "IOVA {iova:#x} walked to a level-{level} block of {size_mib} MiB, expected level 2, 2 MiB"
        ));
    }
    let want = block + (iova - IOVA_LARGE);
    let translated = trace.events[walk..].iter().find_map(|e| match e {
        Event::Translated {
            sid,
            iova: i,
            paddr,
            ..
        } if *sid == STREAM_A && *i == iova => Some(*paddr),
        _ => None,
    });
    match translated {
        Some(paddr) if paddr == want => Ok(()),
        other => Err(format!(
            "IOVA {iova:#x} translated to {other:x?}, expected block {block:#x} + offset = {want:#x}"
        )),
    }
}

/// The server runs driver B's band on its own thread, above the main
/// thread's priority, and takes the SMMU's interrupts on a third.
/// The root task placed both edus' BARs as the description says, with bus
/// mastering off, and turned it on only after the server had the SMMU
/// enabled, before any driver ran (drivers never see configuration space).
fn pci_by_the_root_task(serial: &str) -> Result<(), String> {
    let at = |line: &str| {
        serial
            .find(line)
            .ok_or_else(|| format!("the run never said {line:?}"))
    };
    let placed_a = at("root: PCI 00:01.0 (1234:11e8) for driver-a: BAR0 at 0x10000000 (1024 KiB), memory decoding on, bus mastering off")?;
    let placed_b = at("root: PCI 00:02.0 (1234:11e8) for driver-b: BAR0 at 0x10100000 (1024 KiB), memory decoding on, bus mastering off")?;
    let ready = at("root: iommu-server ready: SMMU enabled, starting the others")?;
    let mastering = at("root: bus mastering on for 2 PCI function(s)")?;
    let first_driver = at("driver-a: edu 0x010000ed at 0x10000000")?;
    if !(placed_a.max(placed_b) < ready && ready < mastering && mastering < first_driver) {
        return Err(format!(
            "out of order: BARs placed at {placed_a}/{placed_b}, server ready at {ready}, bus mastering at {mastering}, driver A's first line at {first_driver}"
        ));
    }
    Ok(())
}

fn server_threads(serial: &str) -> Result<(), String> {
    for line in [
        "iommu-server: band 0: thread main (priority 150) serves iommu (2 clients)",
        "iommu-server: band 1: thread band-b (priority 160) serves iommu-b (1 clients)",
        "iommu-server: thread events (priority 170) takes the SMMU's interrupts",
    ] {
        if !serial.contains(line) {
            return Err(format!("the server never said {line:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::trace::samples::EDU;
    use super::*;

    /// Boots the system and runs these checks alone (not part of
    /// `cargo test`): `cargo test -p xtask -- --ignored dma_demo_system`.
    #[test]
    #[ignore = "builds and boots a QEMU image"]
    fn dma_demo_system() {
        let ctx = crate::Ctx::new().unwrap();
        let mut t = Checks::default();
        run(&ctx, &mut t);
        println!(
            "dma-demo: {} passed, {} failed",
            t.tally.passed, t.tally.failed
        );
        assert_eq!(t.tally.failed, 0, "{} passed", t.tally.passed);
    }

    #[test]
    fn judges_the_edu_sample() {
        let t = Trace::parse(EDU);
        assert!(nothing_bypassed(&t).is_err());
        assert_eq!(large_frame_block(&t), Ok(()));
    }

    #[test]
    fn a_large_frame_walked_as_pages_fails() {
        let pages = Trace::parse(
            "1@1:smmu_ptw_level level=3 iova=0x7fe000 subpage_sz=0x1000 baseaddr=0x1000 offset=510 => pte=0x4\n\
             1@2:smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x7fe800 translated=0x405fe800 perm=0x3\n",
        );
        assert!(large_frame_block(&pages)
            .unwrap_err()
            .contains("no block walk"));
        let elsewhere = Trace::parse(
            "1@1:smmu_ptw_block_pte stage=1 level=2 base@=0x1 pte@=0x2 pte=0x3 iova=0x7fe000 block address = 0x40400000 block size = 2 MiB\n\
             1@2:smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x7fe800 translated=0x400fe800 perm=0x3\n",
        );
        assert!(large_frame_block(&elsewhere)
            .unwrap_err()
            .contains("expected block"));
    }

    #[test]
    fn translation_to_the_wrong_page_fails() {
        let t = Trace::parse(EDU);
        assert!(
            translations_a(&t, Some(0x4a00_0000)).is_err(),
            "target IOVA never translated"
        );
        let wrong = Trace {
            events: vec![
                Event::Translated {
                    sid: 0x8,
                    iova: IOVA_SOURCE,
                    paddr: 0x5000_0000,
                    perm: 0x3,
                    asid: Some(1),
                },
                Event::Translated {
                    sid: 0x8,
                    iova: IOVA_TARGET,
                    paddr: 0x4a00_1000,
                    perm: 0x3,
                    asid: Some(1),
                },
            ],
        };
        assert!(translations_a(&wrong, Some(0x4a00_0000))
            .unwrap_err()
            .contains("translated to"));
    }

    #[test]
    fn an_unmapped_page_faults_after_an_invalidation_covering_it() {
        let dma = "smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x300000 translated=0x4a004000 perm=0x3\n";
        let fault = "smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x300000 hit=0 miss=2 hit rate=0\n\
                     smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x8\n";
        let check =
            |between: &str| unmap_invalidated(&Trace::parse(&format!("{dma}{between}{fault}")));
        for covering in [
            "smmuv3_s1_range_inval vmid=0 asid=1 addr=0x300000 tg=1 num_pages=0x1 ttl=3 leaf=1\n",
            "smmu_iotlb_inv_iova IOTLB invalidate asid=1 addr=0x300000\n",
            "smmu_iotlb_inv_asid IOTLB invalidate asid=1\n",
            "smmu_iotlb_inv_all IOTLB invalidate all\n",
        ] {
            assert_eq!(check(covering), Ok(()), "{covering}");
        }
        let elsewhere =
            "smmuv3_s1_range_inval vmid=0 asid=1 addr=0x301000 tg=1 num_pages=0x1 ttl=3 leaf=1\n";
        assert!(check(elsewhere)
            .unwrap_err()
            .contains("no TLB invalidation"));
        let stale = format!("smmu_iotlb_inv_all IOTLB invalidate all\n{dma}");
        assert!(check(&stale).unwrap_err().contains("still translated"));
    }
}
