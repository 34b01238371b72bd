//! What the IOMMU server and its clients need from seL4, and nothing else:
//! the client [`transport`] (one `seL4_Call` per request) and the server's
//! [`platform`] (SMMU registers in device frames, received frame caps
//! resolved with `seL4_ARM_Page_GetAddress`, a delay from the generic timer).
#![no_std]

pub mod message;
pub mod platform;
pub mod transport;
