//! `fault` system: each process breaks one rule of its address space, by
//! name; the root task (its fault handler) must report each fault.
//! - `faulter`: reads an address nothing is mapped at;
//! - `scribbler`: writes to its own code, which is mapped read-only;
//! - `recurser`: recurses until it runs off the bottom of its stack, into the
//!   unmapped guard page.
#![no_std]
#![no_main]

use procrt::{println, StartInfo};

procrt::main!(main);

const UNMAPPED: u64 = 0xdead_0000;

fn main(info: &'static StartInfo) -> bool {
    match info.name.as_str() {
        "scribbler" => {
            let code = main as *const () as *mut u32;
            println!("scribbler: writing to my own code at {:#x}", code as u64);
            // SAFETY: deliberately not safe: the page is mapped read-only, so
            // the write faults and this thread never resumes.
            unsafe { core::ptr::write_volatile(code, 0) };
            println!("scribbler: the write went through: no fault happened");
        }
        "recurser" => {
            println!(
                "recurser: recursing down from stack top {:#x} (guard page below {:#x})",
                info.stack_top, info.stack_bottom
            );
            let depth = recurse(0);
            println!("recurser: returned from depth {depth}: no fault happened");
        }
        _ => {
            println!("faulter: reading unmapped address {UNMAPPED:#x}");
            // SAFETY: deliberately not safe: the read faults, and the kernel
            // turns the fault into a message to the root task.
            let v = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
            println!("faulter: read {v:#x}: no fault happened");
        }
    }
    false
}

/// Uses a page of stack per call until the stack runs out.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 4096];
    // black_box keeps the frame live across the call: no tail call, no reuse.
    core::hint::black_box(&mut frame);
    if depth > 1_000_000 {
        return depth;
    }
    let deeper = recurse(depth + 1);
    core::hint::black_box(&frame);
    deeper
}
