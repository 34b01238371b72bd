//! The `hostile` system: a hostile driver attacks the IOMMU server's
//! capability boundary (DESIGN.md section 5) while a victim in the same
//! band does DMA throughout, a fuzzer in the same band sends thousands of
//! random requests with random caps, and a zombie's worker thread outlives
//! its done (`images/processes/hostile-driver`). Judged from the
//! processes' own checks (memory contents, the server's answers), from
//! the root task's and the server's output (the thief's capability fault,
//! the victim's and the fuzzer's done, the zombie's retirement, the
//! fuzzer's request count against the server's, what its retirement took
//! back) and from QEMU's SMMU trace (every translation of each stream
//! lands in that driver's own DMA pool, none in the kernel's or the root
//! task's image).
//!
//! Run alone: `cargo test -p xtask -- --ignored hostile_system`.

use super::trace::{Event, Trace};
use super::{ended_with_pass, process_check, tail, Checks};
use crate::qemu::{self, BootOptions, BootOutcome};
use crate::Ctx;

/// Every check the processes must report (images/processes/hostile-driver);
/// one missing is a failure, so a process that dies half-way cannot pass
/// by saying less.
const EXPECTED: &[&str] = &[
    "victim/pci-probe",
    "victim/setup",
    "victim/dma-before-attacks",
    "victim/dma-after-not-a-frame",
    "victim/dma-after-endpoint-as-frame",
    "victim/dma-after-notification-as-frame",
    "victim/dma-after-own-untyped-frame",
    "victim/dma-after-read-only",
    "victim/dma-after-revoke-after-map",
    "victim/dma-after-untyped-revoked",
    "victim/dma-after-wedge",
    "victim/registers-after-wedge",
    "victim/dma-during-fuzz",
    "victim/dma-after-fuzz",
    "victim/dma-after-attacks",
    "hostile/pci-probe",
    "hostile/own-dma",
    "hostile/not-a-frame-untyped",
    "hostile/not-a-frame-tcb",
    "hostile/not-a-frame-cnode",
    "hostile/not-a-frame-vspace",
    "hostile/not-a-frame-page-table",
    "hostile/endpoint-as-frame",
    "hostile/notification-as-frame",
    "hostile/own-untyped-frame",
    "hostile/own-untyped-frame-unreachable",
    "hostile/revoke-after-map",
    "hostile/revoked-untyped-unreachable",
    "hostile/registered-survives-untyped-revoke",
    "hostile/unwrapped-cap-refused",
    "hostile/wedge-refused",
    "hostile/registers-after-wedge",
    "hostile/accomplice-never-called",
    "zombie/device-read-only-pool",
    "zombie/own-thread-started",
    "zombie/worker-served",
    "fuzzer/cap-pool",
    "fuzzer/answered-every-request",
    "fuzzer/own-endpoint-never-called",
    "fuzzer/still-served-after-fuzz",
];

/// The fuzz run: at least this many requests, in at most this long (a
/// third of the system's 60 s limit; ~3 s on an idle host).
const MIN_FUZZ_REQUESTS: u64 = 1000;
const MAX_FUZZ_MS: u64 = 20_000;

/// Must match images/systems/hostile.toml.
const STREAM_VICTIM: u64 = 0x8;
const STREAM_HOSTILE: u64 = 0x10;

