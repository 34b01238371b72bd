//! # sel4-abi: seL4 5.0.0 bindings for AArch64
//!
//! Our own bindings for the seL4 5.0.0 kernel ABI on AArch64, shared by the
//! root task, the IOMMU server and the driver processes. Everything that
//! depends on the kernel configuration — syscall numbers, invocation labels,
//! object type numbers, error codes, the invocation stubs themselves and the
//! bootinfo size — is generated at build time from the kernel's own interface
//! files (see `build/gen.rs`), never hard-coded.
//!
//! ## Build environment
//! - `SEL4_SOURCE`: kernel source tree (default: crates.io `sel4-sys` 0.0.28's
//!   `seL4/` under `$CARGO_HOME/registry/src/*/`).
//! - `SEL4_AUTOCONF`: the kernel's `autoconf.h` (default: a built-in copy of
//!   the DESIGN.md `virt` configuration as a *debug* build).
//! - `SEL4_DEFINES`: defines the kernel build passes on its command line,
//!   `NAME[=VALUE]` separated by spaces or commas, applied before
//!   `SEL4_AUTOCONF`. The kernel Makefile's `DEBUG=y` adds
//!   `CONFIG_DEBUG_BUILD`, which `autoconf.h` does not contain: pass
//!   `SEL4_DEFINES=CONFIG_DEBUG_BUILD` with `SEL4_AUTOCONF` for a debug
//!   kernel, or the debug syscalls (and [`debug_println!`]) are compiled out.
//!
//! ## Modules
//! - `syscalls` (AArch64 only): `call`, `reply_recv`, `send`, `nb_send`, `recv`,
//!   `nb_recv`, `reply`, `yield_now`, `signal`, `wait`, `poll` (each also
//!   `*_with_mrs`), `debug_put_char`, `debug_halt`, `debug_cap_identify`,
//!   `debug_snapshot`, `debug_name_thread` (debug kernels), `semihosting_exit`.
//! - [`MessageInfo`], [`IpcBuffer`] (+ `ipc_buffer()` on AArch64 via
//!   `TPIDR_EL0`): message registers, extra caps, receive path, badges.
//! - [`types`]: [`Word`], [`CPtr`], [`Badge`], [`CapRights`], [`CapData`],
//!   [`PrioProps`], [`VMAttributes`], and one wrapper per capability type
//!   ([`Untyped`], [`TCB`], [`CNode`], [`Endpoint`], [`Notification`],
//!   [`IRQControl`], [`IRQHandler`], [`Page`], [`PageTable`],
//!   [`PageDirectory`], [`PageUpperDirectory`], [`PageGlobalDirectory`]
//!   (the VSpace root), [`ASIDControl`], [`ASIDPool`], ...).
//! - `invocation` (AArch64 only): the object invocations as methods on the cap types (list
//!   below), each returning `Result<_, Error>` with the reply label as error.
//! - [`bootinfo`]: [`BootInfo`] parsing, initial cap [`slots`].
//! - [`object`]: object sizes; [`ObjectType`] (generated).
//! - [`generated`]: [`Syscall`], [`InvocationLabel`], [`ObjectType`],
//!   [`Error`] (= [`Sel4Error`]); [`config`]: the kernel configuration.
//! - [`fault`]: [`fault::Fault`] decodes fault messages (VM, cap, user
//!   exception, unknown syscall).
//! - [`debug`]: [`debug_print!`]/[`debug_println!`] over `DebugPutChar`.
//!
//! ## Invocations
#![doc = include_str!(concat!(env!("OUT_DIR"), "/invocations.md"))]
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(target_arch = "aarch64")]
#[path = "arch/aarch64.rs"]
pub mod arch;

pub mod bootinfo;
pub mod debug;
pub mod fault;
pub mod generated;
#[cfg(any(target_arch = "aarch64", test))]
pub mod invocation;
pub mod ipc_buffer;
pub mod message;
pub mod object;
#[cfg(target_arch = "aarch64")]
pub mod syscalls;
pub mod types;

/// The kernel configuration this crate was generated for: every integer
/// `CONFIG_` define (prefix stripped) and [`config::DEFINES`].
pub mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}

mod structs {
    use crate::types::Word;
    include!(concat!(env!("OUT_DIR"), "/structs.rs"));
}

pub use bootinfo::{slots, BootInfo, SlotRegion, UntypedDesc};
pub use generated::{Error, InvocationLabel, ObjectType, Syscall};
#[cfg(target_arch = "aarch64")]
pub use ipc_buffer::ipc_buffer;
pub use ipc_buffer::IpcBuffer;
pub use message::{MessageInfo, MSG_MAX_EXTRA_CAPS, MSG_MAX_LENGTH};
pub use structs::UserContext;
pub use types::*;

/// The error of an invocation (the kernel's `seL4_Error`).
pub type Sel4Error = Error;

#[cfg(test)]
mod gen_tests;
