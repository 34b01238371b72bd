//! The `blk` and `blk-death` systems: an NVMe driver process reads and
//! writes a disk through the IOMMU server (issue 15). Judged from the
//! processes' checks (bytes read against the image's pattern, errors
//! reported), from the disk image file after QEMU exits (what the writes
//! left there), and from QEMU's SMMU trace (what the NVMe's DMA really
//! did at the SMMU).

use super::{boot, ended_with_pass, process_check, Checks};
use crate::qemu;
use crate::system::{lba_pattern_byte, DISK_SECTOR};
use crate::Ctx;

/// Every check the processes must report.
const EXPECTED: &[&str] = &[
    "blk-driver/pci-probe",
    "blk-driver/attach",
    "blk-driver/controller-enabled",
    "blk-driver/identify",
    "blk-driver/io-queues",
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
    "doomed-driver/pci-probe",
    "doomed-driver/attach",
    "doomed-driver/io-queues",
    "blk-watcher/read-before-death",
    "blk-watcher/driver-submitted-and-dies",
];

/// The NVMe's StreamID: 00:03.0 (`addr=3` in the systems' `[qemu] disk`).
const STREAM: u64 = 0x18;
/// The driver's I/O address window (images/processes/blk-driver/src/driver.rs).
const IOVA_WINDOW: std::ops::Range<u64> = 0x10_0000..0x1010_0000;
/// Sectors the client writes: (first LBA, count). Must match `WRITES` in
/// images/processes/blk-driver/src/client.rs.
const WRITES: [(u64, u64); 3] = [(100, 8), (2045, 3), (5000, 24)];

