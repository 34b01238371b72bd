//! The `blk-bench` role (`bench-blk` system, run by `cargo xtask bench`):
//! 4 KiB random reads through this driver's own I/O path, timed with
//! CNTVCT_EL0. Under `-icount shift=0` one guest instruction is one
//! virtual nanosecond, so the times are instruction counts of everything
//! the CPU did meanwhile: the driver, the kernel, the IOMMU server, and
//! the driver's polling while QEMU's NVMe does the I/O.
//!
//! Every mode reads the same sequence of LBAs (a fixed-seed PRNG over the
//! whole disk, 4 KiB-aligned), one command at a time (queue depth 1,
//! completion polled as the driver always does), into [`BUFFERS`] pages
//! of the staging buffer in turn:
//! - `strict`: [`Driver::command`], as every request of the `blk` system:
//!   the buffer `map_single` before the doorbell, `unmap` after the
//!   completion (the server replies after its TLBI + CMD_SYNC). The
//!   client's DMA layer hands out addresses top-down, so the buffer sits
//!   right below the queues, in their leaf table, which stays.
//! - `strict-neighbour`: the same with one more page kept mapped beside
//!   the buffers (as a driver with other buffers in flight has).
//! - `pool`: [`Driver::read_premapped`]: each buffer mapped once with
//!   `map_persistent` before the run; no IOMMU server call per I/O.
//!
//! Each read's data is checked against the disk's pattern, outside the
//! timed part. Output: `@blk-<mode>` / `@` markers straight to the PL011
//! around each mode's timed reads (QEMU's trace attributes SMMU commands
//! by them), then through the root task one line per mode,
//! `bench: blk <mode> ios=<n> ns=<total> map=<ns> unmap=<ns> device=<ns>
//! faultpoll=<ns> min=<ns> max=<ns> p50=<ns> devmin=<ns> devmax=<ns>
//! devp50=<ns> loop=<ns>` (sums over the I/Os, see [`IoTimes`], then one
//! read's least, most and median total and device wait, and the whole
//! timed loop with the PRNG and the data checks), and `bench: done`.

use super::{bring_up, now, pool_page, Driver, Fail, IoTimes, PAGE_CANARY, PAGE_STAGING};
use crate::pattern::image_byte;
use crate::proto::status;
use crate::PAGE;
use iommu_client::{Direction, DmaAddr};
use procrt::{println, StartInfo};

/// Timed reads per mode (`cargo xtask bench --iterations N` / `--quick`
/// set BENCH_ITERATIONS when the image is built).
const IOS: u64 = procrt::bench_iterations(500);
/// Reads before each mode's timed ones, not counted.
const WARMUP: u64 = 8;
/// Staging pages the reads go to, in turn.
const BUFFERS: usize = 16;
/// Bytes a read moves: one page.
const READ_BYTES: u64 = PAGE;
/// Reads whose times are kept for the medians (the first ones of a mode).
const SAMPLES: usize = 2048;
/// The PRNG's seed: every mode reads the same LBAs.
const SEED: u64 = 0x15_b10c_5eed;

/// splitmix64: a fixed sequence from [`SEED`].
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    StrictNeighbour,
    Pool,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::StrictNeighbour => "strict-neighbour",
            Mode::Pool => "pool",
        }
    }
}

/// One mode's sums, in counter ticks.
#[derive(Clone, Copy)]
struct Sums {
    ios: u64,
    total: u64,
    map: u64,
    unmap: u64,
    device: u64,
    fault_poll: u64,
    min: u64,
    max: u64,
    device_min: u64,
    device_max: u64,
    /// The whole timed loop: the reads, the PRNG, the data checks.
    looped: u64,
    /// Each read's total and device wait (the first [`SAMPLES`]).
    totals: [u32; SAMPLES],
    devices: [u32; SAMPLES],
}

