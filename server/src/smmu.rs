//! The SMMUv3 driver's top level: probe, enable, domains, attach/detach,
//! map/unmap with gathered invalidation, events and global errors.

use embedded_hal::delay::DelayNs;

use crate::asid::AsidAllocator;
use crate::cd::{self, CdTable, CdUsed, S1Context};
use crate::cmd::{Command, TlbiRange};
use crate::domain::{Device, Domain, DomainId, DomainInfo, DomainTable};
use crate::entry::{self, write_entry, write_entry_offline, Entry, UpdateKind};
use crate::error::{Error, HardwareError, Result};
use crate::evtq::{DrainReport, Event, Evtq};
use crate::features::Features;
use crate::hal::{DmaAllocator, DmaBlock, Mmio};
use crate::hw::{CmdBatch, Cmdq, GerrorReport, Hw};
use crate::pgtable::{Gather, IoPageTable, Perms, GATHER_LEAVES};
use crate::queue::QueueGeom;
use crate::regs::{self, cr0, cr1, cr2, gbpa, irq_ctrl, qbase, qptr};
use crate::stats::Stats;
use crate::ste::{self, S1Dss, SteUsed};
use crate::strtab::StreamTable;

/// Streams that can have a CD table (i.e. be attached) at once.
pub const MAX_MASTERS: usize = 64;

/// Driver configuration; [`Config::default`] suits QEMU `virt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// log2 of command-queue entries (capped by IDR1.CMDQS). Default 8.
    pub cmdq_log2: u8,
    /// log2 of event-queue entries (capped by IDR1.EVENTQS). Default 7.
    pub evtq_log2: u8,
    /// Cap on StreamID bits (the stream table covers min(this, SIDSIZE)). Default 16.
    pub max_sid_bits: u8,
    /// SubstreamID bits to support (min with IDR1.SSIDSIZE). Default 0: one CD
    /// per stream, STE.S1CDMax = 0 (required by QEMU 7.2).
    pub ssid_bits: u8,
    /// Use a linear stream table even if two-level is supported.
    pub linear_strtab: bool,
    /// Bound of every register poll, in microseconds. Default 100 000.
    pub poll_timeout_us: u32,
    /// Without range invalidation, unmaps removing more leaves than this use
    /// one TLBI_NH_ASID instead of per-leaf TLBI_NH_VA. Default 16 (≤ 32).
    pub tlbi_threshold: u32,
    /// Use range TLBI when IDR3.RIL says so. Default true.
    pub use_ril: bool,
    /// Cap on ASIDs (0: what IDR0.ASID16 allows).
    pub max_asids: u32,
    /// Enable the GERROR and event-queue wired interrupts. Default true.
    pub irqs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cmdq_log2: 8,
            evtq_log2: 7,
            max_sid_bits: 16,
            ssid_bits: 0,
            linear_strtab: false,
            poll_timeout_us: 100_000,
            tlbi_threshold: 16,
            use_ril: true,
            max_asids: 0,
            irqs: true,
        }
    }
}

/// Per-stream state: the stream's CD table.
#[derive(Debug)]
struct Master {
    sid: u32,
    cdtab: CdTable,
    /// Valid CDs in `cdtab`.
    valid_cds: u32,
    /// The STE's current S1DSS (meaningful with substreams).
    s1dss: S1Dss,
}

/// An SMMUv3, probed and enabled, with its domains.
///
/// Single-threaded; every method returns only after the hardware finished
/// what it implies (CMD_SYNC completed). Nothing a client can influence
/// panics.
///
/// # State, and the locks it will get
/// The fields are split the way the lock hierarchy of DESIGN.md 5 (ASID
/// lock → domain device-list lock → command-queue lock) will cut them:
/// `asids` ([`AsidAllocator`]) and the CD/STE programming of `masters`
/// belong under the ASID lock; each domain's `devices` list under its
/// device-list lock; `hw` (the command queue, [`Hw`]) under the innermost
/// command-queue lock. Page-table edits touch only their domain and `alloc`.
/// Today every method takes `&mut self`, which is the coarsest such lock.
pub struct Smmu<M: Mmio, A: DmaAllocator, D: DelayNs> {
    hw: Hw<M, D>,
    alloc: A,
    features: Features,
    config: Config,
    strtab: StreamTable,
    evtq: Evtq,
    asids: AsidAllocator,
    domains: DomainTable,
    masters: heapless::Vec<Master, MAX_MASTERS>,
    ssid_bits: u8,
    /// The invalidation gather of [`Smmu::unmap`], kept here and reset per
    /// call (see `Gather::reset`).
    gather: Gather,
}

