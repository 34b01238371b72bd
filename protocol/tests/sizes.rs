//! The size table in the crate docs, checked: for every message the smallest
//! and largest encoding over the whole range of its field types.
use heapless::Vec;
use iommu_protocol::*;

fn len<T: serde::Serialize>(v: &T) -> usize {
    let mut buf = [0u8; MSG_MAX_BYTES];
    encode(v, &mut buf).expect("every message fits one seL4 message")
}

const D0: DomainId = DomainId(0);
const DM: DomainId = DomainId(u32::MAX);
const M0: MemoryHandle = MemoryHandle(0);
const MM: MemoryHandle = MemoryHandle(u32::MAX);
const S0: StreamId = StreamId(0);
const SM: StreamId = StreamId(u32::MAX);

fn entry_max() -> MapEntry {
    MapEntry {
        iova_pfn: u64::MAX,
        memory: MM,
        offset_pfn: u32::MAX,
        pages: u32::MAX,
        perms: Perms(u8::MAX),
    }
}

fn record_max() -> FaultRecord {
    FaultRecord {
        stream: SM,
        ssid: Ssid(u32::MAX),
        iova: u64::MAX,
        kind: FaultKind::Other,
        write: true,
        count: u32::MAX,
    }
}

/// (name, smallest, largest) in bytes for each request, as in the crate docs.
fn request_cases() -> [(&'static str, Request, Request, usize, usize); 15] {
    let full: Vec<MapEntry, MAX_BATCH> = (0..MAX_BATCH).map(|_| entry_max()).collect();
    [
        (
            "Hello",
            Request::Hello {
                min_version: 0,
                max_version: 0,
            },
            Request::Hello {
                min_version: u16::MAX,
                max_version: u16::MAX,
            },
            3,
            7,
        ),
        (
            "AllocDomain",
            Request::AllocDomain,
            Request::AllocDomain,
            1,
            1,
        ),
        (
            "FreeDomain",
            Request::FreeDomain { domain: D0 },
            Request::FreeDomain { domain: DM },
            2,
            6,
        ),
        (
            "Attach",
            Request::Attach {
                stream: S0,
                ssid: Ssid(0),
                domain: D0,
            },
            Request::Attach {
                stream: SM,
                ssid: Ssid(u32::MAX),
                domain: DM,
            },
            4,
            16,
        ),
        (
            "Detach",
            Request::Detach {
                stream: S0,
                ssid: Ssid(0),
            },
            Request::Detach {
                stream: SM,
                ssid: Ssid(u32::MAX),
            },
            3,
            11,
        ),
        (
            "Map",
            Request::Map {
                domain: D0,
                iova_pfn: 0,
                memory: M0,
                offset_pfn: 0,
                pages: 0,
                perms: Perms(0),
            },
            Request::Map {
                domain: DM,
                iova_pfn: u64::MAX,
                memory: MM,
                offset_pfn: u32::MAX,
                pages: u32::MAX,
                perms: Perms(u8::MAX),
            },
            7,
            32,
        ),
        (
            "MapBatch",
            Request::MapBatch {
                domain: D0,
                entries: Vec::new(),
            },
            Request::MapBatch {
                domain: DM,
                entries: full,
            },
            3,
            839,
        ),
        (
            "Unmap",
            Request::Unmap {
                domain: D0,
                iova_pfn: 0,
                pages: 0,
            },
            Request::Unmap {
                domain: DM,
                iova_pfn: u64::MAX,
                pages: u32::MAX,
            },
            4,
            21,
        ),
        (
            "BindSva",
            Request::BindSva {
                stream: S0,
                ssid: Ssid(0),
            },
            Request::BindSva {
                stream: SM,
                ssid: Ssid(u32::MAX),
            },
            3,
            11,
        ),
        (
            "UnbindSva",
            Request::UnbindSva {
                stream: S0,
                ssid: Ssid(0),
            },
            Request::UnbindSva {
                stream: SM,
                ssid: Ssid(u32::MAX),
            },
            3,
            11,
        ),
        (
            "Faults",
            Request::Faults { max: 0 },
            Request::Faults { max: u8::MAX },
            2,
            2,
        ),
        ("Stats", Request::Stats, Request::Stats, 1, 1),
        (
            "RegisterMemory",
            Request::RegisterMemory { extend: None },
            Request::RegisterMemory { extend: Some(MM) },
            2,
            7,
        ),
        (
            "UnregisterMemory",
            Request::UnregisterMemory { memory: M0 },
            Request::UnregisterMemory { memory: MM },
            2,
            6,
        ),
        (
            "Walk",
            Request::Walk {
                domain: D0,
                iova_pfn: 0,
            },
            Request::Walk {
                domain: DM,
                iova_pfn: u64::MAX,
            },
            3,
            16,
        ),
    ]
}

#[test]
fn request_sizes_match_the_documented_table() {
    for (name, small, large, lo, hi) in request_cases() {
        assert_eq!(len(&small), lo, "{name} smallest");
        assert_eq!(len(&large), hi, "{name} largest");
    }
}

#[test]
fn hot_requests_always_take_the_fastpath() {
    for (name, _, large, _, hi) in request_cases() {
        let fast = fastpath_eligible(hi, if large.carries_caps() { 1 } else { 0 });
        let expected = !matches!(name, "MapBatch" | "RegisterMemory");
        assert_eq!(fast, expected, "{name}");
    }
    // Spelled out: the worst case of the two hot requests fits 4 registers.
    let map = Request::Map {
        domain: DM,
        iova_pfn: u64::MAX,
        memory: MM,
        offset_pfn: u32::MAX,
        pages: u32::MAX,
        perms: Perms(u8::MAX),
    };
    assert!(len(&map) <= FASTPATH_BYTES);
    let unmap = Request::Unmap {
        domain: DM,
        iova_pfn: u64::MAX,
        pages: u32::MAX,
    };
    assert!(len(&unmap) <= FASTPATH_BYTES);
    // A one-entry batch of small values also does.
    let mut one = Vec::new();
    one.push(MapEntry {
        iova_pfn: 0x1000,
        memory: M0,
        offset_pfn: 0,
        pages: 1,
        perms: Perms::RW,
    })
    .unwrap();
    assert!(fastpath_eligible(
        len(&Request::MapBatch {
            domain: D0,
            entries: one
        }),
        0
    ));
}

#[test]
fn reply_sizes_match_the_documented_table() {
    let info_min = ServerInfo {
        version: 0,
        max_batch: 0,
        page_sizes: 0,
        ias_bits: 0,
        ssid_bits: 0,
        max_faults: 0,
        sva: false,
    };
    let info_max = ServerInfo {
        version: u16::MAX,
        max_batch: u16::MAX,
        page_sizes: u64::MAX,
        ias_bits: u8::MAX,
        ssid_bits: u8::MAX,
        max_faults: u8::MAX,
        sva: true,
    };
    let stats_max = ClientStats {
        domains: u32::MAX,
        max_domains: u32::MAX,
        mapped_bytes: u64::MAX,
        max_mapped_bytes: u64::MAX,
        mappings: u32::MAX,
        max_mappings: u32::MAX,
        pt_pages: u32::MAX,
        max_pt_pages: u32::MAX,
        asids: u32::MAX,
        max_asids: u32::MAX,
        memory_regions: u32::MAX,
        max_memory_regions: u32::MAX,
        memory_frames: u32::MAX,
        max_memory_frames: u32::MAX,
        faults_pending: u32::MAX,
        faults_dropped: u32::MAX,
    };
    let full: Vec<FaultRecord, MAX_FAULTS_PER_REPLY> =
        (0..MAX_FAULTS_PER_REPLY).map(|_| record_max()).collect();
    let cases: [(&str, Reply, Reply, usize, usize); 8] = [
        ("Ok", Reply::Ok, Reply::Ok, 1, 1),
        (
            "Hello",
            Reply::Hello(info_min),
            Reply::Hello(info_max),
            8,
            21,
        ),
        ("Domain", Reply::Domain(D0), Reply::Domain(DM), 2, 6),
        (
            "Memory",
            Reply::Memory {
                memory: M0,
                pages: 0,
            },
            Reply::Memory {
                memory: MM,
                pages: u64::MAX,
            },
            3,
            16,
        ),
        (
            "Faults",
            Reply::Faults(FaultBatch {
                records: Vec::new(),
                dropped: 0,
                more: false,
            }),
            Reply::Faults(FaultBatch {
                records: full,
                dropped: u32::MAX,
                more: true,
            }),
            4,
            872,
        ),
        (
            "Stats",
            Reply::Stats(ClientStats::default()),
            Reply::Stats(stats_max),
            17,
            91,
        ),
        (
            "Err",
            Reply::Err(ErrorCode::NotPermitted),
            Reply::Err(ErrorCode::NoAsid),
            2,
            2,
        ),
        (
            "Walk",
            Reply::Walk(WalkInfo {
                level: 0,
                descriptor: 0,
                perms: Perms(0),
            }),
            Reply::Walk(WalkInfo {
                level: u8::MAX,
                descriptor: u64::MAX,
                perms: Perms(u8::MAX),
            }),
            4,
            13,
        ),
    ];
    for (name, small, large, lo, hi) in cases {
        assert_eq!(len(&small), lo, "{name} smallest");
        assert_eq!(len(&large), hi, "{name} largest");
        assert!(hi <= MSG_MAX_BYTES);
    }
}
