//! Property tests: random sequences of alloc_domain / free_domain / attach /
//! detach / map / unmap against the software SMMUv3. After every step, for
//! a sample of IOVAs of every (StreamID, SSID), the model's translation -
//! through its STE/CD caches and TLB, which the server must have invalidated,
//! equals the intended mapping kept in a reference map here. An unmapped,
//! detached or freed translation that still answers is a stale cache entry
//! the server forgot to invalidate.

#[path = "model_harness.rs"]
mod harness;

use harness::*;
use iommu_server::{Config, DomainId, Error, Perms};
use proptest::prelude::*;
use smmu_model::spec::evt;
use smmu_model::{Access, Fault, Features, Machine, SyncView};
use std::collections::BTreeMap;

const PAGE: u64 = 4096;
const BLOCK: u64 = 2 << 20;
/// Small region: 64 pages, sampled exhaustively.
const SMALL: u64 = 0x10_0000;
const SMALL_PAGES: u64 = 64;
/// Block region: 4 x 2 MiB, sampled at fixed offsets.
const BIG: u64 = 0x4000_0000;
const BIG_PAGES: u64 = 4 * 512;
const BIG_SAMPLES: [u64; 16] = [
    0, 1, 255, 510, 511, 512, 513, 700, 1023, 1024, 1025, 1300, 1535, 1536, 1800, 2047,
];

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    Free(usize),
    Attach {
        stream: usize,
        ssid: usize,
        dom: usize,
    },
    Detach {
        stream: usize,
        ssid: usize,
    },
    Map {
        dom: usize,
        page: u64,
        n: u64,
        perm: u8,
    },
    MapBlock {
        dom: usize,
        block: u64,
        n: u64,
        perm: u8,
    },
    Unmap {
        dom: usize,
        page: u64,
        n: u64,
    },
    UnmapBig {
        dom: usize,
        page: u64,
        n: u64,
    },
    /// The k-th DMA allocation of the next operation fails.
    FailNext(u64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Alloc),
        1 => any::<usize>().prop_map(Op::Free),
        3 => (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(stream, ssid, dom)| Op::Attach { stream, ssid, dom }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(stream, ssid)| Op::Detach { stream, ssid }),
        4 => (any::<usize>(), 0..SMALL_PAGES, 1..9u64, 0..4u8)
            .prop_map(|(dom, page, n, perm)| Op::Map { dom, page, n, perm }),
        1 => (any::<usize>(), 0..4u64, 1..3u64, 0..4u8)
            .prop_map(|(dom, block, n, perm)| Op::MapBlock { dom, block, n, perm }),
        3 => (any::<usize>(), 0..SMALL_PAGES, 1..12u64)
            .prop_map(|(dom, page, n)| Op::Unmap { dom, page, n }),
        1 => (any::<usize>(), 0..BIG_PAGES, 1..700u64)
            .prop_map(|(dom, page, n)| Op::UnmapBig { dom, page, n }),
        1 => (1..4u64).prop_map(Op::FailNext),
    ]
}

fn perm_of(p: u8) -> Perms {
    match p {
        0 => Perms::RW,
        1 => Perms::READ,
        2 => Perms::RW.union(Perms::PRIV),
        _ => Perms::READ.union(Perms::EXEC),
    }
}

/// Translations that the current operation must not disturb, checked in
/// memory at every CMD_SYNC the operation issues.
#[derive(Default)]
struct Stable {
    pages: Vec<(u32, u32, u64, u64)>,
    failures: Vec<String>,
}

/// IOVA page -> (physical address, permissions).
type Pages = BTreeMap<u64, (u64, Perms)>;

/// What the server was asked for.
#[derive(Default)]
struct Reference {
    /// Live domains, in allocation order, with their page -> (pa, perms).
    doms: Vec<(DomainId, Pages)>,
    /// (sid, ssid) -> domain.
    attached: BTreeMap<(u32, u32), DomainId>,
    next_pa: u64,
}

