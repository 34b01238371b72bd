//! `hello` system, process B: reads the SMMU's ID registers through its
//! device mapping, then answers one call on the `hello` endpoint with a value
//! derived from the caller's badge and message.
#![no_std]
#![no_main]

use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CPtr, MessageInfo};

procrt::main!(main);

/// The reply to `request` from a client with `badge`; the client checks it.
fn answer(badge: u64, request: u64) -> u64 {
    request * 1000 + badge
}

fn main(info: &'static StartInfo) -> bool {
    let Some(smmu) = info.device("smmu") else {
        println!("server: no device region named smmu");
        return false;
    };
    let reg = |offset: u64| {
        // SAFETY: the root task mapped the SMMU's register page uncached at
        // smmu.vaddr; ID registers are read-only and side-effect free.
        unsafe { core::ptr::read_volatile((smmu.vaddr + offset) as *const u32) }
    };
    let (idr0, idr1, idr5) = (reg(0x0), reg(0x4), reg(0x14));
    println!(
        "server: SMMU at {:#x} (mapped at {:#x}): IDR0={idr0:#010x} IDR1={idr1:#010x} IDR5={idr5:#010x}",
        smmu.paddr, smmu.vaddr
    );

    let Some(ep) = info.cap("hello") else {
        println!("server: no hello endpoint");
        return false;
    };
    let mut mrs = [0u64; 4];
    let (msg, badge) = syscalls::recv_with_mrs(CPtr(ep.cptr), &mut mrs);
    let reply = answer(badge.0, mrs[0]);
    println!(
        "server: request {} (label {}) from badge {:#x}; replying {reply}",
        mrs[0],
        msg.label(),
        badge.0
    );
    syscalls::reply_with_mrs(MessageInfo::new(0, 0, 0, 1), [reply, 0, 0, 0]);
    true
}
