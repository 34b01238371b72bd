//! QEMU's SMMU trace (`-trace smmuv3_* -trace smmu_*`, QEMU 7.2's event
//! formats), parsed once for every image test that judges it: what the
//! SMMU translated, aborted, recorded, walked and invalidated, and the
//! commands it consumed, in trace order.

use super::Checks;
use crate::qemu::BootOutcome;

const PAGE: u64 = 4096;

/// The events of QEMU's SMMU trace the checks use, in trace order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    /// A translation (`smmuv3_translate_success`): `perm` is the page's
    /// permission as the SMMU found it (QEMU's IOMMU_RO 0x1, IOMMU_RW 0x3),
    /// `asid` the ASID of the IOTLB lookup just before it.
    Translated {
        sid: u64,
        iova: u64,
        paddr: u64,
        perm: u64,
        asid: Option<u64>,
    },
    /// The stream's STE aborts (or the SMMU is disabled and GBPA aborts):
    /// no walk.
    Aborted { sid: u64, iova: u64 },
    /// A fault event written to the event queue, at the address QEMU was
    /// walking (QEMU logs the walk, not the address, with it): its last
    /// IOTLB lookup's or page-table level's.
    Recorded {
        kind: String,
        sid: u64,
        iova: Option<u64>,
    },
    /// The IOTLB filled after a walk (`smmu_iotlb_insert`).
    Filled { asid: u64, addr: u64 },
    /// A range invalidation (`smmuv3_s1_range_inval`) of
    /// `[addr, addr + bytes)`, made for the command `command` (the last
    /// `smmuv3_cmdq_opcode`): `asid` None for all ASIDs (TLBI_NH_VAA).
    RangeInvalidated {
        asid: Option<u64>,
        addr: u64,
        bytes: u64,
        command: String,
    },
    /// An IOTLB invalidation by address (`smmu_iotlb_inv_iova`).
    IovaInvalidated { addr: Option<u64> },
    /// The IOTLB emptied of one ASID's entries, or of everything (`asid`
    /// None).
    Invalidated { asid: Option<u64> },
    /// A command the SMMU consumed (`SMMU_CMD_SYNC`, ...).
    Command { name: String },
    /// DMA that passed untranslated: the stream's STE in bypass
    /// (`smmuv3_translate_bypass`), or the SMMU disabled (`disabled`,
    /// `smmuv3_translate_disable`).
    Bypassed { sid: u64, disabled: bool },
    /// CMD_CFGI_STE for a StreamID.
    ConfigInvalidated { sid: u64 },
    /// A stage-1 walk that ended at a block descriptor.
    BlockWalk {
        level: u64,
        iova: u64,
        block: u64,
        size_mib: u64,
    },
}

pub(super) struct Trace {
    pub(super) events: Vec<Event>,
}

impl Trace {
    /// QEMU's SMMU trace of the run, parsed; a failed check
    /// `{system}/smmu-trace` if there is none.
    pub(super) fn of_run(out: &BootOutcome, t: &mut Checks, system: &str) -> Option<Trace> {
        match out.trace_file.as_ref().map(std::fs::read_to_string) {
            Some(Ok(text)) => Some(Trace::parse(&text)),
            other => {
                t.check(
                    &format!("{system}/smmu-trace"),
                    Err(format!("no QEMU trace: {other:?}")),
                );
                None
            }
        }
    }

