//! Moving protocol bytes in and out of seL4 message registers.
//!
//! The first four message registers travel in CPU registers (so a request of
//! at most 32 bytes with no capability takes the kernel's IPC fastpath); the
//! rest sit in the IPC buffer from `msg[4]`. Both sides use these two
//! functions, so the split is written once. Bytes go straight between the
//! protocol's byte buffer and the registers / IPC buffer: no message-sized
//! word array in between to clear and copy (a `MapBatch` is most of a
//! message).

use iommu_protocol::{pack_words, unpack_words, MSG_MAX_WORDS};
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::IpcBuffer;

/// Bytes that travel in the register MRs.
const REGISTER_BYTES: usize = MSG_REGISTERS * 8;

/// Packs `bytes` into the register array (first four words) and the IPC
/// buffer (the rest, little-endian, the last word zero-padded); returns the
/// message length in words, or `None` if it exceeds a message.
pub fn store(
    bytes: &[u8],
    registers: &mut [u64; MSG_REGISTERS],
    buffer: &mut IpcBuffer,
) -> Option<usize> {
    let (head, tail) = bytes.split_at(bytes.len().min(REGISTER_BYTES));
    let mut length = pack_words(head, registers)?;
    if !tail.is_empty() {
        let rest = buffer.msg.get_mut(MSG_REGISTERS..MSG_MAX_WORDS)?;
        length += pack_words(tail, rest)?;
    }
    Some(length)
}

/// Unpacks a message of `length` words from the registers and the IPC
/// buffer into `bytes`; returns how many bytes that is, or `None` if
/// `bytes` is too short (at most `MSG_MAX_WORDS` words are read).
pub fn load(
    length: usize,
    registers: &[u64; MSG_REGISTERS],
    buffer: &IpcBuffer,
    bytes: &mut [u8],
) -> Option<usize> {
    let length = length.min(MSG_MAX_WORDS);
    let in_registers = length.min(MSG_REGISTERS);
    let mut n = unpack_words(&registers[..in_registers], bytes)?;
    if length > MSG_REGISTERS {
        n += unpack_words(&buffer.msg[MSG_REGISTERS..length], bytes.get_mut(n..)?)?;
    }
    Some(n)
}
