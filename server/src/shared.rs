//! The server core: the one SMMUv3 driver (its encoders, hitless entry
//! writer, stream and CD tables, page tables, ASID allocator and command
//! queue), cut into pieces that live behind the locks of [`crate::sync`],
//! so that several worker threads (and an event thread) can call it at once
//! through `&self`. Single-threaded use ([`crate::Smmu`], the host tests,
//! the model proptests, the fuzzers and the host bench) is this core with
//! uncontended locks: there is no second driver whose behaviour could drift
//! from the one the seL4 server runs.
//!
//! # What each lock guards (DESIGN.md 5)
//! * **ASID lock** (`AsidState`): the ASID allocator, the stream table,
//!   every stream's CD table (so all STE and CD programming), which
//!   domain's CD each (StreamID, SSID) carries, and a copy of each domain's
//!   ASID and TTB0. Every change of an ASID or of the set of CDs that carry
//!   it happens under it: attach (including leaving the old domain),
//!   detach, SVA bind/unbind, ASID reassignment and recycling.
//! * **Domain lock** (one per slot): the device list, the ASID (written with
//!   the ASID lock held too, so map/unmap read a stable ASID under the
//!   domain lock alone), the page table. Map and unmap take only this.
//! * **Command-queue lock**: MMIO, the command and event queues.
//! * **Allocator** (leaf, per call).
//!
//! # ASID changes
//! [`SharedSmmu::reassign_asid`], recycling (an attach or bind that finds
//! no free ASID takes the ASID of a domain whose device list is empty) and
//! SVA sharing (an address space whose ASID is fixed from outside takes it
//! from the private domain that holds it, as Linux's
//! `arm_smmu_share_asid`) all go through one path under the ASID lock:
//! allocate the new ASID (invalidated first if it was freed dirty), lock
//! the domain, rewrite every CD on its device list (hitless: only CD qword
//! 0 changes; CFGI_CD + CMD_SYNC), TLBI_NH_ASID(old) + CMD_SYNC, free the
//! old ASID. The device list is where the CDs are found, so a device must
//! be on the list of the domain whose CD it carries whenever the ASID lock
//! is free (invariant 2); attach changes the lists only under the ASID lock.
//!
//! # The seed's race (test builds only)
//! Under `--cfg loom`, `AttachOrder::SeedRace` makes attach take the
//! device off its old domain's list *before* the ASID lock, as Linux did
//! before "Hold arm_smmu_asid_lock during all of attach_dev": an ASID change
//! of the old domain in that window misses the device's CD, frees the old
//! ASID, and the next owner of that ASID carries it with another TTB0
//! (invariant 1). `server/tests/loom_asid.rs` shows both orderings.

use embedded_hal::delay::DelayNs;

use crate::asid::AsidAllocator;
use crate::bringup::{Config, Parts, MAX_MASTERS};
use crate::cd::{self, CdTable, CdUsed, S1Context};
use crate::cmd::Command;
use crate::domain::{Device, DomainId, DomainInfo, MAX_DEVICES_PER_DOMAIN};
use crate::entry::{self, write_entry, write_entry_offline, Entry};
use crate::error::{Error, Result};
use crate::evtq::{DrainReport, Event, Evtq};
use crate::features::Features;
use crate::hal::{CacheMaintenance, DmaAllocator, DmaBlock, Mmio, NoCache};
use crate::hw::{CmdBatch, GerrorReport, Hw};
use crate::pgtable::{Gather, IoPageTable, Perms};
use crate::regs::{self, qptr};
use crate::stats::Stats;
use crate::ste::{self, S1Dss, SteUsed};
use crate::strtab::StreamTable;
use crate::sync::{level, After, LeafMutex, LockFamily, Ordered, Token};
use crate::tlbi::flush_gather;

/// (StreamID, SSID) pairs attached at once.
pub const MAX_ATTACHED: usize = 128;

/// Unconfirmed configuration writes ([`Ghost`]) kept before they are all
/// confirmed at once.
const MAX_GHOSTS: usize = 16;

/// Where attach leaves the old domain's device list (test builds only).
#[cfg(loom)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOrder {
    /// Under the ASID lock, with the CD change (the design).
    Fixed,
    /// Before taking the ASID lock (Linux before the fix): the seed's race.
    SeedRace,
}

/// Per stream: its CD table.
#[derive(Debug)]
struct Master {
    sid: u32,
    cdtab: CdTable,
    valid_cds: u32,
    s1dss: S1Dss,
}

/// Where an attach writes its CD, allocated by `SharedSmmu::prepare_cd`
/// before anything changes.
enum CdPlace {
    /// A stream not attached yet: its new CD table, and the slot in it.
    NewStream(CdTable, DmaBlock),
    /// A single-CD stream that moves: its next CD table (written offline,
    /// then swapped in through the STE).
    NewTable(usize, CdTable),
    /// A stream with substreams: the slot in its CD table, and whether its
    /// level-2 CD table was just made (its level-1 descriptor was invalid,
    /// and an invalid L1CD may be cached: Linux `arm_smmu_get_cd_ptr`).
    Slot(usize, DmaBlock, bool),
}

impl CdPlace {
    /// Frees what an attach that did not happen allocated.
    fn release<A: DmaAllocator>(self, alloc: &mut A) {
        match self {
            CdPlace::NewStream(tab, _) | CdPlace::NewTable(_, tab) => tab.free(alloc),
            CdPlace::Slot(..) => {}
        }
    }
}

/// Which CD the configuration in memory gives a device after an attach or
/// detach (that may have stopped half-way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InMemory {
    /// The CD it had before.
    Old,
    /// The CD the operation wrote.
    New,
    /// None: the STE aborts, or the CD is invalid.
    None,
}

/// What [`SharedSmmu::program_cd`] did.
struct Programmed {
    result: Result<()>,
    now: InMemory,
    /// A CD table the stream no longer points at in memory, which the SMMU
    /// may still read until a sync covering the stream completes.
    old_table: Option<CdTable>,
}

/// What a completed CMD_SYNC proved the SMMU no longer holds cached.
#[derive(Debug, Clone, Copy)]
enum Covered {
    /// Everything (CFGI_STE of every ghost's stream).
    All,
    /// Every CD of the stream (CFGI_STE).
    Stream(u32),
    /// One CD (CFGI_CD).
    Device(Device),
}

/// A domain the SMMU may still use for a device although memory no longer
/// says so: an attach or detach whose CMD_SYNC timed out (or whose CFGI
/// was rejected) left the SMMU's copy of the device's old STE or CD
/// unconfirmed. Until a sync covering the device completes, the domain is
/// pinned: it is not freed, its ASID is not changed or recycled, and `table`
/// (an old CD table) is not freed.
#[derive(Debug)]
struct Ghost {
    dev: Device,
    slot: usize,
    table: Option<CdTable>,
}

/// Classifies a CD read back from memory against the `target` a write was
/// taking it to another domain: the used-bits algorithm leaves the old
/// configuration, the new one, or V = 0, never a mix, and a domain is told
/// by its TTB0 (every live domain has a root table of its own).
fn classify_cd(now: &Entry, target: &Entry) -> InMemory {
    if now[0] & cd::CD_0_V == 0 {
        InMemory::None
    } else if now[1] & cd::CD_1_TTB0 == target[1] & cd::CD_1_TTB0 {
        InMemory::New
    } else {
        InMemory::Old
    }
}

/// What the ASID lock knows of a domain slot.
#[derive(Debug, Clone, Copy, Default)]
struct SlotMeta {
    live: bool,
    gen: u16,
    /// 0: none (assigned at the first attach or bind).
    asid: u16,
    ttbr: u64,
    sva: bool,
    /// An SVA space whose ASID is fixed from outside.
    pinned: Option<u16>,
}

