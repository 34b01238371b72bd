//! The IOMMU server core.
//!
//! Everything that decides what the SMMUv3 is told lives here, as `no_std`
//! code that runs unchanged in the seL4 server process and in host tests
//! against the software SMMUv3 model (`tools/smmu-model`). Hardware is reached
//! only through the traits in [`hal`].
//!
//! # API (see [`shared::SharedSmmu`]; [`Smmu`] is the same core for one thread)
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
//! smmu.reassign_asid(DomainId), alloc_sva_space, bind_sva, unbind_sva
//! smmu.drain_events(|Event| ..) -> DrainReport
//! smmu.handle_gerror() -> GerrorReport
//! smmu.stats() -> Stats
//! smmu.shutdown() -> (M, A, D, Result<()>)                   disable, free all
//! ```
//!
//! # Commands per operation (QEMU-like SMMU: RIL, no substreams)
//! | operation | commands |
//! |---|---|
//! | `new` | CFGI_ALL, SYNC, TLBI_NSNH_ALL, SYNC |
//! | `alloc_domain` | none (the ASID is assigned at the first attach) |
//! | `free_domain` | TLBI_NH_ASID, SYNC (if it had an ASID) |
//! | `attach`, first | 2 × (CFGI_STE, SYNC): unused qwords, then qword 0 |
//! | `attach`, move to another domain | CFGI_STE, SYNC (new CD table written offline, STE pointer flipped) |
//! | `attach` of another SSID (substreams) | 2 × (CFGI_CD, SYNC) (+ 2 × (CFGI_STE, SYNC) when SSID 0 changes S1DSS) |
//! | `detach`, last | 2 × (CFGI_STE, SYNC) (STE to abort, clean-up) |
//! | `map` | none |
//! | `unmap` | RIL: 1 range TLBI_NH_VA per 5 bits of the page count (usually 1), then SYNC; no RIL: 1 TLBI_NH_VA per removed leaf up to `Config::tlbi_threshold`, else TLBI_NH_ASID; then SYNC |
//!
//! Every command batch rings the doorbell (CMDQ_PROD) once.
//!
//! # Footprint
//! The core holds every table inline (no heap). On seL4, place it in a
//! `static` or give the server thread a stack that can hold it.
//!
//! Module map: [`regs`] (register layout), [`features`] (ID registers),
//! [`hw`] (polling, command queue), [`cmd`] (command encodings), [`evtq`]
//! (event records), [`ste`], [`cd`], [`entry`] (hitless STE/CD updates),
//! [`strtab`], [`pgtable`], [`tlbi`], [`asid`], [`domain`], [`bringup`]
//! (probe, enable, disable); [`sync`] (the lock hierarchy) and [`shared`]
//! (the core behind those locks: attach, map, ASID reassignment,
//! recycling, SVA spaces).
#![no_std]

// Host builds get `std` for `sync::StdLocks`; seL4 (target_os = "none") does not.
#[cfg(not(target_os = "none"))]
extern crate std;

pub mod asid;
pub mod barrier;
pub mod bringup;
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
pub mod shared;
pub mod stats;
pub mod ste;
pub mod strtab;
pub mod sync;
pub mod tlbi;

pub use bringup::{Config, MAX_MASTERS};
pub use cmd::Command;
pub use domain::{DomainId, DomainInfo, MAX_DEVICES_PER_DOMAIN};
pub use error::{CmdqErrorCode, Error, HardwareError, Result, WaitFor};
pub use evtq::{DrainReport, Event, EventKind, FaultInfo};
pub use features::Features;
pub use hw::GerrorReport;
pub use pgtable::Perms;
pub use stats::Stats;

/// The core for one thread: [`shared::SharedSmmu`] with spin locks that
/// are never contended. The same driver as the seL4 server's (there is no
/// other), for the host tests, the model proptests, the fuzzers and the
/// host bench.
pub type Smmu<M, A, D> = shared::SharedSmmu<M, A, D, sync::SpinLocks, { shared::DOMAIN_SLOTS }>;
