//! The `blk` and `blk-death` systems: an NVMe driver process reads and
//! writes a disk through the IOMMU server (issue 15). Judged from the
//! processes' checks (bytes read against the image's pattern, the bytes
//! around each read against a guard pattern, errors reported, requests
//! refused), from the system description (who holds the control badge,
//! where BAR0 goes), from the disk image file after QEMU exits (what the
//! writes left there), and from QEMU's SMMU trace (what the NVMe's DMA
//! really did at the SMMU, attributed to the mappings the driver logged).

use super::trace::{covers, hex_field, nothing_bypassed, on_page, Event, Trace};
use super::{boot, ended_with_pass, process_check, Checks};
use crate::qemu::{self, BootOutcome};
use crate::system::{self, lba_pattern_byte, DISK_SECTOR};
use crate::Ctx;
use std::collections::BTreeMap;
use std::ops::Range;

/// Every check the processes must report.
const EXPECTED: &[&str] = &[
    "blk-driver/dma-pool",
    "blk-driver/pci-probe",
    "blk-driver/attach",
    "blk-driver/controller-enabled",
    "blk-driver/identify",
    "blk-driver/io-queues",
    "blk-stranger/shutdown-refused",
    "blk-stranger/test-unmapped-refused",
    "blk-stranger/die-mid-io-refused",
    "blk-stranger/overflowing-words-refused",
    "blk-stranger/driver-still-serves",
    "blk-client/info",
    "blk-client/read-one-sector",
    "blk-client/read-crossing-page",
    "blk-client/read-multi-page",
    "blk-client/read-split",
    "blk-client/read-last-sector",
    "blk-client/read-beyond-disk-refused",
    "blk-client/write-one-page",
    "blk-client/write-crossing-page",
    "blk-client/write-multi-page",
    "blk-client/flush",
    "blk-driver/unmapped-buffer-faults",
    "blk-client/unmapped-buffer-io-error",
    "blk-driver/unmapped-prp-list-faults",
    "blk-client/unmapped-prp-list-io-error",
    "blk-client/read-after-faults",
    "blk-driver/shutdown",
    "blk-driver/no-stray-faults",
    "blk-client/driver-shutdown",
];

const DEATH_EXPECTED: &[&str] = &[
    "doomed-driver/dma-pool",
    "doomed-driver/pci-probe",
    "doomed-driver/attach",
    "doomed-driver/controller-enabled",
    "doomed-driver/identify",
    "doomed-driver/io-queues",
    "blk-watcher/read-before-death",
    "blk-watcher/driver-submitted-and-dies",
];

/// The NVMe's StreamID: 00:03.0 (`addr=3` in the systems' `[qemu] disk`).
const STREAM: u64 = 0x18;
/// The driver's I/O address window (images/processes/blk-driver/src/driver.rs).
const IOVA_WINDOW: Range<u64> = 0x10_0000..0x1010_0000;
/// Sectors the client writes: (first LBA, count). Must match `WRITES` in
/// images/processes/blk-driver/src/client.rs.
const WRITES: [(u64, u64); 3] = [(100, 8), (2045, 3), (5000, 24)];
/// The badge of the one client that may shut the driver down and ask for
/// the test requests: `proto::CONTROL_BADGE` in
/// images/processes/blk-driver/src/proto.rs.
const CONTROL_BADGE: u64 = 1;
/// SMMU permissions in QEMU's trace (`perm=`): IOMMU_RO, IOMMU_RW.
const PERM_RO: u64 = 0x1;
const PERM_RW: u64 = 0x3;
const PAGE: u64 = 4096;

pub fn run(ctx: &Ctx, t: &mut Checks) {
    blk(ctx, t);
    death(ctx, t);
}

/// What a run's DMA must show beyond every translation's own checks.
struct Expect {
    /// At least this many translations.
    translations: usize,
    /// Purposes (the driver's DMA log) of which at least this many
    /// distinct mappings must have been translated.
    translated: &'static [(&'static str, usize)],
}

fn blk(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot(ctx, t, "blk") else {
        return;
    };
    for name in EXPECTED {
        t.check(&format!("blk/{name}"), process_check(&out, name));
    }
    t.check("blk/run-ends-with-pass", ended_with_pass(&out));
    t.check(
        "blk/control-badge-is-the-clients-alone",
        control_badge(ctx, "blk", "blk-client"),
    );
    t.check(
        "blk/pci-bar0-by-the-root-task",
        pci_by_the_root_task(ctx, &out.serial, "blk", "blk-driver"),
    );
    let image = std::fs::read(qemu::disk_image(ctx, "blk")).map_err(|e| e.to_string());
    t.check(
        "blk/disk/writes-reached-the-image",
        image.and_then(|bytes| writes_in_image(&bytes)),
    );
    let Some(trace) = Trace::of_run(&out, t, "blk") else {
        return;
    };
    let asid = domain_asid(&trace);
    t.check(
        "blk/trace/one-asid-for-the-drivers-domain",
        asid.clone().map(|_| ()),
    );
    let log = dma_log(&out.serial, "blk-driver");
    let expect = Expect {
        translations: 20,
        translated: &[("admin-sq", 1), ("io-sq", 1), ("prp-list", 1), ("write", 3)],
    };
    t.check(
        "blk/trace/every-dma-translated-in-the-drivers-domain",
        asid.clone().and_then(|a| {
            translated_in_domain(&trace, pool(&out.serial, "blk-driver"), &log, a, &expect)
        }),
    );
    t.check("blk/trace/nothing-bypassed", nothing_bypassed(&trace));
    let test = |n: u32, what: &str| {
        let line = format!("blk-driver: test {n}: read");
        hex_field_where(&out.serial, &[&line, "unmapped before the doorbell"], what)
    };
    let buffer = test(0, "into IOVA ");
    let list = test(1, "PRP list at IOVA ");
    // The driver's mappings placed in the trace: which one each test's
    // warm read went through.
    let placed = asid
        .clone()
        .and_then(|a| Ok((a, mappings(&trace, &log, a)?)));
    let unmapped = |iova: Option<u64>, what: &str, purpose: &str, write: bool| {
        let iova = iova.ok_or(format!("the driver never printed test {what} IOVA"))?;
        let (a, maps) = placed.clone()?;
        faulted_after_unmap(&trace, iova, a, &maps, purpose, write)
    };
    t.check(
        "blk/trace/unmapped-buffer-faults-after-invalidation",
        unmapped(buffer, "0's buffer", "test-read", true),
    );
    t.check(
        "blk/trace/unmapped-prp-list-faults-after-invalidation",
        unmapped(list, "1's PRP list", "prp-list", false),
    );
    t.check(
        "blk/trace/faults-only-at-the-unmapped-buffers",
        faults_only_at(&trace, &[buffer.unwrap_or(0), list.unwrap_or(0)]),
    );
}

