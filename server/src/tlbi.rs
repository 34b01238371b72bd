//! Invalidation of what an unmap removed: a page table's [`Gather`] turned
//! into TLBI commands (SMMUv3 4.4) and issued with a CMD_SYNC.

use embedded_hal::delay::DelayNs;

use crate::cmd::{Command, TlbiRange};
use crate::error::{Error, HardwareError, Result};
use crate::hal::{CacheMaintenance, Mmio};
use crate::hw::{CmdBatch, Hw};
use crate::pgtable::{Gather, GATHER_LEAVES};

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
pub(crate) fn flush_gather<M: Mmio, D: DelayNs, C: CacheMaintenance>(
    hw: &mut Hw<M, D, C>,
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
