//! STE/CD transition tests: for pairs among abort, bypass and stage-1
//! (S1DSS variants with substreams), the model snapshots, at every CMD_SYNC,
//! the STE (and CD) it would fetch for the stream. Every snapshot must
//! behave like the old or the new configuration on the bits that
//! configuration uses (hitless update, Linux's used-bits algorithm), the
//! transition must end in the new configuration as seen *through the
//! model's caches* (so the CFGIs were issued), and the number of syncs is
//! bounded.
//!
//! "Used bits" are this file's own reading of the STE/CD field tables
//! (IHI 0070, 5.2 and 5.4), not the server's.

#[path = "model_harness.rs"]
mod harness;

use harness::*;
use iommu_server::{DomainId, Perms};
use smmu_model::spec::{evt, s1dss, Cd, Ste, SteConfig};
use smmu_model::{Access, CfgErr, Counters, Fault, Machine};

const SID: u32 = 8;
const IOVA: u64 = 0x20_0000;

/// Bits of an STE that the SMMU reads for the configuration it describes.
fn ste_used(ste: &Ste) -> [u64; 8] {
    let mut u = [0u64; 8];
    u[0] = 1; // V
    if !ste.valid {
        return u;
    }
    u[0] |= 0b111 << 1; // Config
                        // Incoming-attribute overrides: MemAttr [35:32], MTCFG [36], ALLOCCFG
                        // [40:37], SHCFG [45:44], NSCFG [47:46], PRIVCFG [49:48], INSTCFG
                        // [51:50]; they matter whenever stage 1 does not translate.
    let bypass_attrs: u64 = 0xF << 32 | 1 << 36 | 0xF << 37 | 3 << 44 | 3 << 46 | 3 << 48 | 3 << 50;
    match ste.config {
        SteConfig::Abort => {}
        SteConfig::Bypass => u[1] |= bypass_attrs,
        SteConfig::S1Trans => {
            u[0] |= 0x000F_FFFF_FFFF_FFC0 | 0x1F << 59; // S1ContextPtr, S1CDMax
            if ste.s1cdmax != 0 {
                u[0] |= 3 << 4; // S1Fmt
                u[1] |= 3; // S1DSS
                if ste.s1dss == s1dss::BYPASS {
                    u[1] |= bypass_attrs;
                }
            }
            // S1CIR/COR/CSH [7:2], S1STALLD [27], EATS [29:28], STRW
            // [31:30], PRIVCFG, INSTCFG.
            u[1] |= 0x3F << 2 | 1 << 27 | 3 << 28 | 3 << 30 | 3 << 48 | 3 << 50;
        }
        _ => u = [u64::MAX; 8],
    }
    u
}

fn ste_behaviour(ste: &Ste) -> [u64; 8] {
    let u = ste_used(ste);
    std::array::from_fn(|i| ste.raw[i] & u[i])
}

/// Bits of a CD the SMMU reads.
fn cd_used(cd: &Cd) -> [u64; 8] {
    let mut u = [0u64; 8];
    u[0] = 1 << 31;
    if !cd.valid {
        return u;
    }
    u[0] = u64::MAX;
    if cd.epd1 {
        u[0] &= !(0x3F << 16 | 3 << 22 | 3 << 24 | 3 << 26 | 3 << 28); // T1SZ, TG1, IR1, OR1, SH1
    } else {
        u[2] = 0x000F_FFFF_FFFF_FFF3;
    }
    u[1] = 0x000F_FFFF_FFFF_FFF3; // TTB0, HAD0, NSCFG0
    u[3] = u64::MAX; // MAIR
    u[4] = u64::MAX; // AMAIR
    u
}

fn cd_behaviour(cd: &Cd) -> [u64; 8] {
    let u = cd_used(cd);
    std::array::from_fn(|i| cd.raw[i] & u[i])
}

/// Every combination of `a`'s and `b`'s qwords where they differ.
fn mixtures(a: &[u64; 8], b: &[u64; 8]) -> Vec<[u64; 8]> {
    let diff: Vec<usize> = (0..8).filter(|&i| a[i] != b[i]).collect();
    (0..1u32 << diff.len())
        .map(|mask| {
            let mut m = *a;
            for (k, &i) in diff.iter().enumerate() {
                if mask >> k & 1 == 1 {
                    m[i] = b[i];
                }
            }
            m
        })
        .collect()
}

/// How a stream behaves, through the model's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Abort,
    Bypass,
    Maps(u64),
    Fault(u8),
}

