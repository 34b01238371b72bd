//! Fault messages: what the kernel sends to a thread's fault endpoint.
//!
//! The message label is the fault type (`seL4_Fault_*` tags in
//! `arch/arm/arch/api/shared_types.bf`), the words are laid out as in
//! libsel4's `seL4_*Fault_Msg` enums (AArch64). Replying to a fault message
//! (with an empty message) restarts the faulting thread.

use crate::message::MessageInfo;
use crate::types::Word;

/// Fault type numbers (the fault message's label).
pub mod fault_type {
    use crate::types::Word;
    pub const NULL_FAULT: Word = 0;
    pub const CAP_FAULT: Word = 1;
    pub const UNKNOWN_SYSCALL: Word = 2;
    pub const USER_EXCEPTION: Word = 3;
    /// Only with `CONFIG_HARDWARE_DEBUG_API`.
    pub const DEBUG_EXCEPTION: Word = 4;
    pub const VM_FAULT: Word = 5;
}

/// Message word indices (`seL4_VMFault_Msg`, etc.).
pub mod msg {
    pub const VM_FAULT_IP: usize = 0;
    pub const VM_FAULT_ADDR: usize = 1;
    pub const VM_FAULT_PREFETCH_FAULT: usize = 2;
    pub const VM_FAULT_FSR: usize = 3;
    pub const VM_FAULT_LENGTH: usize = 4;

    pub const USER_EXCEPTION_FAULT_IP: usize = 0;
    pub const USER_EXCEPTION_SP: usize = 1;
    pub const USER_EXCEPTION_SPSR: usize = 2;
    pub const USER_EXCEPTION_NUMBER: usize = 3;
    pub const USER_EXCEPTION_CODE: usize = 4;
    pub const USER_EXCEPTION_LENGTH: usize = 5;

    /// `X0`..`X7` are words 0..8.
    pub const UNKNOWN_SYSCALL_X0: usize = 0;
    pub const UNKNOWN_SYSCALL_FAULT_IP: usize = 8;
    pub const UNKNOWN_SYSCALL_SP: usize = 9;
    pub const UNKNOWN_SYSCALL_LR: usize = 10;
    pub const UNKNOWN_SYSCALL_SPSR: usize = 11;
    pub const UNKNOWN_SYSCALL_SYSCALL: usize = 12;
    pub const UNKNOWN_SYSCALL_LENGTH: usize = 13;

    pub const CAP_FAULT_IP: usize = 0;
    pub const CAP_FAULT_ADDR: usize = 1;
    pub const CAP_FAULT_IN_RECV_PHASE: usize = 2;
    pub const CAP_FAULT_LOOKUP_FAILURE_TYPE: usize = 3;
    pub const CAP_FAULT_BITS_LEFT: usize = 4;
    pub const CAP_FAULT_DEPTH_MISMATCH_BITS_FOUND: usize = 5;
    pub const CAP_FAULT_GUARD_MISMATCH_GUARD_FOUND: usize = 5;
    pub const CAP_FAULT_GUARD_MISMATCH_BITS_FOUND: usize = 6;

    pub const DEBUG_EXCEPTION_FAULT_IP: usize = 0;
    pub const DEBUG_EXCEPTION_EXCEPTION_REASON: usize = 1;
    pub const DEBUG_EXCEPTION_TRIGGER_ADDRESS: usize = 2;
    pub const DEBUG_EXCEPTION_BREAKPOINT_NUMBER: usize = 3;
}

/// Why a capability lookup failed. The kernel sends its internal type + 1
/// (`setMRs_lookup_failure`), which is libsel4's `seL4_LookupFailureType`
/// numbering (`seL4_NoFailure` = 0, `seL4_InvalidRoot` = 1, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupFailure {
    None,
    InvalidRoot,
    MissingCapability {
        bits_left: Word,
    },
    DepthMismatch {
        bits_left: Word,
        bits_found: Word,
    },
    GuardMismatch {
        bits_left: Word,
        guard_found: Word,
        bits_found: Word,
    },
    Unknown(Word),
}

