//! Arbitrary message sequences from three badges (two clients and a
//! stranger), with arbitrary capabilities attached, never panic the request
//! handler, always get a reply that decodes, and never break the
//! translation invariant: every translation in the core belongs to a domain
//! of the client that owns the stream and points into a frame that was
//! handed to the server.
//!
//! Input format (so that the fuzzer can splice messages): a sequence of
//! `[selector, len, bytes...]`; the selector's low 2 bits pick the badge,
//! the next 2 bits the number of caps (fresh frames, or a non-frame cap when
//! bit 4 is set), bit 5 routes faults instead of sending.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use iommu_protocol::{decode_reply, ErrorCode, FaultKind, Perms, Ssid, StreamId, MSG_MAX_BYTES};
use iommu_server::handler::{Core, CoreCaps, CoreEvent, FakeFrames, Handler, ReceivedCap};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use libfuzzer_sys::fuzz_target;

/// A page-map core: the contract the handler relies on, nothing more.
#[derive(Default)]
struct MapCore {
    next: u32,
    domains: BTreeMap<u32, BTreeMap<u64, u64>>,
    attached: BTreeMap<(u32, u32), u32>,
    events: Vec<CoreEvent>,
}

impl Core for MapCore {
    type Domain = u32;
    fn caps(&self) -> CoreCaps {
        CoreCaps {
            ssid_bits: 2,
            ias_bits: 48,
            page_sizes: 1 << 12,
        }
    }
    fn alloc_domain(&mut self) -> Result<u32, ErrorCode> {
        self.next += 1;
        self.domains.insert(self.next, BTreeMap::new());
        Ok(self.next)
    }
    fn free_domain(&mut self, d: u32) -> Result<(), ErrorCode> {
        assert!(
            !self.attached.values().any(|&x| x == d),
            "freed an attached domain"
        );
        self.domains
            .remove(&d)
            .map(|_| ())
            .ok_or(ErrorCode::NoSuchDomain)
    }
    fn attach(&mut self, s: StreamId, ssid: Ssid, d: u32) -> Result<(), ErrorCode> {
        assert!(self.domains.contains_key(&d));
        self.attached.insert((s.0, ssid.0), d);
        Ok(())
    }
    fn detach(&mut self, s: StreamId, ssid: Ssid) -> Result<(), ErrorCode> {
        self.attached
            .remove(&(s.0, ssid.0))
            .map(|_| ())
            .ok_or(ErrorCode::NoSuchStream)
    }
    fn map(&mut self, d: u32, iova: u64, pa: u64, len: u64, _: Perms) -> Result<(), ErrorCode> {
        let pt = self.domains.get_mut(&d).ok_or(ErrorCode::NoSuchDomain)?;
        let (v, p, n) = (iova >> 12, pa >> 12, len >> 12);
        // Huge lengths are the handler's bug (quotas bound them).
        assert!(n <= 1 << 20, "map of {n} pages got through");
        if (v..v + n).any(|x| pt.contains_key(&x)) {
            return Err(ErrorCode::Overlap);
        }
        for i in 0..n {
            pt.insert(v + i, p + i);
        }
        Ok(())
    }
    fn unmap(&mut self, d: u32, iova: u64, len: u64) -> Result<(), ErrorCode> {
        let pt = self.domains.get_mut(&d).ok_or(ErrorCode::NoSuchDomain)?;
        let (v, n) = (iova >> 12, len >> 12);
        assert!(n <= 1 << 20, "unmap of {n} pages got through");
        if !(v..v + n).all(|x| pt.contains_key(&x)) {
            return Err(ErrorCode::NotMapped);
        }
        for x in v..v + n {
            pt.remove(&x);
        }
        Ok(())
    }
    fn pt_pages(&self, d: u32) -> u32 {
        self.domains.get(&d).map_or(0, |pt| {
            1 + pt.keys().map(|v| v >> 9).collect::<BTreeSet<_>>().len() as u32 * 3
        })
    }
    fn drain_events(&mut self, sink: &mut dyn FnMut(CoreEvent)) -> bool {
        for e in self.events.drain(..) {
            sink(e);
        }
        false
    }
}

static CLIENTS: [ClientPolicy; 2] = [
    ClientPolicy {
        name: "a",
        badge: 1,
        streams: &[StreamGrant::with_ssids(StreamId(8), 3)],
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
    let mut h = Box::new(
        Handler::new(MapCore::default(), FakeFrames::new(), Policy::new(&CLIENTS)).unwrap(),
    );
    // Which physical pages each client was given.
    let mut given: [BTreeSet<u64>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let mut rest = data;
    let mut n = 0u64;
    while let [sel, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        n += 1;
        if n > 64 {
            break;
        }
        let badge = u64::from(sel & 3);
        if sel & 0x20 != 0 {
            for (i, &b) in msg.iter().enumerate() {
                let kind = if b & 1 == 0 {
                    FaultKind::Translation
                } else {
                    FaultKind::Permission
                };
                let ev = CoreEvent {
                    stream: StreamId(u32::from(b >> 1) & 0x1f),
                    ssid: Ssid(0),
                    iova: (i as u64) << 10,
                    kind,
                    write: true,
                };
                h.core_mut().events.push(ev);
            }
            let _ = h.route_faults();
            continue;
        }
        let ncaps = usize::from((sel >> 2) & 3);
        let mut caps: Vec<ReceivedCap> = Vec::new();
        for k in 0..ncaps {
            let cap = if sel & 0x10 != 0 && k == 0 {
                h_resolver(&mut h).not_a_frame()
            } else {
                let paddr = 0x1_0000_0000 + (n << 20) + ((k as u64) << 16);
                if (1..=2).contains(&badge) {
                    given[badge as usize - 1].extend((0..4).map(|p| (paddr >> 12) + p));
                }
                h_resolver(&mut h).frame(paddr, 0x4000)
            };
            caps.push(cap);
        }
        let mut out = [0u8; MSG_MAX_BYTES];
        let m = h.handle(badge, msg, &caps, &mut out);
        assert!(decode_reply(&out[..m]).is_ok(), "reply does not decode");
        assert_eq!(h.resolver().double_releases(), 0);
        // Translation invariant.
        let core = h.core();
        for (&(stream, _), d) in &core.attached {
            let owner = if stream == 8 {
                0
            } else {
                assert_eq!(stream, 16);
                1
            };
            for p in core.domains[d].values() {
                assert!(
                    given[owner].contains(p),
                    "stream {stream} reaches page {p:#x} its owner never gave"
                );
            }
        }
    }
});

fn h_resolver(h: &mut Handler<MapCore, FakeFrames>) -> &mut FakeFrames {
    h.resolver_mut()
}
