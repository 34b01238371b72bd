//! Memory-ordering hooks between the CPU's writes to DMA-visible memory and
//! the SMMU's reads of it.
//!
//! QEMU's SMMU is coherent (IDR0.COHACC = 1), so ordering is all that is
//! needed; no cache maintenance.

/// Orders earlier writes to DMA-visible memory before later ones, as the SMMU
/// observes them (Linux `dma_wmb()`): used before publishing a table
/// descriptor that points at a freshly written table.
#[inline]
pub fn dma_wmb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; no memory or register effects visible to Rust.
    unsafe {
        core::arch::asm!("dmb oshst", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Orders earlier writes to DMA-visible memory before a later MMIO write that
/// tells the SMMU to look (Linux `wmb()` before `writel_relaxed` of PROD).
#[inline]
pub fn wmb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; no memory or register effects visible to Rust.
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Orders an MMIO read (e.g. of a PROD index) before later reads of the
/// memory it describes (Linux `dma_rmb()` / `rmb()`).
#[inline]
pub fn rmb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; no memory or register effects visible to Rust.
    unsafe {
        core::arch::asm!("dsb ld", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Orders earlier reads and writes of DMA-visible memory before a later
/// MMIO write (Linux `mb()`): used before handing event-queue slots back
/// (EVENTQ_CONS), so that the records are read before the SMMU may
/// overwrite them (a `dsb st` orders only the writes).
#[inline]
pub fn mb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; no memory or register effects visible to Rust.
    unsafe {
        core::arch::asm!("dsb sy", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}
