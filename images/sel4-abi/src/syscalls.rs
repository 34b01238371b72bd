//! The seL4 5.0.0 system calls (AArch64 only).
//!
//! Two flavours of each IPC syscall, as in libsel4:
//! - `foo(...)`: message registers 0..3 are taken from / written back to the
//!   IPC buffer's `msg[0..4]`, so the whole message is read with
//!   [`IpcBuffer::mr`](crate::IpcBuffer::mr);
//! - `foo_with_mrs(...)`: MRs 0..3 are passed as an array and never touch the
//!   IPC buffer (a message of up to four words and no caps needs no buffer:
//!   the kernel's fastpath).
//!
//! 5.0.0 has no reply objects: [`reply`] and [`reply_recv`] answer the thread
//! whose `call` was received last.
//!
//! These functions are safe in Rust's sense like libsel4's are: the kernel
//! checks authority. An invocation that unmaps memory this program still uses
//! is a logic error the type system cannot see.

use crate::arch::{self, Mrs};
use crate::generated::Syscall;
use crate::ipc_buffer::buf;
use crate::message::MessageInfo;
#[cfg(sel4_debug_build)]
use crate::types::Word;
use crate::types::{Badge, CPtr, Notification};

fn mrs_from_buffer() -> Mrs {
    let b = buf();
    [b.msg[0], b.msg[1], b.msg[2], b.msg[3]]
}

fn mrs_to_buffer(m: Mrs) {
    buf().msg[..4].copy_from_slice(&m);
}

/// `seL4_Send`: blocking send on an endpoint (or a kernel invocation whose
/// reply is not wanted).
#[inline]
pub fn send(dest: impl Into<CPtr>, info: MessageInfo) {
    arch::sys_send(
        Syscall::Send as i64,
        dest.into().0,
        info.0,
        mrs_from_buffer(),
    );
}

/// `seL4_SendWithMRs`.
#[inline]
pub fn send_with_mrs(dest: impl Into<CPtr>, info: MessageInfo, mrs: Mrs) {
    arch::sys_send(Syscall::Send as i64, dest.into().0, info.0, mrs);
}

/// `seL4_NBSend`: send only if a receiver is waiting; otherwise dropped.
#[inline]
pub fn nb_send(dest: impl Into<CPtr>, info: MessageInfo) {
    arch::sys_send(
        Syscall::NBSend as i64,
        dest.into().0,
        info.0,
        mrs_from_buffer(),
    );
}

/// `seL4_NBSendWithMRs`.
#[inline]
pub fn nb_send_with_mrs(dest: impl Into<CPtr>, info: MessageInfo, mrs: Mrs) {
    arch::sys_send(Syscall::NBSend as i64, dest.into().0, info.0, mrs);
}

/// `seL4_Call`: send, then wait for the reply. Returns the reply's tag; the
/// reply's MRs are in the IPC buffer.
#[inline]
pub fn call(dest: impl Into<CPtr>, info: MessageInfo) -> MessageInfo {
    let (_, out, m) = arch::sys_send_recv(
        Syscall::Call as i64,
        dest.into().0,
        info.0,
        mrs_from_buffer(),
    );
    mrs_to_buffer(m);
    MessageInfo(out)
}

/// `seL4_CallWithMRs`: `mrs` carries MRs 0..3 in and the reply's out.
#[inline]
pub fn call_with_mrs(dest: impl Into<CPtr>, info: MessageInfo, mrs: &mut Mrs) -> MessageInfo {
    let (_, out, m) = arch::sys_send_recv(Syscall::Call as i64, dest.into().0, info.0, *mrs);
    *mrs = m;
    MessageInfo(out)
}

/// `seL4_Recv`: wait for a message (endpoint) or a signal (notification).
/// Returns the tag and the sender's badge; MRs are in the IPC buffer.
#[inline]
pub fn recv(src: impl Into<CPtr>) -> (MessageInfo, Badge) {
    let (badge, info, m) = arch::sys_recv(Syscall::Recv as i64, src.into().0);
    mrs_to_buffer(m);
    (MessageInfo(info), Badge(badge))
}

/// `seL4_RecvWithMRs`.
#[inline]
pub fn recv_with_mrs(src: impl Into<CPtr>, mrs: &mut Mrs) -> (MessageInfo, Badge) {
    let (badge, info, m) = arch::sys_recv(Syscall::Recv as i64, src.into().0);
    *mrs = m;
    (MessageInfo(info), Badge(badge))
}

/// `seL4_NBRecv`: receive if a message is pending; otherwise returns at once
/// (badge 0 and an empty tag on an endpoint).
#[inline]
pub fn nb_recv(src: impl Into<CPtr>) -> (MessageInfo, Badge) {
    let (badge, info, m) = arch::sys_recv(Syscall::NBRecv as i64, src.into().0);
    mrs_to_buffer(m);
    (MessageInfo(info), Badge(badge))
}