impl LookupFailure {
    /// Decode from the words starting at the lookup failure type.
    pub fn decode(mr: impl Fn(usize) -> Word, at: usize) -> LookupFailure {
        match mr(at) {
            0 => LookupFailure::None,
            1 => LookupFailure::InvalidRoot,
            2 => LookupFailure::MissingCapability {
                bits_left: mr(at + 1),
            },
            3 => LookupFailure::DepthMismatch {
                bits_left: mr(at + 1),
                bits_found: mr(at + 2),
            },
            4 => LookupFailure::GuardMismatch {
                bits_left: mr(at + 1),
                guard_found: mr(at + 2),
                bits_found: mr(at + 3),
            },
            t => LookupFailure::Unknown(t),
        }
    }
}

/// A decoded fault message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Label 0: not a fault (an ordinary message with label 0).
    Null,
    /// The thread invoked a capability it could not look up.
    Cap {
        ip: Word,
        addr: Word,
        in_recv_phase: bool,
        lookup: LookupFailure,
    },
    /// An `svc` with a syscall number the kernel does not know.
    UnknownSyscall {
        regs: [Word; 8],
        fault_ip: Word,
        sp: Word,
        lr: Word,
        spsr: Word,
        syscall: Word,
    },
    /// A synchronous exception the kernel does not handle itself (e.g. `hlt`
    /// without semihosting, undefined instruction, alignment).
    UserException {
        fault_ip: Word,
        sp: Word,
        spsr: Word,
        number: Word,
        code: Word,
    },
    /// A hardware debug exception (`CONFIG_HARDWARE_DEBUG_API` only).
    DebugException {
        fault_ip: Word,
        reason: Word,
        trigger_address: Word,
        breakpoint_number: Word,
    },
    /// A translation or permission fault. `fsr` is the ESR's ISS; `prefetch`
    /// is true for instruction fetches.
    VM {
        ip: Word,
        addr: Word,
        prefetch: bool,
        fsr: Word,
    },
    /// A label this crate does not know (e.g. VCPU faults).
    Unknown { label: Word },
}

impl Fault {
    /// Decode a received fault message. `mr(i)` returns message word `i`
    /// (words 0..4 from the receive registers, the rest from the IPC buffer).
    pub fn decode(info: MessageInfo, mr: impl Fn(usize) -> Word) -> Fault {
        use msg::*;
        match info.label() {
            fault_type::NULL_FAULT => Fault::Null,
            fault_type::CAP_FAULT => Fault::Cap {
                ip: mr(CAP_FAULT_IP),
                addr: mr(CAP_FAULT_ADDR),
                in_recv_phase: mr(CAP_FAULT_IN_RECV_PHASE) != 0,
                lookup: LookupFailure::decode(&mr, CAP_FAULT_LOOKUP_FAILURE_TYPE),
            },
            fault_type::UNKNOWN_SYSCALL => {
                let mut regs = [0; 8];
                for (i, r) in regs.iter_mut().enumerate() {
                    *r = mr(UNKNOWN_SYSCALL_X0 + i);
                }
                Fault::UnknownSyscall {
                    regs,
                    fault_ip: mr(UNKNOWN_SYSCALL_FAULT_IP),
                    sp: mr(UNKNOWN_SYSCALL_SP),
                    lr: mr(UNKNOWN_SYSCALL_LR),
                    spsr: mr(UNKNOWN_SYSCALL_SPSR),
                    syscall: mr(UNKNOWN_SYSCALL_SYSCALL),
                }
            }
            fault_type::USER_EXCEPTION => Fault::UserException {
                fault_ip: mr(USER_EXCEPTION_FAULT_IP),
                sp: mr(USER_EXCEPTION_SP),
                spsr: mr(USER_EXCEPTION_SPSR),
                number: mr(USER_EXCEPTION_NUMBER),
                code: mr(USER_EXCEPTION_CODE),
            },
            fault_type::DEBUG_EXCEPTION => Fault::DebugException {
                fault_ip: mr(DEBUG_EXCEPTION_FAULT_IP),
                reason: mr(DEBUG_EXCEPTION_EXCEPTION_REASON),
                trigger_address: mr(DEBUG_EXCEPTION_TRIGGER_ADDRESS),
                breakpoint_number: mr(DEBUG_EXCEPTION_BREAKPOINT_NUMBER),
            },
            fault_type::VM_FAULT => Fault::VM {
                ip: mr(VM_FAULT_IP),
                addr: mr(VM_FAULT_ADDR),
                prefetch: mr(VM_FAULT_PREFETCH_FAULT) != 0,
                fsr: mr(VM_FAULT_FSR),
            },
            label => Fault::Unknown { label },
        }
    }

