//! The seL4 root task: builds every process of the system description it was
//! compiled with, then serves as their fault handler and collects their
//! `done` reports; when every awaited process is done it ends the run with a
//! semihosting exit (0: all passed).
#![no_std]
#![no_main]

mod console;
mod desc;
mod kobj;
#[macro_use]
mod out;
mod pci;
mod process;

use desc::SYSTEM;
use kobj::{Fail, Kernel};
use process::{Running, Shared, CONTROL_BADGE, FAULT_BADGE};
use sel4_abi::fault::Fault;
use sel4_abi::{CPtr, Endpoint, MessageInfo, Notification, ObjectType};

const MAX_PROCESSES: usize = 16;

core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    // The kernel starts the root task without a stack.
    "    adrp x9, {stack}",
    "    add x9, x9, :lo12:{stack}",
    "    add x9, x9, #16, lsl #12",
    "    mov sp, x9",
    "    bl main",
    "1:  b 1b",
    stack = sym STACK,
);

/// The root task's stack; only `_start` names it (as the initial `sp`).
#[repr(C, align(16))]
struct Stack([u8; 0x10000]);
static mut STACK: Stack = Stack([0; 0x10000]);

fn exit(code: u32) -> ! {
    sel4_abi::syscalls::semihosting_exit(code)
}

fn fail(what: &str, f: Fail) -> ! {
    match f {
        Fail::Kernel(call, e) => println!("root: ERROR: {what}: {call} failed: {e:?}"),
        Fail::OutOfSlots => println!("root: ERROR: {what}: the root CNode has no empty slots left"),
        Fail::OutOfMemory { size_bits, count } => println!(
            "root: ERROR: {what}: not enough untyped memory for {count} object(s) of 2^{size_bits} bytes"
        ),
        Fail::NoDeviceUntyped { paddr } => println!(
            "root: ERROR: {what}: no device untyped covers {paddr:#x} (is the region in the kernel's dev_p_regs?)"
        ),
        Fail::NotContiguous => println!("root: ERROR: {what}: DMA pool frames are not physically contiguous"),
        Fail::Elf => println!("root: ERROR: {what}: the process ELF is not a loadable AArch64 executable"),
        Fail::TooManyThreads => println!("root: ERROR: {what}: more threads than procinfo::MAX_THREADS"),
        Fail::StacksTooLarge => println!("root: ERROR: {what}: stacks reach procinfo::FRAME_PROBE_BASE"),
        Fail::Pci { function, why } => println!(
            "root: ERROR: {what}: PCI function {:02x}:{:02x}.{}: {why}",
            function >> 8,
            (function >> 3) & 0x1f,
            function & 7
        ),
    }
    exit(2)
}