/// An enabled SMMU without domains, in pieces ([`Smmu::into_parts`]).
pub(crate) struct Parts<M, A, D> {
    pub hw: Hw<M, D>,
    pub alloc: A,
    pub features: Features,
    pub config: Config,
    pub strtab: StreamTable,
    pub evtq: Evtq,
    pub asids: AsidAllocator,
    pub ssid_bits: u8,
}

impl<M: Mmio, A: DmaAllocator, D: DelayNs> core::fmt::Debug for Smmu<M, A, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Smmu")
            .field("features", &self.features)
            .field("domains", &self.domains.len())
            .field("masters", &self.masters.len())
            .finish()
    }
}

fn ensure(cond: bool, what: &'static str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Hardware(HardwareError::MissingFeature(what)))
    }
}

/// Turns a gather into TLBI commands (4.4): range TLBI_NH_VA when RIL
/// (TG = 4 KiB, TTL = the leaves' level when they all share one), per-leaf
/// TLBI_NH_VA up to the threshold, else TLBI_NH_ASID.
fn tlbi_commands(g: &Gather, asid: u16, ril: bool, threshold: u32, out: &mut CmdBatch) {
    let leaf = !g.tables_removed;
    let asid_all = Command::TlbiNhAsid { asid };
    if g.start >= g.end {
        if g.tables_removed || !g.leaves.is_empty() {
            let _ = out.push(asid_all);
        }
        return;
    }
    let pages = (g.end - g.start) >> 12;
    if ril && pages < (1 << 31) {
        let ttl = g.leaf_level().unwrap_or(0);
        if pages == 1 && ttl == 0 {
            // NUM = SCALE = 0 with TTL = 0 is avoided (as Linux does).
            let _ = out.push(Command::TlbiNhVa {
                asid,
                addr: g.start,
                leaf,
                range: TlbiRange::default(),
            });
            return;
        }
        // Linux `__arm_smmu_tlb_inv_range`: each command takes 5 bits of the
        // remaining page count starting at its lowest set bit. With TG != 0,
        // NUM = SCALE = TTL = 0 is Reserved (4.4.1.1): without a TTL, a
        // count whose low five bits are 1 would need it, so invalidate one
        // page more (as Linux does).
        let mut rem = pages;
        if ttl == 0 && rem & 0x1f == 1 {
            rem += 1;
        }
        let mut addr = g.start;
        while rem != 0 {
            let scale = rem.trailing_zeros();
            let num = (rem >> scale) & 0x1f;
            let range = TlbiRange {
                num: (num - 1) as u8,
                scale: scale as u8,
                tg: 1,
                ttl,
            };
            if out
                .push(Command::TlbiNhVa {
                    asid,
                    addr,
                    leaf,
                    range,
                })
                .is_err()
            {
                out.clear();
                let _ = out.push(asid_all);
                return;
            }
            addr += num << (scale + 12);
            rem -= num << scale;
        }
        return;
    }
    if !g.overflow && (g.leaves.len() as u32) <= threshold.min(GATHER_LEAVES as u32) {
        for &(va, _) in g.leaves.iter() {
            let _ = out.push(Command::TlbiNhVa {
                asid,
                addr: va,
                leaf,
                range: TlbiRange::default(),
            });
        }
    } else {
        let _ = out.push(asid_all);
    }
}

/// Issues the invalidation of a gather and waits. If the SMMU rejects a
/// command (e.g. a range TLBI it does not implement after all), falls back
/// to TLBI_NH_ASID, which every SMMU accepts.
pub(crate) fn flush_gather<M: Mmio, D: DelayNs>(
    hw: &mut Hw<M, D>,
    g: &Gather,
    asid: u16,
    ril: bool,
    threshold: u32,
) -> Result<()> {
    let mut cmds = CmdBatch::new();
    tlbi_commands(g, asid, ril, threshold, &mut cmds);
    match hw.submit(&cmds, true) {
        Err(Error::Hardware(HardwareError::CommandError { .. })) => {
            hw.submit(&[Command::TlbiNhAsid { asid }], true)
        }
        r => r,
    }
}

