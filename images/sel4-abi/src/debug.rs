//! A `print!`-like writer over `seL4_DebugPutChar`.
//!
//! In kernels without `CONFIG_DEBUG_BUILD` (and on the host) the writer
//! discards its output, so code can print unconditionally.
//!
//! [`print_whole`] is how the root task and its processes format what they
//! print: the console takes one byte per system call (or per PL011 write),
//! so two threads writing at once would interleave their lines byte by
//! byte, and the image tests read those lines. A process hands each
//! formatted message to the root task's console thread in one IPC message;
//! the root task's own two threads take turns under a lock of their own.

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

/// Bytes [`print_whole`] formats before it writes: one IPC message's worth
/// (`seL4_MsgMaxLength` words), so that each piece a process writes is one
/// message to the root task's console thread (`procinfo::console`). Every
/// message of the project fits (the longest, the IOMMU server's SMMU
/// feature line, is 529 bytes), so formatting, which could panic or fault
/// (a stack guard page), is over before anything is written, and before
/// the root task's lock is taken.
pub const WHOLE_CHUNK: usize = crate::message::MSG_MAX_LENGTH * 8;

/// Writes one message to the console as a unit. The message is formatted
/// into a buffer first, then `put` writes it: at once if it fits
/// [`WHOLE_CHUNK`], else in chunks of that size. With a `lock` (a
/// notification signalled once when it was made, so `Wait` takes it and
/// `Signal` gives it back), the lock is held while `put` writes, chunks
/// included; the root task's two threads share one, which no process holds.
/// A process passes none: its `put` sends each chunk to the root task's
/// console thread, which prints one message at a time.
pub fn print_whole(
    lock: Option<crate::CPtr>,
    args: core::fmt::Arguments,
    mut put: impl FnMut(&[u8]),
) {
    let mut whole = Whole {
        buf: [0; WHOLE_CHUNK],
        len: 0,
        lock,
        held: false,
        put: &mut put,
    };
    let _ = core::fmt::Write::write_fmt(&mut whole, args);
    whole.flush();
    if whole.held {
        release(lock);
    }
}

/// Writes `args` as it is formatted, piece by piece, with no buffer and no
/// lock (output that must not cost a system call; other output may
/// interleave with it).
pub fn print_direct(args: core::fmt::Arguments, mut put: impl FnMut(&[u8])) {
    let _ = core::fmt::Write::write_fmt(&mut Direct(&mut put), args);
}

struct Direct<'a, P: FnMut(&[u8])>(&'a mut P);

impl<P: FnMut(&[u8])> core::fmt::Write for Direct<'_, P> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if !s.is_empty() {
            (self.0)(s.as_bytes());
        }
        Ok(())
    }
}

struct Whole<'a, P: FnMut(&[u8])> {
    buf: [u8; WHOLE_CHUNK],
    len: usize,
    lock: Option<crate::CPtr>,
    held: bool,
    put: &'a mut P,
}

impl<P: FnMut(&[u8])> Whole<'_, P> {
    fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        if !self.held {
            acquire(self.lock);
            self.held = true;
        }
        (self.put)(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl<P: FnMut(&[u8])> core::fmt::Write for Whole<'_, P> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == WHOLE_CHUNK {
                self.flush();
            }
            let n = rest.len().min(WHOLE_CHUNK - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// Runs `f` holding `lock` (see [`print_whole`]): no other holder is
/// halfway through a message while `f` runs.
pub fn with_console_lock<R>(lock: Option<crate::CPtr>, f: impl FnOnce() -> R) -> R {
    acquire(lock);
    let r = f();
    release(lock);
    r
}

fn acquire(lock: Option<crate::CPtr>) {
    #[cfg(target_arch = "aarch64")]
    if let Some(lock) = lock {
        crate::syscalls::wait(crate::Notification(lock));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = lock;
}

fn release(lock: Option<crate::CPtr>) {
    #[cfg(target_arch = "aarch64")]
    if let Some(lock) = lock {
        crate::syscalls::signal(crate::Notification(lock));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = lock;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host takes no lock: with one or without, the text is buffered.
    fn written(args: core::fmt::Arguments) -> Vec<Vec<u8>> {
        let mut puts = Vec::new();
        print_whole(Some(crate::CPtr(6)), args, |b| puts.push(b.to_vec()));
        let mut unlocked = Vec::new();
        print_whole(None, args, |b| unlocked.push(b.to_vec()));
        assert_eq!(puts, unlocked);
        puts
    }

    #[test]
    fn a_line_is_written_in_one_put() {
        let puts = written(format_args!("{} {}\n", "check", 42));
        assert_eq!(puts, vec![b"check 42\n".to_vec()]);
    }

    #[test]
    fn a_long_message_is_written_whole_and_in_order_in_chunks() {
        let text: String = (0..3 * WHOLE_CHUNK + 17)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let puts = written(format_args!("{text}"));
        assert_eq!(puts.len(), 4);
        assert!(puts[..3].iter().all(|p| p.len() == WHOLE_CHUNK));
        assert_eq!(puts.concat(), text.as_bytes());
    }

    #[test]
    fn nothing_is_written_for_an_empty_message() {
        assert!(written(format_args!("")).is_empty());
    }

    #[test]
    fn a_chunk_is_one_ipc_message() {
        assert_eq!(WHOLE_CHUNK, 960);
    }

    #[test]
    fn direct_pieces_go_out_as_they_are_formatted() {
        let mut puts = Vec::new();
        // Not literals, which the compiler would fold into one piece.
        let (word, n) = (std::hint::black_box("check"), std::hint::black_box(42));
        print_direct(format_args!("{word} {n}\n"), |b| puts.push(b.to_vec()));
        assert!(puts.len() > 1, "{puts:?}");
        assert_eq!(puts.concat(), b"check 42\n");
    }
}
