//! Command-queue timeouts on the concurrent core that the seL4 server runs
//! (`SharedSmmu`, through `Core for &SharedSmmu`), seen through the request
//! handler. `robust_hw_errors.rs` covers the single-threaded `Smmu`.
//!
//! The SMMU here is the software model behind a register file that lies
//! about CMDQ_CONS while armed: the model executes every command (so the
//! STE and CD really are live), but the driver never sees its CMD_SYNC
//! consumed and times out. That is the state the handler must still be
//! able to undo.
#![cfg(not(loom))]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use iommu_client::{Error as ClientError, InProcess, Iommu, Perms, Region, Ssid, StreamId};
use iommu_protocol::ErrorCode;
use iommu_server::hal::Mmio;
use iommu_server::handler::{FakeFrames, Handler, ReceivedCap};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use iommu_server::regs;
use iommu_server::shared::SharedSmmu;
use iommu_server::sync::StdLocks;
use iommu_server::{Config, DomainId, Error};
use smmu_model::{Access, Features, Machine};

#[path = "shared_support/mod.rs"]
mod shared_support;
use shared_support::{make_queued_command_illegal, NoDelay};

/// When CMDQ_CONS stops moving, as the driver sees it.
#[derive(Default)]
struct Freeze {
    /// Batches (CMDQ_PROD writes) still to pass before it freezes; None:
    /// not armed.
    after: Option<u32>,
    /// CMDQ_CONS as it read before the frozen batch ran.
    at: Option<u32>,
    /// The next command with this opcode that the driver publishes is
    /// made illegal before the SMMU sees it, so the SMMU rejects it
    /// (CMDQ_CONS.ERR = CERROR_ILL) and the driver skips it.
    reject: Option<u8>,
    /// With `reject`: only a command whose StreamID field (qword 0
    /// `[63:32]`) is this one.
    reject_sid: Option<u32>,
}

/// The model's register file; from the chosen batch on, CMDQ_CONS reads as
/// it did before that batch (the commands still run in the model).
struct FrozenCons {
    inner: smmu_model::Smmu,
    mem: smmu_model::PhysMem,
    freeze: Arc<Mutex<Freeze>>,
}

impl FrozenCons {
    /// Rewrites the first command with opcode `op` between the SMMU's
    /// CMDQ_CONS and `prod` to an illegal opcode; true if there was one.
    fn reject(&self, op: u8, sid: Option<u32>, prod: u32) -> bool {
        make_queued_command_illegal(&self.inner, &self.mem, prod, |q0| {
            q0 as u8 == op && sid.is_none_or(|sid| (q0 >> 32) as u32 == sid)
        })
    }
}

impl Mmio for FrozenCons {
    fn read32(&self, offset: usize) -> u32 {
        match self.freeze.lock().unwrap().at {
            Some(cons) if offset == regs::CMDQ_CONS => cons,
            _ => self.inner.read32(offset),
        }
    }
    fn write32(&self, offset: usize, value: u32) {
        if offset == regs::CMDQ_PROD {
            let mut f = self.freeze.lock().unwrap();
            if let Some(op) = f.reject {
                if self.reject(op, f.reject_sid, value) {
                    f.reject = None;
                }
            }
            match f.after {
                Some(0) if f.at.is_none() => f.at = Some(self.inner.read32(regs::CMDQ_CONS)),
                Some(n) if n > 0 => f.after = Some(n - 1),
                _ => {}
            }
        }
        self.inner.write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        self.inner.read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        self.inner.write64(offset, value)
    }
}

type Core = SharedSmmu<FrozenCons, smmu_model::PhysMem, NoDelay, StdLocks, 16>;
type HandleFn = Box<dyn FnMut(u64, &[u8], &[ReceivedCap], &mut [u8]) -> usize>;
type Server = Rc<RefCell<Handler<&'static Core, FakeFrames>>>;

const A: u64 = 0xA;
const SID: u32 = 8;
const IOVA: u64 = 0x10_0000;