fn seen(m: &Machine, sid: u32, ssid: Option<u32>) -> Seen {
    match m.smmu.probe(sid, ssid, IOVA, Access::WRITE) {
        Ok(t) if t.bypass => Seen::Bypass,
        Ok(t) => Seen::Maps(t.paddr),
        Err(Fault::Abort) => Seen::Abort,
        Err(f) => Seen::Fault(f.code().unwrap_or(0)),
    }
}

/// What one transition did.
#[derive(Debug)]
struct Report {
    counters: Counters,
    snapshots: usize,
    /// Snapshots whose CD was neither old nor new (breaking CD updates).
    cd_breaks: usize,
}

/// Runs `op`, checking every sync-time snapshot of (SID, ssid) for
/// old-or-new behaviour, and that the stream then behaves as `after`
/// through the caches.
fn transition(
    m: &Machine,
    s: &mut Server,
    ssid: Option<u32>,
    after: Seen,
    what: &str,
    op: impl FnOnce(&mut Server),
) -> Report {
    // Warm the caches with the old configuration: a missing CFGI shows.
    let _ = seen(m, SID, ssid);
    let old_ste = m.smmu.ste_at(SID);
    let old_cd = m.smmu.cd_at(SID, ssid);
    m.smmu.take_sync_snapshots();
    let c0 = m.smmu.counters();
    op(s);
    let counters = m.smmu.counters().since(&c0);
    let new_ste = m.smmu.ste_at(SID);
    let new_cd = m.smmu.cd_at(SID, ssid);
    let snaps = m.smmu.take_sync_snapshots();
    let beh = |r: &Result<Ste, CfgErr>| r.as_ref().ok().map(ste_behaviour);
    let cbeh = |r: &Result<Cd, CfgErr>| r.as_ref().ok().map(cd_behaviour);
    let mut cd_breaks = 0;
    for snap in &snaps {
        let (_, ste) = &snap.stes[0];
        let b = beh(ste);
        assert!(
            b == beh(&old_ste) || b == beh(&new_ste),
            "{what}: sync #{} saw an STE that is neither the old nor the new configuration:\n  \
             old {old_ste:x?}\n  seen {ste:x?}\n  new {new_ste:x?}",
            snap.sync_index
        );
        let cds: Vec<_> = snap.cds.iter().filter(|c| c.0 == (SID, ssid)).collect();
        if let Some((_, cd)) = cds.first() {
            let b = cbeh(cd);
            if !(b == cbeh(&old_cd) || b == cbeh(&new_cd)) {
                // Only a CD made invalid (V = 0) in between is acceptable:
                // the architecture has no hitless ASID + TTB0 change.
                assert!(
                    matches!(cd, Ok(c) if !c.valid) || cd.is_err(),
                    "{what}: sync #{} saw a CD that is neither old, new nor invalid: {cd:x?}",
                    snap.sync_index
                );
                cd_breaks += 1;
            }
        }
    }
    // The SMMU may fetch an STE or CD at any moment, 64 bits at a time, so
    // between two observed states any mixture of their qwords is visible.
    // Every mixture must behave as the old or the new configuration (CDs
    // may also be invalid in between).
    // CDs are compared only while the STE points at the same CD table: a
    // switch of S1ContextPtr is one STE qword, not a torn CD.
    let ptr = |r: &Result<Ste, CfgErr>| r.as_ref().map(|s| s.s1_context_ptr).unwrap_or(0);
    let mut stes: Vec<[u64; 8]> = Vec::new();
    let mut cds: Vec<(u64, [u64; 8])> = Vec::new();
    fn push<T: PartialEq>(v: &mut Vec<T>, x: Option<T>) {
        if let Some(x) = x {
            if v.last() != Some(&x) {
                v.push(x);
            }
        }
    }
    push(&mut stes, old_ste.as_ref().ok().map(|s| s.raw));
    push(
        &mut cds,
        old_cd.as_ref().ok().map(|c| (ptr(&old_ste), c.raw)),
    );
    for snap in &snaps {
        push(&mut stes, snap.stes[0].1.as_ref().ok().map(|s| s.raw));
        if let Some((_, Ok(cd))) = snap.cds.iter().find(|c| c.0 == (SID, ssid)) {
            push(&mut cds, Some((ptr(&snap.stes[0].1), cd.raw)));
        }
    }
    push(&mut stes, new_ste.as_ref().ok().map(|s| s.raw));
    push(
        &mut cds,
        new_cd.as_ref().ok().map(|c| (ptr(&new_ste), c.raw)),
    );
    for w in stes.windows(2) {
        for mix in mixtures(&w[0], &w[1]) {
            let b = Some(ste_behaviour(&Ste::decode(mix)));
            assert!(
                b == beh(&old_ste) || b == beh(&new_ste),
                "{what}: an STE torn between two written states is neither old nor new:\n  \
                 from {:x?}\n  to   {:x?}\n  torn {mix:x?}",
                w[0],
                w[1]
            );
        }
    }
    for w in cds.windows(2) {
        if w[0].0 != w[1].0 {
            continue;
        }
        let (w0, w1) = (w[0].1, w[1].1);
        for mix in mixtures(&w0, &w1) {
            let cd = Cd::decode(mix);
            let b = Some(cd_behaviour(&cd));
            assert!(
                b == cbeh(&old_cd) || b == cbeh(&new_cd) || !cd.valid,
                "{what}: a CD torn between two written states is neither old, new nor invalid:\n  \
                 from {:x?}\n  to   {:x?}\n  torn {mix:x?}",
                w0,
                w1
            );
        }
    }
    assert_eq!(
        seen(m, SID, ssid),
        after,
        "{what}: through the model's caches the stream does not behave as the new configuration \
         (missing CFGI/TLBI?)"
    );
    assert_eq!(counters.cmd_errors, 0, "{what}");
    assert!(counters.syncs >= 1, "{what}: no CMD_SYNC");
    assert!(
        m.smmu.violations().is_empty(),
        "{what}: {:?}",
        m.smmu.violations()
    );
    Report {
        counters,
        snapshots: snaps.len(),
        cd_breaks,
    }
}