fn death(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot(ctx, t, "blk-death") else {
        return;
    };
    for name in DEATH_EXPECTED {
        t.check(&format!("blk-death/{name}"), process_check(&out, name));
    }
    t.check("blk-death/run-ends-with-pass", ended_with_pass(&out));
    t.check(
        "blk-death/control-badge-is-the-watchers-alone",
        control_badge(ctx, "blk-death", "blk-watcher"),
    );
    t.check(
        "blk-death/driver-died-and-was-retired",
        retired(&out.serial),
    );
    t.check(
        "blk-death/retired-well-inside-the-throttle-window",
        retired_in_time(&out),
    );
    let Some(trace) = Trace::of_run(&out, t, "blk-death") else {
        return;
    };
    let asid = domain_asid(&trace);
    t.check(
        "blk-death/trace/one-asid-for-the-drivers-domain",
        asid.clone().map(|_| ()),
    );
    let log = dma_log(&out.serial, "doomed-driver");
    // The read's buffer is translated when the command starts; the
    // compare's never is (aborted after the retirement).
    let expect = Expect {
        translations: 10,
        translated: &[("admin-sq", 1), ("io-sq", 1), ("read", 1)],
    };
    t.check(
        "blk-death/trace/every-dma-translated-in-the-drivers-domain",
        asid.and_then(|a| {
            translated_in_domain(&trace, pool(&out.serial, "doomed-driver"), &log, a, &expect)
        }),
    );
    t.check("blk-death/trace/nothing-bypassed", nothing_bypassed(&trace));
    let line = "doomed-driver: dying by a fault";
    let read = hex_field_of(&out.serial, line, "into IOVA ");
    let compare = hex_field_of(&out.serial, line, "from IOVA ");
    let cq = hex_field_of(&out.serial, "doomed-driver: I/O queue pair", "CQ at IOVA ");
    t.check(
        "blk-death/trace/dma-after-death-aborted",
        match (read, compare, cq) {
            (Some(read), Some(compare), Some(cq)) => {
                aborted_after_death(&trace, read, &[compare, cq])
            }
            _ => Err("the driver never printed its buffers' or CQ's IOVA".into()),
        },
    );
}

/// The image file after QEMU exited: the written sectors hold the client's
/// pattern, every other sector the image's own.
fn writes_in_image(bytes: &[u8]) -> Result<(), String> {
    let sector = DISK_SECTOR as usize;
    if bytes.len() != 8 << 20 {
        return Err(format!("the image is {} bytes, not 8 MiB", bytes.len()));
    }
    let written = |lba: u64| WRITES.iter().any(|&(l, n)| (l..l + n).contains(&lba));
    let mut changed = Vec::new();
    for (lba, data) in bytes.chunks(sector).enumerate() {
        let lba = lba as u64;
        let want: Vec<u8> = (0..sector)
            .map(|i| {
                let b = lba_pattern_byte(lba, i);
                if written(lba) {
                    !b
                } else {
                    b
                }
            })
            .collect();
        if data != want.as_slice() {
            changed.push(lba);
        }
    }
    if changed.is_empty() {
        let sectors: u64 = WRITES.iter().map(|w| w.1).sum();
        println!(
            "   (blk: the image holds the client's {sectors} written sectors at {WRITES:?}, every other sector unchanged)"
        );
        Ok(())
    } else {
        Err(format!(
            "{} sector(s) differ from what the client wrote or from the image's pattern: first {:?}",
            changed.len(),
            &changed[..changed.len().min(8)]
        ))
    }
}

/// The system description gives `client`'s cap to the driver's `blk`
/// endpoint the control badge, and no other process a cap to it with that
/// badge (the driver refuses SHUTDOWN and the test requests to any other).
fn control_badge(ctx: &Ctx, system: &str, client: &str) -> Result<(), String> {
    let desc = system::load(&ctx.root, system).map_err(|e| format!("{e:#}"))?;
    let holders: Vec<(&str, u64, &str)> = desc
        .processes
        .iter()
        .flat_map(|p| {
            p.caps
                .iter()
                .filter(|c| c.object == "blk")
                .map(move |c| (p.name.as_str(), c.badge, c.rights.as_str()))
        })
        .collect();
    let callers: Vec<&(&str, u64, &str)> = holders.iter().filter(|h| h.2.contains('w')).collect();
    match callers
        .iter()
        .filter(|h| h.1 == CONTROL_BADGE)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [(name, _, _)] if *name == client => {
            println!(
                "   ({system}: callers of the driver's endpoint (process, badge): {:?}; only {client} holds badge {CONTROL_BADGE:#x})",
                callers.iter().map(|h| (h.0, h.1)).collect::<Vec<_>>()
            );
            Ok(())
        }
        other => Err(format!(
            "badge {CONTROL_BADGE:#x} on the blk endpoint should be {client}'s alone, held by {other:?}"
        )),
    }
}

/// The root task placed the driver's BAR0 where the description says,
/// with bus mastering off, and turned bus mastering on only after the
/// server had the SMMU enabled, before the driver ran; the driver found
/// its BAR0 at that address with the size the root task found, and the
/// description's device region over it fits in it.
fn pci_by_the_root_task(ctx: &Ctx, serial: &str, system: &str, role: &str) -> Result<(), String> {
    let desc = system::load(&ctx.root, system).map_err(|e| format!("{e:#}"))?;
    let p = desc
        .processes
        .iter()
        .find(|p| p.name == role)
        .ok_or(format!("no process {role} in {system}"))?;
    let f = p
        .pci
        .first()
        .ok_or(format!("{role} drives no PCI function"))?;
    let region = p
        .devices
        .iter()
        .find(|d| d.paddr == f.bar0)
        .ok_or(format!("no device region of {role} at BAR0 {:#x}", f.bar0))?;
    pci_bar0(serial, role, f.function, f.bar0, region.size)
}

