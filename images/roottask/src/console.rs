//! The console thread: the root task's second thread, which prints what the
//! processes send on the console endpoint (`procinfo::console`), a message
//! at a time and each one whole.
//!
//! Every process holds a cap to the endpoint (`procinfo::slot::CONSOLE`)
//! with the write right only, badged with its index: it can send, and
//! nothing else (a receive on it is a capability fault, and it is not a
//! notification to bind). A send blocks until this thread takes the
//! message, so a process that stops, faults or is stopped mid-send holds
//! nothing, and the console is never left taken. It shares the root task's
//! own console lock (`out`) with the main thread only.
//!
//! Its priority ([`priority`]): with an IOMMU server, that of the server's
//! lowest thread, which is at least every client's (`cargo xtask` keeps
//! clients at or below the lowest band thread). Above the server, a process
//! that sends long messages in a loop would have this thread print at a
//! priority that starves the server's bands and its events thread; below
//! a client, a busy client would keep the server's own messages waiting
//! while a server thread holds a core lock. Equal to the lowest band
//! thread, round-robin shares the CPU between them. Without a server,
//! just below the root task's main thread.

use crate::kobj::{Ctx, Kernel, Result, INIT_CNODE, INIT_VSPACE};
use procinfo::console;
use sel4_abi::{
    CNode, CPtr, CapData, CapRights, ObjectType, PrioProps, UserContext, VMAttributes, TCB,
};

/// The console thread's IPC buffer in the root task's VSpace (above the
/// scratch page of `Kernel::write_frame`, below the PL011 of a kernel
/// without printing).
const IPC_VADDR: u64 = 0x7f00_0010_0000;

const STACK_SIZE: usize = 0x4000;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// The console thread's stack; only `start` names it (as the initial `sp`).
static mut STACK: Stack = Stack([0; STACK_SIZE]);

/// The console thread's priority (see the module's documentation).
fn priority() -> u8 {
    let server = crate::desc::SYSTEM
        .iommu
        .as_ref()
        .and_then(|m| crate::desc::SYSTEM.processes.get(m.server));
    match server {
        Some(p) => p
            .threads
            .iter()
            .map(|t| t.priority)
            .fold(p.priority, u8::min),
        None => 254,
    }
}

/// Makes the console endpoint and starts the console thread receiving on
/// it; returns the endpoint, to mint for the processes.
pub fn start(k: &mut Kernel) -> Result<CPtr> {
    let endpoint = k.alloc(ObjectType::EndpointObject, 0)?;
    let ipc = k.alloc(ObjectType::ARM_SmallPageObject, 0)?;
    k.map(
        INIT_VSPACE,
        ipc,
        IPC_VADDR,
        CapRights::READ_WRITE,
        VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER,
    )?;
    let tcb = TCB(k.alloc(ObjectType::TCBObject, 0)?);
    // No fault endpoint: a fault stops the thread (and a debug kernel
    // prints it); the kernel sets TPIDR_EL0 from the buffer address.
    tcb.configure(
        CPtr(0),
        PrioProps::new(priority(), priority()),
        INIT_CNODE,
        CapData::NONE,
        CNode(INIT_VSPACE.cptr()),
        CapData::NONE,
        IPC_VADDR,
        ipc,
    )
    .ctx("TCB_Configure (console thread)")?;
    tcb.set_priority(priority())
        .ctx("TCB_SetPriority (console thread)")?;
    let stack_top = core::ptr::addr_of!(STACK) as u64 + STACK_SIZE as u64;
    let regs = UserContext {
        pc: thread as *const () as u64,
        sp: stack_top,
        x0: endpoint.0,
        ..Default::default()
    };
    tcb.write_registers(true, 0, 4, &regs)
        .ctx("TCB_WriteRegisters (console thread)")?;
    Ok(endpoint)
}

/// Receives a message at a time on `endpoint` and prints it whole, under
/// the root task's console lock. The badge (the sender's index) is not
/// needed: each message stands alone.
extern "C" fn thread(endpoint: u64) -> ! {
    let mut text = [0u8; console::MAX_BYTES];
    loop {
        let mut mrs = [0u64; 4];
        let (info, _badge) = sel4_abi::syscalls::recv_with_mrs(CPtr(endpoint), &mut mrs);
        let ipc = sel4_abi::ipc_buffer::buf();
        let bytes = console::unpack(
            info.label(),
            info.length(),
            |i| if i < 4 { mrs[i] } else { ipc.msg[i] },
            &mut text,
        );
        crate::out::write_whole(bytes);
    }
}
