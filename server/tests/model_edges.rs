//! Edge cases checked through the model: the top of the 48-bit IOVA space,
//! the OAS limit, splitting a 1 GiB block, every optional SMMU feature
//! advertised at once (MSI, SEV, HYP), and interrupts.

#[path = "model_harness.rs"]
mod harness;

use harness::*;
use iommu_server::{Config, Error, Perms};
use smmu_model::spec::{evt, reg};
use smmu_model::{Access, Features};

const SID: u32 = 8;
const GIB: u64 = 1 << 30;

fn tr(m: &smmu_model::Machine, iova: u64) -> Result<u64, Option<u8>> {
    m.smmu
        .probe(SID, None, iova, Access::READ)
        .map(|t| t.paddr)
        .map_err(|f| f.code())
}

#[test]
fn top_of_iova_space_and_oas_limit() {
    let (m, s) = boot_qemu();
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    let top = (1u64 << 48) - 0x1000;
    let pa_top = (1u64 << 44) - 0x1000;
    s.map(d, top, pa_top, 0x1000, Perms::RW).unwrap();
    assert_eq!(tr(&m, top + 0xabc), Ok(pa_top + 0xabc));
    assert_eq!(
        s.map(d, 1 << 48, 0, 0x1000, Perms::RW),
        Err(Error::OutOfRange)
    );
    assert_eq!(
        s.map(d, 0, 1 << 44, 0x1000, Perms::RW),
        Err(Error::OutOfRange)
    );
    assert_eq!(tr(&m, 0), Err(Some(evt::F_TRANSLATION)));
    // IOVA 0 itself is mappable.
    s.map(d, 0, 0x1000, 0x1000, Perms::RW).unwrap();
    assert_eq!(tr(&m, 0x10), Ok(0x1010));
    assert_eq!(s.unmap(d, top, 0x1000), Ok(0x1000));
    assert_eq!(tr(&m, top), Err(Some(evt::F_TRANSLATION)));
}

#[test]
fn split_a_gigabyte_block() {
    let (m, s) = boot_qemu();
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    let (iova, pa) = (GIB, 4 * GIB);
    s.map(d, iova, pa, GIB, Perms::RW).unwrap();
    let probes = [
        0u64,
        0x1000,
        0x1F_F000,
        0x20_0000,
        0x3FE0_0000,
        GIB - 0x1000,
    ];
    for p in probes {
        assert_eq!(tr(&m, iova + p), Ok(pa + p));
    }
    // Punch a 4 KiB hole 2 MiB + 8 KiB in: the block becomes 2 MiB blocks
    // and one level-3 table.
    let hole = iova + 0x20_2000;
    assert_eq!(s.unmap(d, hole, 0x1000), Ok(0x1000));
    assert_eq!(tr(&m, hole), Err(Some(evt::F_TRANSLATION)));
    for p in probes.iter().chain(&[0x20_1000, 0x20_3000, 0x40_0000]) {
        assert_eq!(
            tr(&m, iova + p),
            Ok(pa + p),
            "offset {p:#x} after the split"
        );
    }
    let t = m
        .smmu
        .probe(SID, None, iova + 0x60_0000, Access::READ)
        .unwrap();
    assert_eq!(t.page_size, 2 << 20, "untouched parts stay 2 MiB blocks");
    // Unmap the rest: everything faults, tables freed.
    assert_eq!(s.unmap(d, iova, GIB), Ok(GIB - 0x1000));
    for p in probes {
        assert_eq!(tr(&m, iova + p), Err(Some(evt::F_TRANSLATION)));
    }
    assert!(m.smmu.counters().cmd_errors == 0 && m.smmu.violations().is_empty());
}

#[test]
fn every_optional_feature_advertised() {
    let f = Features {
        msi: true,
        sev: true,
        hyp: true,
        ..Features::with_substreams(20)
    };
    let (m, s) = boot(
        f,
        Config {
            ssid_bits: 20,
            ..Config::default()
        },
    );
    let d = s.alloc_domain().unwrap();
    s.map(d, 0x1000, 0x2000, 0x1000, Perms::RW).unwrap();
    s.attach(SID, 0, d).unwrap();
    s.attach(SID, (1 << 20) - 1, d).unwrap();
    assert_eq!(tr(&m, 0x1000), Ok(0x2000));
    assert_eq!(
        m.smmu
            .probe(SID, Some((1 << 20) - 1), 0x1000, Access::READ)
            .map(|t| t.paddr),
        Ok(0x2000)
    );
    s.unmap(d, 0x1000, 0x1000).unwrap();
    assert_eq!(tr(&m, 0x1000), Err(Some(evt::F_TRANSLATION)));
    s.detach(SID, 0).unwrap();
    s.detach(SID, (1 << 20) - 1).unwrap();
    s.free_domain(d).unwrap();
    assert_eq!(m.smmu.counters().cmd_errors, 0);
    assert!(m.smmu.violations().is_empty());
}

