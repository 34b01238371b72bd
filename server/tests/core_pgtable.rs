//! Stage-1 page tables: leaf-size choice, permissions, overlap, split,
//! freeing, out-of-memory rollback; and the invalidation each unmap issues.

#[path = "core_support.rs"]
mod support;

use iommu_server::pgtable::{
    pte_attrs, Gather, IoPageTable, PTE_AP_RDONLY, PTE_AP_UNPRIV, PTE_PXN, PTE_UXN,
};
use iommu_server::{Command, Config, DomainId, Error, Perms, Result, WaitFor};
use support::*;

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

fn no_flush() -> impl FnMut(&Gather) -> Result<()> {
    |_g: &Gather| Ok(())
}

fn leaves(pt: &IoPageTable) -> Vec<(u64, u64, u64, Perms)> {
    let mut v = Vec::new();
    pt.for_each_leaf(&mut |va, pa, sz, p| v.push((va, pa, sz, p)));
    v
}

#[test]
fn leaf_sizes_are_chosen_automatically() {
    let mut a = HostAlloc::new();
    let mut pt = IoPageTable::new(&mut a, 44, 2).unwrap();
    let mut f = no_flush();
    // 4K + 2M + 1G + 2M + 4K, all congruent
    let iova = G1 - M2 - K4;
    let pa = 0x10_0000_0000 - M2 - K4;
    pt.map(&mut a, iova, pa, K4 + M2 + G1 + M2 + K4, Perms::RW, &mut f)
        .unwrap();
    let sizes: Vec<u64> = leaves(&pt).iter().map(|l| l.2).collect();
    assert_eq!(sizes, vec![K4, M2, G1, M2, K4]);
    for (va, p, _, perms) in leaves(&pt) {
        assert_eq!(p - pa, va - iova);
        assert_eq!(perms, Perms::RW);
    }
    assert_eq!(
        pt.iova_to_phys(G1 + 0x1234_5678),
        Some((pa + K4 + M2 + 0x1234_5678, Perms::RW))
    );
    assert_eq!(pt.iova_to_phys(iova - K4), None);
    // 1 root + L1 + (L2 for first GB) + L2 for third GB + 2 L3 tables
    assert_eq!(pt.table_pages(), 6);
    // misaligned physical address: only 4 KiB leaves
    let mut pt2 = IoPageTable::new(&mut a, 44, 2).unwrap();
    pt2.map(&mut a, 0, K4, M2, Perms::READ, &mut f).unwrap();
    assert_eq!(leaves(&pt2).len(), 512);
}

#[test]
fn permission_bits() {
    let base = pte_attrs(Perms::RW);
    // AF, nG, SH inner, AttrIndx 1 (normal WB), AP[1]=1 (unpriv), XN
    assert_eq!(base & (1 << 10), 1 << 10);
    assert_eq!(base & (1 << 11), 1 << 11);
    assert_eq!((base >> 8) & 3, 3);
    assert_eq!((base >> 2) & 7, 1);
    assert_eq!(base & PTE_AP_UNPRIV, PTE_AP_UNPRIV);
    assert_eq!(base & PTE_AP_RDONLY, 0);
    assert_eq!(base & (PTE_UXN | PTE_PXN), PTE_UXN | PTE_PXN);
    let ro = pte_attrs(Perms::READ);
    assert_eq!(ro & PTE_AP_RDONLY, PTE_AP_RDONLY);
    let px = pte_attrs(Perms::READ | Perms::PRIV | Perms::EXEC);
    assert_eq!(px & (PTE_AP_UNPRIV | PTE_UXN | PTE_PXN), 0);
    let dev = pte_attrs(Perms::RW | Perms::DEVICE);
    assert_eq!((dev >> 2) & 7, 2);
    let mut a = HostAlloc::new();
    let mut pt = IoPageTable::new(&mut a, 44, 2).unwrap();
    let mut f = no_flush();
    for (i, p) in [
        Perms::READ,
        Perms::RW,
        Perms::READ | Perms::EXEC,
        Perms::RW | Perms::PRIV,
        Perms::RW | Perms::DEVICE,
    ]
    .into_iter()
    .enumerate()
    {
        let iova = i as u64 * K4;
        pt.map(&mut a, iova, 0x8000_0000 + iova, K4, p, &mut f)
            .unwrap();
        assert_eq!(pt.iova_to_phys(iova).unwrap().1, p);
    }
    // write-only is write+read on stage 1
    pt.map(&mut a, 0x10_0000, 0, K4, Perms::WRITE, &mut f)
        .unwrap();
    assert_eq!(pt.iova_to_phys(0x10_0000).unwrap().1, Perms::RW);
    assert_eq!(
        pt.map(&mut a, 0x20_0000, 0, K4, Perms::EXEC, &mut f),
        Err(Error::Unsupported)
    );
}

