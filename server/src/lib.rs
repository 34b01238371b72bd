//! The IOMMU server core.
//!
//! Everything that decides what the SMMUv3 is told lives here, as `no_std`
//! code that runs unchanged in the seL4 server process and in host tests
//! against the software SMMUv3 model (`tools/smmu-model`). Hardware is reached
//! only through the traits in [`hal`].
//!
//! # API (stable; see [`Smmu`])
//! ```text
//! Smmu::new(mmio, dma_alloc, delay, Config) -> Result<Smmu>   probe + enable
//! smmu.features() -> &Features
//! smmu.alloc_domain() -> Result<DomainId>
//! smmu.free_domain(DomainId) -> Result<()>                    Busy if attached
//! smmu.attach(sid, ssid, DomainId) -> Result<()>
//! smmu.detach(sid, ssid) -> Result<()>
//! smmu.map(DomainId, iova, paddr, len, Perms) -> Result<()>
//! smmu.unmap(DomainId, iova, len) -> Result<u64>              bytes unmapped
//! smmu.iova_to_phys(DomainId, iova) -> Option<(u64, Perms)>
//! smmu.domain_info(DomainId) -> Result<DomainInfo>            quota counters
//! smmu.drain_events(|Event| ..) -> DrainReport
//! smmu.handle_gerror() -> GerrorReport
//! smmu.stats() -> &Stats
//! ```
//! Module map: [`regs`] (register layout), [`features`] (ID registers),
//! [`hw`] (polling, command queue), [`cmd`] (command encodings), [`evtq`]
//! (event records), [`ste`], [`cd`], [`entry`] (hitless STE/CD updates),
//! [`strtab`], [`pgtable`], [`asid`], [`domain`], [`smmu`].
#![no_std]

pub mod asid;
pub mod barrier;
pub mod cd;
pub mod cmd;
pub mod dma;
pub mod dma_pool;
pub mod domain;
pub mod entry;
pub mod error;
pub mod evtq;
pub mod features;
pub mod hal;
pub mod handler;
pub mod hw;
pub mod pgtable;
pub mod policy;
pub mod queue;
pub mod regs;
pub mod smmu;
pub mod stats;
pub mod ste;
pub mod strtab;

pub use cmd::Command;
pub use domain::{DomainId, DomainInfo, MAX_DEVICES_PER_DOMAIN, MAX_DOMAINS};
pub use error::{CmdqErrorCode, Error, HardwareError, Result, WaitFor};
pub use evtq::{DrainReport, Event, EventKind, FaultInfo};
pub use features::Features;
pub use pgtable::Perms;
pub use smmu::{Config, GerrorReport, Smmu, MAX_MASTERS};
pub use stats::Stats;
