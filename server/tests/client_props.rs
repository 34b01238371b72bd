//! Property test: arbitrary request sequences from two clients (typed
//! requests, including every cross-client combination of handles, and raw
//! byte strings) against the real core and the SMMU model never panic the
//! handler and never break the translation invariant:
//!
//! * every translation a device of stream S gets lands in memory that S's
//!   owner has registered (and not unregistered);
//! * what the SMMU's caches return equals what the tables in memory say (no
//!   stale STE, CD or TLB entry survives a reply);
//! * a refused request changes no translation and issues no command;
//! * the handler never releases a capability twice.

#[path = "client_support.rs"]
mod support;

use std::collections::BTreeMap;

use iommu_client::{Error, Perms, Region, Ssid, StreamId};
use iommu_protocol::{DomainId, MemoryHandle, MSG_MAX_BYTES};
use proptest::prelude::*;
use smmu_model::{Access, Machine};
use support::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    Free(usize),
    Attach(u32, usize),
    Detach(u32),
    Register(u8),
    Unregister(usize),
    Map {
        d: usize,
        slot: u64,
        m: usize,
        off: u64,
        pages: u64,
        write: bool,
    },
    Unmap {
        d: usize,
        slot: u64,
        pages: u64,
    },
    Batch {
        d: usize,
        entries: Vec<(u64, usize, u64)>,
    },
    Dma(u32, u64),
    Faults,
    Raw(Vec<u8>),
    /// The n-th DMA allocation from now fails (page tables, CD tables).
    FailAlloc(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let sid = prop::sample::select(vec![SID_A, SID_A2, SID_B, 3]);
    prop_oneof![
        3 => Just(Op::Alloc),
        1 => (0usize..256).prop_map(Op::Free),
        3 => (sid.clone(), 0usize..256).prop_map(|(s, d)| Op::Attach(s, d)),
        1 => sid.clone().prop_map(Op::Detach),
        3 => (1u8..=4).prop_map(Op::Register),
        1 => (0usize..256).prop_map(Op::Unregister),
        6 => (0usize..256, 0u64..12, 0usize..256, 0u64..4, 1u64..5, any::<bool>())
            .prop_map(|(d, slot, m, off, pages, write)| Op::Map { d, slot, m, off, pages, write }),
        3 => (0usize..256, 0u64..12, 1u64..5).prop_map(|(d, slot, pages)| Op::Unmap { d, slot, pages }),
        2 => (0usize..256, prop::collection::vec((0u64..12, 0usize..256, 0u64..4), 1..5))
            .prop_map(|(d, entries)| Op::Batch { d, entries }),
        3 => (sid, 0u64..14).prop_map(|(s, slot)| Op::Dma(s, slot)),
        1 => Just(Op::Faults),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::Raw),
        1 => (1u64..4).prop_map(Op::FailAlloc),
    ]
}

/// IOVA of slot `i`: some 4 KiB apart in one 2 MiB block, some in other
/// blocks and tables, one past 1 GiB.
fn iova(slot: u64) -> u64 {
    match slot {
        0..=7 => 0x10_0000 + slot * 0x1000,
        8..=10 => 0x20_0000 * (slot - 6),
        _ => 0x4000_0000 + slot * 0x1000,
    }
}

fn owner(sid: u32) -> Option<u64> {
    match sid {
        SID_A | SID_A2 => Some(A),
        SID_B => Some(B),
        _ => None,
    }
}

