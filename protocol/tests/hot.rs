//! The register paths of the hot requests (`hot.rs`) agree with the full
//! encoder and decoder: same words out, same values in, and whatever they
//! do not take is left to the full decoder.
use iommu_protocol::*;
use proptest::prelude::*;

fn hot() -> impl Strategy<Value = Hot> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>()
        )
            .prop_map(|(d, iova_pfn, m, offset_pfn, pages, p)| Hot::Map {
                domain: DomainId(d),
                entry: MapEntry {
                    iova_pfn,
                    memory: MemoryHandle(m),
                    offset_pfn,
                    pages,
                    perms: Perms(p),
                },
            }),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(d, iova_pfn, pages)| Hot::Unmap {
            domain: DomainId(d),
            iova_pfn,
            pages,
        }),
        any::<u8>().prop_map(|max| Hot::Faults { max }),
    ]
}

/// What the full path makes of `words`.
fn full_decode(words: &[u64]) -> Result<Request, ErrorCode> {
    let mut bytes = [0u8; MSG_MAX_BYTES];
    let n = unpack_words(words, &mut bytes).unwrap();
    decode_request(&bytes[..n])
}

/// Words the full encoder makes of `request`.
fn full_encode(request: &Request) -> Vec<u64> {
    let mut bytes = [0u8; MSG_MAX_BYTES];
    let n = encode(request, &mut bytes).unwrap();
    let mut words = [0u64; MSG_MAX_WORDS];
    let k = pack_words(&bytes[..n], &mut words).unwrap();
    words[..k].to_vec()
}

/// Words whose first byte is often a hot variant index, with small
/// varints likely.
fn words() -> impl Strategy<Value = Vec<u64>> {
    (
        prop::sample::select(vec![5u8, 7, 10, 0, 6, 0x85]),
        prop::collection::vec(
            prop_oneof![
                any::<u64>(),
                any::<u64>().prop_map(|w| w & 0x7f7f_7f7f_7f7f_7f7f),
                any::<u64>().prop_map(|w| w & 0xff),
                Just(0u64),
            ],
            1..=5,
        ),
    )
        .prop_map(|(first, mut w)| {
            w[0] = (w[0] & !0xff) | u64::from(first);
            w
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn encode_hot_is_the_full_encoding(h in hot()) {
        let (words, n) = encode_hot(&h);
        prop_assert!(words[n..].iter().all(|&w| w == 0));
        prop_assert_eq!(&words[..n], &full_encode(&h.to_request())[..]);
        prop_assert_eq!(decode_hot(&words[..n]), Some(h));
    }

    #[test]
    fn decode_hot_agrees_with_the_full_decoder(w in words()) {
        let full = full_decode(&w);
        match decode_hot(&w) {
            Some(h) => prop_assert_eq!(full, Ok(h.to_request())),
            // Not taken: not a hot request, or not in its canonical form
            // (a canonical hot request is always taken).
            None => {
                if let Ok(r @ (Request::Map { .. } | Request::Unmap { .. } | Request::Faults { .. })) = &full {
                    prop_assert_ne!(full_encode(r), w);
                }
            }
        }
    }
}