    /// Lines look like `[pid@time:]event_name args...`; the lines of other
    /// events, and lines missing a field, give no event.
    pub(super) fn parse(text: &str) -> Trace {
        let mut events = Vec::new();
        // The address of the translation QEMU is working on, and the ASID
        // it looked the IOTLB up by.
        let mut walking: Option<u64> = None;
        let mut looked_up: Option<u64> = None;
        // The last command consumed.
        let mut command = String::new();
        for line in text.lines() {
            if line.contains("smmu_iotlb_lookup_") {
                walking = hex_field(line, "addr=");
                looked_up = dec_field(line, "asid=");
            } else if line.contains("smmu_ptw_level") {
                walking = hex_field(line, "iova=");
            }
            let event = if line.contains("smmuv3_translate_success") {
                match (
                    hex_field(line, "sid="),
                    hex_field(line, "iova="),
                    hex_field(line, "translated="),
                    hex_field(line, "perm="),
                ) {
                    (Some(sid), Some(iova), Some(paddr), Some(perm)) => Some(Event::Translated {
                        sid,
                        iova,
                        paddr,
                        perm,
                        asid: looked_up.take(),
                    }),
                    _ => None,
                }
            } else if line.contains("smmuv3_translate_abort") {
                match (hex_field(line, "sid="), hex_field(line, "iova:")) {
                    (Some(sid), Some(iova)) => Some(Event::Aborted { sid, iova }),
                    _ => None,
                }
            } else if line.contains("smmuv3_record_event") {
                let kind = word_after(line, "smmuv3_record_event")
                    .unwrap_or("")
                    .to_string();
                hex_field(line, "sid=").map(|sid| Event::Recorded {
                    kind,
                    sid,
                    iova: walking,
                })
            } else if line.contains("smmu_iotlb_insert") {
                match (dec_field(line, "asid="), hex_field(line, "addr=")) {
                    (Some(asid), Some(addr)) => Some(Event::Filled { asid, addr }),
                    _ => None,
                }
            } else if line.contains("smmuv3_s1_range_inval") {
                // tg 0: one 4 KiB page; else the granule 2^(tg * 2 + 10).
                let tg = dec_field(line, "tg=").unwrap_or(0);
                let granule = if tg == 0 { 12 } else { tg * 2 + 10 };
                match (hex_field(line, "addr="), hex_field(line, "num_pages=")) {
                    (Some(addr), Some(pages)) => Some(Event::RangeInvalidated {
                        asid: dec_field(line, "asid="),
                        addr,
                        bytes: pages << granule,
                        command: command.clone(),
                    }),
                    _ => None,
                }
            } else if line.contains("smmu_iotlb_inv_iova") {
                Some(Event::IovaInvalidated {
                    addr: hex_field(line, "addr="),
                })
            } else if line.contains("smmu_iotlb_inv_asid") {
                Some(Event::Invalidated {
                    asid: dec_field(line, "asid="),
                })
            } else if line.contains("smmu_iotlb_inv_all") {
                Some(Event::Invalidated { asid: None })
            } else if line.contains("smmuv3_cmdq_opcode") {
                command = line.rsplit(' ').next().unwrap_or("").trim().to_string();
                Some(Event::Command {
                    name: command.clone(),
                })
            } else if line.contains("smmuv3_translate_bypass")
                || line.contains("smmuv3_translate_disable")
            {
                let disabled = line.contains("smmuv3_translate_disable");
                hex_field(line, "sid=").map(|sid| Event::Bypassed { sid, disabled })
            } else if line.contains("smmuv3_cmdq_cfgi_ste ") {
                hex_field(line, "streamid= ").map(|sid| Event::ConfigInvalidated { sid })
            } else if line.contains("smmu_ptw_block_pte") {
                let number = |key| word_after(line, key).and_then(|n| n.parse().ok());
                match (
                    number("level="),
                    hex_field(line, "iova="),
                    hex_field(line, "block address = "),
                    number("block size = "),
                ) {
                    (Some(level), Some(iova), Some(block), Some(size_mib)) => {
                        Some(Event::BlockWalk {
                            level,
                            iova,
                            block,
                            size_mib,
                        })
                    }
                    _ => None,
                }
            } else {
                None
            };
            events.extend(event);
        }
        Trace { events }
    }

    /// The index of the first event from `from` on for which `f` holds.
    pub(super) fn position(&self, from: usize, f: impl Fn(&Event) -> bool) -> Option<usize> {
        self.events[from..].iter().position(f).map(|i| i + from)
    }
}

/// `key0x..` or `key..` (hex) in a line: `key=0x..` or `key:0x..` in a
/// trace line, `at physical 0x..` in the serial output.
pub(super) fn hex_field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let digits = line[start..].trim_start_matches("0x");
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(digits.len());
    u64::from_str_radix(&digits[..end], 16).ok()
}

/// `key..` (decimal, QEMU's `%d`) in a line; None for a negative number.
pub(super) fn dec_field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let digits = &line[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The word after the first `key` in a line.
fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(key).nth(1)?.split_whitespace().next()
}

/// Whether `iova` lies on the 4 KiB page of `page`.
pub(super) fn on_page(iova: u64, page: u64) -> bool {
    iova >> 12 == page >> 12
}

