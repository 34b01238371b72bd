//! The narrow interface between the server core and the machine.
//!
//! On seL4 these are implemented over device frames (registers) and frames
//! retyped from untyped memory (DMA-visible memory); on the host by the
//! software SMMUv3 model. Time comes from `embedded_hal::delay::DelayNs`.

/// Access to the SMMUv3 register file: page 0 at offset 0, page 1 at
/// offset 0x1_0000 (SMMUv3 architecture, 6.2 "Register overview").
///
/// Methods take `&self` because a register access is not a Rust-level
/// mutation of the implementor; implementors use volatile accesses.
pub trait Mmio {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    fn read64(&self, offset: usize) -> u64;
    fn write64(&self, offset: usize, value: u64);
}

/// A zeroed, physically contiguous block of memory that both the server
/// (through `vaddr`) and the SMMU (through `paddr`) can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaBlock {
    /// Where the server reads and writes it. Valid for `size` bytes until freed.
    pub vaddr: *mut u8,
    /// Where the SMMU reads and writes it.
    pub paddr: u64,
    pub size: usize,
}

// SAFETY: a DmaBlock is an owned, exclusive handle to memory the allocator
// gave out; moving it between threads moves that ownership.
unsafe impl Send for DmaBlock {}

/// The allocator ran out of DMA-visible memory (or of its quota of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

/// Allocator of DMA-visible memory for queues, stream tables, context
/// descriptors and I/O page tables.
pub trait DmaAllocator {
    /// `size` bytes, aligned to `align` (a power of two) both virtually and
    /// physically, zero-filled.
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory>;
    /// Returns a block obtained from `alloc` of this allocator.
    fn free(&mut self, block: DmaBlock);
}
