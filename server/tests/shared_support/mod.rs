//! Shared by the tests of the concurrent core (`loom_*` and
//! `shared_threads`): a booted `SharedSmmu` over the software SMMUv3 model
//! (any lock family; the model's register file directly, or any `Mmio`
//! wrapped around it, e.g. one that injects command-queue failures), the
//! checker of the invariants of DESIGN.md 5, which
//! reads back what the SMMU would fetch (through the model's decoders) and
//! what its caches hold, and, under `--cfg loom`, the loom lock family and
//! exploration helpers.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex as StdMutex;

use embedded_hal::delay::DelayNs;
use iommu_server::hal::Mmio;
use iommu_server::shared::SharedSmmu;
use iommu_server::sync::LockFamily;
use iommu_server::{Config, DomainId, Perms};
use smmu_model::{Access, Command, Features, Machine, MemConfig, ModelOptions};

/// The model completes every handshake at once.
pub struct NoDelay;
impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// Makes the first command the SMMU has not consumed yet (from its
/// CMDQ_CONS up to the driver's new CMDQ_PROD `prod`) whose first qword
/// `pick` accepts illegal (opcode 0x7f) in queue memory, so the SMMU
/// rejects it (CMDQ_CONS.ERR = CERROR_ILL) and the driver's error path
/// skips it. True if there was one. For register-file wrappers that inject
/// command errors, called on their CMDQ_PROD write.
pub fn make_queued_command_illegal(
    smmu: &smmu_model::Smmu,
    mem: &smmu_model::PhysMem,
    prod: u32,
    pick: impl Fn(u64) -> bool,
) -> bool {
    let base = smmu.read64(iommu_server::regs::CMDQ_BASE);
    let log2 = (base & 0x1f) as u32;
    let addr = base & smmu_model::spec::reg::Q_BASE_ADDR_MASK;
    let mask = (1u32 << (log2 + 1)) - 1;
    let mut at = smmu.read32(iommu_server::regs::CMDQ_CONS) & mask;
    while at != prod & mask {
        let entry = addr + 16 * u64::from(at & ((1 << log2) - 1));
        let q0 = mem.read_u64(entry).expect("queue memory");
        if pick(q0) {
            mem.write_u64(entry, (q0 & !0xff) | 0x7f)
                .expect("queue memory");
            return true;
        }
        at = (at + 1) & mask;
    }
    false
}

/// Domain slots of the cores under test (few: the checker locks each).
pub const SLOTS: usize = 4;

/// The core under test: lock family `F`, register file `M` (the model's
/// by default).
pub type Core<F, M = smmu_model::Smmu> = SharedSmmu<M, smmu_model::PhysMem, NoDelay, F, SLOTS>;

/// A machine and the concurrent core driving it. `asids` ASIDs (1..asids)
/// exist, so that recycling happens with a handful of domains.
pub fn boot_with<F: LockFamily>(asids: u32, ssid_bits: u8) -> (Machine, Core<F>) {
    boot_on::<F, smmu_model::Smmu>(asids, ssid_bits, None, |m| m.smmu.clone())
}

/// As [`boot_with`], the core reaching the model's registers through
/// `regs(&machine)` (a wrapper around `machine.smmu`), with
/// `poll_timeout_us` if given (the model completes every poll at once, so
/// only a wrapper that withholds progress makes it matter).
pub fn boot_on<F: LockFamily, M: Mmio + Send>(
    asids: u32,
    ssid_bits: u8,
    poll_timeout_us: Option<u32>,
    regs: impl FnOnce(&Machine) -> M,
) -> (Machine, Core<F, M>) {
    let features = if ssid_bits == 0 {
        Features::qemu_7_2()
    } else {
        Features::with_substreams(ssid_bits)
    };
    let mem = MemConfig {
        phys_base: 0x8000_0000,
        size: 2 << 20,
        poison_on_free: Some(0xFF),
    };
    let m = Machine::with(features, ModelOptions::default(), mem);
    let mut config = Config {
        cmdq_log2: 5,
        evtq_log2: 4,
        max_sid_bits: 6,
        ssid_bits,
        linear_strtab: true,
        max_asids: asids,
        ..Config::default()
    };
    if let Some(t) = poll_timeout_us {
        config.poll_timeout_us = t;
    }
    let mmio = regs(&m);
    let core = Core::<F, M>::new(mmio, m.mem.clone(), NoDelay, config).expect("boots");
    (m, core)
}

