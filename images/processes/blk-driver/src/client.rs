//! The driver's clients: `blk-client` reads and writes through the block
//! protocol and checks every byte; `blk-stranger` sends what no client
//! should get away with; `blk-watcher` has the driver die with a read
//! outstanding and outlives it.

use crate::checks::Checks;
use crate::pattern::{image_byte, written_byte};
use crate::proto::{op, status, CHUNK, STAGING_BYTES};
use crate::{COUNTER_HZ, PAGE};
use procrt::{println, StartInfo};
use sel4_abi::{ipc_buffer, syscalls, CPtr, MessageInfo};
use sel4_iommu::platform::CounterDelay;

/// Sectors the client writes: (first LBA, count, staging offset). The host
/// test (tools/xtask/src/imagetests/blk.rs, `WRITES`) checks the image file
/// for them; keep the two equal.
pub const WRITES: [(u64, u64, u64); 3] = [
    // One page, page-aligned: PRP1 only.
    (100, 8, 0),
    // 1.5 KiB from 3.5 KiB into the buffer: crosses a page (PRP1 + PRP2).
    (2045, 3, 3584),
    // 12 KiB from 1 KiB: four pages, a PRP list.
    (5000, 24, 1024),
];

/// The driver's endpoint and what INFO said.
struct Blk {
    ep: CPtr,
    lba_size: u64,
    lba_count: u64,
    staging: u64,
}

/// Calls the driver: `label` with `words`; the reply's words.
fn call(ep: CPtr, label: u64, words: &[u64]) -> ([u64; 120], usize) {
    let Some(b) = ipc_buffer() else {
        return ([status::INVALID; 120], 0);
    };
    for (i, &w) in words.iter().enumerate().take(120) {
        b.set_mr(i, w);
    }
    let answer = syscalls::call(ep, MessageInfo::new(label, 0, 0, words.len() as u64));
    let mut out = [0u64; 120];
    let n = answer.length().min(120);
    if let Some(b) = ipc_buffer() {
        for (i, w) in out.iter_mut().enumerate().take(n) {
            *w = b.mr(i);
        }
    }
    (out, n)
}

/// (status, detail) of a reply.
type Outcome = (u64, u64);

/// The guard pattern the client puts around a read's target in the
/// staging buffer: byte `at` of the buffer. It is no sector of the disk's
/// pattern, so data the device wrote there shows.
fn guard_byte(at: u64) -> u8 {
    (at as u8).wrapping_mul(0x3b) ^ ((at >> 8) as u8).wrapping_mul(0x1d) ^ 0xc3
}

/// What a read did to the staging bytes around its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Guard {
    /// Guard bytes put and read back.
    bytes: u64,
    /// The first that changed: (staging offset, byte read back).
    changed: Option<(u64, u8)>,
    /// A GET or PUT of them failed.
    failed: bool,
}

impl Guard {
    fn intact(&self) -> bool {
        self.changed.is_none() && !self.failed
    }
}

impl Blk {
    fn connect(info: &StartInfo) -> Option<Blk> {
        let ep = CPtr(info.cap("blk")?.cptr);
        let (w, n) = call(ep, op::INFO, &[]);
        if n < 6 || w[0] != status::OK {
            println!("{}: INFO failed: {:?}", info.name.as_str(), &w[..n.min(6)]);
            return None;
        }
        println!(
            "{}: disk: {} blocks of {} bytes; staging buffer {} KiB; largest command {} KiB",
            info.name.as_str(),
            w[3],
            w[2],
            w[4] / 1024,
            w[5] / 1024
        );
        Some(Blk {
            ep,
            lba_size: w[2],
            lba_count: w[3],
            staging: w[4].min(STAGING_BYTES),
        })
    }

    fn io(&self, label: u64, lba: u64, count: u64, offset: u64) -> Outcome {
        let (w, _) = call(self.ep, label, &[lba, count, offset]);
        (w[0], w[1])
    }

    /// Staging bytes `[offset, offset + out.len())`.
    fn get(&self, offset: u64, out: &mut [u8]) -> bool {
        for (k, piece) in out.chunks_mut(CHUNK).enumerate() {
            let at = offset + (k * CHUNK) as u64;
            let (w, n) = call(self.ep, op::GET, &[at, piece.len() as u64]);
            if w[0] != status::OK || n < 2 + piece.len() / 8 {
                return false;
            }
            for (j, bytes) in piece.chunks_mut(8).enumerate() {
                bytes.copy_from_slice(&w[2 + j].to_le_bytes()[..bytes.len()]);
            }
        }
        true
    }