#[test]
fn argument_errors_change_nothing() {
    let mut a = HostAlloc::new();
    let mut pt = IoPageTable::new(&mut a, 44, 2).unwrap();
    let mut f = no_flush();
    assert_eq!(
        pt.map(&mut a, 0x123, 0, K4, Perms::RW, &mut f),
        Err(Error::Misaligned)
    );
    assert_eq!(
        pt.map(&mut a, 0, 0x123, K4, Perms::RW, &mut f),
        Err(Error::Misaligned)
    );
    assert_eq!(
        pt.map(&mut a, 0, 0, 0x800, Perms::RW, &mut f),
        Err(Error::Misaligned)
    );
    assert_eq!(
        pt.map(&mut a, 0, 0, 0, Perms::RW, &mut f),
        Err(Error::Misaligned)
    );
    assert_eq!(
        pt.map(&mut a, (1 << 48) - K4, 0, 2 * K4, Perms::RW, &mut f),
        Err(Error::OutOfRange)
    );
    assert_eq!(
        pt.map(&mut a, u64::MAX - 0xfff, 0, K4, Perms::RW, &mut f),
        Err(Error::OutOfRange)
    );
    assert_eq!(
        pt.map(&mut a, 0, (1 << 44) - K4, 2 * K4, Perms::RW, &mut f),
        Err(Error::OutOfRange)
    );
    assert_eq!(
        pt.map(&mut a, 0, u64::MAX - 0xfff, K4, Perms::RW, &mut f),
        Err(Error::OutOfRange)
    );
    let mut g = Gather::default();
    assert_eq!(
        pt.unmap(&mut a, 0, K4, &mut g, &mut f),
        Err(Error::NotMapped)
    );
    assert_eq!(
        pt.unmap(&mut a, 1, K4, &mut g, &mut f),
        Err(Error::Misaligned)
    );
    assert_eq!(pt.table_pages(), 1);
    assert_eq!(a.live(), 1);
}

#[test]
fn overlap_checks_whole_range_first() {
    let mut a = HostAlloc::new();
    let mut pt = IoPageTable::new(&mut a, 44, 2).unwrap();
    let mut f = no_flush();
    pt.map(
        &mut a,
        0x40_0000 + 5 * K4,
        0x9000_0000,
        K4,
        Perms::RW,
        &mut f,
    )
    .unwrap();
    let before = leaves(&pt);
    let live = a.live();
    // the conflict is at the end of a range that would need new tables first
    assert_eq!(
        pt.map(&mut a, 0, 0, 0x40_0000 + 6 * K4, Perms::RW, &mut f),
        Err(Error::Overlap)
    );
    assert_eq!(
        pt.map(&mut a, 0x40_0000 + 5 * K4, 0, K4, Perms::RW, &mut f),
        Err(Error::Overlap)
    );
    assert_eq!(leaves(&pt), before);
    assert_eq!(a.live(), live);
    // a block over an existing page, and a page inside an existing block
    pt.map(&mut a, G1, 0, G1, Perms::RW, &mut f).unwrap();
    assert_eq!(
        pt.map(&mut a, G1 + 7 * K4, 0, K4, Perms::RW, &mut f),
        Err(Error::Overlap)
    );
    assert_eq!(
        pt.map(&mut a, 0, 0, M2 * 4, Perms::RW, &mut f),
        Err(Error::Overlap)
    );
}

