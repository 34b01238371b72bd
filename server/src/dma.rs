//! Word access to DMA-visible memory ([`DmaBlock`]).
//!
//! All accesses are volatile 64-bit, so that each descriptor qword is
//! single-copy atomic as the SMMU observes it (3.21.3 "Single-copy atomicity").

use crate::hal::DmaBlock;

/// Reads the `idx`-th 64-bit word of `b`; 0 if out of bounds (never happens
/// for the driver's own indices, which are bounded by construction).
#[inline]
pub fn read_u64(b: &DmaBlock, idx: usize) -> u64 {
    if b.vaddr.is_null() || idx >= b.size / 8 || !(b.vaddr as usize).is_multiple_of(8) {
        return 0;
    }
    // SAFETY: the allocator promised `size` valid bytes at `vaddr`; idx is in
    // bounds and the pointer is 8-aligned (checked above).
    unsafe { core::ptr::read_volatile((b.vaddr as *const u64).add(idx)) }
}

/// Writes the `idx`-th 64-bit word of `b`; ignored if out of bounds.
#[inline]
pub fn write_u64(b: &DmaBlock, idx: usize, v: u64) {
    if b.vaddr.is_null() || idx >= b.size / 8 || !(b.vaddr as usize).is_multiple_of(8) {
        return;
    }
    // SAFETY: as in `read_u64`; the block is owned by the driver.
    unsafe { core::ptr::write_volatile((b.vaddr as *mut u64).add(idx), v) }
}

/// The words `range` of `b` as a raw pointer to the first and a count, if
/// the range lies inside the block (one bounds check for a whole run,
/// where [`read_u64`] and [`write_u64`] check each word).
#[inline(always)]
fn words(b: &DmaBlock, range: core::ops::Range<usize>) -> Option<(*mut u64, usize)> {
    if b.vaddr.is_null()
        || range.start > range.end
        || range.end > b.size / 8
        || !(b.vaddr as usize).is_multiple_of(8)
    {
        return None;
    }
    // The pointer stays inside the block: start <= end <= size / 8.
    Some(((b.vaddr as *mut u64).wrapping_add(range.start), range.len()))
}

/// Whether any word of `range` in `b` has a bit of `mask` set; false if
/// the range does not fit.
#[inline]
pub fn any_set(b: &DmaBlock, range: core::ops::Range<usize>, mask: u64) -> bool {
    let Some((p, n)) = words(b, range) else {
        return false;
    };
    // SAFETY: `words` checked that the `n` words from `p` lie inside the
    // block the allocator gave us, 8-aligned.
    (0..n).any(|k| unsafe { core::ptr::read_volatile(p.add(k)) } & mask != 0)
}

/// Writes `value(k)` to word `range.start + k` of `b` for every word of
/// `range`, in order; nothing if the range does not fit.
#[inline]
pub fn write_each(b: &DmaBlock, range: core::ops::Range<usize>, mut value: impl FnMut(u64) -> u64) {
    let Some((p, n)) = words(b, range) else {
        return;
    };
    for k in 0..n {
        // SAFETY: as in `any_set`.
        unsafe { core::ptr::write_volatile(p.add(k), value(k as u64)) };
    }
}

/// A sub-block `[offset, offset + size)` of `b` (same memory, shifted
/// addresses). Returns `None` if it does not fit.
#[inline]
pub fn sub_block(b: &DmaBlock, offset: usize, size: usize) -> Option<DmaBlock> {
    if offset.checked_add(size)? > b.size {
        return None;
    }
    Some(DmaBlock {
        vaddr: b.vaddr.wrapping_add(offset),
        paddr: b.paddr + offset as u64,
        size,
    })
}