    fn put(&self, offset: u64, data: &[u8]) -> bool {
        for (k, piece) in data.chunks(CHUNK).enumerate() {
            let mut words = [0u64; 2 + CHUNK / 8];
            words[0] = offset + (k * CHUNK) as u64;
            words[1] = piece.len() as u64;
            for (j, bytes) in piece.chunks(8).enumerate() {
                let mut b = [0u8; 8];
                b[..bytes.len()].copy_from_slice(bytes);
                words[2 + j] = u64::from_le_bytes(b);
            }
            let (w, _) = call(self.ep, op::PUT, &words[..2 + piece.len().div_ceil(8)]);
            if w[0] != status::OK {
                return false;
            }
        }
        true
    }

    /// The staging bytes the driver maps with a read of `bytes` at
    /// `offset` (whole 4 KiB pages: the staging buffer starts on a page)
    /// but that are not the read's: before and after it.
    fn guard_ranges(&self, offset: u64, bytes: u64) -> [core::ops::Range<u64>; 2] {
        let end = offset + bytes;
        let page_end = end.next_multiple_of(PAGE).min(self.staging);
        [offset - offset % PAGE..offset, end..page_end.max(end)]
    }

    /// Puts the guard pattern into `ranges`.
    fn put_guard(&self, ranges: &[core::ops::Range<u64>]) -> bool {
        let mut piece = [0u8; CHUNK];
        for r in ranges {
            let mut at = r.start;
            while at < r.end {
                let n = (r.end - at).min(CHUNK as u64);
                for (i, b) in piece[..n as usize].iter_mut().enumerate() {
                    *b = guard_byte(at + i as u64);
                }
                if !self.put(at, &piece[..n as usize]) {
                    return false;
                }
                at += n;
            }
        }
        true
    }

    /// Reads `ranges` back and compares them with the guard pattern.
    fn check_guard(&self, ranges: &[core::ops::Range<u64>]) -> Guard {
        let mut g = Guard {
            bytes: 0,
            changed: None,
            failed: false,
        };
        let mut piece = [0u8; CHUNK];
        for r in ranges {
            let mut at = r.start;
            while at < r.end {
                let n = (r.end - at).min(CHUNK as u64);
                if !self.get(at, &mut piece[..n as usize]) {
                    g.failed = true;
                    return g;
                }
                for (i, &b) in piece[..n as usize].iter().enumerate() {
                    let here = at + i as u64;
                    if b != guard_byte(here) && g.changed.is_none() {
                        g.changed = Some((here, b));
                    }
                }
                g.bytes += n;
                at += n;
            }
        }
        g
    }

    /// Reads `count` sectors at `lba` into the staging buffer at `offset`
    /// and compares them with `expect(lba, byte)`: the outcome, the first
    /// wrong byte (sector, offset, got) if any, and what became of the
    /// guard pattern put around the target beforehand (the rest of the
    /// pages the driver maps for the read, which the device may reach but
    /// must not write).
    fn read_and_compare(
        &self,
        lba: u64,
        count: u64,
        offset: u64,
        expect: impl Fn(u64, usize) -> u8,
    ) -> (Outcome, Option<(u64, usize, u8)>, Guard) {
        let guard = self.guard_ranges(offset, count * self.lba_size);
        let mut g = Guard {
            bytes: 0,
            changed: None,
            failed: !self.put_guard(&guard),
        };
        let outcome = self.io(op::READ, lba, count, offset);
        if g.failed {
            return (outcome, None, g);
        }
        g = self.check_guard(&guard);
        if outcome.0 != status::OK {
            return (outcome, None, g);
        }
        let mut sector = [0u8; 512];
        for s in 0..count {
            if !self.get(offset + s * self.lba_size, &mut sector) {
                return ((status::INVALID, 0), None, g);
            }
            if let Some(i) = (0..512).find(|&i| sector[i] != expect(lba + s, i)) {
                return (outcome, Some((lba + s, i, sector[i])), g);
            }
        }
        (outcome, None, g)
    }
}