/// [`pci_by_the_root_task`] on the serial output, against the
/// description's `function`, `bar0` and device region size.
fn pci_bar0(serial: &str, role: &str, function: u16, bar0: u64, region: u64) -> Result<(), String> {
    let at = |needle: &str| {
        serial
            .find(needle)
            .ok_or_else(|| format!("the run never said {needle:?}"))
    };
    let bdf = format!(
        "root: PCI {:02x}:{:02x}.{} (1b36:0010) for {role}: BAR0 at ",
        function >> 8,
        (function >> 3) & 0x1f,
        function & 7
    );
    let placed = at(&bdf)?;
    let root_line = &serial[placed
        ..serial[placed..]
            .find('\n')
            .map_or(serial.len(), |e| placed + e)];
    if !root_line.ends_with("memory decoding on, bus mastering off") {
        return Err(format!("the root task said {root_line:?}"));
    }
    let ready = at("root: iommu-server ready: SMMU enabled, starting the others")?;
    let mastering = at("root: bus mastering on for 1 PCI function(s)")?;
    let probe = format!("check {role}/pci-probe: ok (");
    let driver = at(&probe)?;
    let driver_line = &serial[driver
        ..serial[driver..]
            .find('\n')
            .map_or(serial.len(), |e| driver + e)];
    // "BAR0 at 0x10000000 (16 KiB": the address and the decoded size.
    let bar = |line: &str| -> Option<(u64, u64)> {
        let addr = hex_field(line, "BAR0 at ")?;
        let rest = &line[line.find("BAR0 at ")?..];
        let open = rest.find('(')? + 1;
        let kib: u64 = rest[open..].split(' ').next()?.parse().ok()?;
        Some((addr, kib * 1024))
    };
    let (root_addr, root_size) = bar(root_line).ok_or(format!("no BAR0 in {root_line:?}"))?;
    let (driver_addr, driver_size) =
        bar(driver_line).ok_or(format!("no BAR0 in {driver_line:?}"))?;
    if root_addr != bar0 || driver_addr != bar0 {
        return Err(format!(
            "the description places BAR0 at {bar0:#x}; the root task said {root_addr:#x}, the driver {driver_addr:#x}"
        ));
    }
    if driver_size != root_size || region > root_size {
        return Err(format!(
            "BAR0 decodes {root_size:#x} bytes (root task), the driver says {driver_size:#x}, the description maps {region:#x} of it"
        ));
    }
    if !(placed < ready && ready < mastering && mastering < driver) {
        return Err(format!(
            "out of order: BAR placed at {placed}, server ready at {ready}, bus mastering at {mastering}, driver's probe at {driver}"
        ));
    }
    println!(
        "   ({role}: BAR0 at {bar0:#x} as described, {root_size:#x} bytes decoded, {region:#x} mapped; placed, then the SMMU up, then bus mastering, then the driver)"
    );
    Ok(())
}

/// The root task reported the driver's fault and retired it: its one
/// stream detached, its domain freed.
fn retired(serial: &str) -> Result<(), String> {
    let fault = serial
        .find("FAULT in doomed-driver:")
        .ok_or("the driver never faulted")?;
    let line_at = serial
        .find(
            "root: retired doomed-driver at the IOMMU server: 1 streams detached, 1 domains freed",
        )
        .ok_or("the root task never retired the driver with its stream and domain")?;
    if fault < line_at {
        Ok(())
    } else {
        Err("retired before it faulted".into())
    }
}

/// The retirement came well before the throttled disk gets to the read the
/// driver died with (about four seconds after its doorbell,
/// blk-death.toml): at most 2 s after the driver's last line, by the
/// serial output's arrival times.
fn retired_in_time(out: &BootOutcome) -> Result<(), String> {
    let died = out
        .time_to("doomed-driver: dying by a fault")
        .ok_or("the driver never said it was dying")?;
    let retired = out
        .time_to("root: retired doomed-driver")
        .ok_or("the root task never retired the driver")?;
    let took = retired.saturating_sub(died);
    println!("   (blk-death: retired {took:.1?} after the driver's last line)");
    if took.as_secs_f64() < 2.0 {
        Ok(())
    } else {
        Err(format!(
            "the retirement took {took:.1?}: not well inside the throttle's four seconds"
        ))
    }
}

/// The driver's DMA pool, as it printed it: `[paddr, paddr + size)`.
fn pool(serial: &str, role: &str) -> Option<Range<u64>> {
    let prefix = format!("{role}: DMA pool at physical ");
    let paddr = hex_field_of(serial, &prefix, "physical ")?;
    let size = hex_field_of(serial, &prefix, "size ")?;
    Some(paddr..paddr + size)
}

/// The hex number after `key` on the first line containing `prefix`.
fn hex_field_of(serial: &str, prefix: &str, key: &str) -> Option<u64> {
    hex_field_where(serial, &[prefix], key)
}

/// The hex number after `key` on the first line containing every one of
/// `needles`.
fn hex_field_where(serial: &str, needles: &[&str], key: &str) -> Option<u64> {
    serial
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| hex_field(l, key))
}

/// The ASID of the driver's domain: every translation for the NVMe's
/// stream looked up the IOTLB by one ASID; and every IOTLB fill and every
/// invalidation by ASID or address in the run named that ASID (the
/// driver's domain is the only one the run has).
fn domain_asid(trace: &Trace) -> Result<u64, String> {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &trace.events {
        if let Event::Translated { sid, asid, .. } = e {
            if *sid != STREAM {
                continue;
            }
            let asid = asid.ok_or(format!("{e:?}: no IOTLB lookup before it"))?;
            *seen.entry(asid).or_default() += 1;
        }
    }
    let (asid, translations) = match seen.iter().collect::<Vec<_>>().as_slice() {
        [(a, n)] => (**a, **n),
        [] => return Err(format!("no translation for StreamID {STREAM:#x}")),
        more => {
            return Err(format!(
                "the NVMe's translations looked up several ASIDs (ASID, translations): {more:?}"
            ))
        }
    };
    let (mut filled, mut invalidated) = (0, 0);
    for e in &trace.events {
        let other = match e {
            Event::Filled { asid: a, .. } => {
                filled += 1;
                *a != asid
            }
            Event::RangeInvalidated { asid: Some(a), .. }
            | Event::Invalidated { asid: Some(a) } => {
                invalidated += 1;
                *a != asid
            }
            _ => false,
        };
        if other {
            return Err(format!(
                "{e:?}: not ASID {asid}, the one every NVMe translation used"
            ));
        }
    }
    println!(
        "   (ASID {asid} for all {translations} NVMe translations, {filled} IOTLB fills and {invalidated} invalidations by ASID or address)"
    );
    Ok(asid)
}