pub const IOVA: u64 = 0x10_0000;

/// A page of memory for `d`, mapped at [`IOVA`]; returns its address.
pub fn map_page<F: LockFamily, M: Mmio + Send>(m: &Machine, core: &Core<F, M>, d: DomainId) -> u64 {
    let pa = m.mem.alloc_buffer(4096, 4096).expect("buffer");
    core.map(d, IOVA, pa, 4096, Perms::RW).expect("map");
    pa
}

/// What a device (StreamID, SSID) reaches at [`IOVA`] now (SSID 0 is
/// non-substream traffic, which STE.S1DSS = SSID0 sends to CD 0), through the
/// SMMU's caches (filling them), without recording an event.
pub fn reach<F: LockFamily, M: Mmio + Send>(
    m: &Machine,
    core: &Core<F, M>,
    sid: u32,
    ssid: u32,
) -> Option<u64> {
    let ss = (core.ssid_bits() != 0 && ssid != 0).then_some(ssid);
    m.smmu
        .probe(sid, ss, IOVA, Access::READ)
        .ok()
        .map(|t| t.paddr)
}

/// Which invariants [`Checker::check`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    pub inv1: bool,
    pub inv2: bool,
    pub inv4: bool,
}

impl Checks {
    pub const ALL: Checks = Checks {
        inv1: true,
        inv2: true,
        inv4: true,
    };
}

/// A record of what the threads did, with the model's command sequence
/// numbers, printed with a violation.
#[derive(Default)]
pub struct Trace {
    lines: StdMutex<Vec<String>>,
}

impl Trace {
    pub fn note(&self, m: &Machine, who: &str, what: impl std::fmt::Display) {
        let seq = m.smmu.command_seq();
        self.lines
            .lock()
            .unwrap()
            .push(format!("  [cmd {seq:3}] {who}: {what}"));
    }
    pub fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// (id, ASID, TTB0, device list) of a domain, as the checker saw it.
type SeenDomain = (DomainId, u16, u64, Vec<(u32, u32)>);

/// The invariant checker. Its ghost state (who held each ASID when last
/// seen, and at which command) is only touched under the core's ASID lock
/// (inside `audit`), so a std mutex never blocks here.
pub struct Checker {
    /// Every (StreamID, SSID) the test may program.
    pub universe: Vec<(u32, u32)>,
    pub checks: Checks,
    ghost: StdMutex<HashMap<u16, (u64, u64)>>,
    /// Command-log position after boot (where the printed log starts).
    pub log_start: u64,
    /// See [`Checker::after_failures`].
    failures: bool,
}

impl Checker {
    pub fn new(m: &Machine, universe: Vec<(u32, u32)>, checks: Checks) -> Self {
        Checker {
            universe,
            checks,
            ghost: StdMutex::new(HashMap::new()),
            log_start: m.smmu.command_seq(),
            failures: false,
        }
    }

    /// The invariants as they must hold when commands may have failed (a
    /// CMD_SYNC that timed out, a command the SMMU rejected), which leaves
    /// the SMMU holding configuration that memory no longer shows:
    /// * invariant 2 names a domain by its page table: a CD in memory may
    ///   still carry a stale ASID of the domain it is listed on (an ASID
    ///   change that stopped half-way; the domain keeps that ASID);
    /// * invariant 1 covers every name the SMMU can use or that the core
    ///   hands out: the CDs in memory, the CDs the SMMU holds cached, and
    ///   every live domain's ASID;
    /// * nothing the SMMU can still use belongs to a freed domain: a
    ///   cached CD names a live domain's page table, and a cached STE
    ///   points at a live CD table.
    pub fn after_failures(mut self) -> Self {
        self.failures = true;
        self
    }

