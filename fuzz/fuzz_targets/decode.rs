//! Any byte string decodes to a request or reply, or to Malformed; never a
//! panic. A request that decodes re-encodes within one seL4 message and
//! decodes to the same value.
#![no_main]

use iommu_protocol::{decode_reply, decode_request, encode, MSG_MAX_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        let mut buf = [0u8; MSG_MAX_BYTES];
        let n = encode(&req, &mut buf).expect("a decoded request fits one message");
        assert_eq!(decode_request(&buf[..n]), Ok(req));
    }
    if let Ok(reply) = decode_reply(data) {
        let mut buf = [0u8; MSG_MAX_BYTES];
        let n = encode(&reply, &mut buf).expect("a decoded reply fits one message");
        assert_eq!(decode_reply(&buf[..n]), Ok(reply));
    }
});