pub fn run(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot(ctx, t) else {
        return;
    };
    for name in EXPECTED {
        t.check(&format!("hostile/{name}"), process_check(&out, name));
    }
    t.check("hostile/every-check-line-ok", every_check_ok(&out.serial));
    t.check("hostile/thief-refused", thief_refused(&out.serial));
    t.check(
        "hostile/victim-done-reached-root",
        victim_done_reached_root(&out),
    );
    t.check(
        "hostile/zombie-stopped-after-done",
        zombie_stopped(&out.serial),
    );
    t.check(
        "hostile/zombie-refused-after-retirement",
        zombie_refused(&out.serial),
    );
    t.check(
        "hostile/zombie-own-thread-stopped",
        zombie_own_thread_stopped(&out.serial),
    );
    t.check("hostile/fuzzer-counts-printed", fuzzer_counts(&out.serial));
    t.check(
        "hostile/fuzzer-calls-match-server",
        fuzzer_calls_match(&out.serial),
    );
    t.check(
        "hostile/fuzzer-left-nothing-behind",
        fuzzer_left_nothing(&out.serial),
    );
    t.check(
        "hostile/victim-dma-after-fuzz-run",
        victim_after_fuzz(&out.serial),
    );
    t.check(
        "hostile/run-ends-with-pass",
        ended_with_pass(&out).and_then(|()| {
            if out
                .serial
                .contains("root: all 2 awaited process(es) done: PASS")
            {
                Ok(())
            } else {
                Err("the root task never said the victim and the fuzzer passed".into())
            }
        }),
    );
    let Some(trace) = Trace::of_run(&out, t, "hostile") else {
        return;
    };
    let trace = translations(&trace);
    let mut pools = Vec::new();
    for (name, role, stream) in [
        (
            "hostile/trace/hostile-stream-only-its-pool",
            "hostile",
            STREAM_HOSTILE,
        ),
        (
            "hostile/trace/victim-stream-only-its-pool",
            "victim",
            STREAM_VICTIM,
        ),
    ] {
        let own = pool(&out.serial, role);
        pools.extend(own.map(|p| (stream, p)));
        t.check(
            name,
            own.ok_or(format!("{role} never printed its DMA pool"))
                .and_then(|p| only_in_pool(&trace, stream, p)),
        );
    }
    t.check(
        "hostile/trace/no-dma-into-kernel-or-root-task",
        images(&out.serial).and_then(|ranges| outside(&trace, &ranges, &pools)),
    );
}

/// Builds and boots the system with its own time limit
/// (`qemu.timeout_secs`): with a thief stealing the victim's done, the
/// run ends only there.
fn boot(ctx: &Ctx, t: &mut Checks) -> Option<BootOutcome> {
    let system = "hostile";
    let image = match crate::image::build(ctx, system) {
        Ok(i) => i,
        Err(e) => {
            t.check(&format!("{system}/build"), Err(format!("{e:#}")));
            return None;
        }
    };
    t.check(&format!("{system}/build"), Ok(()));
    match qemu::boot(ctx, &image, &BootOptions::test(system)) {
        Ok(outcome) => {
            println!("   ({system}: run {})", outcome.summary());
            Some(outcome)
        }
        Err(e) => {
            t.check(&format!("{system}/boot"), Err(format!("{e:#}")));
            None
        }
    }
}

/// No process printed a failed check, listed above or not.
fn every_check_ok(serial: &str) -> Result<(), String> {
    let failed: Vec<&str> = serial
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("check ") && !l.contains(": ok"))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n    "))
    }
}

/// The thief's receive on its fault endpoint was a capability fault (on
/// cptr 1) that the root task reported, after the thief started, and the
/// thief stole nothing.
fn thief_refused(serial: &str) -> Result<(), String> {
    let started = serial
        .find("hostile: thief: receiving on my fault endpoint")
        .ok_or("the thief never started")?;
    let stolen: Vec<&str> = serial
        .lines()
        .filter(|l| l.contains("hostile: thief stole"))
        .collect();
    if !stolen.is_empty() {
        return Err(format!(
            "the thief received on the root task's endpoint:\n    {}",
            stolen.join("\n    ")
        ));
    }
    let fault = serial[started..]
        .lines()
        .find(|l| l.starts_with("FAULT in hostile:"))
        .ok_or("the root task reported no fault of the hostile after the thief started")?;
    if fault.contains("capability fault") && fault.contains("cptr 0x1 ") {
        Ok(())
    } else {
        Err(format!("the hostile's fault was not the thief's: {fault}"))
    }
}

/// The root task itself received the victim's done.
fn victim_done_reached_root(out: &BootOutcome) -> Result<(), String> {
    if out.serial.contains("root: victim done: pass") {
        Ok(())
    } else {
        Err(format!(
            "no \"root: victim done: pass\" ({})\n{}",
            out.summary(),
            tail(&out.serial)
        ))
    }
}

fn zombie_lines_after<'a>(serial: &'a str, marker: &str) -> Result<Vec<&'a str>, String> {
    let at = serial
        .find(marker)
        .ok_or(format!("no {marker:?} in the serial output"))?;
    Ok(serial[at..]
        .lines()
        .filter(|l| l.contains("zombie: still served"))
        .collect())
}