    /// Checks DESIGN.md 5's invariants 1, 2 and 4 (3 is checked by the
    /// threads after each detach/unmap, through [`reach`]); panics with the
    /// violations, the trace and the command log.
    pub fn check<F: LockFamily, M: Mmio + Send>(
        &self,
        m: &Machine,
        core: &Core<F, M>,
        trace: &Trace,
        when: &str,
    ) {
        let errs: RefCell<Vec<String>> = RefCell::new(Vec::new());
        // (asid, ttbr, devices) of each live domain, read under its lock.
        let doms: RefCell<Vec<SeenDomain>> = RefCell::new(Vec::new());
        let sub = core.ssid_bits() != 0;
        core.audit(
            |d| {
                doms.borrow_mut().push((d.id, d.asid, d.ttbr, d.devices.to_vec()));
                // Invariants 3 and 4 as the TLB shows them: an entry tagged
                // with this domain's ASID translates as its page table does
                // (a stale entry of an earlier owner, or of an unmap that
                // returned, would not).
                if d.asid != 0 && self.checks.inv4 {
                    for e in m.smmu.tlb_entries() {
                        if e.asid == Some(d.asid) {
                            let now = d.pgtable.iova_to_phys(e.va).map(|(pa, _)| pa);
                            if now != Some(e.pa) {
                                errs.borrow_mut().push(format!(
                                    "invariant 3/4: stale TLB entry: ASID {} va {:#x} -> {:#x}, but ASID {} is domain {:?} whose table gives {:?}",
                                    d.asid, e.va, e.pa, d.asid, d.id, now
                                ));
                            }
                        }
                    }
                }
            },
            // Under the command-queue lock: the model behind any wrapper.
            |_| {
                let smmu = &m.smmu;
                let doms = doms.borrow();
                // Live CDs, as the SMMU would fetch them from memory.
                let mut live: Vec<((u32, u32), u16, u64)> = Vec::new();
                for &(sid, ssid) in &self.universe {
                    let ss = (sub && ssid != 0).then_some(ssid);
                    if let Ok(cd) = smmu.cd_at(sid, ss) {
                        if cd.valid {
                            live.push(((sid, ssid), cd.asid, cd.ttb0));
                        }
                    }
                }
                // What the SMMU holds cached (failure mode): CDs, and
                // whether each cached STE's CD table is still allocated.
                let mut cached: Vec<((u32, u32), u16, u64)> = Vec::new();
                if self.failures {
                    let mut sids: Vec<u32> = self.universe.iter().map(|d| d.0).collect();
                    sids.sort_unstable();
                    sids.dedup();
                    for sid in sids {
                        let Some(ste) = smmu.cached_ste(sid) else {
                            continue;
                        };
                        if ste.valid
                            && ste.config == smmu_model::SteConfig::S1Trans
                            && m.mem.block_containing(ste.s1_context_ptr).is_none()
                        {
                            errs.borrow_mut().push(format!(
                                "freed in use: the SMMU holds an STE of stream {sid} whose CD table {:#x} was freed",
                                ste.s1_context_ptr
                            ));
                        }
                    }
                    for &(sid, ssid) in &self.universe {
                        if let Some(cd) = smmu.cached_cd(sid, ssid).filter(|cd| cd.valid) {
                            cached.push(((sid, ssid), cd.asid, cd.ttb0));
                            if !doms.iter().any(|d| d.2 == cd.ttb0) {
                                errs.borrow_mut().push(format!(
                                    "freed in use: the SMMU holds a CD of {:?} (ASID {}, TTB0 {:#x}) naming no live domain",
                                    (sid, ssid), cd.asid, cd.ttb0
                                ));
                            }
                        }
                    }
                }
                if self.checks.inv1 && self.failures {
                    let mut names: Vec<(String, u16, u64)> = Vec::new();
                    for l in &live {
                        names.push((format!("CD of {:?}", l.0), l.1, l.2));
                    }
                    for c in &cached {
                        names.push((format!("cached CD of {:?}", c.0), c.1, c.2));
                    }
                    for d in doms.iter().filter(|d| d.1 != 0) {
                        names.push((format!("domain {:?}", d.0), d.1, d.2));
                    }
                    for (i, a) in names.iter().enumerate() {
                        for b in &names[i + 1..] {
                            if a.1 == b.1 && a.2 != b.2 {
                                errs.borrow_mut().push(format!(
                                    "invariant 1: ASID {} names two translations: {} has TTB0 {:#x}, {} has TTB0 {:#x}",
                                    a.1, a.0, a.2, b.0, b.2
                                ));
                            }
                        }
                    }
                } else if self.checks.inv1 {
                    for (i, a) in live.iter().enumerate() {
                        for b in &live[i + 1..] {
                            if a.1 == b.1 && a.2 != b.2 {
                                errs.borrow_mut().push(format!(
                                    "invariant 1: ASID {} names two translations: CD of {:?} has TTB0 {:#x}, CD of {:?} has TTB0 {:#x}",
                                    a.1, a.0, a.2, b.0, b.2
                                ));
                            }
                        }
                    }
                }
                if self.checks.inv2 {
                    for &(dev, asid, ttb) in &live {
                        let on: Vec<_> = doms.iter().filter(|d| d.3.contains(&dev)).collect();
                        match on.as_slice() {
                            [d] if d.1 == asid && d.2 == ttb => {}
                            // A stale ASID of the domain it is listed on.
                            [d] if self.failures && d.2 == ttb => {}
                            [d] => errs.borrow_mut().push(format!(
                                "invariant 2: CD of {dev:?} (ASID {asid}, TTB0 {ttb:#x}) but it is listed on {:?} (ASID {}, TTB0 {:#x})",
                                d.0, d.1, d.2
                            )),
                            _ => errs.borrow_mut().push(format!(
                                "invariant 2: CD of {dev:?} (ASID {asid}) is programmed but the device is on {} domain lists",
                                on.len()
                            )),
                        }
                    }
                    for d in doms.iter() {
                        for dev in &d.3 {
                            if !live.iter().any(|l| l.0 == *dev) {
                                errs.borrow_mut().push(format!(
                                    "invariant 2: {dev:?} is on {:?}'s list but has no CD",
                                    d.0
                                ));
                            }
                        }
                    }
                }
                if self.checks.inv4 {
                    // An ASID seen with another TTB0 than last time must have
                    // been invalidated (TLBI by ASID, then CMD_SYNC) since.
                    let now = smmu.command_seq();
                    let mut names: Vec<(u16, u64)> = live.iter().map(|l| (l.1, l.2)).collect();
                    names.extend(cached.iter().map(|c| (c.1, c.2)));
                    names.extend(doms.iter().filter(|d| d.1 != 0).map(|d| (d.1, d.2)));
                    let mut ghost = self.ghost.lock().unwrap();
                    for (asid, ttb) in names {
                        if let Some(&(old_ttb, seen)) = ghost.get(&asid) {
                            if old_ttb != ttb && !invalidated(smmu, asid, seen) {
                                errs.borrow_mut().push(format!(
                                    "invariant 4: ASID {asid} reused (TTB0 {old_ttb:#x} -> {ttb:#x}) without TLBI_NH_ASID + CMD_SYNC since command {seen}"
                                ));
                            }
                        }
                        ghost.insert(asid, (ttb, now));
                    }
                }
            },
        );
        let errs = errs.into_inner();
        if !errs.is_empty() {
            panic!(
                "{}\n-- checked {when}\n-- what the threads did:\n{}\n-- commands the SMMU consumed:\n{}",
                errs.join("\n"),
                trace.dump(),
                command_log(m, self.log_start)
            );
        }
    }
}

fn invalidated(smmu: &smmu_model::Smmu, asid: u16, since: u64) -> bool {
    let mut tlbi = false;
    for c in smmu.commands_since(since) {
        match c.decoded {
            Ok(Command::TlbiNhAsid { asid: a, .. }) if a == asid => tlbi = true,
            Ok(Command::TlbiNhAll { .. } | Command::TlbiNsnhAll) => tlbi = true,
            Ok(Command::Sync { .. }) if tlbi => return true,
            _ => {}
        }
    }
    false
}

/// The configuration and invalidation commands since `from`, one a line.
pub fn command_log(m: &Machine, from: u64) -> String {
    let mut s = String::new();
    for c in m.smmu.commands_since(from) {
        match c.decoded {
            Ok(Command::Sync { .. }) => {}
            Ok(cmd) => {
                let _ = writeln!(s, "  [cmd {:3}] {:?}", c.seq, cmd);
            }
            Err(e) => {
                let _ = writeln!(s, "  [cmd {:3}] CERROR {e}", c.seq);
            }
        }
    }
    s
}

#[cfg(loom)]
#[allow(unused_imports)] // not every test that includes this module explores
pub use self::loom_parts::*;

/// The loom lock family and how the tests explore with it.
#[cfg(loom)]
mod loom_parts {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// loom's mutexes: every lock operation of the core is a point where loom
    /// may switch threads.
    pub enum LoomLocks {}

