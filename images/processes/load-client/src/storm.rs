//! The `storm` system: a device DMAs in a loop to unmapped IOVAs while
//! another client's map/unmap requests must still complete.
//!
//! QEMU 7.2 writes one event per 4 bytes of a faulting DMA: a 4000-byte
//! transfer is 1000 events against a 128-entry event queue, so every DMA
//! overflows it (QEMU then drops events and raises GERROR.EVENTQ_ABT_ERR,
//! which the server acknowledges and counts). What reaches the server is
//! coalesced per page into the stormer's bounded fault queue; past its
//! share, events are dropped and counted. The victim measures how long its
//! requests take before and during the storm.

use crate::checks::Checks;
use crate::edu::Direction;
pub use crate::pci::{bring_up, Device};
use crate::{connect, frame, micros, now, poll, signal, wait, Client, COUNTER_HZ};
use iommu_client::{FaultKind, Perms, Ssid, StreamId, WIRE_PAGE_SIZE};
use procrt::{println, StartInfo};
use sel4_abi::syscalls;

/// The stormer's one mapped page, and where the storm goes (never mapped).
const IOVA_MAPPED: u64 = 0x10_0000;
const IOVA_STORM: u64 = 0x0100_0000;
const IOVA_AFTER: u64 = 0x0f00_0000;
/// Bytes per storm DMA: 1000 events each.
const STORM_BYTES: usize = 4000;
/// DMAs in the storm: each faults on a new page, so past the fault queue's
/// 64 records the server must drop (and count) what does not fit.
const STORM_DMAS: u64 = 72;
/// The server's fault queue per client (handler `FAULT_QUEUE`).
const FAULT_QUEUE: usize = 64;

/// One DMA, waiting (and yielding the CPU) until the device is done; false
/// if it did not finish within a second.
pub fn dma(device: &Device, direction: Direction, iova: u64, len: usize) -> bool {
    let start = now();
    device
        .edu
        .dma(direction, iova, 0, len, || {
            syscalls::yield_now();
            now().wrapping_sub(start) < COUNTER_HZ
        })
        .is_ok()
}

/// The DMA pool's page `i` as the CPU sees it.
pub fn page(info: &StartInfo, i: usize) -> &'static mut [u8; 4096] {
    assert!(
        i < info.dma.frames as usize,
        "page {i} outside the DMA pool"
    );
    // SAFETY: the pool is mapped read-write at dma.vaddr for `frames` pages
    // and used by this single-threaded process only; the device writes it
    // only inside `dma`, when no reference obtained here is live.
    unsafe { &mut *((info.dma.vaddr as usize + i * 4096) as *mut [u8; 4096]) }
}

pub fn stormer(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("stormer");
    let Some(device) = bring_up(info, &mut checks) else {
        return false;
    };
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let setup = (|| {
        let memory = iommu.register_memory(&[frame(info, 0)])?;
        let domain = iommu.alloc_domain()?;
        iommu.attach(device.stream, Ssid(0), domain)?;
        iommu.map(
            domain,
            IOVA_MAPPED,
            memory.handle,
            0,
            WIRE_PAGE_SIZE,
            Perms::RW,
        )?;
        Ok::<_, iommu_client::Error>(domain)
    })();
    if !checks.check("setup", setup.is_ok(), format_args!("{setup:?}")) {
        return false;
    }
    // The victim measures its latency without the storm first.
    wait(info, "baseline-done");
    signal(info, "storm-start");
    let start = now();
    let mut completed = 0;
    for i in 0..STORM_DMAS {
        // Half a page in, so each transfer runs over two unmapped pages.
        let iova = IOVA_STORM + i * WIRE_PAGE_SIZE * 2 + WIRE_PAGE_SIZE / 2;
        if dma(&device, Direction::ToMemory, iova, STORM_BYTES) {
            completed += 1;
        }
    }
    let storm_us = micros(now().wrapping_sub(start));
    signal(info, "storm-done");
    println!(
        "stormer: {completed} DMAs of {STORM_BYTES} bytes to unmapped IOVAs in {storm_us} us (QEMU: {} fault events)",
        completed * (STORM_BYTES as u64 / 4)
    );

    // What the server kept for this client: bounded, coalesced, the rest
    // counted as dropped.
    let (records, events, dropped, foreign) = drain(&mut iommu, device.stream);
    println!(
        "stormer: fault queue gave {records} records standing for {events} events; {dropped} events dropped by the server's rate limit"
    );
    checks.check(
        "faults-rate-limited",
        records > 0 && records <= FAULT_QUEUE && dropped > 0 && foreign == 0,
        format_args!(
            "{records} records (queue {FAULT_QUEUE}), {events} events, {dropped} dropped, {foreign} not from the storm"
        ),
    );

    // The event queue works again: one more fault arrives and is routed.
    let _ = dma(&device, Direction::ToMemory, IOVA_AFTER, 64);
    let mut found = false;
    let deadline = now();
    while !found && now().wrapping_sub(deadline) < 2 * COUNTER_HZ {
        if let Ok(batch) = iommu.faults() {
            found = batch.records.iter().any(|r| {
                r.stream == device.stream
                    && r.iova >> 12 == IOVA_AFTER >> 12
                    && r.kind == FaultKind::Translation
            });
        }
        syscalls::yield_now();
    }
    checks.check(
        "fault-after-storm",
        found,
        format_args!(
            "a DMA to {IOVA_AFTER:#x} after the storm reached this client as a fault record"
        ),
    );

    // And mapped DMA still lands.
    page(info, 0)[..64].fill(0);
    let moved = dma(&device, Direction::ToMemory, IOVA_MAPPED, 64)
        && dma(&device, Direction::ToDevice, IOVA_MAPPED, 64);
    checks.check(
        "mapped-dma-after-storm",
        moved,
        format_args!("DMA both ways through {IOVA_MAPPED:#x} completed"),
    );
    if let Ok(s) = iommu.stats() {
        println!("stormer: server's account of me: {s:?}");
    }
    checks.passed()
}