pub fn run(ctx: &Ctx, t: &mut Checks) {
    blk(ctx, t);
    death(ctx, t);
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
        "blk/pci-64-bit-bar-by-the-root-task",
        pci_by_the_root_task(&out.serial),
    );
    let image = std::fs::read(qemu::disk_image(ctx, "blk")).map_err(|e| e.to_string());
    t.check(
        "blk/disk/writes-reached-the-image",
        image.and_then(|bytes| writes_in_image(&bytes)),
    );
    let trace = match out.trace_file.as_ref().map(std::fs::read_to_string) {
        Some(Ok(text)) => Trace::parse(&text),
        other => {
            t.check("blk/smmu-trace", Err(format!("no QEMU trace: {other:?}")));
            return;
        }
    };
    let pool = pool(&out.serial, "blk-driver");
    t.check(
        "blk/trace/every-dma-translated-in-the-drivers-domain",
        translated_in_domain(&trace, pool),
    );
    t.check("blk/trace/nothing-bypassed", nothing_bypassed(&trace));
    let test = |n: u32, what: &str| {
        hex_field_of(&out.serial, &format!("blk-driver: test {n}: read"), what)
    };
    let buffer = test(0, "into IOVA ");
    let list = test(1, "PRP list at IOVA ");
    t.check(
        "blk/trace/unmapped-buffer-faults-after-invalidation",
        buffer
            .ok_or("the driver never printed test 0's IOVA".to_string())
            .and_then(|iova| faulted_after_unmap(&trace, iova, true)),
    );
    t.check(
        "blk/trace/unmapped-prp-list-faults-after-invalidation",
        list.ok_or("the driver never printed test 1's PRP list IOVA".to_string())
            .and_then(|iova| faulted_after_unmap(&trace, iova, false)),
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
        "blk-death/driver-died-and-was-retired",
        retired(&out.serial),
    );
    let trace = match out.trace_file.as_ref().map(std::fs::read_to_string) {
        Some(Ok(text)) => Trace::parse(&text),
        other => {
            t.check(
                "blk-death/smmu-trace",
                Err(format!("no QEMU trace: {other:?}")),
            );
            return;
        }
    };
    let line = "doomed-driver: dying by a fault";
    let compare = hex_field_of(&out.serial, line, "from IOVA ");
    let cq = hex_field_of(&out.serial, "doomed-driver: I/O queue pair", "CQ at IOVA ");
    t.check(
        "blk-death/trace/dma-after-death-aborted",
        match (compare, cq) {
            (Some(compare), Some(cq)) => aborted_after_death(&trace, &[compare, cq]),
            _ => Err("the driver never printed its compare buffer's or CQ's IOVA".into()),
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

/// The root task placed the NVMe's 64-bit BAR0 with bus mastering off, and
/// turned bus mastering on only after the server had the SMMU enabled,
/// before the driver ran.
fn pci_by_the_root_task(serial: &str) -> Result<(), String> {
    let at = |line: &str| {
        serial
            .find(line)
            .ok_or_else(|| format!("the run never said {line:?}"))
    };
    let placed = at("root: PCI 00:03.0 (1b36:0010) for blk-driver: BAR0 at 0x10000000 (16 KiB), memory decoding on, bus mastering off")?;
    let ready = at("root: iommu-server ready: SMMU enabled, starting the others")?;
    let mastering = at("root: bus mastering on for 1 PCI function(s)")?;
    let driver = at("check blk-driver/pci-probe: ok")?;
    if placed < ready && ready < mastering && mastering < driver {
        Ok(())
    } else {
        Err(format!(
            "out of order: BAR placed at {placed}, server ready at {ready}, bus mastering at {mastering}, driver's probe at {driver}"
        ))
    }
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

/// The driver's DMA pool, as it printed it: `[paddr, paddr + size)`.
fn pool(serial: &str, role: &str) -> Option<std::ops::Range<u64>> {
    let prefix = format!("{role}: DMA pool at physical ");
    let paddr = hex_field_of(serial, &prefix, "physical ")?;
    let size = hex_field_of(serial, &prefix, "size ")?;
    Some(paddr..paddr + size)
}

/// The hex number after `key` on the first line containing `prefix`.
fn hex_field_of(serial: &str, prefix: &str, key: &str) -> Option<u64> {
    serial
        .lines()
        .find(|l| l.contains(prefix))
        .and_then(|l| hex_field(l, key))
}

/// `key0x..` or `key..` (hex) in a line.
fn hex_field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let digits = line[start..].trim_start_matches("0x");
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(digits.len());
    u64::from_str_radix(&digits[..end], 16).ok()
}

/// The events of QEMU's SMMU trace these checks use, in trace order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Translated {
        sid: u64,
        iova: u64,
        paddr: u64,
    },
    /// The stream's STE aborts (or the SMMU is disabled): no walk.
    Aborted {
        sid: u64,
        iova: u64,
    },
    /// A fault event written to the event queue, at the address QEMU was
    /// walking.
    Recorded {
        kind: String,
        sid: u64,
        iova: Option<u64>,
    },
    /// A TLB invalidation of `[addr, addr + pages * 4 KiB)`, or of
    /// everything (`addr` None).
    Invalidated {
        addr: Option<u64>,
        pages: u64,
    },
    Bypassed {
        sid: u64,
    },
    /// CMD_CFGI_STE for a StreamID.
    ConfigInvalidated {
        sid: u64,
    },
}

struct Trace {
    events: Vec<Event>,
}