/// Whether `[addr, addr + bytes)` holds the page of `iova`.
pub(super) fn covers(addr: u64, bytes: u64, iova: u64) -> bool {
    let page = iova & !(PAGE - 1);
    page >= addr && page < addr.saturating_add(bytes)
}

/// No DMA ever passed untranslated: the SMMU was enabled before any device
/// ran, and no stream was in bypass.
pub(super) fn nothing_bypassed(trace: &Trace) -> Result<(), String> {
    match trace
        .events
        .iter()
        .find(|e| matches!(e, Event::Bypassed { .. }))
    {
        None => Ok(()),
        Some(e) => Err(format!("{e:?}")),
    }
}

/// Traces of the systems' runs, for the tests here and the checks' own.
#[cfg(test)]
pub(super) mod samples {
    /// Two `edu` drivers (dma-demo): translations, an abort, a fault
    /// after a walk, a range invalidation, a bypass and a 2 MiB block.
    pub const EDU: &str = "\
123@1.000:smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x100000 translated=0x4a001000 perm=0x1
123@1.100:smmuv3_translate_abort smmuv3-iommu-memory-region-8-1 sid=0x8 abort on iova:0xf000000 is_write=1
123@1.101:smmu_iotlb_lookup_miss IOTLB cache MISS asid=2 addr=0xf000000 hit=0 miss=5 hit rate=0
123@1.102:smmu_ptw_invalid_pte stage=1 level=2 base@=0x7f814000 pte@=0x7f8143c0 offset=120 pte=0x0
123@1.103:smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x8
123@1.2:smmuv3_s1_range_inval vmid=0 asid=1 addr=0x300000 tg=1 num_pages=0x1 ttl=3 leaf=1
123@1.3:smmuv3_translate_bypass smmuv3-iommu-memory-region-16-2 sid=0x10 bypass iova:0x1000 is_write=0
123@1.4:smmu_ptw_block_pte stage=1 level=2 base@=0x7f814000 pte@=0x7f814018 pte=0x60000040400f45 iova=0x7fe000 block address = 0x40400000 block size = 2 MiB
123@1.5:smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x7fe800 translated=0x405fe800 perm=0x3
";

    /// The NVMe (blk): an IOTLB fill and a translation, a range
    /// invalidation for TLBI_NH_VA, a fault after a walk, the stream's STE
    /// invalidated, an abort.
    pub const NVME: &str = "\
1@1:smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x100000 hit=0 miss=1 hit rate=0
1@1:smmu_iotlb_insert IOTLB ++ asid=1 addr=0x100000 tg=1 level=3
1@1:smmuv3_translate_success smmuv3-iommu-memory-region-24-2 sid=0x18 iova=0x100000 translated=0x7ff04000 perm=0x3
1@2:smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA
1@2:smmuv3_s1_range_inval vmid=0 asid=1 addr=0x101000 tg=0 num_pages=0x1 ttl=0 leaf=0
1@3:smmu_ptw_level level=3 iova=0x101000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=257 => pte=0x0
1@4:smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x18
1@5:smmuv3_cmdq_cfgi_ste streamid= 0x18
1@6:smmuv3_translate_abort smmuv3-iommu-memory-region-24-2 sid=0x18 abort on iova:0x100fd010 is_write=0
";
}

#[cfg(test)]
mod tests {
    use super::samples::{EDU, NVME};
    use super::*;

    #[test]
    fn parses_qemu_72_trace_lines() {
        let t = Trace::parse(EDU);
        assert_eq!(
            t.events,
            vec![
                Event::Translated {
                    sid: 0x8,
                    iova: 0x10_0000,
                    paddr: 0x4a00_1000,
                    perm: 0x1,
                    asid: None,
                },
                Event::Aborted {
                    sid: 0x8,
                    iova: 0xf00_0000
                },
                Event::Recorded {
                    kind: "SMMU_EVT_F_TRANSLATION".into(),
                    sid: 0x8,
                    iova: Some(0xf00_0000)
                },
                Event::RangeInvalidated {
                    asid: Some(1),
                    addr: 0x30_0000,
                    bytes: 0x1000,
                    command: String::new(),
                },
                Event::Bypassed {
                    sid: 0x10,
                    disabled: false
                },
                Event::BlockWalk {
                    level: 2,
                    iova: 0x7f_e000,
                    block: 0x4040_0000,
                    size_mib: 2
                },
                Event::Translated {
                    sid: 0x8,
                    iova: 0x7f_e800,
                    paddr: 0x405f_e800,
                    perm: 0x3,
                    asid: Some(2),
                },
            ]
        );
        assert!(nothing_bypassed(&t).is_err());
    }