static CLIENTS: [ClientPolicy; 1] = [ClientPolicy {
    name: "a",
    badge: A,
    streams: &[StreamGrant::new(StreamId(SID))],
    quotas: Quotas::DEFAULT,
}];

struct Setup {
    m: Machine,
    freeze: Arc<Mutex<Freeze>>,
    server: Server,
    client: Iommu<InProcess<HandleFn, ReceivedCap>>,
    domain: iommu_protocol::DomainId,
}

/// A client with a domain that maps one page at [`IOVA`], not attached.
fn setup() -> Setup {
    let (m, freeze, core) = bare_core();
    let server = Rc::new(RefCell::new(
        Handler::new(core, FakeFrames::new(), Policy::new(&CLIENTS)).unwrap(),
    ));
    server.borrow_mut().grant_everything();
    let h = server.clone();
    let f: HandleFn = Box::new(move |b, req, caps, out| h.borrow_mut().handle(b, req, caps, out));
    let mut client = Iommu::connect(InProcess::new(A, f)).expect("hello");
    let paddr = m.mem.alloc_buffer(0x1000, 0x1000).expect("buffer");
    let cap = server.borrow_mut().resolver_mut().frame(paddr, 0x1000);
    let memory = client.register_memory(&[cap]).unwrap();
    let domain = client.alloc_domain().unwrap();
    client
        .map(domain, IOVA, memory.handle, 0, 0x1000, Perms::RW)
        .unwrap();
    Setup {
        m,
        freeze,
        server,
        client,
        domain,
    }
}

impl Setup {
    /// Runs `f` with the command queue seen frozen from its batch number
    /// `batch` (0: the first) on; then the queue is seen to run again.
    fn with_sync_timing_out<R>(&mut self, batch: u32, f: impl FnOnce(&mut Self) -> R) -> R {
        *self.freeze.lock().unwrap() = Freeze {
            after: Some(batch),
            ..Freeze::default()
        };
        let r = f(self);
        *self.freeze.lock().unwrap() = Freeze::default();
        r
    }

    fn reaches(&self) -> bool {
        self.m.smmu.probe(SID, None, IOVA, Access::READ).is_ok()
    }
}

/// Batches a first attach issues at most (CD, STE, their syncs).
const ATTACH_BATCHES: u32 = 4;

#[test]
fn a_first_attach_whose_sync_times_out_anywhere_can_be_detached() {
    for batch in 0..ATTACH_BATCHES {
        let mut s = setup();
        let d = s.domain;
        let attached =
            s.with_sync_timing_out(batch, |s| s.client.attach(StreamId(SID), Ssid(0), d));
        // Wherever it stopped, what the SMMU executed may be live although
        // the client was told the attach failed: the stream must then be
        // detachable, and the device cut off after the detach.
        let live = s.reaches();
        let detached = s.client.detach(StreamId(SID), Ssid(0));
        assert!(
            !s.reaches(),
            "batch {batch}: attach {attached:?}, live {live}, detach {detached:?}: the device still reaches the domain"
        );
        if live {
            assert_eq!(detached, Ok(()), "batch {batch}: attach {attached:?}");
        }
        assert_eq!(s.client.free_domain(d), Ok(()), "batch {batch}");
    }
}

#[test]
fn a_client_whose_first_attach_timed_out_is_retired_whole() {
    for batch in 0..ATTACH_BATCHES {
        let mut s = setup();
        let d = s.domain;
        let attached =
            s.with_sync_timing_out(batch, |s| s.client.attach(StreamId(SID), Ssid(0), d));
        let retired = s.server.borrow_mut().retire_client(A);
        assert!(
            retired.is_ok(),
            "batch {batch}: attach {attached:?}, retire {retired:?}"
        );
        assert!(
            !s.reaches(),
            "batch {batch}: attach {attached:?}: a retired client's device still reaches its domain"
        );
    }
}

/// The core over the freezing register file, no handler on it.
fn bare_core() -> (Machine, Arc<Mutex<Freeze>>, &'static Core) {
    core_with(Features::qemu_7_2(), 0)
}