/// Everything under the ASID lock.
struct AsidState<const N: usize> {
    asids: AsidAllocator,
    strtab: StreamTable,
    masters: heapless::Vec<Master, MAX_MASTERS>,
    /// Which domain slot's CD each (StreamID, SSID) carries.
    attached: heapless::Vec<(Device, usize), MAX_ATTACHED>,
    /// Domains pinned by configuration writes that failed half-way.
    ghosts: heapless::Vec<Ghost, MAX_GHOSTS>,
    meta: [SlotMeta; N],
}

impl<const N: usize> AsidState<N> {
    fn master_index(&self, sid: u32) -> Option<usize> {
        self.masters.iter().position(|m| m.sid == sid)
    }
    fn find(&self, dev: Device) -> Option<usize> {
        self.attached
            .iter()
            .find(|(d, _)| *d == dev)
            .map(|&(_, s)| s)
    }
    fn set_attached(&mut self, dev: Device, slot: usize) {
        self.attached.retain(|(d, _)| *d != dev);
        let _ = self.attached.push((dev, slot));
    }
    fn unset_attached(&mut self, dev: Device) {
        self.attached.retain(|(d, _)| *d != dev);
    }
}

/// Stale ASIDs a domain can hold ([`DomainState::stale_asids`]); a change
/// that could add one more is refused (`Busy`) rather than lose track.
const MAX_STALE_ASIDS: usize = 4;

/// Everything under one domain lock.
struct DomainState<C> {
    gen: u16,
    asid: u16,
    /// ASIDs a CD of this domain may still carry after an ASID change
    /// that failed half-way (a CD rewrite whose CMD_SYNC timed out): every
    /// invalidation of the domain covers them too, and they are freed with
    /// the domain or once a later change reached every CD.
    stale_asids: heapless::Vec<u16, MAX_STALE_ASIDS>,
    pgtable: Option<IoPageTable<C>>,
    devices: heapless::Vec<Device, MAX_DEVICES_PER_DOMAIN>,
    /// The unmap's invalidation gather, reused (see `Gather::reset`).
    gather: Gather,
}

impl<C> Default for DomainState<C> {
    fn default() -> Self {
        DomainState {
            gen: 0,
            asid: 0,
            stale_asids: heapless::Vec::new(),
            pgtable: None,
            devices: heapless::Vec::new(),
            gather: Gather::default(),
        }
    }
}

/// Everything under the command-queue lock.
struct HwState<M, D, C> {
    hw: Hw<M, D, C>,
    evtq: Evtq,
}

/// One domain as [`SharedSmmu::audit`] shows it.
#[derive(Debug)]
pub struct AuditDomain<'a, C = NoCache> {
    pub id: DomainId,
    /// 0: none.
    pub asid: u16,
    pub ttbr: u64,
    pub sva: bool,
    pub devices: &'a [Device],
    pub pgtable: &'a IoPageTable<C>,
}

fn split_id(id: DomainId) -> (usize, u16) {
    ((id.0 & 0xffff) as usize, (id.0 >> 16) as u16)
}

fn make_id(slot: usize, gen: u16) -> DomainId {
    DomainId(slot as u32 | (gen as u32) << 16)
}

/// Domain slots of a [`SharedSmmu`] by default: shared by every client of
/// the server (`cargo xtask` refuses quotas that add up to more).
pub const DOMAIN_SLOTS: usize = 16;

/// The SMMU driver, shareable between threads (`&self` everywhere).
/// `N` domain slots, each with its own lock.
pub struct SharedSmmu<M, A, D, F, const N: usize = DOMAIN_SLOTS>
where
    M: Mmio + Send,
    A: DmaAllocator + Send,
    D: DelayNs + Send,
    F: LockFamily,
{
    features: Features,
    config: Config,
    ssid_bits: u8,
    ril: bool,
    tlbi_threshold: u32,
    #[cfg(loom)]
    order: AttachOrder,
    asid: Ordered<level::Asid, F, AsidState<N>>,
    domains: [Ordered<level::Domain, F, DomainState<A::Cache>>; N],
    cmdq: Ordered<level::Cmdq, F, HwState<M, D, A::Cache>>,
    /// For an SMMU that does not snoop the CPU's caches: what cleans the
    /// STEs, CDs and page tables the core writes (the command queue's copy
    /// is in `Hw`).
    cache: Option<A::Cache>,
    alloc: LeafMutex<F, A>,
    /// Each domain slot's page-table size, `generation << 32 | pages` (0:
    /// no domain), stored under its domain lock after every change, so the
    /// handler's quota check before each map reads it without a lock.
    table_sizes: [core::sync::atomic::AtomicU64; N],
}