fn domain_with_page(s: &mut Server, pa: u64) -> DomainId {
    let d = s.alloc_domain().unwrap();
    s.map(d, IOVA, pa, 0x1000, Perms::RW).unwrap();
    d
}

fn show(what: &str, r: &Report) {
    eprintln!(
        "{what}: {} syncs, {} CFGI, {} TLBI, {} snapshots, {} CD breaks",
        r.counters.syncs, r.counters.cfgi, r.counters.tlbi, r.snapshots, r.cd_breaks
    );
}

#[test]
fn abort_bypass_stage1_without_substreams() {
    let (m, mut s) = boot_qemu();
    m.smmu.watch_ste(SID);
    m.smmu.watch_cd(SID, None);
    let (pa, pb) = (0x1_0000_0000, 0x1_0010_0000);
    let a = domain_with_page(&mut s, pa);
    let b = domain_with_page(&mut s, pb);

    // Make sure the stream's STE exists (level-2 table) and is abort.
    s.set_stream_bypass(SID, false).unwrap();
    assert_eq!(seen(&m, SID, None), Seen::Abort);

    let r = transition(&m, &mut s, None, Seen::Bypass, "abort -> bypass", |s| {
        s.set_stream_bypass(SID, true).unwrap()
    });
    show("abort -> bypass", &r);
    assert!(r.counters.syncs <= 3);
    let r = transition(&m, &mut s, None, Seen::Abort, "bypass -> abort", |s| {
        s.set_stream_bypass(SID, false).unwrap()
    });
    show("bypass -> abort", &r);
    assert!(r.counters.syncs <= 3);
    let r = transition(&m, &mut s, None, Seen::Maps(pa), "abort -> S1(A)", |s| {
        s.attach(SID, 0, a).unwrap()
    });
    show("abort -> S1(A)", &r);
    let r = transition(&m, &mut s, None, Seen::Maps(pb), "S1(A) -> S1(B)", |s| {
        s.attach(SID, 0, b).unwrap()
    });
    show("S1(A) -> S1(B)", &r);
    assert_eq!(
        r.cd_breaks, 0,
        "moving between domains without substreams is hitless"
    );
    let r = transition(&m, &mut s, None, Seen::Abort, "S1(B) -> abort", |s| {
        s.detach(SID, 0).unwrap()
    });
    show("S1(B) -> abort", &r);
    s.set_stream_bypass(SID, true).unwrap();
    let r = transition(&m, &mut s, None, Seen::Maps(pa), "bypass -> S1(A)", |s| {
        s.attach(SID, 0, a).unwrap()
    });
    show("bypass -> S1(A)", &r);
    let r = transition(&m, &mut s, None, Seen::Abort, "S1(A) -> abort (2)", |s| {
        s.detach(SID, 0).unwrap()
    });
    show("S1(A) -> abort (2)", &r);
    // The old domain's translation is gone from every cache.
    assert_eq!(
        m.smmu.translate(SID, None, IOVA, Access::READ),
        Err(Fault::Abort)
    );
    // A stale STE would still translate: make sure the whole sequence never
    // left an STE cached past its CFGI.
    assert_eq!(
        m.smmu.cached_ste(SID).map(|s| s.config),
        Some(SteConfig::Abort)
    );
}