impl Trace {
    fn parse(text: &str) -> Trace {
        let mut events = Vec::new();
        let mut walking: Option<u64> = None;
        for line in text.lines() {
            if line.contains("smmu_iotlb_lookup_") {
                walking = hex_field(line, "addr=");
            } else if line.contains("smmu_ptw_level") {
                walking = hex_field(line, "iova=");
            }
            let event = if line.contains("smmuv3_translate_success") {
                match (
                    hex_field(line, "sid="),
                    hex_field(line, "iova="),
                    hex_field(line, "translated="),
                ) {
                    (Some(sid), Some(iova), Some(paddr)) => {
                        Some(Event::Translated { sid, iova, paddr })
                    }
                    _ => None,
                }
            } else if line.contains("smmuv3_translate_abort") {
                match (hex_field(line, "sid="), hex_field(line, "iova:")) {
                    (Some(sid), Some(iova)) => Some(Event::Aborted { sid, iova }),
                    _ => None,
                }
            } else if line.contains("smmuv3_record_event") {
                let after = line.split("smmuv3_record_event").nth(1).unwrap_or("");
                let kind = after.split_whitespace().next().unwrap_or("").to_string();
                hex_field(line, "sid=").map(|sid| Event::Recorded {
                    kind,
                    sid,
                    iova: walking,
                })
            } else if line.contains("smmuv3_s1_range_inval") {
                Some(Event::Invalidated {
                    addr: hex_field(line, "addr="),
                    pages: hex_field(line, "num_pages=").unwrap_or(1),
                })
            } else if line.contains("smmu_iotlb_inv_iova") {
                Some(Event::Invalidated {
                    addr: hex_field(line, "addr="),
                    pages: 1,
                })
            } else if line.contains("smmu_iotlb_inv_asid") || line.contains("smmu_iotlb_inv_all") {
                Some(Event::Invalidated {
                    addr: None,
                    pages: 0,
                })
            } else if line.contains("smmuv3_translate_bypass")
                || line.contains("smmuv3_translate_disable")
            {
                hex_field(line, "sid=").map(|sid| Event::Bypassed { sid })
            } else if line.contains("smmuv3_cmdq_cfgi_ste ") {
                hex_field(line, "streamid= ").map(|sid| Event::ConfigInvalidated { sid })
            } else {
                None
            };
            events.extend(event);
        }
        Trace { events }
    }
}

fn on_page(iova: u64, page: u64) -> bool {
    iova >> 12 == page >> 12
}

/// Every translation the SMMU made was for the NVMe's stream, at an I/O
/// address of the driver's window, to a page of the driver's DMA pool; and
/// there were many (queues and data).
fn translated_in_domain(trace: &Trace, pool: Option<std::ops::Range<u64>>) -> Result<(), String> {
    let pool = pool.ok_or("the driver never printed its DMA pool")?;
    let mut count = 0;
    for e in &trace.events {
        match e {
            Event::Translated { sid, iova, paddr } => {
                if *sid != STREAM || !IOVA_WINDOW.contains(iova) || !pool.contains(paddr) {
                    return Err(format!(
                        "{e:?}: want StreamID {STREAM:#x}, an IOVA in {IOVA_WINDOW:#x?}, a physical address in the driver's pool {pool:#x?}"
                    ));
                }
                count += 1;
            }
            Event::Aborted { sid, .. } | Event::Recorded { sid, .. } if *sid != STREAM => {
                return Err(format!("an access under another StreamID: {e:?}"));
            }
            _ => {}
        }
    }
    if count < 20 {
        return Err(format!(
            "only {count} translations for StreamID {STREAM:#x}"
        ));
    }
    println!("   (blk: {count} translations, all StreamID {STREAM:#x} into the driver's pool {pool:#x?})");
    Ok(())
}

fn nothing_bypassed(trace: &Trace) -> Result<(), String> {
    match trace
        .events
        .iter()
        .find(|e| matches!(e, Event::Bypassed { .. }))
    {
        None => Ok(()),
        Some(e) => Err(format!("{e:?}")),
    }
}