impl<M, A, D, F, const N: usize> SharedSmmu<M, A, D, F, N>
where
    M: Mmio + Send,
    A: DmaAllocator + Send,
    D: DelayNs + Send,
    F: LockFamily,
{
    /// Probes the ID registers and runs the enable sequence (Linux
    /// `arm_smmu_device_reset`): GBPA.ABORT while reprogramming; CR0 = 0 and
    /// wait for CR0ACK; CR1/CR2; stream table base/config; command queue
    /// and CMDQEN; CFGI_ALL + sync, TLBI_NSNH_ALL (and TLBI_EL2_ALL with
    /// HYP) + sync; event queue and EVENTQEN; IRQ_CTRL; SMMUEN.
    ///
    /// Every poll is bounded ([`Error::Timeout`]). Requires stage 1,
    /// AArch64 tables, 4 KiB granules, little-endian walks.
    pub fn new(mmio: M, alloc: A, delay: D, config: Config) -> Result<Self> {
        let p = Parts::probe(mmio, alloc, delay, config)?;
        let cache = p.hw.cache.clone();
        Ok(SharedSmmu {
            features: p.features,
            config: p.config,
            ssid_bits: p.ssid_bits,
            ril: p.features.ril && p.config.use_ril,
            tlbi_threshold: p.config.tlbi_threshold,
            #[cfg(loom)]
            order: AttachOrder::Fixed,
            asid: Ordered::new(AsidState {
                asids: p.asids,
                strtab: p.strtab,
                masters: heapless::Vec::new(),
                attached: heapless::Vec::new(),
                ghosts: heapless::Vec::new(),
                meta: [SlotMeta::default(); N],
            }),
            domains: core::array::from_fn(|_| Ordered::new(DomainState::default())),
            cmdq: Ordered::new(HwState {
                hw: p.hw,
                evtq: p.evtq,
            }),
            cache,
            alloc: LeafMutex::new(p.alloc),
            table_sizes: core::array::from_fn(|_| core::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// Stops the SMMU (every stream aborts; nothing bypasses) and frees
    /// every table and queue. Taking the core by value proves
    /// that no thread still uses it. Returns the register interface, the
    /// allocator, the delay and whether the SMMU acknowledged the disable.
    pub fn shutdown(self) -> (M, A, D, Result<()>) {
        let mut asid = self.asid.into_inner();
        let mut hw = self.cmdq.into_inner();
        let mut alloc = self.alloc.into_inner();
        // Off first: no device may walk a table once it is freed.
        let disabled = hw.hw.disable();
        for d in self.domains {
            let mut d = d.into_inner();
            if let Some(p) = d.pgtable.take() {
                p.destroy_with(&mut alloc, &mut d.gather);
            }
        }
        while let Some(m) = asid.masters.pop() {
            m.cdtab.free(&mut alloc);
        }
        while let Some(g) = asid.ghosts.pop() {
            if let Some(t) = g.table {
                t.free(&mut alloc);
            }
        }
        let parts = Parts {
            hw: hw.hw,
            alloc,
            features: self.features,
            config: self.config,
            strtab: asid.strtab,
            evtq: hw.evtq,
            asids: asid.asids,
            ssid_bits: self.ssid_bits,
        };
        let (m, a, d, again) = parts.release();
        (m, a, d, disabled.and(again))
    }

    /// Selects the attach ordering (test builds only).
    #[cfg(loom)]
    pub fn set_attach_order(&mut self, order: AttachOrder) {
        self.order = order;
    }

    /// The probed features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// SubstreamID bits in use.
    pub fn ssid_bits(&self) -> u8 {
        self.ssid_bits
    }

    /// ASIDs in use.
    pub fn asids_in_use(&self) -> u32 {
        let mut t0 = Token::unlocked();
        let (a, _t) = self.asid.lock(&mut t0);
        a.asids.in_use()
    }

    /// The domain's ASID (0: none yet, or recycled while idle).
    pub fn domain_asid(&self, id: DomainId) -> Result<u16> {
        let (slot, gen) = split_id(id);
        let d = self.domains.get(slot).ok_or(Error::NoSuchDomain)?;
        let mut t0 = Token::unlocked();
        let (d, _t) = d.lock(&mut t0);
        if d.gen != gen || d.pgtable.is_none() {
            return Err(Error::NoSuchDomain);
        }
        Ok(d.asid)
    }

    /// A domain's page-table memory in 4 KiB pages (root included): the
    /// quota unit (`PageTable::memory_pages`).
    pub fn pt_pages(&self, id: DomainId) -> Result<u32> {
        let (slot, gen) = split_id(id);
        let size = self
            .table_sizes
            .get(slot)
            .ok_or(Error::NoSuchDomain)?
            .load(core::sync::atomic::Ordering::Acquire);
        // A live domain has at least its root table, so `size` is not 0.
        if size == 0 || (size >> 32) as u16 != gen {
            return Err(Error::NoSuchDomain);
        }
        Ok(size as u32)
    }

    /// Publishes domain `slot`'s page-table size (its lock held).
    fn publish_size(&self, slot: usize, d: &DomainState<A::Cache>) {
        let size = d.pgtable.as_ref().map_or(0, |pt| {
            u64::from(d.gen) << 32 | u64::from(pt.memory_pages())
        });
        self.table_sizes[slot].store(size, core::sync::atomic::Ordering::Release);
    }

    /// The domain whose CD (StreamID, SSID) carries.
    pub fn attached_domain(&self, sid: u32, ssid: u32) -> Option<DomainId> {
        let mut t0 = Token::unlocked();
        let (a, _t) = self.asid.lock(&mut t0);
        a.find((sid, ssid)).map(|s| make_id(s, a.meta[s].gen))
    }

    /// Runs `f` on the allocator (e.g. to read its usage).
    pub fn with_allocator<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        self.alloc.inspect(f)
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// StreamID bits the stream table covers.
    pub fn sid_bits(&self) -> u8 {
        let mut t0 = Token::unlocked();
        let (a, _t) = self.asid.lock(&mut t0);
        a.strtab.sid_bits
    }

    /// Runs `f` on the register interface (e.g. the model, in tests), under
    /// the command-queue lock.
    pub fn with_mmio<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        let mut t0 = Token::unlocked();
        let (h, _t) = self.cmdq.lock(&mut t0);
        f(&h.hw.mmio)
    }

    /// Runs `f` on a domain's page table, under its lock (tests and
    /// diagnostics).
    pub fn with_page_table<R>(
        &self,
        id: DomainId,
        f: impl FnOnce(&IoPageTable<A::Cache>) -> R,
    ) -> Result<R> {
        let (slot, gen) = split_id(id);
        let d = self.domains.get(slot).ok_or(Error::NoSuchDomain)?;
        let mut t0 = Token::unlocked();
        let (d, _t) = d.lock(&mut t0);
        match d.pgtable.as_ref() {
            Some(pt) if d.gen == gen => Ok(f(pt)),
            _ => Err(Error::NoSuchDomain),
        }
    }

    /// A domain's counters, under its lock.
    pub fn domain_info(&self, id: DomainId) -> Result<DomainInfo> {
        let (slot, gen) = split_id(id);
        let d = self.domains.get(slot).ok_or(Error::NoSuchDomain)?;
        let mut t0 = Token::unlocked();
        let (d, _t) = d.lock(&mut t0);
        match d.pgtable.as_ref() {
            Some(pt) if d.gen == gen => Ok(DomainInfo {
                asid: d.asid,
                table_pages: pt.table_pages(),
                table_bytes: pt.table_bytes(),
                devices: d.devices.len(),
            }),
            _ => Err(Error::NoSuchDomain),
        }
    }

    /// The (StreamID, SSID) pairs on a domain's device list (a copy).
    pub fn domain_devices(
        &self,
        id: DomainId,
    ) -> Result<heapless::Vec<Device, MAX_DEVICES_PER_DOMAIN>> {
        let (slot, gen) = split_id(id);
        let d = self.domains.get(slot).ok_or(Error::NoSuchDomain)?;
        let mut t0 = Token::unlocked();
        let (d, _t) = d.lock(&mut t0);
        if d.gen != gen || d.pgtable.is_none() {
            return Err(Error::NoSuchDomain);
        }
        Ok(d.devices.clone())
    }

    /// The live domains (a snapshot, under the ASID lock).
    pub fn domains(&self) -> impl Iterator<Item = DomainId> {
        let mut t0 = Token::unlocked();
        let (a, _t) = self.asid.lock(&mut t0);
        let live: heapless::Vec<DomainId, N> = a
            .meta
            .iter()
            .enumerate()
            .filter(|(_, m)| m.live)
            .map(|(s, m)| make_id(s, m.gen))
            .collect();
        live.into_iter()
    }

    /// Issues `cmds` followed by a CMD_SYNC and waits (diagnostics, tests).
    pub fn issue_commands(&self, cmds: &[Command]) -> Result<()> {
        let mut t0 = Token::unlocked();
        self.submit(&mut t0, cmds)
    }

    /// Puts a stream that has no attachment into bypass (V = 1, Config =
    /// bypass) or back to abort. For bring-up and tests; `Busy` if attached.
    pub fn set_stream_bypass(&self, sid: u32, bypass: bool) -> Result<()> {
        let mut t0 = Token::unlocked();
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        if !a.strtab.in_range(sid) {
            return Err(Error::StreamOutOfRange);
        }
        if a.master_index(sid).is_some() {
            return Err(Error::Busy);
        }
        let target = if bypass { ste::bypass() } else { ste::abort() };
        self.write_ste(&mut a, &mut t1, sid, &target)
    }

    /// The current STE of `sid` (None if its level-2 table does not exist).
    pub fn read_ste(&self, sid: u32) -> Result<Option<Entry>> {
        let mut t0 = Token::unlocked();
        let (mut a, _t) = self.asid.lock(&mut t0);
        let none: Option<&mut A> = None;
        Ok(a.strtab.slot(sid, none)?.map(|s| entry::read_entry(&s)))
    }

    // ----- lock-level helpers ----------------------------------------------

    fn live_slot(a: &AsidState<N>, id: DomainId) -> Result<usize> {
        let (slot, gen) = split_id(id);
        match a.meta.get(slot) {
            Some(m) if m.live && m.gen == gen => Ok(slot),
            _ => Err(Error::NoSuchDomain),
        }
    }

    /// Issues `cmds` + CMD_SYNC under the command-queue lock and waits.
    fn submit<P>(&self, t: &mut Token<'_, P>, cmds: &[Command]) -> Result<()>
    where
        level::Cmdq: After<P>,
    {
        let (mut h, _t) = self.cmdq.lock(t);
        h.hw.submit(cmds, true)
    }

    fn write_ste(
        &self,
        a: &mut AsidState<N>,
        t: &mut Token<'_, level::Asid>,
        sid: u32,
        target: &Entry,
    ) -> Result<()> {
        let slot = self.ste_slot(a, sid)?;
        write_entry::<SteUsed>(&slot, target, &mut || {
            self.clean(&slot);
            self.submit(t, &[Command::CfgiSte { sid, leaf: true }])
        })
        .map(|_| ())
    }

    fn write_cd<P>(
        &self,
        t: &mut Token<'_, P>,
        slot: &DmaBlock,
        sid: u32,
        ssid: u32,
        target: &Entry,
    ) -> Result<()>
    where
        level::Cmdq: After<P>,
    {
        write_entry::<CdUsed>(slot, target, &mut || {
            self.clean(slot);
            self.submit(
                t,
                &[Command::CfgiCd {
                    sid,
                    ssid,
                    leaf: true,
                }],
            )
        })
        .map(|_| ())
    }

    fn cd_ste(&self, m: &Master) -> Entry {
        ste::s1_cdtable(m.cdtab.ste_ref(), m.s1dss, self.features.coherent)
    }

    /// Cleans `b` to memory for an SMMU that does not snoop the CPU's
    /// caches (before the SMMU is told to look at it).
    fn clean(&self, b: &DmaBlock) {
        if let Some(c) = &self.cache {
            c.clean(b.vaddr, b.size);
        }
    }

    /// The STE slot of `sid`, its level-2 table allocated if missing (all
    /// abort; cleaned with its level-1 descriptor for a non-coherent SMMU).
    fn ste_slot(&self, a: &mut AsidState<N>, sid: u32) -> Result<DmaBlock> {
        let tables = a.strtab.l2_tables;
        let slot = a
            .strtab
            .slot(sid, Some(&mut self.alloc.leaf()))?
            .ok_or(Error::StreamOutOfRange)?;
        if a.strtab.l2_tables != tables {
            if let Some(l2) = a.strtab.l2_block(sid) {
                self.clean(&l2);
            }
            self.clean(&a.strtab.block);
        }
        Ok(slot)
    }

    fn s1_cd(&self, ttb0: u64, asid: u16) -> Entry {
        cd::s1_cd(&S1Context {
            ttb0,
            asid,
            ips: self.features.oas_enc.min(5),
            stall: self.features.stall_forced,
            coherent: self.features.coherent,
        })
    }

    // ----- ASID changes (ASID lock held) -----------------------------------

    /// Moves domain `slot` from its ASID to `new` (0: none, only for a
    /// domain with an empty device list). `new` was allocated (and
    /// invalidated if it was dirty) by the caller; if the change is refused
    /// before the domain takes it, it is freed here. Every CD on the device
    /// list is rewritten (hitless: ASID is in CD qword 0 only), then the old
    /// ASID is invalidated (TLBI_NH_ASID + CMD_SYNC) and freed.
    fn change_asid(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        slot: usize,
        new: u16,
    ) -> Result<()> {
        if a.meta[slot].asid == new {
            return Ok(());
        }
        // Refused before the domain takes `new`: it goes back, unused.
        let refuse = |a: &mut AsidState<N>, e: Error| {
            if new != 0 {
                a.asids.free(new, true);
            }
            Err(e)
        };
        if let Err(e) = self.unpin(a, t1, slot) {
            return refuse(a, e);
        }
        let (mut d, mut t2) = self.domains[slot].lock(t1);
        let old = d.asid;
        if (new == 0 && !d.devices.is_empty()) || d.stale_asids.is_full() {
            return refuse(a, Error::Busy);
        }
        let cd = self.s1_cd(a.meta[slot].ttbr, new);
        let mut rewritten = Ok(());
        for &(sid, ssid) in d.devices.iter() {
            let Some(mi) = a.master_index(sid) else {
                continue;
            };
            let no_alloc: Option<&mut A> = None;
            let Ok(Some(cd_slot)) = a.masters[mi].cdtab.slot(ssid, no_alloc) else {
                continue;
            };
            if let Err(e) = self.write_cd(&mut t2, &cd_slot, sid, ssid, &cd) {
                rewritten = Err(e);
                break;
            }
        }
        d.asid = new;
        a.meta[slot].asid = new;
        if let Err(e) = rewritten {
            // A CD may still carry `old`: the domain keeps it (allocated,
            // never reused) and every unmap invalidates it too, so an `Ok`
            // unmap still means no device reaches the page.
            if old != 0 {
                let _ = d.stale_asids.push(old);
            }
            return Err(e);
        }
        // Every CD carries `new`: `old` and any stale ASID name nothing.
        // Each is invalidated and freed; after a failed invalidation the
        // rest are freed dirty (the allocator invalidates them before
        // their next use), none is lost.
        let stale = core::mem::take(&mut d.stale_asids);
        let mut result = Ok(());
        for asid in core::iter::once(old).chain(stale).filter(|&x| x != 0) {
            if result.is_ok() {
                match self.submit(&mut t2, &[Command::TlbiNhAsid { asid }]) {
                    Ok(()) => {
                        a.asids.free(asid, true);
                        continue;
                    }
                    Err(e) => result = Err(e),
                }
            }
            a.asids.free(asid, false);
        }
        result
    }

    /// A free ASID, invalidated if it was freed dirty; when none is free,
    /// recycles the ASID of a domain (not `exclude`) whose device list is
    /// empty (so no CD carries it, invariant 2).
    fn alloc_fresh(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        exclude: usize,
    ) -> Result<u16> {
        loop {
            if let Some(g) = a.asids.alloc() {
                if g.needs_invalidate {
                    if let Err(e) = self.submit(t1, &[Command::TlbiNhAsid { asid: g.asid }]) {
                        a.asids.free(g.asid, false);
                        return Err(e);
                    }
                    a.asids.mark_clean(g.asid);
                }
                return Ok(g.asid);
            }
            let mut victim = None;
            for s in 0..N {
                let pinned = a.ghosts.iter().any(|g| g.slot == s);
                if s == exclude || !a.meta[s].live || a.meta[s].asid == 0 || pinned {
                    continue;
                }
                let (d, _t) = self.domains[s].lock(t1);
                // (A full stale list would refuse the change: another
                // idle domain may still give its ASID up.)
                if d.devices.is_empty() && !d.stale_asids.is_full() {
                    victim = Some(s);
                    break;
                }
            }
            let v = victim.ok_or(Error::NoAsid)?;
            self.change_asid(a, t1, v, 0)?;
        }
    }

    /// Gives domain `slot` its ASID if it has none (or, for a pinned SVA
    /// space, not the pinned one) and returns it.
    fn ensure_asid(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        slot: usize,
    ) -> Result<u16> {
        let m = a.meta[slot];
        let Some(p) = m.pinned else {
            if m.asid != 0 {
                return Ok(m.asid);
            }
            let n = self.alloc_fresh(a, t1, slot)?;
            self.change_asid(a, t1, slot, n)?;
            return Ok(n);
        };
        if m.asid == p {
            return Ok(p);
        }
        // SVA sharing (Linux `arm_smmu_share_asid`): the private domain that
        // holds `p` moves to a fresh ASID, its CDs rewritten and `p`
        // invalidated, before `p` joins the address space.
        let holder = (0..N).find(|&s| s != slot && a.meta[s].live && a.meta[s].asid == p);
        if let Some(o) = holder {
            if a.meta[o].pinned == Some(p) {
                return Err(Error::Busy);
            }
            let n = self.alloc_fresh(a, t1, o)?;
            self.change_asid(a, t1, o, n)?;
        }
        let g = a.asids.claim(p).ok_or(Error::NoAsid)?;
        if g.needs_invalidate {
            if let Err(e) = self.submit(t1, &[Command::TlbiNhAsid { asid: p }]) {
                a.asids.free(p, false);
                return Err(e);
            }
            a.asids.mark_clean(p);
        }
        // On an error before the space took `p`, change_asid gave it back.
        self.change_asid(a, t1, slot, p)?;
        Ok(p)
    }

    // ----- domains ----------------------------------------------------------

    /// Creates a domain: an empty page table. Its ASID is assigned at the
    /// first attach (possibly by recycling an idle domain's).
    /// Errors: `NoSlot`, `NoMemory`.
    pub fn alloc_domain(&self) -> Result<DomainId> {
        self.alloc_slot(false, None)
    }

    /// Creates an SVA address space: a domain that [`Self::bind_sva`] binds
    /// (StreamID, PASID) pairs to, all of whose CDs carry one ASID. With
    /// `pinned`, that ASID is fixed (e.g. the CPU's ASID of the process,
    /// for an SMMU with broadcast TLB maintenance): binding takes it from
    /// any private domain that holds it. Errors: as `alloc_domain`,
    /// `Unsupported` for an ASID beyond the SMMU's.
    pub fn alloc_sva_space(&self, pinned: Option<u16>) -> Result<DomainId> {
        self.alloc_slot(true, pinned)
    }

    fn alloc_slot(&self, sva: bool, pinned: Option<u16>) -> Result<DomainId> {
        let mut t0 = Token::unlocked();
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        if let Some(p) = pinned {
            if p == 0 || p as u32 >= a.asids.limit() {
                return Err(Error::Unsupported);
            }
            if a.meta.iter().any(|m| m.live && m.pinned == Some(p)) {
                return Err(Error::Busy);
            }
        }
        let slot = a.meta.iter().position(|m| !m.live).ok_or(Error::NoSlot)?;
        let pgtable = IoPageTable::with_cache(
            &mut self.alloc.leaf(),
            self.features.oas_bits,
            self.features.bbml,
            self.cache.clone(),
        )?;
        let ttbr = pgtable.ttbr();
        let (mut d, _t) = self.domains[slot].lock(&mut t1);
        d.gen = d.gen.wrapping_add(1);
        d.asid = 0;
        d.pgtable = Some(pgtable);
        d.devices.clear();
        self.publish_size(slot, &d);
        a.meta[slot] = SlotMeta {
            live: true,
            gen: d.gen,
            asid: 0,
            ttbr,
            sva,
            pinned,
        };
        Ok(make_id(slot, d.gen))
    }

    /// Destroys a domain: TLBI_NH_ASID + sync, frees its tables and ASID.
    /// `Busy` if anything is attached.
    pub fn free_domain(&self, id: DomainId) -> Result<()> {
        let mut t0 = Token::unlocked();
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        let slot = Self::live_slot(&a, id)?;
        self.unpin(&mut a, &mut t1, slot)?;
        let (mut d, mut t2) = self.domains[slot].lock(&mut t1);
        if !d.devices.is_empty() {
            return Err(Error::Busy);
        }
        // Its ASID and any stale one: each invalidated, then free.
        while let Some(&asid) = d.stale_asids.last() {
            self.submit(&mut t2, &[Command::TlbiNhAsid { asid }])?;
            a.asids.free(asid, true);
            d.stale_asids.pop();
        }
        let asid = d.asid;
        if asid != 0 {
            self.submit(&mut t2, &[Command::TlbiNhAsid { asid }])?;
            a.asids.free(asid, true);
        }
        if let Some(p) = d.pgtable.take() {
            p.destroy_with(&mut self.alloc.leaf(), &mut d.gather);
        }
        self.publish_size(slot, &d);
        d.asid = 0;
        a.meta[slot].live = false;
        a.meta[slot].asid = 0;
        Ok(())
    }

    /// Moves a domain to a fresh ASID (the old one rewritten out of every CD,
    /// invalidated and freed). `Busy` for a pinned SVA space.
    /// Errors: `NoSuchDomain`, `NoAsid`, `Timeout`, `Hardware`.
    pub fn reassign_asid(&self, id: DomainId) -> Result<u16> {
        let mut t0 = Token::unlocked();
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        let slot = Self::live_slot(&a, id)?;
        if a.meta[slot].pinned.is_some() {
            return Err(Error::Busy);
        }
        let n = self.alloc_fresh(&mut a, &mut t1, slot)?;
        self.change_asid(&mut a, &mut t1, slot, n)?;
        Ok(n)
    }

    // ----- attach/detach ----------------------------------------------------

    /// Attaches (StreamID, SSID) to a domain, moving it from its current one
    /// without an abort in between: all of it, including leaving the old
    /// domain's list, under the ASID lock. The CD is written, then the STE,
    /// each with the hitless used-bits algorithm and CFGI + CMD_SYNC after
    /// every step. With one CD per stream (no substreams) a move writes a
    /// new CD table offline and switches the STE in one qword; with
    /// substreams the CD is rewritten in place. Attaching to the current
    /// domain is a no-op.
    ///
    /// Errors: `NoSuchDomain`, `StreamOutOfRange`, `SsidOutOfRange`,
    /// `NoSlot`, `NoMemory`, `NoAsid` (nothing changed), `Timeout`,
    /// `Hardware` (the stream is listed where the SMMU may use it, so
    /// `detach` can undo it).
    pub fn attach(&self, sid: u32, ssid: u32, id: DomainId) -> Result<()> {
        let mut t0 = Token::unlocked();
        #[cfg(loom)]
        if self.order == AttachOrder::SeedRace {
            // Linux's arm_smmu_detach_dev before the fix: off the old
            // domain's list before the ASID lock, the CD still programmed.
            for d in self.domains.iter() {
                let (mut d, _t) = d.lock(&mut t0);
                d.devices.retain(|&x| x != (sid, ssid));
            }
        }
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        self.attach_locked(&mut a, &mut t1, sid, ssid, id, false)
    }

    /// Binds (StreamID, PASID) to an SVA space: its CD carries the space's
    /// one ASID (see [`Self::alloc_sva_space`]). `NoSuchDomain` if `space`
    /// is not an SVA space; otherwise as `attach`.
    pub fn bind_sva(&self, sid: u32, pasid: u32, space: DomainId) -> Result<()> {
        let mut t0 = Token::unlocked();
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        self.attach_locked(&mut a, &mut t1, sid, pasid, space, true)
    }

    /// Unbinds (StreamID, PASID) from its SVA space: the CD is made invalid
    /// (or the STE aborts, for the stream's last CD) and invalidated before
    /// this returns. `NotAttached` if it is not bound to an SVA space.
    pub fn unbind_sva(&self, sid: u32, pasid: u32) -> Result<()> {
        let mut t0 = Token::unlocked();
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        self.detach_locked(&mut a, &mut t1, sid, pasid, true)
    }

    fn attach_locked(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        sid: u32,
        ssid: u32,
        id: DomainId,
        sva: bool,
    ) -> Result<()> {
        let slot = Self::live_slot(a, id)?;
        if sva != a.meta[slot].sva && sva {
            return Err(Error::NoSuchDomain);
        }
        if !a.strtab.in_range(sid) {
            return Err(Error::StreamOutOfRange);
        }
        if (ssid as u64) >= (1u64 << self.ssid_bits) {
            return Err(Error::SsidOutOfRange);
        }
        let dev = (sid, ssid);
        let current = a.find(dev);
        if current == Some(slot) {
            // Memory says so already; the SMMU may still hold an older
            // configuration of the stream (a write that failed half-way).
            if a.ghosts.iter().any(|g| g.dev.0 == sid) {
                self.confirm_ghosts(a, t1)?;
            }
            return Ok(());
        }
        {
            let (d, _t) = self.domains[slot].lock(t1);
            if d.devices.is_full() {
                return Err(Error::NoSlot);
            }
        }
        let mi = a.master_index(sid);
        if (current.is_none() && a.attached.is_full()) || (mi.is_none() && a.masters.is_full()) {
            return Err(Error::NoSlot);
        }
        self.make_ghost_room(a, t1)?;
        // All memory the new CD needs is allocated before the ASID can
        // move (ensure_asid may recycle an idle domain's), so that an
        // attach refused for memory changes no ASID either.
        let place = self.prepare_cd(a, sid, ssid, mi)?;
        let asid = match self.ensure_asid(a, t1, slot) {
            Ok(asid) => asid,
            Err(e) => {
                place.release(&mut self.alloc.leaf());
                return Err(e);
            }
        };
        let cd = self.s1_cd(a.meta[slot].ttbr, asid);
        // With substreams a CD-level CFGI covers the device; otherwise the
        // STE's CFGI covers the stream.
        let covered = if mi.is_some() && self.ssid_bits != 0 {
            Covered::Device(dev)
        } else {
            Covered::Stream(sid)
        };
        let p = self.program_cd(a, t1, sid, ssid, current, place, &cd);
        let ok = p.result.is_ok();
        self.settle(a, t1, dev, current, slot, ok, p.now, p.old_table, covered);
        p.result
    }

    /// Allocates what pointing (sid, ssid) at a new CD needs: the stream
    /// table's level-2 table (kept if the attach is refused later: level-2
    /// stream tables are never freed), and a CD table or a CD slot.
    fn prepare_cd(
        &self,
        a: &mut AsidState<N>,
        sid: u32,
        ssid: u32,
        mi: Option<usize>,
    ) -> Result<CdPlace> {
        self.ste_slot(a, sid)?;
        let place = self.prepare_cd_table(a, ssid, mi)?;
        // For a non-coherent SMMU, a two-level CD table's level-1
        // descriptors written just now (a new table's, or a new leaf's);
        // the CDs are cleaned when written, and fresh memory comes clean.
        let l1 = match &place {
            CdPlace::NewStream(tab, _) | CdPlace::NewTable(_, tab) => tab.two_level.then_some(tab),
            CdPlace::Slot(mi, _, true) => Some(&a.masters[*mi].cdtab),
            CdPlace::Slot(_, _, false) => None,
        };
        if let Some(tab) = l1 {
            self.clean(&tab.block);
        }
        Ok(place)
    }

    fn prepare_cd_table(
        &self,
        a: &mut AsidState<N>,
        ssid: u32,
        mi: Option<usize>,
    ) -> Result<CdPlace> {
        match mi {
            None => {
                let mut tab = CdTable::new(&mut self.alloc.leaf(), self.ssid_bits)?;
                match tab.slot(ssid, Some(&mut self.alloc.leaf())) {
                    Ok(Some(s)) => Ok(CdPlace::NewStream(tab, s)),
                    Ok(None) => {
                        tab.free(&mut self.alloc.leaf());
                        Err(Error::SsidOutOfRange)
                    }
                    Err(e) => {
                        tab.free(&mut self.alloc.leaf());
                        Err(e)
                    }
                }
            }
            Some(mi) if self.ssid_bits == 0 => {
                let tab = CdTable::new(&mut self.alloc.leaf(), 0)?;
                Ok(CdPlace::NewTable(mi, tab))
            }
            Some(mi) => {
                let tab = &mut a.masters[mi].cdtab;
                let blocks = tab.blocks;
                let slot = tab.slot(ssid, Some(&mut self.alloc.leaf()))?;
                let new_leaf = tab.blocks != blocks;
                slot.ok_or(Error::SsidOutOfRange)
                    .map(|s| CdPlace::Slot(mi, s, new_leaf))
            }
        }
    }

    /// Points (sid, ssid) at `cd` in the memory `place` prepared. Returns
    /// the result and, whatever it is, which CD the configuration in memory
    /// now gives the device: after a CMD_SYNC that timed out or a rejected
    /// command the write stopped half-way, and memory may still show the
    /// old CD, the new one, or none (the used-bits algorithm never leaves a
    /// mix). What the SMMU may still hold cached is [`Self::settle`]'s
    /// concern; the CD tables are left consistent with memory here.
    #[allow(clippy::too_many_arguments)]
    fn program_cd(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        sid: u32,
        ssid: u32,
        current: Option<usize>,
        place: CdPlace,
        cd: &Entry,
    ) -> Programmed {
        let done = |result: Result<()>, now: InMemory| Programmed {
            result,
            now,
            old_table: None,
        };
        match place {
            CdPlace::NewStream(tab, cd_slot) => {
                // Not reachable by the SMMU yet: no invalidation needed.
                write_entry_offline(&cd_slot, cd);
                self.clean(&cd_slot);
                let table = tab.block.paddr;
                let m = Master {
                    sid,
                    cdtab: tab,
                    valid_cds: 1,
                    s1dss: if ssid == 0 {
                        S1Dss::Ssid0
                    } else {
                        S1Dss::Terminate
                    },
                };
                let target = self.cd_ste(&m);
                let _ = a.masters.push(m);
                let r = self.write_ste(a, t1, sid, &target);
                if r.is_ok() || self.ste_points_at(a, sid, table) {
                    return done(r, InMemory::New);
                }
                // Memory never pointed the stream at the table, so the SMMU
                // cannot have fetched it: it goes.
                if let Some(mi) = a.master_index(sid) {
                    a.masters.swap_remove(mi).cdtab.free(&mut self.alloc.leaf());
                }
                done(r, InMemory::None)
            }
            CdPlace::NewTable(mi, tab) => {
                // Hitless move of a single-CD stream: a new CD table written
                // offline, then the STE's S1ContextPtr; CFGI_STE also drops
                // the CDs cached through the StreamID (4.3.1).
                if let Some(s) = crate::dma::sub_block(&tab.block, 0, 64) {
                    write_entry_offline(&s, cd);
                    self.clean(&s);
                }
                let table = tab.block.paddr;
                let old = core::mem::replace(&mut a.masters[mi].cdtab, tab);
                let target = self.cd_ste(&a.masters[mi]);
                let r = self.write_ste(a, t1, sid, &target);
                if r.is_ok() || self.ste_points_at(a, sid, table) {
                    // The SMMU may still use the old table until a sync
                    // covering the stream completes.
                    return Programmed {
                        result: r,
                        now: InMemory::New,
                        old_table: Some(old),
                    };
                }
                // Memory still points at the old table: it stays, and the
                // new one (never reachable) goes.
                let new = core::mem::replace(&mut a.masters[mi].cdtab, old);
                new.free(&mut self.alloc.leaf());
                done(r, InMemory::Old)
            }
            CdPlace::Slot(mi, cd_slot, new_leaf) => {
                let r = if new_leaf {
                    // The new leaf's descriptor replaces an invalid one the
                    // SMMU may have cached: CFGI_CD with Leaf = 0 (4.3.3).
                    self.submit(
                        t1,
                        &[Command::CfgiCd {
                            sid,
                            ssid,
                            leaf: false,
                        }],
                    )
                } else {
                    Ok(())
                };
                let r = r.and_then(|()| self.write_cd(t1, &cd_slot, sid, ssid, cd));
                let now = match r {
                    Ok(()) => InMemory::New,
                    Err(_) => classify_cd(&entry::read_entry(&cd_slot), cd),
                };
                match (now, current.is_some()) {
                    (InMemory::New, false) => a.masters[mi].valid_cds += 1,
                    (InMemory::None, true) => a.masters[mi].valid_cds -= 1,
                    _ => {}
                }
                if r.is_err() {
                    return done(r, now);
                }
                if ssid == 0 && a.masters[mi].s1dss != S1Dss::Ssid0 {
                    a.masters[mi].s1dss = S1Dss::Ssid0;
                    let target = self.cd_ste(&a.masters[mi]);
                    return done(self.write_ste(a, t1, sid, &target), InMemory::New);
                }
                done(Ok(()), InMemory::New)
            }
        }
    }

    /// Whether the STE of `sid` in memory translates through the CD table
    /// at `table`.
    fn ste_points_at(&self, a: &mut AsidState<N>, sid: u32, table: u64) -> bool {
        let none: Option<&mut A> = None;
        let Ok(Some(slot)) = a.strtab.slot(sid, none) else {
            return false;
        };
        let q0 = entry::read_entry(&slot)[0];
        q0 & ste::STE_0_V != 0
            && (q0 & ste::STE_0_CFG) >> 1 == ste::CFG_S1_TRANS
            && q0 & ste::STE_0_S1CTXPTR == table & ste::STE_0_S1CTXPTR
    }

    /// Brings the books in line with what an attach or detach of `dev`
    /// left: `now` is what memory gives the device (`to` is the domain a
    /// new CD names; `from` the one it had). A device is listed exactly
    /// where its CD in memory points. When the operation failed, the SMMU
    /// may still hold `from`'s CD (or CD table) cached: `from` is pinned by
    /// a ghost until a sync covering the device completes, so that its
    /// ASID is neither changed nor freed and its tables stay (invariants 1
    /// and 2 for what the SMMU can still use). When it succeeded, its
    /// CMD_SYNC covered what `covered` says, and the ghosts there go.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        dev: Device,
        from: Option<usize>,
        to: usize,
        ok: bool,
        now: InMemory,
        table: Option<CdTable>,
        covered: Covered,
    ) {
        let listed = match now {
            InMemory::New => Some(to),
            InMemory::Old => from,
            InMemory::None => None,
        };
        if listed != from {
            if let Some(old) = from {
                let (mut d, _t) = self.domains[old].lock(t1);
                d.devices.retain(|&x| x != dev);
            }
            match listed {
                Some(s) => {
                    let (mut d, _t) = self.domains[s].lock(t1);
                    if !d.devices.contains(&dev) {
                        let _ = d.devices.push(dev);
                    }
                    a.set_attached(dev, s);
                }
                None => a.unset_attached(dev),
            }
        }
        if ok {
            if let Some(t) = table {
                t.free(&mut self.alloc.leaf());
            }
            self.clear_ghosts(a, covered);
        } else if let Some(old) = from.filter(|&o| listed != Some(o) || table.is_some()) {
            // `make_ghost_room` left room for this one. (Were it full, the
            // ghost's table would be dropped without being freed: leaked,
            // never handed back while the SMMU may read it.)
            let _ = a.ghosts.push(Ghost {
                dev,
                slot: old,
                table,
            });
        }
        // Otherwise `table` is None: a failed write with no old domain
        // (a first attach) leaves no old table behind.
    }

    /// Frees the ghosts a completed CMD_SYNC covered.
    fn clear_ghosts(&self, a: &mut AsidState<N>, covered: Covered) {
        let mut i = 0;
        while i < a.ghosts.len() {
            let g = &a.ghosts[i];
            let hit = match covered {
                Covered::All => true,
                Covered::Stream(sid) => g.dev.0 == sid,
                Covered::Device(dev) => g.dev == dev,
            };
            if hit {
                let g = a.ghosts.swap_remove(i);
                if let Some(t) = g.table {
                    t.free(&mut self.alloc.leaf());
                }
            } else {
                i += 1;
            }
        }
    }

    /// Makes sure one more ghost fits (an attach or detach leaves at most
    /// one): if the list is full, confirms them all.
    fn make_ghost_room(&self, a: &mut AsidState<N>, t1: &mut Token<'_, level::Asid>) -> Result<()> {
        if a.ghosts.is_full() {
            self.confirm_ghosts(a, t1)?;
        }
        Ok(())
    }

    /// CFGI_STE for every stream with a ghost (it also drops the CDs cached
    /// through the stream, 4.3.1), then CMD_SYNC: once that completes, the
    /// SMMU holds nothing older than memory, and every ghost goes.
    fn confirm_ghosts(&self, a: &mut AsidState<N>, t1: &mut Token<'_, level::Asid>) -> Result<()> {
        if a.ghosts.is_empty() {
            return Ok(());
        }
        let mut sids: heapless::Vec<u32, MAX_GHOSTS> = heapless::Vec::new();
        for g in a.ghosts.iter() {
            if !sids.contains(&g.dev.0) {
                let _ = sids.push(g.dev.0);
            }
        }
        let mut cmds: heapless::Vec<Command, MAX_GHOSTS> = heapless::Vec::new();
        for &sid in sids.iter() {
            let _ = cmds.push(Command::CfgiSte { sid, leaf: true });
        }
        self.submit(t1, &cmds)?;
        self.clear_ghosts(a, Covered::All);
        Ok(())
    }

    /// Confirms the ghosts if any pins domain `slot`.
    fn unpin(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        slot: usize,
    ) -> Result<()> {
        if a.ghosts.iter().any(|g| g.slot == slot) {
            self.confirm_ghosts(a, t1)?;
        }
        Ok(())
    }

    /// Detaches (StreamID, SSID), under the ASID lock. For the stream's last
    /// attachment the STE goes back to abort first (CMD_CFGI_STE also drops
    /// the CDs cached through it, SMMUv3 4.3.1), then the CD table is freed;
    /// otherwise (substreams) the STE's S1DSS changes first when SSID 0
    /// leaves, then the CD is cleared. Errors: `NotAttached`, `Timeout`,
    /// `Hardware` (the books then follow memory, see `settle`).
    pub fn detach(&self, sid: u32, ssid: u32) -> Result<()> {
        let mut t0 = Token::unlocked();
        let (mut a, mut t1) = self.asid.lock(&mut t0);
        self.detach_locked(&mut a, &mut t1, sid, ssid, false)
    }

    fn detach_locked(
        &self,
        a: &mut AsidState<N>,
        t1: &mut Token<'_, level::Asid>,
        sid: u32,
        ssid: u32,
        sva: bool,
    ) -> Result<()> {
        let dev = (sid, ssid);
        let dom = a.find(dev).ok_or(Error::NotAttached)?;
        if sva && !a.meta[dom].sva {
            return Err(Error::NotAttached);
        }
        let mi = a.master_index(sid).ok_or(Error::NotAttached)?;
        self.make_ghost_room(a, t1)?;
        if a.masters[mi].valid_cds <= 1 {
            let table = a.masters[mi].cdtab.block.paddr;
            let r = self.write_ste(a, t1, sid, &ste::abort());
            let (now, table) = if r.is_err() && self.ste_points_at(a, sid, table) {
                // Still translating through its CD table, as before.
                (InMemory::Old, None)
            } else {
                (InMemory::None, Some(a.masters.swap_remove(mi).cdtab))
            };
            let ok = r.is_ok();
            self.settle(
                a,
                t1,
                dev,
                Some(dom),
                dom,
                ok,
                now,
                table,
                Covered::Stream(sid),
            );
            return r;
        }
        if ssid == 0 && a.masters[mi].s1dss == S1Dss::Ssid0 {
            // On failure the CD is still valid and listed: nothing moved.
            a.masters[mi].s1dss = S1Dss::Terminate;
            let target = self.cd_ste(&a.masters[mi]);
            self.write_ste(a, t1, sid, &target)?;
        }
        let no_alloc: Option<&mut A> = None;
        let (r, now) = match a.masters[mi].cdtab.slot(ssid, no_alloc)? {
            Some(s) => {
                let r = self.write_cd(t1, &s, sid, ssid, &[0; entry::ENTRY_QWORDS]);
                let valid = entry::read_entry(&s)[0] & cd::CD_0_V != 0;
                let now = if r.is_err() && valid {
                    InMemory::Old
                } else {
                    InMemory::None
                };
                (r, now)
            }
            None => (Ok(()), InMemory::None),
        };
        if now == InMemory::None {
            a.masters[mi].valid_cds -= 1;
        }
        let ok = r.is_ok();
        self.settle(
            a,
            t1,
            dev,
            Some(dom),
            dom,
            ok,
            now,
            None,
            Covered::Device(dev),
        );
        r
    }

    // ----- map/unmap (domain lock only) ------------------------------------

    fn flush(
        &self,
        t: &mut Token<'_, level::Domain>,
        g: &Gather,
        asid: u16,
        stale: &[u16],
    ) -> Result<()> {
        let (mut h, _t) = self.cmdq.lock(t);
        for &a in stale {
            flush_gather(&mut h.hw, g, a, self.ril, self.tlbi_threshold)?;
        }
        // A domain without an ASID has no CD and no TLB entries.
        if asid == 0 {
            return Ok(());
        }
        flush_gather(&mut h.hw, g, asid, self.ril, self.tlbi_threshold)
    }

    /// Maps `[iova, iova + len)` → `[paddr, paddr + len)` in a domain with
    /// `perms`; 4 KiB / 2 MiB / 1 GiB leaves are chosen automatically.
    /// Issues no invalidation (unless a block must be broken first).
    /// Errors: `NoSuchDomain`, `Misaligned` (not 4 KiB multiples, or len
    /// 0), `OutOfRange` (IOVA ≥ 2^48, PA beyond OAS), `Overlap` (nothing
    /// changed), `NoMemory` (what was mapped is undone), `Unsupported`
    /// (perms without READ or WRITE).
    pub fn map(&self, id: DomainId, iova: u64, paddr: u64, len: u64, perms: Perms) -> Result<()> {
        let (slot, gen) = split_id(id);
        let dl = self.domains.get(slot).ok_or(Error::NoSuchDomain)?;
        let mut t0 = Token::unlocked();
        let (mut d, mut t2) = dl.lock(&mut t0);
        let asid = d.asid;
        if d.gen != gen {
            return Err(Error::NoSuchDomain);
        }
        let DomainState {
            pgtable,
            stale_asids,
            gather,
            ..
        } = &mut *d;
        let pt = pgtable.as_mut().ok_or(Error::NoSuchDomain)?;
        let mut flush = |g: &Gather| self.flush(&mut t2, g, asid, stale_asids);
        let r = pt.map_in(
            &mut self.alloc.leaf(),
            iova,
            paddr,
            len,
            perms,
            gather,
            &mut flush,
        );
        self.publish_size(slot, &d);
        r
    }

    /// Unmaps everything in `[iova, iova + len)` of a domain, splitting
    /// blocks that straddle the ends and freeing tables that become empty.
    /// The removed translations are invalidated (with the domain's ASID,
    /// stable under the domain lock, and any stale ASID its CDs may still
    /// carry) before this returns: range TLBI_NH_VA (RIL), else per-leaf
    /// TLBI_NH_VA up to [`Config::tlbi_threshold`], else TLBI_NH_ASID; then
    /// CMD_SYNC. Returns the bytes unmapped. Errors: `NoSuchDomain`,
    /// `Misaligned`, `OutOfRange`, `NotMapped` (nothing in range),
    /// `NoMemory` (a block split needs a table; nothing changed), `Timeout`.
    pub fn unmap(&self, id: DomainId, iova: u64, len: u64) -> Result<u64> {
        let (slot, gen) = split_id(id);
        let dl = self.domains.get(slot).ok_or(Error::NoSuchDomain)?;
        let mut t0 = Token::unlocked();
        let (mut d, mut t2) = dl.lock(&mut t0);
        let asid = d.asid;
        if d.gen != gen {
            return Err(Error::NoSuchDomain);
        }
        let DomainState {
            pgtable,
            gather,
            stale_asids,
            ..
        } = &mut *d;
        let pt = pgtable.as_mut().ok_or(Error::NoSuchDomain)?;
        let mut flush = |g: &Gather| self.flush(&mut t2, g, asid, stale_asids);
        gather.reset();
        let mut alloc = self.alloc.leaf();
        let r = pt.unmap(&mut alloc, iova, len, gather, &mut flush);
        let f = pt.finish(&mut alloc, gather, &mut flush);
        self.publish_size(slot, &d);
        let n = r?;
        f?;
        Ok(n)
    }

    /// Translates `iova` in a domain's page table.
    pub fn iova_to_phys(&self, id: DomainId, iova: u64) -> Option<(u64, Perms)> {
        let (slot, gen) = split_id(id);
        let mut t0 = Token::unlocked();
        let (d, _t) = self.domains.get(slot)?.lock(&mut t0);
        if d.gen != gen {
            return None;
        }
        d.pgtable.as_ref()?.iova_to_phys(iova)
    }

    // ----- events -----------------------------------------------------------

    /// Consumes every record in the event queue, decoded, in order, calling
    /// `f` for each; acknowledges an overflow (EVENTQ_CONS.OVACKFLG =
    /// EVENTQ_PROD.OVFLG). Bounded by one queue's worth per call. Under the
    /// command-queue lock only
    /// (an event thread does not wait for attach or map).
    pub fn drain_events(&self, mut f: impl FnMut(Event)) -> DrainReport {
        let mut t0 = Token::unlocked();
        let (mut h, _t) = self.cmdq.lock(&mut t0);
        let HwState { hw, evtq } = &mut *h;
        let geom = evtq.geom;
        let mut report = DrainReport::default();
        let prod_raw = hw.mmio.read32(regs::EVENTQ_PROD);
        crate::barrier::rmb();
        let prod = prod_raw & geom.ptr_mask();
        let mut cons = evtq.cons & geom.ptr_mask();
        let mut n = 0;
        // A stalled transaction waits for its CMD_RESUME (4.6.2): each ends
        // with an abort to the device, as an unstalled fault would.
        let mut resumes = CmdBatch::new();
        while !geom.empty(prod, cons) && n < geom.entries() {
            if let Some(c) = &hw.cache {
                // The SMMU wrote the record to memory, past the CPU's caches.
                let at = evtq.block.vaddr.wrapping_add(geom.idx(cons) as usize * 32);
                c.invalidate(at, 32);
            }
            let e = Event::decode(evtq.record(geom.idx(cons)));
            if let Some(stag) = e.fault().filter(|f| f.stall).map(|f| f.stag) {
                if resumes.is_full() {
                    let _ = hw.submit(&resumes, false);
                    resumes.clear();
                }
                let _ = resumes.push(Command::Resume { sid: e.sid, stag });
            }
            f(e);
            cons = geom.inc(cons);
            n += 1;
        }
        report.events = n;
        let ovf = prod_raw & qptr::OVF;
        if ovf != evtq.cons & qptr::OVF {
            report.overflowed = true;
            hw.stats.event_overflows += 1;
        }
        hw.stats.events += n as u64;
        evtq.cons = cons | ovf;
        crate::barrier::mb();
        hw.mmio.write32(regs::EVENTQ_CONS, evtq.cons);
        if !resumes.is_empty() {
            // CMD_RESUME needs no CMD_SYNC: its consumption resumes the
            // transaction (Linux `arm_smmu_page_response`).
            let _ = hw.submit(&resumes, false);
        }
        report
    }

    /// Handles active global errors (GERROR ^ GERRORN): a command error is
    /// skipped (the entry at CONS becomes a CMD_SYNC) so the queue keeps
    /// running; the others are counted; then all are acknowledged. Under
    /// the command-queue lock only.
    /// A waiter that holds that lock handles a command error itself, so
    /// this finds only what nobody is waiting on.
    pub fn handle_gerror(&self) -> GerrorReport {
        let mut t0 = Token::unlocked();
        let (mut h, _t) = self.cmdq.lock(&mut t0);
        h.hw.handle_gerror()
    }

    /// The command and event counters (a copy, taken under the
    /// command-queue lock).
    pub fn stats(&self) -> Stats {
        let mut t0 = Token::unlocked();
        let (h, _t) = self.cmdq.lock(&mut t0);
        h.hw.stats.clone()
    }

    // ----- checking ---------------------------------------------------------

    /// For tests and diagnostics: with the ASID lock held (so no ASID or CD
    /// changes), calls `per_domain` for each live domain under its lock,
    /// then `then` with the register interface under the command-queue lock.
    pub fn audit<R>(
        &self,
        mut per_domain: impl FnMut(&AuditDomain<'_, A::Cache>),
        then: impl FnOnce(&M) -> R,
    ) -> R {
        let mut t0 = Token::unlocked();
        let (a, mut t1) = self.asid.lock(&mut t0);
        for (s, m) in a.meta.iter().enumerate() {
            if !m.live {
                continue;
            }
            let (d, _t) = self.domains[s].lock(&mut t1);
            if let Some(pt) = d.pgtable.as_ref() {
                per_domain(&AuditDomain {
                    id: make_id(s, m.gen),
                    asid: d.asid,
                    ttbr: m.ttbr,
                    sva: m.sva,
                    devices: &d.devices,
                    pgtable: pt,
                });
            }
        }
        let (h, _t) = self.cmdq.lock(&mut t1);
        then(&h.hw.mmio)
    }
}