/// One line of the driver's DMA log: `<role>: dma map|unmap <purpose>
/// IOVA <addr> pages <n>` (images/processes/blk-driver/src/driver.rs,
/// `Driver::logged`).
#[derive(Debug, Clone, PartialEq)]
struct Logged {
    unmap: bool,
    purpose: String,
    range: Range<u64>,
}

fn dma_log(serial: &str, role: &str) -> Vec<Logged> {
    let prefix = format!("{role}: dma ");
    serial
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [what, purpose, "IOVA", addr, "pages", pages] = words.as_slice() else {
                return None;
            };
            let start = u64::from_str_radix(addr.trim_start_matches("0x"), 16).ok()?;
            let pages: u64 = pages.parse().ok()?;
            Some(Logged {
                unmap: match *what {
                    "map" => false,
                    "unmap" => true,
                    _ => return None,
                },
                purpose: purpose.to_string(),
                range: start..start + pages * PAGE,
            })
        })
        .collect()
}

/// A mapping the driver logged, placed in the trace: the device may use it
/// after event `from` (the invalidation that ended the last mapping of its
/// pages, or 0) and before event `to` (its own unmap's invalidation; None:
/// never unmapped).
#[derive(Debug, Clone, PartialEq)]
struct Mapping {
    purpose: String,
    range: Range<u64>,
    from: usize,
    to: Option<usize>,
}

/// The logged mappings placed in the trace. Each unmap the driver logged
/// (after the server's reply) is the next range invalidation, by
/// TLBI_NH_VA with the domain's ASID, of the mapping's first page, with
/// a CMD_SYNC after it: the log and the trace are in the same order.
fn mappings(trace: &Trace, log: &[Logged], asid: u64) -> Result<Vec<Mapping>, String> {
    let mut cursor = 0;
    let mut live: Vec<Mapping> = Vec::new();
    let mut done = Vec::new();
    let mut ended: BTreeMap<u64, usize> = BTreeMap::new();
    let pages = |r: &Range<u64>| (r.start >> 12)..(r.end >> 12);
    for l in log {
        if !l.unmap {
            let from = pages(&l.range)
                .filter_map(|p| ended.get(&p))
                .max()
                .copied()
                .unwrap_or(0);
            live.push(Mapping {
                purpose: l.purpose.clone(),
                range: l.range.clone(),
                from,
                to: None,
            });
            continue;
        }
        let k = live
            .iter()
            .position(|m| m.range == l.range && m.purpose == l.purpose)
            .ok_or(format!("{l:?}: unmapped but never mapped"))?;
        let mut m = live.remove(k);
        let invalidates = |e: &Event| {
            matches!(e, Event::RangeInvalidated { asid: Some(a), addr, bytes, command }
                if *a == asid && command == "SMMU_CMD_TLBI_NH_VA" && covers(*addr, *bytes, m.range.start))
        };
        let at = trace.events[cursor..]
            .iter()
            .position(invalidates)
            .map(|p| p + cursor)
            .ok_or(format!(
                "{l:?}: no TLBI_NH_VA by ASID {asid} of {:#x} in the trace after event {cursor}",
                m.range.start
            ))?;
        let sync = trace.events[at..]
            .iter()
            .position(|e| matches!(e, Event::Command { name } if name == "SMMU_CMD_SYNC"))
            .map(|p| p + at)
            .ok_or(format!("{l:?}: no CMD_SYNC after its invalidation"))?;
        // Every page of the mapping invalidated before that sync.
        let missed = pages(&m.range).find(|&p| {
            !trace.events[at..sync].iter().any(|e| {
                matches!(e, Event::RangeInvalidated { asid: Some(a), addr, bytes, .. }
                    if *a == asid && covers(*addr, *bytes, p << 12))
            })
        });
        if let Some(p) = missed {
            return Err(format!(
                "{l:?}: page {:#x} not invalidated with the rest",
                p << 12
            ));
        }
        m.to = Some(at);
        for p in pages(&m.range) {
            ended.insert(p, at);
        }
        cursor = sync + 1;
        done.push(m);
    }
    done.extend(live);
    Ok(done)
}

/// The permission the device must have had for a mapping of `purpose`:
/// read-only for what it only reads (queues of submissions, PRP lists,
/// data it writes to the disk or compares), read-write for what it writes
/// (SMMUv3 stage 1 has no write-only).
fn required_perm(purpose: &str) -> Result<u64, String> {
    match purpose {
        "admin-sq" | "io-sq" | "prp-list" | "write" | "compare" => Ok(PERM_RO),
        "admin-cq" | "io-cq" | "identify" | "read" | "test-read" | "canary" => Ok(PERM_RW),
        other => Err(format!(
            "a mapping for {other:?}, which this check does not know"
        )),
    }
}

/// Every translation the SMMU made was for the NVMe's stream, by the
/// driver's domain's ASID (its IOTLB lookup), at an I/O address of the
/// driver's window, to a page of the driver's DMA pool, through a mapping
/// the driver logged as live then, with the permission that mapping's
/// purpose allows: read-only for submission queues, PRP lists, write and
/// compare buffers. And there were enough of them, of the purposes
/// `expect` names.
fn translated_in_domain(
    trace: &Trace,
    pool: Option<Range<u64>>,
    log: &[Logged],
    asid: u64,
    expect: &Expect,
) -> Result<(), String> {
    let pool = pool.ok_or("the driver never printed its DMA pool")?;
    let maps = mappings(trace, log, asid)?;
    let mut count = 0;
    // Per purpose: translations, and which mappings had them.
    let mut used: BTreeMap<&str, (usize, Vec<usize>, u64)> = BTreeMap::new();
    for (i, e) in trace.events.iter().enumerate() {
        match e {
            Event::Translated {
                sid,
                iova,
                paddr,
                perm,
                asid: looked_up,
            } => {
                if *sid != STREAM
                    || !IOVA_WINDOW.contains(iova)
                    || !pool.contains(paddr)
                    || *looked_up != Some(asid)
                {
                    return Err(format!(
                        "{e:?}: want StreamID {STREAM:#x}, ASID {asid}, an IOVA in {IOVA_WINDOW:#x?}, a physical address in the driver's pool {pool:#x?}"
                    ));
                }
                let owners: Vec<usize> = maps
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| {
                        m.range.contains(&(iova & !(PAGE - 1)))
                            && m.from < i
                            && m.to.is_none_or(|to| i < to)
                    })
                    .map(|(k, _)| k)
                    .collect();
                let &[k] = owners.as_slice() else {
                    return Err(format!(
                        "{e:?} (trace event {i}): in {} of the mappings the driver logged as live then (want exactly one)",
                        owners.len()
                    ));
                };
                let m = &maps[k];
                let want = required_perm(&m.purpose)?;
                if *perm != want {
                    return Err(format!(
                        "{e:?}: through the {} mapping {:#x?}, which must be perm={want:#x}",
                        m.purpose, m.range
                    ));
                }
                let u = used.entry(m.purpose.as_str()).or_default();
                u.0 += 1;
                if !u.1.contains(&k) {
                    u.1.push(k);
                }
                u.2 = want;
                count += 1;
            }
            Event::Aborted { sid, .. } | Event::Recorded { sid, .. } if *sid != STREAM => {
                return Err(format!("an access under another StreamID: {e:?}"));
            }
            _ => {}
        }
    }
    if count < expect.translations {
        return Err(format!(
            "only {count} translations for StreamID {STREAM:#x}"
        ));
    }
    for &(purpose, n) in expect.translated {
        let got = used.get(purpose).map_or(0, |u| u.1.len());
        if got < n {
            return Err(format!(
                "{got} {purpose} mapping(s) translated, want at least {n}"
            ));
        }
    }
    let summary: Vec<String> = used
        .iter()
        .map(|(p, (n, m, perm))| format!("{p}: {n} in {} mapping(s), perm={perm:#x}", m.len()))
        .collect();
    println!(
        "   ({count} translations, all StreamID {STREAM:#x}, ASID {asid}, into the driver's pool {pool:#x?}, each through one of its {} logged mappings: {})",
        maps.len(),
        summary.join("; ")
    );
    Ok(())
}

