//! The IPC buffer (`seL4_IPCBuffer`): message registers beyond the fourth,
//! extra caps, received badges and the capability receive path.
//!
//! Layout (libsel4 `shared_types.h`, 64-bit words, 1024 bytes, aligned to its
//! size): `tag` @0, `msg[120]` @8, `userData` @968, `caps_or_badges[3]` @976,
//! `receiveCNode` @1000, `receiveIndex` @1008, `receiveDepth` @1016.
//! On this configuration (`CONFIG_IPC_BUF_TPIDRURW`) the kernel keeps each
//! thread's buffer address in `TPIDR_EL0` (set at boot for the root task, and
//! by `TCB::configure`/`set_ipc_buffer` for other threads). The kernel
//! rewrites `TPIDR_EL0` from the TCB on every return to user mode and does not
//! save what user code writes there (`arch_c_entry_hook`,
//! `restore_user_context`), so writing it from user space has no lasting
//! effect: give the buffer address to `TCB::configure` instead.

use crate::message::{MSG_MAX_EXTRA_CAPS, MSG_MAX_LENGTH};
use crate::types::{Badge, CPtr, Word};

/// `seL4_IPCBuffer`.
#[repr(C, align(1024))]
#[derive(Clone, Debug)]
pub struct IpcBuffer {
    pub tag: Word,
    pub msg: [Word; MSG_MAX_LENGTH],
    pub user_data: Word,
    /// Caps to send (as CPtrs), or badges of received caps that were unwrapped.
    pub caps_or_badges: [Word; MSG_MAX_EXTRA_CAPS],
    pub receive_cnode: Word,
    pub receive_index: Word,
    pub receive_depth: Word,
}

impl Default for IpcBuffer {
    fn default() -> IpcBuffer {
        IpcBuffer {
            tag: 0,
            msg: [0; MSG_MAX_LENGTH],
            user_data: 0,
            caps_or_badges: [0; MSG_MAX_EXTRA_CAPS],
            receive_cnode: 0,
            receive_index: 0,
            receive_depth: 0,
        }
    }
}

/// Byte offsets, for code that must address the buffer without the type.
pub mod offsets {
    pub const TAG: usize = 0;
    pub const MSG: usize = 8;
    pub const USER_DATA: usize = 968;
    pub const CAPS_OR_BADGES: usize = 976;
    pub const RECEIVE_CNODE: usize = 1000;
    pub const RECEIVE_INDEX: usize = 1008;
    pub const RECEIVE_DEPTH: usize = 1016;
    pub const SIZE: usize = 1024;
}

impl IpcBuffer {
    /// Message register `i` as stored in the buffer. MRs 0..4 travel in
    /// registers; the syscall wrappers that take no explicit MRs
    /// (`syscalls::call` etc.) copy them to and from `msg[0..4]`.
    pub fn mr(&self, i: usize) -> Word {
        self.msg[i]
    }
    pub fn set_mr(&mut self, i: usize, w: Word) {
        self.msg[i] = w;
    }
    /// Put `cap` in extra-cap slot `i` of the next message sent.
    pub fn set_cap(&mut self, i: usize, cap: CPtr) {
        self.caps_or_badges[i] = cap.0;
    }
    /// Extra cap `i` as last set.
    pub fn cap(&self, i: usize) -> CPtr {
        CPtr(self.caps_or_badges[i])
    }
    /// Badge of received cap `i` when `MessageInfo::caps_unwrapped` has bit `i`.
    pub fn badge(&self, i: usize) -> Badge {
        Badge(self.caps_or_badges[i])
    }
    /// Where the next received cap goes: slot `index` (resolved to `depth`
    /// bits) in the CNode `cnode` (itself resolved in the receiver's CSpace).
    /// Depth 0 / null cnode: receive no caps.
    pub fn set_receive_path(&mut self, cnode: CPtr, index: Word, depth: Word) {
        self.receive_cnode = cnode.0;
        self.receive_index = index;
        self.receive_depth = depth;
    }
    pub fn receive_path(&self) -> (CPtr, Word, Word) {
        (
            CPtr(self.receive_cnode),
            self.receive_index,
            self.receive_depth,
        )
    }
    /// Copy `words` into `msg[start..]` (for messages built in place).
    pub fn set_mrs(&mut self, start: usize, words: &[Word]) {
        self.msg[start..start + words.len()].copy_from_slice(words);
    }
    /// The message registers as bytes (little-endian words, 960 bytes).
    pub fn msg_bytes(&self) -> &[u8] {
        // SAFETY: `msg` is a live, initialised array of u64; viewing its
        // storage as bytes is always valid (u8 has no alignment or validity
        // requirement) and the length is exactly its size.
        unsafe {
            core::slice::from_raw_parts(
                self.msg.as_ptr().cast::<u8>(),
                core::mem::size_of_val(&self.msg),
            )
        }
    }
    /// Mutable byte view of the message registers.
    pub fn msg_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `msg_bytes`; every byte pattern is a valid u64, and the
        // exclusive borrow of `self` covers the whole array.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.msg.as_mut_ptr().cast::<u8>(),
                core::mem::size_of_val(&self.msg),
            )
        }
    }
}

