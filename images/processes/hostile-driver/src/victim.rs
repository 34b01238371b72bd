//! The victim: a well-behaved driver in the hostile's band (the same
//! server thread and receive slot). It does a byte-exact DMA round trip
//! before the attacks, after each of them, during and after the fuzzer's
//! run and after all, registers a new frame after the wedge attempt, and
//! reports done only once the hostile's thief is (or would be) receiving
//! on the root task's endpoint.

use crate::checks::Checks;
use crate::common::{
    bring_up, cap, connect, dma, pool_frame, signal, wait_for, Client, Device, Mem, FUZZ_OVER,
    FUZZ_ROUND_TRIP, PAGE, STEPS, THIEF_ARMED, THIEF_STARTING, TRANSFER,
};
use crate::edu::Direction;
use iommu_client::{DomainId, Error, MemoryHandle, Perms, Ssid};
use procrt::{println, StartInfo};

const IOVA_SOURCE: u64 = 0x10_0000;
const IOVA_TARGET: u64 = 0x18_0000;
/// Where the frame registered after the wedge attempt is mapped.
const IOVA_AFTER_WEDGE: u64 = 0x70_0000;
const PAGE_SOURCE: usize = 0;
const PAGE_TARGET: usize = 1;
/// Registered only after the wedge attempt.
const PAGE_AFTER_WEDGE: usize = 7;

/// How long the victim waits for the hostile's next step: each attack
/// takes at most a few DMAs (100 ms of virtual time each).
const STEP_WAIT_SECS: u64 = 30;
/// How long it waits for the fuzzer's next signal: a batch of requests
/// takes well under a second.
const FUZZ_WAIT_SECS: u64 = 20;
/// How long it waits for the thief to be armed: with a fixed root task
/// the thief faults at once and is never armed.
const THIEF_WAIT_SECS: u64 = 3;

struct Victim {
    device: Device,
    iommu: Client,
    domain: DomainId,
}

impl Victim {
    /// RAM -> edu -> RAM through the source and target mappings: exactly the
    /// transferred bytes of the zeroed target page equal the source's.
    fn round_trip(&self, info: &StartInfo, seed: u8) -> bool {
        let source = Mem::pool_page(info, PAGE_SOURCE);
        let target = Mem::pool_page(info, PAGE_TARGET);
        source.fill_pattern(seed);
        target.fill_with(0);
        dma(&self.device, Direction::ToDevice, IOVA_SOURCE, TRANSFER)
            && dma(&self.device, Direction::ToMemory, IOVA_TARGET, TRANSFER)
            && target.holds(seed, TRANSFER, 0)
    }
}

pub fn victim(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("victim");
    let Some(device) = bring_up(info, &mut checks) else {
        return false;
    };
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let frames = [pool_frame(info, PAGE_SOURCE), pool_frame(info, PAGE_TARGET)];
    let setup = (|| -> Result<(MemoryHandle, DomainId), Error> {
        let memory = iommu.register_memory(&frames)?.handle;
        let domain = iommu.alloc_domain()?;
        iommu.attach(device.stream, Ssid(0), domain)?;
        let page = PAGE as u64;
        iommu.map(domain, IOVA_SOURCE, memory, 0, page, Perms::READ)?;
        iommu.map(domain, IOVA_TARGET, memory, page, page, Perms::RW)?;
        Ok((memory, domain))
    })();
    checks.check(
        "setup",
        setup.is_ok(),
        format_args!(
            "register pages 0-1, domain, attach StreamID {:#x}, map {IOVA_SOURCE:#x} (read) and {IOVA_TARGET:#x} (read-write): {setup:?}",
            device.stream.0
        ),
    );
    let Ok((_, domain)) = setup else {
        return false;
    };
    let mut v = Victim {
        device,
        iommu,
        domain,
    };

    checks.check(
        "dma-before-attacks",
        v.round_trip(info, 0x11),
        format_args!("{TRANSFER} bytes RAM -> edu -> RAM via {IOVA_SOURCE:#x}/{IOVA_TARGET:#x}"),
    );
    signal(info, "victim-ready", None);

    let mut hostile_gone = false;
    for (i, step) in STEPS.iter().enumerate() {
        let name = format_name(step);
        if hostile_gone {
            checks.check(
                name.as_str(),
                false,
                format_args!("skipped: the hostile stopped signalling before {step}"),
            );
            continue;
        }
        if wait_for(info, "step", STEP_WAIT_SECS).is_none() {
            hostile_gone = true;
            checks.check(
                name.as_str(),
                false,
                format_args!(
                    "the hostile never signalled the end of {step} (within {STEP_WAIT_SECS} s)"
                ),
            );
            continue;
        }
        let seed = 0x20 + i as u8 * 7;
        checks.check(
            name.as_str(),
            v.round_trip(info, seed),
            format_args!("{TRANSFER} bytes round trip after the hostile's {step}"),
        );
        if *step == "wedge" {
            registers_after_wedge(info, &mut v, &mut checks);
        }
        signal(info, "step-done", None);
    }

    if cap(info, "fuzz", None).is_some() {
        fuzz_phase(info, &mut v, &mut checks);
    }

    checks.check(
        "dma-after-attacks",
        v.round_trip(info, 0x99),
        format_args!("{TRANSFER} bytes round trip after every attack"),
    );
    report_stats(&mut v.iommu);

    // The thief goes last: report done only after it started (so that
    // an unfixed root task's endpoint hands this done to the thief).
    let mut bits = wait_for(info, "thief", STEP_WAIT_SECS).unwrap_or(0);
    if bits & THIEF_STARTING == 0 {
        println!("victim: the hostile never said its thief was starting");
    }
    if bits & THIEF_ARMED == 0 {
        bits |= wait_for(info, "thief", THIEF_WAIT_SECS).unwrap_or(0);
    }
    println!(
        "victim: reporting done to the root task (the hostile's thief {})",
        if bits & THIEF_ARMED != 0 {
            "is receiving on the root task's endpoint"
        } else {
            "was never armed"
        }
    );
    checks.passed()
}