impl Reference {
    fn dom(&self, i: usize) -> Option<usize> {
        (!self.doms.is_empty()).then(|| i % self.doms.len())
    }
    fn pages(&mut self, id: DomainId) -> &mut BTreeMap<u64, (u64, Perms)> {
        &mut self.doms.iter_mut().find(|d| d.0 == id).unwrap().1
    }
}

struct Run {
    /// An allocation failure is armed for the current operation.
    armed: bool,
    stable: std::sync::Arc<std::sync::Mutex<Stable>>,
    m: Machine,
    s: Server,
    r: Reference,
    streams: Vec<u32>,
    ssids: Vec<u32>,
}

impl Run {
    /// The (sid, ssid, iova, pa) the operation leaves alone: attachments it
    /// does not name, pages outside its range.
    fn untouched(&self, op: &Op) -> Vec<(u32, u32, u64, u64)> {
        let key = |stream: usize, ssid: usize| {
            (
                self.streams[stream % self.streams.len()],
                self.ssids[ssid % self.ssids.len()],
            )
        };
        let dom = |i: usize| self.r.dom(i).map(|d| self.r.doms[d].0);
        type Range = Option<(DomainId, u64, u64)>;
        let (skip_key, range): (Option<(u32, u32)>, Range) = match *op {
            Op::Attach { stream, ssid, .. } | Op::Detach { stream, ssid } => {
                (Some(key(stream, ssid)), None)
            }
            Op::Map {
                dom: d, page, n, ..
            }
            | Op::Unmap { dom: d, page, n } => (
                None,
                dom(d).map(|id| (id, SMALL + page * PAGE, SMALL + (page + n) * PAGE)),
            ),
            Op::MapBlock {
                dom: d, block, n, ..
            } => (
                None,
                dom(d).map(|id| (id, BIG + block * BLOCK, BIG + (block + n) * BLOCK)),
            ),
            Op::UnmapBig { dom: d, page, n } => (
                None,
                dom(d).map(|id| (id, BIG + page * PAGE, BIG + (page + n) * PAGE)),
            ),
            _ => (None, None),
        };
        let mut out = Vec::new();
        for (&(sid, ssid), &id) in &self.r.attached {
            if Some((sid, ssid)) == skip_key {
                continue;
            }
            let pages = &self.r.doms.iter().find(|d| d.0 == id).unwrap().1;
            let step = (pages.len() / 6).max(1);
            for (&iova, &(pa, _)) in pages.iter().step_by(step) {
                if matches!(range, Some((rid, lo, hi)) if rid == id && iova >= lo && iova < hi) {
                    continue;
                }
                out.push((sid, ssid, iova, pa));
            }
        }
        out
    }

    fn step(&mut self, op: &Op, armed: Option<u64>) {
        let untouched = self.untouched(op);
        {
            let mut st = self.stable.lock().unwrap();
            st.pages = untouched;
            st.failures.clear();
        }
        self.step_inner(op, armed);
        let mut st = self.stable.lock().unwrap();
        assert!(
            st.failures.is_empty(),
            "during {op:?}, a translation the operation does not touch was disturbed at a \
             CMD_SYNC:\n  {}",
            st.failures.join("\n  ")
        );
        st.pages.clear();
    }

    fn step_inner(&mut self, op: &Op, armed: Option<u64>) {
        self.armed = armed.is_some();
        if let Some(k) = armed {
            self.m.mem.fail_nth_alloc(k);
        }
        self.apply(op);
        self.m.mem.clear_failures();
    }