#[no_mangle]
extern "C" fn main(bootinfo: u64) -> ! {
    // SAFETY: x0 at entry is the bootinfo address the kernel mapped for us.
    let bi = match unsafe { sel4_abi::BootInfo::from_addr(bootinfo as usize) } {
        Ok(bi) => bi,
        Err(e) => {
            println!("root: ERROR: bad bootinfo at {bootinfo:#x}: {e:?}");
            exit(2)
        }
    };
    let mut k = Kernel::new(&bi);
    let console = setup_console(&mut k);
    println!("root: seL4 root task, system \"{}\"", SYSTEM.name);
    println!(
        "root: {} untypeds, {} MiB free RAM, empty slots {:?}",
        bi.untyped().len(),
        k.free_ram() >> 20,
        bi.empty()
    );
    if SYSTEM.processes.len() > MAX_PROCESSES
        || SYSTEM.endpoints.len() > 32
        || SYSTEM.notifications.len() > 32
    {
        println!("root: ERROR: at most {MAX_PROCESSES} processes, 32 endpoints, 32 notifications");
        exit(2);
    }

    let root_ep = k
        .alloc(ObjectType::EndpointObject, 0)
        .unwrap_or_else(|e| fail("root endpoint", e));
    // The root task's own console lock, which its main thread and its
    // console thread take turns on, and no process holds. It starts free:
    // one signal for the first `Wait` to take.
    let console_lock = k
        .alloc(ObjectType::NotificationObject, 0)
        .unwrap_or_else(|e| fail("console lock", e));
    sel4_abi::syscalls::signal(Notification(console_lock));
    out::set_console_lock(console_lock);
    // Processes print through the console thread (`procinfo::slot::CONSOLE`).
    let console_ep = console::start(&mut k).unwrap_or_else(|e| fail("console thread", e));
    let mut shared = Shared {
        console,
        console_ep,
        endpoints: [CPtr(0); 32],
        notifications: [CPtr(0); 32],
        root_ep,
    };
    for i in 0..SYSTEM.endpoints.len() {
        shared.endpoints[i] = k
            .alloc(ObjectType::EndpointObject, 0)
            .unwrap_or_else(|e| fail("endpoints", e));
    }
    for i in 0..SYSTEM.notifications.len() {
        shared.notifications[i] = k
            .alloc(ObjectType::NotificationObject, 0)
            .unwrap_or_else(|e| fail("notifications", e));
    }

    // The supervisor's own cap to the IOMMU server (see `retire`).
    let supervisor = SYSTEM.supervisor.as_ref().map(|sup| {
        let slot = k.slot().unwrap_or_else(|e| fail("supervisor cap", e));
        kobj::INIT_CNODE
            .mint(
                slot.0,
                kobj::DEPTH,
                kobj::INIT_CNODE,
                shared.endpoints[sup.endpoint].0,
                kobj::DEPTH,
                sel4_abi::CapRights::new(true, false, true),
                sel4_abi::CapData::badge(sup.badge),
            )
            .unwrap_or_else(|e| fail("supervisor cap", kobj::Fail::Kernel("CNode_Mint", e)));
        slot
    });

    // Every DMA pool first: the IOMMU server's start-info page lists its
    // clients' pools, whichever order the processes come in.
    let mut pools: [Option<process::Pool>; MAX_PROCESSES] = [None; MAX_PROCESSES];
    for (i, p) in SYSTEM.processes.iter().enumerate() {
        if let Some(d) = &p.dma {
            pools[i] = Some(process::alloc_pool(&mut k, d).unwrap_or_else(|e| fail(p.name, e)));
        }
    }
    let grants = process::dma_grants(&pools);
    // PCI functions: BARs placed, memory decoding on, bus mastering off.
    let mut functions = pci::Functions::new();
    let mut programmed = [[procinfo::PciFunction::default(); procinfo::MAX_PCI]; MAX_PROCESSES];
    for (i, p) in SYSTEM.processes.iter().enumerate() {
        for (n, f) in p.pci.iter().enumerate().take(procinfo::MAX_PCI) {
            let f = functions
                .program(&mut k, f, i)
                .unwrap_or_else(|e| fail(p.name, e));
            let rid = f.requester_id;
            println!(
                "root: PCI {:02x}:{:02x}.{} ({:04x}:{:04x}) for {}: BAR0 at {:#x} ({} KiB), memory decoding on, bus mastering off",
                rid >> 8,
                (rid >> 3) & 0x1f,
                rid & 7,
                f.ids & 0xffff,
                f.ids >> 16,
                p.name,
                f.bar0,
                f.bar0_size / 1024
            );
            programmed[i][n] = f;
        }
    }
    // A device region over another process's BAR would drive its device.
    for (i, p) in SYSTEM.processes.iter().enumerate() {
        for d in p.devices {
            if let Some(function) = functions.foreign_bar(i, d.paddr, d.size) {
                let why = "a device region of this process overlaps the function's BAR";
                fail(p.name, Fail::Pci { function, why });
            }
        }
    }
    let mut running: [Option<Running>; MAX_PROCESSES] = [None; MAX_PROCESSES];
    for (i, p) in SYSTEM.processes.iter().enumerate() {
        let server = SYSTEM.iommu.as_ref().is_some_and(|m| m.server == i);
        let pci = &programmed[i][..p.pci.len().min(procinfo::MAX_PCI)];
        match process::build(
            &mut k,
            &shared,
            i,
            p,
            pools[i],
            server.then_some(&grants),
            pci,
        ) {
            Ok(r) => running[i] = Some(r),
            Err(e) => fail(p.name, e),
        }
        println!(
            "root: built process {} ({} bytes of ELF, priority {})",
            p.name,
            p.elf.len(),
            p.priority
        );
    }
    let resume = |r: &Running| {
        r.tcb
            .resume()
            .unwrap_or_else(|e| fail("TCB_Resume", kobj::Fail::Kernel("TCB_Resume", e)))
    };
    // The IOMMU server first: nothing else runs, and no device masters the
    // bus, until the SMMU is enabled with every stream aborting.
    let server = SYSTEM.iommu.as_ref().map(|m| m.server);
    if let Some(r) = server.and_then(|s| running[s].as_ref()) {
        resume(r);
        await_ready(Endpoint(root_ep), server.unwrap_or(0));
    }
    functions.enable_bus_mastering();
    println!(
        "root: bus mastering on for {} PCI function(s)",
        functions.count()
    );
    for (i, r) in running.iter().enumerate() {
        if let Some(r) = r.as_ref().filter(|_| Some(i) != server) {
            resume(r);
        }
    }
    println!("root: started {} process(es)", SYSTEM.processes.len());
    serve(Endpoint(root_ep), &running, supervisor)
}

