//! Page-table geometry under random map/unmap: mappings from 4 KiB to 1 GiB
//! in a window that straddles 1 GiB boundaries, unmaps of arbitrary ranges
//! (splitting 1 GiB and 2 MiB blocks at either end, freeing tables). After
//! every step the model (through its TLB and walk cache) and the server's
//! `iova_to_phys` agree with a reference range map at the edges and inside
//! of every mapped range and every hole.

#[path = "model_harness.rs"]
mod harness;

use harness::*;
use iommu_server::{Config, Error, Perms};
use proptest::prelude::*;
use smmu_model::spec::evt;
use smmu_model::{Access, Features, Machine, SyncView};
use std::sync::{Arc, Mutex};

const PAGE: u64 = 4096;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Window: 960 MiB .. 2 GiB + 64 MiB (contains [1 GiB, 2 GiB)).
const LO: u64 = GIB - 64 * (1 << 20);
const HI: u64 = 2 * GIB + 64 * (1 << 20);
const PA_OFF: u64 = 0x10_0000_0000;
const SID: u32 = 8;

#[derive(Debug, Clone)]
enum Op {
    Map { at: u64, len: u64 },
    Unmap { at: u64, len: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    // Sizes: pages, a few 2 MiB blocks (+ pages), 1 GiB.
    let len = prop_oneof![
        4 => (1..64u64).prop_map(|n| n * PAGE),
        3 => (1..4u64, 0..3u64).prop_map(|(b, p)| b * MIB2 + p * PAGE),
        1 => Just(GIB),
    ];
    // Starts: any page, 2 MiB aligned, or 1 GiB.
    let at = prop_oneof![
        3 => (0..(HI - LO) / PAGE).prop_map(|p| LO + p * PAGE),
        3 => (0..(HI - LO) / MIB2).prop_map(|b| LO + b * MIB2),
        1 => Just(GIB),
    ];
    prop_oneof![
        3 => (at.clone(), len.clone()).prop_map(|(at, len)| Op::Map { at, len }),
        2 => (at, len).prop_map(|(at, len)| Op::Unmap { at, len }),
    ]
}

/// Mapped ranges [start, end) -> pa of start, disjoint.
#[derive(Default, Debug)]
struct Ranges(std::collections::BTreeMap<u64, (u64, u64)>);

impl Ranges {
    fn overlaps(&self, lo: u64, hi: u64) -> bool {
        self.0.iter().any(|(&s, &(e, _))| s < hi && lo < e)
    }
    fn insert(&mut self, lo: u64, hi: u64, pa: u64) {
        self.0.insert(lo, (hi, pa));
    }
    /// Removes [lo, hi); returns the bytes that were mapped.
    fn remove(&mut self, lo: u64, hi: u64) -> u64 {
        let mut removed = 0;
        let hits: Vec<_> = self
            .0
            .iter()
            .filter(|(&s, &(e, _))| s < hi && lo < e)
            .map(|(&s, &v)| (s, v))
            .collect();
        for (s, (e, pa)) in hits {
            self.0.remove(&s);
            let (cs, ce) = (s.max(lo), e.min(hi));
            removed += ce - cs;
            if s < cs {
                self.0.insert(s, (cs, pa));
            }
            if ce < e {
                self.0.insert(ce, (e, pa + (ce - s)));
            }
        }
        removed
    }
    fn lookup(&self, iova: u64) -> Option<u64> {
        let (&s, &(e, pa)) = self.0.range(..=iova).next_back()?;
        (iova < e).then(|| pa + (iova - s))
    }
    /// Addresses worth probing: edges and middles of ranges and holes.
    fn samples(&self, salt: u64) -> Vec<u64> {
        let mut v = vec![LO, HI - PAGE];
        let mut prev_end = LO;
        for (&s, &(e, _)) in &self.0 {
            let mid = s + ((salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (e - s)) & !(PAGE - 1));
            v.extend([s, e - PAGE, mid]);
            if prev_end < s {
                v.extend([prev_end, s - PAGE]);
            }
            prev_end = e;
        }
        if prev_end < HI {
            v.push(prev_end);
        }
        v
    }
}

fn run(features: Features, ops: &[Op]) {
    let (m, s) = boot(features, Config::default());
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    let mut r = Ranges::default();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Map { at, len } => {
                let hi = (at + len).min(HI);
                let len = hi - at;
                let res = s.map(d, at, at + PA_OFF, len, Perms::RW);
                if r.overlaps(at, hi) {
                    assert_eq!(res, Err(Error::Overlap), "{op:?}");
                } else {
                    assert_eq!(res, Ok(()), "{op:?}");
                    r.insert(at, hi, at + PA_OFF);
                }
            }
            Op::Unmap { at, len } => {
                let hi = (at + len).min(HI);
                let want = r.remove(at, hi);
                let res = s.unmap(d, at, hi - at);
                if want == 0 {
                    assert_eq!(res, Err(Error::NotMapped), "{op:?}");
                } else {
                    assert_eq!(res, Ok(want), "{op:?}");
                }
            }
        }
        check(&m, &s, d, &r, i as u64, op);
    }
    // Everything unmapped: every table but the root is freed.
    let _ = s.unmap(d, LO, HI - LO);
    let info = s.domain_info(d).unwrap();
    assert!(
        info.table_pages <= 1,
        "after unmapping everything the domain still has {} table pages",
        info.table_pages
    );
    assert_eq!(m.smmu.counters().cmd_errors, 0);
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
}

