//! Moving protocol bytes in and out of seL4 message registers.
//!
//! The first four message registers travel in CPU registers (so a request of
//! at most 32 bytes with no capability takes the kernel's IPC fastpath); the
//! rest sit in the IPC buffer from `msg[4]`. Both sides use these two
//! functions, so the split is written once.

use iommu_protocol::MSG_MAX_WORDS;
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::IpcBuffer;

/// Puts `words` into the register array (first four) and the IPC buffer.
pub fn store(words: &[u64], registers: &mut [u64; MSG_REGISTERS], buffer: &mut IpcBuffer) {
    for (i, &w) in words.iter().enumerate().take(MSG_MAX_WORDS) {
        if i < MSG_REGISTERS {
            registers[i] = w;
        } else {
            buffer.set_mr(i, w);
        }
    }
}

/// Reads `length` message words back from the registers and the IPC buffer;
/// returns how many were read (at most `MSG_MAX_WORDS`).
pub fn load(
    length: usize,
    registers: &[u64; MSG_REGISTERS],
    buffer: &IpcBuffer,
    words: &mut [u64; MSG_MAX_WORDS],
) -> usize {
    let length = length.min(MSG_MAX_WORDS);
    for (i, word) in words.iter_mut().enumerate().take(length) {
        *word = if i < MSG_REGISTERS {
            registers[i]
        } else {
            buffer.mr(i)
        };
    }
    length
}