impl<M: Mmio, A: DmaAllocator, D: DelayNs> Smmu<M, A, D> {
    /// Probes the ID registers and runs the enable sequence (Linux
    /// `arm_smmu_device_reset`): GBPA.ABORT while reprogramming; CR0 = 0 and
    /// wait for CR0ACK; CR1/CR2; stream table base/config; command queue
    /// and CMDQEN; CFGI_ALL + sync, TLBI_NSNH_ALL (and TLBI_EL2_ALL with
    /// HYP) + sync; event queue and EVENTQEN; IRQ_CTRL; SMMUEN.
    ///
    /// Every poll is bounded ([`Error::Timeout`]). Requires stage 1,
    /// AArch64 tables, 4 KiB granules, little-endian walks.
    pub fn new(mmio: M, mut alloc: A, delay: D, config: Config) -> Result<Self> {
        let features = Features::probe(&mmio);
        ensure(features.stage1, "stage 1")?;
        ensure(features.ttf_aarch64, "AArch64 tables")?;
        ensure(features.gran4k, "4 KiB granule")?;
        ensure(features.little_endian, "little-endian walks")?;
        ensure(
            !features.tables_preset && !features.queues_preset,
            "programmable tables",
        )?;
        let cmdq_log2 = config.cmdq_log2.min(features.cmdq_max_log2);
        let evtq_log2 = config.evtq_log2.min(features.evtq_max_log2);
        if cmdq_log2 < 1 || config.cmdq_log2 > 19 || config.evtq_log2 > 19 {
            return Err(Error::Unsupported);
        }
        let sid_bits = config.max_sid_bits.min(features.sid_bits);
        let ssid_bits = config.ssid_bits.min(features.ssid_bits);
        if ssid_bits > 6 && !features.cd_2lvl {
            return Err(Error::Unsupported);
        }
        let cmdq_size = 16usize << cmdq_log2;
        let cmdq_block = alloc.alloc(cmdq_size, cmdq_size.max(32))?;
        let evtq_size = 32usize << evtq_log2;
        let evtq_block = match alloc.alloc(evtq_size, evtq_size.max(32)) {
            Ok(b) => b,
            Err(e) => {
                alloc.free(cmdq_block);
                return Err(e.into());
            }
        };
        let strtab = match StreamTable::new(
            &mut alloc,
            sid_bits,
            features.strtab_2lvl && !config.linear_strtab,
        ) {
            Ok(s) => s,
            Err(e) => {
                alloc.free(evtq_block);
                alloc.free(cmdq_block);
                return Err(e);
            }
        };
        let asid_limit = if config.max_asids == 0 {
            1u32 << features.asid_bits()
        } else {
            config.max_asids.min(1 << features.asid_bits())
        };
        let mut smmu = Smmu {
            hw: Hw {
                mmio,
                delay,
                poll_timeout_us: config.poll_timeout_us,
                cmdq: Cmdq {
                    block: cmdq_block,
                    geom: QueueGeom { log2: cmdq_log2 },
                    prod: 0,
                    cons: 0,
                    pending_error: None,
                },
                stats: Stats::default(),
            },
            alloc,
            features,
            config,
            strtab,
            evtq: Evtq {
                block: evtq_block,
                geom: QueueGeom { log2: evtq_log2 },
                cons: 0,
            },
            asids: AsidAllocator::new(asid_limit),
            domains: DomainTable::default(),
            masters: heapless::Vec::new(),
            ssid_bits,
            gather: Gather::default(),
        };
        smmu.reset()?;
        Ok(smmu)
    }

    /// Takes a freshly enabled SMMU apart for the concurrent core
    /// ([`crate::shared::SharedSmmu::new`]), which puts the pieces behind
    /// separate locks. `Err(self)` if it already has domains or streams.
    // The Err variant is the whole (inline, ~33 KiB) Smmu, handed back.
    #[allow(clippy::result_large_err)]
    pub(crate) fn into_parts(self) -> core::result::Result<Parts<M, A, D>, Self> {
        if !self.domains.is_empty() || !self.masters.is_empty() {
            return Err(self);
        }
        Ok(Parts {
            hw: self.hw,
            alloc: self.alloc,
            features: self.features,
            config: self.config,
            strtab: self.strtab,
            evtq: self.evtq,
            asids: self.asids,
            ssid_bits: self.ssid_bits,
        })
    }

    /// The inverse of [`Self::into_parts`]: an SMMU with no domains and no
    /// streams attached.
    pub(crate) fn from_parts(p: Parts<M, A, D>) -> Self {
        Smmu {
            hw: p.hw,
            alloc: p.alloc,
            features: p.features,
            config: p.config,
            strtab: p.strtab,
            evtq: p.evtq,
            asids: p.asids,
            domains: DomainTable::default(),
            masters: heapless::Vec::new(),
            ssid_bits: p.ssid_bits,
            gather: Gather::default(),
        }
    }

