//! Hitless update of 64-byte configuration entries (STEs and CDs) by the
//! "used bits" algorithm of Linux's `arm_smmu_write_entry`, following the
//! architecture's rules for single-copy-atomic 64-bit updates of live
//! structures (3.21.3, 4.3 "Configuration structure invalidation").
//!
//! 1. Bits the current configuration does not use are written to their new
//!    values; sync.
//! 2. If exactly one qword has used bits that must change ("critical"), it is
//!    written in one 64-bit store; sync.
//! 3. The remaining bits are cleaned up; sync.
//!
//! When more than one qword is critical, the update breaks: qword 0 is
//! written as 0 (V = 0) first, then qwords 1..7, then qword 0.
//! "sync" = the entry's CFGI command + CMD_SYNC, issued only if a step
//! changed memory, and once when nothing did (the entry may be cached in an
//! older form after a write whose sync failed).

use crate::dma;
use crate::error::Result;
use crate::hal::DmaBlock;

/// Qwords per STE or CD.
pub const ENTRY_QWORDS: usize = 8;

/// A 64-byte entry as 8 qwords.
pub type Entry = [u64; ENTRY_QWORDS];

/// How a kind of entry reports the bits the SMMU reads in a given value.
pub trait UsedBits {
    /// The bits of `ent` the SMMU uses, given `ent`'s own V/Config fields.
    fn used(ent: &Entry) -> Entry;
}

/// Reads the entry at `slot` (a 64-byte block).
pub fn read_entry(slot: &DmaBlock) -> Entry {
    let mut e = [0u64; ENTRY_QWORDS];
    for (i, q) in e.iter_mut().enumerate() {
        *q = dma::read_u64(slot, i);
    }
    e
}

/// What kind of update [`write_entry`] performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Nothing to change in memory (the entry was invalidated anyway).
    None,
    /// Only unused bits changed (or the one critical qword was all of it).
    Hitless,
    /// More than one qword was critical: went through V = 0.
    Breaking,
}

/// Computes the qwords written in step 1 and the mask of critical qwords
/// (Linux `arm_smmu_entry_qword_diff`).
pub fn qword_diff<U: UsedBits>(cur: &Entry, target: &Entry) -> (Entry, u8) {
    let cur_used = U::used(cur);
    let target_used = U::used(target);
    let mut unused_update = [0u64; ENTRY_QWORDS];
    let mut diff = 0u8;
    for i in 0..ENTRY_QWORDS {
        unused_update[i] = (cur[i] & cur_used[i]) | (target[i] & !cur_used[i]);
        if (unused_update[i] & target_used[i]) != target[i] {
            diff |= 1 << i;
        }
    }
    (unused_update, diff)
}

fn entry_set(
    slot: &DmaBlock,
    cur: &mut Entry,
    vals: &Entry,
    start: usize,
    len: usize,
    sync: &mut dyn FnMut() -> Result<()>,
) -> Result<bool> {
    let mut changed = false;
    for i in start..start + len {
        if cur[i] != vals[i] {
            dma::write_u64(slot, i, vals[i]);
            cur[i] = vals[i];
            changed = true;
        }
    }
    if changed {
        sync()?;
    }
    Ok(changed)
}

/// Moves the live entry in `slot` to `target` without the SMMU ever seeing a
/// mix that is neither the old nor the new configuration, where the used
/// bits allow it. `sync` must issue the entry's CFGI + CMD_SYNC.
pub fn write_entry<U: UsedBits>(
    slot: &DmaBlock,
    target: &Entry,
    sync: &mut dyn FnMut() -> Result<()>,
) -> Result<UpdateKind> {
    let mut cur = read_entry(slot);
    let (mut unused_update, diff) = qword_diff::<U>(&cur, target);
    if diff.count_ones() == 1 {
        let crit = diff.trailing_zeros() as usize;
        unused_update[crit] = cur[crit];
        entry_set(slot, &mut cur, &unused_update, 0, ENTRY_QWORDS, sync)?;
        entry_set(slot, &mut cur, target, crit, 1, sync)?;
        entry_set(slot, &mut cur, target, 0, ENTRY_QWORDS, sync)?;
        Ok(UpdateKind::Hitless)
    } else if diff != 0 {
        unused_update[0] = 0;
        entry_set(slot, &mut cur, &unused_update, 0, 1, sync)?;
        entry_set(slot, &mut cur, target, 1, ENTRY_QWORDS - 1, sync)?;
        entry_set(slot, &mut cur, target, 0, 1, sync)?;
        Ok(UpdateKind::Breaking)
    } else {
        let changed = entry_set(slot, &mut cur, target, 0, ENTRY_QWORDS, sync)?;
        if !changed {
            // Memory holds the target already, but the SMMU may not: a
            // write whose CMD_SYNC timed out (or whose CFGI was rejected)
            // got this far before. The retry is what confirms it.
            sync()?;
            return Ok(UpdateKind::None);
        }
        Ok(UpdateKind::Hitless)
    }
}

/// Writes `target` into an entry the SMMU cannot reach yet (no sync needed).
pub fn write_entry_offline(slot: &DmaBlock, target: &Entry) {
    for (i, q) in target.iter().enumerate() {
        dma::write_u64(slot, i, *q);
    }
}