/// The page of `iova` was in the SMMU's TLB through the mapping the test
/// then unmapped (the last logged `purpose` mapping of the page before its
/// faults: the device's read into it while mapped, so a walk, an IOTLB
/// fill by the domain's ASID and a translation after that mapping began);
/// then a range invalidation of it by that ASID (TLBI_NH_VA: an
/// invalidate-all or by-ASID does not count) came after its last
/// translation and was followed by a CMD_SYNC, all before its first
/// translation fault for the NVMe (a `write` by the device for a read's
/// buffer, a read of a PRP list); and the SMMU translated nothing on that
/// page from that invalidation to its last fault.
///
/// A translation of the page through an earlier mapping (another request
/// that got the same I/O address) does not make it warm for the test: that
/// request's own unmap invalidated it.
fn faulted_after_unmap(
    trace: &Trace,
    iova: u64,
    asid: u64,
    maps: &[Mapping],
    purpose: &str,
    write: bool,
) -> Result<(), String> {
    let ev = &trace.events;
    let faults: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(e, Event::Recorded { kind, sid, iova: Some(at) }
                if *sid == STREAM && kind == "SMMU_EVT_F_TRANSLATION" && on_page(*at, iova))
        })
        .map(|(i, _)| i)
        .collect();
    let (Some(&first), Some(&last)) = (faults.first(), faults.last()) else {
        return Err(format!(
            "no translation fault recorded at {iova:#x} for StreamID {STREAM:#x}"
        ));
    };
    // The mapping whose unmap came last before the faults (a later one of
    // the same page, e.g. the next test's, begins at that unmap).
    let mapped = maps
        .iter()
        .filter(|m| {
            m.purpose == purpose
                && m.range.contains(&(iova & !(PAGE - 1)))
                && m.to.is_some_and(|to| to < first)
        })
        .max_by_key(|m| m.to)
        .ok_or(format!(
            "no {purpose} mapping of {iova:#x} unmapped before its faults in the driver's DMA log"
        ))?;
    let translated = |e: &Event| matches!(e, Event::Translated { sid, iova: at, .. } if *sid == STREAM && on_page(*at, iova));
    let warm = ev[..first]
        .iter()
        .rposition(translated)
        .filter(|&w| w > mapped.from)
        .ok_or(format!(
            "the device never reached {iova:#x} through its {purpose} mapping (from event {}) before the faults: the SMMU's TLB never held it for the test, so a missing invalidation would not show",
            mapped.from
        ))?;
    if !ev[mapped.from..warm]
        .iter()
        .any(|e| matches!(e, Event::Filled { asid: a, addr } if *a == asid && on_page(*addr, iova)))
    {
        return Err(format!(
            "no IOTLB fill of {iova:#x} by ASID {asid} before its last translation (event {warm})"
        ));
    }
    let between = &ev[warm + 1..first];
    let Some(inval) = between.iter().position(|e| {
        matches!(e, Event::RangeInvalidated { asid: Some(a), addr, bytes, command }
            if *a == asid && command == "SMMU_CMD_TLBI_NH_VA" && covers(*addr, *bytes, iova))
    }) else {
        let others: Vec<&Event> = between
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::RangeInvalidated { .. } | Event::Invalidated { .. }
                )
            })
            .collect();
        return Err(format!(
            "no TLBI_NH_VA by ASID {asid} of {iova:#x} between its last translation (event {warm}) and its first fault (event {first}); other invalidations there, which do not count: {others:?}"
        ));
    };
    if !between[inval..]
        .iter()
        .any(|e| matches!(e, Event::Command { name } if name == "SMMU_CMD_SYNC"))
    {
        return Err(format!(
            "the invalidation of {iova:#x} (event {}) has no CMD_SYNC before the first fault",
            warm + 1 + inval
        ));
    }
    let inval = warm + 1 + inval;
    if let Some(leak) = ev[inval..=last].iter().find(|e| translated(e)) {
        return Err(format!(
            "{iova:#x} was translated after its unmap: {leak:?}"
        ));
    }
    println!(
        "   (blk: {iova:#x} translated (event {warm}, IOTLB filled by ASID {asid}), then TLBI_NH_VA + CMD_SYNC (event {inval}), then {} translation fault(s) ({}), nothing translated there since)",
        faults.len(),
        if write { "device writes of the read's data" } else { "the device's read of the PRP list" }
    );
    Ok(())
}

/// Every fault the SMMU recorded lies on one of `pages` (the buffers the
/// driver unmapped on purpose).
fn faults_only_at(trace: &Trace, pages: &[u64]) -> Result<(), String> {
    match trace.events.iter().find(|e| match e {
        Event::Recorded { iova: Some(at), .. } => !pages.iter().any(|&p| on_page(*at, p)),
        Event::Recorded { iova: None, .. } => true,
        _ => false,
    }) {
        None => Ok(()),
        Some(e) => Err(format!(
            "a fault away from the unmapped buffers {pages:#x?}: {e:?}"
        )),
    }
}

