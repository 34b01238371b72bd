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

use std::collections::BTreeSet;

use iommu_protocol::{decode_reply, FaultKind, Ssid, StreamId, MSG_MAX_BYTES};
use iommu_server::handler::reference::RefCore;
use iommu_server::handler::{CoreEvent, FakeFrames, Handler, ReceivedCap};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use libfuzzer_sys::fuzz_target;

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
        // The reference core: the contract the handler relies on, nothing more.
        Handler::new(
            RefCore::with_ssid_bits(2),
            FakeFrames::new(),
            Policy::new(&CLIENTS),
        )
        .unwrap(),
    );
    h.grant_everything();
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
            for (p, _) in core.domains[d].values() {
                assert!(
                    given[owner].contains(p),
                    "stream {stream} reaches page {p:#x} its owner never gave"
                );
            }
        }
    }
});

fn h_resolver(h: &mut Handler<RefCore, FakeFrames>) -> &mut FakeFrames {
    h.resolver_mut()
}
