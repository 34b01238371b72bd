//! `hello` system, process A: calls process B over its badged endpoint and
//! checks the answer (request * 1000 + badge).
#![no_std]
#![no_main]

use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CPtr, MessageInfo};

procrt::main!(main);

fn main(info: &'static StartInfo) -> bool {
    let Some(ep) = info.cap("hello") else {
        println!("client: no hello endpoint");
        return false;
    };
    let request = 7;
    let mut mrs = [request, 0, 0, 0];
    let reply = syscalls::call_with_mrs(CPtr(ep.cptr), MessageInfo::new(1, 0, 0, 1), &mut mrs);
    let expected = request * 1000 + ep.badge;
    let got = mrs[0];
    println!(
        "client: called server with {request} (my badge {:#x}); reply {got} (label {}, expected {expected})",
        ep.badge,
        reply.label()
    );
    got == expected
}
