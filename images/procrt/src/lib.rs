//! The runtime of a process started by the root task: entry point, console
//! output, `done` reporting and the panic handler.
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
use procinfo::{control, slot};
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
/// Output through the kernel's debug console (or the PL011 on kernels
/// without printing), a message at a time under the console lock.
pub fn _print(args: fmt::Arguments) {
    // SAFETY: set once before main runs; read-only afterwards.
    let locked = unsafe { INFO }.is_some();
    print_to_console(locked, args);
}

/// Writes `args` to the console without the console lock, so without a
/// system call on kernels without printing: for output that must not add
/// kernel entries to what it marks (the benchmark's trace markers, which
/// `cargo xtask bench --profile` reads as the driver's). Other threads'
/// messages may interleave with it.
pub fn print_unlocked(args: fmt::Arguments) {
    print_to_console(false, args);
}

fn print_to_console(locked: bool, args: fmt::Arguments) {
    let lock = locked.then_some(CPtr(slot::CONSOLE_LOCK));
    sel4_abi::debug::print_whole(lock, args, |bytes| {
        #[cfg(sel4_debug_build)]
        for &b in bytes {
            syscalls::debug_put_char(b);
        }
        #[cfg(not(sel4_debug_build))]
        {
            // SAFETY: set once before main runs; read-only afterwards.
            let uart = unsafe { INFO }.map_or(0, |i| i.console);
            if uart != 0 {
                for &b in bytes {
                    // SAFETY: the root task maps the PL011 at `console`.
                    unsafe { procinfo::pl011_putc(uart, b) };
                }
            }
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
