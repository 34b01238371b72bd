//! The SMMUv3 model proper: register file, command queue, configuration
//! and TLB caches, stream-table / CD / stage-1 walks, event queue.
//!
//! Behaviour follows the architecture (IHI 0070) and, where the architecture
//! leaves a choice, QEMU 7.2's SMMUv3 (DESIGN.md section 4): commands run
//! synchronously when CMDQ_PROD is written, an illegal command stops the
//! queue until GERRORN acknowledges it and is then re-executed, translation
//! faults are recorded only when CD.R = 1. Where being stricter than QEMU
//! exposes a driver bug that real hardware could show, the model is stricter
//! (see [`ModelOptions`]).

use crate::mem::PhysMem;
use crate::spec::{self, bit, bits, cerror, class, evt, reg, s1dss};
use crate::spec::{Cd, Command, Event, L1Cd, L1Std, Ste, SteConfig, TlbiRange};
use iommu_server::hal::Mmio;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the modelled SMMU implements; turned into the ID registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// IDR1.SIDSIZE: StreamID bits.
    pub sidsize: u8,
    /// IDR1.SSIDSIZE: SubstreamID bits (0: no substreams, as QEMU).
    pub ssidsize: u8,
    /// IDR0.ST_LEVEL = 0b01: 2-level stream tables.
    pub two_level_strtab: bool,
    /// IDR0.CD2L: 2-level CD tables.
    pub cd2l: bool,
    /// IDR3.RIL: range invalidation.
    pub ril: bool,
    /// IDR3.BBML: break-before-make level (2, as QEMU: a block may become a
    /// table without an invalid entry in between).
    pub bbml: u8,
    /// IDR0.ASID16.
    pub asid16: bool,
    /// IDR0.COHACC: the SMMU's table, queue and MSI accesses (and, in the
    /// model, the devices' DMA) are I/O-coherent with the CPU's caches.
    /// `false` makes [`Smmu::with_options`] switch its [`PhysMem`] to the
    /// non-coherent model ([`PhysMem::set_coherent`]), where the driver
    /// must clean what it writes and invalidate what it reads.
    pub coherent: bool,
    /// IDR0.MSI.
    pub msi: bool,
    /// IDR0.SEV.
    pub sev: bool,
    /// IDR0.HYP (EL2 TLBI commands legal).
    pub hyp: bool,
    /// IDR0.S2P (stage-2 commands legal; stage 2 itself is not modelled).
    pub s2p: bool,
    /// IDR0.ATS, IDR0.PRI (only their commands' legality).
    pub ats: bool,
    pub pri: bool,
    /// IDR5.OAS in bits.
    pub oas_bits: u32,
    pub gran4k: bool,
    pub gran16k: bool,
    pub gran64k: bool,
    /// IDR1.CMDQS / EVENTQS: log2 of the largest queues.
    pub cmdqs: u8,
    pub eventqs: u8,
    pub iidr: u32,
    pub aidr: u32,
}

impl Default for Features {
    fn default() -> Self {
        Self::qemu_7_2()
    }
}

impl Features {
    /// What QEMU 7.2's `-M virt,iommu=smmuv3` advertises (DESIGN.md 4):
    /// IDR0 0x0d40101a, IDR1 0x02730010, IDR3 0x1404, IDR5 0x74.
    pub fn qemu_7_2() -> Self {
        Features {
            sidsize: 16,
            ssidsize: 0,
            two_level_strtab: true,
            cd2l: false,
            ril: true,
            bbml: 2,
            asid16: true,
            coherent: true,
            msi: false,
            sev: false,
            hyp: false,
            s2p: false,
            ats: false,
            pri: false,
            oas_bits: 44,
            gran4k: true,
            gran16k: true,
            gran64k: true,
            cmdqs: 19,
            eventqs: 19,
            iidr: 0,
            aidr: 1,
        }
    }

    /// QEMU 7.2 plus substreams (`ssidsize` bits) and 2-level CD tables:
    /// the configuration that makes the PASID path testable.
    pub fn with_substreams(ssidsize: u8) -> Self {
        Features {
            ssidsize,
            cd2l: true,
            ..Self::qemu_7_2()
        }
    }

    pub fn idr0(&self) -> u32 {
        // 6.3.1: S1P [1], TTF [3:2] = 0b10 (AArch64), COHACC [4],
        // ASID16 [12], MSI [13], SEV [14], CD2L [19], TTENDIAN [22:21] =
        // 0b10 (little-endian), STALL_MODEL [25:24] = 0b01 (no stall),
        // TERM_MODEL [26], ST_LEVEL [28:27].
        let mut v = 1 << 1 | 0b10 << 2 | 0b10 << 21 | 0b01 << 24 | 1 << 26;
        v |= (self.coherent as u32) << 4;
        v |= (self.s2p as u32) | (self.hyp as u32) << 9 | (self.ats as u32) << 10;
        v |= (self.asid16 as u32) << 12 | (self.msi as u32) << 13 | (self.sev as u32) << 14;
        v |= (self.pri as u32) << 16 | (self.cd2l as u32) << 19;
        v |= (self.two_level_strtab as u32) << 27;
        v
    }
    pub fn idr1(&self) -> u32 {
        // 6.3.2: SIDSIZE [5:0], SSIDSIZE [10:6], PRIQS [15:11],
        // EVENTQS [20:16], CMDQS [25:21].
        self.sidsize as u32
            | (self.ssidsize as u32) << 6
            | (self.eventqs as u32) << 16
            | (self.cmdqs as u32) << 21
    }
    pub fn idr3(&self) -> u32 {
        // 6.3.4: HAD [2], RIL [10], BBML [12:11].
        1 << 2 | (self.ril as u32) << 10 | (self.bbml as u32 & 3) << 11
    }
    pub fn idr5(&self) -> u32 {
        // 6.3.6: OAS [2:0], GRAN4K [4], GRAN16K [5], GRAN64K [6].
        spec::pa_enc(self.oas_bits) as u32
            | (self.gran4k as u32) << 4
            | (self.gran16k as u32) << 5
            | (self.gran64k as u32) << 6
    }
    fn granule_ok(&self, g: u32) -> bool {
        match g {
            12 => self.gran4k,
            14 => self.gran16k,
            16 => self.gran64k,
            _ => false,
        }
    }
}

/// Choices the architecture leaves open. The defaults are the strict ones:
/// everything a real SMMU *may* cache, the model caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    /// Cache STEs/CDs/L1 descriptors even when invalid or illegal (negative
    /// caching, which the architecture permits; the Linux driver relies on
    /// CFGI after every STE write for that reason). QEMU does not.
    pub negative_config_caching: bool,
    /// Honour the TTL and TG hints of range TLBIs exactly: an entry of
    /// another level or granule is not invalidated (permitted by the
    /// architecture; a wrong hint is a driver bug).
    pub strict_tlbi_hints: bool,
    /// Model a walk cache (intermediate table entries, tagged by ASID), so
    /// that leaf-only TLBIs after freeing a table are observable.
    pub walk_cache: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            negative_config_caching: true,
            strict_tlbi_hints: true,
            walk_cache: true,
        }
    }
}

/// Kind of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    Exec,
}

/// A transaction's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub kind: AccessKind,
    pub privileged: bool,
}

impl Access {
    pub const READ: Access = Access {
        kind: AccessKind::Read,
        privileged: false,
    };
    pub const WRITE: Access = Access {
        kind: AccessKind::Write,
        privileged: false,
    };
    pub const EXEC: Access = Access {
        kind: AccessKind::Exec,
        privileged: false,
    };
    pub fn privileged(self) -> Self {
        Access {
            privileged: true,
            ..self
        }
    }
}

/// Why a configuration lookup failed: the event type it raises, and for
/// fetch aborts the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CfgErr {
    pub code: u8,
    pub fetch_addr: u64,
}

impl CfgErr {
    fn new(code: u8) -> Self {
        CfgErr {
            code,
            fetch_addr: 0,
        }
    }
    fn fetch(code: u8, addr: u64) -> Self {
        CfgErr {
            code,
            fetch_addr: addr,
        }
    }
}

/// How a transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Terminated without an event: STE.Config = abort, or SMMUEN = 0 with
    /// GBPA.ABORT = 1.
    Abort,
    /// A fault with an event record. `recorded`: the record reached the
    /// event queue (not if the queue is disabled or full, or a
    /// translation-class fault under CD.R = 0). `raz_wi`: CD.A = 0, the
    /// device sees read-as-zero / write-ignored instead of an abort.
    Event {
        event: Event,
        recorded: bool,
        raz_wi: bool,
    },
    /// The (bypassed or translated) physical address is not RAM.
    Bus { paddr: u64 },
}

impl Fault {
    /// The event type, if the fault has one.
    pub fn code(&self) -> Option<u8> {
        match self {
            Fault::Event { event, .. } => Some(event.code),
            _ => None,
        }
    }
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub paddr: u64,
    /// The STE (or S1DSS, or SMMUEN = 0) bypassed translation.
    pub bypass: bool,
    /// Served from the TLB.
    pub tlb_hit: bool,
    /// ASID of the CD used, if translated.
    pub asid: Option<u16>,
    /// Size of the page or block that translated it.
    pub page_size: u64,
    /// Memory attributes of the leaf: the CD.MAIR byte selected by
    /// AttrIndx (0xff = Normal write-back; 0b0000_xx00 = Device), and SH
    /// (0b11 inner shareable). Zero when bypassed.
    pub mair_attr: u8,
    pub sh: u8,
}

