//! Every message survives encode → pack into words → unpack → decode, and
//! no byte string panics the decoder.
use heapless::Vec;
use iommu_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn domain() -> impl Strategy<Value = DomainId> {
    any::<u32>().prop_map(DomainId)
}
fn memory() -> impl Strategy<Value = MemoryHandle> {
    any::<u32>().prop_map(MemoryHandle)
}
fn stream() -> impl Strategy<Value = StreamId> {
    any::<u32>().prop_map(StreamId)
}
fn ssid() -> impl Strategy<Value = Ssid> {
    any::<u32>().prop_map(Ssid)
}
fn entry() -> impl Strategy<Value = MapEntry> {
    (
        any::<u64>(),
        memory(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(|(iova_pfn, memory, offset_pfn, pages, p)| MapEntry {
            iova_pfn,
            memory,
            offset_pfn,
            pages,
            perms: Perms(p),
        })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(min_version, max_version)| Request::Hello {
            min_version,
            max_version
        }),
        Just(Request::AllocDomain),
        domain().prop_map(|domain| Request::FreeDomain { domain }),
        (stream(), ssid(), domain()).prop_map(|(stream, ssid, domain)| Request::Attach {
            stream,
            ssid,
            domain
        }),
        (stream(), ssid()).prop_map(|(stream, ssid)| Request::Detach { stream, ssid }),
        (domain(), entry()).prop_map(|(domain, e)| Request::Map {
            domain,
            iova_pfn: e.iova_pfn,
            memory: e.memory,
            offset_pfn: e.offset_pfn,
            pages: e.pages,
            perms: e.perms,
        }),
        (domain(), vec(entry(), 0..=MAX_BATCH)).prop_map(|(domain, es)| Request::MapBatch {
            domain,
            entries: Vec::from_slice(&es).unwrap(),
        }),
        (domain(), any::<u64>(), any::<u32>()).prop_map(|(domain, iova_pfn, pages)| {
            Request::Unmap {
                domain,
                iova_pfn,
                pages,
            }
        }),
        (stream(), ssid()).prop_map(|(stream, ssid)| Request::BindSva { stream, ssid }),
        (stream(), ssid()).prop_map(|(stream, ssid)| Request::UnbindSva { stream, ssid }),
        any::<u8>().prop_map(|max| Request::Faults { max }),
        Just(Request::Stats),
        proptest::option::of(memory()).prop_map(|extend| Request::RegisterMemory { extend }),
        memory().prop_map(|memory| Request::UnregisterMemory { memory }),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    use ErrorCode::*;
    prop::sample::select(vec![
        NotPermitted,
        NoSuchStream,
        NoSuchDomain,
        NoSuchMemory,
        Overlap,
        NotMapped,
        Misaligned,
        OutOfRange,
        QuotaExceeded,
        NoMemory,
        Unsupported,
        Malformed,
        Busy,
        HardwareError,
        VersionMismatch,
        InUse,
        BadCapability,
        NoAsid,
    ])
}

fn fault_kind() -> impl Strategy<Value = FaultKind> {
    use FaultKind::*;
    prop::sample::select(vec![
        Translation,
        Permission,
        Access,
        AddressSize,
        BadConfig,
        Other,
    ])
}

fn record() -> impl Strategy<Value = FaultRecord> {
    (
        stream(),
        ssid(),
        any::<u64>(),
        fault_kind(),
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(|(stream, ssid, iova, kind, write, count)| FaultRecord {
            stream,
            ssid,
            iova,
            kind,
            write,
            count,
        })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Ok),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(
                |(version, max_batch, page_sizes, ias_bits, ssid_bits, max_faults, sva)| {
                    Reply::Hello(ServerInfo {
                        version,
                        max_batch,
                        page_sizes,
                        ias_bits,
                        ssid_bits,
                        max_faults,
                        sva,
                    })
                }
            ),
        domain().prop_map(Reply::Domain),
        (memory(), any::<u64>()).prop_map(|(memory, pages)| Reply::Memory { memory, pages }),
        (
            vec(record(), 0..=MAX_FAULTS_PER_REPLY),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(rs, dropped, more)| Reply::Faults(FaultBatch {
                records: Vec::from_slice(&rs).unwrap(),
                dropped,
                more
            })),
        (vec(any::<u32>(), 14), any::<u64>(), any::<u64>()).prop_map(|(v, a, b)| Reply::Stats(
            ClientStats {
                domains: v[0],
                max_domains: v[1],
                mapped_bytes: a,
                max_mapped_bytes: b,
                mappings: v[2],
                max_mappings: v[3],
                pt_pages: v[4],
                max_pt_pages: v[5],
                asids: v[6],
                max_asids: v[7],
                memory_regions: v[8],
                max_memory_regions: v[9],
                memory_frames: v[10],
                max_memory_frames: v[11],
                faults_pending: v[12],
                faults_dropped: v[13],
            }
        )),
        error_code().prop_map(Reply::Err),
    ]
}

