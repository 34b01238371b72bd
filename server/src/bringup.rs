//! Bringing an SMMUv3 up and down: probe the ID registers, allocate the
//! queues and the stream table, run the enable sequence; and the reverse.
//! What comes out (`Parts`) is handed to the core ([`crate::shared`]),
//! which puts each piece behind its lock.

use embedded_hal::delay::DelayNs;

use crate::asid::AsidAllocator;
use crate::cmd::Command;
use crate::error::{Error, HardwareError, Result};
use crate::evtq::Evtq;
use crate::features::Features;
use crate::hal::{CacheMaintenance, DmaAllocator, Mmio};
use crate::hw::{Cmdq, Hw};
use crate::queue::QueueGeom;
use crate::regs::{self, cr0, cr1, cr2, gbpa, irq_ctrl, qbase};
use crate::stats::Stats;
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

fn ensure(cond: bool, what: &'static str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Hardware(HardwareError::MissingFeature(what)))
    }
}

/// An enabled SMMU without domains, in pieces.
pub(crate) struct Parts<M, A: DmaAllocator, D> {
    pub hw: Hw<M, D, A::Cache>,
    pub alloc: A,
    pub features: Features,
    pub config: Config,
    pub strtab: StreamTable,
    pub evtq: Evtq,
    pub asids: AsidAllocator,
    pub ssid_bits: u8,
}

impl<M: Mmio, A: DmaAllocator, D: DelayNs> Parts<M, A, D> {
    pub(crate) fn probe(mmio: M, mut alloc: A, delay: D, config: Config) -> Result<Self> {
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
        // An SMMU that does not snoop the CPU's caches reads tables and
        // queues from memory: every write it must see is cleaned there.
        let cache = if features.coherent {
            None
        } else {
            Some(
                alloc
                    .cache()
                    .ok_or(Error::Hardware(HardwareError::MissingFeature(
                        "cache maintenance of DMA memory (IDR0.COHACC = 0)",
                    )))?,
            )
        };
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
        if let Some(c) = &cache {
            // The linear table's abort STEs (a two-level one's descriptors
            // are still zero, as allocated).
            c.clean(strtab.block.vaddr, strtab.block.size);
        }
        let asid_limit = if config.max_asids == 0 {
            1u32 << features.asid_bits()
        } else {
            config.max_asids.min(1 << features.asid_bits())
        };
        let mut parts = Parts {
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
                cache,
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
            ssid_bits,
        };
        if let Err(e) = parts.reset() {
            // Off again before the queues and the stream table are freed.
            let _ = parts.release();
            return Err(e);
        }
        Ok(parts)
    }

    fn reset(&mut self) -> Result<()> {
        let hw = &mut self.hw;
        // Abort incoming traffic while the SMMU is disabled and reprogrammed.
        hw.update_gbpa(gbpa::ABORT, 0)?;
        hw.write_cr0(0)?;
        // 6.3.11 CR1: how the SMMU accesses tables and queues. A coherent
        // SMMU snoops the CPU's write-back, inner-shareable caches; one
        // that does not (COHACC = 0) reads memory the CPU cleaned, so its
        // accesses are non-cacheable, outer shareable.
        let (sh, cache) = if self.features.coherent {
            (cr1::SH_ISH, cr1::CACHE_WB)
        } else {
            (cr1::SH_OSH, cr1::CACHE_NC)
        };
        let c1 = (sh << cr1::TABLE_SH_SHIFT)
            | (cache << cr1::TABLE_OC_SHIFT)
            | (cache << cr1::TABLE_IC_SHIFT)
            | (sh << cr1::QUEUE_SH_SHIFT)
            | (cache << cr1::QUEUE_OC_SHIFT)
            | (cache << cr1::QUEUE_IC_SHIFT);
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

    /// Disables the SMMU (GBPA.ABORT, then CR0 = 0: all traffic aborts),
    /// frees the queues and the stream table (the core has freed every
    /// domain and CD table), and hands the hardware interfaces back. Frees
    /// the memory even if the SMMU does not acknowledge (it is disabled
    /// either way, or broken); the poll result is returned alongside.
    pub(crate) fn release(mut self) -> (M, A, D, Result<()>) {
        let r = self.hw.disable();
        self.strtab.free(&mut self.alloc);
        self.alloc.free(self.evtq.block);
        self.alloc.free(self.hw.cmdq.block);
        (self.hw.mmio, self.alloc, self.hw.delay, r)
    }
}