/// As [`bare_core`], on an SMMU with `ssid_bits` SubstreamID bits.
fn core_with(features: Features, ssid_bits: u8) -> (Machine, Arc<Mutex<Freeze>>, &'static Core) {
    core_with_asids(features, ssid_bits, 0)
}

/// As [`core_with`], with `Config::max_asids` (0: all).
fn core_with_asids(
    features: Features,
    ssid_bits: u8,
    max_asids: u32,
) -> (Machine, Arc<Mutex<Freeze>>, &'static Core) {
    let m = Machine::new(features);
    let freeze = Arc::new(Mutex::new(Freeze::default()));
    let registers = FrozenCons {
        inner: m.smmu.clone(),
        mem: m.mem.clone(),
        freeze: freeze.clone(),
    };
    // A short poll: the model never consumes a frozen queue.
    let config = Config {
        poll_timeout_us: 10,
        ssid_bits,
        max_asids,
        ..Config::default()
    };
    let core = Core::new(registers, m.mem.clone(), NoDelay, config).expect("boots");
    let core: &'static Core = Box::leak(Box::new(core));
    (m, freeze, core)
}

#[test]
fn an_asid_change_that_times_out_half_way_still_lets_unmap_cut_every_stream_off() {
    // Two streams on one domain, both with the page in their TLB under the
    // domain's ASID; then the ASID change rewrites the first CD, whose
    // CMD_SYNC times out (the SMMU having run it), and leaves the second
    // CD on the old ASID.
    let (m, freeze, core) = bare_core();
    let d = core.alloc_domain().unwrap();
    let page = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
    core.map(d, IOVA, page, 0x1000, iommu_server::Perms::RW)
        .unwrap();
    for sid in [8, 9] {
        core.attach(sid, 0, d).unwrap();
        assert!(m.smmu.probe(sid, None, IOVA, Access::READ).is_ok());
    }
    *freeze.lock().unwrap() = Freeze {
        after: Some(0),
        ..Freeze::default()
    };
    let changed = core.reassign_asid(d);
    *freeze.lock().unwrap() = Freeze::default();
    assert!(changed.is_err(), "the change timed out: {changed:?}");
    // An unmap that returns Ok means no device reaches the page (DESIGN
    // 5, invariant 3), whichever ASID its CD still carries.
    assert_eq!(core.unmap(d, IOVA, 0x1000), Ok(0x1000));
    for sid in [8, 9] {
        assert!(
            m.smmu.probe(sid, None, IOVA, Access::READ).is_err(),
            "stream {sid} still reaches the unmapped page"
        );
    }
}

/// Which of `domains` the CD of (SID, `ssid`) in memory names (by TTB0),
/// if it is valid.
fn named_in_memory(m: &Machine, core: &Core, ssid: u32, domains: &[DomainId]) -> Option<DomainId> {
    let cd = m.smmu.cd_at(SID, Some(ssid)).ok().filter(|cd| cd.valid)?;
    let named = domains
        .iter()
        .copied()
        .find(|&d| core.with_page_table(d, |pt| pt.ttbr()).ok() == Some(cd.ttb0));
    assert!(named.is_some(), "the CD names no domain: {cd:?}");
    named
}

