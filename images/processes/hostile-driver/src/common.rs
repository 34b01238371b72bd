//! What the roles share: the edu and its DMA, the DMA pool's pages, the
//! server connection, notifications with a time limit, and the steps the
//! hostile and the victim take in turn.

use crate::edu::Direction;
use iommu_client::Iommu;
use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CPtr, Notification};
pub use sel4_iommu::connect;
use sel4_iommu::platform::CounterDelay;
use sel4_iommu::transport::Sel4Transport;

pub type Client = Iommu<Sel4Transport>;

pub const PAGE: usize = 4096;
/// Bytes per DMA: half a page, clear of the end of the edu's buffer.
pub const TRANSFER: usize = PAGE / 2;
/// CNTFRQ of QEMU's cortex-a53 (DESIGN.md section 3).
pub const COUNTER_HZ: u64 = 62_500_000;

/// The hostile's attacks, in order: after each the hostile signals `step`
/// and the victim does one DMA round trip (`victim/dma-after-<step>`),
/// then signals `step-done`. After `wedge` the victim also registers a
/// new frame (`victim/registers-after-wedge`).
pub const STEPS: [&str; 8] = [
    "not-a-frame",
    "endpoint-as-frame",
    "notification-as-frame",
    "own-untyped-frame",
    "read-only",
    "revoke-after-map",
    "untyped-revoked",
    "wedge",
];

/// Badges of the fuzzer's two caps to the `fuzz` notification: do one
/// DMA round trip (then signal `fuzz-done`); the fuzz run is over.
pub const FUZZ_ROUND_TRIP: u64 = 1;
pub const FUZZ_OVER: u64 = 2;

/// Badges of the hostile's two caps to the `thief` notification: the
/// thief is about to start; it is at the head of the root task's queue.
pub const THIEF_STARTING: u64 = 1;
pub const THIEF_ARMED: u64 = 2;

pub use crate::pci::{bring_up, Device};

/// Memory the CPU reaches at `vaddr` (a DMA pool page, or a frame the
/// process mapped itself), read and written with volatile accesses: the
/// device writes it behind the compiler's back.
#[derive(Clone, Copy)]
pub struct Mem {
    pub vaddr: usize,
}

impl Mem {
    pub fn at(vaddr: u64) -> Mem {
        Mem {
            vaddr: vaddr as usize,
        }
    }

    /// Page `index` of this process's DMA pool.
    pub fn pool_page(info: &StartInfo, index: usize) -> Mem {
        assert!(
            (index as u64) < info.dma.frames,
            "page {index} outside the pool"
        );
        Mem::at(info.dma.vaddr + (index * PAGE) as u64)
    }

    pub fn byte(&self, i: usize) -> u8 {
        // SAFETY: every Mem is a mapped page (see the constructors' callers)
        // and i < PAGE at every call site.
        unsafe { core::ptr::read_volatile((self.vaddr + i) as *const u8) }
    }

    pub fn set(&self, i: usize, value: u8) {
        // SAFETY: as in `byte`.
        unsafe { core::ptr::write_volatile((self.vaddr + i) as *mut u8, value) }
    }

    pub fn fill_with(&self, value: u8) {
        for i in 0..PAGE {
            self.set(i, value);
        }
    }

    /// The pattern `seed` (different for every seed) over the whole page.
    pub fn fill_pattern(&self, seed: u8) {
        for i in 0..PAGE {
            self.set(i, pattern(seed, i));
        }
    }

    /// Whether bytes `[0, len)` hold `seed`'s pattern and the rest `rest`.
    pub fn holds(&self, seed: u8, len: usize, rest: u8) -> bool {
        (0..PAGE).all(|i| self.byte(i) == if i < len { pattern(seed, i) } else { rest })
    }

    pub fn all(&self, value: u8) -> bool {
        (0..PAGE).all(|i| self.byte(i) == value)
    }

    pub fn word(&self, i: usize) -> u64 {
        (0..8).fold(0, |w, b| w | (self.byte(i * 8 + b) as u64) << (8 * b))
    }

    /// A cheap fingerprint, to show DMA left a page alone.
    pub fn fingerprint(&self) -> u64 {
        (0..PAGE).fold(0xcbf2_9ce4_8422_2325, |h, i| {
            (h ^ self.byte(i) as u64).wrapping_mul(0x100_0000_01b3)
        })
    }
}

pub fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 8) as u8
}

/// Page `index`'s frame cap in the DMA pool (an unmapped copy).
pub fn pool_frame(info: &StartInfo, index: usize) -> CPtr {
    CPtr(info.dma.first_frame_cap + index as u64)
}

/// Spins until the edu finishes; false if it did not within a second.
pub fn dma(device: &Device, direction: Direction, iova: u64, len: usize) -> bool {
    let start = CounterDelay::now();
    device
        .edu
        .dma(direction, iova, 0, len, || {
            CounterDelay::now().wrapping_sub(start) < COUNTER_HZ
        })
        .is_ok()
}

/// The cap named `name` (with `badge`, if given) among this process's.
pub fn cap(info: &StartInfo, name: &str, badge: Option<u64>) -> Option<CPtr> {
    info.caps()
        .iter()
        .find(|c| c.name.as_str() == name && badge.is_none_or(|b| c.badge == b))
        .map(|c| CPtr(c.cptr))
}

pub fn signal(info: &StartInfo, name: &str, badge: Option<u64>) {
    match cap(info, name, badge) {
        Some(c) => syscalls::signal(Notification(c)),
        None => println!("{}: no cap to the notification {name}", info.name.as_str()),
    }
}

/// Waits up to `seconds` for the notification `name`; its badge bits, or
/// None on time-out. Polls and yields, so threads of equal priority run.
pub fn wait_for(info: &StartInfo, name: &str, seconds: u64) -> Option<u64> {
    let Some(c) = cap(info, name, None) else {
        println!("{}: no cap to the notification {name}", info.name.as_str());
        return None;
    };
    let start = CounterDelay::now();
    loop {
        let bits = syscalls::poll(Notification(c)).0;
        if bits != 0 {
            return Some(bits);
        }
        if CounterDelay::now().wrapping_sub(start) > seconds * COUNTER_HZ {
            return None;
        }
        syscalls::yield_now();
    }
}

/// Lets `ms` milliseconds of the counter pass, yielding meanwhile.
pub fn pause_ms(ms: u64) {
    let start = CounterDelay::now();
    while CounterDelay::now().wrapping_sub(start) < ms * (COUNTER_HZ / 1000) {
        syscalls::yield_now();
    }
}