    fn reset(&mut self) -> Result<()> {
        let hw = &mut self.hw;
        // Abort incoming traffic while the SMMU is disabled and reprogrammed.
        hw.update_gbpa(gbpa::ABORT, 0)?;
        hw.write_cr0(0)?;
        let c1 = (cr1::SH_ISH << cr1::TABLE_SH_SHIFT)
            | (cr1::CACHE_WB << cr1::TABLE_OC_SHIFT)
            | (cr1::CACHE_WB << cr1::TABLE_IC_SHIFT)
            | (cr1::SH_ISH << cr1::QUEUE_SH_SHIFT)
            | (cr1::CACHE_WB << cr1::QUEUE_OC_SHIFT)
            | (cr1::CACHE_WB << cr1::QUEUE_IC_SHIFT);
        hw.mmio.write32(regs::CR1, c1);
        hw.mmio.write32(regs::CR2, cr2::RECINVSID | cr2::PTM);
        hw.mmio.write64(regs::STRTAB_BASE, self.strtab.base_reg());
        hw.mmio
            .write32(regs::STRTAB_BASE_CFG, self.strtab.cfg_reg());
        let cq = &hw.cmdq;
        hw.mmio.write64(
            regs::CMDQ_BASE,
            qbase::ALLOC_HINT | (cq.block.paddr & qbase::ADDR_MASK) | cq.geom.log2 as u64,
        );
        hw.cmdq.prod = 0;
        hw.cmdq.cons = 0;
        hw.mmio.write32(regs::CMDQ_PROD, 0);
        hw.mmio.write32(regs::CMDQ_CONS, 0);
        let mut en = cr0::CMDQEN;
        hw.write_cr0(en)?;
        hw.submit(&[Command::CfgiAll], true)?;
        if self.features.hyp {
            hw.submit(&[Command::TlbiEl2All, Command::TlbiNsnhAll], true)?;
        } else {
            hw.submit(&[Command::TlbiNsnhAll], true)?;
        }
        let eq = &self.evtq;
        hw.mmio.write64(
            regs::EVENTQ_BASE,
            qbase::ALLOC_HINT | (eq.block.paddr & qbase::ADDR_MASK) | eq.geom.log2 as u64,
        );
        hw.mmio.write32(regs::EVENTQ_PROD, 0);
        hw.mmio.write32(regs::EVENTQ_CONS, 0);
        self.evtq.cons = 0;
        en |= cr0::EVENTQEN;
        hw.write_cr0(en)?;
        hw.write_irq_ctrl(0)?;
        if self.config.irqs {
            if self.features.msi {
                // Wired interrupts: MSI address 0 disables the MSI.
                hw.mmio.write64(regs::GERROR_IRQ_CFG0, 0);
                hw.mmio.write64(regs::EVENTQ_IRQ_CFG0, 0);
            }
            hw.write_irq_ctrl(irq_ctrl::GERROR_IRQEN | irq_ctrl::EVENTQ_IRQEN)?;
        }
        en |= cr0::SMMUEN;
        hw.write_cr0(en)
    }

    /// The probed features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// StreamID bits the stream table covers.
    pub fn sid_bits(&self) -> u8 {
        self.strtab.sid_bits
    }

    /// SubstreamID bits in use (0: SSID 0 only).
    pub fn ssid_bits(&self) -> u8 {
        self.ssid_bits
    }

    /// Command and event counters.
    pub fn stats(&self) -> &Stats {
        &self.hw.stats
    }

    /// ASIDs in use.
    pub fn asids_in_use(&self) -> u32 {
        self.asids.in_use()
    }

    /// The allocator (e.g. to read its usage in tests).
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// The register interface (e.g. the model, in tests).
    pub fn mmio(&self) -> &M {
        &self.hw.mmio
    }

    /// Issues `cmds` followed by a CMD_SYNC and waits (diagnostics, tests).
    pub fn issue_commands(&mut self, cmds: &[Command]) -> Result<()> {
        self.hw.submit(cmds, true)
    }