/// Issue 13, item 2: a move of a substream between domains whose CMD_SYNC
/// times out at any step. The core's books must then follow memory: the
/// device is listed on the domain whose CD memory holds (so that domain
/// cannot be freed under it) and on no other; detach and free work once
/// the queue runs again, and the device is then cut off.
#[test]
fn a_substream_move_that_times_out_anywhere_is_listed_where_its_cd_points() {
    let mut explored = 0;
    for batch in 0.. {
        let (m, freeze, core) = core_with(Features::with_substreams(2), 2);
        let [d0, d1, d2] = [(); 3].map(|_| core.alloc_domain().unwrap());
        for d in [d1, d2] {
            let pa = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
            core.map(d, IOVA, pa, 0x1000, iommu_server::Perms::RW)
                .unwrap();
        }
        core.attach(SID, 0, d0).unwrap();
        core.attach(SID, 1, d1).unwrap();
        *freeze.lock().unwrap() = Freeze {
            after: Some(batch),
            ..Freeze::default()
        };
        let moved = core.attach(SID, 1, d2);
        *freeze.lock().unwrap() = Freeze::default();
        if moved.is_ok() {
            assert!(batch > 0, "the move issues commands");
            break;
        }
        explored += 1;
        let named = named_in_memory(&m, core, 1, &[d1, d2]);
        assert_eq!(
            core.attached_domain(SID, 1),
            named,
            "batch {batch}: the books list (SID, 1) elsewhere than its CD in memory points"
        );
        for d in [d1, d2] {
            if named == Some(d) {
                assert_eq!(
                    core.free_domain(d),
                    Err(Error::Busy),
                    "batch {batch}: the domain the CD names was freed under it"
                );
            }
        }
        if named.is_some() {
            core.detach(SID, 1).unwrap();
        }
        core.detach(SID, 0).unwrap();
        for d in [d0, d1, d2] {
            assert_eq!(core.free_domain(d), Ok(()), "batch {batch}");
        }
        assert!(m.smmu.probe(SID, Some(1), IOVA, Access::READ).is_err());
    }
    assert!(explored >= 3, "explored {explored} timed-out steps");
}

/// Issue 13, item 2: a move of a single-CD stream whose CFGI_STE the SMMU
/// rejects. Memory then points the stream at the new domain's CD table,
/// while the SMMU keeps its cached STE, CD table and CD of the old domain.
/// Freeing the old domain must first make the SMMU drop them: no cached
/// configuration may name a freed domain's tables.
#[test]
fn a_move_whose_cfgi_is_rejected_pins_the_old_domain_until_confirmed() {
    let (m, freeze, core) = bare_core();
    let [d1, d2] = [(); 2].map(|_| core.alloc_domain().unwrap());
    let p1 = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
    let p2 = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
    core.map(d1, IOVA, p1, 0x1000, iommu_server::Perms::RW)
        .unwrap();
    core.map(d2, IOVA, p2, 0x1000, iommu_server::Perms::RW)
        .unwrap();
    core.attach(SID, 0, d1).unwrap();
    let old_ttb = core.with_page_table(d1, |pt| pt.ttbr()).unwrap();
    // The SMMU caches the STE and CD of d1.
    assert_eq!(m.smmu.translate(SID, None, IOVA, Access::READ), Ok(p1));
    freeze.lock().unwrap().reject = Some(0x03); // CMD_CFGI_STE
    let moved = core.attach(SID, 0, d2);
    assert!(
        freeze.lock().unwrap().reject.is_none(),
        "nothing was rejected"
    );
    assert!(matches!(moved, Err(Error::Hardware(_))), "{moved:?}");
    assert_eq!(
        core.attached_domain(SID, 0),
        Some(d2),
        "memory points at d2"
    );
    let stale = m.smmu.cached_cd(SID, 0).map(|cd| cd.ttb0);
    assert_eq!(stale, Some(old_ttb), "the SMMU still holds d1's CD");
    core.free_domain(d1).unwrap();
    let cached = m.smmu.cached_cd(SID, 0).map(|cd| cd.ttb0);
    assert_ne!(
        cached,
        Some(old_ttb),
        "d1 was freed while the SMMU still held its CD"
    );
    assert_eq!(m.smmu.translate(SID, None, IOVA, Access::READ), Ok(p2));
    core.detach(SID, 0).unwrap();
    core.free_domain(d2).unwrap();
}

