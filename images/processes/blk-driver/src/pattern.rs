//! The disk image's contents (`[qemu] disk`, pattern "lba"): the guest's
//! copy of `tools/xtask/src/system.rs::lba_pattern_byte`, which writes the
//! image; keep the two equal.

/// Byte `offset` of sector `lba` (512-byte sectors): the LBA as u64
/// little-endian in the first 8 bytes, then a fixed mix of LBA and offset.
pub fn image_byte(lba: u64, offset: usize) -> u8 {
    if offset < 8 {
        return lba.to_le_bytes()[offset];
    }
    let mixed = lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
    (mixed as u8) ^ (offset as u8).wrapping_mul(7) ^ ((offset >> 8) as u8).wrapping_add(0x5a)
}

/// What the client writes to sector `lba`: every image byte inverted (the
/// host test, tools/xtask/src/imagetests/blk.rs, checks the file for it).
pub fn written_byte(lba: u64, offset: usize) -> u8 {
    !image_byte(lba, offset)
}
