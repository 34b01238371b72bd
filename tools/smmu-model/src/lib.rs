//! Software SMMUv3 model: the host tests' oracle.
//!
//! Written from the SMMUv3 architecture (ARM IHI 0070) and the VMSAv8-64
//! translation table format, not from the server's encoders, so that the
//! server's tables and commands are checked by an independent reading of the
//! specification. It behaves like QEMU 7.2's SMMUv3 (DESIGN.md section 4)
//! where the architecture leaves room, and is stricter where a real SMMU may
//! be (negative caching, walk caches, TLBI hints).
//!
//! * [`PhysMem`]: the machine's RAM, a [`DmaAllocator`](iommu_server::hal::DmaAllocator)
//!   with injectable failures, plus client buffers and physical reads/writes.
//! * [`Smmu`]: the register file ([`Mmio`](iommu_server::hal::Mmio)), command
//!   queue, caches, walks, event queue; `translate`, `dma_read`/`dma_write`;
//!   counters, command log, sync-time snapshots of STEs and CDs.
//! * [`spec`]: layouts and decoders (registers, STE, CD, commands, events).
//!
//! # What is modelled
//!
//! * Registers: IDR0-5, IIDR, AIDR, CR0/CR0ACK (acknowledged at once), CR1,
//!   CR2, GBPA (Update handshake completes at once), IRQ_CTRL/ACK,
//!   GERROR/GERRORN, STRTAB_BASE/CFG, CMDQ_BASE/PROD/CONS, EVENTQ_BASE and
//!   EVENTQ_PROD/CONS (page 1, with QEMU's page-0 alias). Queue and table
//!   registers written while their unit is enabled are ignored and reported
//!   in [`Smmu::violations`].
//! * Command queue, consumed synchronously on CMDQ_PROD: PREFETCH_*,
//!   CFGI_STE/STE_RANGE/ALL/CD/CD_ALL (with Leaf), TLBI_NH_ALL/ASID/VA/VAA
//!   (range TLBI: NUM, SCALE, TG, TTL; Leaf), TLBI_NSNH_ALL, TLBI_EL2_* and
//!   stage-2 TLBIs (CERROR_ILL without HYP / S2P), CMD_SYNC (CS none / IRQ /
//!   SEV, MSI write when advertised). Unknown or malformed commands set
//!   CMDQ_CONS.ERR, toggle GERROR.CMDQ_ERR and stop the queue until GERRORN
//!   acknowledges; the entry at CONS is then re-executed.
//! * Caches: STEs, L1STDs, CDs, L1CDs (negative caching), TLB keyed by ASID
//!   (global entries match every ASID), walk cache of table descriptors.
//! * Walks: linear and 2-level stream tables; STE abort / bypass / stage-1
//!   with S1Fmt, S1CDMax, S1DSS, PRIVCFG, INSTCFG; linear and 2-level CD
//!   tables; CD checks; VMSAv8-64 stage 1 with 4K/16K/64K granules, blocks,
//!   AP/UXN/PXN, APTable/XNTable, WXN, PAN, AF (AFFD), TBI, IPS/OAS.
//! * Event queue: 32-byte records (7.3), translation-class faults only when
//!   CD.R = 1, overflow via EVENTQ_PROD.OVFLG, wrap.
//! * Coherency: IDR0.COHACC from [`Features::coherent`] (1 by default, as
//!   QEMU). A non-coherent SMMU makes [`PhysMem`] keep the CPU's view
//!   (behind `vaddr`, as if every line were cached) apart from memory at the
//!   point of coherency, which every SMMU access (stream and CD tables,
//!   walks, command queue, event records, CMD_SYNC MSIs) and every device
//!   DMA uses; [`PhysMem::clean`] and [`PhysMem::invalidate`] move 64-byte
//!   lines between them (see the [`mem`] module doc), so a driver that
//!   forgets cache maintenance reads or publishes stale data.
//!
//! Not modelled: stage 2 and nesting, ATS/PRI/stalls, HTTU (CD.HA/HD
//! ignored), 52-bit addresses, big-endian walks, AArch32 CDs, Secure/Realm
//! state, PRI queue, MSIs for the event queue and GERROR, the Contiguous
//! hint, F_TLB_CONFLICT, memory attributes (MAIR/SH are reported in
//! [`Translation`], not acted on) and per-access cacheability: CR1's queue
//! and table attributes and STE/CD MemAttr/ShCfg are ignored, a
//! non-coherent SMMU reads and writes the PoC whatever they say, and cache
//! lines are never evicted or fetched speculatively.
//!
//! ```
//! use smmu_model::{Machine, Features};
//! let m = Machine::new(Features::qemu_7_2());
//! use iommu_server::hal::Mmio;
//! assert_eq!(m.smmu.read32(0), 0x0d40101a);
//! ```

pub mod mem;
pub mod smmu;
pub mod spec;

pub use mem::{AllocStats, BlockKind, CacheStats, LiveBlock, MemConfig, PhysMem, CACHE_LINE};
pub use smmu::{
    Access, AccessKind, CdSnapshot, CfgErr, Counters, DmaFault, Fault, Features, LoggedCommand,
    ModelOptions, Smmu, SyncHook, SyncSnapshot, SyncView, TlbView, Translation,
};
pub use spec::{Cd, Command, Event, Ste, SteConfig};

/// RAM and an SMMU over it, with default sizes (64 MiB at 0x8000_0000).
#[derive(Clone, Debug)]
pub struct Machine {
    pub mem: PhysMem,
    pub smmu: Smmu,
}

impl Machine {
    pub fn new(features: Features) -> Self {
        Self::with(features, ModelOptions::default(), MemConfig::default())
    }
    pub fn with(features: Features, options: ModelOptions, mem: MemConfig) -> Self {
        let mem = PhysMem::new(mem);
        let smmu = Smmu::with_options(features, options, mem.clone());
        Machine { mem, smmu }
    }
}