/// A map that runs out of table memory half-way undoes what it wrote; when
/// that undo's invalidation times out, the tables it unlinked are neither
/// lost nor freed early: the domain keeps them (counted) until a later flush
/// or its free, and the caller is told the invalidation failed, not
/// `NoMemory` (found by review; issue 13, item 5).
#[test]
fn a_map_undo_whose_flush_times_out_loses_no_table() {
    let (m, freeze, core) = bare_core();
    let d = core.alloc_domain().unwrap();
    // An ASID, so the undo's flush issues commands.
    core.attach(SID, 0, d).unwrap();
    let pages_before = core.pt_pages(d).unwrap();
    let buf = m.mem.alloc_buffer(0x2000, 0x1000).unwrap();
    let blocks_with_buf = m.mem.live_blocks().len();
    // Page 1 at 0x1f_f000 needs level-1, -2 and -3 tables; page 2 at
    // 0x20_0000 a second level-3 table: the 4th allocation fails.
    m.mem.fail_nth_alloc(4);
    *freeze.lock().unwrap() = Freeze {
        after: Some(0),
        ..Freeze::default()
    };
    let r = core.map(d, 0x1f_f000, buf, 0x2000, iommu_server::Perms::RW);
    *freeze.lock().unwrap() = Freeze::default();
    m.mem.clear_failures();
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(core.iova_to_phys(d, 0x1f_f000).is_none());
    // A later flush of the domain frees them.
    core.map(d, 0x4000_0000, buf, 0x1000, iommu_server::Perms::RW)
        .unwrap();
    core.unmap(d, 0x4000_0000, 0x1000).unwrap();
    assert_eq!(core.pt_pages(d).unwrap(), pages_before);
    core.detach(SID, 0).unwrap();
    core.free_domain(d).unwrap();
    // The CD table and the root went; the buffer stays.
    assert_eq!(m.mem.live_blocks().len(), blocks_with_buf - 2);
}

/// A batch whose second entry fails (no table memory) is undone; when the
/// undo of the first entry times out, the SMMU may still hold that
/// translation, so the handler keeps it recorded and its memory in use (as
/// after an unmap that timed out) instead of handing the memory back.
#[test]
fn a_batch_whose_undo_times_out_keeps_what_it_could_not_undo() {
    let mut s = setup();
    let d = s.domain;
    s.client.attach(StreamId(SID), Ssid(0), d).unwrap();
    let paddr = s.m.mem.alloc_buffer(0x2000, 0x1000).expect("buffer");
    let cap = s.server.borrow_mut().resolver_mut().frame(paddr, 0x2000);
    let memory = s.client.register_memory(&[cap]).unwrap();
    let before = s.client.stats().unwrap();
    // Far apart: each entry needs a new level-2 and level-3 table; the
    // second entry's second table (the 4th allocation) fails.
    let regions: Vec<Region> = (0..2u64)
        .map(|i| Region {
            iova: (i + 1) << 30,
            memory: memory.handle,
            offset: i * 0x1000,
            len: 0x1000,
            perms: Perms::RW,
        })
        .collect();
    s.m.mem.fail_nth_alloc(4);
    let mapped = s.with_sync_timing_out(0, |s| s.client.map_batch(d, &regions));
    s.m.mem.clear_failures();
    assert_eq!(mapped, Err(ClientError::Iommu(ErrorCode::NoMemory)));
    let after = s.client.stats().unwrap();
    assert_eq!(
        after.mapped_bytes,
        before.mapped_bytes + 0x1000,
        "the first entry, whose undo timed out, is no longer recorded"
    );
    assert_eq!(
        s.client.unregister_memory(memory.handle),
        Err(ClientError::Iommu(ErrorCode::InUse))
    );
    // Freeing the domain takes it back.
    s.client.detach(StreamId(SID), Ssid(0)).unwrap();
    s.client.free_domain(d).unwrap();
    s.client.unregister_memory(memory.handle).unwrap();
}

