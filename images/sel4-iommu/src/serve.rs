//! The server's handling of one received message, between the kernel's
//! message registers / IPC buffer and the request handler: the hot requests
//! (`Map`, `Unmap`, `Faults` with nothing pending) straight from and to the
//! register MRs ([`Handler::handle_registers`]), anything else through the
//! full decoder ([`Handler::handle`]).

use crate::message;
use crate::platform::ReceivedFrames;
use iommu_protocol::{
    encode, is_error_word, ErrorCode, MsgBuf, Reply, FASTPATH_WORDS, MSG_MAX_BYTES,
};
use iommu_server::handler::{Core, FrameResolver, Handler, ReceivedCap};
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::{IpcBuffer, MessageInfo};

/// The buffers of the full path, allocated once by the request loop (each
/// message-sized; clearing them per request cost more than the handling).
pub struct Scratch {
    request: MsgBuf,
    reply: MsgBuf,
}

impl Scratch {
    pub const fn new() -> Scratch {
        Scratch {
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
    let Scratch { request, reply } = scratch;
    let length = message::load(tag.length(), registers, buffer, request).unwrap_or(0);
    let landed = take_received(server, tag, receive_slot);
    // A request carries at most one cap, and never one the kernel unwrapped
    // into a badge (a cap to this very endpoint): anything else is refused
    // whole, and the cap that did arrive is released.
    let reply_length = if tag.extra_caps() <= 1 && tag.caps_unwrapped() == 0 {
        server.handle(badge, &request[..length], landed.as_slice(), reply)
    } else {
        if let Some(cap) = landed {
            server.resolver_mut().release(cap);
        }
        encode(&Reply::Err(ErrorCode::BadCapability), reply).unwrap_or(0)
    };
    let mut out = [0u64; MSG_REGISTERS];
    let reply_words = message::store(&reply[..reply_length], &mut out, buffer).unwrap_or(0);
    *registers = out;
    Answer {
        tag: MessageInfo::new(0, 0, 0, reply_words as u64),
        refused: reply_words > 0 && is_error_word(out[0]),
    }
}

/// The cap that message `tag` left in `receive_slot`, now the handler's to
/// keep or release, if any.
///
/// seL4 5.0.0 (`transferCaps`) moves at most one cap into the receive
/// slot: the first of the message's caps that is not a cap to the very
/// endpoint it was sent on (those it unwraps into badges, setting their
/// bits in `capsUnwrapped`), and `extraCaps` counts the caps it went
/// through. So the slot is full exactly when it went through more caps
/// than it unwrapped, whichever position the transferred one had. Missing
/// one would leave the slot full, and the kernel drops every later cap
/// sent to a full slot: every client of the band could register nothing.
pub fn take_received<C: Core, const W: usize>(
    server: &mut Handler<C, ReceivedFrames<W>>,
    tag: MessageInfo,
    receive_slot: Option<u64>,
) -> Option<ReceivedCap> {
    let unwrapped = tag.caps_unwrapped().count_ones() as usize;
    match receive_slot {
        Some(slot) if tag.extra_caps() > unwrapped => Some(server.resolver_mut().take(slot)),
        _ => None,
    }
}
