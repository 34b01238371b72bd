//! Commands and syncs per operation, counted by the model: the physical
//! limits of the design. map issues nothing (new translations need no
//! invalidation); an unmap of a contiguous range with RIL is one range
//! TLBI_NH_VA + one CMD_SYNC; without RIL, per-leaf TLBIs up to the
//! threshold, else one TLBI_NH_ASID; free_domain is one TLBI_NH_ASID + sync.
//! Each count is also checked for effect: the TLBIs must actually remove
//! what was cached (the model's TLB is warmed before every unmap).

#[path = "model_harness.rs"]
mod harness;

use harness::*;
use iommu_server::{Config, DomainId, Perms};
use smmu_model::spec::{evt, op};
use smmu_model::{Access, Command, Counters, Features, Machine};

const SID: u32 = 8;
const PAGE: u64 = 4096;
const BLOCK: u64 = 2 << 20;

fn counted(m: &Machine, f: impl FnOnce()) -> (Counters, Vec<Command>) {
    let c0 = m.smmu.counters();
    let seq = m.smmu.command_seq();
    f();
    let cmds = m
        .smmu
        .commands_since(seq)
        .into_iter()
        .filter_map(|c| c.decoded.ok())
        .collect();
    (m.smmu.counters().since(&c0), cmds)
}

/// Touches every page of `[iova, iova+len)` so the TLB holds it.
fn warm(m: &Machine, iova: u64, len: u64) {
    for p in (iova..iova + len).step_by(PAGE as usize) {
        assert!(
            m.smmu.probe(SID, None, p, Access::READ).is_ok(),
            "{p:#x} should be mapped"
        );
    }
}

fn gone(m: &Machine, iova: u64, len: u64) {
    for p in (iova..iova + len).step_by(PAGE as usize) {
        let r = m.smmu.probe(SID, None, p, Access::READ);
        assert_eq!(
            r.map_err(|f| f.code()),
            Err(Some(evt::F_TRANSLATION)),
            "{p:#x} still translates after unmap (stale TLB)"
        );
    }
}

fn setup(features: Features, config: Config) -> (Machine, Server, DomainId) {
    let (m, s) = boot(features, config);
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    (m, s, d)
}

