//! Tests of the generator (`build/gen.rs`) and of the generated numbers.

#[path = "../build/gen.rs"]
#[allow(clippy::all)]
mod gen;

use crate::generated::*;

#[test]
fn syscall_numbers() {
    // DESIGN section 7 (verified on the running kernel): Call -1,
    // DebugPutChar -9, DebugHalt -10.
    assert_eq!(Syscall::Call as i64, -1);
    assert_eq!(Syscall::ReplyRecv as i64, -2);
    assert_eq!(Syscall::Send as i64, -3);
    assert_eq!(Syscall::NBSend as i64, -4);
    assert_eq!(Syscall::Recv as i64, -5);
    assert_eq!(Syscall::Reply as i64, -6);
    assert_eq!(Syscall::Yield as i64, -7);
    assert_eq!(Syscall::NBRecv as i64, -8);
    #[cfg(sel4_debug_build)]
    {
        assert_eq!(Syscall::DebugPutChar as i64, -9);
        assert_eq!(Syscall::DebugHalt as i64, -10);
        assert_eq!(Syscall::DebugCapIdentify as i64, -11);
    }
}