/// A DMA that stopped: at `iova`, after `done` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaFault {
    pub iova: u64,
    pub done: usize,
    pub fault: Fault,
}

/// Counters of what the driver made the SMMU do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Commands executed (not counting ones that raised CERROR).
    pub commands: u64,
    pub by_opcode: BTreeMap<u8, u64>,
    pub syncs: u64,
    pub cfgi: u64,
    pub tlbi: u64,
    pub range_tlbi: u64,
    pub prefetch: u64,
    pub cmd_errors: u64,
    pub sync_irqs: u64,
    pub sync_msis: u64,
    pub sync_sevs: u64,
    pub gerror_irqs: u64,
    pub eventq_irqs: u64,
    pub events_generated: u64,
    pub events_written: u64,
    pub events_not_recorded: u64,
    pub eventq_overflows: u64,
    pub translations: u64,
    pub tlb_hits: u64,
    pub walks: u64,
    pub ste_fetches: u64,
    pub cd_fetches: u64,
}

impl Counters {
    pub fn opcode(&self, op: u8) -> u64 {
        self.by_opcode.get(&op).copied().unwrap_or(0)
    }
    /// Field-wise `self - earlier`.
    pub fn since(&self, e: &Counters) -> Counters {
        let mut by_opcode = BTreeMap::new();
        for (&k, &v) in &self.by_opcode {
            let d = v - e.opcode(k);
            if d != 0 {
                by_opcode.insert(k, d);
            }
        }
        Counters {
            commands: self.commands - e.commands,
            by_opcode,
            syncs: self.syncs - e.syncs,
            cfgi: self.cfgi - e.cfgi,
            tlbi: self.tlbi - e.tlbi,
            range_tlbi: self.range_tlbi - e.range_tlbi,
            prefetch: self.prefetch - e.prefetch,
            cmd_errors: self.cmd_errors - e.cmd_errors,
            sync_irqs: self.sync_irqs - e.sync_irqs,
            sync_msis: self.sync_msis - e.sync_msis,
            sync_sevs: self.sync_sevs - e.sync_sevs,
            gerror_irqs: self.gerror_irqs - e.gerror_irqs,
            eventq_irqs: self.eventq_irqs - e.eventq_irqs,
            events_generated: self.events_generated - e.events_generated,
            events_written: self.events_written - e.events_written,
            events_not_recorded: self.events_not_recorded - e.events_not_recorded,
            eventq_overflows: self.eventq_overflows - e.eventq_overflows,
            translations: self.translations - e.translations,
            tlb_hits: self.tlb_hits - e.tlb_hits,
            walks: self.walks - e.walks,
            ste_fetches: self.ste_fetches - e.ste_fetches,
            cd_fetches: self.cd_fetches - e.cd_fetches,
        }
    }
}

/// One command the SMMU consumed (or rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedCommand {
    /// Position in the whole run (0-based).
    pub seq: u64,
    pub raw: [u64; 2],
    /// The command, or the CERROR it raised.
    pub decoded: Result<Command, u8>,
}

/// What a stream's configuration looked like in memory at one CMD_SYNC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSnapshot {
    /// 0 for the first CMD_SYNC of the run.
    pub sync_index: u64,
    /// `seq` of the CMD_SYNC in the command log.
    pub cmd_seq: u64,
    pub stes: Vec<(u32, Result<Ste, CfgErr>)>,
    pub cds: Vec<CdSnapshot>,
}

/// `((StreamID, SSID), CD in memory)` in a [`SyncSnapshot`].
pub type CdSnapshot = ((u32, Option<u32>), Result<Cd, CfgErr>);

/// View handed to the sync hook: the configuration and translations the
/// SMMU would fetch from memory right now (bypassing and not touching its
/// caches, recording nothing).
pub struct SyncView<'a> {
    pub sync_index: u64,
    pub cmd_seq: u64,
    st: &'a mut State,
    mem: &'a PhysMem,
}

impl SyncView<'_> {
    pub fn ste(&self, sid: u32) -> Result<Ste, CfgErr> {
        self.st.fetch_ste(self.mem, sid, false).map(|(s, _)| s)
    }
    pub fn cd(&self, sid: u32, ssid: Option<u32>) -> Result<Cd, CfgErr> {
        self.st.cd_in_memory(self.mem, sid, ssid)
    }
    /// What the tables in memory say for this transaction now.
    pub fn translate_uncached(
        &mut self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        acc: Access,
    ) -> Result<Translation, Fault> {
        let o = TOpts {
            cache: CacheMode {
                use_: false,
                fill: false,
            },
            record: false,
        };
        self.st.translate(self.mem, sid, ssid, iova, acc, o)
    }
    pub fn counters(&self) -> &Counters {
        &self.st.counters
    }
}

pub type SyncHook = Box<dyn FnMut(&mut SyncView<'_>) + Send>;

#[derive(Debug, Clone, Copy, Default)]
struct Queue {
    base: u64,
    /// Index and wrap bit (low `log2size + 1` bits).
    prod: u32,
    cons: u32,
}

impl Queue {
    fn log2size(&self, max: u8) -> u32 {
        (self.base & 0x1F).min(max as u64) as u32
    }
    fn addr(&self) -> u64 {
        self.base & reg::Q_BASE_ADDR_MASK
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Regs {
    cr0: u32,
    cr0ack: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    gerror: u32,
    gerrorn: u32,
    gerror_irq_cfg0: u64,
    gerror_irq_cfg1: u32,
    gerror_irq_cfg2: u32,
    strtab_base: u64,
    strtab_base_cfg: u32,
    cmdq: Queue,
    cmdq_err: u8,
    eventq: Queue,
    eventq_ovflg: bool,
    eventq_irq_cfg0: u64,
    eventq_irq_cfg1: u32,
    eventq_irq_cfg2: u32,
    priq_base: u64,
    priq_prod: u32,
    priq_cons: u32,
}

/// Permissions accumulated from table descriptors (APTable, UXNTable,
/// PXNTable; D5.3.3 of the Arm ARM), unless CD.HAD0/1 disables them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TableAttrs {
    ap: u8,
    uxn: bool,
    pxn: bool,
}

const GLOBAL_TAG: u32 = 0x1_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TlbEntry {
    /// ASID, or GLOBAL_TAG for nG = 0 entries (which match every ASID).
    tag: u32,
    va: u64,
    size_log2: u32,
    level: u32,
    granule: u32,
    pa: u64,
    desc: u64,
    table: TableAttrs,
}

/// A cached TLB entry, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbView {
    /// `None`: global (nG = 0).
    pub asid: Option<u16>,
    pub va: u64,
    pub size: u64,
    pub level: u32,
    pub pa: u64,
}

#[derive(Debug, Clone, Copy)]
struct WalkEntry {
    table: u64,
    attrs: TableAttrs,
}

#[derive(Debug, Clone, Copy)]
struct CacheMode {
    use_: bool,
    fill: bool,
}

/// Options of one translation.
#[derive(Debug, Clone, Copy)]
struct TOpts {
    cache: CacheMode,
    record: bool,
}

/// Mask of the VA bits the TLB keys on: TBI makes the top byte irrelevant,
/// and bit 55 selects the TTB, so keying on `[55:0]` is exact for tests.
const VA_KEY_MASK: u64 = 0x00FF_FFFF_FFFF_FFFF;

struct State {
    f: Features,
    o: ModelOptions,
    r: Regs,
    ste_cache: HashMap<u32, Ste>,
    l1std_cache: HashMap<u32, L1Std>,
    cd_cache: HashMap<(u32, u32), Cd>,
    l1cd_cache: HashMap<(u32, u32), L1Cd>,
    tlb: HashMap<(u32, u64, u32), TlbEntry>,
    walk: HashMap<(u16, u32, u32, u64), WalkEntry>,
    counters: Counters,
    log: Vec<LoggedCommand>,
    events: Vec<(Event, bool)>,
    watch_stes: Vec<u32>,
    watch_cds: Vec<(u32, Option<u32>)>,
    snapshots: Vec<SyncSnapshot>,
    hook: Option<SyncHook>,
    violations: Vec<String>,
}

/// The software SMMUv3. Cheap to clone; clones share one device. Implements
/// [`Mmio`] (page 0 at 0, page 1 at 0x1_0000).
#[derive(Clone)]
pub struct Smmu {
    st: Arc<Mutex<State>>,
    mem: PhysMem,
}

impl std::fmt::Debug for Smmu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Smmu")
            .field("features", &s.f)
            .field("cr0", &format_args!("{:#x}", s.r.cr0))
            .field("counters", &s.counters)
            .finish()
    }
}

fn level_shift(g: u32, level: u32) -> u32 {
    g + (3 - level) * (g - 3)
}