/// Translations of every slot for every stream: through the caches and from
/// memory. They must agree, and each must land in the owner's memory.
fn check(m: &Machine, registered: &BTreeMap<u64, Vec<(u64, u64)>>) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for sid in [SID_A, SID_A2, SID_B, 3] {
        for slot in 0..14 {
            let va = iova(slot) + 0x18;
            let cached = m
                .smmu
                .probe(sid, None, va, Access::READ)
                .ok()
                .map(|t| t.paddr);
            let mem = m
                .smmu
                .translate_uncached(sid, None, va, Access::READ)
                .ok()
                .map(|t| t.paddr);
            assert_eq!(
                cached, mem,
                "stream {sid} iova {va:#x}: the SMMU's caches disagree with its tables"
            );
            if let Some(pa) = mem {
                let who = owner(sid).unwrap_or_else(|| panic!("unowned stream {sid} translates"));
                let ok = registered
                    .get(&who)
                    .is_some_and(|v| v.iter().any(|&(p, n)| p <= pa && pa < p + n));
                assert!(
                    ok,
                    "stream {sid} reaches {pa:#x}, not memory its owner registered"
                );
            }
            out.push(mem);
        }
    }
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn request_sequences_keep_the_translation_invariant(
        ops in prop::collection::vec((any::<bool>(), op()), 1..60),
    ) {
        let (m, s) = server();
        let mut clients = [(A, connect(&s, A)), (B, connect(&s, B))];
        // Handles each client was given, so that each can try the other's.
        let mut domains: [Vec<DomainId>; 2] = [Vec::new(), Vec::new()];
        let mut memory: [Vec<MemoryHandle>; 2] = [Vec::new(), Vec::new()];
        let mut registered: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        let mut by_handle: BTreeMap<(u64, u32), Vec<(u64, u64)>> = BTreeMap::new();
        // Start from a state worth attacking: each client has a domain with
        // its stream attached and some memory.
        for (me, (badge, c)) in clients.iter_mut().enumerate() {
            let dom = c.alloc_domain().unwrap();
            domains[me].push(dom);
            let sid = if *badge == A { SID_A } else { SID_B };
            c.attach(StreamId(sid), Ssid(0), dom).unwrap();
            let (pa, cap) = frame(&m, &s, 0x4000);
            let mem = c.register_memory(&[cap]).unwrap();
            memory[me].push(mem.handle);
            registered.entry(*badge).or_default().push((pa, 0x4000));
            by_handle.insert((*badge, mem.handle.0), vec![(pa, 0x4000)]);
        }
        for (who, op) in ops {
            let (badge, c) = &mut clients[usize::from(who)];
            let badge = *badge;
            let before = check(&m, &registered);
            let commands = m.smmu.counters().commands;
            let stats_before = c.stats().unwrap();
            // Mostly the caller's own handles, sometimes the other client's,
            // now and then one nobody was given.
            let me = usize::from(who);
            fn pick<T: Copy>(lists: &[Vec<T>; 2], me: usize, i: usize, bogus: T) -> T {
                let list = &lists[if i & 7 == 0 { 1 - me } else { me }];
                if i % 16 == 1 || list.is_empty() {
                    bogus
                } else {
                    list[(i / 16) % list.len()]
                }
            }
            let d = |i: usize| pick(&domains, me, i, DomainId(0x7f));
            let mh = |i: usize| pick(&memory, me, i, MemoryHandle(0x7f));
            let result: Result<(), Error> = match op {
                Op::Alloc => c.alloc_domain().map(|x| domains[me].push(x)),
                Op::Free(i) => {
                    let h = d(i);
                    let r = c.free_domain(h);
                    if r.is_ok() && i % 4 != 0 {
                        // Mostly forget it; sometimes keep the stale handle.
                        domains[me].retain(|&x| x != h);
                    }
                    r
                }
                Op::Attach(sid, i) => c.attach(StreamId(sid), Ssid(0), d(i)),
                Op::Detach(sid) => c.detach(StreamId(sid), Ssid(0)),
                Op::Register(n) => {
                    let frames: Vec<_> = (0..n).map(|_| frame(&m, &s, 0x2000)).collect();
                    let caps: Vec<_> = frames.iter().map(|f| f.1).collect();
                    let r = c.register_memory(&caps);
                    if let Ok(mem) = r {
                        memory[me].push(mem.handle);
                        let ranges: Vec<_> = frames.iter().map(|f| (f.0, 0x2000)).collect();
                        registered.entry(badge).or_default().extend(ranges.iter().copied());
                        by_handle.insert((badge, mem.handle.0), ranges);
                    }
                    r.map(|_| ())
                }
                Op::Unregister(i) => {
                    let h = mh(i);
                    let r = c.unregister_memory(h);
                    if r.is_ok() {
                        let gone = by_handle.remove(&(badge, h.0)).expect("the client's own handle");
                        registered.get_mut(&badge).unwrap().retain(|x| !gone.contains(x));
                        if i % 4 != 0 {
                            memory[me].retain(|&x| x != h);
                        }
                    }
                    r
                }
                Op::Map { d: i, slot, m: j, off, pages, write } => {
                    let perms = if write { Perms::RW } else { Perms::READ };
                    c.map(d(i), iova(slot), mh(j), off << 12, pages << 12, perms)
                }
                Op::Unmap { d: i, slot, pages } => {
                    let r = c.unmap(d(i), iova(slot), pages << 12);
                    if r.is_ok() {
                        // Gone from the caches too, at once.
                        for k in 0..pages {
                            for sid in [SID_A, SID_A2, SID_B] {
                                let va = iova(slot) + (k << 12);
                                let dom = d(i);
                                let _ = dom;
                                if let Ok(t) = m.smmu.probe(sid, None, va, Access::READ) {
                                    // Only if another domain (or mapping) of the
                                    // stream covers it; the uncached walk agrees.
                                    assert_eq!(
                                        m.smmu.translate_uncached(sid, None, va, Access::READ).map(|x| x.paddr),
                                        Ok(t.paddr)
                                    );
                                }
                            }
                        }
                    }
                    r
                }
                Op::Batch { d: i, entries } => {
                    let regions: Vec<Region> = entries
                        .iter()
                        .map(|&(slot, j, off)| Region { iova: iova(slot), memory: mh(j), offset: off << 12, len: 0x1000, perms: Perms::RW })
                        .collect();
                    c.map_batch(d(i), &regions)
                }
                Op::Dma(sid, slot) => {
                    let _ = m.smmu.dma_write(sid, None, iova(slot), &[0x5a; 16]);
                    let notify = s.borrow_mut().route_faults();
                    for b in notify.iter() {
                        prop_assert!(*b == A || *b == B);
                    }
                    Ok(())
                }
                Op::Faults => c.faults().map(|_| ()),
                Op::FailAlloc(n) => {
                    m.mem.fail_nth_alloc(n);
                    Ok(())
                }
                Op::Raw(bytes) => {
                    let mut out = [0u8; MSG_MAX_BYTES];
                    let n = s.borrow_mut().handle(badge, &bytes, &[], &mut out);
                    prop_assert!(iommu_protocol::decode_reply(&out[..n]).is_ok());
                    Ok(())
                }
            };
            let after = check(&m, &registered);
            if let Err(e) = result {
                prop_assert_eq!(&before, &after, "a refused request changed a translation");
                prop_assert_eq!(c.stats().unwrap(), stats_before, "a refused request changed usage");
                // A request the core failed part-way (out of table memory) was
                // rolled back, which may take commands; anything refused
                // before reaching the core issued none.
                if e != Error::Iommu(iommu_client::ErrorCode::NoMemory) {
                    prop_assert_eq!(m.smmu.counters().commands, commands, "a refused request issued commands");
                }
            }
            prop_assert_eq!(s.borrow().resolver().double_releases(), 0);
        }
    }
}