/// The fuzzer's run, after the hostile's attacks: the victim says it is
/// ready (`fuzz-done`), then does one round trip each time the fuzzer
/// signals `fuzz` with [`FUZZ_ROUND_TRIP`] (while the fuzzer's next batch
/// of random requests runs) and asks the server for its `Stats` (served
/// in the fuzzer's band, and unchanged), then answers `fuzz-done`, until
/// [`FUZZ_OVER`]; then one more round trip.
fn fuzz_phase(info: &StartInfo, v: &mut Victim, checks: &mut Checks) {
    let before = v.iommu.stats();
    signal(info, "fuzz-done", None);
    let (mut trips, mut exact, mut served) = (0u32, 0u32, 0u32);
    let mut over = false;
    while !over {
        let Some(bits) = wait_for(info, "fuzz", FUZZ_WAIT_SECS) else {
            break;
        };
        if bits & FUZZ_ROUND_TRIP != 0 {
            // A new pattern each time: a stale edu buffer cannot pass.
            let seed = 0x40u8.wrapping_add((trips as u8).wrapping_mul(3));
            trips += 1;
            if v.round_trip(info, seed) {
                exact += 1;
            }
            let now = v.iommu.stats();
            if matches!((&before, &now), (Ok(a), Ok(b)) if a == b) {
                served += 1;
            } else {
                println!("victim: during the fuzz run the server's account of me went from {before:?} to {now:?}");
            }
            signal(info, "fuzz-done", None);
        }
        over = bits & FUZZ_OVER != 0;
    }
    checks.check(
        "dma-during-fuzz",
        over && trips > 0 && exact == trips && served == trips,
        format_args!(
            "{exact} of {trips} round trips of {TRANSFER} bytes byte-exact while the fuzzer's batches ran, and {served} of {trips} Stats answered and unchanged{}",
            if over {
                ""
            } else {
                "; the fuzzer stopped signalling"
            }
        ),
    );
    checks.check(
        "dma-after-fuzz",
        v.round_trip(info, 0x5a),
        format_args!("{TRANSFER} bytes round trip after the fuzzer's run ended"),
    );
}

/// `dma-after-<step>` as a check name.
fn format_name(step: &str) -> heapless_name::Name {
    heapless_name::Name::new("dma-after-", step)
}

/// A new frame registered after the hostile's wedge attempt: a receive
/// slot the attempt left full would drop its cap (`Malformed`).
fn registers_after_wedge(info: &StartInfo, v: &mut Victim, checks: &mut Checks) {
    let page = Mem::pool_page(info, PAGE_AFTER_WEDGE);
    page.fill_with(0);
    let registered = v
        .iommu
        .register_memory(&[pool_frame(info, PAGE_AFTER_WEDGE)]);
    let mapped = registered.map(|m| {
        v.iommu.map(
            v.domain,
            IOVA_AFTER_WEDGE,
            m.handle,
            0,
            PAGE as u64,
            Perms::RW,
        )
    });
    // The edu still holds the last round trip's bytes (seed of "wedge").
    let seed = 0x20 + (STEPS.len() as u8 - 1) * 7;
    let landed = matches!(mapped, Ok(Ok(())))
        && dma(&v.device, Direction::ToMemory, IOVA_AFTER_WEDGE, TRANSFER)
        && page.holds(seed, TRANSFER, 0);
    checks.check(
        "registers-after-wedge",
        landed,
        format_args!(
            "register pool page {PAGE_AFTER_WEDGE}: {registered:?}; map at {IOVA_AFTER_WEDGE:#x}: {mapped:?}; {TRANSFER} bytes landed byte-exact: {landed}"
        ),
    );
}

fn report_stats(iommu: &mut Client) {
    if let Ok(stats) = iommu.stats() {
        println!("victim: server's account of me: {stats:?}");
    }
}

/// A check name built at run time, without an allocator.
pub mod heapless_name {
    pub struct Name {
        bytes: [u8; 48],
        len: usize,
    }

    impl Name {
        pub fn new(prefix: &str, rest: &str) -> Name {
            let mut n = Name {
                bytes: [0; 48],
                len: 0,
            };
            for &b in prefix.as_bytes().iter().chain(rest.as_bytes()) {
                if n.len < n.bytes.len() {
                    n.bytes[n.len] = b;
                    n.len += 1;
                }
            }
            n
        }

        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
        }
    }
}