#[test]
fn split_blocks_on_partial_unmap_and_free_tables() {
    let mut a = HostAlloc::new();
    let mut pt = IoPageTable::new(&mut a, 44, 2).unwrap();
    let mut f = no_flush();
    pt.map(&mut a, G1, 0x8000_0000, G1, Perms::RW, &mut f)
        .unwrap();
    assert_eq!(pt.table_pages(), 2);
    // one page in the middle of the 1 GiB block: L1 block -> L2 table -> L3 table
    let mut g = Gather::default();
    let hole = G1 + 3 * M2 + 5 * K4;
    assert_eq!(pt.unmap(&mut a, hole, K4, &mut g, &mut f), Ok(K4));
    pt.finish(&mut a, &mut g, &mut f).unwrap();
    assert_eq!(pt.iova_to_phys(hole), None);
    assert_eq!(
        pt.iova_to_phys(hole - K4),
        Some((0x8000_0000 + 3 * M2 + 4 * K4, Perms::RW))
    );
    assert_eq!(
        pt.iova_to_phys(hole + K4),
        Some((0x8000_0000 + 3 * M2 + 6 * K4, Perms::RW))
    );
    assert_eq!(
        pt.iova_to_phys(G1 + G1 - K4),
        Some((0x8000_0000 + G1 - K4, Perms::RW))
    );
    assert_eq!(pt.table_pages(), 4);
    let l = leaves(&pt);
    assert_eq!(l.iter().map(|x| x.2).sum::<u64>(), G1 - K4);
    assert_eq!(l.iter().filter(|x| x.2 == M2).count(), 511);
    assert_eq!(l.iter().filter(|x| x.2 == K4).count(), 511);
    // unmap an unaligned range straddling two 2 MiB blocks
    let mut g = Gather::default();
    let start = G1 + 10 * M2 - 3 * K4;
    assert_eq!(pt.unmap(&mut a, start, 6 * K4, &mut g, &mut f), Ok(6 * K4));
    pt.finish(&mut a, &mut g, &mut f).unwrap();
    assert_eq!(
        pt.iova_to_phys(start - K4).map(|x| x.0),
        Some(0x8000_0000 + 10 * M2 - 4 * K4)
    );
    assert_eq!(
        pt.iova_to_phys(start + 6 * K4).map(|x| x.0),
        Some(0x8000_0000 + 10 * M2 + 3 * K4)
    );
    assert_eq!(pt.table_pages(), 6);
    // everything away: all tables but the root freed
    let mut g = Gather::default();
    assert_eq!(
        pt.unmap(&mut a, 0, 1 << 48, &mut g, &mut f),
        Ok(G1 - 7 * K4)
    );
    assert!(g.tables_removed);
    pt.finish(&mut a, &mut g, &mut f).unwrap();
    assert_eq!(pt.table_pages(), 1);
    assert_eq!(a.live(), 1);
    assert!(leaves(&pt).is_empty());
    pt.destroy(&mut a);
    assert_eq!(a.live(), 0);
    assert_eq!(a.bad_frees(), 0);
}

/// The gathers `unmap` flushed, as (start, end, leaf level).
fn flushed(log: &std::cell::RefCell<Vec<(u64, u64, Option<u8>)>>) -> Vec<(u64, u64, Option<u8>)> {
    log.borrow().clone()
}

#[test]
fn without_bbml_a_split_block_is_broken_and_invalidated_before_the_table() {
    for bbml in [0, 1, 2] {
        let mut a = HostAlloc::new();
        let mut pt = IoPageTable::new(&mut a, 44, bbml).unwrap();
        pt.map(&mut a, 4 * M2, 0x8000_0000, M2, Perms::RW, &mut no_flush())
            .unwrap();
        let log = std::cell::RefCell::new(Vec::new());
        let mut f = |g: &Gather| -> Result<()> {
            log.borrow_mut().push((g.start, g.end, g.leaf_level()));
            Ok(())
        };
        let mut g = Gather::default();
        let hole = 4 * M2 + 7 * K4;
        assert_eq!(pt.unmap(&mut a, hole, K4, &mut g, &mut f), Ok(K4));
        let breaks = flushed(&log);
        if bbml < 2 {
            // One flush of the whole block at level 2, during the unmap.
            assert_eq!(breaks, vec![(4 * M2, 5 * M2, Some(2))], "BBML {bbml}");
        } else {
            assert_eq!(breaks, vec![], "BBML {bbml}: no flush inside the unmap");
        }
        pt.finish(&mut a, &mut g, &mut f).unwrap();
        assert_eq!(pt.iova_to_phys(hole), None);
        assert_eq!(
            pt.iova_to_phys(hole + K4).map(|x| x.0),
            Some(0x8000_0000 + 8 * K4)
        );
        assert_eq!(
            leaves(&pt).iter().map(|x| x.2).sum::<u64>(),
            M2 - K4,
            "BBML {bbml}"
        );
    }
}