#[test]
fn interrupts_enabled_and_event_irq_raised() {
    use iommu_server::hal::Mmio;
    let (m, s) = boot_qemu();
    let ctrl = m.smmu.read32(reg::IRQ_CTRLACK);
    assert_eq!(
        ctrl & (reg::IRQ_CTRL_GERROR_IRQEN | reg::IRQ_CTRL_EVENTQ_IRQEN),
        reg::IRQ_CTRL_GERROR_IRQEN | reg::IRQ_CTRL_EVENTQ_IRQEN,
        "Config::irqs = true should enable the GERROR and event-queue interrupts"
    );
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    let _ = m.smmu.dma_read(SID, None, 0x5000, &mut [0; 4]);
    assert_eq!(m.smmu.counters().eventq_irqs, 1);
}

#[test]
fn shutdown_aborts_traffic_and_frees_everything() {
    let (m, s) = boot_pasid(8);
    let baseline_before_boot: Vec<smmu_model::LiveBlock> = Vec::new();
    let d = s.alloc_domain().unwrap();
    s.map(d, 0x1000, 0x2000, 0x1000, Perms::RW).unwrap();
    s.map(d, 0x4000_0000, 0x8000_0000, 2 << 20, Perms::RW)
        .unwrap();
    s.attach(SID, 0, d).unwrap();
    s.attach(SID, 7, d).unwrap();
    assert_eq!(tr(&m, 0x1000), Ok(0x2000));
    let (_mmio, _alloc, _delay, r) = s.shutdown();
    assert_eq!(r, Ok(()));
    // SMMUEN = 0 with GBPA.ABORT: every transaction aborts, nothing bypasses.
    use iommu_server::hal::Mmio;
    assert_eq!(m.smmu.read32(reg::CR0ACK) & reg::CR0_SMMUEN, 0);
    assert_eq!(
        m.smmu.translate(SID, None, 0x1000, Access::READ),
        Err(smmu_model::Fault::Abort)
    );
    assert_eq!(
        m.smmu.translate(3, None, 0x1000, Access::READ),
        Err(smmu_model::Fault::Abort)
    );
    let live: Vec<_> = m
        .mem
        .live_blocks()
        .into_iter()
        .filter(|b| b.kind == smmu_model::BlockKind::Dma && !baseline_before_boot.contains(b))
        .collect();
    assert!(live.is_empty(), "DMA memory left after shutdown: {live:x?}");
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
}

#[test]
fn memory_attributes() {
    // IDR0.COHACC = 1: normal memory must be write-back cacheable and
    // inner shareable for DMA to be coherent with the CPUs; DEVICE mappings
    // must be a Device memory type.
    let (m, s) = boot_qemu();
    let d = s.alloc_domain().unwrap();
    s.map(d, 0x1000, 0x1_0000_0000, 0x1000, Perms::RW).unwrap();
    s.map(
        d,
        0x2000,
        0x1_0000_1000,
        0x1000,
        Perms::RW.union(Perms::DEVICE),
    )
    .unwrap();
    s.attach(SID, 0, d).unwrap();
    let normal = m.smmu.probe(SID, None, 0x1000, Access::READ).unwrap();
    // A MAIR nibble is write-back when 0b11RW, or 0b01RW with RW != 0.
    let wb = |n: u8| n >> 2 == 0b11 || (n >> 2 == 0b01 && n & 3 != 0);
    assert!(
        wb(normal.mair_attr >> 4) && wb(normal.mair_attr & 0xF) && normal.sh == 0b11,
        "normal memory: MAIR attr {:#x}, SH {:#b}: want write-back, inner shareable",
        normal.mair_attr,
        normal.sh
    );
    let dev = m.smmu.probe(SID, None, 0x2000, Access::READ).unwrap();
    assert_eq!(
        dev.mair_attr & 0xF3,
        0,
        "device memory: MAIR attr {:#x}",
        dev.mair_attr
    );
}

#[test]
fn coherent_walk_and_queue_attributes() {
    // IDR0.COHACC = 1 and the CPU's memory is Normal write-back inner
    // shareable: the SMMU's own accesses (queues, stream table, CD fetch,
    // page-table walks) must use the same attributes, or on hardware they
    // can miss CPU-cached data. (QEMU ignores attributes, so only the
    // model can check this.)
    use iommu_server::hal::Mmio;
    let (m, s) = boot_pasid(4);
    let cr1 = m.smmu.read32(reg::CR1);
    let f = |lo: u32| (cr1 >> lo) & 3;
    assert_eq!(
        (f(0), f(2), f(4), f(6), f(8), f(10)),
        (1, 1, 3, 1, 1, 3),
        "CR1 {cr1:#x}: queue IC/OC/SH and table IC/OC/SH should be WB, WB, ISH"
    );
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    let ste = m.smmu.ste_at(SID).unwrap();
    assert_eq!(
        (ste.s1cir, ste.s1cor, ste.s1csh),
        (1, 1, 3),
        "STE CD-fetch attributes S1CIR/S1COR/S1CSH should be WBRA, WBRA, ISH"
    );
    let cd = m.smmu.cd_at(SID, None).unwrap();
    assert_eq!(
        (cd.ir0, cd.or0, cd.sh0),
        (1, 1, 3),
        "CD walk attributes IR0/OR0/SH0 should be WBWA, WBWA, ISH"
    );
}