/// The driver's stream had one attach; its retirement's STE invalidation
/// is the last one for the stream. After it the SMMU translated nothing for
/// the NVMe, and aborted the device's DMA to each of `pages` (the compare's
/// data, the completion queue): the DMA the device started after the
/// retirement reached no memory.
///
/// That is not all the outstanding commands did: QEMU translated the
/// read's buffer (`read`) when it started the command, before the
/// retirement (shown here, not required), and its block layer writes the
/// data later through the host mapping it kept, which no SMMU sees; so the
/// read's data lands in the dead driver's pool.
fn aborted_after_death(trace: &Trace, read: u64, pages: &[u64]) -> Result<(), String> {
    let retire = trace
        .events
        .iter()
        .rposition(|e| matches!(e, Event::ConfigInvalidated { sid } if *sid == STREAM))
        .ok_or("no STE invalidation for the NVMe's stream")?;
    let before = trace.events[..retire]
        .iter()
        .filter(|e| matches!(e, Event::Translated { sid, .. } if *sid == STREAM))
        .count();
    if before == 0 {
        return Err("no translation for the NVMe before the retirement".into());
    }
    let after = &trace.events[retire..];
    if let Some(e) = after
        .iter()
        .find(|e| matches!(e, Event::Translated { sid, .. } if *sid == STREAM))
    {
        return Err(format!("translated after the retirement: {e:?}"));
    }
    for &page in pages {
        let aborted = after
            .iter()
            .filter(|e| matches!(e, Event::Aborted { sid, iova } if *sid == STREAM && on_page(*iova, page)))
            .count();
        if aborted == 0 {
            return Err(format!(
                "no aborted access to {page:#x} after the retirement"
            ));
        }
        println!("   (blk-death: {aborted} aborted access(es) to {page:#x} after the retirement)");
    }
    let read_translated = trace.events[..retire].iter().any(
        |e| matches!(e, Event::Translated { sid, iova, .. } if *sid == STREAM && on_page(*iova, read)),
    );
    println!(
        "   (blk-death: {before} translations before the retirement, none after; the read's buffer {read:#x} translated before it: {read_translated} (QEMU then writes its data through the host mapping it kept))"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::trace::samples::NVME;
    use super::*;

    /// Boots both systems and runs these checks alone (not part of
    /// `cargo test`): `cargo test -p xtask -- --ignored blk_systems`.
    #[test]
    #[ignore = "builds and boots two QEMU images (about a minute)"]
    fn blk_systems() {
        let ctx = crate::Ctx::new().unwrap();
        let mut t = Checks::default();
        run(&ctx, &mut t);
        assert_eq!(t.tally.failed, 0, "{} passed", t.tally.passed);
    }

    #[test]
    fn judges_the_nvme_sample() {
        let t = Trace::parse(NVME);
        assert_eq!(domain_asid(&t), Ok(1));
        assert_eq!(faults_only_at(&t, &[0x10_1000]), Ok(()));
        assert!(faults_only_at(&t, &[0x10_2000]).is_err());
        assert_eq!(aborted_after_death(&t, 0x10_0000, &[0x100f_d000]), Ok(()));
        assert!(aborted_after_death(&t, 0x10_0000, &[0x10_1000]).is_err());
    }

    /// A read into the page (the SMMU walks it and fills its TLB), the
    /// unmap's range invalidation by the domain's ASID and a CMD_SYNC, then
    /// the read again: translation faults on the page. Before it, the
    /// server's boot-time invalidate-all.
    const WARM: &str = "\
smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NSNH_ALL
smmuv3_cmdq_tlbi_nh 
smmu_iotlb_inv_all IOTLB invalidate all
smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC
smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x101000 hit=0 miss=1 hit rate=0
smmu_ptw_level level=3 iova=0x101000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=257 => pte=0x6000007ff07f47
smmu_iotlb_insert IOTLB ++ asid=1 addr=0x101000 tg=1 level=3
smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x101000 translated=0x7ff07000 perm=0x3
smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA
smmuv3_s1_range_inval vmid=0 asid=1 addr=0x101000 tg=0 num_pages=0x1 ttl=0 leaf=0
smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC
smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x101000 hit=0 miss=2 hit rate=0
smmu_ptw_level level=3 iova=0x101000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=257 => pte=0x0
smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x18
";

    const RANGE_TLBI: &str =
        "smmuv3_s1_range_inval vmid=0 asid=1 addr=0x101000 tg=0 num_pages=0x1 ttl=0 leaf=0\n";
    const WARM_TRANSLATION: &str = "smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x101000 translated=0x7ff07000 perm=0x3\n";

    fn unmap_check(trace: &str) -> Result<(), String> {
        // The test's mapping of the page, from the trace's start on, until
        // the event before the first fault.
        let first = Trace::parse(trace)
            .events
            .iter()
            .position(|e| matches!(e, Event::Recorded { .. }))
            .unwrap_or(1);
        let test_read = Mapping {
            purpose: "test-read".into(),
            range: 0x10_1000..0x10_2000,
            from: 0,
            to: Some(first - 1),
        };
        faulted_after_unmap(
            &Trace::parse(trace),
            0x10_1000,
            1,
            &[test_read],
            "test-read",
            true,
        )
    }

    /// The driver before: an earlier request's buffer at the same I/O
    /// address was translated and unmapped (TLBI + sync), then the test
    /// mapped and unmapped the page without the device touching it, then
    /// the faults.
    const EARLIER: &str = "\
smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x101000 hit=0 miss=1 hit rate=0
smmu_iotlb_insert IOTLB ++ asid=1 addr=0x101000 tg=1 level=3
smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x101000 translated=0x7ff0c000 perm=0x3
smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA
smmuv3_s1_range_inval vmid=0 asid=1 addr=0x101000 tg=0 num_pages=0x1 ttl=0 leaf=0
smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC
smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA
smmuv3_s1_range_inval vmid=0 asid=1 addr=0x101000 tg=0 num_pages=0x1 ttl=0 leaf=0
smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC
smmu_ptw_level level=3 iova=0x101000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=257 => pte=0x0
smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x18
";
    const EARLIER_LOG: &str = "\
drv: dma map read IOVA 0x101000 pages 1
drv: dma unmap read IOVA 0x101000 pages 1
drv: dma map test-read IOVA 0x101000 pages 1
drv: dma unmap test-read IOVA 0x101000 pages 1
drv: dma map test-read IOVA 0x101000 pages 4
";

    #[test]
    fn a_page_warm_only_through_an_earlier_mapping_proves_nothing() {
        let check = |trace: &str| {
            let t = Trace::parse(trace);
            let maps = mappings(&t, &dma_log(EARLIER_LOG, "drv"), 1)?;
            faulted_after_unmap(&t, 0x10_1000, 1, &maps, "test-read", true)
        };
        let err = check(EARLIER).unwrap_err();
        assert!(err.contains("through its test-read mapping"), "{err}");
        // With the test's own read into the page while it was mapped.
        let warm = EARLIER.replacen(
            "leaf=0\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n",
            &format!(
                "leaf=0\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
                 smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x101000 hit=0 miss=2 hit rate=0\n\
                 smmu_iotlb_insert IOTLB ++ asid=1 addr=0x101000 tg=1 level=3\n{WARM_TRANSLATION}"
            ),
            1,
        );
        assert_eq!(check(&warm), Ok(()));
    }

    #[test]
    fn a_warm_page_with_its_range_invalidation_and_sync_passes() {
        assert_eq!(unmap_check(WARM), Ok(()));
    }

    #[test]
    fn a_cold_page_proves_nothing() {
        // The driver before: mapped and unmapped without the device
        // touching the page, so its TLB never held it.
        let cold = WARM.replace(WARM_TRANSLATION, "");
        let err = unmap_check(&cold).unwrap_err();
        assert!(err.contains("never reached"), "{err}");
    }

    #[test]
    fn a_missing_range_invalidation_fails() {
        // Only the boot-time invalidate-all covers the page.
        let err = unmap_check(&WARM.replace(RANGE_TLBI, "")).unwrap_err();
        assert!(err.contains("no TLBI_NH_VA"), "{err}");
    }

    #[test]
    fn an_invalidation_by_asid_does_not_count() {
        let by_asid = WARM.replace(
            RANGE_TLBI,
            "smmuv3_cmdq_tlbi_nh_asid asid=1\nsmmu_iotlb_inv_asid IOTLB invalidate asid=1\n",
        );
        let err = unmap_check(&by_asid).unwrap_err();
        assert!(err.contains("do not count"), "{err}");
    }

    #[test]
    fn an_invalidate_all_after_the_translation_does_not_count() {
        let all = WARM.replace(RANGE_TLBI, "smmu_iotlb_inv_all IOTLB invalidate all\n");
        assert!(unmap_check(&all).is_err());
    }

    #[test]
    fn another_asids_or_pages_invalidation_does_not_count() {
        assert!(
            unmap_check(&WARM.replace(RANGE_TLBI, &RANGE_TLBI.replace("asid=1", "asid=2")))
                .is_err()
        );
        assert!(unmap_check(
            &WARM.replace(RANGE_TLBI, &RANGE_TLBI.replace("0x101000", "0x102000"))
        )
        .is_err());
        // For all ASIDs (TLBI_NH_VAA): not the domain's by ASID.
        let vaa = WARM
            .replace(RANGE_TLBI, &RANGE_TLBI.replace("asid=1", "asid=-1"))
            .replace("SMMU_CMD_TLBI_NH_VA\n", "SMMU_CMD_TLBI_NH_VAA\n");
        assert!(unmap_check(&vaa).is_err());
    }

    #[test]
    fn an_invalidation_without_sync_does_not_count() {
        let unsynced = WARM.replacen(
            "leaf=0\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n",
            "leaf=0\n",
            1,
        );
        assert_ne!(unsynced, WARM);
        let err = unmap_check(&unsynced).unwrap_err();
        assert!(err.contains("CMD_SYNC"), "{err}");
    }

    #[test]
    fn a_translation_after_the_unmap_fails() {
        let leaked = WARM.replace(
            "smmu_ptw_level level=3 iova=0x101000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=257 => pte=0x0\n",
            &format!(
                "{WARM_TRANSLATION}smmu_ptw_level level=3 iova=0x101000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=257 => pte=0x0\n"
            ),
        );
        // The translation after the invalidation is the page's last one
        // before the faults: no invalidation follows it.
        let err = unmap_check(&leaked).unwrap_err();
        assert!(err.contains("no TLBI_NH_VA"), "{err}");
        // A translation among the faults.
        let among = WARM.to_string()
            + WARM_TRANSLATION
            + "smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x18\n";
        let err = unmap_check(&among).unwrap_err();
        assert!(err.contains("translated after its unmap"), "{err}");
    }

    /// The submission queue (read-only), a write's buffer (read-only), then
    /// a read's buffer at the same I/O address (read-write), each unmapped
    /// with TLBI_NH_VA + CMD_SYNC.
    const LOG: &str = "\
drv: dma map io-sq IOVA 0x100fc000 pages 1
drv: dma map write IOVA 0x100000 pages 1
drv: dma unmap write IOVA 0x100000 pages 1
drv: dma map read IOVA 0x100000 pages 2
drv: dma unmap read IOVA 0x100000 pages 2
";
    const DMA: &str = "\
smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x100fc000 hit=0 miss=1 hit rate=0
smmu_iotlb_insert IOTLB ++ asid=1 addr=0x100fc000 tg=1 level=3
smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x100fc000 translated=0x7ff02000 perm=0x1
smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x100000 hit=0 miss=2 hit rate=0
smmu_iotlb_insert IOTLB ++ asid=1 addr=0x100000 tg=1 level=3
smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x100000 translated=0x7ff0b000 perm=0x1
smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA
smmuv3_s1_range_inval vmid=0 asid=1 addr=0x100000 tg=0 num_pages=0x1 ttl=0 leaf=0
smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC
smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x100000 hit=0 miss=3 hit rate=0
smmu_iotlb_insert IOTLB ++ asid=1 addr=0x100000 tg=1 level=3
smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x100200 translated=0x7ff0b200 perm=0x3
smmu_iotlb_lookup_hit IOTLB cache HIT asid=1 addr=0x100fc000 hit=1 miss=3 hit rate=25
smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x100fc040 translated=0x7ff02040 perm=0x1
smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA
smmuv3_s1_range_inval vmid=0 asid=1 addr=0x100000 tg=1 num_pages=0x2 ttl=3 leaf=1
smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC
";
    const POOL: Range<u64> = 0x7ff0_0000..0x7ff3_0000;
    const EXPECT: Expect = Expect {
        translations: 4,
        translated: &[("io-sq", 1), ("write", 1), ("read", 1)],
    };

    fn dma_check(trace: &str, log: &str) -> Result<(), String> {
        let t = Trace::parse(trace);
        translated_in_domain(
            &t,
            Some(POOL),
            &dma_log(log, "drv"),
            domain_asid(&t)?,
            &EXPECT,
        )
    }

    #[test]
    fn each_translation_goes_through_a_logged_mapping_with_its_permission() {
        let log = dma_log(LOG, "drv");
        assert_eq!(log.len(), 5);
        assert_eq!(
            log[3],
            Logged {
                unmap: false,
                purpose: "read".into(),
                range: 0x10_0000..0x10_2000
            }
        );
        let t = Trace::parse(DMA);
        let maps = mappings(&t, &log, 1).unwrap();
        assert_eq!(maps.len(), 3);
        assert_eq!((maps[0].purpose.as_str(), maps[0].to), ("write", Some(5)));
        assert_eq!((maps[1].purpose.as_str(), maps[1].from), ("read", 5));
        assert_eq!((maps[2].purpose.as_str(), maps[2].to), ("io-sq", None));
        assert_eq!(dma_check(DMA, LOG), Ok(()));
    }

    #[test]
    fn a_writable_write_buffer_or_submission_queue_fails() {
        let rw_write = DMA.replacen(
            "translated=0x7ff0b000 perm=0x1",
            "translated=0x7ff0b000 perm=0x3",
            1,
        );
        let err = dma_check(&rw_write, LOG).unwrap_err();
        assert!(err.contains("write mapping"), "{err}");
        let rw_sq = DMA.replacen(
            "translated=0x7ff02040 perm=0x1",
            "translated=0x7ff02040 perm=0x3",
            1,
        );
        let err = dma_check(&rw_sq, LOG).unwrap_err();
        assert!(err.contains("io-sq mapping"), "{err}");
        // A read's buffer the device could not write is wrong too.
        let ro_read = DMA.replacen(
            "translated=0x7ff0b200 perm=0x3",
            "translated=0x7ff0b200 perm=0x1",
            1,
        );
        assert!(dma_check(&ro_read, LOG).is_err());
    }

    #[test]
    fn a_translation_outside_the_logged_mappings_fails() {
        // Translations through a mapping the driver never logged.
        let unlogged = LOG.replace("drv: dma map io-sq IOVA 0x100fc000 pages 1\n", "");
        let err = dma_check(DMA, &unlogged).unwrap_err();
        assert!(err.contains("0 of the mappings"), "{err}");
        // The write's unmap without its TLBI in the trace.
        let no_tlbi = DMA.replacen(
            "smmuv3_s1_range_inval vmid=0 asid=1 addr=0x100000 tg=0 num_pages=0x1 ttl=0 leaf=0\n",
            "",
            1,
        );
        assert!(dma_check(&no_tlbi, LOG).is_err());
    }

    #[test]
    fn a_foreign_pool_stream_or_asid_fails() {
        let t = Trace::parse(DMA);
        let log = dma_log(LOG, "drv");
        let err =
            translated_in_domain(&t, Some(0x5000_0000..0x5003_0000), &log, 1, &EXPECT).unwrap_err();
        assert!(err.contains("driver's pool"), "{err}");
        let other = DMA.to_string()
            + "smmuv3_translate_abort smmuv3-iommu-memory-region-8-1 sid=0x8 abort on iova:0x1000 is_write=0\n";
        let err = dma_check(&other, LOG).unwrap_err();
        assert!(err.contains("another StreamID"), "{err}");
        let two = DMA.replacen("HIT asid=1", "HIT asid=2", 1);
        let err = domain_asid(&Trace::parse(&two)).unwrap_err();
        assert!(err.contains("several ASIDs"), "{err}");
        let fill = DMA.replacen("++ asid=1 addr=0x100000", "++ asid=3 addr=0x100000", 1);
        assert!(domain_asid(&Trace::parse(&fill)).is_err());
    }

    #[test]
    fn too_few_translations_of_a_purpose_fail() {
        let t = Trace::parse(DMA);
        let log = dma_log(LOG, "drv");
        let more = Expect {
            translations: 4,
            translated: &[("write", 3)],
        };
        let err = translated_in_domain(&t, Some(POOL), &log, 1, &more).unwrap_err();
        assert!(err.contains("1 write mapping(s)"), "{err}");
    }

    const PCI: &str = "\
root: PCI 00:03.0 (1b36:0010) for blk-driver: BAR0 at 0x10000000 (16 KiB), memory decoding on, bus mastering off
root: iommu-server ready: SMMU enabled, starting the others
root: bus mastering on for 1 PCI function(s)
check blk-driver/pci-probe: ok (NVMe 1b36:0010 BAR0 at 0x10000000 (16 KiB, as the root task placed and sized it), StreamID 0x18)
";

    #[test]
    fn bar0_where_the_description_says_and_in_order() {
        assert_eq!(
            pci_bar0(PCI, "blk-driver", 0x18, 0x1000_0000, 0x4000),
            Ok(())
        );
        // Elsewhere than described, a different size, a region past the
        // BAR, another function, out of order.
        assert!(pci_bar0(PCI, "blk-driver", 0x18, 0x2000_0000, 0x4000).is_err());
        let small = PCI.replace("(16 KiB, as", "(8 KiB, as");
        assert!(pci_bar0(&small, "blk-driver", 0x18, 0x1000_0000, 0x4000).is_err());
        assert!(pci_bar0(PCI, "blk-driver", 0x18, 0x1000_0000, 0x8000).is_err());
        assert!(pci_bar0(PCI, "blk-driver", 0x20, 0x1000_0000, 0x4000).is_err());
        let late = PCI.replace("root: bus mastering on for 1 PCI function(s)\n", "")
            + "root: bus mastering on for 1 PCI function(s)\n";
        assert!(pci_bar0(&late, "blk-driver", 0x18, 0x1000_0000, 0x4000).is_err());
    }

    #[test]
    fn the_image_pattern_starts_with_the_lba() {
        let d = crate::system::Disk {
            size_mib: 1,
            pattern: "lba".into(),
            device: "nvme".into(),
            drive_options: None,
        };
        let img = d.image();
        assert_eq!(img.len(), 1 << 20);
        assert_eq!(&img[512 * 7..512 * 7 + 8], &7u64.to_le_bytes());
        assert_eq!(img[512 * 7 + 100], lba_pattern_byte(7, 100));
    }
}