/// A substream whose CD lies in a level-2 CD table not made yet: the new
/// table's level-1 descriptor replaces an invalid one the SMMU may have
/// cached (an earlier transaction with that SSID faulted), so the attach
/// invalidates with CFGI_CD Leaf = 0 before writing the CD (Linux
/// `arm_smmu_get_cd_ptr`; found by review). A CD in an existing leaf
/// needs only Leaf = 1.
#[test]
fn a_cd_in_a_new_level_2_table_invalidates_its_level_1_descriptor() {
    let (m, _freeze, core) = core_with(Features::with_substreams(7), 7);
    let d = core.alloc_domain().unwrap();
    core.attach(SID, 0, d).unwrap();
    for (ssid, leaf) in [(64, false), (65, true)] {
        let from = m.smmu.command_seq();
        core.attach(SID, ssid, d).unwrap();
        let cfgis: Vec<bool> = m
            .smmu
            .commands_since(from)
            .into_iter()
            .filter_map(|c| match c.decoded {
                Ok(smmu_model::Command::CfgiCd { sid, ssid: s, leaf })
                    if sid == SID && s == ssid =>
                {
                    Some(leaf)
                }
                _ => None,
            })
            .collect();
        assert_eq!(cfgis.first(), Some(&leaf), "SSID {ssid}: {cfgis:?}");
    }
}

/// ASID recycling passes over an idle domain whose stale-ASID list is full
/// (its ASID change would be refused) and takes another idle domain's ASID,
/// instead of failing the attach with `Busy` (found by review).
#[test]
fn recycling_skips_an_idle_domain_that_cannot_change_its_asid() {
    // ASIDs 1..=6.
    let (_m, freeze, core) = core_with_asids(Features::qemu_7_2(), 0, 7);
    let config_asids = 6;
    let [x, y, z] = [(); 3].map(|_| core.alloc_domain().unwrap());
    core.attach(8, 0, x).unwrap();
    // Four ASID changes of x fail at their CD rewrite: x keeps each old
    // ASID as stale, and its list is full.
    for _ in 0..4 {
        *freeze.lock().unwrap() = Freeze {
            after: Some(0),
            ..Freeze::default()
        };
        assert!(core.reassign_asid(x).is_err());
        *freeze.lock().unwrap() = Freeze::default();
    }
    core.detach(8, 0).unwrap();
    core.attach(9, 0, y).unwrap();
    core.detach(9, 0).unwrap();
    assert_eq!(core.asids_in_use(), config_asids);
    // No ASID is free: z's attach recycles y's.
    let y_asid = core.domain_asid(y).unwrap();
    core.attach(10, 0, z).unwrap();
    assert_eq!(core.domain_asid(z).unwrap(), y_asid);
    assert_eq!(core.domain_asid(y).unwrap(), 0);
}

/// An STE write whose CMD_SYNC timed out left memory at its target; the
/// retry finds nothing to change in memory, but the SMMU may still hold
/// the old STE, so it still invalidates it (issue 13, item 5).
#[test]
fn a_retried_entry_write_invalidates_although_memory_holds_the_target() {
    let (m, freeze, core) = bare_core();
    // Abort -> bypass: SHCFG first (unused while aborting), then qword 0,
    // whose CMD_SYNC times out.
    *freeze.lock().unwrap() = Freeze {
        after: Some(1),
        ..Freeze::default()
    };
    assert!(core.set_stream_bypass(3, true).is_err());
    assert_eq!(
        core.read_ste(3).unwrap().unwrap()[0] & 0xf,
        0x9,
        "bypass in memory"
    );
    *freeze.lock().unwrap() = Freeze::default();
    let from = m.smmu.command_seq();
    core.set_stream_bypass(3, true).unwrap();
    let cmds: Vec<_> = m
        .smmu
        .commands_since(from)
        .into_iter()
        .filter_map(|c| c.decoded.ok())
        .collect();
    assert!(
        matches!(
            cmds.as_slice(),
            [
                smmu_model::Command::CfgiSte { sid: 3, .. },
                smmu_model::Command::Sync { .. }
            ]
        ),
        "{cmds:?}"
    );
}