/// Once the zombie reported done (and was retired), none of its threads
/// ran: its worker printed nothing more.
fn zombie_stopped(serial: &str) -> Result<(), String> {
    let after = zombie_lines_after(serial, "root: zombie done")?;
    if !serial.contains("root: retired zombie") {
        return Err("the root task never retired the zombie".into());
    }
    match after.as_slice() {
        [] => Ok(()),
        lines => Err(format!(
            "{} progress lines of the zombie's worker after its done, the last: {}",
            lines.len(),
            lines[lines.len() - 1]
        )),
    }
}

/// The thread the zombie made itself (from its untyped) ran before its done
/// and not after its retirement: the root task stops what a process made,
/// not only what it made for it.
fn zombie_own_thread_stopped(serial: &str) -> Result<(), String> {
    const ALIVE: &str = "zombie: own thread alive";
    let done = serial
        .find("root: zombie done")
        .ok_or("the zombie never reported done")?;
    if !serial[..done].contains(ALIVE) {
        return Err("the zombie's own thread never ran before its done".into());
    }
    let retired = serial
        .find("root: retired zombie")
        .ok_or("the root task never retired the zombie")?;
    match serial[retired..].matches(ALIVE).count() {
        0 => Ok(()),
        n => Err(format!(
            "the zombie's own thread said it was alive {n} times after its retirement"
        )),
    }
}

/// Whatever the zombie's worker was answered after its retirement was a
/// refusal (the first line after it may count rounds from before).
fn zombie_refused(serial: &str) -> Result<(), String> {
    let after = zombie_lines_after(serial, "root: retired zombie")?;
    let served: Vec<&&str> = after
        .iter()
        .skip(1)
        .filter(|l| !l.contains(": 0 answered"))
        .collect();
    match served.first() {
        None => Ok(()),
        Some(line) => Err(format!(
            "the server still answered the retired zombie ({} lines like: {line})",
            served.len()
        )),
    }
}

/// The first line that starts with `prefix`.
fn line_starting<'a>(serial: &'a str, prefix: &str) -> Result<&'a str, String> {
    serial
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .ok_or(format!("no line {prefix:?}..."))
}

