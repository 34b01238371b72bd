//! The zombie: its main thread reports done while a worker thread keeps
//! calling the server (`Hello`, then `Stats`) forever. Once the root task
//! has retired it, no thread of it may run (no `zombie: still served`
//! line after `root: zombie done`), and the server must refuse its badge.

use crate::checks::Checks;
use crate::common::pause_ms;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use iommu_client::{Error, ErrorCode, Iommu, Perms};
use procrt::{println, StartInfo};
use sel4_abi::{
    syscalls, CNode, CPtr, CapData, MessageInfo, ObjectType, PrioProps, Untyped, UserContext, TCB,
};
use sel4_iommu::transport::Sel4Transport;

/// Rounds (a `Hello` and a `Stats`) between two progress lines.
const ROUNDS_PER_LINE: u64 = 100;
/// The worker's pause after each progress line, so that it does not
/// flood the console.
const PAUSE_MS: u64 = 250;

/// Rounds the worker has done, for the main thread.
static ROUNDS: AtomicU64 = AtomicU64::new(0);

pub fn zombie(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("zombie");
    let Some(worker) = info.thread("worker") else {
        println!("zombie: the system gave me no thread named worker");
        return false;
    };
    if let Err(e) = procrt::spawn(worker, work, 0) {
        println!("zombie: cannot start the worker: {e:?}");
        return false;
    }
    // Done only once the worker was served: it is alive and a client.
    while ROUNDS.load(Ordering::Relaxed) < ROUNDS_PER_LINE {
        syscalls::yield_now();
    }
    read_only_pool(info, &mut checks);
    let own = own_thread(info);
    checks.check(
        "own-thread-started",
        own.is_ok(),
        format_args!("a thread of its own, from its untyped: {own:?}"),
    );
    checks.check(
        "worker-served",
        true,
        format_args!(
            "the worker did {} rounds of Hello + Stats; the main thread now reports done",
            ROUNDS.load(Ordering::Relaxed)
        ),
    );
    checks.passed()
}

/// The zombie's pool is device-read-only (`dma.device_read_only`): the
/// root task gave it read-only frame caps and told the server so, and a
/// writable map of it is refused while a read-only one is not.
fn read_only_pool(info: &StartInfo, checks: &mut Checks) {
    let Some(endpoint) = sel4_iommu::server_endpoint(info) else {
        checks.check(
            "device-read-only-pool",
            false,
            format_args!("no cap to the server"),
        );
        return;
    };
    let outcome = Iommu::connect(Sel4Transport::new(CPtr(endpoint.cptr))).and_then(|mut c| {
        let memory = c.register_memory(&[CPtr(info.dma.first_frame_cap)])?;
        let domain = c.alloc_domain()?;
        let writable = c.map(domain, 0x10_0000, memory.handle, 0, 4096, Perms::RW);
        let write_only = c.map(domain, 0x10_0000, memory.handle, 0, 4096, Perms::WRITE);
        let readable = c.map(domain, 0x10_0000, memory.handle, 0, 4096, Perms::READ);
        c.unmap(domain, 0x10_0000, 4096)?;
        c.free_domain(domain)?;
        c.unregister_memory(memory.handle)?;
        Ok((writable, write_only, readable))
    });
    let refused = Err(Error::Iommu(ErrorCode::NotPermitted));
    checks.check(
        "device-read-only-pool",
        matches!(&outcome, Ok((w, wo, r)) if *w == refused && *wo == refused && r.is_ok()),
        format_args!("map read-write, write-only, read-only of its pool page 0: {outcome:?}"),
    );
}

/// A thread the zombie makes itself, from its own untyped memory, in its
/// own CSpace and VSpace: the root task did not make it, so stopping the
/// threads it made does not stop this one. The root task must stop it all
/// the same (by revoking the untyped it handed over): after `root: retired
/// zombie`, no `zombie: own thread alive` line may follow.
fn own_thread(info: &StartInfo) -> Result<(), sel4_abi::Error> {
    use procrt::procinfo::slot;
    let untyped = info
        .untyped()
        .first()
        .ok_or(sel4_abi::Error::FailedLookup)?;
    let cnode = CNode(CPtr(slot::CNODE));
    let tcb = info.free_first;
    Untyped(CPtr(untyped.cptr)).retype(ObjectType::TCBObject, 0, cnode, 0, 0, tcb, 1)?;
    let tcb = TCB(CPtr(tcb));
    // No IPC buffer (address 0): the thread sends register-only messages.
    tcb.configure(
        CPtr(0),
        PrioProps::new(100, 100),
        cnode,
        CapData::NONE,
        CNode(CPtr(slot::VSPACE)),
        CapData::NONE,
        0,
        CPtr(slot::CNODE),
    )?;
    let regs = UserContext {
        pc: own_thread_main as *const () as u64,
        sp: core::ptr::addr_of!(OWN_STACK) as u64 + OWN_STACK_SIZE as u64,
        ..Default::default()
    };
    tcb.write_registers(true, 0, 4, &regs)?;
    // Done only once it has said it runs.
    while !OWN_ALIVE.load(Ordering::Relaxed) {
        syscalls::yield_now();
    }
    Ok(())
}

/// Set by the own thread once its first line is out.
static OWN_ALIVE: AtomicBool = AtomicBool::new(false);

const OWN_STACK_SIZE: usize = 0x2000;
#[repr(C, align(16))]
struct OwnStack([u8; OWN_STACK_SIZE]);
/// The own thread's stack; only `own_thread` names it (as its `sp`).
static mut OWN_STACK: OwnStack = OwnStack([0; OWN_STACK_SIZE]);

/// Says it is alive on the console every so often, in one register-only
/// message (it has no IPC buffer), for as long as it runs.
extern "C" fn own_thread_main() -> ! {
    use procrt::procinfo::{console, slot};
    const ALIVE: &[u8] = b"zombie: own thread alive\n";
    let words = console::words(ALIVE.len());
    let mrs = core::array::from_fn(|i| console::word(ALIVE, i));
    loop {
        let tag = MessageInfo::new(ALIVE.len() as u64, 0, 0, words as u64);
        syscalls::send_with_mrs(CPtr(slot::CONSOLE), tag, mrs);
        OWN_ALIVE.store(true, Ordering::Relaxed);
        pause_ms(PAUSE_MS);
    }
}

extern "C" fn work(_: usize) -> ! {
    let info = procrt::info();
    let Some(endpoint) = sel4_iommu::server_endpoint(info) else {
        println!("zombie: no cap to the IOMMU server");
        procrt::done(false)
    };
    let endpoint = CPtr(endpoint.cptr);
    let (mut answered, mut refused) = (0u64, 0u64);
    let mut last_refusal: Option<Error> = None;
    let mut rounds = 0u64;
    loop {
        let outcome = Iommu::connect(Sel4Transport::new(endpoint)).and_then(|mut c| c.stats());
        match outcome {
            Ok(_) => answered += 1,
            Err(e) => {
                refused += 1;
                last_refusal = Some(e);
            }
        }
        rounds += 1;
        ROUNDS.store(rounds, Ordering::Relaxed);
        if rounds.is_multiple_of(ROUNDS_PER_LINE) {
            println!(
                "zombie: still served {rounds} rounds (last {ROUNDS_PER_LINE}: {answered} answered, {refused} refused; last refusal {last_refusal:?})"
            );
            answered = 0;
            refused = 0;
            pause_ms(PAUSE_MS);
        }
    }
}
