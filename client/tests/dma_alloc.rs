//! The client-side I/O address allocator of the DMA layer: exhaustion,
//! alignment, fragmentation and coalescing, no overlap; then the same as
//! properties of random operation sequences against a brute-force model.
use iommu_client::{Error, ErrorCode, IovaAllocator, Placement};
use proptest::prelude::*;

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;

fn misaligned() -> Result<u64, Error> {
    Err(Error::Iommu(ErrorCode::Misaligned))
}

#[test]
fn window_is_validated() {
    type A = IovaAllocator<4>;
    assert_eq!(A::new(0x1234, K4), Err(ErrorCode::Misaligned.into()));
    assert_eq!(A::new(0, 0x1800), Err(ErrorCode::Misaligned.into()));
    assert_eq!(A::new(K4, 0), Err(ErrorCode::OutOfRange.into()));
    assert_eq!(
        A::new(u64::MAX - 0xfff, 2 * K4),
        Err(ErrorCode::OutOfRange.into())
    );
    // The very top page of the address space is fine.
    let mut top = A::new(u64::MAX - 0xfff, K4).unwrap();
    assert_eq!(top.window(), u64::MAX - 0xfff..u64::MAX);
    assert_eq!(top.alloc(K4, K4, 0, Placement::High), Ok(u64::MAX - 0xfff));
    assert_eq!(top.free(u64::MAX - 0xfff, K4), Ok(()));
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut a: IovaAllocator<4> = IovaAllocator::new(0x10_0000, 0x10_0000).unwrap();
    let before = a.clone();
    assert_eq!(
        a.alloc(0, K4, 0, Placement::Low),
        Err(ErrorCode::Malformed.into())
    );
    assert_eq!(a.alloc(0x800, K4, 0, Placement::Low), misaligned());
    assert_eq!(a.alloc(K4, 0x3000, 0, Placement::Low), misaligned());
    assert_eq!(a.alloc(K4, 0x800, 0, Placement::Low), misaligned());
    assert_eq!(a.alloc(K4, K4, 0x10, Placement::Low), misaligned());
    // Freeing what is not allocated, or outside the window.
    let not_mapped = Err(Error::Iommu(ErrorCode::NotMapped));
    assert_eq!(a.free(0x10_0000, K4), not_mapped);
    let x = a.alloc(2 * K4, K4, 0, Placement::Low).unwrap();
    let one = a.clone();
    assert_eq!(a.free(x, 3 * K4), not_mapped, "past the allocation");
    assert_eq!(a.free(x - K4, 2 * K4), not_mapped, "before it");
    assert_eq!(a.free(0, K4), not_mapped, "outside the window");
    assert_eq!(a.free(x + 0x10, K4), not_mapped);
    assert_eq!(a, one);
    a.free(x, 2 * K4).unwrap();
    assert_eq!(a, before);
}

#[test]
fn exhaustion_by_space_and_by_count() {
    // 8 pages.
    let mut a: IovaAllocator<16> = IovaAllocator::new(0, 8 * K4).unwrap();
    let all: Vec<u64> = (0..8)
        .map(|_| a.alloc(K4, K4, 0, Placement::Low).unwrap())
        .collect();
    assert_eq!(all, (0..8).map(|i| i * K4).collect::<Vec<_>>());
    assert_eq!(
        a.alloc(K4, K4, 0, Placement::Low),
        Err(Error::IovaExhausted)
    );
    assert_eq!(a.free_bytes(), 0);
    a.free(3 * K4, K4).unwrap();
    assert_eq!(
        a.alloc(2 * K4, K4, 0, Placement::Low),
        Err(Error::IovaExhausted)
    );
    assert_eq!(a.alloc(K4, K4, 0, Placement::High), Ok(3 * K4));

    // By count: N - 1 live ranges at most, whatever space is left.
    let mut b: IovaAllocator<4> = IovaAllocator::new(0, 1 << 30).unwrap();
    assert_eq!(IovaAllocator::<4>::MAX_LIVE, 3);
    for _ in 0..3 {
        b.alloc(K4, K4, 0, Placement::Low).unwrap();
    }
    assert_eq!(
        b.alloc(K4, K4, 0, Placement::Low),
        Err(Error::IovaExhausted)
    );
    b.free(K4, K4).unwrap();
    // The freed page in the middle is a third free extent: still fine.
    assert_eq!(b.alloc(K4, K4, 0, Placement::High), Ok((1 << 30) - K4));
}

