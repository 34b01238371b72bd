//! The runtime of a process started by the root task: entry point, console
//! output (through the root task), `done` reporting and the panic handler.
//!
//! A process crate depends on `procrt` and names its main function with
//! [`main!`]: `fn main(info: &'static StartInfo) -> bool`, where the result is
//! its verdict (reported to the root task as `done(pass)`). Threads the
//! description gives the process are started with [`spawn`]. It is a crate of
//! its own (not a feature of `procinfo`) because it defines the panic handler,
//! which the loader and the root task define for themselves.
#![no_std]

pub mod sync;

use core::fmt;
pub use procinfo::{self, StartInfo, ThreadInfo};
use procinfo::{console, control, slot};
use sel4_abi::{syscalls, CPtr, MessageInfo, UserContext, TCB};

core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    // The root task set sp (stack top) and x0 (the start-info page).
    "    mov x29, #0",
    "    mov x30, #0",
    "    bl {entry}",
    "1:  b 1b",
    entry = sym entry,
);

core::arch::global_asm!(
    ".section .text._thread_start, \"ax\"",
    ".global _thread_start",
    "_thread_start:",
    // spawn set sp, x0 (the argument), x1 (the function) and x2 (the IPC
    // buffer, which sel4-abi finds through TPIDR_EL0).
    "    mov x29, #0",
    "    mov x30, #0",
    "    msr tpidr_el0, x2",
    "    blr x1",
    "1:  b 1b",
);

extern "C" {
    fn _thread_start();
}

static mut INFO: Option<&'static StartInfo> = None;

/// Iterations a benchmark process runs per measurement: `BENCH_ITERATIONS`
/// when the image was built with it (`cargo xtask bench --iterations N` /
/// `--quick` set it), else `default`.
pub const fn bench_iterations(default: u64) -> u64 {
    match option_env!("BENCH_ITERATIONS") {
        Some(s) => {
            // Decimal digits, in a `const` context.
            let b = s.as_bytes();
            let mut i = 0;
            let mut n = 0u64;
            while i < b.len() {
                n = n * 10 + (b[i] - b'0') as u64;
                i += 1;
            }
            n
        }
        None => default,
    }
}

/// This process's start info.
pub fn info() -> &'static StartInfo {
    // SAFETY: written once in `entry` before any other code runs, then only read.
    unsafe { INFO.expect("start info not set") }
}

