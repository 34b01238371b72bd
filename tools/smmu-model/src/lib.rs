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
//! ```
//! use smmu_model::{Machine, Features};
//! let m = Machine::new(Features::qemu_7_2());
//! use iommu_server::hal::Mmio;
//! assert_eq!(m.smmu.read32(0), 0x0d40101a);
//! ```

pub mod mem;
pub mod smmu;
pub mod spec;

pub use mem::{AllocStats, BlockKind, LiveBlock, MemConfig, PhysMem};
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