#[test]
fn alignment_and_phase() {
    // [4 KiB, 8 MiB + 4 KiB).
    let mut a: IovaAllocator<8> = IovaAllocator::new(0x1000, 0x80_0000).unwrap();
    // 2 MiB aligned: the first 2 MiB boundary in the window.
    assert_eq!(a.alloc(M2, M2, 0, Placement::Low), Ok(0x20_0000));
    // Congruent to 4 KiB mod 2 MiB: below it, at the window's start.
    assert_eq!(a.alloc(K4, M2, 0x1000, Placement::Low), Ok(0x1000));
    // The gap left before 2 MiB is still used by small ranges.
    assert_eq!(a.alloc(K4, K4, 0, Placement::Low), Ok(0x2000));
    // From the top: the highest address with the phase that fits.
    assert_eq!(a.alloc(M2, M2, 0x1000, Placement::High), Ok(0x60_1000));
    assert_eq!(a.alloc(M2, M2, 0, Placement::High), Ok(0x40_0000));
    // No 2 MiB-aligned 2 MiB range is left.
    assert_eq!(
        a.alloc(M2, M2, 0, Placement::Low),
        Err(Error::IovaExhausted)
    );
    assert!(a.largest_free() < M2);
    // A phase larger than the alignment counts modulo the alignment.
    let mut b: IovaAllocator<4> = IovaAllocator::new(0, 0x10_0000).unwrap();
    assert_eq!(b.alloc(K4, 0x4000, 0x7000, Placement::Low), Ok(0x3000));
}

#[test]
fn fragmentation_and_coalescing() {
    let mut a: IovaAllocator<64> = IovaAllocator::new(0x4000_0000, 32 * K4).unwrap();
    let xs: Vec<u64> = (0..16)
        .map(|_| a.alloc(2 * K4, K4, 0, Placement::Low).unwrap())
        .collect();
    // Free every other one: 8 holes of 2 pages, 16 pages free in all.
    for x in xs.iter().step_by(2) {
        a.free(*x, 2 * K4).unwrap();
    }
    assert_eq!(a.free_bytes(), 16 * K4);
    assert_eq!(a.largest_free(), 2 * K4);
    assert_eq!(a.free_ranges().count(), 8);
    assert_eq!(
        a.alloc(3 * K4, K4, 0, Placement::Low),
        Err(Error::IovaExhausted),
        "fragmented: no 3 pages in a row"
    );
    // A fitting range goes into the lowest hole, or the highest.
    assert_eq!(a.alloc(2 * K4, K4, 0, Placement::Low), Ok(xs[0]));
    assert_eq!(a.alloc(K4, K4, 0, Placement::High), Ok(xs[14] + K4));
    a.free(xs[0], 2 * K4).unwrap();
    a.free(xs[14] + K4, K4).unwrap();
    // Free the rest in a scrambled order: everything merges back.
    for i in [7usize, 1, 5, 3, 15, 9, 13, 11] {
        a.free(xs[i], 2 * K4).unwrap();
    }
    assert_eq!(a.live(), 0);
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), vec![a.window()]);
}

/// One step of a random sequence.
#[derive(Debug, Clone)]
enum Op {
    Alloc {
        pages: u64,
        align_shift: u32,
        phase_pages: u64,
        high: bool,
    },
    /// Free the live range at this index (modulo how many there are).
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..24, 0u32..6, 0u64..40, any::<bool>()).prop_map(|(pages, align_shift, phase_pages, high)| {
            Op::Alloc { pages, align_shift, phase_pages, high }
        }),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

