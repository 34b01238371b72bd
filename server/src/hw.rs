//! Register-level operations: bounded polling, CR0/GBPA/IRQ_CTRL updates,
//! the command queue (3.5, 4.x) and its error recovery (7.1).

use embedded_hal::delay::DelayNs;

use crate::barrier;
use crate::cmd::Command;
use crate::dma;
use crate::error::{CmdqErrorCode, Error, HardwareError, Result, WaitFor};
use crate::hal::{CacheMaintenance, DmaBlock, Mmio, NoCache};
use crate::queue::QueueGeom;
use crate::regs::{self, gbpa, gerror, qptr};
use crate::stats::Stats;

/// Commands gathered before the producer index is written once.
pub const CMD_BATCH: usize = 64;

/// A batch of commands issued with one doorbell (plus as many as queue
/// space forces). Fixed capacity; no allocation.
pub type CmdBatch = heapless::Vec<Command, CMD_BATCH>;

/// Active global errors found by [`Hw::handle_gerror`] (raw GERROR bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GerrorReport {
    /// GERROR ^ GERRORN before acknowledging (6.3.18 bit layout).
    pub active: u32,
    /// A rejected command that was skipped, if any.
    pub command_error: Option<HardwareError>,
}

/// The command queue's driver-side state.
#[derive(Debug)]
pub struct Cmdq {
    pub block: DmaBlock,
    pub geom: QueueGeom,
    /// Our producer pointer (index + wrap), as last written to CMDQ_PROD.
    pub prod: u32,
    /// Last CMDQ_CONS pointer read (index + wrap).
    pub cons: u32,
    /// A command error seen while waiting, reported at the end of the wait
    /// of the batch that holds the rejected command: with its queue
    /// pointer (index + wrap).
    pub pending_error: Option<(HardwareError, u32)>,
}

/// The register file, the time source and the command queue together.
pub struct Hw<M, D, C = NoCache> {
    pub mmio: M,
    pub delay: D,
    pub poll_timeout_us: u32,
    pub cmdq: Cmdq,
    pub stats: Stats,
    /// For an SMMU that does not snoop the CPU's caches: every command is
    /// cleaned to memory before the doorbell.
    pub cache: Option<C>,
}

/// Polls `cond` until true, at most `timeout_us` microseconds (1 µs steps).
pub fn poll<M: Mmio, D: DelayNs>(
    mmio: &M,
    delay: &mut D,
    timeout_us: u32,
    what: WaitFor,
    mut cond: impl FnMut(&M) -> bool,
) -> Result<()> {
    let mut waited = 0u32;
    loop {
        if cond(mmio) {
            return Ok(());
        }
        if waited >= timeout_us {
            return Err(Error::Timeout(what));
        }
        delay.delay_us(1);
        waited += 1;
    }
}

impl<M: Mmio, D: DelayNs, C: CacheMaintenance> Hw<M, D, C> {
    /// Writes CR0 and waits for CR0ACK to match (6.3.9/6.3.10).
    pub fn write_cr0(&mut self, val: u32) -> Result<()> {
        self.mmio.write32(regs::CR0, val);
        poll(
            &self.mmio,
            &mut self.delay,
            self.poll_timeout_us,
            WaitFor::Cr0Ack,
            |m| m.read32(regs::CR0ACK) == val,
        )
    }

    /// Writes IRQ_CTRL and waits for IRQ_CTRLACK (6.3.16/6.3.17).
    pub fn write_irq_ctrl(&mut self, val: u32) -> Result<()> {
        self.mmio.write32(regs::IRQ_CTRL, val);
        poll(
            &self.mmio,
            &mut self.delay,
            self.poll_timeout_us,
            WaitFor::IrqCtrlAck,
            |m| m.read32(regs::IRQ_CTRLACK) == val,
        )
    }

    /// Updates GBPA: wait for Update = 0, write `set` with Update = 1, wait
    /// for Update = 0 again (6.3.14; Linux `arm_smmu_update_gbpa`).
    pub fn update_gbpa(&mut self, set: u32, clr: u32) -> Result<()> {
        let t = self.poll_timeout_us;
        poll(&self.mmio, &mut self.delay, t, WaitFor::GbpaUpdate, |m| {
            m.read32(regs::GBPA) & gbpa::UPDATE == 0
        })?;
        let v = (self.mmio.read32(regs::GBPA) & !clr) | set;
        self.mmio.write32(regs::GBPA, v | gbpa::UPDATE);
        poll(&self.mmio, &mut self.delay, t, WaitFor::GbpaUpdate, |m| {
            m.read32(regs::GBPA) & gbpa::UPDATE == 0
        })
    }