/// `key` followed by a decimal number in `line`.
fn decimal_after(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let rest = line[start..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The fuzzer printed its seed and its counts (requests, replies and
/// errors by code), for at least [`MIN_FUZZ_REQUESTS`] requests in at
/// most [`MAX_FUZZ_MS`].
fn fuzzer_counts(serial: &str) -> Result<(), String> {
    line_starting(serial, "fuzzer: seed 0x")?;
    let line = line_starting(serial, "fuzzer: counts: ")?;
    let requests = line
        .find(" requests in ")
        .and_then(|at| line[..at].rsplit(' ').next()?.parse::<u64>().ok())
        .ok_or(format!("no request count in {line:?}"))?;
    let ms = decimal_after(line, " requests in ").ok_or(format!("no run time in {line:?}"))?;
    if !line.contains("replies: ") || !line.contains("errors: ") {
        return Err(format!("no counts by reply and error code in {line:?}"));
    }
    if requests < MIN_FUZZ_REQUESTS || ms > MAX_FUZZ_MS {
        return Err(format!(
            "{requests} requests in {ms} ms (at least {MIN_FUZZ_REQUESTS} in at most {MAX_FUZZ_MS} ms): {line}"
        ));
    }
    Ok(())
}

/// The server counted as many requests and refusals of the fuzzer's as
/// the fuzzer made and was refused (it prints them when it retires it).
fn fuzzer_calls_match(serial: &str) -> Result<(), String> {
    let ours = line_starting(serial, "fuzzer: calls ")?;
    let server = line_starting(serial, "iommu-server: retiring fuzzer ")?;
    let counted = (
        decimal_after(ours, "fuzzer: calls "),
        decimal_after(ours, " refused "),
    );
    let served = (
        decimal_after(server, "it made requests "),
        decimal_after(server, " refused "),
    );
    match (counted, served) {
        ((Some(c), Some(r)), (Some(sc), Some(sr))) if c == sc && r == sr => Ok(()),
        _ => Err(format!(
            "the fuzzer: {ours}
    the server: {server}"
        )),
    }
}

/// The fuzzer took back everything it was given: its retirement freed
/// nothing.
fn fuzzer_left_nothing(serial: &str) -> Result<(), String> {
    let line = line_starting(serial, "root: retired fuzzer at the IOMMU server: ")?;
    if line.contains(
        "0 streams detached, 0 domains freed (0 page-table pages, 0 mappings, 0 bytes), 0 memory registrations released (0 frame caps)",
    ) {
        Ok(())
    } else {
        Err(line.to_string())
    }
}

/// The victim's byte-exact round trip after the fuzz run came after the
/// fuzzer's last check (the fuzzer ends its run only then).
fn victim_after_fuzz(serial: &str) -> Result<(), String> {
    let last = serial
        .find("check fuzzer/still-served-after-fuzz")
        .ok_or("the fuzzer never finished its run")?;
    let after = serial
        .find("check victim/dma-after-fuzz: ok")
        .ok_or("no byte-exact round trip of the victim's after the fuzz run")?;
    if after > last {
        Ok(())
    } else {
        Err("the victim's round trip came before the fuzz run ended".into())
    }
}

/// `key` followed by a hex number (`0x` optional) in `line`.
fn hex_after(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let digits = line[start..].trim_start().trim_start_matches("0x");
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(digits.len());
    u64::from_str_radix(&digits[..end], 16).ok()
}

/// `[paddr, paddr + size)` of `role`'s DMA pool, as it printed it.
fn pool(serial: &str, role: &str) -> Option<(u64, u64)> {
    let line = serial
        .lines()
        .find(|l| l.starts_with(&format!("{role}: ")) && l.contains("DMA pool at physical"))?;
    let paddr = hex_after(line, "DMA pool at physical")?;
    let size = hex_after(line, " size ")?;
    Some((paddr, paddr + size))
}

/// The kernel's and the root task's physical ranges, as the loader put them.
fn images(serial: &str) -> Result<Vec<(&'static str, u64, u64)>, String> {
    let mut ranges = Vec::new();
    for (what, marker) in [
        ("the kernel's image", "loader: kernel "),
        ("the root task's image", "loader: root task "),
    ] {
        let line = serial
            .lines()
            .find(|l| l.starts_with(marker))
            .ok_or(format!("the loader never printed {marker:?}"))?;
        let start = hex_after(line, marker).ok_or(format!("no range in {line:?}"))?;
        let end = hex_after(line, "..").ok_or(format!("no range in {line:?}"))?;
        ranges.push((what, start, end));
    }
    Ok(ranges)
}

/// One successful translation in QEMU's trace.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Translation {
    sid: u64,
    iova: u64,
    paddr: u64,
}

fn translations(trace: &Trace) -> Vec<Translation> {
    trace
        .events
        .iter()
        .filter_map(|e| match *e {
            Event::Translated {
                sid, iova, paddr, ..
            } => Some(Translation { sid, iova, paddr }),
            _ => None,
        })
        .collect()
}

/// Every translation of `stream` ends inside `pool`, and there is one.
fn only_in_pool(trace: &[Translation], stream: u64, pool: (u64, u64)) -> Result<(), String> {
    let ours: Vec<&Translation> = trace.iter().filter(|t| t.sid == stream).collect();
    if ours.is_empty() {
        return Err(format!("no translation for StreamID {stream:#x}"));
    }
    let outside: Vec<&&Translation> = ours
        .iter()
        .filter(|t| !(pool.0..pool.1).contains(&t.paddr))
        .collect();
    match outside.first() {
        None => Ok(()),
        Some(t) => {
            let mut pages: Vec<u64> = outside.iter().map(|t| t.paddr >> 12 << 12).collect();
            pages.dedup();
            Err(format!(
                "{} of {} translations of StreamID {stream:#x} end outside its pool {:#x}..{:#x}, e.g. IOVA {:#x} -> {:#x}; pages {pages:x?}",
                outside.len(),
                ours.len(),
                pool.0,
                pool.1,
                t.iova,
                t.paddr
            ))
        }
    }
}

/// No translation of any stream ends in one of `ranges`, except in that
/// stream's own pool (`pools`: StreamID and pool): the kernel gives its
/// `.boot` section back as untyped memory once it has booted, and the root
/// task may carve DMA pools out of it.
fn outside(
    trace: &[Translation],
    ranges: &[(&str, u64, u64)],
    pools: &[(u64, (u64, u64))],
) -> Result<(), String> {
    let own = |t: &Translation| {
        pools
            .iter()
            .any(|(sid, (start, end))| *sid == t.sid && (*start..*end).contains(&t.paddr))
    };
    for (what, start, end) in ranges {
        if let Some(t) = trace
            .iter()
            .find(|t| (*start..*end).contains(&t.paddr) && !own(t))
        {
            return Err(format!(
                "StreamID {:#x} reached {what} ({start:#x}..{end:#x}): IOVA {:#x} -> {:#x}",
                t.sid, t.iova, t.paddr
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIAL: &str = "\
loader: kernel  0x40000000..0x40231000 (vaddr 0xffffff8000000000, 162652 bytes from file)
loader: root task 0x40231000..0x402bb000 (vaddr 0x200000..0x28a000, entry 0x25b4ec)
zombie: still served 100 rounds (last 100: 100 answered, 0 refused; last refusal None)
hostile: edu 0x010000ed at 0x10100000, StreamID 0x10, DMA pool at physical 0x7ff68000 size 0x8000
victim: edu 0x010000ed at 0x10000000, StreamID 0x8, DMA pool at physical 0x7ff60000 size 0x8000
root: zombie done: pass
root: retired zombie at the IOMMU server: 0 streams detached
check hostile/own-dma: ok (StreamID 0x10)
fuzzer: seed 0x5eedf022d00d0001, 12 batches of 250 requests (replay: HOSTILE_FUZZ_SEED=0x5eedf022d00d0001 HOSTILE_FUZZ_BATCHES=12 cargo xtask run hostile)
fuzzer: counts: seed 0x5eedf022d00d0001: 3000 requests in 2691 ms (1308 valid, 904 mutated, 788 noise); replies: Ok 67, Hello 13, Domain 34, Memory 36, Faults 48, Stats 70; errors: NotPermitted 215, Malformed 1592; IPC errors 0, undecodable 0, unexpected 0, Stats off 0, caps in replies 0
check fuzzer/still-served-after-fuzz: ok (nothing in use)
fuzzer: calls 3013 refused 2732 (every call of mine to the server)
root: fuzzer done: pass
iommu-server: retiring fuzzer (badge 0x40): it made requests 3013 refused 2732
root: retired fuzzer at the IOMMU server: 0 streams detached, 0 domains freed (0 page-table pages, 0 mappings, 0 bytes), 0 memory registrations released (0 frame caps), 0 faults dropped
check victim/dma-after-fuzz: ok (2048 bytes round trip after the fuzzer's run ended)
hostile: thief: receiving on my fault endpoint (slot 1)
FAULT in hostile: capability fault at pc 0x218c10, cptr 0x1 (MissingCapability { bits_left: 0 })
root: victim done: pass
";

    #[test]
    fn judges_a_fixed_run() {
        assert_eq!(pool(SERIAL, "hostile"), Some((0x7ff6_8000, 0x7ff7_0000)));
        assert_eq!(pool(SERIAL, "victim"), Some((0x7ff6_0000, 0x7ff6_8000)));
        let ranges = images(SERIAL).unwrap();
        assert_eq!(ranges[0].1..ranges[0].2, 0x4000_0000..0x4023_1000);
        assert_eq!(ranges[1].1..ranges[1].2, 0x4023_1000..0x402b_b000);
        assert_eq!(thief_refused(SERIAL), Ok(()));
        assert_eq!(zombie_stopped(SERIAL), Ok(()));
        assert_eq!(zombie_refused(SERIAL), Ok(()));
        assert_eq!(every_check_ok(SERIAL), Ok(()));
        assert_eq!(fuzzer_counts(SERIAL), Ok(()));
        assert_eq!(fuzzer_calls_match(SERIAL), Ok(()));
        assert_eq!(fuzzer_left_nothing(SERIAL), Ok(()));
        assert_eq!(victim_after_fuzz(SERIAL), Ok(()));
    }

    #[test]
    fn judges_a_fuzz_run() {
        let short = SERIAL.replace("3000 requests in 2691 ms", "300 requests in 2691 ms");
        assert!(fuzzer_counts(&short).unwrap_err().contains("300 requests"));
        let slow = SERIAL.replace("3000 requests in 2691 ms", "3000 requests in 45000 ms");
        assert!(fuzzer_counts(&slow).is_err());
        let silent = SERIAL.replace("fuzzer: counts: ", "fuzzer: ");
        assert!(fuzzer_counts(&silent).unwrap_err().contains("counts"));
        let lost = SERIAL.replace(
            "it made requests 3013 refused",
            "it made requests 3012 refused",
        );
        assert!(fuzzer_calls_match(&lost).unwrap_err().contains("3012"));
        let kept = SERIAL.replace(
            "0 domains freed (0 page-table pages",
            "1 domains freed (7 page-table pages",
        );
        assert!(fuzzer_left_nothing(&kept)
            .unwrap_err()
            .contains("1 domains freed"));
        let early = SERIAL.replace(
            "check victim/dma-after-fuzz: ok (2048 bytes round trip after the fuzzer's run ended)\n",
            "",
        )
        .replace(
            "fuzzer: seed 0x5eedf022d00d0001",
            "check victim/dma-after-fuzz: ok (too early)\nfuzzer: seed 0x5eedf022d00d0001",
        );
        assert!(victim_after_fuzz(&early).unwrap_err().contains("before"));
        let hung = SERIAL.replace("check fuzzer/still-served-after-fuzz", "fuzzer: still");
        assert!(victim_after_fuzz(&hung).is_err());
    }

    #[test]
    fn judges_an_unfixed_run() {
        let stolen = SERIAL.replace(
            "FAULT in hostile: capability fault at pc 0x218c10, cptr 0x1 (MissingCapability { bits_left: 0 })\nroot: victim done: pass\n",
            "hostile: thief stole a message meant for the root task: label 0x646f (done), badge 0x200001, MR0 0x1\n",
        );
        assert!(thief_refused(&stolen).unwrap_err().contains("thief stole"));
        let zombie = format!(
            "{SERIAL}zombie: still served 200 rounds (last 100: 100 answered, 0 refused; last refusal None)\n\
             zombie: still served 300 rounds (last 100: 100 answered, 0 refused; last refusal None)\n\
             check hostile/wedge-refused: FAILED (Err(Iommu(Malformed)))\n"
        );
        assert!(zombie_stopped(&zombie)
            .unwrap_err()
            .contains("2 progress lines"));
        assert!(zombie_refused(&zombie)
            .unwrap_err()
            .contains("still answered"));
        assert!(every_check_ok(&zombie)
            .unwrap_err()
            .contains("wedge-refused"));
    }

    #[test]
    fn judges_translations() {
        let trace = translations(&Trace::parse(
            "1@1.0:smmuv3_translate_success smmuv3-iommu-memory-region-16-2 sid=0x10 iova=0x100000 translated=0x7ff6b000 perm=0x1\n\
             1@1.1:smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x180000 translated=0x7ff61000 perm=0x3\n\
             1@1.2:smmuv3_translate_abort smmuv3-iommu-memory-region-16-2 sid=0x10 abort on iova:0x300000 is_write=1\n",
        ));
        assert_eq!(trace.len(), 2);
        assert_eq!(
            only_in_pool(&trace, 0x10, (0x7ff6_8000, 0x7ff7_0000)),
            Ok(())
        );
        assert!(only_in_pool(&trace, 0x8, (0x7ff6_8000, 0x7ff7_0000)).is_err());
        assert!(only_in_pool(&trace, 0x20, (0, u64::MAX)).is_err());
        let kernel = [("the kernel's image", 0x4000_0000, 0x4023_1000)];
        assert_eq!(outside(&trace, &kernel, &[]), Ok(()));
        let read = translations(&Trace::parse(
            "1@2:smmuv3_translate_success smmuv3-iommu-memory-region-16-2 sid=0x10 iova=0x400000 translated=0x40010000 perm=0x1\n",
        ));
        assert!(outside(&read, &kernel, &[]).unwrap_err().contains("kernel"));
        // A pool the root task carved from the reclaimed .boot is no kernel.
        let boot = translations(&Trace::parse(
            "1@3:smmuv3_translate_success smmuv3-iommu-memory-region-16-2 sid=0x10 iova=0x100000 translated=0x40003000 perm=0x1\n",
        ));
        let pool = [(0x10, (0x4000_0000, 0x4000_8000))];
        assert_eq!(outside(&boot, &kernel, &pool), Ok(()));
        assert!(outside(&read, &kernel, &pool).is_err());
    }

    /// The whole image test, alone (boots QEMU).
    #[test]
    #[ignore = "boots QEMU: cargo test -p xtask -- --ignored hostile_system"]
    fn hostile_system() {
        let ctx = crate::Ctx::new().expect("repository root");
        crate::setup::ensure(&ctx).expect("setup");
        let mut t = Checks::default();
        run(&ctx, &mut t);
        println!(
            "hostile: {} passed, {} failed",
            t.tally.passed, t.tally.failed
        );
        assert_eq!(t.tally.failed, 0, "some hostile checks failed");
    }
}