/// Retirement (every stream detached, every domain freed, every frame
/// released) with a CMD_SYNC timing out at each of its batches in turn, and
/// with its CFGI_STE or its TLBI_NH_ASID rejected: the client is refused
/// from the first step, retiring again takes back the rest, and then its
/// device reaches nothing, the SMMU holds no translating STE for it, and
/// its tables are freed.
#[test]
fn a_retirement_failing_at_any_point_completes_on_the_next_call() {
    const CFGI_STE: u8 = 0x03;
    const TLBI_NH_ASID: u8 = 0x11;
    let timeouts = (0..).map(|b| (Some(b), None));
    let rejects = [CFGI_STE, TLBI_NH_ASID].map(|op| (None, Some(op)));
    let mut explored = 0;
    for (after, reject) in rejects.into_iter().chain(timeouts) {
        let mut s = setup();
        let d = s.domain;
        s.client.attach(StreamId(SID), Ssid(0), d).unwrap();
        let attached_blocks = s.m.mem.live_blocks().len();
        assert!(s.reaches());
        *s.freeze.lock().unwrap() = Freeze {
            after,
            reject,
            ..Freeze::default()
        };
        let first = s.server.borrow_mut().retire_client(A);
        *s.freeze.lock().unwrap() = Freeze::default();
        let what = format!("timeout from batch {after:?}, rejected opcode {reject:?}");
        if first.is_ok() {
            assert!(after.is_some(), "{what}: nothing failed");
            break;
        }
        explored += 1;
        assert_eq!(
            s.client.stats(),
            Err(ClientError::Iommu(ErrorCode::NotPermitted)),
            "{what}"
        );
        let rest = s.server.borrow_mut().retire_client(A);
        assert!(rest.is_ok(), "{what}: {first:?} then {rest:?}");
        assert!(!s.reaches(), "{what}: the device still reaches its domain");
        assert!(
            s.m.smmu
                .cached_ste(SID)
                .is_none_or(|ste| ste.config != smmu_model::SteConfig::S1Trans),
            "{what}: the SMMU still holds a translating STE"
        );
        // The stream's CD table and the domain's tables are freed.
        assert!(s.m.mem.live_blocks().len() < attached_blocks, "{what}");
    }
    assert!(explored >= 4, "explored {explored}");
}

/// An ASID change refused before the domain takes the new ASID gives it
/// back: refused because a ghost pins the domain and cannot be confirmed
/// (the queue is stuck), or because the domain's stale-ASID list is full
/// (another ASID could then not be tracked, so nothing may change).
#[test]
fn a_refused_asid_change_leaks_no_asid_and_changes_nothing() {
    // A ghost: x's stream moved to y with its CFGI_STE rejected.
    let (_m, freeze, core) = core_with_asids(Features::qemu_7_2(), 0, 16);
    let [x, y] = [(); 2].map(|_| core.alloc_domain().unwrap());
    core.attach(8, 0, x).unwrap();
    core.attach(9, 0, x).unwrap();
    freeze.lock().unwrap().reject = Some(0x03); // CMD_CFGI_STE
    assert!(core.attach(8, 0, y).is_err());
    *freeze.lock().unwrap() = Freeze::default();
    let (asids, x_asid) = (core.asids_in_use(), core.domain_asid(x).unwrap());
    *freeze.lock().unwrap() = Freeze {
        after: Some(0),
        ..Freeze::default()
    };
    assert!(matches!(core.reassign_asid(x), Err(Error::Timeout(_))));
    *freeze.lock().unwrap() = Freeze::default();
    assert_eq!(core.asids_in_use(), asids, "the new ASID leaked");
    assert_eq!(core.domain_asid(x).unwrap(), x_asid);
    // A full stale list: four ASID changes of z fail at a CD rewrite.
    let z = core.alloc_domain().unwrap();
    core.attach(10, 0, z).unwrap();
    for _ in 0..4 {
        *freeze.lock().unwrap() = Freeze {
            after: Some(0),
            ..Freeze::default()
        };
        assert!(core.reassign_asid(z).is_err());
        *freeze.lock().unwrap() = Freeze::default();
    }
    let (asids, z_asid) = (core.asids_in_use(), core.domain_asid(z).unwrap());
    assert_eq!(core.reassign_asid(z), Err(Error::Busy));
    assert_eq!(core.asids_in_use(), asids, "the new ASID leaked");
    assert_eq!(core.domain_asid(z).unwrap(), z_asid);
}