/// What a transport does: encode, pack into words, unpack, decode.
fn through_words<T>(value: &T) -> T
where
    T: serde::Serialize + for<'a> serde::Deserialize<'a>,
{
    let mut buf = [0u8; MSG_MAX_BYTES];
    let n = encode(value, &mut buf).unwrap();
    let mut words = [0u64; MSG_MAX_WORDS];
    let w = pack_words(&buf[..n], &mut words).unwrap();
    assert_eq!(w, words_for(n));
    assert!(w <= MSG_MAX_WORDS);
    let mut back = [0xAAu8; MSG_MAX_BYTES];
    let m = unpack_words(&words[..w], &mut back).unwrap();
    assert_eq!(m, 8 * w);
    assert_eq!(&back[..n], &buf[..n]);
    // Exact length and padded length both decode.
    let exact: T = decode(&back[..n]).unwrap();
    let padded: T = decode(&back[..m]).unwrap();
    let mut a = [0u8; MSG_MAX_BYTES];
    let mut b = [0u8; MSG_MAX_BYTES];
    let la = encode(&exact, &mut a).unwrap();
    let lb = encode(&padded, &mut b).unwrap();
    assert_eq!(a[..la], b[..lb]);
    padded
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(r in request()) {
        prop_assert_eq!(through_words(&r), r);
    }

    #[test]
    fn replies_round_trip(r in reply()) {
        prop_assert_eq!(through_words(&r), r);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in vec(any::<u8>(), 0..MSG_MAX_BYTES + 16)) {
        let _ = decode_request(&bytes);
        let _ = decode_reply(&bytes);
    }

    /// Mutating a valid encoding (the likeliest malformed input) never panics.
    #[test]
    fn mutated_requests_never_panic(r in request(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut buf = [0u8; MSG_MAX_BYTES];
        let n = encode(&r, &mut buf).unwrap();
        buf[pos.index(n)] = byte;
        let _ = decode_request(&buf[..n]);
        let _ = decode_request(&buf[..cut.index(n + 1)]);
    }

    /// Trailing bytes other than < 1 word of zero padding are refused.
    #[test]
    fn trailing_garbage_is_malformed(r in request(), extra in vec(any::<u8>(), 1..16)) {
        let mut buf = [0u8; MSG_MAX_BYTES];
        let n = encode(&r, &mut buf).unwrap();
        buf[n..n + extra.len()].copy_from_slice(&extra);
        let res = decode_request(&buf[..n + extra.len()]);
        if extra.len() < WORD_BYTES && extra.iter().all(|&b| b == 0) {
            prop_assert_eq!(res, Ok(r));
        } else {
            prop_assert_eq!(res, Err(ErrorCode::Malformed));
        }
    }
}

#[test]
fn empty_and_unknown_variants_are_malformed() {
    assert_eq!(decode_request(&[]), Err(ErrorCode::Malformed));
    assert_eq!(decode_request(&[14]), Err(ErrorCode::Malformed));
    assert_eq!(decode_request(&[0xff; 8]), Err(ErrorCode::Malformed));
    assert_eq!(decode_reply(&[7]), Err(ErrorCode::Malformed));
    // A batch claiming more entries than MAX_BATCH.
    assert_eq!(
        decode_request(&[6, 0, MAX_BATCH as u8 + 1]),
        Err(ErrorCode::Malformed)
    );
    // A full word of zero padding is one word too many.
    assert_eq!(
        decode_request(&[1, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(ErrorCode::Malformed)
    );
    assert_eq!(
        decode_request(&[1, 0, 0, 0, 0, 0, 0, 0]),
        Ok(Request::AllocDomain)
    );
}

#[test]
fn pack_words_is_little_endian_and_bounded() {
    let mut words = [0u64; 2];
    assert_eq!(
        pack_words(&[1, 2, 3, 4, 5, 6, 7, 8, 9], &mut words),
        Some(2)
    );
    assert_eq!(words, [0x0807_0605_0403_0201, 9]);
    assert_eq!(pack_words(&[0; 17], &mut words), None);
    let mut bytes = [0u8; 15];
    assert_eq!(unpack_words(&words, &mut bytes), None);
    assert_eq!(pack_words(&[], &mut words), Some(0));
}
