//! The root task's output: through the kernel's debug console
//! (`seL4_DebugPutChar`), or the PL011 on kernels without printing, a
//! message at a time under the root task's own console lock.
//!
//! Two threads print here: the main one (`println!`) and the console thread
//! (`console`, what the processes send). The lock is a notification only
//! these two hold, so no process can take it, and their messages never
//! interleave.

use core::sync::atomic::{AtomicU64, Ordering};
use sel4_abi::CPtr;

/// Where the PL011 is mapped in the root task once `setup_console` ran
/// (kernels without printing only).
#[cfg(not(sel4_debug_build))]
pub static UART: AtomicU64 = AtomicU64::new(0);

/// The console lock's slot once it exists (0 before: boot is single-threaded).
static LOCK: AtomicU64 = AtomicU64::new(0);

/// From now on the root task's messages take the console lock at `lock`
/// (a notification signalled once, which no process holds a cap to).
pub fn set_console_lock(lock: CPtr) {
    LOCK.store(lock.0, Ordering::Relaxed);
}

fn lock() -> Option<CPtr> {
    match LOCK.load(Ordering::Relaxed) {
        0 => None,
        slot => Some(CPtr(slot)),
    }
}

/// Writes `bytes` (one process's message) whole, under the console lock.
pub fn write_whole(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    sel4_abi::debug::with_console_lock(lock(), || put(bytes));
}

fn put(bytes: &[u8]) {
    #[cfg(sel4_debug_build)]
    for &b in bytes {
        sel4_abi::syscalls::debug_put_char(b);
    }
    #[cfg(not(sel4_debug_build))]
    {
        let uart = UART.load(Ordering::Relaxed);
        if uart != 0 {
            for &b in bytes {
                // SAFETY: UART is set only after the PL011 was mapped there.
                unsafe { procinfo::pl011_putc(uart, b) };
            }
        }
    }
}

#[doc(hidden)]
pub fn _print(args: core::fmt::Arguments) {
    sel4_abi::debug::print_whole(lock(), args, put);
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::out::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