pub fn run(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("blk-client");
    let Some(blk) = Blk::connect(info) else {
        checks.check("info", false, format_args!("no INFO reply"));
        return false;
    };
    checks.check(
        "info",
        blk.lba_size == 512 && blk.lba_count == 8 * 1024 * 1024 / 512,
        format_args!(
            "{} blocks of {} bytes (the image is 8 MiB)",
            blk.lba_count, blk.lba_size
        ),
    );

    // Reads: each range against the image's pattern, the rest of its pages
    // against the guard pattern.
    let last = blk.lba_count - 1;
    let reads: [(&str, u64, u64, u64, &str); 5] = [
        ("read-one-sector", 0, 1, 0, "PRP1 only"),
        (
            "read-crossing-page",
            21,
            4,
            3072,
            "2 KiB from 3 KiB: PRP1 + PRP2",
        ),
        (
            "read-multi-page",
            1000,
            40,
            512,
            "20 KiB over 6 pages: a PRP list",
        ),
        ("read-split", 3000, 256, 0, "128 KiB: two 64 KiB commands"),
        ("read-last-sector", last, 1, 0, "the disk's last block"),
    ];
    for (name, lba, count, offset, what) in reads {
        let (outcome, wrong, guard) = blk.read_and_compare(lba, count, offset, image_byte);
        checks.check(
            name,
            outcome == (status::OK, 0) && wrong.is_none() && guard.intact(),
            format_args!(
                "LBA {lba}+{count} at staging offset {offset} ({what}): {outcome:?}, first wrong byte {wrong:?}; {} guard bytes around it, first changed {:?}{}",
                guard.bytes,
                guard.changed,
                if guard.failed { ", GET/PUT failed" } else { "" }
            ),
        );
    }
    let beyond = blk.io(op::READ, blk.lba_count, 1, 0);
    checks.check(
        "read-beyond-disk-refused",
        beyond.0 == status::INVALID,
        format_args!("LBA {}: {beyond:?}", blk.lba_count),
    );

    // Writes: a known pattern, then read back with a neighbour on each side.
    for (k, (lba, count, offset)) in WRITES.into_iter().enumerate() {
        let mut ok = true;
        for s in 0..count {
            let sector: [u8; 512] = core::array::from_fn(|i| written_byte(lba + s, i));
            ok &= blk.put(offset + s * blk.lba_size, &sector);
        }
        let wrote = blk.io(op::WRITE, lba, count, offset);
        // Read back elsewhere in the staging buffer, from one sector before
        // to one after.
        let back = 64 * 1024;
        let (outcome, wrong, guard) = blk.read_and_compare(lba - 1, count + 2, back, |l, i| {
            if (lba..lba + count).contains(&l) {
                written_byte(l, i)
            } else {
                image_byte(l, i)
            }
        });
        let name = ["write-one-page", "write-crossing-page", "write-multi-page"][k];
        checks.check(
            name,
            ok && wrote == (status::OK, 0)
                && outcome == (status::OK, 0)
                && wrong.is_none()
                && guard.intact(),
            format_args!(
                "LBA {lba}+{count} from staging offset {offset}: write {wrote:?}; read back LBA {}+{}: {outcome:?}, first wrong byte {wrong:?}; {} guard bytes around it, first changed {:?}",
                lba - 1,
                count + 2,
                guard.bytes,
                guard.changed
            ),
        );
    }
    let flushed = call(blk.ep, op::FLUSH, &[]).0;
    checks.check(
        "flush",
        flushed[0] == status::OK,
        format_args!("{:?}", (flushed[0], flushed[1])),
    );

    // A read into a mapped buffer, then the same read after the driver
    // unmapped it: the driver must report an I/O error (variant 0: one
    // page; 1: a PRP list, unmapped too).
    for (variant, name) in [
        (0, "unmapped-buffer-io-error"),
        (1, "unmapped-prp-list-io-error"),
    ] {
        let (w, _) = call(blk.ep, op::TEST_UNMAPPED, &[variant]);
        checks.check(
            name,
            w[0] == status::IO_ERROR || w[0] == status::DMA_FAULT,
            format_args!(
                "status {} detail {:#x} (IO_ERROR {}, DMA_FAULT {}), buffer IOVA {:#x}",
                w[0],
                w[1],
                status::IO_ERROR,
                status::DMA_FAULT,
                w[2]
            ),
        );
    }
    // The driver still works afterwards.
    let (outcome, wrong, guard) = blk.read_and_compare(0x40, 8, 0, image_byte);
    checks.check(
        "read-after-faults",
        outcome == (status::OK, 0) && wrong.is_none() && guard.intact(),
        format_args!("LBA 0x40+8 (what the faulted reads asked for): {outcome:?}, first wrong byte {wrong:?}; {} guard bytes around it, first changed {:?}", guard.bytes, guard.changed),
    );

    let (w, _) = call(blk.ep, op::SHUTDOWN, &[]);
    checks.check(
        "driver-shutdown",
        w[0] == status::OK,
        format_args!("{:?}", (w[0], w[1])),
    );
    checks.passed()
}

