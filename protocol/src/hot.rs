//! The hot requests, straight between message registers and values.
//!
//! `Map`, `Unmap` and `Faults` are most of a driver's calls, and each fits
//! the [`FASTPATH_WORDS`] registers of an seL4 fastpath IPC. Going through
//! [`encode`](crate::encode) / [`decode_request`](crate::decode_request)
//! builds a whole [`Request`] (hundreds of bytes, for its largest variant)
//! and a message-sized byte buffer on each side. The functions here read
//! and write **the same wire format** directly in the words, at a small
//! fixed cost:
//!
//! * [`encode_hot`] writes exactly the words `pack_words(encode(request))`
//!   would;
//! * [`decode_hot`] accepts only what [`decode_request`](crate::decode_request)
//!   decodes to the same request, and answers `None` for anything else
//!   (another request, a malformed one, a non-canonical encoding), which the
//!   caller then hands to the full decoder: the answers, errors included,
//!   are the same either way;
//! * [`reply_word`] and [`decode_short_reply`] do the same for the one-word
//!   replies `Ok` and `Err(code)`, and [`empty_faults_word`] for a
//!   `Faults` reply with no records.
//!
//! The equivalences are tested here and by proptest in `tests/hot.rs`.

use crate::{
    DomainId, ErrorCode, MapEntry, MemoryHandle, Perms, Request, FASTPATH_WORDS, WORD_BYTES,
};

/// Variant indices of the wire format (see the crate docs).
const MAP: u8 = 5;
const UNMAP: u8 = 7;
const FAULTS: u8 = 10;
const REPLY_OK: u8 = 0;
const REPLY_FAULTS: u8 = 4;
const REPLY_ERR: u8 = 6;

/// A hot request, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hot {
    /// [`Request::Map`], its fields as one entry.
    Map { domain: DomainId, entry: MapEntry },
    /// [`Request::Unmap`].
    Unmap {
        domain: DomainId,
        iova_pfn: u64,
        pages: u32,
    },
    /// [`Request::Faults`].
    Faults { max: u8 },
}

impl Hot {
    /// The same request as a [`Request`].
    pub fn to_request(self) -> Request {
        match self {
            Hot::Map { domain, entry } => Request::Map {
                domain,
                iova_pfn: entry.iova_pfn,
                memory: entry.memory,
                offset_pfn: entry.offset_pfn,
                pages: entry.pages,
                perms: entry.perms,
            },
            Hot::Unmap {
                domain,
                iova_pfn,
                pages,
            } => Request::Unmap {
                domain,
                iova_pfn,
                pages,
            },
            Hot::Faults { max } => Request::Faults { max },
        }
    }
}

/// The bytes of at most [`FASTPATH_WORDS`] words (little-endian), read in
/// order, a word at a time (no byte buffer: without SIMD, copying one costs
/// more than the decoding).
struct Reader<'a> {
    words: &'a [u64],
    /// The rest of the current word, next byte lowest.
    cur: u64,
    /// Bytes left in `cur`.
    left: u32,
    /// Next word to load.
    next: usize,
}

impl<'a> Reader<'a> {
    fn new(words: &'a [u64]) -> Reader<'a> {
        Reader {
            words,
            cur: 0,
            left: 0,
            next: 0,
        }
    }

    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        if self.left == 0 {
            self.cur = *self.words.get(self.next)?;
            self.next += 1;
            self.left = WORD_BYTES as u32;
        }
        let b = self.cur as u8;
        self.cur >>= 8;
        self.left -= 1;
        Some(b)
    }

    /// A LEB128 varint of at most `max_bytes` bytes whose last byte, if it
    /// is the `max_bytes`th, is at most `last_max`: postcard's rule for a
    /// `u32` (5, 0x0f) or `u64` (10, 0x01).
    #[inline(always)]
    fn varint(&mut self, max_bytes: u32, last_max: u8) -> Option<u64> {
        let b = self.byte()?;
        if b & 0x80 == 0 {
            // Most fields: one byte.
            return Some(u64::from(b));
        }
        self.varint_rest(u64::from(b & 0x7f), max_bytes, last_max)
    }

