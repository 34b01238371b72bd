//! Domains, attach/detach/move (hitless), ASIDs, events, error paths.

#[path = "core_support.rs"]
mod support;

use iommu_server::domain::MAX_DEVICES_PER_DOMAIN;
use iommu_server::{regs, Config, DomainId, Error, EventKind, Perms};
use std::sync::{Arc, Mutex};
use support::*;

type S = iommu_server::Smmu<FakeSmmu, HostAlloc, CountDelay>;

fn setup(cfg: Config) -> (FakeSmmu, HostAlloc, S) {
    let fake = FakeSmmu::qemu();
    let alloc = HostAlloc::new();
    let s = smmu_with(&fake, &alloc, cfg).unwrap();
    fake.clear_log();
    (fake, alloc, s)
}

fn linear() -> Config {
    Config {
        linear_strtab: true,
        max_sid_bits: 8,
        ..test_config()
    }
}

#[test]
fn attach_detach_command_sequences() {
    let (fake, _a, s) = setup(test_config());
    let d = s.alloc_domain().unwrap();
    assert!(fake.log().is_empty(), "a fresh ASID needs no invalidation");
    s.attach(8, 0, d).unwrap();
    assert_eq!(
        fake.opcodes(),
        vec![op::CFGI_STE, op::CMD_SYNC, op::CFGI_STE, op::CMD_SYNC]
    );
    assert_eq!(fake.log()[0][0] >> 32, 8);
    let ste = s.read_ste(8).unwrap().unwrap();
    assert_eq!(ste[0] & 0xf, 0xb, "V=1, Config=S1 translate");
    assert_eq!(ste[0] >> 59, 0, "S1CDMax = 0");
    assert_eq!(ste[1] & (1 << 27), 0, "S1STALLD = 0");
    // the CD the STE points at
    let cd0 = peek(ste[0] & 0x000f_ffff_ffff_ffc0);
    assert_eq!(cd0 >> 48, s.domain_info(d).unwrap().asid as u64);
    assert_eq!(cd0 & (1 << 31), 1 << 31);
    assert_eq!(cd0 & (1 << 45), 1 << 45, "CD.R = 1");
    assert_eq!((cd0 >> 32) & 7, 4, "IPS = OAS (44 bits)");
    assert_eq!(
        peek((ste[0] & 0x000f_ffff_ffff_ffc0) + 8),
        s.with_page_table(d, |pt| pt.ttbr()).unwrap()
    );
    assert_eq!(s.domain_devices(d).unwrap(), &[(8, 0)]);
    assert_eq!(s.attached_domain(8, 0), Some(d));
    // attaching again is a no-op
    fake.clear_log();
    s.attach(8, 0, d).unwrap();
    assert!(fake.log().is_empty());
    // detach: STE to abort (one critical qword), then clean-up
    s.detach(8, 0).unwrap();
    assert_eq!(
        fake.opcodes(),
        vec![op::CFGI_STE, op::CMD_SYNC, op::CFGI_STE, op::CMD_SYNC]
    );
    assert_eq!(s.read_ste(8).unwrap().unwrap(), [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(s.detach(8, 0), Err(Error::NotAttached));
    assert!(s.domain_devices(d).unwrap().is_empty());
}

type Effective = Option<(u64, u64)>;

/// The effective configuration of a stream as the SMMU sees it after an
/// invalidation: None = abort / invalid, Some((asid, ttb0)).
fn effective(ste_addr: u64) -> Option<(u64, u64)> {
    let q0 = peek(ste_addr);
    if q0 & 1 == 0 || (q0 >> 1) & 7 != 5 {
        return None;
    }
    let cd = q0 & 0x000f_ffff_ffff_ffc0;
    let c0 = peek(cd);
    if c0 & (1 << 31) == 0 {
        return None;
    }
    Some((c0 >> 48, peek(cd + 8) & 0x000f_ffff_ffff_fff0))
}

#[test]
fn moving_between_domains_is_hitless() {
    let (fake, alloc, s) = setup(linear());
    let base = fake.reg(regs::STRTAB_BASE) & 0x000f_ffff_ffff_ffc0;
    let sid = 0x21u32;
    let ste_addr = base + sid as u64 * 64;
    let d1 = s.alloc_domain().unwrap();
    let d2 = s.alloc_domain().unwrap();
    s.map(d1, 0, 0x8000_0000, 0x1000, Perms::RW).unwrap();
    s.map(d2, 0, 0x9000_0000, 0x1000, Perms::RW).unwrap();
    s.attach(sid, 0, d1).unwrap();
    let c1 = (
        s.domain_info(d1).unwrap().asid as u64,
        s.with_page_table(d1, |pt| pt.ttbr()).unwrap(),
    );
    assert_eq!(effective(ste_addr), Some(c1));
    let seen: Arc<Mutex<Vec<Effective>>> = Arc::default();
    let seen2 = seen.clone();
    fake.0.borrow_mut().on_cmd = Some(Box::new(move |_c| {
        seen2.lock().unwrap().push(effective(ste_addr))
    }));
    let live = alloc.live();
    fake.clear_log();
    s.attach(sid, 0, d2).unwrap();
    fake.0.borrow_mut().on_cmd = None;
    // d2 got its ASID at this attach.
    let c2 = (
        s.domain_info(d2).unwrap().asid as u64,
        s.with_page_table(d2, |pt| pt.ttbr()).unwrap(),
    );
    assert_ne!(c2.0, 0);
    assert_eq!(effective(ste_addr), Some(c2));
    for e in seen.lock().unwrap().iter() {
        assert!(*e == Some(c1) || *e == Some(c2), "exposed {e:?}");
    }
    assert_eq!(fake.opcodes(), vec![op::CFGI_STE, op::CMD_SYNC]);
    assert_eq!(alloc.live(), live, "old CD table freed");
    assert_eq!(s.domain_devices(d1).unwrap(), &[]);
    assert_eq!(s.domain_devices(d2).unwrap(), &[(sid, 0)]);
    // d1 can go now, d2 cannot
    assert_eq!(s.free_domain(d2), Err(Error::Busy));
    s.free_domain(d1).unwrap();
    assert_eq!(s.domain_info(d1), Err(Error::NoSuchDomain));
    assert_eq!(s.attach(sid, 0, d1), Err(Error::NoSuchDomain));
    assert_eq!(s.map(d1, 0, 0, 0x1000, Perms::RW), Err(Error::NoSuchDomain));
    assert_eq!(s.iova_to_phys(d2, 0), Some((0x9000_0000, Perms::RW)));
    assert_eq!(s.iova_to_phys(d1, 0), None);
}

#[test]
fn attach_errors_change_nothing() {
    let (fake, alloc, s) = setup(test_config());
    let d = s.alloc_domain().unwrap();
    assert_eq!(s.attach(1 << 16, 0, d), Err(Error::StreamOutOfRange));
    assert_eq!(s.attach(8, 1, d), Err(Error::SsidOutOfRange));
    assert_eq!(
        s.attach(8, 0, DomainId::from_raw(0xdead)),
        Err(Error::NoSuchDomain)
    );
    assert_eq!(s.detach(8, 0), Err(Error::NotAttached));
    assert_eq!(
        s.set_stream_bypass(1 << 16, true),
        Err(Error::StreamOutOfRange)
    );
    // no memory for the level-2 stream table / the CD table
    let live = alloc.live();
    alloc.set_budget(Some(0));
    assert_eq!(s.attach(0x300, 0, d), Err(Error::NoMemory));
    alloc.set_budget(Some(1)); // L2 table yes, CD table no
    assert_eq!(s.attach(0x300, 0, d), Err(Error::NoMemory));
    alloc.set_budget(None);
    assert!(s.domain_devices(d).unwrap().is_empty());
    assert_eq!(
        s.read_ste(0x300).unwrap(),
        Some([1, 0, 0, 0, 0, 0, 0, 0]),
        "still abort"
    );
    assert_eq!(
        alloc.live(),
        live + 1,
        "only the (abort-filled) level-2 table stays"
    );
    assert!(fake.log().is_empty());
    // a full device list
    for sid in 0..MAX_DEVICES_PER_DOMAIN as u32 {
        s.attach(sid, 0, d).unwrap();
    }
    assert_eq!(s.attach(0x1000, 0, d), Err(Error::NoSlot));
    assert_eq!(s.free_domain(d), Err(Error::Busy));
    for sid in 0..MAX_DEVICES_PER_DOMAIN as u32 {
        s.detach(sid, 0).unwrap();
    }
    s.free_domain(d).unwrap();
    assert_eq!(alloc.bad_frees(), 0);
}

#[test]
fn asids_never_zero_invalidated_before_reuse() {
    let (fake, alloc, s) = setup(Config {
        max_asids: 4,
        ..test_config()
    });
    // A domain gets its ASID at its first attach.
    let ds: Vec<DomainId> = (0..3).map(|_| s.alloc_domain().unwrap()).collect();
    assert!(ds.iter().all(|d| s.domain_info(*d).unwrap().asid == 0));
    for (i, d) in ds.iter().enumerate() {
        s.attach(i as u32 + 1, 0, *d).unwrap();
    }
    let asids: Vec<u16> = ds.iter().map(|d| s.domain_info(*d).unwrap().asid).collect();
    assert_eq!(asids, vec![1, 2, 3]);
    // No ASID free and no idle domain to take one from.
    let spare = s.alloc_domain().unwrap();
    assert_eq!(s.attach(4, 0, spare), Err(Error::NoAsid));
    assert_eq!(s.attached_domain(4, 0), None);
    assert_eq!(s.asids_in_use(), 3);
    s.detach(2, 0).unwrap();
    fake.clear_log();
    s.free_domain(ds[1]).unwrap();
    assert_eq!(
        fake.log()[0],
        iommu_server::Command::TlbiNhAsid { asid: 2 }.encode()
    );
    assert_eq!(fake.opcodes(), vec![op::TLBI_NH_ASID, op::CMD_SYNC]);
    s.attach(4, 0, spare).unwrap();
    assert_eq!(s.domain_info(spare).unwrap().asid, 2);
    // a failed invalidation keeps the domain (and the ASID is not reused)
    s.detach(4, 0).unwrap();
    fake.set_consumer(Consumer::Stuck);
    assert!(matches!(s.free_domain(spare), Err(Error::Timeout(_))));
    assert!(s.domain_info(spare).is_ok());
    assert_eq!(s.asids_in_use(), 3);
    fake.set_consumer(Consumer::Immediate);
    s.free_domain(spare).unwrap();
    assert_eq!(s.asids_in_use(), 2);
    // out of memory for the root table: nothing changes
    alloc.set_budget(Some(0));
    assert_eq!(s.alloc_domain(), Err(Error::NoMemory));
    alloc.set_budget(None);
    assert_eq!(s.asids_in_use(), 2);
    let e = s.alloc_domain().unwrap();
    s.attach(5, 0, e).unwrap();
    assert_ne!(s.domain_info(e).unwrap().asid, 0);
}

#[test]
fn domain_table_full() {
    let (_f, _a, s) = setup(test_config());
    let ds: Vec<DomainId> = (0..iommu_server::shared::DOMAIN_SLOTS)
        .map(|_| s.alloc_domain().unwrap())
        .collect();
    assert_eq!(s.alloc_domain(), Err(Error::NoSlot));
    s.free_domain(ds[5]).unwrap();
    let d = s.alloc_domain().unwrap();
    assert_ne!(d, ds[5], "generation differs");
    assert_eq!(s.domain_info(ds[5]), Err(Error::NoSuchDomain));
    assert_eq!(s.domains().count(), iommu_server::shared::DOMAIN_SLOTS);
}

#[test]
fn table_page_counters() {
    let (_f, alloc, s) = setup(test_config());
    let d = s.alloc_domain().unwrap();
    assert_eq!(s.domain_info(d).unwrap().table_pages, 1);
    s.map(d, 0x1000, 0x8000_1000, 0x1000, Perms::RW).unwrap();
    assert_eq!(s.domain_info(d).unwrap().table_pages, 4);
    s.unmap(d, 0x1000, 0x1000).unwrap();
    assert_eq!(s.domain_info(d).unwrap().table_pages, 1);
    let live = alloc.live();
    s.map(d, 0x1000, 0x8000_1000, 0x1000, Perms::RW).unwrap();
    s.free_domain(d).unwrap();
    assert_eq!(alloc.live(), live - 1);
}

#[test]
fn events_decode_and_overflow() {
    let (fake, _a, s) = setup(Config {
        evtq_log2: 2,
        ..test_config()
    });
    let mut got = Vec::new();
    assert_eq!(s.drain_events(|e| got.push(e)).events, 0);
    fake.inject_event([0x10 | (8u64 << 32), 1 << 35, 0x1234_5000, 0]);
    fake.inject_event([0x04 | (9u64 << 32), 0, 0, 0]);
    fake.inject_event([0xee, 0, 0, 0]);
    let r = s.drain_events(|e| got.push(e));
    assert_eq!((r.events, r.overflowed), (3, false));
    assert!(matches!(got[0].kind, EventKind::Translation(f) if f.addr == 0x1234_5000 && f.read));
    assert_eq!(got[0].sid, 8);
    assert_eq!(got[1].kind, EventKind::BadSte);
    assert!(matches!(got[2].kind, EventKind::Unknown { id: 0xee, .. }));
    // fill past capacity (4 entries) to overflow, wrapping
    for i in 0..5u64 {
        fake.inject_event([0x13 | (i << 32), 0, i, 0]);
    }
    got.clear();
    let r = s.drain_events(|e| got.push(e));
    assert_eq!((r.events, r.overflowed), (4, true));
    assert_eq!(
        got.iter().map(|e| e.sid).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    // overflow acknowledged
    assert_eq!(
        fake.reg(regs::EVENTQ_CONS) >> 31,
        fake.reg(regs::EVENTQ_PROD) >> 31
    );
    fake.inject_event([0x13, 0, 0, 0]);
    let r = s.drain_events(|_| {});
    assert_eq!((r.events, r.overflowed), (1, false));
    assert_eq!(s.stats().events, 8);
    assert_eq!(s.stats().event_overflows, 1);
}

/// IDR0.STALL_MODEL = 0b10 (stall forced): every CD says CD.S = 1 (else
/// the SMMU finds it ILLEGAL), and every stalled fault is ended with a
/// CMD_RESUME that aborts it, so that the device does not wait forever
/// (issue 13, item 5).
#[test]
fn forced_stalls_set_cd_s_and_every_stall_is_resumed_with_an_abort() {
    let mut idr = QEMU_IDR;
    idr[0] = (idr[0] & !(3 << 24)) | (2 << 24);
    let fake = FakeSmmu::new(idr);
    let s = smmu_with(&fake, &HostAlloc::new(), test_config()).unwrap();
    assert!(s.features().stall_forced);
    let d = s.alloc_domain().unwrap();
    s.attach(8, 0, d).unwrap();
    let ste = s.read_ste(8).unwrap().unwrap();
    let cd0 = peek(ste[0] & 0x000f_ffff_ffff_ffc0);
    assert_ne!(cd0 & (1 << 44), 0, "CD.S = 0 with stalls forced");
    fake.clear_log();
    // A stalled translation fault (Stall, bit 31 of qword 1; STAG 0xbeef)
    // and a fault that did not stall.
    fake.inject_event([0x10 | (8u64 << 32), (1 << 31) | 0xbeef, 0x5000, 0]);
    fake.inject_event([0x13 | (8u64 << 32), 0, 0x6000, 0]);
    assert_eq!(s.drain_events(|_| {}).events, 2);
    assert_eq!(
        fake.log(),
        vec![iommu_server::Command::Resume {
            sid: 8,
            stag: 0xbeef
        }
        .encode()]
    );
    // Without forced stalls, CD.S stays 0.
    let (_f, _a, plain) = setup(test_config());
    let d = plain.alloc_domain().unwrap();
    plain.attach(8, 0, d).unwrap();
    let ste = plain.read_ste(8).unwrap().unwrap();
    assert_eq!(peek(ste[0] & 0x000f_ffff_ffff_ffc0) & (1 << 44), 0);
}

/// With substreams, the STE's S1DSS says where traffic without a
/// SubstreamID goes: terminated while SSID 0 has no CD, to CD 0 once SSID 0
/// is attached, terminated again when it leaves; other SSIDs never change
/// it.
#[test]
fn s1dss_follows_ssid_0_only() {
    let mut idr = QEMU_IDR;
    idr[1] |= 2 << 6; // SSIDSIZE = 2
    let fake = FakeSmmu::new(idr);
    let s = smmu_with(
        &fake,
        &HostAlloc::new(),
        Config {
            ssid_bits: 2,
            ..test_config()
        },
    )
    .unwrap();
    let d = s.alloc_domain().unwrap();
    let s1dss = |s: &S| s.read_ste(8).unwrap().unwrap()[1] & 3;
    const TERMINATE: u64 = 0;
    const SSID0: u64 = 2;
    s.attach(8, 1, d).unwrap();
    assert_eq!(s1dss(&s), TERMINATE);
    s.attach(8, 2, d).unwrap();
    assert_eq!(s1dss(&s), TERMINATE, "another SSID changed S1DSS");
    s.attach(8, 0, d).unwrap();
    assert_eq!(s1dss(&s), SSID0);
    s.attach(8, 3, d).unwrap();
    assert_eq!(s1dss(&s), SSID0);
    s.detach(8, 0).unwrap();
    assert_eq!(s1dss(&s), TERMINATE);
    s.detach(8, 3).unwrap();
    assert_eq!(s1dss(&s), TERMINATE);
}

#[test]
fn bypass_stream() {
    let (fake, _a, s) = setup(test_config());
    s.set_stream_bypass(3, true).unwrap();
    let ste = s.read_ste(3).unwrap().unwrap();
    assert_eq!(ste[0], 0x9);
    let d = s.alloc_domain().unwrap();
    s.attach(3, 0, d).unwrap(); // bypass -> S1: q0 and SHCFG change
    assert_eq!(s.set_stream_bypass(3, false), Err(Error::Busy));
    s.detach(3, 0).unwrap();
    assert!(fake.opcodes().iter().all(|&o| o != 0));
}

#[test]
fn footprint() {
    let n = std::mem::size_of::<S>();
    println!("size_of::<Smmu>() = {n}");
    assert!(n < 64 * 1024, "{n}");
}

#[test]
fn stream_state_table_full() {
    let (_f, _a, s) = setup(test_config());
    let ds: Vec<DomainId> = (0..3).map(|_| s.alloc_domain().unwrap()).collect();
    for sid in 0..iommu_server::MAX_MASTERS as u32 {
        s.attach(sid, 0, ds[sid as usize % 3]).unwrap();
    }
    assert_eq!(s.attach(1000, 0, ds[0]), Err(Error::NoSlot));
    // moving an attached stream still works
    s.attach(0, 0, ds[1]).unwrap();
    s.detach(5, 0).unwrap();
    s.attach(1000, 0, ds[0]).unwrap();
}

#[test]
fn shutdown_frees_everything() {
    for ssid_bits in [0u8, 8] {
        let mut idr = QEMU_IDR;
        idr[0] |= 1 << 19; // CD2L
        idr[1] |= (ssid_bits as u32) << 6;
        let fake = FakeSmmu::new(idr);
        let alloc = HostAlloc::new();
        let s = smmu_with(
            &fake,
            &alloc,
            Config {
                ssid_bits,
                ..test_config()
            },
        )
        .unwrap();
        let d1 = s.alloc_domain().unwrap();
        let d2 = s.alloc_domain().unwrap();
        s.map(d1, 0, 0x8000_0000, 0x40_1000, Perms::RW).unwrap();
        s.map(d2, 1 << 40, 0x8000_0000, 0x1000, Perms::RW).unwrap();
        s.attach(8, 0, d1).unwrap();
        s.attach(0x1234, 0, d2).unwrap();
        if ssid_bits > 0 {
            s.attach(8, 200, d2).unwrap();
            s.attach(8, 3, d1).unwrap();
        }
        let (_m, a, _d, r) = s.shutdown();
        assert_eq!(r, Ok(()));
        assert_eq!(a.live(), 0);
        assert_eq!(a.bad_frees(), 0);
        assert_eq!(fake.reg(regs::CR0), 0);
        assert_eq!(fake.reg(regs::GBPA) & (1 << 20), 1 << 20);
    }
}

#[test]
fn move_and_pasid_attach_out_of_memory_change_nothing() {
    // single-CD stream: the move needs a new CD table
    let (fake, alloc, s) = setup(test_config());
    let d1 = s.alloc_domain().unwrap();
    let d2 = s.alloc_domain().unwrap();
    s.attach(8, 0, d1).unwrap();
    let ste = s.read_ste(8).unwrap();
    fake.clear_log();
    let live = alloc.live();
    alloc.set_budget(Some(0));
    assert_eq!(s.attach(8, 0, d2), Err(Error::NoMemory));
    alloc.set_budget(None);
    assert_eq!(s.read_ste(8).unwrap(), ste);
    assert_eq!(s.attached_domain(8, 0), Some(d1));
    assert!(fake.log().is_empty());
    assert_eq!(alloc.live(), live);

    // substreams: a PASID in a new level-2 CD leaf
    let mut idr = QEMU_IDR;
    idr[0] |= 1 << 19;
    idr[1] |= 10 << 6;
    let fake = FakeSmmu::new(idr);
    let alloc = HostAlloc::new();
    let s = smmu_with(
        &fake,
        &alloc,
        Config {
            ssid_bits: 10,
            ..test_config()
        },
    )
    .unwrap();
    let d = s.alloc_domain().unwrap();
    s.attach(8, 0, d).unwrap();
    let live = alloc.live();
    fake.clear_log();
    alloc.set_budget(Some(0));
    assert_eq!(s.attach(8, 700, d), Err(Error::NoMemory));
    alloc.set_budget(None);
    assert_eq!(s.attached_domain(8, 700), None);
    assert!(fake.log().is_empty());
    assert_eq!(alloc.live(), live);
    assert_eq!(s.attach(8, 1024, d), Err(Error::SsidOutOfRange));
    s.attach(8, 700, d).unwrap();
    assert_eq!(s.domain_devices(d).unwrap(), &[(8, 0), (8, 700)]);
    // STE: S1Fmt = 1 (4 KiB leaves), S1CDMax = 10, S1DSS = SSID0
    let ste = s.read_ste(8).unwrap().unwrap();
    assert_eq!((ste[0] >> 4) & 3, 1);
    assert_eq!(ste[0] >> 59, 10);
    assert_eq!(ste[1] & 3, 2);
    s.detach(8, 0).unwrap();
    assert_eq!(s.read_ste(8).unwrap().unwrap()[1] & 3, 0, "S1DSS terminate");
    s.detach(8, 700).unwrap();
    assert_eq!(s.read_ste(8).unwrap().unwrap()[0], 1);
}