/// `seL4_NBRecvWithMRs`.
#[inline]
pub fn nb_recv_with_mrs(src: impl Into<CPtr>, mrs: &mut Mrs) -> (MessageInfo, Badge) {
    let (badge, info, m) = arch::sys_recv(Syscall::NBRecv as i64, src.into().0);
    *mrs = m;
    (MessageInfo(info), Badge(badge))
}

/// `seL4_Reply`: reply to the last caller (MRs 0..3 from the IPC buffer).
#[inline]
pub fn reply(info: MessageInfo) {
    arch::sys_reply(Syscall::Reply as i64, info.0, mrs_from_buffer());
}

/// `seL4_ReplyWithMRs`.
#[inline]
pub fn reply_with_mrs(info: MessageInfo, mrs: Mrs) {
    arch::sys_reply(Syscall::Reply as i64, info.0, mrs);
}

/// `seL4_ReplyRecv`: reply to the last caller, then wait on `src`. The
/// server loop's one syscall.
#[inline]
pub fn reply_recv(src: impl Into<CPtr>, info: MessageInfo) -> (MessageInfo, Badge) {
    let (badge, out, m) = arch::sys_send_recv(
        Syscall::ReplyRecv as i64,
        src.into().0,
        info.0,
        mrs_from_buffer(),
    );
    mrs_to_buffer(m);
    (MessageInfo(out), Badge(badge))
}

/// `seL4_ReplyRecvWithMRs`.
#[inline]
pub fn reply_recv_with_mrs(
    src: impl Into<CPtr>,
    info: MessageInfo,
    mrs: &mut Mrs,
) -> (MessageInfo, Badge) {
    let (badge, out, m) =
        arch::sys_send_recv(Syscall::ReplyRecv as i64, src.into().0, info.0, *mrs);
    *mrs = m;
    (MessageInfo(out), Badge(badge))
}

/// `seL4_Yield`: give up the rest of this time slice.
#[inline]
pub fn yield_now() {
    arch::sys_null(Syscall::Yield as i64);
}

/// `seL4_Signal`: Send on a notification with an empty message.
#[inline]
pub fn signal(ntfn: Notification) {
    arch::sys_send_null(
        Syscall::Send as i64,
        ntfn.0 .0,
        MessageInfo::new(0, 0, 0, 0).0,
    );
}

/// `seL4_Wait`: Recv on a notification; returns the accumulated badge bits.
#[inline]
pub fn wait(ntfn: Notification) -> Badge {
    let (badge, _, _) = arch::sys_recv(Syscall::Recv as i64, ntfn.0 .0);
    Badge(badge)
}

/// `seL4_Poll`: NBRecv on a notification; badge 0 if nothing was signalled.
#[inline]
pub fn poll(ntfn: Notification) -> Badge {
    let (badge, _, _) = arch::sys_recv(Syscall::NBRecv as i64, ntfn.0 .0);
    Badge(badge)
}

/// `seL4_DebugPutChar` (debug kernels): one byte to the kernel's console.
#[cfg(sel4_debug_build)]
#[inline]
pub fn debug_put_char(c: u8) {
    arch::sys_send_recv(Syscall::DebugPutChar as i64, c as Word, 0, [0; 4]);
}

/// `seL4_DebugHalt` (debug kernels): stop the whole system.
#[cfg(sel4_debug_build)]
#[inline]
pub fn debug_halt() {
    arch::sys_null(Syscall::DebugHalt as i64);
}

/// `seL4_DebugSnapshot` (debug kernels; a no-op on ARM 5.0.0 without a
/// capDL dump configuration).
#[cfg(sel4_debug_build)]
#[inline]
pub fn debug_snapshot() {
    arch::sys_null(Syscall::DebugSnapshot as i64);
}

/// `seL4_DebugCapIdentify` (debug kernels): the kernel's cap type number of
/// the cap at `cap` (0 = null cap).
#[cfg(sel4_debug_build)]
#[inline]
pub fn debug_cap_identify(cap: impl Into<CPtr>) -> u32 {
    let (r, _, _) = arch::sys_send_recv(Syscall::DebugCapIdentify as i64, cap.into().0, 0, [0; 4]);
    r as u32
}

/// `seL4_DebugNameThread` (debug kernels): name a thread in kernel output.
/// The name (truncated to fit the IPC buffer) is copied into this thread's
/// IPC buffer as a C string.
#[cfg(sel4_debug_build)]
pub fn debug_name_thread(tcb: crate::types::TCB, name: &str) {
    let b = buf();
    let max = core::mem::size_of_val(&b.msg) - 1;
    let bytes = &name.as_bytes()[..name.len().min(max)];
    let mut words = [0 as Word; crate::message::MSG_MAX_LENGTH];
    for (i, &c) in bytes.iter().enumerate() {
        words[i / 8] |= (c as Word) << (8 * (i % 8));
    }
    b.msg = words;
    arch::sys_send_recv(Syscall::DebugNameThread as i64, tcb.0 .0, 0, [0; 4]);
}

pub use arch::semihosting_exit;