impl Sums {
    fn new() -> Sums {
        Sums {
            ios: 0,
            total: 0,
            map: 0,
            unmap: 0,
            device: 0,
            fault_poll: 0,
            min: u64::MAX,
            max: 0,
            device_min: u64::MAX,
            device_max: 0,
            looped: 0,
            totals: [0; SAMPLES],
            devices: [0; SAMPLES],
        }
    }

    fn add(&mut self, t: &IoTimes) {
        if let Some(i) = usize::try_from(self.ios).ok().filter(|&i| i < SAMPLES) {
            self.totals[i] = t.total.min(u64::from(u32::MAX)) as u32;
            self.devices[i] = t.device.min(u64::from(u32::MAX)) as u32;
        }
        self.ios += 1;
        self.total += t.total;
        self.map += t.map;
        self.unmap += t.unmap;
        self.device += t.device;
        self.fault_poll += t.fault_poll;
        self.min = self.min.min(t.total);
        self.max = self.max.max(t.total);
        self.device_min = self.device_min.min(t.device);
        self.device_max = self.device_max.max(t.device);
    }

    /// The medians of the reads' totals and device waits (sorts the
    /// samples).
    fn medians(&mut self) -> (u64, u64) {
        let n = (self.ios as usize).min(SAMPLES);
        let median = |v: &mut [u32]| {
            v.sort_unstable();
            v.get(n / 2).map_or(0, |&x| u64::from(x))
        };
        (
            median(&mut self.totals[..n]),
            median(&mut self.devices[..n]),
        )
    }
}

/// A marker for QEMU's trace (`pl011_write`), straight to the PL011 when
/// the description maps it here (`uart = true`).
fn marker(info: &StartInfo, text: core::fmt::Arguments) {
    if info.console != 0 {
        procrt::print_unlocked(text);
    }
}

impl Driver {
    /// A read of `count` blocks at `lba` into `data`, mapped beforehand
    /// (`map_persistent`): no IOMMU server call. At most two pages (PRP1
    /// and PRP2, no PRP list). Where its time went is left in `self.times`.
    fn read_premapped(&mut self, lba: u64, count: u64, data: &DmaAddr) -> Result<(), Fail> {
        let start = now();
        self.times = IoTimes::default();
        let first = data.addr();
        let base = data.mapped().start;
        let bytes = count * self.lba_size;
        let pages = (first - base + bytes).div_ceil(PAGE);
        if count == 0 || bytes > data.size() || pages > 2 {
            return Err(Fail::new(status::INVALID, 0));
        }
        let prp2 = if pages == 2 { base + PAGE } else { 0 };
        let result = self.submit_io(super::rw_command(false, lba, count, first, prp2));
        let outcome = self.completed(result, &[Some(data.mapped())]);
        self.times.total = now().wrapping_sub(start);
        outcome
    }

