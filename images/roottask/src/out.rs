//! Printing through the kernel's debug console (`seL4_DebugPutChar`).

use core::fmt::{self, Write};

pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            sel4_abi::syscalls::debug_put_char(b);
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
