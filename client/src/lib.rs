//! Typed client API of the IOMMU server.
#![no_std]
