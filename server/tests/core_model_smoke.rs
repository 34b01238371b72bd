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
    let mut s = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, Config::default()).unwrap();
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
    println!("{:?}", s.stats());
}
