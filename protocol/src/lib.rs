//! Wire protocol between driver processes and the IOMMU server.
#![no_std]