    fn count(&mut self, c: &Command) {
        let op = (c.opcode() as usize).min(127);
        self.stats.commands[op] += 1;
        if c.is_tlbi() {
            self.stats.tlbis += 1;
        }
        if c.is_cfgi() {
            self.stats.cfgis += 1;
        }
        if matches!(c, Command::Sync) {
            self.stats.syncs += 1;
        }
    }

    fn read_cons(&mut self) -> u32 {
        let raw = self.mmio.read32(regs::CMDQ_CONS);
        self.cmdq.cons = raw & self.cmdq.geom.ptr_mask();
        raw
    }

    /// Cleans command-queue entry `idx` for a non-coherent SMMU.
    fn clean_entry(&self, idx: usize) {
        if let Some(c) = &self.cache {
            // The entry lies in the queue's block (idx < entries).
            c.clean(self.cmdq.block.vaddr.wrapping_add(idx * 16), 16);
        }
    }

    fn publish(&mut self) {
        barrier::wmb();
        self.mmio.write32(regs::CMDQ_PROD, self.cmdq.prod);
        self.stats.doorbells += 1;
    }

    /// Acknowledges every active global error (GERROR ^ GERRORN, 6.3.18);
    /// a command-queue error also skips the failed command (7.1).
    pub fn handle_gerror(&mut self) -> GerrorReport {
        let mut report = GerrorReport::default();
        if self.handle_cmdq_error() {
            report.active |= gerror::CMDQ_ERR;
        }
        report.command_error = self.cmdq.pending_error.take().map(|(e, _)| e);
        let g = self.mmio.read32(regs::GERROR);
        let gn = self.mmio.read32(regs::GERRORN);
        let active = (g ^ gn) & gerror::ALL & !gerror::CMDQ_ERR;
        for bit in 1..9 {
            if active & (1 << bit) != 0 {
                self.stats.gerrors[bit] += 1;
            }
        }
        if active != 0 {
            self.mmio.write32(regs::GERRORN, gn ^ active);
        }
        report.active |= active;
        report
    }

    /// Stops translation for good: GBPA aborts incoming traffic (so nothing
    /// bypasses once SMMUEN is clear), then SMMUEN and the interrupts off.
    pub fn disable(&mut self) -> Result<()> {
        self.update_gbpa(gbpa::ABORT, 0)?;
        self.write_cr0(0)?;
        self.write_irq_ctrl(0)
    }

    /// Checks GERROR.CMDQ_ERR and, if active, skips the failed command: reads
    /// CMDQ_CONS.ERR, overwrites the entry at CONS with a CMD_SYNC and
    /// acknowledges by toggling GERRORN.CMDQ_ERR (7.1; Linux
    /// `arm_smmu_cmdq_skip_err`). Records the error for the waiter.
    /// Returns whether an error was handled.
    pub fn handle_cmdq_error(&mut self) -> bool {
        let g = self.mmio.read32(regs::GERROR);
        let gn = self.mmio.read32(regs::GERRORN);
        if (g ^ gn) & gerror::CMDQ_ERR == 0 {
            return false;
        }
        let cons = self.read_cons();
        let code = CmdqErrorCode::from_raw(
            ((cons >> qptr::CMDQ_CONS_ERR_SHIFT) & qptr::CMDQ_CONS_ERR_MASK) as u8,
        );
        let idx = self.cmdq.geom.idx(cons) as usize;
        let opcode = dma::read_u64(&self.cmdq.block, idx * 2) as u8;
        match code {
            // CERROR_ABT: the fetch is retried; CERROR_ATC_INV_SYNC: CONS
            // still points at the CMD_SYNC, which is re-run. Nothing to patch.
            CmdqErrorCode::Abort | CmdqErrorCode::AtcInvSync | CmdqErrorCode::None => {}
            CmdqErrorCode::Illegal | CmdqErrorCode::Other(_) => {
                let sync = Command::Sync.encode();
                dma::write_u64(&self.cmdq.block, idx * 2, sync[0]);
                dma::write_u64(&self.cmdq.block, idx * 2 + 1, sync[1]);
                self.clean_entry(idx);
            }
        }
        barrier::wmb();
        // Acknowledge only CMDQ_ERR: toggle that bit of GERRORN.
        self.mmio.write32(regs::GERRORN, gn ^ gerror::CMDQ_ERR);
        self.stats.cmdq_errors += 1;
        self.stats.gerrors[0] += 1;
        if code != CmdqErrorCode::None {
            let at = cons & self.cmdq.geom.ptr_mask();
            self.cmdq.pending_error = Some((HardwareError::CommandError { code, opcode }, at));
        }
        true
    }

