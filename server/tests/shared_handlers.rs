//! Several request handlers on one concurrent core: each worker thread (a
//! client "priority band") runs its own `Handler` with its own clients over
//! a shared `&SharedSmmu`, and the clients drive it through the real client
//! library at the same time: register memory, domains, map, attach, DMA,
//! SVA bind on PASIDs, unmap, detach, free. DMA lands where each client
//! mapped it, and after each unmap/detach/unbind reply the device is cut off.
#![cfg(not(loom))]

use std::cell::RefCell;
use std::rc::Rc;

use iommu_client::{InProcess, Iommu};
use iommu_protocol::{Perms, Ssid, StreamId};
use iommu_server::handler::{FakeFrames, Handler, ReceivedCap};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use iommu_server::shared::SharedSmmu;
use iommu_server::sync::StdLocks;
use iommu_server::Config;
use smmu_model::{Access, Features, Machine};

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

type Core = SharedSmmu<smmu_model::Smmu, smmu_model::PhysMem, NoDelay, StdLocks, 16>;
type HandleFn = Box<dyn FnMut(u64, &[u8], &[ReceivedCap], &mut [u8]) -> usize>;

const QUOTAS: Quotas = Quotas {
    domains: 3,
    mapped_bytes: 16 << 20,
    mappings: 32,
    pt_pages: 64,
    asids: 3,
    memory_regions: 4,
    memory_frames: 16,
};

static BAND_A: [ClientPolicy; 1] = [ClientPolicy {
    name: "band-a",
    badge: 0xA,
    streams: &[StreamGrant::with_ssids(StreamId(8), 2)],
    quotas: QUOTAS,
}];
static BAND_B: [ClientPolicy; 1] = [ClientPolicy {
    name: "band-b",
    badge: 0xB,
    streams: &[StreamGrant::with_ssids(StreamId(16), 2)],
    quotas: QUOTAS,
}];
static POLICY_A: Policy = Policy::new(&BAND_A);
static POLICY_B: Policy = Policy::new(&BAND_B);

fn worker(m: Machine, core: &'static Core, policy: Policy, badge: u64, sid: u32) {
    let h = Rc::new(RefCell::new(
        Handler::new(core, FakeFrames::new(), policy).expect("policy"),
    ));
    h.borrow_mut().grant_everything();
    let hc = h.clone();
    let f: HandleFn = Box::new(move |b, req, caps, out| hc.borrow_mut().handle(b, req, caps, out));
    let mut c = Iommu::connect(InProcess::new(badge, f)).expect("hello");
    for round in 0..40u64 {
        let pa = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
        let cap = h.borrow_mut().resolver_mut().frame(pa, 0x1000);
        let mem = c.register_memory(&[cap]).unwrap();
        let d = c.alloc_domain().unwrap();
        let iova = 0x10_0000 + (round % 4) * 0x1000;
        c.map(d, iova, mem.handle, 0, 0x1000, Perms::RW).unwrap();
        c.attach(StreamId(sid), Ssid(0), d).unwrap();
        let data = [round as u8; 16];
        m.smmu.dma_write(sid, None, iova, &data).unwrap();
        let mut got = [0u8; 16];
        m.mem.read(pa, &mut got).unwrap();
        assert_eq!(got, data);
        // SVA on PASID 1: the client's address space, mirrored.
        let sva = c.bind_sva(StreamId(sid), Ssid(1)).unwrap();
        let va = 0x7f00_0000_0000 + round * 0x1000;
        c.map(sva, va, mem.handle, 0, 0x1000, Perms::RW).unwrap();
        assert_eq!(m.smmu.translate(sid, Some(1), va, Access::READ), Ok(pa));
        c.unmap(sva, va, 0x1000).unwrap();
        assert!(m.smmu.translate(sid, Some(1), va, Access::READ).is_err());
        c.unbind_sva(StreamId(sid), Ssid(1)).unwrap();
        c.unmap(d, iova, 0x1000).unwrap();
        assert!(m.smmu.translate(sid, None, iova, Access::READ).is_err());
        c.detach(StreamId(sid), Ssid(0)).unwrap();
        c.free_domain(d).unwrap();
        c.unregister_memory(mem.handle).unwrap();
    }
}

#[test]
fn two_handler_threads_share_one_core() {
    let m = Machine::new(Features::with_substreams(2));
    // Each thread may hold an attached domain and an SVA space at once: four
    // live translations need four usable ASIDs (ASID 0 is never handed out).
    // With fewer, a bind that overlaps the other thread's is refused (both
    // holders are busy, so nothing can be recycled), which is correct but
    // not what this test is about.
    let config = Config {
        ssid_bits: 2,
        max_asids: 5,
        ..Config::default()
    };
    let core = Core::new(m.smmu.clone(), m.mem.clone(), NoDelay, config).expect("boots");
    let core: &'static Core = Box::leak(Box::new(core));
    let (ma, mb) = (m.clone(), m.clone());
    let a = std::thread::spawn(move || worker(ma, core, POLICY_A, 0xA, 8));
    let b = std::thread::spawn(move || worker(mb, core, POLICY_B, 0xB, 16));
    a.join().unwrap();
    b.join().unwrap();
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
    assert!(core.asids_in_use() <= 4);
}