#[test]
fn a_failed_break_puts_the_block_back() {
    let mut a = HostAlloc::new();
    let mut pt = IoPageTable::new(&mut a, 44, 0).unwrap();
    pt.map(&mut a, G1, 0x8000_0000, G1, Perms::RW, &mut no_flush())
        .unwrap();
    let before = leaves(&pt);
    let pages = pt.table_pages();
    let live = a.live();
    let mut timeout = |_g: &Gather| -> Result<()> { Err(Error::Timeout(WaitFor::CmdSync)) };
    let mut g = Gather::default();
    assert_eq!(
        pt.unmap(&mut a, G1 + 3 * M2 + 5 * K4, K4, &mut g, &mut timeout),
        Err(Error::Timeout(WaitFor::CmdSync))
    );
    assert_eq!(leaves(&pt), before);
    assert_eq!(pt.table_pages(), pages);
    assert_eq!(a.live(), live, "the spare tables went back");
    // The same unmap once the SMMU answers again.
    let mut g = Gather::default();
    assert_eq!(
        pt.unmap(&mut a, G1 + 3 * M2 + 5 * K4, K4, &mut g, &mut no_flush()),
        Ok(K4)
    );
}

#[test]
fn out_of_memory_mid_map_is_undone() {
    let mut a = HostAlloc::new();
    let mut pt = IoPageTable::new(&mut a, 44, 2).unwrap();
    let flushes = std::cell::Cell::new(0);
    let mut f = |_g: &Gather| -> Result<()> {
        flushes.set(flushes.get() + 1);
        Ok(())
    };
    pt.map(&mut a, 0, 0, K4, Perms::RW, &mut f).unwrap();
    let pages = pt.table_pages();
    let live = a.live();
    // 4 MiB of 4 KiB pages straddling 3 L3 tables: needs 2 new L3 tables
    a.set_budget(Some(1));
    assert_eq!(
        pt.map(
            &mut a,
            M2 - 8 * K4,
            0x100_0000,
            M2 + 16 * K4,
            Perms::RW,
            &mut f
        ),
        Err(Error::NoMemory)
    );
    assert_eq!(pt.table_pages(), pages);
    assert_eq!(a.live(), live);
    assert_eq!(leaves(&pt).len(), 1);
    assert_eq!(flushes.get(), 1, "undone leaves were invalidated");
    // a path needing three fresh tables with budget for two: nothing linked
    a.set_budget(Some(2));
    assert_eq!(
        pt.map(&mut a, 1 << 40, 0, K4, Perms::RW, &mut f),
        Err(Error::NoMemory)
    );
    assert_eq!(a.live(), live);
    a.set_budget(None);
    pt.map(
        &mut a,
        M2 - 8 * K4,
        0x100_0000,
        M2 + 16 * K4,
        Perms::RW,
        &mut f,
    )
    .unwrap();
    // out of memory for a split: nothing changes
    pt.map(&mut a, G1, 0, G1, Perms::RW, &mut f).unwrap();
    let before = leaves(&pt);
    let pages = pt.table_pages();
    a.set_budget(Some(1)); // needs 2 (L2 + L3)
    let mut g = Gather::default();
    assert_eq!(
        pt.unmap(&mut a, G1 + K4, K4, &mut g, &mut f),
        Err(Error::NoMemory)
    );
    assert_eq!(leaves(&pt), before);
    assert_eq!(pt.table_pages(), pages);
    assert!(g.is_empty());
    a.set_budget(None);
}

// ------------------------------------------------------- invalidation

fn smmu(
    ril: bool,
) -> (
    FakeSmmu,
    iommu_server::Smmu<FakeSmmu, HostAlloc, CountDelay>,
) {
    let fake = FakeSmmu::qemu();
    let cfg = Config {
        use_ril: ril,
        ..test_config()
    };
    let s = smmu_with(&fake, &HostAlloc::new(), cfg).unwrap();
    fake.clear_log();
    (fake, s)
}

