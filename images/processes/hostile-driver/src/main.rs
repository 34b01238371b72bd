//! The `hostile` system's processes, one program with a role per process
//! name:
//! - `hostile` owns the second `edu` (StreamID 0x10) and attacks the IOMMU
//!   server's capability boundary (DESIGN.md section 5): caps that are not
//!   frames (an endpoint it receives on, a notification, its TCB, CNode,
//!   VSpace, untyped, a page table), a frame retyped from its own untyped,
//!   a read-only copy, revocation after map, a message whose extra caps the
//!   kernel unwraps (which wedges the band's receive slot), and last a
//!   thread that receives on its own fault endpoint (the root task's).
//! - `victim` owns the first `edu` (StreamID 0x8), is served by the same
//!   server thread (the same band), and does byte-exact DMA round trips
//!   before, between and after the attacks.
//! - `fuzzer`, in the same band with no stream, sends a few thousand
//!   random requests with random caps of every kind it can make or holds
//!   (a fixed seed, printed), counts the answers, and checks the server
//!   answered each as the request allows, never called or signalled its
//!   own objects, and still serves it afterwards; the victim does a DMA
//!   round trip between its batches.
//! - `zombie` starts a worker thread that calls the server forever, and
//!   reports done from its main thread: once retired, nothing of it may
//!   run or be served.
//!
//! Each check prints `check <role>/<name>: ok (...)` or `... FAILED (...)`;
//! `tools/xtask/src/imagetests/hostile.rs` reads them with the root task's
//! output and QEMU's SMMU trace.
#![no_std]
#![no_main]

#[path = "../../edu-driver/src/checks.rs"]
mod checks;
mod common;
#[path = "../../edu-driver/src/edu.rs"]
#[allow(dead_code)]
mod edu;
mod fuzz;
mod hostile;
#[path = "../../edu-driver/src/pci.rs"]
mod pci;
mod victim;
mod zombie;

use procrt::{println, StartInfo};

procrt::main!(main);

fn main(info: &'static StartInfo) -> bool {
    match info.name.as_str() {
        "hostile" => hostile::hostile(info),
        "victim" => victim::victim(info),
        "zombie" => zombie::zombie(info),
        "fuzzer" => fuzz::fuzzer(info),
        other => {
            println!("hostile-driver: no role named {other}");
            false
        }
    }
}
