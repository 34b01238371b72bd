//! `fault` system: reads an address nothing is mapped at. The root task must
//! report the VM fault (it is this process's fault handler).
#![no_std]
#![no_main]

use procrt::{println, StartInfo};

procrt::main!(main);

const UNMAPPED: u64 = 0xdead_0000;

fn main(_info: &'static StartInfo) -> bool {
    println!("faulter: reading unmapped address {UNMAPPED:#x}");
    // SAFETY: deliberately not safe: the read faults, and the kernel turns the
    // fault into a message to the root task; this thread never resumes.
    let v = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
    println!("faulter: read {v:#x}: no fault happened");
    false
}
