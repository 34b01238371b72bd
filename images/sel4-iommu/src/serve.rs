//! The server's handling of one received message, between the kernel's
//! message registers / IPC buffer and the request handler: the hot requests
//! (`Map`, `Unmap`, `Faults` with nothing pending) straight from and to the
//! register MRs ([`Handler::handle_registers`]), anything else through the
//! full decoder ([`Handler::handle`]).

use crate::message;
use crate::platform::ReceivedFrames;
use iommu_protocol::{
    is_error_word, pack_words, unpack_words, MsgBuf, FASTPATH_WORDS, MSG_MAX_BYTES, MSG_MAX_WORDS,
};
use iommu_server::handler::{Core, Handler, ReceivedCap};
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::{IpcBuffer, MessageInfo};

/// The buffers of the full path, allocated once by the request loop (each
/// message-sized; clearing them per request cost more than the handling).
pub struct Scratch {
    words: [u64; MSG_MAX_WORDS],
    request: MsgBuf,
    reply: MsgBuf,
}

impl Scratch {
    pub const fn new() -> Scratch {
        Scratch {
            words: [0; MSG_MAX_WORDS],
            request: [0; MSG_MAX_BYTES],
            reply: [0; MSG_MAX_BYTES],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// The reply to send for one request.
pub struct Answer {
    /// Its tag (label 0, no caps, the length in words); the first four
    /// words are in the register array the request came in, the rest in
    /// the IPC buffer.
    pub tag: MessageInfo,
    /// The reply is an error (`Reply::Err`): the request was refused.
    pub refused: bool,
}

/// Handles the message `tag` / `registers` (and the IPC buffer) from the
/// client with `badge`; `receive_slot` is where a cap sent with it landed.
/// Writes the reply into `registers` and the IPC buffer.
pub fn request<C: Core, const W: usize>(
    server: &mut Handler<C, ReceivedFrames<W>>,
    badge: u64,
    tag: MessageInfo,
    receive_slot: Option<u64>,
    registers: &mut [u64; MSG_REGISTERS],
    buffer: &mut IpcBuffer,
    scratch: &mut Scratch,
) -> Answer {
    if tag.extra_caps() == 0 && tag.length() <= FASTPATH_WORDS {
        let mut out = [0u64; FASTPATH_WORDS];
        if let Some(n) = server.handle_registers(badge, &registers[..tag.length()], &mut out) {
            *registers = out;
            return Answer {
                tag: MessageInfo::new(0, 0, 0, n as u64),
                refused: is_error_word(out[0]),
            };
        }
    }
    let Scratch {
        words,
        request,
        reply,
    } = scratch;
    let n = message::load(tag.length(), registers, buffer, words);
    let length = unpack_words(&words[..n], request).unwrap_or(0);
    // A cap arrived only if the sender sent one and the kernel did not
    // unwrap it into a badge (that happens only for caps to our own
    // endpoint, which are not frames).
    let mut caps = [ReceivedCap(0)];
    let received = match receive_slot {
        Some(slot) if tag.extra_caps() > 0 && tag.caps_unwrapped() & 1 == 0 => {
            caps[0] = server.resolver_mut().take(slot);
            1
        }
        _ => 0,
    };
    let reply_length = server.handle(badge, &request[..length], &caps[..received], reply);
    let reply_words = pack_words(&reply[..reply_length], words).unwrap_or(0);
    let mut out = [0u64; MSG_REGISTERS];
    message::store(&words[..reply_words], &mut out, buffer);
    *registers = out;
    Answer {
        tag: MessageInfo::new(0, 0, 0, reply_words as u64),
        refused: reply_words > 0 && is_error_word(words[0]),
    }
}