#[test]
fn s1dss_transitions_with_substreams() {
    let (m, mut s) = boot_pasid(8);
    m.smmu.watch_ste(SID);
    m.smmu.watch_cd(SID, Some(5));
    m.smmu.watch_cd(SID, None);
    let (pa, pb) = (0x1_0000_0000, 0x1_0010_0000);
    let a = domain_with_page(&mut s, pa);
    let b = domain_with_page(&mut s, pb);
    s.set_stream_bypass(SID, false).unwrap();

    // abort -> S1 with only SSID 5: non-substream traffic terminated.
    let r = transition(
        &m,
        &mut s,
        Some(5),
        Seen::Maps(pa),
        "abort -> S1(ssid 5)",
        |s| s.attach(SID, 5, a).unwrap(),
    );
    show("abort -> S1(ssid 5)", &r);
    let ste = m.smmu.ste_at(SID).unwrap();
    assert!(ste.s1cdmax > 0);
    let no_ssid = seen(&m, SID, None);
    assert!(
        matches!(no_ssid, Seen::Fault(evt::F_STREAM_DISABLED) | Seen::Abort),
        "non-substream traffic with only SSID 5 attached: {no_ssid:?} (S1DSS = {})",
        ste.s1dss
    );
    // S1DSS terminate -> SSID0: attach SSID 0 (non-substream traffic).
    let r = transition(
        &m,
        &mut s,
        None,
        Seen::Maps(pb),
        "S1DSS terminate -> SSID0",
        |s| s.attach(SID, 0, b).unwrap(),
    );
    show("S1DSS terminate -> SSID0", &r);
    assert_eq!(m.smmu.ste_at(SID).unwrap().s1dss, s1dss::SSID0);
    assert_eq!(seen(&m, SID, Some(5)), Seen::Maps(pa), "SSID 5 undisturbed");
    // Move SSID 5 from A to B: CD rewritten (breaking allowed).
    let r = transition(&m, &mut s, Some(5), Seen::Maps(pb), "ssid 5: A -> B", |s| {
        s.attach(SID, 5, b).unwrap()
    });
    show("ssid 5: A -> B", &r);
    assert_eq!(seen(&m, SID, None), Seen::Maps(pb), "SSID 0 undisturbed");
    // SSID0 -> terminate: detach SSID 0.
    let r = transition(
        &m,
        &mut s,
        None,
        Seen::Fault(evt::F_STREAM_DISABLED),
        "S1DSS SSID0 -> terminate",
        |s| s.detach(SID, 0).unwrap(),
    );
    show("S1DSS SSID0 -> terminate", &r);
    assert_eq!(seen(&m, SID, Some(5)), Seen::Maps(pb), "SSID 5 undisturbed");
    // Last substream leaves: back to abort.
    let r = transition(
        &m,
        &mut s,
        Some(5),
        Seen::Abort,
        "S1(ssid 5) -> abort",
        |s| s.detach(SID, 5).unwrap(),
    );
    show("S1(ssid 5) -> abort", &r);
    // bypass -> S1 with substreams (SSID 0 first, then SSID 5).
    s.set_stream_bypass(SID, true).unwrap();
    let r = transition(
        &m,
        &mut s,
        None,
        Seen::Maps(pa),
        "bypass -> S1(ssid 0)",
        |s| s.attach(SID, 0, a).unwrap(),
    );
    show("bypass -> S1(ssid 0)", &r);
    let r = transition(
        &m,
        &mut s,
        Some(5),
        Seen::Maps(pb),
        "S1(ssid 0) + ssid 5",
        |s| s.attach(SID, 5, b).unwrap(),
    );
    show("S1(ssid 0) + ssid 5", &r);
    assert_eq!(seen(&m, SID, None), Seen::Maps(pa));
    let r = transition(
        &m,
        &mut s,
        Some(5),
        Seen::Fault(evt::C_BAD_CD),
        "ssid 5 leaves",
        |s| s.detach(SID, 5).unwrap(),
    );
    show("ssid 5 leaves", &r);
    assert_eq!(seen(&m, SID, None), Seen::Maps(pa), "SSID 0 undisturbed");
}
