//! `console-thief`: what a process could try with its console cap (slot 6)
//! to take the console from everyone else (issue 16). Each attempt must
//! fail without touching the other processes' output:
//!
//! 1. bind it to its own TCB (with a shared notification there, every other
//!    thread's `seL4_Wait` on it would become a capability fault): refused;
//! 2. `seL4_Recv` on it, from thread `recv`, whose faults come to this main
//!    thread: a capability fault (the cap has no read right);
//! 3. go on printing: every line arrives whole;
//! 4. `seL4_Call` on it, from thread `caller`: the line is printed, and the
//!    caller (no grant) waits for good, holding nothing;
//! 5. `seL4_Wait` on it, from thread `wait`: a capability fault that goes
//!    to the root task, which reports `FAULT in console-thief: ...` and
//!    stops the process.
//!
//! With a console lock shared by every process (before issue 16), step 1
//! or 2 takes the lock for good and the whole system stops printing.

use crate::Repeat;
use procrt::procinfo::{console, slot};
use procrt::{println, StartInfo, ThreadInfo};
use sel4_abi::fault::Fault;
use sel4_abi::{syscalls, CNode, CPtr, CapData, MessageInfo, Notification, TCB};

/// Lines printed after the receive attempt; the image test expects them whole.
pub const LINES: usize = 20;

/// The console cap.
const CONSOLE: u64 = slot::CONSOLE;

/// Label of the message thread `recv` sends when its receive returned.
const RECEIVED: u64 = 0x7263;

pub fn thief(info: &'static StartInfo) -> bool {
    let me = TCB(CPtr(slot::TCB));
    match me.bind_notification(CPtr(CONSOLE)) {
        Err(e) => println!("check console-thief/bind-refused: ok ({e:?})"),
        Ok(()) => {
            let _ = me.unbind_notification();
            println!("check console-thief/bind-refused: FAILED (slot 6 was bound to my TCB)");
        }
    }

    let (Some(faults), Some(recv), Some(caller), Some(wait)) = (
        info.cap("thief-faults"),
        info.thread("recv"),
        info.thread("caller"),
        info.thread("wait"),
    ) else {
        println!("console-thief: the description lacks thief-faults or a thread");
        return false;
    };
    let faults = CPtr(faults.cptr);
    // Thread `recv`'s faults come here instead of to the root task, so that
    // this process goes on after its receive attempt.
    let redirected = TCB(CPtr(recv.tcb)).set_space(
        faults,
        CNode(CPtr(slot::CNODE)),
        CapData::NONE,
        CNode(CPtr(slot::VSPACE)),
        CapData::NONE,
    );
    if let Err(e) = redirected {
        println!("console-thief: TCB_SetSpace on thread recv failed: {e:?}");
        return false;
    }
    if !start(recv, receive_on_console) {
        return false;
    }
    let mut mrs = [0; 4];
    let (msg, _) = syscalls::recv_with_mrs(faults, &mut mrs);
    match (msg.label(), Fault::decode_received(msg, &mrs)) {
        (RECEIVED, _) => println!(
            "check console-thief/recv-faults: FAILED (seL4_Recv on slot 6 returned: this process took the console)"
        ),
        (
            _,
            Fault::Cap {
                addr: CONSOLE,
                in_recv_phase: true,
                lookup,
                ..
            },
        ) => println!(
            "check console-thief/recv-faults: ok (capability fault on cptr 0x6 in the receive phase, {lookup:?})"
        ),
        (_, other) => println!("check console-thief/recv-faults: FAILED ({other:?})"),
    }

    for i in 0..LINES {
        let digit = (b'0' + (i % 10) as u8) as char;
        println!("thief console-thief {i} {}", Repeat(digit, 96));
    }

    // Both threads run above this one, so each has done its attempt when
    // `start` returns; the second one's fault stops this process.
    if !start(caller, call_console) {
        return false;
    }
    println!("console-thief: seL4_Wait on slot 6 from thread wait");
    if !start(wait, wait_on_console) {
        return false;
    }
    // Only if the root task did not stop this process.
    let wake = Notification(CPtr(info.threads()[0].wake));
    loop {
        syscalls::wait(wake);
    }
}

fn start(t: &ThreadInfo, entry: extern "C" fn(usize) -> !) -> bool {
    match procrt::spawn(t, entry, 0) {
        Ok(()) => true,
        Err(e) => {
            println!(
                "console-thief: could not start thread {}: {e:?}",
                t.name.as_str()
            );
            false
        }
    }
}

/// Blocks for good (a thread that tried what it should not have managed).
fn park() -> ! {
    let info = procrt::info();
    let own = procrt::current_thread_index().unwrap_or(0);
    loop {
        syscalls::wait(Notification(CPtr(info.threads()[own].wake)));
    }
}

extern "C" fn receive_on_console(_: usize) -> ! {
    let _ = syscalls::recv(CPtr(CONSOLE));
    // It returned: this thread now holds whatever the receive took.
    let faults = procrt::info().cap("thief-faults").map_or(0, |c| c.cptr);
    syscalls::send_with_mrs(CPtr(faults), MessageInfo::new(RECEIVED, 0, 0, 0), [0; 4]);
    park()
}

extern "C" fn call_console(_: usize) -> ! {
    let text: &[u8] =
        b"console-thief: this line came by seL4_Call (no grant: the caller now waits for good)\n";
    let mut mrs = [0; 4];
    for (i, m) in mrs.iter_mut().enumerate() {
        *m = console::word(text, i);
    }
    let ipc = sel4_abi::ipc_buffer::buf();
    for i in 4..console::words(text.len()) {
        ipc.msg[i] = console::word(text, i);
    }
    let words = console::words(text.len()) as u64;
    syscalls::call_with_mrs(
        CPtr(CONSOLE),
        MessageInfo::new(text.len() as u64, 0, 0, words),
        &mut mrs,
    );
    println!("check console-thief/call-waits: FAILED (seL4_Call on slot 6 returned)");
    park()
}

extern "C" fn wait_on_console(_: usize) -> ! {
    syscalls::wait(Notification(CPtr(CONSOLE)));
    println!("check console-thief/wait-faults: FAILED (seL4_Wait on slot 6 returned)");
    park()
}