/// Whether some address in `[lo, hi)` (pages) not overlapping `live` could
/// hold `pages` pages with the alignment: the brute-force answer.
fn fits(lo: u64, hi: u64, live: &[(u64, u64)], pages: u64, step: u64, ph: u64) -> bool {
    (lo..hi).any(|c| {
        c % step == ph % step
            && c + pages <= hi
            && live.iter().all(|&(s, n)| c + pages <= s || s + n <= c)
    })
}

const N: usize = 8;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random allocations and frees over a window of 64 pages (at an odd
    /// page offset): every range is in the window, aligned as asked and
    /// overlaps no other live range; the free bytes add up; an allocation
    /// fails only when no placement exists or N - 1 ranges are live; and
    /// when everything is freed the window is one free range again.
    #[test]
    fn allocations_never_overlap_and_coalesce(ops in proptest::collection::vec(op(), 1..80)) {
        let base_page = 5u64;
        let window = 64u64;
        let mut a: IovaAllocator<N> = IovaAllocator::new(base_page * K4, window * K4).unwrap();
        let mut live: Vec<(u64, u64)> = Vec::new(); // (first page, pages)
        for op in ops {
            match op {
                Op::Alloc { pages, align_shift, phase_pages, high } => {
                    let step = 1u64 << align_shift;
                    let placement = if high { Placement::High } else { Placement::Low };
                    let before = a.clone();
                    match a.alloc(pages * K4, step * K4, phase_pages * K4, placement) {
                        Ok(x) => {
                            prop_assert_eq!(x % K4, 0);
                            let c = x / K4;
                            prop_assert!(c >= base_page && c + pages <= base_page + window);
                            prop_assert_eq!(c % step, phase_pages % step);
                            for &(s, n) in &live {
                                prop_assert!(c + pages <= s || s + n <= c, "overlap");
                            }
                            // Lowest (or highest) placement that fits.
                            let lo_fit = (base_page..c).any(|d| d % step == phase_pages % step
                                && live.iter().all(|&(s, n)| d + pages <= s || s + n <= d));
                            let hi_fit = (c + 1..base_page + window).any(|d| d % step == phase_pages % step
                                && d + pages <= base_page + window
                                && live.iter().all(|&(s, n)| d + pages <= s || s + n <= d));
                            let better = if high { hi_fit } else { lo_fit };
                            prop_assert!(!better, "a better placement existed");
                            live.push((c, pages));
                        }
                        Err(e) => {
                            prop_assert_eq!(e, Error::IovaExhausted);
                            prop_assert_eq!(&a, &before, "a refusal changes nothing");
                            prop_assert!(
                                live.len() >= N - 1
                                    || !fits(base_page, base_page + window, &live, pages, step, phase_pages),
                                "refused although a placement exists"
                            );
                        }
                    }
                }
                Op::Free(i) => {
                    if live.is_empty() {
                        prop_assert!(a.free(base_page * K4, K4).is_err());
                        continue;
                    }
                    let (s, n) = live.swap_remove(i % live.len());
                    prop_assert_eq!(a.free(s * K4, n * K4), Ok(()));
                    prop_assert!(!a.is_allocated(s * K4, n * K4));
                }
            }
            let used: u64 = live.iter().map(|&(_, n)| n).sum();
            prop_assert_eq!(a.free_bytes(), (window - used) * K4);
            prop_assert_eq!(a.live(), live.len());
            for &(s, n) in &live {
                prop_assert!(a.is_allocated(s * K4, n * K4));
            }
            // Free extents are sorted, disjoint and merged.
            let ranges: Vec<_> = a.free_ranges().collect();
            for w in ranges.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
        }
        for (s, n) in live.drain(..) {
            prop_assert_eq!(a.free(s * K4, n * K4), Ok(()));
        }
        prop_assert_eq!(a.free_ranges().collect::<Vec<_>>(), vec![a.window()]);
        prop_assert_eq!(a.live(), 0);
    }
}
