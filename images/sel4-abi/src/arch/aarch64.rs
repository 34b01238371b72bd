//! AArch64 primitives: the `svc #0` sequences of libsel4's
//! `sel4_arch/syscalls.h` (5.0.0), `TPIDR_EL0`, semihosting.
//!
//! Register use: `x7` syscall number; `x0` destination/source cap on entry and
//! badge on return; `x1` message info; `x2`..`x5` message registers 0..3. The
//! kernel restores every other register, so those are the only operands.
//! Every `asm!` keeps Rust's default memory clobber: the kernel reads and
//! writes the IPC buffer.

use crate::types::Word;

/// Message registers carried in `x2`..`x5`.
pub type Mrs = [Word; 4];

/// `arm_sys_send`: Send / NBSend (and kernel invocations without a reply).
#[inline(always)]
pub fn sys_send(sys: i64, dest: Word, info: Word, mrs: Mrs) {
    // SAFETY: `svc #0` enters the seL4 kernel, which reads x0-x5 and x7 and may
    // overwrite x0-x5 (declared); it preserves all other registers and the stack.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inout("x0") dest => _,
            inout("x1") info => _,
            inout("x2") mrs[0] => _,
            inout("x3") mrs[1] => _,
            inout("x4") mrs[2] => _,
            inout("x5") mrs[3] => _,
            in("x7") sys,
            options(nostack),
        );
    }
}

/// `arm_sys_reply`: Reply (to the saved caller; no cap operand).
#[inline(always)]
pub fn sys_reply(sys: i64, info: Word, mrs: Mrs) {
    // SAFETY: as `sys_send`; x0 is not an operand of Reply but the kernel may
    // write it, so it is declared clobbered.
    unsafe {
        core::arch::asm!(
            "svc #0",
            lateout("x0") _,
            inout("x1") info => _,
            inout("x2") mrs[0] => _,
            inout("x3") mrs[1] => _,
            inout("x4") mrs[2] => _,
            inout("x5") mrs[3] => _,
            in("x7") sys,
            options(nostack),
        );
    }
}

/// `arm_sys_send_null`: a send without message registers (Signal).
#[inline(always)]
pub fn sys_send_null(sys: i64, dest: Word, info: Word) {
    // SAFETY: as `sys_send`.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inout("x0") dest => _,
            inout("x1") info => _,
            lateout("x2") _,
            lateout("x3") _,
            lateout("x4") _,
            lateout("x5") _,
            in("x7") sys,
            options(nostack),
        );
    }
}

/// `arm_sys_recv`: Recv / NBRecv. Returns (badge, info, MR0..3).
#[inline(always)]
pub fn sys_recv(sys: i64, src: Word) -> (Word, Word, Mrs) {
    let (badge, info, m0, m1, m2, m3);
    // SAFETY: as `sys_send`; the kernel writes the received message into x0-x5.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inout("x0") src => badge,
            lateout("x1") info,
            lateout("x2") m0,
            lateout("x3") m1,
            lateout("x4") m2,
            lateout("x5") m3,
            in("x7") sys,
            options(nostack),
        );
    }
    (badge, info, [m0, m1, m2, m3])
}

/// `arm_sys_send_recv`: Call / ReplyRecv (and the debug syscalls that use it).
/// Returns (badge, info, MR0..3).
#[inline(always)]
pub fn sys_send_recv(sys: i64, dest: Word, info: Word, mrs: Mrs) -> (Word, Word, Mrs) {
    let (badge, out_info, m0, m1, m2, m3);
    // SAFETY: as `sys_send`; the reply comes back in x0-x5.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inout("x0") dest => badge,
            inout("x1") info => out_info,
            inout("x2") mrs[0] => m0,
            inout("x3") mrs[1] => m1,
            inout("x4") mrs[2] => m2,
            inout("x5") mrs[3] => m3,
            in("x7") sys,
            options(nostack),
        );
    }
    (badge, out_info, [m0, m1, m2, m3])
}

/// `arm_sys_null`: Yield, DebugHalt, DebugSnapshot.
#[inline(always)]
pub fn sys_null(sys: i64) {
    // SAFETY: as `sys_send`; no operands besides x7. x0-x5 are declared
    // clobbered to be safe against kernels that write return registers.
    unsafe {
        core::arch::asm!(
            "svc #0",
            lateout("x0") _,
            lateout("x1") _,
            lateout("x2") _,
            lateout("x3") _,
            lateout("x4") _,
            lateout("x5") _,
            in("x7") sys,
            options(nostack),
        );
    }
}

/// `TPIDR_EL0`: the IPC buffer address on this configuration.
#[inline(always)]
pub fn tpidr_el0() -> Word {
    let v: Word;
    // SAFETY: reading TPIDR_EL0 is allowed at EL0 and has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Semihosting `SYS_EXIT` (0x18) with `ADP_Stopped_ApplicationExit` and an exit
/// code: ends a QEMU run started with
/// `-semihosting-config enable=on,target=native,userspace=on`.
/// Without semihosting the `hlt` traps into the kernel (a user fault); then
/// this thread spins.
pub fn semihosting_exit(code: u32) -> ! {
    const SYS_EXIT: Word = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: Word = 0x2_0026;
    let block: [Word; 2] = [ADP_STOPPED_APPLICATION_EXIT, code as Word];
    // SAFETY: the semihosting trap reads the two-word parameter block at x1,
    // which lives on this stack frame for the duration of the call.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack),
        );
    }
    loop {
        core::hint::spin_loop();
    }
}