/// As [`smmu`], with the allocator at hand.
fn smmu_alloc() -> (
    FakeSmmu,
    HostAlloc,
    iommu_server::Smmu<FakeSmmu, HostAlloc, CountDelay>,
) {
    let fake = FakeSmmu::qemu();
    let alloc = HostAlloc::new();
    let s = smmu_with(&fake, &alloc, test_config()).unwrap();
    fake.clear_log();
    (fake, alloc, s)
}

/// Issue 13, item 5: tables an unmap unlinked, whose invalidation then
/// timed out, are neither lost nor freed early: they stay counted, and the
/// next unmap that flushes (or freeing the domain) frees them.
#[test]
fn tables_of_an_unmap_whose_flush_timed_out_are_freed_by_the_next() {
    let (fake, alloc, s) = smmu_alloc();
    let d = attached_domain(&fake, &s);
    let base = alloc.live();
    let pages = s.domain_info(d).unwrap().table_pages;
    s.map(d, 0x4000_0000, 0x8000_0000, K4, Perms::RW).unwrap();
    s.map(d, 0x10_0000, 0x8000_0000, K4, Perms::RW).unwrap();
    let mapped = (alloc.live(), s.domain_info(d).unwrap().table_pages);
    assert!(mapped.0 > base + 2);
    fake.set_consumer(Consumer::Stuck);
    assert!(matches!(
        s.unmap(d, 0x4000_0000, K4),
        Err(Error::Timeout(_))
    ));
    fake.set_consumer(Consumer::Immediate);
    // Its leaf and level-2 tables are unlinked, not yet freed: still
    // counted.
    assert_eq!(
        (alloc.live(), s.domain_info(d).unwrap().table_pages),
        mapped
    );
    // The next unmap's flush covers them (walk caches included) too.
    fake.clear_log();
    s.unmap(d, 0x10_0000, K4).unwrap();
    assert!(
        fake.log()
            .iter()
            .any(|c| c[0] as u8 == op::TLBI_NH_ASID
                || (c[0] as u8 == op::TLBI_NH_VA && c[1] & 1 == 0)),
        "no walk-cache invalidation for the tables: {:x?}",
        fake.log()
    );
    assert_eq!(alloc.live(), base);
    assert_eq!(s.domain_info(d).unwrap().table_pages, pages);
    // And when the domain goes first, it frees them.
    s.map(d, 0x4000_0000, 0x8000_0000, K4, Perms::RW).unwrap();
    fake.set_consumer(Consumer::Stuck);
    assert!(s.unmap(d, 0x4000_0000, K4).is_err());
    fake.set_consumer(Consumer::Immediate);
    s.detach(1, 0).unwrap();
    s.free_domain(d).unwrap();
    // The stream's CD table and the domain's tables went.
    assert_eq!(alloc.live(), base - 1 - pages as usize);
    assert_eq!(alloc.bad_frees(), 0);
}

/// Issue 13, item 5: an unmap that empties more tables than a gather holds
/// flushes half-way; when that flush times out, the table that did not fit
/// stays linked (empty) instead of being unlinked and lost.
#[test]
fn a_full_gather_whose_flush_times_out_loses_no_table() {
    let (fake, alloc, s) = smmu_alloc();
    let d = attached_domain(&fake, &s);
    let base = alloc.live();
    let pages = s.domain_info(d).unwrap().table_pages;
    // One page in each of 20 leaf tables (one 2 MiB region each).
    for i in 0..20u64 {
        s.map(d, i * M2, 0x8000_0000, K4, Perms::RW).unwrap();
    }
    fake.set_consumer(Consumer::Stuck);
    assert!(s.unmap(d, 0, 20 * M2).is_err());
    fake.set_consumer(Consumer::Immediate);
    // Whatever is linked or waiting is still counted, and freeing the
    // domain frees all of it.
    assert_eq!(
        alloc.live() - base,
        (s.domain_info(d).unwrap().table_pages - pages) as usize
    );
    s.detach(1, 0).unwrap();
    s.free_domain(d).unwrap();
    // The stream's CD table and the domain's tables went.
    assert_eq!(
        alloc.live(),
        base - 1 - pages as usize,
        "table memory leaked"
    );
    assert_eq!(alloc.bad_frees(), 0);
}

/// A domain with a stream attached: a domain gets its ASID at its first
/// attach, and an unmap invalidates only an ASID some CD carries.
fn attached_domain(
    fake: &FakeSmmu,
    s: &iommu_server::Smmu<FakeSmmu, HostAlloc, CountDelay>,
) -> DomainId {
    let d = s.alloc_domain().unwrap();
    s.attach(1, 0, d).unwrap();
    assert_ne!(s.domain_info(d).unwrap().asid, 0);
    fake.clear_log();
    d
}