fn tlbi_summary(cmds: &[Command]) -> String {
    cmds.iter()
        .filter(|c| c.is_tlbi() || c.is_sync())
        .map(|c| format!("{c:x?}"))
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn map_issues_no_invalidation() {
    let (m, s, d) = setup(Features::qemu_7_2(), Config::default());
    for (iova, pa, len) in [
        (0x10_0000, 0x1_0000_0000, PAGE),
        (0x20_0000, 0x1_0010_0000, 16 * PAGE),
        (0x4000_0000, 0x1_4000_0000, BLOCK),
        (0x8000_0000, 0x1_8000_0000, 2 * BLOCK + 3 * PAGE),
        (0x1_0000_0000, 0x2_0000_0000, 1 << 30),
    ] {
        let (c, cmds) = counted(&m, || s.map(d, iova, pa, len, Perms::RW).unwrap());
        assert_eq!(
            (c.commands, c.syncs),
            (0, 0),
            "map {iova:#x}+{len:#x} issued commands:\n  {}",
            tlbi_summary(&cmds)
        );
        assert_eq!(
            m.smmu
                .probe(SID, None, iova + len - 1, Access::WRITE)
                .map(|t| t.paddr),
            Ok(pa + len - 1)
        );
    }
    // The 1 GiB mapping is one level-1 block (one TLB entry covers it).
    let t = m
        .smmu
        .probe(SID, None, 0x1_0000_0000, Access::READ)
        .unwrap();
    assert_eq!(t.page_size, 1 << 30);
    let t = m.smmu.probe(SID, None, 0x4000_0000, Access::READ).unwrap();
    assert_eq!(t.page_size, BLOCK);
}

#[test]
fn unmap_with_ril_is_one_range_tlbi_and_one_sync() {
    let (m, s, d) = setup(Features::qemu_7_2(), Config::default());
    // Page counts expressible as (NUM+1) * 2^SCALE with NUM <= 31.
    let mut iova = 0x10_0000;
    for n in [1u64, 2, 7, 16, 24, 32, 64, 96, 256] {
        s.map(d, iova, 0x1_0000_0000 + iova, n * PAGE, Perms::RW)
            .unwrap();
        warm(&m, iova, n * PAGE);
        let (c, cmds) = counted(&m, || {
            assert_eq!(s.unmap(d, iova, n * PAGE), Ok(n * PAGE));
        });
        // One page may equally be a plain (non-range) TLBI_NH_VA.
        let want_range = if n == 1 { c.range_tlbi } else { 1 };
        assert_eq!(
            (c.tlbi, c.range_tlbi, c.syncs),
            (1, want_range, 1),
            "unmap of {n} pages at {iova:#x}:\n  {}",
            tlbi_summary(&cmds)
        );
        gone(&m, iova, n * PAGE);
        iova += 0x40_0000;
    }
    // A 2 MiB block.
    s.map(d, 0x4000_0000, 0x1_4000_0000, BLOCK, Perms::RW)
        .unwrap();
    warm(&m, 0x4000_0000, PAGE);
    let (c, cmds) = counted(&m, || assert_eq!(s.unmap(d, 0x4000_0000, BLOCK), Ok(BLOCK)));
    assert_eq!(
        (c.tlbi, c.syncs),
        (1, 1),
        "unmap of a block:\n  {}",
        tlbi_summary(&cmds)
    );
    gone(&m, 0x4000_0000, PAGE);
}

#[test]
fn unmap_with_ril_any_length_is_bounded() {
    // Lengths that one (NUM, SCALE) pair cannot express exactly: the server
    // may over-invalidate with one command or split; at most 2 TLBIs, one
    // sync, and never a TLBI by ASID.
    let (m, s, d) = setup(Features::qemu_7_2(), Config::default());
    let mut iova = 0x10_0000;
    for n in [33u64, 37, 100, 511] {
        s.map(d, iova, 0x1_0000_0000 + iova, n * PAGE, Perms::RW)
            .unwrap();
        warm(&m, iova, n * PAGE);
        let seq = m.smmu.command_seq();
        let (c, cmds) = counted(&m, || assert_eq!(s.unmap(d, iova, n * PAGE), Ok(n * PAGE)));
        eprintln!("RIL unmap of {n} pages: {} TLBI, {} sync", c.tlbi, c.syncs);
        let rejected: Vec<_> = m
            .smmu
            .commands_since(seq)
            .into_iter()
            .filter(|c| c.decoded.is_err())
            .map(|c| format!("{:#x?}", c.raw))
            .collect();
        // First the consequence: every page is gone from the TLB.
        gone(&m, iova, n * PAGE);
        assert!(
            rejected.is_empty(),
            "unmap of {n} pages: the SMMU rejected {rejected:?}"
        );
        assert!(
            c.tlbi <= 2 && c.syncs == 1,
            "{n} pages:\n  {}",
            tlbi_summary(&cmds)
        );
        assert_eq!(c.opcode(op::TLBI_NH_ASID), 0);
        gone(&m, iova, n * PAGE);
        iova += 0x40_0000;
    }
}

#[test]
fn unmap_without_ril() {
    let f = Features {
        ril: false,
        ..Features::qemu_7_2()
    };
    let (m, s, d) = setup(f, Config::default());
    let thr = Config::default().tlbi_threshold as u64;
    let mut iova = 0x10_0000;
    for n in [1u64, 5, thr, thr + 1, 200] {
        s.map(d, iova, 0x1_0000_0000 + iova, n * PAGE, Perms::RW)
            .unwrap();
        warm(&m, iova, n * PAGE);
        let (c, cmds) = counted(&m, || assert_eq!(s.unmap(d, iova, n * PAGE), Ok(n * PAGE)));
        let want = if n <= thr { (n, 0) } else { (0, 1) };
        assert_eq!(
            (c.opcode(op::TLBI_NH_VA), c.opcode(op::TLBI_NH_ASID)),
            want,
            "unmap of {n} pages without RIL:\n  {}",
            tlbi_summary(&cmds)
        );
        assert_eq!((c.range_tlbi, c.syncs), (0, 1));
        gone(&m, iova, n * PAGE);
        iova += 0x40_0000;
    }
}

#[test]
fn domain_lifecycle_costs() {
    let (m, s) = boot_qemu();
    let (c, _) = counted(&m, || {
        s.alloc_domain().unwrap();
    });
    assert_eq!(c.commands, 0, "a fresh ASID needs no invalidation");
    let d = s.alloc_domain().unwrap();
    s.map(d, 0x10_0000, 0x1_0000_0000, PAGE, Perms::RW).unwrap();
    let (c, cmds) = counted(&m, || s.attach(SID, 0, d).unwrap());
    eprintln!("attach: {} CFGI, {} sync", c.cfgi, c.syncs);
    assert_eq!(c.tlbi, 0, "attach:\n  {}", tlbi_summary(&cmds));
    assert!(c.syncs <= 4);
    warm(&m, 0x10_0000, PAGE);
    let (c, _) = counted(&m, || s.detach(SID, 0).unwrap());
    eprintln!("detach: {} CFGI, {} TLBI, {} sync", c.cfgi, c.tlbi, c.syncs);
    assert!(c.syncs <= 4);
    let (c, cmds) = counted(&m, || s.free_domain(d).unwrap());
    assert_eq!(
        (c.opcode(op::TLBI_NH_ASID), c.tlbi, c.syncs),
        (1, 1, 1),
        "free_domain:\n  {}",
        tlbi_summary(&cmds)
    );
    // The freed ASID's translations are gone from the TLB.
    let asid_left = m
        .smmu
        .tlb_entries()
        .into_iter()
        .filter(|e| e.pa == 0x1_0000_0000)
        .count();
    assert_eq!(asid_left, 0);
}