/// Takes every pending record: (records, events they stand for, dropped,
/// records that are not the storm's).
fn drain(iommu: &mut Client, stream: StreamId) -> (usize, u64, u64, usize) {
    let (mut records, mut events, mut dropped, mut foreign) = (0, 0, 0, 0);
    for _ in 0..16 {
        let Ok(batch) = iommu.faults() else { break };
        dropped += u64::from(batch.dropped);
        for r in batch.records.iter() {
            records += 1;
            events += u64::from(r.count);
            let in_storm = (IOVA_STORM
                ..IOVA_STORM + STORM_DMAS * 2 * WIRE_PAGE_SIZE + WIRE_PAGE_SIZE)
                .contains(&r.iova);
            if r.stream != stream || !in_storm || r.kind != FaultKind::Translation || !r.write {
                foreign += 1;
            }
        }
        if !batch.more {
            break;
        }
    }
    (records, events, dropped, foreign)
}

/// Latencies of one phase, in counter ticks.
#[derive(Default)]
struct Latency {
    n: u64,
    sum: u64,
    max: u64,
    /// Counts by power of two of microseconds.
    buckets: [u32; 24],
}

impl Latency {
    fn add(&mut self, ticks: u64) {
        self.n += 1;
        self.sum += ticks;
        self.max = self.max.max(ticks);
        let us = micros(ticks).max(1);
        let b = (63 - us.leading_zeros()) as usize;
        self.buckets[b.min(23)] += 1;
    }
    /// The power-of-two bucket (upper bound, in microseconds) under which
    /// 99% of the calls fall.
    fn p99_us(&self) -> u64 {
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen * 100 >= self.n * 99 {
                return 2 << b;
            }
        }
        0
    }
    fn show(&self, what: &str) {
        println!(
            "victim: {what}: {} requests, mean {} us, p99 < {} us, max {} us",
            self.n,
            micros(self.sum / self.n.max(1)),
            self.p99_us(),
            micros(self.max)
        );
    }
}

pub fn victim(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("victim");
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let (Ok(memory), Ok(domain)) = (
        iommu.register_memory(&[frame(info, 0)]),
        iommu.alloc_domain(),
    ) else {
        println!("victim: setup failed");
        return false;
    };
    let round = |iommu: &mut Client, lat: &mut Latency, i: u64| {
        let iova = 0x10_0000 + (i % 64) * WIRE_PAGE_SIZE;
        let t0 = now();
        let m = iommu.map(domain, iova, memory.handle, 0, WIRE_PAGE_SIZE, Perms::RW);
        let t1 = now();
        let u = iommu.unmap(domain, iova, WIRE_PAGE_SIZE);
        let t2 = now();
        lat.add(t1 - t0);
        lat.add(t2 - t1);
        m.is_ok() && u.is_ok()
    };
    let mut quiet = Latency::default();
    let mut ok = true;
    for i in 0..500 {
        let t0 = now();
        ok &= round(&mut iommu, &mut quiet, i);
        while now().wrapping_sub(t0) < COUNTER_HZ / 1000 {
            syscalls::yield_now();
        }
    }
    signal(info, "baseline-done");
    wait(info, "storm-start");
    let mut storm = Latency::default();
    let start = now();
    let mut i = 0;
    // Until the stormer is through (bounded: 30 s of virtual time).
    while !poll(info, "storm-done") && now().wrapping_sub(start) < 30 * COUNTER_HZ {
        let t0 = now();
        ok &= round(&mut iommu, &mut storm, i);
        i += 1;
        // One round per millisecond (the stormer, at the same priority,
        // gets the CPU meanwhile): a steady stream of requests across the
        // whole storm rather than as many as possible.
        while now().wrapping_sub(t0) < COUNTER_HZ / 1000 {
            syscalls::yield_now();
        }
    }
    quiet.show("before the storm");
    storm.show("during the storm");
    checks.check(
        "requests-complete-during-storm",
        ok && storm.n >= 100,
        format_args!(
            "{} map/unmap requests during the storm, all answered Ok: {ok}",
            storm.n
        ),
    );
    checks.passed()
}