    /// Waits until `cond(free entries, cons == prod)` holds, handling
    /// command errors on the way.
    fn wait_cons(&mut self, what: WaitFor, need_free: u32) -> Result<()> {
        let mut waited = 0u32;
        loop {
            self.read_cons();
            let (p, c) = (self.cmdq.prod, self.cmdq.cons);
            let ok = if need_free == 0 {
                self.cmdq.geom.empty(p, c)
            } else {
                self.cmdq.geom.free(p, c) >= need_free
            };
            if ok {
                return Ok(());
            }
            // A handled error lets the queue move on at once; it still counts
            // against the bound (an SMMU that keeps failing cannot hang us).
            let handled = self.handle_cmdq_error();
            if waited >= self.poll_timeout_us {
                return Err(Error::Timeout(what));
            }
            if !handled {
                self.delay.delay_us(1);
            }
            waited += 1;
        }
    }

    /// Writes `cmds` to the command queue, ringing the doorbell once (more
    /// often only when the queue is full), and with `sync` appends a
    /// `CMD_SYNC` and waits for it to complete by polling CMDQ_CONS.
    ///
    /// Errors: [`Error::Timeout`] (`CmdqSpace` when the queue stays full,
    /// `CmdSync` when the SMMU does not consume), or
    /// [`HardwareError::CommandError`] when a command was rejected during the
    /// wait (it was skipped; later commands did run).
    pub fn submit(&mut self, cmds: &[Command], sync: bool) -> Result<()> {
        // A rejection seen from here on is this batch's only if the rejected
        // command is one of its own: an earlier batch that timed out may
        // still be running, and its errors are not this one's (that batch
        // already failed).
        let start = self.cmdq.prod;
        let waited = self.write_and_wait(cmds, sync);
        let geom = self.cmdq.geom;
        let own = |at: u32| geom.used(at, start) < geom.used(self.cmdq.prod, start);
        match (waited, self.cmdq.pending_error.take()) {
            (Err(e), _) => Err(e),
            (Ok(()), Some((e, at))) if own(at) => Err(Error::Hardware(e)),
            (Ok(()), _) => Ok(()),
        }
    }

    fn write_and_wait(&mut self, cmds: &[Command], sync: bool) -> Result<()> {
        let mut unpublished = 0u32;
        let total = cmds.len() + sync as usize;
        for i in 0..total {
            let c = if i < cmds.len() {
                cmds[i]
            } else {
                Command::Sync
            };
            if self.cmdq.geom.free(self.cmdq.prod, self.cmdq.cons) == 0 {
                self.read_cons();
                if self.cmdq.geom.free(self.cmdq.prod, self.cmdq.cons) == 0 {
                    if unpublished > 0 {
                        self.publish();
                        unpublished = 0;
                    }
                    self.wait_cons(WaitFor::CmdqSpace, 1)?;
                }
            }
            let idx = self.cmdq.geom.idx(self.cmdq.prod) as usize;
            let words = c.encode();
            dma::write_u64(&self.cmdq.block, idx * 2, words[0]);
            dma::write_u64(&self.cmdq.block, idx * 2 + 1, words[1]);
            self.clean_entry(idx);
            self.cmdq.prod = self.cmdq.geom.inc(self.cmdq.prod);
            self.count(&c);
            unpublished += 1;
        }
        if unpublished > 0 {
            self.publish();
        }
        if sync {
            self.wait_cons(WaitFor::CmdSync, 0)?;
        }
        Ok(())
    }

    /// `submit(&[cmd], true)`.
    pub fn issue_sync(&mut self, cmd: Command) -> Result<()> {
        self.submit(&[cmd], true)
    }
}