/// Waits for the IOMMU server (process `server`, the only one running) to
/// report its SMMU enabled (`control::READY`); anything else from it ends
/// the run.
fn await_ready(ep: Endpoint, server: usize) {
    let name = SYSTEM.processes.get(server).map_or("?", |p| p.name);
    let mut mrs = [0u64; 4];
    let (info, badge) = sel4_abi::syscalls::recv_with_mrs(ep.cptr(), &mut mrs);
    let from_server = (badge.0 & 0xffff) as usize == server;
    if from_server && badge.0 & CONTROL_BADGE != 0 && info.label() == procinfo::control::READY {
        println!("root: {name} ready: SMMU enabled, starting the others");
        return;
    }
    if badge.0 & FAULT_BADGE != 0 {
        report_fault(name, info, &mrs);
    }
    println!(
        "root: ERROR: {name} stopped before the SMMU was ready (label {:#x})",
        info.label()
    );
    exit(2)
}

/// Faults and `done` reports until every awaited process is done.
fn serve(ep: Endpoint, running: &[Option<Running>; MAX_PROCESSES], supervisor: Option<CPtr>) -> ! {
    let mut done = [false; MAX_PROCESSES];
    let mut passed = [false; MAX_PROCESSES];
    let mut unknown = [false; MAX_PROCESSES];
    let awaited = SYSTEM.processes.iter().filter(|p| p.wait).count();
    if awaited == 0 {
        println!("root: no process to wait for; stopping");
        exit(0);
    }
    loop {
        let mut mrs = [0u64; 4];
        let (info, badge) = sel4_abi::syscalls::recv_with_mrs(ep.cptr(), &mut mrs);
        let who = (badge.0 & 0xffff) as usize;
        let Some(p) = SYSTEM.processes.get(who) else {
            println!("root: message with unknown badge {:#x}", badge.0);
            continue;
        };
        // A process that is done is stopped with everything it made: nothing
        // of it is left to send. Should something be, it is not heard.
        if done[who] {
            continue;
        }
        // Stopped first, printed after: the root task's lines wait on the
        // console lock, which the console thread (below the root task's
        // priority) may hold, and the process must be stopped by then.
        if badge.0 & FAULT_BADGE != 0 {
            // The faulting thread stays blocked (no reply); stop it and the
            // process's other threads for good. A thread stopped halfway
            // through printing holds nothing: its message is either with
            // the console thread already or not sent.
            if let Some(r) = running[who] {
                r.stop();
            }
            report_fault(p.name, info, &mrs);
            done[who] = true;
            passed[who] = false;
            retire(supervisor, p);
        } else if badge.0 & CONTROL_BADGE != 0 && info.label() == procinfo::control::DONE {
            let pass = mrs[0] == 1;
            // Done is done for the whole process: a thread it left running
            // could go on using what it holds (the IOMMU server refuses a
            // retired client too).
            if let Some(r) = running[who] {
                r.stop();
            }
            println!(
                "root: {} done: {}",
                p.name,
                if pass { "pass" } else { "FAIL" }
            );
            done[who] = true;
            passed[who] = pass;
            retire(supervisor, p);
        } else {
            // Said once per process: a process sending these in a loop must
            // not keep the root task printing at its priority.
            if !unknown[who] {
                println!(
                    "root: {} sent an unknown message (label {:#x}); more are ignored",
                    p.name,
                    info.label()
                );
                unknown[who] = true;
            }
            continue;
        }
        let finished = SYSTEM
            .processes
            .iter()
            .enumerate()
            .filter(|(i, p)| p.wait && done[*i])
            .count();
        if finished == awaited {
            let ok = SYSTEM
                .processes
                .iter()
                .enumerate()
                .all(|(i, p)| !p.wait || passed[i]);
            println!(
                "root: all {awaited} awaited process(es) done: {}",
                if ok { "PASS" } else { "FAIL" }
            );
            exit(if ok { 0 } else { 1 });
        }
    }
}