#[test]
fn map_issues_no_commands_unmap_one_sync() {
    let (fake, s) = smmu(true);
    let d = attached_domain(&fake, &s);
    s.map(d, 0x10_0000, 0x8000_0000, 16 * K4, Perms::RW)
        .unwrap();
    assert!(fake.log().is_empty());
    // range TLBI: 16 pages = (NUM 0 + 1) << SCALE 4; tables freed -> Leaf = 0
    s.unmap(d, 0x10_0000, 16 * K4).unwrap();
    let asid = s.domain_info(d).unwrap().asid;
    let log = fake.log();
    assert_eq!(fake.opcodes(), vec![op::TLBI_NH_VA, op::CMD_SYNC]);
    let c = log[0];
    assert_eq!(c[0] >> 48, asid as u64);
    assert_eq!((c[0] >> 12) & 0x1f, 0); // NUM+1 = 1 ...
    assert_eq!((c[0] >> 20) & 0x1f, 4); // ... << SCALE 4 = 16 pages
    assert_eq!((c[1] >> 10) & 3, 1); // TG 4K
    assert_eq!(c[1] & !0xfff, 0x10_0000);
    assert_eq!(c[1] & 1, 0, "tables were freed: Leaf = 0");
    // 19 pages = 0b10011: one command, NUM 18, SCALE 0
    s.map(d, 0x10_0000, 0x8000_0000, 20 * K4, Perms::RW)
        .unwrap();
    fake.clear_log();
    s.unmap(d, 0x10_0000, 19 * K4).unwrap();
    let log = fake.log();
    assert_eq!(fake.opcodes(), vec![op::TLBI_NH_VA, op::CMD_SYNC]);
    assert_eq!((log[0][0] >> 12) & 0x1f, 18);
    assert_eq!(log[0][1] & 1, 1, "no table freed: Leaf = 1");
    // 33 pages, tables freed (TTL unknown): NUM = SCALE = TTL = 0 is
    // reserved, so 34 pages are invalidated with one command (17 << 1)
    s.map(d, 0x40_0000, 0x8000_0000, 33 * K4, Perms::RW)
        .unwrap();
    fake.clear_log();
    s.unmap(d, 0x40_0000, 33 * K4).unwrap();
    let cmds = fake.log();
    assert_eq!(fake.opcodes(), vec![op::TLBI_NH_VA, op::CMD_SYNC]);
    assert_eq!(cmds[0][1] & !0xfff, 0x40_0000);
    assert_eq!(
        ((cmds[0][0] >> 12) & 0x1f, (cmds[0][0] >> 20) & 0x1f),
        (16, 1)
    );
    assert_eq!((cmds[0][1] >> 8) & 3, 0);
    // 33 pages of a table that stays (TTL = 3): 1 page, then 32 pages
    s.map(d, 0x40_0000, 0x8000_0000, 40 * K4, Perms::RW)
        .unwrap();
    fake.clear_log();
    s.unmap(d, 0x40_0000, 33 * K4).unwrap();
    let cmds = fake.log();
    assert_eq!(
        fake.opcodes(),
        vec![op::TLBI_NH_VA, op::TLBI_NH_VA, op::CMD_SYNC]
    );
    assert_eq!(
        ((cmds[0][0] >> 12) & 0x1f, (cmds[0][0] >> 20) & 0x1f),
        (0, 0)
    );
    assert_eq!((cmds[0][1] >> 8) & 3, 3, "TTL = level 3");
    assert_eq!(cmds[1][1] & !0xfff, 0x40_1000);
    assert_eq!(
        ((cmds[1][0] >> 12) & 0x1f, (cmds[1][0] >> 20) & 0x1f),
        (0, 5)
    );
    assert_eq!(s.stats().cmdq_errors, 0);
    assert!(fake.doorbells() > 0);
}

