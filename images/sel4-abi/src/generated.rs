//! Configuration-dependent numbers generated at build time from the kernel
//! source (see `build/gen.rs`): syscall numbers, invocation labels, object
//! types, error codes.

#![allow(non_camel_case_types, clippy::upper_case_acronyms)]

include!(concat!(env!("OUT_DIR"), "/syscalls.rs"));
include!(concat!(env!("OUT_DIR"), "/invocation_labels.rs"));
include!(concat!(env!("OUT_DIR"), "/object_types.rs"));
include!(concat!(env!("OUT_DIR"), "/errors.rs"));

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}
