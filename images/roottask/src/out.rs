//! Printing through the kernel's debug console (`seL4_DebugPutChar`).

use core::fmt::{self, Write};

pub struct Console;

/// Where the PL011 is mapped in the root task once `map_uart` ran (kernels
/// without printing only).
#[cfg(not(sel4_debug_build))]
pub static UART: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        #[cfg(sel4_debug_build)]
        for b in s.bytes() {
            sel4_abi::syscalls::debug_put_char(b);
        }
        #[cfg(not(sel4_debug_build))]
        {
            let uart = UART.load(core::sync::atomic::Ordering::Relaxed);
            if uart != 0 {
                for b in s.bytes() {
                    // SAFETY: UART is set only after the PL011 was mapped there.
                    unsafe { procinfo::pl011_putc(uart, b) };
                }
            }
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::out::Console, $($arg)*);
    }};
}