    fn apply(&mut self, op: &Op) {
        let armed = self.armed;
        let r = &mut self.r;
        match *op {
            Op::FailNext(_) => {}
            Op::Alloc => match self.s.alloc_domain() {
                Ok(id) => r.doms.push((id, BTreeMap::new())),
                Err(e) => assert!(
                    matches!(e, Error::NoSlot | Error::NoAsid) || (armed && e == Error::NoMemory),
                    "{e:?}"
                ),
            },
            Op::Free(i) => {
                let Some(i) = r.dom(i) else { return };
                let id = r.doms[i].0;
                let busy = r.attached.values().any(|&d| d == id);
                let res = self.s.free_domain(id);
                if busy {
                    assert_eq!(res, Err(Error::Busy));
                } else {
                    assert_eq!(res, Ok(()));
                    r.doms.remove(i);
                }
            }
            Op::Attach { stream, ssid, dom } => {
                let Some(d) = r.dom(dom) else { return };
                let id = r.doms[d].0;
                let key = (
                    self.streams[stream % self.streams.len()],
                    self.ssids[ssid % self.ssids.len()],
                );
                match self.s.attach(key.0, key.1, id) {
                    Ok(()) => {
                        r.attached.insert(key, id);
                    }
                    Err(Error::NoSlot) => {}
                    // A domain gets its ASID at its first attach: none
                    // free, and every other domain's in use by a device.
                    Err(Error::NoAsid) => {}
                    Err(Error::NoMemory) if armed => {}
                    Err(e) => panic!("attach {key:?} -> {id:?}: {e:?}"),
                }
            }
            Op::Detach { stream, ssid } => {
                let key = (
                    self.streams[stream % self.streams.len()],
                    self.ssids[ssid % self.ssids.len()],
                );
                let res = self.s.detach(key.0, key.1);
                if r.attached.remove(&key).is_some() {
                    assert_eq!(res, Ok(()), "detach {key:?}");
                } else {
                    assert_eq!(res, Err(Error::NotAttached), "detach {key:?}");
                }
            }
            Op::Map { dom, page, n, perm } => {
                let Some(d) = r.dom(dom) else { return };
                let n = n.min(SMALL_PAGES - page);
                let iova = SMALL + page * PAGE;
                self.map(d, iova, n, perm_of(perm), PAGE);
            }
            Op::MapBlock {
                dom,
                block,
                n,
                perm,
            } => {
                let Some(d) = r.dom(dom) else { return };
                let n = n.min(4 - block);
                let iova = BIG + block * BLOCK;
                self.map(d, iova, n * 512, perm_of(perm), BLOCK);
            }
            Op::Unmap { dom, page, n } => {
                let Some(d) = r.dom(dom) else { return };
                let n = n.min(SMALL_PAGES - page);
                self.unmap(d, SMALL + page * PAGE, n);
            }
            Op::UnmapBig { dom, page, n } => {
                let Some(d) = r.dom(dom) else { return };
                let n = n.min(BIG_PAGES - page);
                self.unmap(d, BIG + page * PAGE, n);
            }
        }
    }

    fn map(&mut self, d: usize, iova: u64, n: u64, perms: Perms, align: u64) {
        let r = &mut self.r;
        // Physical addresses: fresh, aligned like the IOVA, below 44 bits.
        r.next_pa = (r.next_pa + align - 1) & !(align - 1);
        let pa = 0x1_0000_0000 + r.next_pa;
        r.next_pa += n * PAGE;
        let id = r.doms[d].0;
        let overlap = (0..n).any(|i| r.doms[d].1.contains_key(&(iova + i * PAGE)));
        let res = self.s.map(id, iova, pa, n * PAGE, perms);
        let oom = matches!(&res, Err(e) if self.armed && *e == Error::NoMemory);
        let r = &mut self.r;
        if overlap {
            assert_eq!(res, Err(Error::Overlap), "map {iova:#x}+{n} over a mapping");
        } else if oom {
            // Nothing mapped.
        } else {
            assert_eq!(res, Ok(()), "map {iova:#x}+{n}");
            let pages = r.pages(id);
            for i in 0..n {
                pages.insert(iova + i * PAGE, (pa + i * PAGE, perms));
            }
        }
    }