/// Queue pointer arithmetic (3.5.1): `log2size` index bits plus one wrap bit.
fn q_mask(l2: u32) -> u32 {
    (1u32 << (l2 + 1)) - 1
}
fn q_inc(p: u32, l2: u32) -> u32 {
    (p + 1) & q_mask(l2)
}
fn q_empty(prod: u32, cons: u32, l2: u32) -> bool {
    prod & q_mask(l2) == cons & q_mask(l2)
}
fn q_full(prod: u32, cons: u32, l2: u32) -> bool {
    let idx = (1u32 << l2) - 1;
    prod & idx == cons & idx && (prod >> l2) & 1 != (cons >> l2) & 1
}

impl Smmu {
    /// An SMMU with `features`, strict [`ModelOptions`], over `mem`.
    /// A non-coherent SMMU (`features.coherent == false`) switches `mem` to
    /// non-coherent ([`PhysMem::set_coherent`]).
    pub fn new(features: Features, mem: PhysMem) -> Self {
        Self::with_options(features, ModelOptions::default(), mem)
    }

    /// [`new`](Self::new) with explicit [`ModelOptions`].
    pub fn with_options(features: Features, o: ModelOptions, mem: PhysMem) -> Self {
        assert!(features.sidsize <= 32 && features.ssidsize <= 20);
        if !features.coherent {
            mem.set_coherent(false);
        }
        Smmu {
            st: Arc::new(Mutex::new(State {
                f: features,
                o,
                r: Regs::default(),
                ste_cache: HashMap::new(),
                l1std_cache: HashMap::new(),
                cd_cache: HashMap::new(),
                l1cd_cache: HashMap::new(),
                tlb: HashMap::new(),
                walk: HashMap::new(),
                counters: Counters::default(),
                log: Vec::new(),
                events: Vec::new(),
                watch_stes: Vec::new(),
                watch_cds: Vec::new(),
                snapshots: Vec::new(),
                hook: None,
                violations: Vec::new(),
            })),
            mem,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memory this SMMU reads and writes (the point-of-coherency copy
    /// when non-coherent).
    pub fn mem(&self) -> &PhysMem {
        &self.mem
    }
    pub fn features(&self) -> Features {
        self.lock().f.clone()
    }

    // ---- transactions ---------------------------------------------------

    /// Translates one transaction as a device would issue it: through the
    /// caches (filling them), recording events.
    pub fn translate(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        acc: Access,
    ) -> Result<u64, Fault> {
        self.translate_ex(sid, ssid, iova, acc).map(|t| t.paddr)
    }

    /// [`translate`](Self::translate) with details of the result.
    pub fn translate_ex(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        acc: Access,
    ) -> Result<Translation, Fault> {
        let o = TOpts {
            cache: CacheMode {
                use_: true,
                fill: true,
            },
            record: true,
        };
        self.lock().translate(&self.mem, sid, ssid, iova, acc, o)
    }

    /// Like `translate` (through and filling the caches) but records no
    /// event: for tests that sample addresses.
    pub fn probe(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        acc: Access,
    ) -> Result<Translation, Fault> {
        let o = TOpts {
            cache: CacheMode {
                use_: true,
                fill: true,
            },
            record: false,
        };
        self.lock().translate(&self.mem, sid, ssid, iova, acc, o)
    }

    /// What the tables in memory say now, ignoring and not touching the
    /// caches, recording nothing.
    pub fn translate_uncached(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        acc: Access,
    ) -> Result<Translation, Fault> {
        let o = TOpts {
            cache: CacheMode {
                use_: false,
                fill: false,
            },
            record: false,
        };
        self.lock().translate(&self.mem, sid, ssid, iova, acc, o)
    }

    /// A device write of `data` at `iova`, translated page by page; bytes
    /// before the faulting page are written, nothing at or after it.
    pub fn dma_write(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        data: &[u8],
    ) -> Result<(), DmaFault> {
        let mut done = 0;
        while done < data.len() {
            let a = iova.wrapping_add(done as u64);
            let n = (0x1000 - (a & 0xFFF) as usize).min(data.len() - done);
            let fault = |fault| DmaFault {
                iova: a,
                done,
                fault,
            };
            let pa = self.translate(sid, ssid, a, Access::WRITE).map_err(fault)?;
            self.mem
                .write(pa, &data[done..done + n])
                .ok_or(fault(Fault::Bus { paddr: pa }))?;
            done += n;
        }
        Ok(())
    }

    /// A device read into `buf` from `iova`, page by page.
    pub fn dma_read(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), DmaFault> {
        let mut done = 0;
        while done < buf.len() {
            let a = iova.wrapping_add(done as u64);
            let n = (0x1000 - (a & 0xFFF) as usize).min(buf.len() - done);
            let fault = |fault| DmaFault {
                iova: a,
                done,
                fault,
            };
            let pa = self.translate(sid, ssid, a, Access::READ).map_err(fault)?;
            self.mem
                .read(pa, &mut buf[done..done + n])
                .ok_or(fault(Fault::Bus { paddr: pa }))?;
            done += n;
        }
        Ok(())
    }

    /// A DMA as QEMU's `edu` device does it behind QEMU 7.2's SMMU
    /// (DESIGN.md 4): one translation per 4 bytes, a faulting word is dropped
    /// (write) and the transfer goes on, so a fault storm produces one event
    /// per 4 bytes. Returns every fault.
    pub fn edu_dma_write(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        data: &[u8],
    ) -> Vec<DmaFault> {
        let mut faults = Vec::new();
        for (i, chunk) in data.chunks(4).enumerate() {
            let a = iova.wrapping_add(4 * i as u64);
            let r = self
                .translate(sid, ssid, a, Access::WRITE)
                .and_then(|pa| self.mem.write(pa, chunk).ok_or(Fault::Bus { paddr: pa }));
            if let Err(fault) = r {
                faults.push(DmaFault {
                    iova: a,
                    done: 4 * i,
                    fault,
                });
            }
        }
        faults
    }

    /// The read counterpart of [`edu_dma_write`](Self::edu_dma_write): a
    /// faulting word reads as zero.
    pub fn edu_dma_read(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Vec<DmaFault> {
        let mut faults = Vec::new();
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let a = iova.wrapping_add(4 * i as u64);
            let r = self
                .translate(sid, ssid, a, Access::READ)
                .and_then(|pa| self.mem.read(pa, chunk).ok_or(Fault::Bus { paddr: pa }));
            if let Err(fault) = r {
                chunk.fill(0);
                faults.push(DmaFault {
                    iova: a,
                    done: 4 * i,
                    fault,
                });
            }
        }
        faults
    }

    // ---- observation ------------------------------------------------------

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }
    /// Sequence number the next command will get.
    pub fn command_seq(&self) -> u64 {
        self.lock().log.len() as u64
    }
    /// Commands consumed since sequence number `seq`.
    pub fn commands_since(&self, seq: u64) -> Vec<LoggedCommand> {
        let s = self.lock();
        s.log[(seq as usize).min(s.log.len())..].to_vec()
    }
    /// Every event the model generated, with whether it was recorded.
    pub fn events(&self) -> Vec<(Event, bool)> {
        self.lock().events.clone()
    }
    /// Records in the event queue between EVENTQ_CONS and EVENTQ_PROD.
    pub fn pending_events(&self) -> Vec<Event> {
        let s = self.lock();
        let q = s.r.eventq;
        let l2 = q.log2size(s.f.eventqs);
        let mut out = Vec::new();
        let mut c = q.cons & q_mask(l2);
        while !q_empty(q.prod, c, l2) {
            let idx = c & ((1 << l2) - 1);
            if let Some(w) = self.mem.read_words::<4>(q.addr() + 32 * idx as u64) {
                out.push(Event::decode(w));
            }
            c = q_inc(c, l2);
        }
        out
    }
    /// Driver actions the architecture forbids or leaves UNPREDICTABLE
    /// (e.g. writing CMDQ_BASE while the queue is enabled). Tests assert
    /// this stays empty.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// The STE for `sid` as the SMMU would fetch it from memory now.
    pub fn ste_at(&self, sid: u32) -> Result<Ste, CfgErr> {
        self.lock().fetch_ste(&self.mem, sid, false).map(|(s, _)| s)
    }
    /// The CD for `(sid, ssid)` as the SMMU would fetch it from memory now
    /// (`ssid = None`: the CD non-substream traffic uses).
    pub fn cd_at(&self, sid: u32, ssid: Option<u32>) -> Result<Cd, CfgErr> {
        self.lock().cd_in_memory(&self.mem, sid, ssid)
    }
    /// Architectural legality of an STE under this SMMU's features
    /// (`Err` carries C_BAD_STE).
    pub fn check_ste(&self, ste: &Ste) -> Result<(), CfgErr> {
        self.lock().check_ste(ste)
    }
    /// Legality of a CD (`Err` carries C_BAD_CD).
    pub fn check_cd(&self, cd: &Cd) -> Result<(), CfgErr> {
        self.lock().check_cd(cd)
    }
    /// The STE cached for `sid`, if any.
    pub fn cached_ste(&self, sid: u32) -> Option<Ste> {
        self.lock().ste_cache.get(&sid).copied()
    }
    /// The CD cached for `(sid, index)`; index 0 is also the non-substream CD.
    pub fn cached_cd(&self, sid: u32, index: u32) -> Option<Cd> {
        self.lock().cd_cache.get(&(sid, index)).copied()
    }
    /// Every TLB entry.
    pub fn tlb_entries(&self) -> Vec<TlbView> {
        let s = self.lock();
        let mut v: Vec<TlbView> = s
            .tlb
            .values()
            .map(|e| TlbView {
                asid: (e.tag != GLOBAL_TAG).then_some(e.tag as u16),
                va: e.va,
                size: 1 << e.size_log2,
                level: e.level,
                pa: e.pa,
            })
            .collect();
        v.sort_by_key(|e| (e.asid, e.va));
        v
    }
    /// Number of cached walk (intermediate table) entries.
    pub fn walk_cache_len(&self) -> usize {
        self.lock().walk.len()
    }
    /// Drops every cached STE, CD and TLB entry (as if CFGI_ALL + TLBI_NSNH_ALL).
    pub fn invalidate_all(&self) {
        let mut s = self.lock();
        s.cfgi_all();
        s.tlb.clear();
        s.walk.clear();
    }

    /// At every CMD_SYNC, record the in-memory STE of `sid`.
    pub fn watch_ste(&self, sid: u32) {
        self.lock().watch_stes.push(sid);
    }
    /// At every CMD_SYNC, record the in-memory CD of `(sid, ssid)`.
    pub fn watch_cd(&self, sid: u32, ssid: Option<u32>) {
        self.lock().watch_cds.push((sid, ssid));
    }
    /// Takes the snapshots recorded so far.
    pub fn take_sync_snapshots(&self) -> Vec<SyncSnapshot> {
        std::mem::take(&mut self.lock().snapshots)
    }
    /// Calls `hook` at every CMD_SYNC (after the snapshots). The hook must
    /// not call back into this `Smmu` (it runs under its lock); it may use
    /// the `PhysMem`.
    pub fn set_sync_hook(&self, hook: Option<SyncHook>) {
        self.lock().hook = hook;
    }
}

impl Mmio for Smmu {
    fn read32(&self, offset: usize) -> u32 {
        self.lock().read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.lock().write32(&self.mem, offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        let s = self.lock();
        match s.reg64(offset) {
            Some(v) => v,
            None => s.read32(offset) as u64 | (s.read32(offset + 4) as u64) << 32,
        }
    }
    fn write64(&self, offset: usize, value: u64) {
        let mut s = self.lock();
        if State::is_reg64(offset) {
            s.write64(offset, value);
        } else {
            s.write32(&self.mem, offset, value as u32);
            s.write32(&self.mem, offset + 4, (value >> 32) as u32);
        }
    }
}

impl State {
    // ---- registers --------------------------------------------------------

    fn is_reg64(off: usize) -> bool {
        matches!(
            off,
            reg::GERROR_IRQ_CFG0
                | reg::STRTAB_BASE
                | reg::CMDQ_BASE
                | reg::EVENTQ_BASE
                | reg::EVENTQ_IRQ_CFG0
                | reg::PRIQ_BASE
        )
    }

    fn reg64(&self, off: usize) -> Option<u64> {
        Some(match off {
            reg::GERROR_IRQ_CFG0 => self.r.gerror_irq_cfg0,
            reg::STRTAB_BASE => self.r.strtab_base,
            reg::CMDQ_BASE => self.r.cmdq.base,
            reg::EVENTQ_BASE => self.r.eventq.base,
            reg::EVENTQ_IRQ_CFG0 => self.r.eventq_irq_cfg0,
            reg::PRIQ_BASE => self.r.priq_base,
            _ => return None,
        })
    }

    fn read32(&self, off: usize) -> u32 {
        if let Some(v) = self.reg64(off & !7) {
            return if off & 4 == 0 {
                v as u32
            } else {
                (v >> 32) as u32
            };
        }
        let r = &self.r;
        match off {
            reg::IDR0 => self.f.idr0(),
            reg::IDR1 => self.f.idr1(),
            reg::IDR2 | reg::IDR4 => 0,
            reg::IDR3 => self.f.idr3(),
            reg::IDR5 => self.f.idr5(),
            reg::IIDR => self.f.iidr,
            reg::AIDR => self.f.aidr,
            reg::CR0 => r.cr0,
            reg::CR0ACK => r.cr0ack,
            reg::CR1 => r.cr1,
            reg::CR2 => r.cr2,
            reg::STATUSR => 0,
            reg::GBPA => r.gbpa,
            reg::AGBPA => 0,
            reg::IRQ_CTRL | reg::IRQ_CTRLACK => r.irq_ctrl,
            reg::GERROR => r.gerror,
            reg::GERRORN => r.gerrorn,
            reg::GERROR_IRQ_CFG1 => r.gerror_irq_cfg1,
            reg::GERROR_IRQ_CFG2 => r.gerror_irq_cfg2,
            reg::STRTAB_BASE_CFG => r.strtab_base_cfg,
            reg::CMDQ_PROD => r.cmdq.prod,
            reg::CMDQ_CONS => r.cmdq.cons | (r.cmdq_err as u32) << reg::CONS_ERR_SHIFT,
            reg::EVENTQ_PROD | 0xA8 => {
                r.eventq.prod
                    | if r.eventq_ovflg {
                        reg::EVENTQ_PROD_OVFLG
                    } else {
                        0
                    }
            }
            reg::EVENTQ_CONS | 0xAC => r.eventq.cons,
            reg::EVENTQ_IRQ_CFG1 => r.eventq_irq_cfg1,
            reg::EVENTQ_IRQ_CFG2 => r.eventq_irq_cfg2,
            reg::PRIQ_PROD => r.priq_prod,
            reg::PRIQ_CONS => r.priq_cons,
            _ => 0,
        }
    }

    fn violation(&mut self, msg: String) {
        self.violations.push(msg);
    }

    fn write64(&mut self, off: usize, v: u64) {
        match off {
            reg::GERROR_IRQ_CFG0 => self.r.gerror_irq_cfg0 = v,
            reg::STRTAB_BASE => {
                if self.r.cr0ack & reg::CR0_SMMUEN != 0 {
                    self.violation(format!("STRTAB_BASE written ({v:#x}) while SMMUEN=1"));
                } else {
                    self.r.strtab_base = v;
                }
            }
            reg::CMDQ_BASE => {
                if self.r.cr0ack & reg::CR0_CMDQEN != 0 {
                    self.violation(format!("CMDQ_BASE written ({v:#x}) while CMDQEN=1"));
                } else {
                    self.r.cmdq.base = v;
                }
            }
            reg::EVENTQ_BASE => {
                if self.r.cr0ack & reg::CR0_EVENTQEN != 0 {
                    self.violation(format!("EVENTQ_BASE written ({v:#x}) while EVENTQEN=1"));
                } else {
                    self.r.eventq.base = v;
                }
            }
            reg::EVENTQ_IRQ_CFG0 => self.r.eventq_irq_cfg0 = v,
            reg::PRIQ_BASE => self.r.priq_base = v,
            _ => {}
        }
    }

    fn write32(&mut self, mem: &PhysMem, off: usize, v: u32) {
        if let Some(old) = self.reg64(off & !7) {
            let new = if off & 4 == 0 {
                (old & !0xFFFF_FFFF) | v as u64
            } else {
                (old & 0xFFFF_FFFF) | (v as u64) << 32
            };
            self.write64(off & !7, new);
            return;
        }
        match off {
            reg::CR0 => {
                let old = self.r.cr0ack;
                self.r.cr0 = v;
                // The model completes every enable/disable at once.
                self.r.cr0ack = v & reg::CR0_VALID;
                if old & reg::CR0_CMDQEN == 0 && v & reg::CR0_CMDQEN != 0 {
                    self.process_cmdq(mem);
                }
            }
            reg::CR1 => {
                if self.r.cr0ack & (reg::CR0_CMDQEN | reg::CR0_EVENTQEN | reg::CR0_PRIQEN) != 0 {
                    self.violation(format!("CR1 written ({v:#x}) with a queue enabled"));
                }
                self.r.cr1 = v;
            }
            reg::CR2 => {
                if self.r.cr0ack & reg::CR0_SMMUEN != 0 {
                    self.violation(format!("CR2 written ({v:#x}) while SMMUEN=1"));
                }
                self.r.cr2 = v;
            }
            // 6.3.14: fields take effect when written with Update = 1; the
            // model completes the update at once (Update reads 0).
            reg::GBPA if v & reg::GBPA_UPDATE != 0 => {
                self.r.gbpa = v & !reg::GBPA_UPDATE & 0x001F_3FF0;
            }
            reg::IRQ_CTRL => self.r.irq_ctrl = v & 7,
            reg::GERRORN => {
                let was = (self.r.gerror ^ self.r.gerrorn) & reg::GERROR_CMDQ_ERR;
                self.r.gerrorn = v;
                let now = (self.r.gerror ^ self.r.gerrorn) & reg::GERROR_CMDQ_ERR;
                if was != 0 && now == 0 {
                    // As QEMU: acknowledging CMDQ_ERR lets the queue resume
                    // from CONS, re-executing (what is now) that entry.
                    self.process_cmdq(mem);
                }
            }
            reg::GERROR_IRQ_CFG1 => self.r.gerror_irq_cfg1 = v,
            reg::GERROR_IRQ_CFG2 => self.r.gerror_irq_cfg2 = v,
            reg::STRTAB_BASE_CFG => {
                if self.r.cr0ack & reg::CR0_SMMUEN != 0 {
                    self.violation(format!("STRTAB_BASE_CFG written ({v:#x}) while SMMUEN=1"));
                } else {
                    self.r.strtab_base_cfg = v & 0x0003_07FF;
                }
            }
            reg::CMDQ_PROD => {
                let l2 = self.r.cmdq.log2size(self.f.cmdqs);
                self.r.cmdq.prod = v & q_mask(l2);
                self.process_cmdq(mem);
            }
            reg::CMDQ_CONS => {
                if self.r.cr0ack & reg::CR0_CMDQEN != 0 {
                    self.violation(format!("CMDQ_CONS written ({v:#x}) while CMDQEN=1"));
                } else {
                    let l2 = self.r.cmdq.log2size(self.f.cmdqs);
                    self.r.cmdq.cons = v & q_mask(l2);
                }
            }
            reg::EVENTQ_PROD | 0xA8 => {
                if self.r.cr0ack & reg::CR0_EVENTQEN != 0 {
                    self.violation(format!("EVENTQ_PROD written ({v:#x}) while EVENTQEN=1"));
                } else {
                    let l2 = self.r.eventq.log2size(self.f.eventqs);
                    self.r.eventq.prod = v & q_mask(l2);
                    self.r.eventq_ovflg = v & reg::EVENTQ_PROD_OVFLG != 0;
                }
            }
            reg::EVENTQ_CONS | 0xAC => {
                let l2 = self.r.eventq.log2size(self.f.eventqs);
                self.r.eventq.cons = v & (q_mask(l2) | reg::EVENTQ_CONS_OVACKFLG);
            }
            reg::EVENTQ_IRQ_CFG1 => self.r.eventq_irq_cfg1 = v,
            reg::EVENTQ_IRQ_CFG2 => self.r.eventq_irq_cfg2 = v,
            reg::PRIQ_PROD => self.r.priq_prod = v,
            reg::PRIQ_CONS => self.r.priq_cons = v,
            _ => {}
        }
    }

    fn raise_gerror(&mut self, bitmask: u32) {
        // 6.3.18: an error is active while GERROR[x] != GERRORN[x]; a new
        // error of a kind already active is not signalled again.
        if (self.r.gerror ^ self.r.gerrorn) & bitmask == 0 {
            self.r.gerror ^= bitmask;
            if self.r.irq_ctrl & reg::IRQ_CTRL_GERROR_IRQEN != 0 {
                self.counters.gerror_irqs += 1;
            }
        }
    }

    // ---- command queue ----------------------------------------------------

    fn process_cmdq(&mut self, mem: &PhysMem) {
        if self.r.cr0ack & reg::CR0_CMDQEN == 0 {
            return;
        }
        let l2 = self.r.cmdq.log2size(self.f.cmdqs);
        loop {
            if (self.r.gerror ^ self.r.gerrorn) & reg::GERROR_CMDQ_ERR != 0 {
                return;
            }
            let q = self.r.cmdq;
            if q_empty(q.prod, q.cons, l2) {
                return;
            }
            let idx = q.cons & ((1 << l2) - 1);
            let addr = q.addr() + 16 * idx as u64;
            let res = match mem.read_words::<2>(addr) {
                None => Err(([0, 0], cerror::ABT)),
                Some(raw) => self.exec(mem, raw).map_err(|e| (raw, e)),
            };
            if let Err((raw, e)) = res {
                self.log.push(LoggedCommand {
                    seq: self.log.len() as u64,
                    raw,
                    decoded: Err(e),
                });
                self.counters.cmd_errors += 1;
                self.r.cmdq_err = e;
                self.raise_gerror(reg::GERROR_CMDQ_ERR);
                return;
            }
            self.r.cmdq.cons = q_inc(q.cons, l2);
        }
    }

    fn exec(&mut self, mem: &PhysMem, raw: [u64; 2]) -> Result<(), u8> {
        let cmd = Command::decode(raw, self.f.ril)?;
        // 4.4: with 8-bit ASIDs the upper byte is RES0, and a non-zero one
        // need not affect any entry: the model then matches nothing.
        let asid_ok = |a: u16| self.f.asid16 || a >> 8 == 0;
        // Feature-dependent legality (chapter 4: commands for a feature the
        // SMMU lacks are CERROR_ILL).
        match cmd {
            Command::TlbiEl2All
            | Command::TlbiEl2Asid { .. }
            | Command::TlbiEl2Va { .. }
            | Command::TlbiEl2Vaa { .. }
                if !self.f.hyp =>
            {
                return Err(cerror::ILL)
            }
            Command::TlbiS12Vmall { .. } | Command::TlbiS2Ipa { .. } if !self.f.s2p => {
                return Err(cerror::ILL)
            }
            Command::AtcInv if !self.f.ats => return Err(cerror::ILL),
            Command::PriResp if !self.f.pri => return Err(cerror::ILL),
            _ => {}
        }
        let seq = self.log.len() as u64;
        self.log.push(LoggedCommand {
            seq,
            raw,
            decoded: Ok(cmd),
        });
        let c = &mut self.counters;
        c.commands += 1;
        *c.by_opcode.entry((raw[0] & 0xFF) as u8).or_default() += 1;
        c.cfgi += cmd.is_cfgi() as u64;
        c.tlbi += cmd.is_tlbi() as u64;
        c.range_tlbi += cmd.is_range_tlbi() as u64;
        match cmd {
            Command::PrefetchConfig { sid, ssid } | Command::PrefetchAddr { sid, ssid, .. } => {
                self.counters.prefetch += 1;
                // A prefetch may load configuration into the caches (4.2);
                // doing so makes a missing CFGI after it observable.
                let cm = CacheMode {
                    use_: true,
                    fill: true,
                };
                if let Ok(ste) = self.get_ste(mem, sid, cm) {
                    if self.check_ste(&ste).is_ok() && ste.config == SteConfig::S1Trans {
                        if let Ok(Some(i)) = Self::cd_index(&ste, ssid) {
                            let _ = self.get_cd(mem, sid, &ste, i, cm);
                        }
                    }
                }
            }
            Command::CfgiSte { sid, leaf } => {
                self.ste_cache.remove(&sid);
                if !leaf {
                    let split = self.split();
                    self.l1std_cache.remove(&(sid >> split));
                }
                // 4.3.1: also every CD and L1CD cached through this StreamID.
                self.drop_cds(sid, sid);
            }
            Command::CfgiSteRange { sid, range } => {
                if range >= 31 {
                    self.cfgi_all();
                } else {
                    let mask = (1u32 << (range + 1)) - 1;
                    let (lo, hi) = (sid & !mask, (sid & !mask) | mask);
                    self.ste_cache.retain(|&k, _| k < lo || k > hi);
                    let split = self.split();
                    self.l1std_cache
                        .retain(|&k, _| k < lo >> split || k > hi >> split);
                    // 4.3.2: and the CDs cached through those StreamIDs.
                    self.drop_cds(lo, hi);
                }
            }
            Command::CfgiCd { sid, ssid, leaf } => {
                // 4.3.3: SubstreamID is the index into the CD table; a stream
                // with one CD is a one-entry table (index 0). An SSID beyond
                // the table is CONSTRAINED UNPREDICTABLE: the model takes
                // the "no effect" choice.
                self.cd_cache.remove(&(sid, ssid));
                if !leaf {
                    self.l1cd_cache.retain(|&(s, _), _| s != sid);
                }
            }
            Command::CfgiCdAll { sid } => {
                self.cd_cache.retain(|&(s, _), _| s != sid);
                self.l1cd_cache.retain(|&(s, _), _| s != sid);
            }
            Command::TlbiNhAll { .. } | Command::TlbiNsnhAll => {
                self.tlb.clear();
                self.walk.clear();
            }
            Command::TlbiNhAsid { asid, .. } => {
                if asid_ok(asid) {
                    self.tlb.retain(|_, e| e.tag != asid as u32);
                    self.walk.retain(|k, _| k.0 != asid);
                }
            }
            Command::TlbiNhVa {
                asid,
                addr,
                leaf,
                range,
                ..
            } => {
                if asid_ok(asid) {
                    self.tlbi_va(Some(asid), addr, leaf, range)
                }
            }
            Command::TlbiNhVaa {
                addr, leaf, range, ..
            } => self.tlbi_va(None, addr, leaf, range),
            // EL2 and stage-2 regimes are not modelled: these have no
            // effect on the NS-EL1 stage-1 entries the model caches.
            Command::TlbiEl2All
            | Command::TlbiEl2Asid { .. }
            | Command::TlbiEl2Va { .. }
            | Command::TlbiEl2Vaa { .. }
            | Command::TlbiS12Vmall { .. }
            | Command::TlbiS2Ipa { .. } => {}
            Command::AtcInv | Command::PriResp | Command::Resume | Command::StallTerm => {}
            Command::Sync {
                cs,
                msi_data,
                msi_addr,
                ..
            } => {
                self.counters.syncs += 1;
                if self.f.msi && msi_addr != 0 {
                    // 4.7.3: completion signalled by an MSI write of MSIData.
                    self.counters.sync_msis += 1;
                    if mem.write_u32(msi_addr, msi_data).is_none() {
                        self.raise_gerror(reg::GERROR_MSI_CMDQ_ABT_ERR);
                    }
                } else if cs == 0b01 {
                    self.counters.sync_irqs += 1;
                }
                if cs == 0b10 {
                    self.counters.sync_sevs += 1;
                }
                self.on_sync(mem, seq);
            }
        }
        Ok(())
    }

    fn split(&self) -> u32 {
        bits(self.r.strtab_base_cfg as u64, 10, 6) as u32
    }

    fn cfgi_all(&mut self) {
        self.ste_cache.clear();
        self.l1std_cache.clear();
        self.cd_cache.clear();
        self.l1cd_cache.clear();
    }

    fn drop_cds(&mut self, lo: u32, hi: u32) {
        self.cd_cache.retain(|&(s, _), _| s < lo || s > hi);
        self.l1cd_cache.retain(|&(s, _), _| s < lo || s > hi);
    }

    /// TLBI by VA (4.4.2-4.4.4): `asid` None is VAA (all ASIDs). Global
    /// entries match every ASID. Leaf = 1 leaves walk-cache entries alone.
    fn tlbi_va(&mut self, asid: Option<u16>, addr: u64, leaf: bool, range: Option<TlbiRange>) {
        let addr = addr & VA_KEY_MASK;
        if let Some(r) = range {
            // 4.4.1.1: with a level hint, an Address not aligned to the
            // leaf size at that level makes the invalidated range
            // UNPREDICTABLE.
            let g = r.granule_bits();
            if r.ttl != 0 && (r.ttl != 1 || g != 14) {
                let leaf_size = 1u64 << level_shift(g, r.ttl as u32);
                if addr & (leaf_size - 1) != 0 {
                    self.violation(format!(
                        "range TLBI at {addr:#x} with TTL {} is not aligned to {leaf_size:#x}",
                        r.ttl
                    ));
                }
            }
        }
        let (lo, hi) = match range {
            None => (addr, addr),
            Some(r) => {
                let g = r.granule_bits();
                let lo = addr & !((1u64 << g) - 1);
                let bytes = r.bytes();
                let hi = (lo as u128 + bytes - 1).min(u64::MAX as u128) as u64;
                (lo, hi)
            }
        };
        let strict = self.o.strict_tlbi_hints;
        let asid_ok = |tag: u32| match asid {
            None => true,
            Some(a) => tag == a as u32 || tag == GLOBAL_TAG,
        };
        let overlaps = |va: u64, size_log2: u32| {
            let end = va.saturating_add((1u64 << size_log2) - 1);
            va <= hi && end >= lo
        };
        self.tlb.retain(|_, e| {
            if !asid_ok(e.tag) || !overlaps(e.va, e.size_log2) {
                return true;
            }
            if let (Some(r), true) = (range, strict) {
                if r.granule_bits() != e.granule || (r.ttl != 0 && r.ttl as u32 != e.level) {
                    return true;
                }
            }
            false
        });
        if !leaf {
            self.walk.retain(|&(a, g, level, prefix), _| {
                if let Some(x) = asid {
                    if a != x {
                        return true;
                    }
                }
                let s = level_shift(g, level - 1);
                !overlaps(prefix << s, s)
            });
        }
    }

    fn on_sync(&mut self, mem: &PhysMem, seq: u64) {
        let sync_index = self.counters.syncs - 1;
        if !self.watch_stes.is_empty() || !self.watch_cds.is_empty() {
            let stes = self
                .watch_stes
                .iter()
                .map(|&sid| (sid, self.fetch_ste(mem, sid, false).map(|(s, _)| s)))
                .collect();
            let cds = self
                .watch_cds
                .iter()
                .map(|&(sid, ssid)| ((sid, ssid), self.cd_in_memory(mem, sid, ssid)))
                .collect();
            self.snapshots.push(SyncSnapshot {
                sync_index,
                cmd_seq: seq,
                stes,
                cds,
            });
        }
        if let Some(mut hook) = self.hook.take() {
            hook(&mut SyncView {
                sync_index,
                cmd_seq: seq,
                st: self,
                mem,
            });
            self.hook = Some(hook);
        }
    }

    // ---- configuration ------------------------------------------------------

    /// Locates and reads the STE for `sid` in memory (5.1, 6.3.24). With
    /// `use_l1_cache`, a cached L1STD is used. Returns the L1STD read from
    /// memory, if one was, for the caller to cache.
    fn fetch_ste(
        &self,
        mem: &PhysMem,
        sid: u32,
        use_l1_cache: bool,
    ) -> Result<(Ste, Option<(u32, L1Std)>), CfgErr> {
        let sidsize = self.f.sidsize as u32;
        if sidsize < 32 && sid >> sidsize != 0 {
            return Err(CfgErr::new(evt::C_BAD_STREAMID));
        }
        let cfg = self.r.strtab_base_cfg as u64;
        let log2size = (bits(cfg, 5, 0) as u32).min(sidsize);
        if log2size < 32 && sid >> log2size != 0 {
            return Err(CfgErr::new(evt::C_BAD_STREAMID));
        }
        let base = self.r.strtab_base & reg::STRTAB_BASE_ADDR_MASK;
        let mut fetched_l1 = None;
        let addr = match bits(cfg, 17, 16) {
            0 => base + 64 * sid as u64,
            1 if self.f.two_level_strtab => {
                let split = self.split();
                let l1i = sid >> split;
                let l1 = match self.l1std_cache.get(&l1i).filter(|_| use_l1_cache) {
                    Some(l1) => *l1,
                    None => {
                        let a = base + 8 * l1i as u64;
                        let raw = mem.read_u64(a).ok_or(CfgErr::fetch(evt::F_STE_FETCH, a))?;
                        let l1 = L1Std::decode(raw);
                        fetched_l1 = Some((l1i, l1));
                        l1
                    }
                };
                // 5.1: Span 0 = invalid; the L2 table holds 2^(Span-1) STEs.
                if l1.span == 0 || l1.span as u32 > split + 1 {
                    return Err(CfgErr::new(evt::C_BAD_STREAMID));
                }
                let l2i = sid & ((1u32 << split) - 1);
                if l2i >> (l1.span - 1) != 0 {
                    return Err(CfgErr::new(evt::C_BAD_STREAMID));
                }
                l1.l2ptr + 64 * l2i as u64
            }
            _ => return Err(CfgErr::new(evt::C_BAD_STREAMID)),
        };
        let raw = mem
            .read_words::<8>(addr)
            .ok_or(CfgErr::fetch(evt::F_STE_FETCH, addr))?;
        Ok((Ste::decode(raw), fetched_l1))
    }

    fn get_ste(&mut self, mem: &PhysMem, sid: u32, cm: CacheMode) -> Result<Ste, CfgErr> {
        if cm.use_ {
            if let Some(s) = self.ste_cache.get(&sid) {
                return Ok(*s);
            }
        }
        self.counters.ste_fetches += 1;
        let r = self.fetch_ste(mem, sid, cm.use_);
        if cm.fill {
            let l1 = match &r {
                Ok((_, l1)) => *l1,
                Err(_) => None,
            };
            if let Some((i, l1)) = l1 {
                if l1.span != 0 || self.o.negative_config_caching {
                    self.l1std_cache.insert(i, l1);
                }
            }
            // An invalid L1STD is also cached negatively.
            if r.is_err() && self.o.negative_config_caching {
                if let Ok((_, Some((i, l1)))) = self.fetch_ste(mem, sid, false) {
                    self.l1std_cache.insert(i, l1);
                }
            }
            if let Ok((ste, _)) = &r {
                if self.o.negative_config_caching || self.check_ste(ste).is_ok() {
                    self.ste_cache.insert(sid, *ste);
                }
            }
        }
        r.map(|(s, _)| s)
    }

    /// 5.2: the STE conditions that make it ILLEGAL (C_BAD_STE).
    fn check_ste(&self, ste: &Ste) -> Result<(), CfgErr> {
        let bad = Err(CfgErr::new(evt::C_BAD_STE));
        if !ste.valid {
            return bad;
        }
        match ste.config {
            SteConfig::Abort | SteConfig::Bypass => Ok(()),
            SteConfig::Reserved(_) | SteConfig::S2Trans | SteConfig::Nested => bad,
            SteConfig::S1Trans => {
                if ste.s1cdmax > self.f.ssidsize {
                    return bad;
                }
                if ste.s1cdmax != 0 {
                    if ste.s1fmt == 3 || (ste.s1fmt != 0 && !self.f.cd2l) {
                        return bad;
                    }
                    if ste.s1dss == 3 {
                        return bad;
                    }
                }
                // No stall model (IDR0.STALL_MODEL = 0b01): QEMU rejects
                // S1STALLD = 1 as C_BAD_STE.
                if ste.s1stalld {
                    return bad;
                }
                // STRW: only NS-EL1 (0b00), or EL2 (0b10) with HYP.
                if ste.strw == 0b01 || ste.strw == 0b11 || (ste.strw == 0b10 && !self.f.hyp) {
                    return bad;
                }
                if ste.s1_context_ptr >> self.f.oas_bits != 0 {
                    return bad;
                }
                Ok(())
            }
        }
    }

    /// Which CD (index into the CD table) a transaction uses (5.2 S1DSS,
    /// S1CDMax). `Ok(None)`: S1DSS bypass.
    fn cd_index(ste: &Ste, ssid: Option<u32>) -> Result<Option<u32>, CfgErr> {
        if ste.s1cdmax == 0 {
            return match ssid {
                Some(_) => Err(CfgErr::new(evt::C_BAD_SUBSTREAMID)),
                None => Ok(Some(0)),
            };
        }
        match ssid {
            None => match ste.s1dss {
                s1dss::TERMINATE => Err(CfgErr::new(evt::F_STREAM_DISABLED)),
                s1dss::BYPASS => Ok(None),
                _ => Ok(Some(0)),
            },
            Some(s) => {
                if s >> ste.s1cdmax != 0 || (ste.s1dss == s1dss::SSID0 && s == 0) {
                    Err(CfgErr::new(evt::C_BAD_SUBSTREAMID))
                } else {
                    Ok(Some(s))
                }
            }
        }
    }

    /// Reads CD `index` of the STE's CD table (5.3, 5.4).
    fn fetch_cd(
        &self,
        mem: &PhysMem,
        sid: u32,
        ste: &Ste,
        index: u32,
        use_l1_cache: bool,
    ) -> Result<(Cd, Option<(u32, L1Cd)>), CfgErr> {
        let ptr = ste.s1_context_ptr;
        let mut fetched = None;
        let addr = if ste.s1cdmax == 0 || ste.s1fmt == 0 {
            ptr + 64 * index as u64
        } else {
            // S1Fmt 0b01: 4 KB leaf tables (64 CDs), 0b10: 64 KB (1024 CDs).
            let split = if ste.s1fmt == 1 { 6 } else { 10 };
            let l1i = index >> split;
            let l1 = match self.l1cd_cache.get(&(sid, l1i)).filter(|_| use_l1_cache) {
                Some(l1) => *l1,
                None => {
                    let a = ptr + 8 * l1i as u64;
                    let raw = mem.read_u64(a).ok_or(CfgErr::fetch(evt::F_CD_FETCH, a))?;
                    let l1 = L1Cd::decode(raw);
                    fetched = Some((l1i, l1));
                    l1
                }
            };
            if !l1.valid {
                return Err(CfgErr::new(evt::C_BAD_SUBSTREAMID));
            }
            l1.l2ptr + 64 * (index & ((1 << split) - 1)) as u64
        };
        let raw = mem
            .read_words::<8>(addr)
            .ok_or(CfgErr::fetch(evt::F_CD_FETCH, addr))?;
        Ok((Cd::decode(raw), fetched))
    }

    fn get_cd(
        &mut self,
        mem: &PhysMem,
        sid: u32,
        ste: &Ste,
        index: u32,
        cm: CacheMode,
    ) -> Result<Cd, CfgErr> {
        if cm.use_ {
            if let Some(cd) = self.cd_cache.get(&(sid, index)) {
                return Ok(*cd);
            }
        }
        self.counters.cd_fetches += 1;
        let r = self.fetch_cd(mem, sid, ste, index, cm.use_);
        if cm.fill {
            if let Ok((cd, l1)) = &r {
                if let Some((i, l1)) = l1 {
                    self.l1cd_cache.insert((sid, *i), *l1);
                }
                if self.o.negative_config_caching || self.check_cd(cd).is_ok() {
                    self.cd_cache.insert((sid, index), *cd);
                }
            }
        }
        r.map(|(c, _)| c)
    }

    fn cd_in_memory(&self, mem: &PhysMem, sid: u32, ssid: Option<u32>) -> Result<Cd, CfgErr> {
        let (ste, _) = self.fetch_ste(mem, sid, false)?;
        self.check_ste(&ste)?;
        if ste.config != SteConfig::S1Trans {
            return Err(CfgErr::new(evt::C_BAD_STE));
        }
        let index = Self::cd_index(&ste, ssid)?.ok_or(CfgErr::new(evt::C_BAD_SUBSTREAMID))?;
        self.fetch_cd(mem, sid, &ste, index, false).map(|(c, _)| c)
    }

    /// 5.4: the CD conditions that make it ILLEGAL (C_BAD_CD).
    fn check_cd(&self, cd: &Cd) -> Result<(), CfgErr> {
        let bad = Err(CfgErr::new(evt::C_BAD_CD));
        if !cd.valid || !cd.aa64 || cd.endi {
            // TTF = AArch64 only; TTENDIAN = little-endian only.
            return bad;
        }
        if !self.f.asid16 && cd.asid >> 8 != 0 {
            return bad;
        }
        if !cd.epd0 {
            match cd.tg0_bits() {
                Some(g) if self.f.granule_ok(g) => {}
                _ => return bad,
            }
            if !(16..=39).contains(&cd.t0sz) {
                return bad;
            }
        }
        if !cd.epd1 {
            match cd.tg1_bits() {
                Some(g) if self.f.granule_ok(g) => {}
                _ => return bad,
            }
            if !(16..=39).contains(&cd.t1sz) {
                return bad;
            }
        }
        Ok(())
    }

    // ---- translation --------------------------------------------------------

    fn fault_event(&mut self, mem: &PhysMem, ev: Event, record: bool, raz_wi: bool) -> Fault {
        self.counters.events_generated += 1;
        let recorded = record && self.write_event(mem, ev);
        if !recorded {
            self.counters.events_not_recorded += 1;
        }
        self.events.push((ev, recorded));
        Fault::Event {
            event: ev,
            recorded,
            raz_wi,
        }
    }

    /// Appends a record to the event queue (3.5, 7.2).
    fn write_event(&mut self, mem: &PhysMem, ev: Event) -> bool {
        if self.r.cr0ack & reg::CR0_EVENTQEN == 0 {
            return false;
        }
        let l2 = self.r.eventq.log2size(self.f.eventqs);
        let q = self.r.eventq;
        if q_full(q.prod, q.cons, l2) {
            // 7.4: the record is lost and, unless an overflow is already
            // signalled (OVFLG != OVACKFLG), PROD.OVFLG toggles.
            let ack = q.cons & reg::EVENTQ_CONS_OVACKFLG != 0;
            if self.r.eventq_ovflg == ack {
                self.r.eventq_ovflg = !ack;
            }
            self.counters.eventq_overflows += 1;
            return false;
        }
        let idx = q.prod & ((1 << l2) - 1);
        if mem
            .write_words(q.addr() + 32 * idx as u64, &ev.encode())
            .is_none()
        {
            self.raise_gerror(reg::GERROR_EVENTQ_ABT_ERR);
            return false;
        }
        self.r.eventq.prod = q_inc(q.prod, l2);
        self.counters.events_written += 1;
        if self.r.irq_ctrl & reg::IRQ_CTRL_EVENTQ_IRQEN != 0 {
            self.counters.eventq_irqs += 1;
        }
        true
    }

    fn translate(
        &mut self,
        mem: &PhysMem,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        acc: Access,
        o: TOpts,
    ) -> Result<Translation, Fault> {
        self.counters.translations += 1;
        let bypass = Ok(Translation {
            paddr: iova,
            bypass: true,
            tlb_hit: false,
            asid: None,
            page_size: 4096,
            mair_attr: 0,
            sh: 0,
        });
        if self.r.cr0ack & reg::CR0_SMMUEN == 0 {
            // 6.3.14: with the SMMU disabled, GBPA decides.
            return if self.r.gbpa & reg::GBPA_ABORT != 0 {
                Err(Fault::Abort)
            } else {
                bypass
            };
        }
        let base_ev = Event {
            sid,
            ssid,
            ..Event::default()
        };
        let cfg_fault = |s: &mut Self, e: CfgErr| {
            let ev = Event {
                code: e.code,
                fetch_addr: e.fetch_addr,
                ..base_ev
            };
            Err(s.fault_event(mem, ev, o.record, false))
        };
        let ste = match self.get_ste(mem, sid, o.cache) {
            Ok(s) => s,
            Err(e) => return cfg_fault(self, e),
        };
        if let Err(e) = self.check_ste(&ste) {
            return cfg_fault(self, e);
        }
        match ste.config {
            SteConfig::Abort => return Err(Fault::Abort),
            SteConfig::Bypass => return bypass,
            _ => {}
        }
        let index = match Self::cd_index(&ste, ssid) {
            Ok(Some(i)) => i,
            Ok(None) => return bypass,
            Err(e) => return cfg_fault(self, e),
        };
        let cd = match self.get_cd(mem, sid, &ste, index, o.cache) {
            Ok(cd) => cd,
            Err(e) => return cfg_fault(self, e),
        };
        if let Err(e) = self.check_cd(&cd) {
            return cfg_fault(self, e);
        }
        // STE.PRIVCFG / INSTCFG override the incoming attributes (5.2).
        let mut acc = acc;
        match ste.privcfg {
            0b10 => acc.privileged = false,
            0b11 => acc.privileged = true,
            _ => {}
        }
        match (ste.instcfg, acc.kind) {
            (0b10, AccessKind::Exec) => acc.kind = AccessKind::Read,
            (0b11, AccessKind::Read) => acc.kind = AccessKind::Exec,
            _ => {}
        }
        let txn_ev = |code: u8| Event {
            code,
            pnu: acc.privileged,
            ind: acc.kind == AccessKind::Exec,
            rnw: acc.kind != AccessKind::Write,
            class: class::IN,
            addr: iova,
            ..base_ev
        };
        let asid = if self.f.asid16 {
            cd.asid
        } else {
            cd.asid & 0xFF
        };
        let walk = self.lookup_or_walk(mem, &cd, asid, iova, o.cache);
        let entry = match walk {
            Ok((e, hit)) => (e, hit),
            Err(WalkErr { code, fetch_addr }) => {
                let ev = Event {
                    fetch_addr,
                    ..txn_ev(code)
                };
                // QEMU and 5.4 (CD.R): translation-class faults are only
                // recorded when CD.R = 1; F_WALK_EABT is always recorded.
                let rec = o.record && (cd.r || code == evt::F_WALK_EABT);
                return Err(self.fault_event(mem, ev, rec, !cd.a));
            }
        };
        let (e, hit) = entry;
        if !permitted(&e, &cd, acc) {
            let rec = o.record && cd.r;
            return Err(self.fault_event(mem, txn_ev(evt::F_PERMISSION), rec, !cd.a));
        }
        if hit {
            self.counters.tlb_hits += 1;
        }
        let off = (iova & VA_KEY_MASK) - e.va;
        Ok(Translation {
            paddr: e.pa + off,
            bypass: false,
            tlb_hit: hit,
            asid: Some(asid),
            page_size: 1 << e.size_log2,
            mair_attr: (cd.mair >> (8 * bits(e.desc, 4, 2))) as u8,
            sh: bits(e.desc, 9, 8) as u8,
        })
    }

    /// TLB lookup, else a stage-1 walk (VMSAv8-64, D5.2 of the Arm ARM)
    /// through the walk cache; fills the caches per `cm`.
    fn lookup_or_walk(
        &mut self,
        mem: &PhysMem,
        cd: &Cd,
        asid: u16,
        iova: u64,
        cm: CacheMode,
    ) -> Result<(TlbEntry, bool), WalkErr> {
        // The level is not part of SMMUv3 event records.
        let tf = |_level: u32| WalkErr {
            code: evt::F_TRANSLATION,
            fetch_addr: 0,
        };
        // Select TTB0/TTB1 by VA[55]; bits above the region must all equal
        // it (from bit 55 with TBI, else from bit 63).
        let upper = bit(iova, 55);
        let (tsz, g, epd, ttb, tbi, had) = if upper {
            (
                cd.t1sz,
                cd.tg1_bits(),
                cd.epd1,
                cd.ttb1,
                cd.tbi & 2 != 0,
                cd.had1,
            )
        } else {
            (
                cd.t0sz,
                cd.tg0_bits(),
                cd.epd0,
                cd.ttb0,
                cd.tbi & 1 != 0,
                cd.had0,
            )
        };
        if epd {
            return Err(tf(0));
        }
        let g = g.ok_or(tf(0))?;
        let va_bits = 64 - tsz as u32;
        let top = if tbi { 55 } else { 63 };
        let hi = bits(iova, top, va_bits);
        let want = if upper {
            u64::MAX >> (63 - (top - va_bits))
        } else {
            0
        };
        if hi != want {
            return Err(tf(0));
        }
        let key_va = iova & VA_KEY_MASK;
        // TLB: the page size and the block sizes of this granule.
        if cm.use_ {
            for level in 1..=3 {
                let s = level_shift(g, level);
                let va = key_va & !((1u64 << s) - 1);
                for tag in [asid as u32, GLOBAL_TAG] {
                    if let Some(e) = self.tlb.get(&(tag, va, s)) {
                        if e.granule == g {
                            return Ok((*e, true));
                        }
                    }
                }
            }
        }
        self.counters.walks += 1;
        let pa_bits = spec::pa_bits(bits(cd.ips as u64, 2, 0) as u8).min(self.f.oas_bits);
        let va = iova & ((1u64 << va_bits) - 1);
        let levels = (va_bits - g).div_ceil(g - 3);
        let start = 4 - levels;
        let mut level = start;
        let mut table = ttb;
        let mut attrs = TableAttrs::default();
        if table >> pa_bits != 0 {
            return Err(WalkErr {
                code: evt::F_ADDR_SIZE,
                fetch_addr: 0,
            });
        }
        if cm.use_ && self.o.walk_cache {
            for l in (start + 1..=3).rev() {
                let k = (asid, g, l, key_va >> level_shift(g, l - 1));
                if let Some(w) = self.walk.get(&k) {
                    level = l;
                    table = w.table;
                    attrs = w.attrs;
                    break;
                }
            }
        }
        let oa_mask = |s: u32| 0x0000_FFFF_FFFF_FFFFu64 & !((1u64 << s) - 1);
        loop {
            let s = level_shift(g, level);
            let idx_bits = if level == start { va_bits - s } else { g - 3 };
            let idx = (va >> s) & ((1u64 << idx_bits) - 1);
            let daddr = table + 8 * idx;
            let desc = mem.read_u64(daddr).ok_or(WalkErr {
                code: evt::F_WALK_EABT,
                fetch_addr: daddr,
            })?;
            if desc & 1 == 0 {
                return Err(tf(level));
            }
            if level < 3 && desc & 2 != 0 {
                let next = desc & oa_mask(g);
                // Output bits above the PA size, or in [51:48], are an
                // address size fault.
                if (desc & 0x000F_FFFF_FFFF_F000) >> pa_bits != 0 {
                    return Err(WalkErr {
                        code: evt::F_ADDR_SIZE,
                        fetch_addr: 0,
                    });
                }
                if !had {
                    attrs.ap |= bits(desc, 62, 61) as u8;
                    attrs.uxn |= bit(desc, 60);
                    attrs.pxn |= bit(desc, 59);
                }
                if cm.fill && self.o.walk_cache {
                    let k = (asid, g, level + 1, key_va >> s);
                    self.walk.insert(k, WalkEntry { table: next, attrs });
                }
                table = next;
                level += 1;
                continue;
            }
            // Block (levels 1-2) or page (level 3).
            let block_ok = match (g, level) {
                (_, 3) => desc & 2 != 0,
                (12, 1) | (12, 2) | (14, 2) | (16, 2) => true,
                _ => false,
            };
            if !block_ok {
                return Err(tf(level));
            }
            if (desc & 0x000F_FFFF_FFFF_F000) >> pa_bits != 0 {
                return Err(WalkErr {
                    code: evt::F_ADDR_SIZE,
                    fetch_addr: 0,
                });
            }
            // Access flag (D5.4.12): AF = 0 faults unless CD.AFFD; the model
            // has no HTTU, so CD.HA does not set it.
            if !bit(desc, 10) && !cd.affd {
                return Err(WalkErr {
                    code: evt::F_ACCESS,
                    fetch_addr: 0,
                });
            }
            let e = TlbEntry {
                tag: if bit(desc, 11) {
                    asid as u32
                } else {
                    GLOBAL_TAG
                },
                va: key_va & !((1u64 << s) - 1),
                size_log2: s,
                level,
                granule: g,
                pa: desc & oa_mask(s),
                desc,
                table: attrs,
            };
            if cm.fill {
                self.tlb.insert((e.tag, e.va, e.size_log2), e);
            }
            return Ok((e, false));
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct WalkErr {
    code: u8,
    fetch_addr: u64,
}

/// Stage-1 permission check (AArch64 AP`[2:1]`, UXN/PXN, hierarchical
/// APTable/XNTable, WXN, PAN; D5.4 of the Arm ARM).
fn permitted(e: &TlbEntry, cd: &Cd, acc: Access) -> bool {
    let ap = bits(e.desc, 7, 6) as u8;
    let el0 = ap & 1 != 0 && e.table.ap & 1 == 0;
    let ro = ap & 2 != 0 || e.table.ap & 2 != 0;
    let uxn = bit(e.desc, 54) || e.table.uxn;
    let pxn = bit(e.desc, 53) || e.table.pxn;
    if !acc.privileged && !el0 {
        return false;
    }
    if acc.privileged && cd.pan && el0 && acc.kind != AccessKind::Exec {
        return false;
    }
    match acc.kind {
        AccessKind::Read => true,
        AccessKind::Write => !ro,
        AccessKind::Exec => {
            let writable = !ro;
            if cd.wxn && writable {
                false
            } else if acc.privileged {
                // A region writable at EL0 is never executable at EL1.
                !(pxn || el0 && writable)
            } else {
                !uxn
            }
        }
    }
}
