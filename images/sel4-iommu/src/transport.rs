//! The client side: each request is one `seL4_Call` on the badged endpoint
//! the system description gave the driver.

use crate::message;
use iommu_client::{Transport, TransportError};
use iommu_protocol::{unpack_words, MsgBuf, FASTPATH_WORDS, MAX_CAPS_PER_MSG};
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::{ipc_buffer, syscalls, CPtr, MessageInfo};

/// Requests carry label 0; the kernel answers a failed invocation of a
/// non-endpoint cap with an error label, which the transport reports.
const REQUEST_LABEL: u64 = 0;

pub struct Sel4Transport {
    endpoint: CPtr,
}

impl Sel4Transport {
    /// `endpoint`: the badged endpoint capability to the IOMMU server.
    pub fn new(endpoint: CPtr) -> Sel4Transport {
        Sel4Transport { endpoint }
    }
}

impl Transport for Sel4Transport {
    type Cap = CPtr;

    fn call(
        &mut self,
        request: &[u8],
        caps: &[CPtr],
        reply: &mut MsgBuf,
    ) -> Result<usize, TransportError> {
        // seL4 gives a receiver one slot per message: a second capability
        // would be silently dropped, so refuse it here.
        if caps.len() > MAX_CAPS_PER_MSG.min(1) {
            return Err(TransportError::TooManyCaps);
        }
        let buffer = ipc_buffer().ok_or(TransportError::Ipc(0))?;
        let mut registers = [0u64; MSG_REGISTERS];
        let length =
            message::store(request, &mut registers, buffer).ok_or(TransportError::TooLong)?;
        for (i, cap) in caps.iter().enumerate() {
            buffer.set_cap(i, *cap);
        }
        let info = MessageInfo::new(REQUEST_LABEL, 0, caps.len() as u64, length as u64);
        let answer = syscalls::call_with_mrs(self.endpoint, info, &mut registers);
        if answer.label() != REQUEST_LABEL {
            return Err(TransportError::Ipc(answer.label()));
        }
        if answer.length() <= MSG_REGISTERS {
            return unpack_words(&registers[..answer.length()], reply)
                .ok_or(TransportError::TooLong);
        }
        let buffer = ipc_buffer().ok_or(TransportError::Ipc(0))?;
        message::load(answer.length(), &registers, buffer, reply).ok_or(TransportError::TooLong)
    }

    /// The words go in the four register MRs as they are (a fastpath
    /// call), and the reply's come back from them.
    fn call_registers(
        &mut self,
        request: &[u64; FASTPATH_WORDS],
        words: usize,
        reply: &mut [u64; FASTPATH_WORDS],
    ) -> Result<usize, TransportError> {
        if words > FASTPATH_WORDS {
            return Err(TransportError::TooLong);
        }
        // Words past `words` travel too but are not part of the message.
        let mut registers: [u64; MSG_REGISTERS] = *request;
        let info = MessageInfo::new(REQUEST_LABEL, 0, 0, words as u64);
        let answer = syscalls::call_with_mrs(self.endpoint, info, &mut registers);
        if answer.label() != REQUEST_LABEL {
            return Err(TransportError::Ipc(answer.label()));
        }
        *reply = registers;
        Ok(answer.length())
    }
}

// The register MRs are exactly the fastpath's words.
const _: () = assert!(MSG_REGISTERS == FASTPATH_WORDS);