#[test]
fn without_ril_per_leaf_then_asid() {
    let (fake, s) = smmu(false);
    let d = attached_domain(&fake, &s);
    let asid = s.domain_info(d).unwrap().asid;
    s.map(d, 0, 0x8000_0000, 8 * K4, Perms::RW).unwrap();
    s.map(d, 0x100_0000, 0x8000_0000, M2, Perms::RW).unwrap();
    fake.clear_log();
    s.unmap(d, 0, 4 * K4).unwrap();
    let ops = fake.opcodes();
    assert_eq!(
        ops,
        vec![op::TLBI_NH_VA; 4]
            .into_iter()
            .chain([op::CMD_SYNC])
            .collect::<Vec<_>>()
    );
    for (i, c) in fake.log()[..4].iter().enumerate() {
        assert_eq!(
            *c,
            Command::TlbiNhVa {
                asid,
                addr: i as u64 * K4,
                leaf: true,
                range: Default::default()
            }
            .encode()
        );
    }
    // one 2 MiB block = one TLBI
    fake.clear_log();
    s.unmap(d, 0x100_0000, M2).unwrap();
    assert_eq!(fake.opcodes(), vec![op::TLBI_NH_VA, op::CMD_SYNC]);
    // beyond the threshold: one TLBI_NH_ASID
    s.map(d, 0x200_0000, 0x8000_0000, 64 * K4, Perms::RW)
        .unwrap();
    fake.clear_log();
    s.unmap(d, 0x200_0000, 64 * K4).unwrap();
    assert_eq!(fake.opcodes(), vec![op::TLBI_NH_ASID, op::CMD_SYNC]);
    assert_eq!(fake.log()[0], Command::TlbiNhAsid { asid }.encode());
    // errors
    assert_eq!(s.unmap(d, 0x200_0000, K4), Err(Error::NotMapped));
    assert_eq!(s.map(d, 4 * K4, 0, K4, Perms::RW), Err(Error::Overlap));
}

/// Every range TLBI sequence is legal and covers what was unmapped.
#[test]
fn range_tlbi_sequences_are_legal_and_cover() {
    let (fake, s) = smmu(true);
    let d = attached_domain(&fake, &s);
    for keep in [false, true] {
        for n in (1..=70u64).chain([255, 256, 257, 511, 512, 513, 1000]) {
            let iova = 0x100_0000 + if keep { K4 } else { 0 };
            if keep {
                s.map(d, 0x100_0000, 0x8000_0000, K4, Perms::RW).unwrap();
            }
            s.map(d, iova, 0x9000_0000, n * K4, Perms::RW).unwrap();
            fake.clear_log();
            assert_eq!(s.unmap(d, iova, n * K4), Ok(n * K4));
            let mut covered = Vec::new();
            for c in fake.log() {
                if c[0] as u8 == op::TLBI_NH_VA {
                    let (num, scale) = ((c[0] >> 12) & 0x1f, (c[0] >> 20) & 0x1f);
                    let pages = if (c[1] >> 10) & 3 == 0 {
                        1
                    } else {
                        (num + 1) << scale
                    };
                    covered.push((c[1] & !0xfff, pages * K4));
                }
            }
            assert!(covered.len() <= 3, "n={n} keep={keep}: {covered:x?}");
            covered.sort();
            let mut at = iova;
            for (a, l) in &covered {
                assert!(*a <= at, "gap at {at:#x}: {covered:x?}");
                at = at.max(a + l);
            }
            assert!(at >= iova + n * K4, "n={n}: {covered:x?}");
            if keep {
                s.unmap(d, 0x100_0000, K4).unwrap();
            }
        }
    }
    assert_eq!(s.stats().cmdq_errors, 0);
}