    /// One mode: [`WARMUP`] reads, then [`IOS`] timed ones.
    fn bench_mode(&mut self, mode: Mode) -> Result<Sums, (u64, Fail)> {
        let blocks = READ_BYTES / self.lba_size;
        let slots = self.lba_count / blocks;
        let mut pool: [Option<DmaAddr>; BUFFERS] = core::array::from_fn(|_| None);
        let mut neighbour = None;
        match mode {
            Mode::Pool => {
                for (i, slot) in pool.iter_mut().enumerate() {
                    let m = self
                        .dma
                        .map_persistent(
                            &mut self.iommu,
                            self.memory,
                            (PAGE_STAGING + i as u64) * PAGE,
                            READ_BYTES,
                            Direction::FromDevice,
                        )
                        .map_err(|e| (0, Fail::iommu(e)))?;
                    *slot = Some(m);
                }
            }
            Mode::StrictNeighbour => {
                // The highest free IOVA, below the queues: the per-request
                // buffers come right below it, in the same leaf table.
                let m = self
                    .dma
                    .map_single(
                        &mut self.iommu,
                        self.memory,
                        PAGE_CANARY * PAGE,
                        PAGE,
                        Direction::FromDevice,
                    )
                    .map_err(|e| (0, Fail::iommu(e)))?;
                neighbour = Some(m);
            }
            Mode::Strict => {}
        }
        let mut rng = Rng(SEED);
        let mut sums = Sums::new();
        let mut loop_start = 0;
        let mut result = Ok(());
        for i in 0..WARMUP + IOS {
            if i == WARMUP {
                marker(self.info, format_args!("@blk-{}\n", mode.name()));
                loop_start = now();
            }
            let lba = (rng.next() % slots) * blocks;
            let slot = i as usize % BUFFERS;
            let page = PAGE_STAGING + slot as u64;
            // Each sector's first 8 bytes (its LBA on the disk) poisoned:
            // a read that did not land leaves them.
            for s in 0..blocks as usize {
                let at = s * self.lba_size as usize;
                pool_page(self.info, page)[at..at + 8].fill(0xff);
            }
            let read = match &pool[slot] {
                Some(m) => self.read_premapped(lba, blocks, m),
                None => self.command(false, lba, blocks, page * PAGE),
            };
            if let Err(f) = read {
                result = Err((i, f));
                break;
            }
            let buffer = pool_page(self.info, page);
            let landed = (0..READ_BYTES as usize).all(|b| {
                let size = self.lba_size as usize;
                buffer[b] == image_byte(lba + (b / size) as u64, b % size)
            });
            if !landed {
                result = Err((i, Fail::new(status::DMA_FAULT, lba)));
                break;
            }
            if i >= WARMUP {
                sums.add(&self.times);
            }
        }
        sums.looped = now().wrapping_sub(loop_start);
        marker(self.info, format_args!("@\n"));
        for m in pool.into_iter().flatten().chain(neighbour) {
            if let Err(e) = self.dma.unmap(&mut self.iommu, m) {
                result = result.and(Err((u64::MAX, Fail::iommu(e.error))));
            }
        }
        result.map(|()| sums)
    }
}

/// The `blk-bench` role.
pub fn run(info: &'static StartInfo) -> bool {
    let Some(mut d) = bring_up(info, "blk-bench", false) else {
        println!("bench: FAILED blk: the controller did not come up");
        return false;
    };
    let hz = sel4_iommu::platform::CounterDelay::frequency();
    let ns = |ticks: u64| ticks * 1_000_000_000 / hz;
    println!(
        "blk-bench: {} blocks of {} bytes; {IOS} reads of {READ_BYTES} bytes per mode after {WARMUP} untimed, random LBAs (seed {SEED:#x}), queue depth 1, polled; counter {hz} Hz",
        d.lba_count, d.lba_size
    );
    let mut ok = true;
    for mode in [Mode::Strict, Mode::StrictNeighbour, Mode::Pool] {
        match d.bench_mode(mode) {
            Ok(mut s) => {
                let (p50, device_p50) = s.medians();
                println!(
                "bench: blk {} ios={} ns={} map={} unmap={} device={} faultpoll={} min={} max={} p50={} devmin={} devmax={} devp50={} loop={}",
                mode.name(),
                s.ios,
                ns(s.total),
                ns(s.map),
                ns(s.unmap),
                ns(s.device),
                ns(s.fault_poll),
                ns(s.min),
                ns(s.max),
                ns(p50),
                ns(s.device_min),
                ns(s.device_max),
                ns(device_p50),
                ns(s.looped)
            );
            }
            Err((i, f)) => {
                println!("bench: FAILED blk {} read {i}: {f:?}", mode.name());
                ok = false;
            }
        }
    }
    let down = d.shutdown();
    ok &= d.checks.check(
        "shutdown",
        down.is_ok(),
        format_args!(
            "{down:?}: queues deleted, controller disabled, queues unmapped, stream detached, domain freed; IOVA ranges still allocated: {}",
            d.dma.allocator().live()
        ),
    );
    let stray = d.stray_faults;
    ok &= d.checks.check(
        "no-stray-faults",
        stray == 0,
        format_args!("{stray} fault record(s) outside a request's buffers"),
    );
    if ok {
        println!("bench: done");
    }
    ok
}