/// This thread's IPC buffer, from `TPIDR_EL0`.
///
/// Returns `None` if the register is 0 (a thread created without a buffer).
/// The reference is to thread-local memory that the kernel also writes during
/// syscalls: do not hold it across a syscall that receives into it while
/// another reference exists — take it again after each syscall instead.
#[cfg(target_arch = "aarch64")]
pub fn ipc_buffer() -> Option<&'static mut IpcBuffer> {
    let p = crate::arch::tpidr_el0() as *mut IpcBuffer;
    if p.is_null() {
        return None;
    }
    // SAFETY: with CONFIG_IPC_BUF_TPIDRURW the kernel restores TPIDR_EL0 to this
    // thread's IPC buffer address (a mapped, 1024-byte-aligned frame region the
    // thread owns) on every return to user mode; only this thread uses it.
    Some(unsafe { &mut *p })
}

/// This thread's IPC buffer; panics if the thread has none.
#[cfg(target_arch = "aarch64")]
pub fn buf() -> &'static mut IpcBuffer {
    ipc_buffer().expect("this thread has no IPC buffer (TPIDR_EL0 is 0)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layout() {
        assert_eq!(size_of::<IpcBuffer>(), offsets::SIZE);
        assert_eq!(align_of::<IpcBuffer>(), 1024);
        assert_eq!(offset_of!(IpcBuffer, tag), offsets::TAG);
        assert_eq!(offset_of!(IpcBuffer, msg), offsets::MSG);
        assert_eq!(offset_of!(IpcBuffer, user_data), offsets::USER_DATA);
        assert_eq!(
            offset_of!(IpcBuffer, caps_or_badges),
            offsets::CAPS_OR_BADGES
        );
        assert_eq!(offset_of!(IpcBuffer, receive_cnode), offsets::RECEIVE_CNODE);
        assert_eq!(offset_of!(IpcBuffer, receive_index), offsets::RECEIVE_INDEX);
        assert_eq!(offset_of!(IpcBuffer, receive_depth), offsets::RECEIVE_DEPTH);
    }

    #[test]
    fn accessors() {
        let mut b = IpcBuffer::default();
        b.set_mrs(4, &[0x0807_0605_0403_0201, 9]);
        assert_eq!((b.mr(4), b.mr(5)), (0x0807_0605_0403_0201, 9));
        assert_eq!(&b.msg_bytes()[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
        b.msg_bytes_mut()[0] = 0xff;
        assert_eq!(b.mr(0), 0xff);
        b.set_cap(2, CPtr(7));
        assert_eq!((b.cap(2), b.badge(2)), (CPtr(7), Badge(7)));
        b.set_receive_path(CPtr(2), 40, 64);
        assert_eq!(b.receive_path(), (CPtr(2), 40, 64));
    }
}