    #[test]
    fn parses_the_nvme_trace() {
        let t = Trace::parse(NVME);
        assert_eq!(
            t.events,
            vec![
                Event::Filled {
                    asid: 1,
                    addr: 0x10_0000
                },
                Event::Translated {
                    sid: 0x18,
                    iova: 0x10_0000,
                    paddr: 0x7ff0_4000,
                    perm: 0x3,
                    asid: Some(1),
                },
                Event::Command {
                    name: "SMMU_CMD_TLBI_NH_VA".into()
                },
                Event::RangeInvalidated {
                    asid: Some(1),
                    addr: 0x10_1000,
                    bytes: 0x1000,
                    command: "SMMU_CMD_TLBI_NH_VA".into(),
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
        assert_eq!(nothing_bypassed(&t), Ok(()));
    }

    #[test]
    fn range_invalidations_in_larger_granules_and_for_all_asids() {
        let t = Trace::parse(
            "smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VAA\n\
             smmuv3_s1_range_inval vmid=0 asid=-1 addr=0x100000 tg=1 num_pages=0x4 ttl=3 leaf=1\n\
             smmuv3_s1_range_inval vmid=0 asid=12 addr=0x200000 tg=2 num_pages=0x2 ttl=3 leaf=1\n",
        );
        assert_eq!(
            t.events[1..],
            [
                Event::RangeInvalidated {
                    asid: None,
                    addr: 0x10_0000,
                    bytes: 0x4000,
                    command: "SMMU_CMD_TLBI_NH_VAA".into(),
                },
                Event::RangeInvalidated {
                    asid: Some(12),
                    addr: 0x20_0000,
                    bytes: 0x8000,
                    command: "SMMU_CMD_TLBI_NH_VAA".into(),
                },
            ]
        );
        assert!(covers(0x10_0000, 0x4000, 0x10_3fff));
        assert!(!covers(0x10_0000, 0x4000, 0x10_4000));
    }

    #[test]
    fn invalidations_bypasses_and_a_disabled_smmu() {
        let t = Trace::parse(
            "smmu_iotlb_inv_iova IOTLB invalidate asid=1 addr=0x300000\n\
             smmu_iotlb_inv_asid IOTLB invalidate asid=3\n\
             smmu_iotlb_inv_all IOTLB invalidate all\n\
             smmuv3_translate_disable smmuv3-iommu-memory-region-8-1 sid=0x8 bypass (smmu disabled) iova:0x1000 is_write=0\n",
        );
        assert_eq!(
            t.events,
            [
                Event::IovaInvalidated {
                    addr: Some(0x30_0000)
                },
                Event::Invalidated { asid: Some(3) },
                Event::Invalidated { asid: None },
                Event::Bypassed {
                    sid: 0x8,
                    disabled: true
                },
            ]
        );
        assert!(nothing_bypassed(&t).is_err());
    }

    #[test]
    fn a_fault_is_placed_at_the_last_walk() {
        // The lookup's address, then the page-table level's.
        let t = Trace::parse(
            "smmu_iotlb_lookup_miss IOTLB cache MISS asid=1 addr=0x101000 hit=0 miss=1 hit rate=0\n\
             smmuv3_record_event SMMU_EVT_F_PERMISSION sid=0x18\n\
             smmu_ptw_level level=3 iova=0x102000 subpage_sz=0x1000 baseaddr=0x4030f000 offset=258 => pte=0x0\n\
             smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=0x18\n\
             smmuv3_record_event SMMU_EVT_F_TRANSLATION sid=\n",
        );
        assert_eq!(
            t.events,
            [
                Event::Recorded {
                    kind: "SMMU_EVT_F_PERMISSION".into(),
                    sid: 0x18,
                    iova: Some(0x10_1000)
                },
                Event::Recorded {
                    kind: "SMMU_EVT_F_TRANSLATION".into(),
                    sid: 0x18,
                    iova: Some(0x10_2000)
                },
            ]
        );
    }
}