    /// Decode with MRs 0..4 from `regs` (as returned by `recv_with_mrs`) and
    /// the rest from this thread's IPC buffer.
    #[cfg(target_arch = "aarch64")]
    pub fn decode_received(info: MessageInfo, regs: &[Word; 4]) -> Fault {
        let buf = crate::ipc_buffer::ipc_buffer();
        Fault::decode(info, |i| {
            if i < 4 {
                regs[i]
            } else {
                buf.as_ref().map(|b| b.msg[i]).unwrap_or(0)
            }
        })
    }

    /// The faulting instruction address, where the message has one.
    pub fn ip(&self) -> Option<Word> {
        match *self {
            Fault::Cap { ip, .. } | Fault::VM { ip, .. } => Some(ip),
            Fault::UnknownSyscall { fault_ip, .. }
            | Fault::UserException { fault_ip, .. }
            | Fault::DebugException { fault_ip, .. } => Some(fault_ip),
            Fault::Null | Fault::Unknown { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_vm_fault() {
        let words = [0x40_1234, 0xdead_0000, 0, 0x93c0_0007];
        let f = Fault::decode(MessageInfo::new(5, 0, 0, 4), |i| words[i]);
        assert_eq!(
            f,
            Fault::VM {
                ip: 0x40_1234,
                addr: 0xdead_0000,
                prefetch: false,
                fsr: 0x93c0_0007
            }
        );
        assert_eq!(f.ip(), Some(0x40_1234));
    }

    #[test]
    fn decodes_cap_fault_with_lookup_failure() {
        let words = [0x40_0000, 77, 1, 3, 10, 12, 0];
        let f = Fault::decode(MessageInfo::new(1, 0, 0, 6), |i| words[i]);
        assert_eq!(
            f,
            Fault::Cap {
                ip: 0x40_0000,
                addr: 77,
                in_recv_phase: true,
                lookup: LookupFailure::DepthMismatch {
                    bits_left: 10,
                    bits_found: 12
                },
            }
        );
    }

    #[test]
    fn decodes_unknown_syscall_and_user_exception() {
        let words: [Word; 13] = core::array::from_fn(|i| 100 + i as Word);
        match Fault::decode(MessageInfo::new(2, 0, 0, 13), |i| words[i]) {
            Fault::UnknownSyscall {
                regs,
                fault_ip,
                syscall,
                ..
            } => {
                assert_eq!(regs[7], 107);
                assert_eq!(fault_ip, 108);
                assert_eq!(syscall, 112);
            }
            f => panic!("{f:?}"),
        }
        match Fault::decode(MessageInfo::new(3, 0, 0, 5), |i| words[i]) {
            Fault::UserException { code, .. } => assert_eq!(code, 104),
            f => panic!("{f:?}"),
        }
        assert_eq!(
            Fault::decode(MessageInfo::new(9, 0, 0, 0), |_| 0),
            Fault::Unknown { label: 9 }
        );
    }
}
