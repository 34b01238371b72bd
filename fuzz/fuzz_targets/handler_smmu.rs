//! The `handler` target's message sequences against the real server core
//! driving the software SMMU model (slower, deeper): the handler never
//! panics, every reply decodes, caps are released at most once, and after
//! every message every leaf of every attached domain points into a frame
//! the stream's owner handed over, what the SMMU's caches return for it
//! equals its tables, and the model saw no architecture violation.
//!
//! Input format: as in `handler.rs` (`[selector, len, bytes...]`; low 2
//! bits badge, next 2 bits caps, bit 4 a non-frame cap, bit 5 DMA instead
//! of a message: the bytes are (stream, IOVA page) pairs), and bit 6: a
//! message without caps of at most four words goes to the register path
//! first (`Handler::handle_registers`, as the seL4 request loop does).
#![no_main]

use std::collections::BTreeSet;

use iommu_protocol::{
    decode_reply, pack_words, unpack_words, StreamId, FASTPATH_BYTES, FASTPATH_WORDS, MSG_MAX_BYTES,
};
use iommu_server::handler::{FakeFrames, Handler, ReceivedCap};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use iommu_server::{Config, Smmu};
use libfuzzer_sys::fuzz_target;
use smmu_model::{Access, Features, Machine, MemConfig, ModelOptions};

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

static CLIENTS: [ClientPolicy; 2] = [
    ClientPolicy {
        name: "a",
        badge: 1,
        streams: &[StreamGrant::new(StreamId(8))],
        quotas: Quotas::DEFAULT,
    },
    ClientPolicy {
        name: "b",
        badge: 2,
        streams: &[StreamGrant::new(StreamId(16))],
        quotas: Quotas::DEFAULT,
    },
];

fuzz_target!(|data: &[u8]| {
    // Small RAM: a fresh machine per input must be cheap.
    let mem = MemConfig {
        size: 4 << 20,
        ..MemConfig::default()
    };
    let m = Machine::with(Features::qemu_7_2(), ModelOptions::default(), mem);
    let smmu = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, Config::default()).unwrap();
    let mut h = Box::new(Handler::new(smmu, FakeFrames::new(), Policy::new(&CLIENTS)).unwrap());
    h.grant_everything();
    // Physical pages each client handed over.
    let mut given: [BTreeSet<u64>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let mut rest = data;
    let mut n = 0;
    while let [sel, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        n += 1;
        if n > 48 {
            break;
        }
        let badge = u64::from(sel & 3);
        if sel & 0x20 != 0 {
            for pair in msg.chunks_exact(2) {
                let sid = if pair[0] & 1 == 0 { 8 } else { 16 };
                let _ = m
                    .smmu
                    .dma_write(sid, None, u64::from(pair[1]) << 12, &[0xa5; 8]);
            }
            let _ = h.route_faults();
            continue;
        }
        let ncaps = usize::from((sel >> 2) & 3).min(2);
        let mut caps: Vec<ReceivedCap> = Vec::new();
        for k in 0..ncaps {
            let cap = if sel & 0x10 != 0 && k == 0 {
                h.resolver_mut().not_a_frame()
            } else {
                let Some(paddr) = m.mem.alloc_buffer(0x4000, 0x1000) else {
                    break;
                };
                if (1..=2).contains(&badge) {
                    given[badge as usize - 1].extend((0..4).map(|p| (paddr >> 12) + p));
                }
                h.resolver_mut().frame(paddr, 0x4000)
            };
            caps.push(cap);
        }
        let mut out = [0u8; MSG_MAX_BYTES];
        let mut words = [0u64; FASTPATH_WORDS];
        let registers = (sel & 0x40 != 0 && caps.is_empty() && msg.len() <= FASTPATH_BYTES)
            .then(|| pack_words(msg, &mut words))
            .flatten()
            .and_then(|k| {
                let mut reply = [0u64; FASTPATH_WORDS];
                let n = h.handle_registers(badge, &words[..k], &mut reply)?;
                unpack_words(&reply[..n], &mut out)
            });
        let len = match registers {
            Some(len) => len,
            None => h.handle(badge, msg, &caps, &mut out),
        };
        assert!(decode_reply(&out[..len]).is_ok(), "reply does not decode");
        assert_eq!(h.resolver().double_releases(), 0);
        for (owner, sid) in [(0usize, 8u32), (1, 16)] {
            let Some(d) = h.core().attached_domain(sid, 0) else {
                continue;
            };
            let mut leaves = Vec::new();
            h.core()
                .with_page_table(d, |pt| {
                    pt.for_each_leaf(&mut |iova, paddr, size, _| leaves.push((iova, paddr, size)))
                })
                .unwrap();
            for (iova, paddr, size) in leaves {
                for p in (paddr >> 12)..((paddr + size) >> 12) {
                    assert!(
                        given[owner].contains(&p),
                        "stream {sid} reaches page {p:#x} its owner never gave"
                    );
                }
                let cached = m
                    .smmu
                    .probe(sid, None, iova, Access::READ)
                    .map(|t| t.paddr)
                    .ok();
                let tables = m
                    .smmu
                    .translate_uncached(sid, None, iova, Access::READ)
                    .map(|t| t.paddr)
                    .ok();
                assert_eq!(
                    cached, tables,
                    "stale translation for stream {sid} at {iova:#x}"
                );
            }
        }
        assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
    }
});