/// An unmap of exactly one level-2 entry (a whole leaf table, or a 2 MiB
/// block) whose level-2 table keeps other entries takes one write, and its
/// invalidation still covers the 2 MiB: walk caches too (Leaf = 0) when a
/// table went, the block's leaf when a block went.
#[test]
fn unmapping_one_whole_level2_entry_invalidates_its_2mib() {
    let (fake, s) = smmu(true);
    let d = attached_domain(&fake, &s);
    // Keeps the level-2 table populated.
    s.map(d, 0x100_0000, 0x8000_0000, K4, Perms::RW).unwrap();
    let asid = s.domain_info(d).unwrap().asid;
    for (what, paddr) in [("leaf table", 0x9000_1000u64), ("block", 0x9020_0000)] {
        let pages = s.domain_info(d).unwrap().table_pages;
        s.map(d, 3 * M2, paddr, M2, Perms::RW).unwrap();
        fake.clear_log();
        assert_eq!(s.unmap(d, 3 * M2, M2), Ok(M2), "{what}");
        let tlbi: Vec<_> = fake
            .log()
            .into_iter()
            .filter(|c| c[0] as u8 == op::TLBI_NH_VA)
            .collect();
        assert_eq!(tlbi.len(), 1, "{what}: {:x?}", fake.log());
        let c = tlbi[0];
        assert_eq!(c[0] >> 48, u64::from(asid), "{what}");
        let (num, scale) = ((c[0] >> 12) & 0x1f, (c[0] >> 20) & 0x1f);
        assert_eq!(
            (c[1] & !0xfff, (num + 1) << scale),
            (3 * M2, 512),
            "{what}: {c:x?}"
        );
        assert_eq!(c[1] & 1 == 1, what == "block", "{what}: Leaf bit of {c:x?}");
        assert_eq!(s.domain_info(d).unwrap().table_pages, pages, "{what}");
        assert!(s.with_page_table(d, |pt| pt.walk(3 * M2).level).is_ok());
    }
    assert_eq!(s.stats().cmdq_errors, 0);
}

/// The same unmap when the gather's list of tables to free is full (the
/// flushes that would have freed them timed out): the leaf table is
/// neither dropped from the books nor freed early.
#[test]
fn unmapping_a_whole_leaf_table_with_a_full_free_list_loses_no_table() {
    let (fake, alloc, s) = smmu_alloc();
    let d = attached_domain(&fake, &s);
    let base = alloc.live();
    let pages = s.domain_info(d).unwrap().table_pages;
    s.map(d, 0x4000_0000 - K4, 0x8000_0000, K4, Perms::RW)
        .unwrap();
    for i in 0..iommu_server::pgtable::GATHER_TABLES as u64 {
        s.map(d, i * M2, 0x8000_0000, K4, Perms::RW).unwrap();
    }
    s.map(d, 0x3000_0000, 0x9000_0000, M2 - K4, Perms::RW)
        .unwrap();
    s.map(d, 0x3000_0000 + M2 - K4, 0x9000_0000, K4, Perms::RW)
        .unwrap();
    fake.set_consumer(Consumer::Stuck);
    for i in 0..iommu_server::pgtable::GATHER_TABLES as u64 {
        assert!(s.unmap(d, i * M2, K4).is_err());
    }
    assert!(s.unmap(d, 0x3000_0000, M2).is_err());
    fake.set_consumer(Consumer::Immediate);
    assert_eq!(
        alloc.live() - base,
        (s.domain_info(d).unwrap().table_pages - pages) as usize
    );
    s.detach(1, 0).unwrap();
    s.free_domain(d).unwrap();
    assert_eq!(
        alloc.live(),
        base - 1 - pages as usize,
        "table memory leaked"
    );
    assert_eq!(alloc.bad_frees(), 0);
}

/// The one-entry unmap keeps the level-2 table's count exact: unmapping
/// its entries one by one frees it with the last, and a 2 MiB range with
/// nothing mapped in a populated level-2 table is `NotMapped`, not an
/// unmap of nothing.
#[test]
fn level2_entries_unmapped_one_by_one_free_their_table() {
    let (fake, s) = smmu(true);
    let d = attached_domain(&fake, &s);
    let empty = s.domain_info(d).unwrap().table_pages;
    // A block, a leaf table and another block in one level-2 table.
    s.map(d, G1, 0x8000_0000, M2, Perms::RW).unwrap();
    s.map(d, G1 + M2, 0x9000_1000, M2, Perms::RW).unwrap();
    s.map(d, G1 + 4 * M2, 0x8020_0000, M2, Perms::RW).unwrap();
    let full = s.domain_info(d).unwrap().table_pages;
    assert!(full > empty);
    assert_eq!(s.unmap(d, G1 + 2 * M2, M2), Err(Error::NotMapped));
    assert_eq!(s.domain_info(d).unwrap().table_pages, full);
    for iova in [G1 + M2, G1, G1 + 4 * M2] {
        assert_eq!(s.unmap(d, iova, M2), Ok(M2), "{iova:#x}");
        assert_eq!(s.unmap(d, iova, M2), Err(Error::NotMapped), "{iova:#x}");
    }
    assert_eq!(s.domain_info(d).unwrap().table_pages, empty);
}