    impl LockFamily for LoomLocks {
        type Mutex<T: Send> = loom::sync::Mutex<T>;
        type Guard<'a, T: Send + 'a> = loom::sync::MutexGuard<'a, T>;
        fn new<T: Send>(v: T) -> loom::sync::Mutex<T> {
            loom::sync::Mutex::new(v)
        }
        fn lock<T: Send>(m: &loom::sync::Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
            m.lock().expect("loom mutexes are not poisoned")
        }
        fn into_inner<T: Send>(m: loom::sync::Mutex<T>) -> T {
            m.into_inner().expect("loom mutexes are not poisoned")
        }
    }

    /// Executions explored by every `loom::model` run of this process.
    pub static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

    /// A machine and the core with loom's locks.
    pub fn boot(asids: u32, ssid_bits: u8) -> (Machine, Core<LoomLocks>) {
        boot_with::<LoomLocks>(asids, ssid_bits)
    }

    /// Loom's configuration: preemption bound from `IOMMU_LOOM_PREEMPTIONS`
    /// (default `default_bound`).
    pub fn builder(default_bound: usize) -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        let bound = std::env::var("IOMMU_LOOM_PREEMPTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_bound);
        b.preemption_bound = Some(bound);
        b.max_branches = 100_000;
        b
    }

    /// Runs `f` under loom with `bound`, counting executions; returns how many.
    pub fn explore(bound: usize, f: impl Fn() + Sync + Send + 'static) -> usize {
        let before = EXECUTIONS.load(Ordering::Relaxed);
        let f = std::sync::Arc::new(f);
        builder(bound).check(move || {
            EXECUTIONS.fetch_add(1, Ordering::Relaxed);
            // loom's first thread has a small stack; the core and the model's
            // boot need more (the tables live inline, as on seL4).
            let f = f.clone();
            spawn(move || f()).join().unwrap();
        });
        EXECUTIONS.load(Ordering::Relaxed) - before
    }

    /// Stack of every loom thread of these tests.
    pub const STACK: usize = 2 << 20;

    /// A loom thread with a [`STACK`]-sized stack.
    pub fn spawn(f: impl FnOnce() + Send + 'static) -> loom::thread::JoinHandle<()> {
        loom::thread::Builder::new()
            .stack_size(STACK)
            .spawn(f)
            .expect("loom thread")
    }
}