    #[inline]
    fn varint_rest(&mut self, mut out: u64, max_bytes: u32, last_max: u8) -> Option<u64> {
        for i in 1..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < max_bytes || b <= last_max).then_some(out);
            }
        }
        None
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        self.varint(5, 0x0f).map(|v| v as u32)
    }

    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    /// What [`crate::decode`] tolerates after a value: less than one word,
    /// all zero (the rest of the current word, and no word after it).
    fn only_padding_left(&self) -> bool {
        self.cur == 0 && self.next == self.words.len()
    }
}

/// Decodes a hot request from message words; `None` if the words are not
/// one (or not canonically encoded): then [`crate::decode_request`] has
/// the answer. Never panics.
#[inline]
pub fn decode_hot(words: &[u64]) -> Option<Hot> {
    if words.is_empty() || words.len() > FASTPATH_WORDS {
        return None;
    }
    let mut r = Reader::new(words);
    let hot = match r.byte()? {
        MAP => {
            let domain = DomainId(r.u32()?);
            let iova_pfn = r.u64()?;
            let memory = MemoryHandle(r.u32()?);
            let offset_pfn = r.u32()?;
            let pages = r.u32()?;
            let perms = Perms(r.byte()?);
            Hot::Map {
                domain,
                entry: MapEntry {
                    iova_pfn,
                    memory,
                    offset_pfn,
                    pages,
                    perms,
                },
            }
        }
        UNMAP => Hot::Unmap {
            domain: DomainId(r.u32()?),
            iova_pfn: r.u64()?,
            pages: r.u32()?,
        },
        FAULTS => Hot::Faults { max: r.byte()? },
        _ => return None,
    };
    r.only_padding_left().then_some(hot)
}

/// Bytes into words (little-endian, zero-padded), a word at a time.
struct Writer {
    words: [u64; FASTPATH_WORDS],
    /// The current word so far, and the bytes in it.
    cur: u64,
    fill: u32,
    /// Words completed.
    done: usize,
}