/// `blk-stranger` (`blk` system): another client of the driver, whose cap
/// carries a badge other than the controlling client's. It runs before
/// `blk-client` (a higher priority) and sends what must be refused with an
/// error reply, never crash the driver: the control and test requests, and
/// GET, PUT, READ and WRITE words that overflow. Then the driver must still
/// serve it.
pub fn stranger(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("blk-stranger");
    let Some(blk) = Blk::connect(info) else {
        checks.check("info", false, format_args!("no INFO reply"));
        return false;
    };
    for (name, label, words) in [
        ("shutdown-refused", op::SHUTDOWN, &[][..]),
        ("test-unmapped-refused", op::TEST_UNMAPPED, &[0][..]),
        ("die-mid-io-refused", op::DIE_MID_IO, &[0x80, 1][..]),
    ] {
        let (w, _) = call(blk.ep, label, words);
        checks.check(
            name,
            w[0] == status::REFUSED,
            format_args!(
                "label {label}: status {} (REFUSED {})",
                w[0],
                status::REFUSED
            ),
        );
    }
    // Words whose sums overflow, or name bytes outside the staging buffer,
    // or lengths GET and PUT do not carry.
    let max = u64::MAX;
    let staging = blk.staging;
    let hostile: [(u64, [u64; 3]); 14] = [
        (op::GET, [max - 7, 16, 0]),
        (op::GET, [max, 8, 0]),
        (op::GET, [staging - 8, 16, 0]),
        (op::GET, [0, CHUNK as u64 + 8, 0]),
        (op::GET, [0, 12, 0]),
        (op::GET, [0, max - 7, 0]),
        (op::PUT, [max - 7, 16, 0]),
        (op::PUT, [staging, 8, 0]),
        // 64 bytes announced, 8 carried.
        (op::PUT, [0, 64, 0]),
        (op::READ, [0, max, 0]),
        (op::READ, [max, 2, 0]),
        (op::READ, [0, 1, max - 100]),
        (op::WRITE, [max - 1, 1, 0]),
        (op::WRITE, [0, max / 256, 512]),
    ];
    let mut refused = 0;
    let mut first_wrong = None;
    for (label, words) in hostile {
        // GET: offset, len; PUT: offset, len, one data word; READ and
        // WRITE: lba, count, offset.
        let n = if label == op::GET { 2 } else { 3 };
        let (w, _) = call(blk.ep, label, &words[..n]);
        if w[0] == status::INVALID {
            refused += 1;
        } else if first_wrong.is_none() {
            first_wrong = Some((label, words, w[0]));
        }
    }
    checks.check(
        "overflowing-words-refused",
        refused == hostile.len(),
        format_args!(
            "{refused} of {} GET/PUT/READ/WRITE requests with overflowing or out-of-range words answered INVALID; first otherwise: {first_wrong:?}",
            hostile.len()
        ),
    );
    // Still serving, with the same data.
    let (outcome, wrong, guard) = blk.read_and_compare(7, 1, 0, image_byte);
    checks.check(
        "driver-still-serves",
        outcome == (status::OK, 0) && wrong.is_none() && guard.intact(),
        format_args!(
            "LBA 7+1: {outcome:?}, first wrong byte {wrong:?}; {} guard bytes intact: {}",
            guard.bytes,
            guard.intact()
        ),
    );
    checks.passed()
}

/// `blk-death`: one good read, then the driver dies with a read and a
/// compare outstanding; the watcher waits past the moment the device gets
/// to them.
pub fn watcher(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("blk-watcher");
    let Some(blk) = Blk::connect(info) else {
        checks.check("info", false, format_args!("no INFO reply"));
        return false;
    };
    // The disk's first I/O passes the throttle at once and fills it (four
    // sectors: four seconds' worth, blk-death.toml): the reads after it
    // wait.
    let (outcome, wrong, guard) = blk.read_and_compare(0, 4, 0, image_byte);
    checks.check(
        "read-before-death",
        outcome == (status::OK, 0) && wrong.is_none() && guard.intact(),
        format_args!(
            "LBA 0+4: {outcome:?}, first wrong byte {wrong:?}; {} guard bytes around it, first changed {:?}",
            guard.bytes, guard.changed
        ),
    );
    let (w, _) = call(blk.ep, op::DIE_MID_IO, &[0x80, 1]);
    checks.check(
        "driver-submitted-and-dies",
        w[0] == status::OK,
        format_args!(
            "a read of LBA 0x80+1 into IOVA {:#x} and a compare from IOVA {:#x} are outstanding",
            w[2], w[3]
        ),
    );
    // The disk is throttled (blk-death.toml: one sector a second): the
    // read completes about four seconds from now, the compare reads the
    // host's buffer about a second after that, long after the root task
    // retired the driver. Wait past that, so that QEMU's trace shows what
    // became of them.
    let start = CounterDelay::now();
    while CounterDelay::now().wrapping_sub(start) < 8 * COUNTER_HZ {
        syscalls::yield_now();
    }
    println!("blk-watcher: waited 8 s after the driver's death");
    checks.passed()
}