    fn unmap(&mut self, d: usize, iova: u64, n: u64) {
        let id = self.r.doms[d].0;
        let gone: Vec<u64> = self
            .r
            .pages(id)
            .range(iova..iova + n * PAGE)
            .map(|(&k, _)| k)
            .collect();
        let res = self.s.unmap(id, iova, n * PAGE);
        let oom = matches!(&res, Err(e) if self.armed && *e == Error::NoMemory);
        let pages = self.r.pages(id);
        if gone.is_empty() {
            assert_eq!(res, Err(Error::NotMapped), "unmap {iova:#x}+{n}");
        } else if oom {
            // A block split needed a table: nothing unmapped.
        } else {
            assert_eq!(res, Ok(gone.len() as u64 * PAGE), "unmap {iova:#x}+{n}");
            for k in gone {
                pages.remove(&k);
            }
        }
    }

    /// Every (sid, ssid) translates exactly as the reference says.
    fn check(&mut self, after: &Op) {
        let samples: Vec<u64> = (0..SMALL_PAGES)
            .map(|p| SMALL + p * PAGE)
            .chain(BIG_SAMPLES.iter().map(|p| BIG + p * PAGE))
            .collect();
        for &sid in &self.streams {
            for &ssid in &self.ssids {
                let dom = self.r.attached.get(&(sid, ssid)).copied();
                let empty = BTreeMap::new();
                let pages = match dom {
                    Some(id) => &self.r.doms.iter().find(|d| d.0 == id).unwrap().1,
                    None => &empty,
                };
                for &iova in &samples {
                    let want = dom.and_then(|_| pages.get(&iova).copied());
                    let off = 0x7f8;
                    match want {
                        Some((pa, perms)) => {
                            let got = probe(&self.m, sid, ssid, iova + off, access_for(perms));
                            assert_eq!(
                                got,
                                Ok(pa + off),
                                "after {after:?}: ({sid:#x},{ssid}) iova {iova:#x} should map to {pa:#x}"
                            );
                            let perm_fault = |acc: Access, what: &str| {
                                let got = probe(&self.m, sid, ssid, iova, acc);
                                assert_eq!(
                                    got.map_err(|f| f.code()),
                                    Err(Some(evt::F_PERMISSION)),
                                    "after {after:?}: {what} of {iova:#x} ({perms:?}) via ({sid:#x},{ssid})"
                                );
                            };
                            if perms.contains(Perms::PRIV) {
                                perm_fault(Access::READ, "unprivileged read");
                            }
                            if perms.contains(Perms::EXEC) {
                                assert_eq!(
                                    probe(&self.m, sid, ssid, iova, Access::EXEC),
                                    Ok(pa),
                                    "after {after:?}: exec of {iova:#x} ({perms:?})"
                                );
                            } else {
                                perm_fault(Access::EXEC.privileged(), "privileged exec");
                                perm_fault(Access::EXEC, "exec");
                            }
                            if !perms.contains(Perms::WRITE) {
                                let w = probe(&self.m, sid, ssid, iova, Access::WRITE);
                                assert_eq!(
                                    w.map_err(|f| f.code()),
                                    Err(Some(evt::F_PERMISSION)),
                                    "after {after:?}: write to read-only {iova:#x} of ({sid:#x},{ssid})"
                                );
                            }
                        }
                        None => {
                            let got =
                                probe(&self.m, sid, ssid, iova + off, Access::READ.privileged());
                            match (dom, got) {
                                (Some(_), Err(f)) => assert_eq!(
                                    f.code(),
                                    Some(evt::F_TRANSLATION),
                                    "after {after:?}: ({sid:#x},{ssid}) unmapped {iova:#x}"
                                ),
                                (None, Err(_)) => {}
                                (_, Ok(pa)) => panic!(
                                    "after {after:?}: ({sid:#x},{ssid}) iova {iova:#x} still reaches {pa:#x} \
                                     (attached to {dom:?}); stale STE/CD/TLB entry?"
                                ),
                            }
                        }
                    }
                }
                // A stream with no attachment aborts quietly (STE V = 1,
                // Config = abort), or has no level-2 stream table yet
                // (C_BAD_STREAMID), never C_BAD_STE (an event per DMA).
                if !self.r.attached.keys().any(|k| k.0 == sid) && ssid == 0 {
                    let got = probe(&self.m, sid, 0, SMALL, Access::READ);
                    assert!(
                        got == Err(Fault::Abort)
                            || got.map_err(|f| f.code()) == Err(Some(evt::C_BAD_STREAMID)),
                        "after {after:?}: stream {sid:#x} has no attachment: {got:?}"
                    );
                }
            }
        }
        // Invariants 1 and 2 (DESIGN.md 5), read from memory: an ASID names
        // one page table across all live CDs; a valid CD exists exactly for
        // the attached (StreamID, SSID) pairs.
        let mut by_asid: BTreeMap<u16, u64> = BTreeMap::new();
        for &sid in &self.streams {
            for &ssid in &self.ssids {
                let attached = self.r.attached.contains_key(&(sid, ssid));
                match self.m.smmu.cd_at(sid, bus_ssid(ssid)) {
                    Ok(cd) if cd.valid => {
                        assert!(
                            attached,
                            "after {after:?}: ({sid:#x},{ssid}) has a valid CD but is not attached"
                        );
                        let t = *by_asid.entry(cd.asid).or_insert(cd.ttb0);
                        assert_eq!(
                            t, cd.ttb0,
                            "after {after:?}: ASID {} names two page tables",
                            cd.asid
                        );
                    }
                    other => assert!(
                        !attached,
                        "after {after:?}: ({sid:#x},{ssid}) is attached but its CD is {other:x?}"
                    ),
                }
            }
        }
        // The server's own view agrees with the reference.
        for (id, pages) in &self.r.doms {
            for (&iova, &(pa, _)) in pages.iter().take(8) {
                assert_eq!(self.s.iova_to_phys(*id, iova).map(|x| x.0), Some(pa));
            }
        }
        let c = self.m.smmu.counters();
        assert_eq!(c.cmd_errors, 0, "after {after:?}: a command was rejected");
        assert_eq!(self.m.smmu.violations(), Vec::<String>::new());
    }