extern "Rust" {
    fn __process_main(info: &'static StartInfo) -> bool;
}

extern "C" fn entry(info: *const StartInfo) -> ! {
    // SAFETY: the root task maps the start-info page read-only at `info`
    // for the life of the process.
    let info: &'static StartInfo = unsafe { &*info };
    // SAFETY: single-threaded start-up; nothing reads INFO yet.
    unsafe { INFO = Some(info) };
    if !info.is_valid() {
        _print(format_args!("process: bad start-info page\n"));
        done(false);
    }
    // sel4-abi finds the IPC buffer through TPIDR_EL0.
    // SAFETY: TPIDR_EL0 is the user-writable thread register; only sel4-abi reads it.
    unsafe { core::arch::asm!("msr tpidr_el0, {}", in(reg) info.ipc_buffer) };
    // SAFETY: defined by the process crate through `procinfo::main!`.
    let pass = unsafe { __process_main(info) };
    done(pass)
}

/// Starts one of the process's suspended threads (from the start info):
/// `entry(arg)` on its own stack, at its own priority. `entry` must never
/// return (a thread that is done calls [`done`] or blocks for good).
pub fn spawn(
    thread: &ThreadInfo,
    entry: extern "C" fn(usize) -> !,
    arg: usize,
) -> Result<(), sel4_abi::Error> {
    // pc, sp, spsr, x0, x1, x2: the first six registers of seL4_UserContext.
    let regs = UserContext {
        pc: _thread_start as *const () as u64,
        sp: thread.stack_top,
        x0: arg as u64,
        x1: entry as usize as u64,
        x2: thread.ipc_buffer,
        ..Default::default()
    };
    TCB(CPtr(thread.tcb)).write_registers(true, 0, 6, &regs)
}

/// The index in `StartInfo::threads` of the thread this code runs on: the
/// one whose IPC buffer is in `TPIDR_EL0` (None before the runtime set it).
pub fn current_thread_index() -> Option<usize> {
    let tpidr: u64;
    // SAFETY: reading the user thread register has no side effects.
    unsafe { core::arch::asm!("mrs {}, tpidr_el0", out(reg) tpidr) };
    // SAFETY: set once before main runs; read-only afterwards.
    let info = unsafe { INFO }?;
    info.threads().iter().position(|t| t.ipc_buffer == tpidr)
}

/// Tells the root task that this process, the IOMMU server, has the SMMU
/// enabled with every stream aborting: the root task then starts the other
/// processes and turns on PCI bus mastering. Any other process's `ready` is
/// not awaited and changes nothing.
pub fn ready() {
    let info = MessageInfo::new(control::READY, 0, 0, 0);
    syscalls::send_with_mrs(CPtr(slot::CONTROL_EP), info, [0; 4]);
}

/// Reports the verdict to the root task, then stops this thread (the one
/// that calls it: a worker thread that spun on here would starve every
/// thread below its priority).
pub fn done(pass: bool) -> ! {
    let info = MessageInfo::new(control::DONE, 0, 0, 1);
    syscalls::send_with_mrs(CPtr(slot::CONTROL_EP), info, [pass as u64, 0, 0, 0]);
    // SAFETY: set once before main runs; read-only afterwards.
    let threads = unsafe { INFO }.map_or(&[][..], |i| i.threads());
    let own = current_thread_index()
        .and_then(|i| threads.get(i))
        .map_or(0, |t| t.tcb);
    // Entry 0 (the main thread) has tcb 0: its TCB is in slot::TCB.
    let tcb = if own == 0 { slot::TCB } else { own };
    let _ = TCB(CPtr(tcb)).suspend();
    loop {
        syscalls::yield_now();
    }
}

#[doc(hidden)]
/// Output through the root task's console thread: each message is formatted
/// into a buffer, then sent whole (`procinfo::console`) on the console
/// endpoint (`slot::CONSOLE`). The send blocks until the console thread
/// takes the message, which it prints whole before it takes the next; the
/// process holds nothing while it waits, or if it is stopped meanwhile.
pub fn _print(args: fmt::Arguments) {
    sel4_abi::debug::print_whole(None, args, send_to_console);
}

/// Sends `bytes` to the console thread, a message per
/// `console::MAX_BYTES`. Words 0..4 travel in registers; the IPC buffer
/// words a message needs beyond those are restored afterwards, so that
/// printing between a receive and reading its message changes nothing.
fn send_to_console(bytes: &[u8]) {
    for chunk in bytes.chunks(console::MAX_BYTES) {
        let words = console::words(chunk.len());
        let mut mrs = [0; 4];
        for (i, m) in mrs.iter_mut().enumerate() {
            *m = console::word(chunk, i);
        }
        // The IPC buffer words this message needs (4.. words), saved.
        let buffered = 4..words.max(4);
        let mut saved = [0; console::MAX_WORDS];
        let ipc = sel4_abi::ipc_buffer::buf();
        saved[buffered.clone()].copy_from_slice(&ipc.msg[buffered.clone()]);
        for (i, m) in ipc.msg[buffered.clone()].iter_mut().enumerate() {
            *m = console::word(chunk, 4 + i);
        }
        let info = MessageInfo::new(chunk.len() as u64, 0, 0, words as u64);
        syscalls::send_with_mrs(CPtr(slot::CONSOLE), info, mrs);
        let ipc = sel4_abi::ipc_buffer::buf();
        ipc.msg[buffered.clone()].copy_from_slice(&saved[buffered]);
    }
}

/// Writes `args` straight to the PL011, as it is formatted: no buffer and
/// no system call, for output that must not add kernel entries to what it
/// marks (the benchmark's trace markers, which `cargo xtask bench
/// --profile` reads as the driver's). Other output may interleave with it.
///
/// Only a process whose description says `uart = true` (on a kernel
/// without printing) has the PL011 mapped (`StartInfo::console`); any other
/// process panics here, so that a marker never goes missing unnoticed.
pub fn print_unlocked(args: fmt::Arguments) {
    // SAFETY: set once before main runs; read-only afterwards.
    let uart = unsafe { INFO }.map_or(0, |i| i.console);
    if uart == 0 {
        panic!("print_unlocked: no PL011 mapped here (the system description needs uart = true, on a kernel = \"release\" system)");
    }
    sel4_abi::debug::print_direct(args, |bytes| {
        for &b in bytes {
            // SAFETY: the root task maps the PL011 at `console`.
            unsafe { procinfo::pl011_putc(uart, b) };
        }
    });
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Names the process's main function: `fn(&'static StartInfo) -> bool`.
#[macro_export]
macro_rules! main {
    ($main:path) => {
        #[no_mangle]
        fn __process_main(info: &'static $crate::StartInfo) -> bool {
            $main(info)
        }
    };
}

#[panic_handler]
fn panic(p: &core::panic::PanicInfo) -> ! {
    let name = match unsafe { INFO } {
        Some(i) => i.name.as_str(),
        None => "?",
    };
    _print(format_args!("PANIC in {name}: {p}\n"));
    done(false)
}