    /// Disables the SMMU (GBPA.ABORT, then CR0 = 0: all traffic aborts),
    /// frees every table, queue and domain, and hands the hardware
    /// interfaces back. Frees memory even if the SMMU does not acknowledge
    /// (it is disabled either way or broken); the poll result is returned
    /// alongside.
    pub fn shutdown(mut self) -> (M, A, D, Result<()>) {
        let r = self.hw.disable();
        let ids: heapless::Vec<DomainId, { crate::domain::MAX_DOMAINS }> =
            self.domains.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Ok(d) = self.domains.remove(id) {
                d.pgtable.destroy(&mut self.alloc);
            }
        }
        while let Some(m) = self.masters.pop() {
            m.cdtab.free(&mut self.alloc);
        }
        self.strtab.free(&mut self.alloc);
        self.alloc.free(self.evtq.block);
        self.alloc.free(self.hw.cmdq.block);
        (self.hw.mmio, self.alloc, self.hw.delay, r)
    }

    // ----- domains -------------------------------------------------------

    /// Creates a domain: an empty page table and a fresh ASID (invalidated
    /// first if it was used before and not yet invalidated).
    /// Errors: `NoSlot`, `NoAsid`, `NoMemory`, `Timeout`.
    pub fn alloc_domain(&mut self) -> Result<DomainId> {
        let slot = self.domains.free_slot().ok_or(Error::NoSlot)?;
        let grant = self.asids.alloc().ok_or(Error::NoAsid)?;
        if grant.needs_invalidate {
            if let Err(e) = self
                .hw
                .submit(&[Command::TlbiNhAsid { asid: grant.asid }], true)
            {
                self.asids.free(grant.asid, false);
                return Err(e);
            }
            self.asids.mark_clean(grant.asid);
        }
        let pgtable =
            match IoPageTable::new(&mut self.alloc, self.features.oas_bits, self.features.bbml) {
                Ok(p) => p,
                Err(e) => {
                    self.asids.free(grant.asid, true);
                    return Err(e);
                }
            };
        Ok(self.domains.insert(
            slot,
            Domain {
                asid: grant.asid,
                pgtable,
                devices: heapless::Vec::new(),
            },
        ))
    }

    /// Destroys a domain: TLBI_NH_ASID + sync, then frees its tables and
    /// ASID. `Busy` if streams are still attached; on `Timeout` the domain
    /// stays.
    pub fn free_domain(&mut self, id: DomainId) -> Result<()> {
        let d = self.domains.get(id)?;
        if !d.devices.is_empty() {
            return Err(Error::Busy);
        }
        let asid = d.asid;
        self.hw.submit(&[Command::TlbiNhAsid { asid }], true)?;
        let d = self.domains.remove(id)?;
        d.pgtable.destroy(&mut self.alloc);
        self.asids.free(asid, true);
        Ok(())
    }

    /// Counters of a domain (quota enforcement).
    pub fn domain_info(&self, id: DomainId) -> Result<DomainInfo> {
        let d = self.domains.get(id)?;
        Ok(DomainInfo {
            asid: d.asid,
            table_pages: d.pgtable.table_pages(),
            table_bytes: d.pgtable.table_bytes(),
            devices: d.devices.len(),
        })
    }

    /// The (StreamID, SSID) pairs attached to a domain.
    pub fn domain_devices(&self, id: DomainId) -> Result<&[Device]> {
        Ok(&self.domains.get(id)?.devices)
    }

    /// Live domains.
    pub fn domains(&self) -> impl Iterator<Item = DomainId> + '_ {
        self.domains.iter().map(|(id, _)| id)
    }

    /// The domain a (StreamID, SSID) is attached to.
    pub fn attached_domain(&self, sid: u32, ssid: u32) -> Option<DomainId> {
        self.domains.find_device((sid, ssid))
    }

    /// The page table of a domain (read-only; tests and diagnostics).
    pub fn page_table(&self, id: DomainId) -> Result<&IoPageTable> {
        Ok(&self.domains.get(id)?.pgtable)
    }

    // ----- STE/CD writes ---------------------------------------------------

    fn write_ste(&mut self, sid: u32, target: &Entry) -> Result<UpdateKind> {
        let slot = self
            .strtab
            .slot(sid, Some(&mut self.alloc))?
            .ok_or(Error::StreamOutOfRange)?;
        let hw = &mut self.hw;
        write_entry::<SteUsed>(&slot, target, &mut || {
            hw.submit(&[Command::CfgiSte { sid, leaf: true }], true)
        })
    }

    fn write_cd_live(
        hw: &mut Hw<M, D>,
        sid: u32,
        ssid: u32,
        slot: &DmaBlock,
        target: &Entry,
    ) -> Result<UpdateKind> {
        write_entry::<CdUsed>(slot, target, &mut || {
            hw.submit(
                &[Command::CfgiCd {
                    sid,
                    ssid,
                    leaf: true,
                }],
                true,
            )
        })
    }

    fn master_index(&self, sid: u32) -> Option<usize> {
        self.masters.iter().position(|m| m.sid == sid)
    }

    /// The STE for a master's current CD table.
    fn cd_ste(m: &Master) -> Entry {
        ste::s1_cdtable(m.cdtab.ste_ref(), m.s1dss)
    }

    // ----- attach/detach -------------------------------------------------

    /// Attaches (StreamID `sid`, SubstreamID `ssid`) to `domain`: writes the
    /// CD, then the STE, each with the hitless used-bits algorithm and
    /// CFGI + CMD_SYNC after every step. If the stream is attached to
    /// another domain it moves without an abort in between: with one CD per
    /// stream (no substreams), a new CD table is written offline and the STE
    /// switched in one qword; with substreams the CD is rewritten in place
    /// (breaking: V = 0 first, as the architecture requires for a change of
    /// ASID and TTB0). Attaching to the current domain is a no-op.
    ///
    /// Errors: `NoSuchDomain`, `StreamOutOfRange`, `SsidOutOfRange`,
    /// `NoSlot`, `NoMemory` (nothing changed), `Timeout`, `Hardware`.
    pub fn attach(&mut self, sid: u32, ssid: u32, domain: DomainId) -> Result<()> {
        let d = self.domains.get(domain)?;
        if !self.strtab.in_range(sid) {
            return Err(Error::StreamOutOfRange);
        }
        if (ssid as u64) >= (1u64 << self.ssid_bits) {
            return Err(Error::SsidOutOfRange);
        }
        let current = self.domains.find_device((sid, ssid));
        if current == Some(domain) {
            return Ok(());
        }
        if d.devices.is_full() {
            return Err(Error::NoSlot);
        }
        let cd = cd::s1_cd(&S1Context {
            ttb0: d.pgtable.ttbr(),
            asid: d.asid,
            ips: self.features.oas_enc.min(5),
        });
        // Make sure the STE slot exists (allocates a level-2 table).
        self.strtab.slot(sid, Some(&mut self.alloc))?;
        match self.master_index(sid) {
            None => {
                if self.masters.is_full() {
                    return Err(Error::NoSlot);
                }
                let mut tab = CdTable::new(&mut self.alloc, self.ssid_bits)?;
                let slot = match tab.slot(ssid, Some(&mut self.alloc)) {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        tab.free(&mut self.alloc);
                        return Err(Error::SsidOutOfRange);
                    }
                    Err(e) => {
                        tab.free(&mut self.alloc);
                        return Err(e);
                    }
                };
                // Not reachable by the SMMU yet: no invalidation needed.
                write_entry_offline(&slot, &cd);
                let s1dss = if ssid == 0 {
                    S1Dss::Ssid0
                } else {
                    S1Dss::Terminate
                };
                let m = Master {
                    sid,
                    cdtab: tab,
                    valid_cds: 1,
                    s1dss,
                };
                let target = Self::cd_ste(&m);
                // Registered (and listed) before the STE write, so that a
                // failed write can be undone by `detach`.
                let _ = self.masters.push(m);
                self.list_device(current, domain, sid, ssid);
                self.write_ste(sid, &target)?;
                return Ok(());
            }
            Some(mi) if self.ssid_bits == 0 => {
                // Hitless move of a single-CD stream: new CD table, then the
                // STE's S1ContextPtr (one critical qword).
                let tab = CdTable::new(&mut self.alloc, 0)?;
                if let Some(slot) = crate::dma::sub_block(&tab.block, 0, 64) {
                    write_entry_offline(&slot, &cd);
                }
                let old = core::mem::replace(&mut self.masters[mi].cdtab, tab);
                let target = Self::cd_ste(&self.masters[mi]);
                // From here the master's table carries the new domain's CD.
                self.list_device(current, domain, sid, ssid);
                // CMD_CFGI_STE also invalidates the CDs cached through the
                // StreamID (4.3.1; Linux relies on it too), so once the STE
                // write is synced the old table is unreachable.
                match self.write_ste(sid, &target).map(|_| ()) {
                    Ok(()) => old.free(&mut self.alloc),
                    // Unknown which table the SMMU uses: leak the old one
                    // rather than free memory it may still read.
                    Err(e) => {
                        let _leaked = old;
                        return Err(e);
                    }
                }
                return Ok(());
            }
            Some(mi) => {
                let slot = self.masters[mi]
                    .cdtab
                    .slot(ssid, Some(&mut self.alloc))?
                    .ok_or(Error::SsidOutOfRange)?;
                Self::write_cd_live(&mut self.hw, sid, ssid, &slot, &cd)?;
                if current.is_none() {
                    self.masters[mi].valid_cds += 1;
                }
                if ssid == 0 && self.masters[mi].s1dss != S1Dss::Ssid0 {
                    self.masters[mi].s1dss = S1Dss::Ssid0;
                    let target = Self::cd_ste(&self.masters[mi]);
                    self.write_ste(sid, &target)?;
                }
            }
        }
        self.list_device(current, domain, sid, ssid);
        Ok(())
    }

    /// Moves (sid, ssid) from `current`'s device list to `domain`'s.
    fn list_device(&mut self, current: Option<DomainId>, domain: DomainId, sid: u32, ssid: u32) {
        if let Some(old) = current {
            if let Ok(od) = self.domains.get_mut(old) {
                od.devices.retain(|&x| x != (sid, ssid));
            }
        }
        if let Ok(d) = self.domains.get_mut(domain) {
            if !d.devices.contains(&(sid, ssid)) {
                let _ = d.devices.push((sid, ssid));
            }
        }
    }

    /// Detaches (StreamID, SSID). For the stream's last attachment the STE
    /// goes back to abort first (hitless; CMD_CFGI_STE also drops the CDs
    /// cached through it, 4.3.1), then the CD table is freed; otherwise (substreams) the STE's S1DSS is
    /// changed first when SSID 0 leaves, then the CD is cleared.
    /// Errors: `NotAttached`, `Timeout`, `Hardware`.
    pub fn detach(&mut self, sid: u32, ssid: u32) -> Result<()> {
        let dom = self
            .domains
            .find_device((sid, ssid))
            .ok_or(Error::NotAttached)?;
        let mi = self.master_index(sid).ok_or(Error::NotAttached)?;
        if self.masters[mi].valid_cds <= 1 {
            // The STE's CFGI also drops the CDs cached through it (4.3.1).
            self.write_ste(sid, &ste::abort())?;
            let m = self.masters.swap_remove(mi);
            m.cdtab.free(&mut self.alloc);
        } else {
            if ssid == 0 && self.masters[mi].s1dss == S1Dss::Ssid0 {
                self.masters[mi].s1dss = S1Dss::Terminate;
                let target = Self::cd_ste(&self.masters[mi]);
                self.write_ste(sid, &target)?;
            }
            let no_alloc: Option<&mut A> = None;
            if let Some(slot) = self.masters[mi].cdtab.slot(ssid, no_alloc)? {
                Self::write_cd_live(&mut self.hw, sid, ssid, &slot, &[0; entry::ENTRY_QWORDS])?;
            }
            self.masters[mi].valid_cds -= 1;
        }
        if let Ok(d) = self.domains.get_mut(dom) {
            d.devices.retain(|&x| x != (sid, ssid));
        }
        Ok(())
    }

    /// Puts a stream that has no attachment into bypass (V = 1, Config =
    /// bypass) or back to abort. For bring-up and tests; `Busy` if attached.
    pub fn set_stream_bypass(&mut self, sid: u32, bypass: bool) -> Result<()> {
        if !self.strtab.in_range(sid) {
            return Err(Error::StreamOutOfRange);
        }
        if self.master_index(sid).is_some() {
            return Err(Error::Busy);
        }
        let t = if bypass { ste::bypass() } else { ste::abort() };
        self.write_ste(sid, &t).map(|_| ())
    }

    /// The current STE of `sid` (None if its level-2 table does not exist).
    pub fn read_ste(&mut self, sid: u32) -> Result<Option<Entry>> {
        let none: Option<&mut A> = None;
        Ok(self.strtab.slot(sid, none)?.map(|s| entry::read_entry(&s)))
    }

    // ----- map/unmap -----------------------------------------------------

    /// Maps `[iova, iova + len)` → `[paddr, paddr + len)` in `domain` with
    /// `perms`; 4 KiB / 2 MiB / 1 GiB leaves are chosen automatically.
    /// Issues no invalidation. Errors: `NoSuchDomain`, `Misaligned` (not
    /// 4 KiB multiples, or len 0), `OutOfRange` (IOVA ≥ 2^48, PA beyond OAS),
    /// `Overlap` (nothing changed), `NoMemory` (what was mapped is undone),
    /// `Unsupported` (perms without READ or WRITE).
    pub fn map(
        &mut self,
        domain: DomainId,
        iova: u64,
        paddr: u64,
        len: u64,
        perms: Perms,
    ) -> Result<()> {
        let (ril, thr) = (
            self.features.ril && self.config.use_ril,
            self.config.tlbi_threshold,
        );
        let d = self.domains.get_mut(domain)?;
        let asid = d.asid;
        let hw = &mut self.hw;
        let mut flush = |g: &Gather| flush_gather(hw, g, asid, ril, thr);
        d.pgtable
            .map(&mut self.alloc, iova, paddr, len, perms, &mut flush)
    }

    /// Unmaps everything in `[iova, iova + len)` of `domain`, splitting
    /// blocks that straddle the ends and freeing tables that become empty.
    /// Before returning, the removed translations are invalidated: range
    /// TLBI_NH_VA (RIL), else per-leaf TLBI_NH_VA up to
    /// [`Config::tlbi_threshold`], else TLBI_NH_ASID; then one CMD_SYNC
    /// (more only if very many tables are freed). Returns the bytes unmapped.
    /// Errors: `NoSuchDomain`, `Misaligned`, `OutOfRange`, `NotMapped`
    /// (nothing in range), `NoMemory` (a block split needs a table; nothing
    /// changed), `Timeout`. A block that straddles an end becomes a table;
    /// without IDR3.BBML = 2 it is first broken (invalid, TLBI, CMD_SYNC),
    /// so DMA to the part that stays mapped can fault meanwhile, and a
    /// `Timeout` then puts the block back.
    pub fn unmap(&mut self, domain: DomainId, iova: u64, len: u64) -> Result<u64> {
        let (ril, thr) = (
            self.features.ril && self.config.use_ril,
            self.config.tlbi_threshold,
        );
        let d = self.domains.get_mut(domain)?;
        let asid = d.asid;
        let hw = &mut self.hw;
        let mut flush = |g: &Gather| flush_gather(hw, g, asid, ril, thr);
        let g = &mut self.gather;
        g.reset();
        let r = d.pgtable.unmap(&mut self.alloc, iova, len, g, &mut flush);
        let f = d.pgtable.finish(&mut self.alloc, g, &mut flush);
        let n = r?;
        f?;
        Ok(n)
    }

    /// Translates `iova` in `domain`: physical address and permissions.
    pub fn iova_to_phys(&self, domain: DomainId, iova: u64) -> Option<(u64, Perms)> {
        self.domains.get(domain).ok()?.pgtable.iova_to_phys(iova)
    }

    // ----- events and errors ---------------------------------------------

    /// Consumes every record in the event queue, decoded, in order, calling
    /// `f` for each; acknowledges an overflow (EVENTQ_CONS.OVACKFLG =
    /// EVENTQ_PROD.OVFLG). Bounded by one queue's worth of records per call.
    pub fn drain_events(&mut self, mut f: impl FnMut(Event)) -> DrainReport {
        let geom = self.evtq.geom;
        let mut report = DrainReport::default();
        let prod_raw = self.hw.mmio.read32(regs::EVENTQ_PROD);
        crate::barrier::rmb();
        let prod = prod_raw & geom.ptr_mask();
        let mut cons = self.evtq.cons & geom.ptr_mask();
        let mut n = 0;
        while !geom.empty(prod, cons) && n < geom.entries() {
            let rec = self.evtq.record(geom.idx(cons));
            f(Event::decode(rec));
            cons = geom.inc(cons);
            n += 1;
        }
        report.events = n;
        let ovf = prod_raw & qptr::OVF;
        if ovf != self.evtq.cons & qptr::OVF {
            report.overflowed = true;
            self.hw.stats.event_overflows += 1;
        }
        self.hw.stats.events += n as u64;
        self.evtq.cons = cons | ovf;
        // Records must be read before the slots are handed back.
        crate::barrier::wmb();
        self.hw.mmio.write32(regs::EVENTQ_CONS, self.evtq.cons);
        report
    }

    /// Handles active global errors (GERROR ^ GERRORN): a command error is
    /// skipped (the entry at CONS becomes a CMD_SYNC) so the queue keeps
    /// running; the others are counted; then all are acknowledged by
    /// writing GERRORN = GERROR. Returns what was active.
    pub fn handle_gerror(&mut self) -> GerrorReport {
        self.hw.handle_gerror()
    }
}