fn check(m: &Machine, s: &Server, d: iommu_server::DomainId, r: &Ranges, salt: u64, op: &Op) {
    for iova in r.samples(salt) {
        let want = r.lookup(iova);
        let got = m.smmu.probe(SID, None, iova + 0x10, Access::WRITE);
        match want {
            Some(pa) => assert_eq!(
                got.map(|t| t.paddr),
                Ok(pa + 0x10),
                "after {op:?}: {iova:#x} should map to {pa:#x}"
            ),
            None => assert_eq!(
                got.map(|t| t.paddr).map_err(|f| f.code()),
                Err(Some(evt::F_TRANSLATION)),
                "after {op:?}: {iova:#x} should be unmapped"
            ),
        }
        assert_eq!(
            s.iova_to_phys(d, iova).map(|x| x.0),
            want,
            "after {op:?}: server's iova_to_phys({iova:#x})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn geometry_with_ril(ops in prop::collection::vec(op(), 1..30)) {
        run(Features::qemu_7_2(), &ops);
    }

    #[test]
    fn geometry_without_ril(ops in prop::collection::vec(op(), 1..30)) {
        run(Features { ril: false, ..Features::qemu_7_2() }, &ops);
    }

    #[test]
    fn geometry_without_bbml(ops in prop::collection::vec(op(), 1..30)) {
        run(Features { bbml: 0, ..Features::qemu_7_2() }, &ops);
    }
}

/// What the SMMU's tables said for the part of a 2 MiB block that an unmap
/// of one page in it keeps, at each CMD_SYNC of that unmap.
fn kept_part_at_each_sync(bbml: u8) -> Vec<bool> {
    let (m, s) = boot(
        Features {
            bbml,
            ..Features::qemu_7_2()
        },
        Config::default(),
    );
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    let block = 8 * MIB2;
    s.map(d, block, PA_OFF, MIB2, Perms::RW).unwrap();
    // The block is in the TLB, as in a driver whose device is busy.
    assert_eq!(
        m.smmu
            .probe(SID, None, block, Access::WRITE)
            .map(|t| t.paddr),
        Ok(PA_OFF)
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    m.smmu
        .set_sync_hook(Some(Box::new(move |v: &mut SyncView<'_>| {
            let kept = v.translate_uncached(SID, None, block + MIB2 - PAGE, Access::WRITE);
            hook_seen.lock().unwrap().push(kept.is_ok());
        })));
    assert_eq!(s.unmap(d, block + 5 * PAGE, PAGE), Ok(PAGE));
    m.smmu.set_sync_hook(None);
    // Whatever happened in between, the kept part maps and the page is gone.
    assert_eq!(
        m.smmu
            .probe(SID, None, block + MIB2 - PAGE, Access::WRITE)
            .map(|t| t.paddr),
        Ok(PA_OFF + MIB2 - PAGE)
    );
    assert!(m
        .smmu
        .probe(SID, None, block + 5 * PAGE, Access::WRITE)
        .is_err());
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
    let seen = seen.lock().unwrap().clone();
    seen
}

#[test]
fn without_bbml_a_block_is_invalid_while_its_old_entry_is_invalidated() {
    // SMMUv3 3.21.1: without BBML level 2 a live block may not be replaced
    // by a table; the server breaks it (invalid, TLBI, CMD_SYNC), then makes
    // the table, then removes the page (TLBI, CMD_SYNC).
    assert_eq!(kept_part_at_each_sync(0), vec![false, true]);
    assert_eq!(kept_part_at_each_sync(1), vec![false, true]);
    // With it (QEMU), the table replaces the block directly: one sync.
    assert_eq!(kept_part_at_each_sync(2), vec![true]);
}

#[test]
fn split_gigabyte_block_at_both_ends() {
    run(
        Features::qemu_7_2(),
        &[
            Op::Map { at: GIB, len: GIB },
            Op::Unmap {
                at: GIB - 8 * PAGE,
                len: MIB2 + 16 * PAGE,
            },
            Op::Unmap {
                at: 2 * GIB - MIB2 - 3 * PAGE,
                len: MIB2,
            },
            Op::Map {
                at: GIB + MIB2,
                len: 5 * PAGE,
            },
        ],
    );
}
