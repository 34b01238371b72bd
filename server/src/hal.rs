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
    /// How the CPU's caches are maintained over this allocator's blocks.
    type Cache: CacheMaintenance;
    /// `size` bytes, aligned to `align` (a power of two) both virtually and
    /// physically, zero-filled, and that zero visible to a non-coherent
    /// SMMU too (cleaned).
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory>;
    /// Returns a block obtained from `alloc` of this allocator.
    fn free(&mut self, block: DmaBlock);
    /// A handle that cleans and invalidates this allocator's blocks, or
    /// `None` if it cannot: its memory then serves only an SMMU that snoops
    /// the CPU's caches, and the core refuses one that does not
    /// (IDR0.COHACC = 0). The core asks only for such an SMMU, before its
    /// first allocation; from then on `alloc` must clean the zeroes it
    /// writes (the promise above).
    fn cache(&self) -> Option<Self::Cache>;
}

/// Data-cache maintenance by virtual address for memory that an SMMU which
/// does not snoop the CPU's caches (SMMU_IDR0.COHACC = 0, SMMUv3 6.3.1)
/// reads or writes: its table walks, STE and CD fetches, command and event
/// queue accesses all go to memory (the point of coherency). The core calls
/// these only for such an SMMU.
pub trait CacheMaintenance: Clone + Send + Sync {
    /// Writes the CPU's cached copy of `[vaddr, vaddr + len)` back to the
    /// point of coherency (Arm `DC CVAC` over every line, then `DSB`), so
    /// the SMMU reads what the CPU wrote.
    fn clean(&self, vaddr: *const u8, len: usize);
    /// Cleans and invalidates `[vaddr, vaddr + len)` (`DC CIVAC`, `DSB`), so
    /// the CPU's next read sees what the SMMU wrote.
    fn invalidate(&self, vaddr: *const u8, len: usize);
}

/// The [`DmaAllocator::Cache`] of an allocator that cannot maintain caches
/// (it returns `None` from [`DmaAllocator::cache`]): uninhabited, so no
/// value of it ever exists.
#[derive(Debug, Clone, Copy)]
pub enum NoCache {}

impl CacheMaintenance for NoCache {
    fn clean(&self, _: *const u8, _: usize) {
        match *self {}
    }
    fn invalidate(&self, _: *const u8, _: usize) {
        match *self {}
    }
}
