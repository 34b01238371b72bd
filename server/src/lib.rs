//! The IOMMU server core.
//!
//! Everything that decides what the SMMUv3 is told lives here, as `no_std`
//! code that runs unchanged in the seL4 server process and in host tests
//! against the software SMMUv3 model (`tools/smmu-model`). Hardware is reached
//! only through the traits in [`hal`].
#![no_std]

pub mod dma_pool;
pub mod hal;
pub mod handler;
pub mod policy;
