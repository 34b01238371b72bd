//! Driver process for QEMU's `edu` device, and the `dma-demo` checks.
//!
//! One program, three roles chosen by the process name the system gives it:
//! - `driver-a` owns the first `edu` (StreamID 0x8): registers its DMA
//!   frames with the IOMMU server, maps them, and checks every outcome of the
//!   device's DMA from memory and from the fault records the server routes
//!   to it: mapped DMA lands byte-exact both ways, a scatter map works, DMA
//!   to never-mapped, unmapped and read-only IOVAs faults and leaves memory
//!   untouched, and after detach the device cannot reach memory at all.
//! - `driver-b` owns the second `edu` (StreamID 0x10): does its own DMA, then
//!   tries to reach driver A's stream, domains and memory.
//! - `bystander` drives no device and may attach nothing.
//!
//! Each check prints `check <role>/<name>: ok` or `... FAILED (why)`; the
//! image test counts those lines and reads QEMU's SMMU trace alongside.
#![no_std]
#![no_main]

mod checks;
mod edu;
mod pci;
mod roles;

use procrt::{println, StartInfo};

procrt::main!(main);

fn main(info: &'static StartInfo) -> bool {
    match info.name.as_str() {
        "driver-a" => roles::driver_a(info),
        "driver-b" => roles::driver_b(info),
        "bystander" => roles::bystander(info),
        other => {
            println!("edu-driver: no role named {other}");
            false
        }
    }
}