    /// Tears everything down and checks nothing leaked.
    fn teardown(&mut self, baseline: &[smmu_model::LiveBlock]) {
        let keys: Vec<_> = self.r.attached.keys().copied().collect();
        for (sid, ssid) in keys {
            assert_eq!(self.s.detach(sid, ssid), Ok(()));
        }
        for (id, _) in std::mem::take(&mut self.r.doms) {
            assert_eq!(self.s.free_domain(id), Ok(()));
        }
        let leaked = leaked_blocks(&self.m, baseline);
        assert!(
            leaked.is_empty(),
            "DMA blocks leaked after freeing every domain: {leaked:x?}"
        );
    }
}

fn run(features: Features, config: Config, ssids: Vec<u32>, ops: &[Op]) {
    run_on(features, config, vec![8, 9, 0x100, 0x1234], ssids, ops)
}

fn run_on(features: Features, config: Config, streams: Vec<u32>, ssids: Vec<u32>, ops: &[Op]) {
    let (m, s) = boot(features, config);
    let baseline = m.mem.live_blocks();
    let stable = std::sync::Arc::new(std::sync::Mutex::new(Stable::default()));
    let hook_state = stable.clone();
    m.smmu
        .set_sync_hook(Some(Box::new(move |v: &mut SyncView<'_>| {
            let mut st = hook_state.lock().unwrap();
            let pages = std::mem::take(&mut st.pages);
            for &(sid, ssid, iova, pa) in &pages {
                let got = v
                    .translate_uncached(sid, bus_ssid(ssid), iova, Access::READ.privileged())
                    .map(|t| t.paddr);
                if got != Ok(pa) {
                    st.failures.push(format!(
                        "sync #{}: ({sid:#x},{ssid}) {iova:#x} -> {got:x?}, expected {pa:#x}",
                        v.sync_index
                    ));
                }
            }
            st.pages = pages;
        })));
    let mut run = Run {
        armed: false,
        stable,
        m,
        s,
        r: Reference::default(),
        streams,
        ssids,
    };
    let mut armed = None;
    for op in ops {
        run.step(op, armed.take());
        if let Op::FailNext(k) = op {
            armed = Some(*k);
        }
        run.check(op);
    }
    // The samples went through the model's TLB, so a missing invalidation
    // would have been served stale (not re-walked). (A second pass makes
    // sure of a hit even if the last step was the first attach.)
    if let Some(last) = ops.last() {
        run.check(last);
    }
    let c = run.m.smmu.counters();
    let r = &run.r;
    let attached_mapped = r
        .attached
        .values()
        .any(|id| r.doms.iter().any(|d| d.0 == *id && !d.1.is_empty()));
    if attached_mapped {
        assert!(c.tlb_hits > 0, "the TLB was never hit: {c:?}");
    }
    run.teardown(&baseline);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// QEMU 7.2's SMMU: no substreams, RIL.
    #[test]
    fn qemu_sequences_translate_as_intended(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run(Features::qemu_7_2(), Config::default(), vec![0], &ops);
    }

    /// No range invalidation: per-VA TLBIs, or TLBI by ASID past the threshold.
    #[test]
    fn no_ril_sequences_translate_as_intended(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let f = Features { ril: false, ..Features::qemu_7_2() };
        run(f, Config::default(), vec![0], &ops);
    }

    /// Few ASIDs (reuse after every free) and a linear stream table.
    #[test]
    fn asid_reuse_sequences_translate_as_intended(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let c = Config { max_asids: 3, linear_strtab: true, ..Config::default() };
        run(Features::qemu_7_2(), c, vec![0], &ops);
    }

    /// 8-bit ASIDs, 8-bit StreamIDs, linear stream table only, no RIL.
    #[test]
    fn small_smmu_sequences_translate_as_intended(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let f = Features {
            asid16: false,
            sidsize: 8,
            two_level_strtab: false,
            ril: false,
            ..Features::qemu_7_2()
        };
        run_on(f, Config::default(), vec![0, 8, 0x80, 0xff], vec![0], &ops);
    }

    /// Tiny queues (2 commands, 2 event records), no RIL: batches of
    /// per-page TLBIs must wrap the command queue correctly.
    #[test]
    fn tiny_queue_sequences_translate_as_intended(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let f = Features { ril: false, ..Features::qemu_7_2() };
        let c = Config { cmdq_log2: 1, evtq_log2: 1, ..Config::default() };
        run(f, c, vec![0], &ops);
    }

    /// Substreams (PASIDs) with 2-level CD tables.
    #[test]
    fn pasid_sequences_translate_as_intended(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let f = Features::with_substreams(8);
        let c = Config { ssid_bits: 8, ..Config::default() };
        run(f, c, vec![0, 1, 5, 70], &ops);
    }
}

/// A fixed sequence covering block splitting and reattachment, so a failure
/// here is easy to read.
#[test]
fn fixed_sequence() {
    let ops = [
        Op::Alloc,
        Op::Alloc,
        Op::Attach {
            stream: 0,
            ssid: 0,
            dom: 0,
        },
        Op::MapBlock {
            dom: 0,
            block: 0,
            n: 2,
            perm: 0,
        },
        Op::Map {
            dom: 0,
            page: 3,
            n: 5,
            perm: 1,
        },
        Op::UnmapBig {
            dom: 0,
            page: 500,
            n: 20,
        },
        Op::Attach {
            stream: 0,
            ssid: 0,
            dom: 1,
        },
        Op::Attach {
            stream: 1,
            ssid: 0,
            dom: 0,
        },
        Op::Unmap {
            dom: 0,
            page: 0,
            n: 10,
        },
        Op::Detach { stream: 1, ssid: 0 },
        Op::Free(0),
    ];
    run(Features::qemu_7_2(), Config::default(), vec![0], &ops);
}
