//! The runtime of a process started by the root task: entry point, console
//! output, `done` reporting and the panic handler.
//!
//! A process crate depends on `procrt` and names its main function with
//! [`main!`]: `fn main(info: &'static StartInfo) -> bool`, where the result is
//! its verdict (reported to the root task as `done(pass)`). It is a crate of
//! its own (not a feature of `procinfo`) because it defines the panic handler,
//! which the loader and the root task define for themselves.
#![no_std]

use core::fmt::{self, Write};
pub use procinfo::{self, StartInfo};
use procinfo::{control, slot};
use sel4_abi::{syscalls, CPtr, MessageInfo, TCB};

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
        Console.write_str("process: bad start-info page\n").ok();
        done(false);
    }
    // sel4-abi finds the IPC buffer through TPIDR_EL0.
    // SAFETY: TPIDR_EL0 is the user-writable thread register; only sel4-abi reads it.
    unsafe { core::arch::asm!("msr tpidr_el0, {}", in(reg) info.ipc_buffer) };
    // SAFETY: defined by the process crate through `procinfo::main!`.
    let pass = unsafe { __process_main(info) };
    done(pass)
}

/// Reports the verdict to the root task, then stops this thread.
pub fn done(pass: bool) -> ! {
    let info = MessageInfo::new(control::DONE, 0, 0, 1);
    syscalls::send_with_mrs(CPtr(slot::CONTROL_EP), info, [pass as u64, 0, 0, 0]);
    let _ = TCB(CPtr(slot::TCB)).suspend();
    loop {
        syscalls::yield_now();
    }
}

/// Output through the kernel's debug console.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        #[cfg(sel4_debug_build)]
        for b in s.bytes() {
            syscalls::debug_put_char(b);
        }
        #[cfg(not(sel4_debug_build))]
        {
            // SAFETY: set once before main runs; read-only afterwards.
            let uart = unsafe { INFO }.map_or(0, |i| i.console);
            if uart != 0 {
                for b in s.bytes() {
                    // SAFETY: the root task maps the PL011 at `console`.
                    unsafe { procinfo::pl011_putc(uart, b) };
                }
            }
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let _ = Console.write_fmt(args);
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
    let _ = writeln!(Console, "PANIC in {name}: {p}");
    done(false)
}