/// The page of `iova` was invalidated (the unmap), then the SMMU recorded
/// translation faults on it for the NVMe (a `write` by the device for a
/// read's buffer, a read of a PRP list), and translated nothing on that
/// page in between or while the faults went on.
fn faulted_after_unmap(trace: &Trace, iova: u64, write: bool) -> Result<(), String> {
    let faults: Vec<usize> = trace
        .events
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
    let invalidated = trace.events[..first].iter().rposition(|e| match e {
        Event::Invalidated {
            addr: Some(a),
            pages,
        } => iova >> 12 >= a >> 12 && iova >> 12 < (a >> 12) + pages.max(&1),
        Event::Invalidated { addr: None, .. } => true,
        _ => false,
    });
    let Some(invalidated) = invalidated else {
        return Err(format!(
            "no TLB invalidation of {iova:#x} before its faults"
        ));
    };
    if let Some(leak) = trace.events[invalidated..=last].iter().find(|e| {
        matches!(e, Event::Translated { sid, iova: at, .. } if *sid == STREAM && on_page(*at, iova))
    }) {
        return Err(format!("{iova:#x} was translated after its unmap: {leak:?}"));
    }
    println!(
        "   (blk: {} translation fault(s) at {iova:#x} ({}), after its invalidation, nothing translated there meanwhile)",
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
/// data, the completion queue): what the device did for the outstanding
/// commands reached no memory.
fn aborted_after_death(trace: &Trace, pages: &[u64]) -> Result<(), String> {
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
    println!("   (blk-death: {before} translations before the retirement, none after)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boots both systems and runs these checks alone (not part of
    /// `cargo test`): `cargo test -p xtask -- --ignored blk_systems`.
    #[test]
    #[ignore = "builds and boots two QEMU images (about 20 s)"]
    fn blk_systems() {
        let ctx = crate::Ctx::new().unwrap();
        let mut t = Checks::default();
        run(&ctx, &mut t);
        assert_eq!(t.tally.failed, 0, "{} passed", t.tally.passed);
    }

    const SAMPLE: &str = "\
1@1:smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x100000 translated=0x7ff04000 perm=0x3
1@2:smmuv3_s1_range_inval vmid=0 asid=1 addr=0x101000 tg=0 num_pages=0x1 ttl=0 leaf=0
1@3:smmu_ptw_level level=3 iova=0x101000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=257 => pte=0x0
1@4:smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x18
1@5:smmuv3_cmdq_cfgi_ste streamid= 0x18
1@6:smmuv3_translate_abort smmuv3-iommu-memory-region-24-2 sid=0x18 abort on iova:0x100fd010 is_write=0
";

    #[test]
    fn parses_the_nvme_trace() {
        let t = Trace::parse(SAMPLE);
        assert_eq!(
            t.events,
            vec![
                Event::Translated {
                    sid: 0x18,
                    iova: 0x10_0000,
                    paddr: 0x7ff0_4000
                },
                Event::Invalidated {
                    addr: Some(0x10_1000),
                    pages: 1
                },
                Event::Recorded {
                    kind: "SMMU_EVT_F_TRANSLATION".into(),
                    sid: 0x18,
                    iova: Some(0x10_1000)
                },
                Event::ConfigInvalidated { sid: 0x18 },
                Event::Aborted {
                    sid: 0x18,
                    iova: 0x100f_d010
                },
            ]
        );
        assert_eq!(faulted_after_unmap(&t, 0x10_1000, true), Ok(()));
        assert_eq!(faults_only_at(&t, &[0x10_1000]), Ok(()));
        assert!(faults_only_at(&t, &[0x10_2000]).is_err());
        assert_eq!(aborted_after_death(&t, &[0x100f_d000]), Ok(()));
        assert!(aborted_after_death(&t, &[0x10_1000]).is_err());
        let pool = Some(0x7ff0_0000..0x7ff3_0000);
        assert!(translated_in_domain(&t, pool)
            .unwrap_err()
            .contains("only 1"));
    }

    #[test]
    fn a_translation_after_the_unmap_fails() {
        let leaked = SAMPLE.replace(
            "1@4:",
            "1@3b:smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x101000 translated=0x7ff07000 perm=0x3\n1@4:",
        );
        let t = Trace::parse(&leaked);
        assert!(faulted_after_unmap(&t, 0x10_1000, true)
            .unwrap_err()
            .contains("translated after its unmap"));
    }

    #[test]
    fn a_foreign_pool_or_stream_fails() {
        let t = Trace::parse(SAMPLE);
        let err = translated_in_domain(&t, Some(0x5000_0000..0x5003_0000)).unwrap_err();
        assert!(err.contains("driver's pool"), "{err}");
        let other = Trace::parse(&SAMPLE.replace("sid=0x18 abort", "sid=0x8 abort"));
        let err = translated_in_domain(&other, Some(0x7ff0_0000..0x7ff3_0000)).unwrap_err();
        assert!(err.contains("another StreamID"), "{err}");
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