impl Writer {
    #[inline(always)]
    fn new() -> Writer {
        Writer {
            words: [0; FASTPATH_WORDS],
            cur: 0,
            fill: 0,
            done: 0,
        }
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.cur |= u64::from(b) << (8 * self.fill);
        self.fill += 1;
        if self.fill == WORD_BYTES as u32 {
            // Cannot overflow: the longest hot message is 32 bytes.
            if let Some(w) = self.words.get_mut(self.done) {
                *w = self.cur;
            }
            self.done += 1;
            self.cur = 0;
            self.fill = 0;
        }
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// The words (the last one partial, those after it zero) and how many
    /// the message fills.
    #[inline(always)]
    fn finish(mut self) -> ([u64; FASTPATH_WORDS], usize) {
        let mut n = self.done;
        if self.fill > 0 {
            if let Some(w) = self.words.get_mut(n) {
                *w = self.cur;
            }
            n += 1;
        }
        (self.words, n)
    }
}

/// The words `pack_words(encode(request))` would make of `hot` (at most 32
/// bytes: it always fits), zero after the message, and how many it fills.
// Inlined: the caller's request kind is known there, and the result
// returned through memory cost a memcpy call (no SIMD registers).
#[inline(always)]
pub fn encode_hot(hot: &Hot) -> ([u64; FASTPATH_WORDS], usize) {
    let mut w = Writer::new();
    match *hot {
        Hot::Map { domain, entry } => {
            w.byte(MAP);
            w.varint(domain.0.into());
            w.varint(entry.iova_pfn);
            w.varint(entry.memory.0.into());
            w.varint(entry.offset_pfn.into());
            w.varint(entry.pages.into());
            w.byte(entry.perms.0);
        }
        Hot::Unmap {
            domain,
            iova_pfn,
            pages,
        } => {
            w.byte(UNMAP);
            w.varint(domain.0.into());
            w.varint(iova_pfn);
            w.varint(pages.into());
        }
        Hot::Faults { max } => {
            w.byte(FAULTS);
            w.byte(max);
        }
    }
    w.finish()
}

/// Every error code, by wire index (`code as usize`).
pub const ERROR_CODES: [ErrorCode; 18] = [
    ErrorCode::NotPermitted,
    ErrorCode::NoSuchStream,
    ErrorCode::NoSuchDomain,
    ErrorCode::NoSuchMemory,
    ErrorCode::Overlap,
    ErrorCode::NotMapped,
    ErrorCode::Misaligned,
    ErrorCode::OutOfRange,
    ErrorCode::QuotaExceeded,
    ErrorCode::NoMemory,
    ErrorCode::Unsupported,
    ErrorCode::Malformed,
    ErrorCode::Busy,
    ErrorCode::HardwareError,
    ErrorCode::VersionMismatch,
    ErrorCode::InUse,
    ErrorCode::BadCapability,
    ErrorCode::NoAsid,
];

/// The one-word reply `Reply::Ok` or `Reply::Err(code)`.
pub const fn reply_word(result: Result<(), ErrorCode>) -> u64 {
    match result {
        Ok(()) => REPLY_OK as u64,
        // Every index is below 128: one varint byte.
        Err(code) => REPLY_ERR as u64 | (code as u64) << 8,
    }
}

/// Whether a reply's first word is an error (`Reply::Err`).
pub const fn is_error_word(word: u64) -> bool {
    word as u8 == REPLY_ERR
}

/// `Reply::Ok` or `Reply::Err(code)` from reply words, as
/// [`crate::decode_reply`] would decode them; `None` for any other reply.
pub fn decode_short_reply(words: &[u64]) -> Option<Result<(), ErrorCode>> {
    let [w] = words else { return None };
    if *w == reply_word(Ok(())) {
        return Some(Ok(()));
    }
    if w >> 16 != 0 || !is_error_word(*w) {
        return None;
    }
    ERROR_CODES.get((w >> 8) as usize).map(|&c| Err(c))
}

/// The one-word reply `Reply::Faults` with no records, `dropped` and `more`,
/// if it is one word (`dropped` below 2^21); `None` otherwise.
pub fn empty_faults_word(dropped: u32, more: bool) -> Option<u64> {
    let mut w = Writer::new();
    w.byte(REPLY_FAULTS);
    w.byte(0);
    w.varint(dropped.into());
    w.byte(u8::from(more));
    let (words, n) = w.finish();
    (n <= 1).then_some(words[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_reply, encode, pack_words, FaultBatch, Reply, MSG_MAX_BYTES};

    fn reply_words(r: &Reply) -> ([u64; 120], usize) {
        let mut b = [0u8; MSG_MAX_BYTES];
        let n = encode(r, &mut b).unwrap();
        let mut w = [0u64; 120];
        let k = pack_words(&b[..n], &mut w).unwrap();
        (w, k)
    }

    #[test]
    fn short_replies_are_the_encoder_s() {
        let (w, k) = reply_words(&Reply::Ok);
        assert_eq!(&w[..k], &[reply_word(Ok(()))]);
        assert_eq!(decode_short_reply(&w[..k]), Some(Ok(())));
        for (i, &code) in ERROR_CODES.iter().enumerate() {
            assert_eq!(code as usize, i);
            let (w, k) = reply_words(&Reply::Err(code));
            assert_eq!(&w[..k], &[reply_word(Err(code))]);
            assert!(is_error_word(w[0]));
            assert_eq!(decode_short_reply(&w[..k]), Some(Err(code)));
        }
        for dropped in [0, 1, 127, 128, 1 << 14, (1 << 21) - 1, 1 << 21, u32::MAX] {
            for more in [false, true] {
                let r = Reply::Faults(FaultBatch {
                    records: heapless::Vec::new(),
                    dropped,
                    more,
                });
                let (w, k) = reply_words(&r);
                match empty_faults_word(dropped, more) {
                    Some(word) => assert_eq!(&w[..k], &[word]),
                    None => assert!(k > 1),
                }
                assert_eq!(decode_short_reply(&w[..k]), None);
            }
        }
        // Not an Ok or Err reply, or not as the decoder reads it.
        // One past the table: a code the table lacks (a variant added to
        // ErrorCode but not here) fails below.
        let past = 6 | (ERROR_CODES.len() as u64) << 8;
        for words in [&[][..], &[0, 0], &[past], &[6 | 1 << 16], &[1]] {
            let short = decode_short_reply(words);
            let mut b = [0u8; 64];
            let n = crate::unpack_words(words, &mut b).unwrap();
            let full = decode_reply(&b[..n]);
            match short {
                Some(Ok(())) => assert_eq!(full, Ok(Reply::Ok)),
                Some(Err(c)) => assert_eq!(full, Ok(Reply::Err(c))),
                None => assert!(!matches!(full, Ok(Reply::Ok) | Ok(Reply::Err(_)))),
            }
        }
    }
}