/// A process that ended (done, or stopped after a fault) is gone for good:
/// if it is a client of the IOMMU server, tell the server over the
/// supervisor cap, so that its devices stop reaching memory and what it
/// held (tables, ASIDs, frame caps) is free for the others.
fn retire(supervisor: Option<CPtr>, p: &desc::Process) {
    use procinfo::supervisor::{Retired, RETIRE};
    let (Some(cap), Some(badge)) = (supervisor, process::iommu_badge(p)) else {
        return;
    };
    let mut mrs = [badge, 0, 0, 0];
    let reply = sel4_abi::syscalls::call_with_mrs(cap, MessageInfo::new(RETIRE, 0, 0, 1), &mut mrs);
    if reply.label() != 0 {
        println!(
            "root: retiring {} at the IOMMU server failed (error {})",
            p.name, mrs[0]
        );
        return;
    }
    let r = Retired::from_mrs(&mrs);
    println!(
        "root: retired {} at the IOMMU server: {} streams detached, {} domains freed ({} page-table pages, {} mappings, {} bytes), {} memory registrations released ({} frame caps), {} faults dropped",
        p.name, r.streams, r.domains, r.pt_pages, r.mappings, r.mapped_bytes, r.memory_regions, r.frames, r.faults
    );
}

fn report_fault(name: &str, info: MessageInfo, mrs: &[u64; 4]) {
    match Fault::decode_received(info, mrs) {
        Fault::VM {
            ip,
            addr,
            prefetch,
            fsr,
        } => println!(
            "FAULT in {name}: VM fault at address {addr:#x}, pc {ip:#x}, {} (FSR {fsr:#x})",
            if prefetch {
                "instruction fetch"
            } else {
                "data access"
            },
        ),
        Fault::Cap {
            ip, addr, lookup, ..
        } => {
            println!("FAULT in {name}: capability fault at pc {ip:#x}, cptr {addr:#x} ({lookup:?})")
        }
        Fault::UnknownSyscall {
            fault_ip, syscall, ..
        } => {
            println!("FAULT in {name}: unknown syscall {syscall} at pc {fault_ip:#x}")
        }
        Fault::UserException {
            fault_ip,
            number,
            code,
            ..
        } => println!(
            "FAULT in {name}: user exception {number:#x} (code {code:#x}) at pc {fault_ip:#x}"
        ),
        other => println!("FAULT in {name}: {other:?}"),
    }
}

/// On a kernel without printing, maps the PL011 (a device untyped then) into
/// the root task for its own output; returns its frame cap for a process
/// whose description asks for it (`uart = true`).
#[cfg(not(sel4_debug_build))]
fn setup_console(k: &mut Kernel) -> Option<CPtr> {
    use sel4_abi::{CapRights, VMAttributes};
    const UART_PADDR: u64 = 0x0900_0000;
    const ROOT_UART_VADDR: u64 = 0x7f00_0020_0000;
    let frame = k.device_frames(UART_PADDR, kobj::PAGE).ok()?;
    let copy = k.slot().ok()?;
    kobj::INIT_CNODE
        .copy(
            copy.0,
            kobj::DEPTH,
            kobj::INIT_CNODE,
            frame.0,
            kobj::DEPTH,
            CapRights::ALL,
        )
        .ok()?;
    k.map(
        kobj::INIT_VSPACE,
        copy,
        ROOT_UART_VADDR,
        CapRights::READ_WRITE,
        VMAttributes::EXECUTE_NEVER,
    )
    .ok()?;
    out::UART.store(ROOT_UART_VADDR, core::sync::atomic::Ordering::Relaxed);
    Some(frame)
}

/// A debug kernel prints for everyone (`seL4_DebugPutChar`).
#[cfg(sel4_debug_build)]
fn setup_console(_: &mut Kernel) -> Option<CPtr> {
    None
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("root: PANIC: {info}");
    exit(3)
}
