//! A `print!`-like writer over `seL4_DebugPutChar`.
//!
//! In kernels without `CONFIG_DEBUG_BUILD` (and on the host) the writer
//! discards its output, so code can print unconditionally.

/// Writes to the kernel console, one `DebugPutChar` per byte.
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugWriter;

impl DebugWriter {
    /// Whether output goes anywhere (a debug kernel on AArch64).
    pub const ENABLED: bool = cfg!(all(target_arch = "aarch64", sel4_debug_build));

    pub fn write_bytes(&mut self, bytes: &[u8]) {
        #[cfg(all(target_arch = "aarch64", sel4_debug_build))]
        for &b in bytes {
            crate::syscalls::debug_put_char(b);
        }
        #[cfg(not(all(target_arch = "aarch64", sel4_debug_build)))]
        let _ = bytes;
    }
}

impl core::fmt::Write for DebugWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: core::fmt::Arguments) {
    let _ = core::fmt::Write::write_fmt(&mut DebugWriter, args);
}

/// `print!` to the seL4 kernel console (debug kernels; a no-op otherwise).
#[macro_export]
macro_rules! debug_print {
    ($($arg:tt)*) => { $crate::debug::_print(format_args!($($arg)*)) };
}

/// `println!` to the seL4 kernel console (debug kernels; a no-op otherwise).
#[macro_export]
macro_rules! debug_println {
    () => { $crate::debug::_print(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::debug::_print(format_args!($($arg)*));
        $crate::debug::_print(format_args!("\n"));
    }};
}
