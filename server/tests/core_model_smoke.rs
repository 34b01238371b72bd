//! Smoke test of the core against the software SMMU model (the model's
//! owner writes the property tests, `model_*.rs`; this only checks that the
//! happy path works end to end).

use iommu_server::{Config, EventKind, Perms, Smmu};
use smmu_model::{Access, Features, Machine};

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

#[test]
fn attach_map_translate_unmap_fault() {
    let m = Machine::new(Features::qemu_7_2());
    let s = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, Config::default()).unwrap();
    assert!(s.features().ril);
    let d = s.alloc_domain().unwrap();
    s.attach(8, 0, d).unwrap();
    let buf = m.mem.alloc_buffer(0x20_0000 * 2, 0x20_0000).unwrap();
    s.map(d, 0x10_0000, buf, 0x2000, Perms::RW).unwrap();
    assert_eq!(
        m.smmu.translate(8, None, 0x10_1234, Access::WRITE),
        Ok(buf + 0x1234)
    );
    s.map(d, 0x40_0000, buf, 0x20_0000, Perms::READ).unwrap();
    let t = m
        .smmu
        .translate_ex(8, None, 0x41_0000, Access::READ)
        .unwrap();
    assert_eq!((t.paddr, t.page_size), (buf + 0x1_0000, 0x20_0000));
    assert!(m.smmu.translate(8, None, 0x41_0000, Access::WRITE).is_err());
    assert_eq!(s.unmap(d, 0x10_0000, 0x2000), Ok(0x2000));
    assert!(m.smmu.translate(8, None, 0x10_1234, Access::READ).is_err());
    // split: unmap one page in the middle of the 2 MiB block
    assert_eq!(s.unmap(d, 0x41_0000, 0x1000), Ok(0x1000));
    assert!(m.smmu.translate(8, None, 0x41_0000, Access::READ).is_err());
    assert_eq!(
        m.smmu.translate(8, None, 0x41_1000, Access::READ),
        Ok(buf + 0x1_1000)
    );
    let mut faults = Vec::new();
    s.drain_events(|e| faults.push(e));
    assert!(
        faults
            .iter()
            .any(|e| e.sid == 8 && matches!(e.kind, EventKind::Translation(_))),
        "{faults:?}"
    );
    s.detach(8, 0).unwrap();
    assert!(m.smmu.translate(8, None, 0x41_1000, Access::READ).is_err());
    s.unmap(d, 0, 1 << 40).unwrap();
    s.free_domain(d).unwrap();
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
}

#[test]
fn substreams_two_level_cd_table() {
    let m = Machine::new(Features::with_substreams(8));
    let cfg = Config {
        ssid_bits: 8,
        ..Config::default()
    };
    let s = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, cfg).unwrap();
    assert_eq!(s.ssid_bits(), 8);
    let buf = m.mem.alloc_buffer(0x4000, 0x1000).unwrap();
    let d1 = s.alloc_domain().unwrap();
    let d2 = s.alloc_domain().unwrap();
    s.map(d1, 0x1000, buf, 0x1000, Perms::RW).unwrap();
    s.map(d2, 0x1000, buf + 0x2000, 0x1000, Perms::RW).unwrap();
    // PASID 5 first (S1DSS terminate), then SSID 0, then PASID 200 (2nd leaf)
    s.attach(8, 5, d2).unwrap();
    assert!(m.smmu.translate(8, None, 0x1000, Access::READ).is_err());
    assert_eq!(
        m.smmu.translate(8, Some(5), 0x1000, Access::READ),
        Ok(buf + 0x2000)
    );
    s.attach(8, 0, d1).unwrap();
    assert_eq!(m.smmu.translate(8, None, 0x1000, Access::READ), Ok(buf));
    s.attach(8, 200, d2).unwrap();
    assert_eq!(
        m.smmu.translate(8, Some(200), 0x1000, Access::READ),
        Ok(buf + 0x2000)
    );
    // move PASID 5 to d1 (CD rewritten in place)
    s.attach(8, 5, d1).unwrap();
    assert_eq!(m.smmu.translate(8, Some(5), 0x1000, Access::READ), Ok(buf));
    assert_eq!(
        s.attach(8, 256, d1),
        Err(iommu_server::Error::SsidOutOfRange)
    );
    // SSID 0 leaves: non-PASID traffic stops, PASIDs keep working
    s.detach(8, 0).unwrap();
    assert!(m.smmu.translate(8, None, 0x1000, Access::READ).is_err());
    assert_eq!(
        m.smmu.translate(8, Some(200), 0x1000, Access::READ),
        Ok(buf + 0x2000)
    );
    s.detach(8, 200).unwrap();
    assert!(m
        .smmu
        .translate(8, Some(200), 0x1000, Access::READ)
        .is_err());
    assert_eq!(m.smmu.translate(8, Some(5), 0x1000, Access::READ), Ok(buf));
    s.detach(8, 5).unwrap();
    assert!(m.smmu.translate(8, Some(5), 0x1000, Access::READ).is_err());
    s.free_domain(d1).unwrap();
    s.free_domain(d2).unwrap();
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
}

#[test]
fn range_tlbi_ttl_and_splits_on_the_model() {
    let m = Machine::new(Features::qemu_7_2());
    let s = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, Config::default()).unwrap();
    let d = s.alloc_domain().unwrap();
    s.attach(0x10, 0, d).unwrap();
    let buf = m.mem.alloc_buffer(0x40_0000, 0x20_0000).unwrap();
    s.map(d, 0x20_0000, buf, 0x40_0000, Perms::RW).unwrap();
    // warm the TLB with the 2 MiB block entries
    for off in [0u64, 0x1000, 0x20_0000, 0x3f_f000] {
        assert_eq!(
            m.smmu.translate(0x10, None, 0x20_0000 + off, Access::READ),
            Ok(buf + off)
        );
    }
    // unmap pages inside both blocks (splits: the TTL must not hide the block)
    assert_eq!(s.unmap(d, 0x3f_e000, 0x4000), Ok(0x4000));
    for off in [0x1f_e000u64, 0x1f_f000, 0x20_0000, 0x20_1000] {
        assert!(
            m.smmu
                .translate(0x10, None, 0x20_0000 + off, Access::READ)
                .is_err(),
            "{off:#x}"
        );
    }
    assert_eq!(
        m.smmu
            .translate(0x10, None, 0x20_0000 + 0x1f_d000, Access::READ),
        Ok(buf + 0x1f_d000)
    );
    // a whole block: TTL = 2
    s.map(d, 0x80_0000, buf, 0x20_0000, Perms::RW).unwrap();
    assert!(m
        .smmu
        .translate(0x10, None, 0x80_0000, Access::READ)
        .is_ok());
    let before = s.stats().tlbis;
    s.unmap(d, 0x80_0000, 0x20_0000).unwrap();
    assert_eq!(s.stats().tlbis, before + 1);
    assert!(m
        .smmu
        .translate(0x10, None, 0x80_0000, Access::READ)
        .is_err());
    // single page with TTL = 3
    s.map(d, 0x100_0000, buf, 0x2000, Perms::RW).unwrap();
    assert!(m
        .smmu
        .translate(0x10, None, 0x100_1000, Access::READ)
        .is_ok());
    s.unmap(d, 0x100_1000, 0x1000).unwrap();
    assert!(m
        .smmu
        .translate(0x10, None, 0x100_1000, Access::READ)
        .is_err());
    assert!(m
        .smmu
        .translate(0x10, None, 0x100_0000, Access::READ)
        .is_ok());
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
    assert_eq!(m.smmu.counters().cmd_errors, 0);
}