/// Ghosts of substreams are per device: a successful CD write of (s, 1)
/// confirms only (s, 1)'s cached CD, so the ghost (s, 2) left by a move
/// whose CFGI_CD was rejected still pins its old domain, and freeing that
/// domain first makes the SMMU drop the stale CD.
#[test]
fn a_substream_ghost_is_confirmed_only_by_a_sync_that_covers_it() {
    let (m, freeze, core) = core_with(Features::with_substreams(2), 2);
    let [x1, x2, y] = [(); 3].map(|_| core.alloc_domain().unwrap());
    for (ssid, x) in [(1, x1), (2, x2)] {
        let p = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
        core.map(x, IOVA, p, 0x1000, iommu_server::Perms::RW)
            .unwrap();
        core.attach(SID, ssid, x).unwrap();
        // The SMMU caches the CD.
        assert!(m
            .smmu
            .translate(SID, Some(ssid), IOVA, Access::READ)
            .is_ok());
    }
    let x2_ttb = core.with_page_table(x2, |pt| pt.ttbr()).unwrap();
    // (s, 2) moves to y; its CD's CFGI is rejected: memory names y, the
    // SMMU still holds x2's CD.
    freeze.lock().unwrap().reject = Some(0x05); // CMD_CFGI_CD
    assert!(core.attach(SID, 2, y).is_err());
    *freeze.lock().unwrap() = Freeze::default();
    // (Its first step, V = 0, was the one refused: memory has no CD.)
    assert_eq!(core.attached_domain(SID, 2), None);
    assert_eq!(m.smmu.cached_cd(SID, 2).map(|cd| cd.ttb0), Some(x2_ttb));
    // (s, 1) moves to y successfully: its CFGI_CD covers (s, 1) only.
    core.attach(SID, 1, y).unwrap();
    core.free_domain(x2).unwrap();
    assert_ne!(
        m.smmu.cached_cd(SID, 2).map(|cd| cd.ttb0),
        Some(x2_ttb),
        "x2 was freed while the SMMU still held its CD for (s, 2)"
    );
}

/// At most 16 ghosts are kept: the 17th failed move first confirms the 16
/// (so none is dropped untracked), and its own ghost still pins its old
/// domain, whose free then makes the SMMU drop the stale configuration.
#[test]
fn a_full_ghost_list_is_confirmed_before_another_ghost_is_added() {
    let (m, freeze, core) = bare_core();
    let [x, y] = [(); 2].map(|_| core.alloc_domain().unwrap());
    let p = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
    core.map(x, IOVA, p, 0x1000, iommu_server::Perms::RW)
        .unwrap();
    let x_ttb = core.with_page_table(x, |pt| pt.ttbr()).unwrap();
    let sids: Vec<u32> = (1..=17).collect();
    for &sid in &sids {
        core.attach(sid, 0, x).unwrap();
        assert!(m.smmu.translate(sid, None, IOVA, Access::READ).is_ok());
    }
    for &sid in &sids {
        // This stream's CMD_CFGI_STE (not the confirmation of the others').
        *freeze.lock().unwrap() = Freeze {
            reject: Some(0x03),
            reject_sid: Some(sid),
            ..Freeze::default()
        };
        assert!(core.attach(sid, 0, y).is_err(), "stream {sid}");
        *freeze.lock().unwrap() = Freeze::default();
        assert_eq!(core.attached_domain(sid, 0), Some(y));
    }
    core.free_domain(x).unwrap();
    for &sid in &sids {
        assert_ne!(
            m.smmu.cached_cd(sid, 0).map(|cd| cd.ttb0),
            Some(x_ttb),
            "x was freed while the SMMU still held its CD for stream {sid}"
        );
    }
}
