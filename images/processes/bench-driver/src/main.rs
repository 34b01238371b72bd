//! Benchmark driver of the `bench` and `bench-contention` systems
//! (`cargo xtask bench`).
//!
//! Times round trips through the real IOMMU server and QEMU's SMMUv3 with
//! the architectural virtual counter (CNTVCT_EL0; the loader lets EL0 read
//! it). Under `-icount shift=0` one guest instruction is one virtual
//! nanosecond, so `ticks * 1e9 / CNTFRQ` is the guest instructions an
//! operation took: the driver's call, the kernel's IPC, the server's
//! decoding, validation, page tables, commands and CMD_SYNC, and the reply.
//!
//! In `bench`, `bench-driver` times every row, alone with the server (one
//! band). In `bench-contention`, it holds the `bench-go` notification and
//! measures only the throughput under contention with a second instance of
//! this crate, `bench-peer` ([`PEER`]), a client in a band of its own (its
//! own endpoint and server thread): the same map/unmap workload run by each
//! alone, one after the other, then by both at once (see [`contention`]).
//!
//! Output (the kernel has no debug console; the root task prints through
//! the PL011):
//! * `@<op>` before and `@` after each timed call, written straight to the
//!   PL011 (the description maps it here, `uart = true`): markers that
//!   `cargo xtask bench` finds in QEMU's trace (`pl011_write`) to attribute
//!   the SMMU commands in between (`smmuv3_cmdq_opcode`) to that operation;
//! * through the root task, like any process's: `bench: <op> iters=<n>
//!   ns=<total> min=<ns> max=<ns>` per operation at the end; `bench:
//!   variant <op> pages=<n> handles=<k>` for a row whose shape depends on
//!   what the server accepts (the registered 4 KiB frames); `bench:
//!   throughput <phase> ops=<n> ns=<total> switched=<n>` for the contention
//!   phases; and `bench: done`.
#![no_std]
#![no_main]

use iommu_client::{DomainId, Iommu, MemoryHandle, Perms, Region, Ssid, StreamId};
use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CPtr, Notification};
use sel4_iommu::platform::CounterDelay;
use sel4_iommu::transport::Sel4Transport;

procrt::main!(main);

type Client = Iommu<Sel4Transport>;
type Error = iommu_client::Error;

/// Round trips averaged per operation (issue 8: at least 200).
const ITERATIONS: u64 = procrt::bench_iterations(200);

/// Map + unmap pairs each client issues in each contention phase: some 60
/// million instructions each, several of the kernel's 10 ms time slices,
/// so the clients really take turns when run at once.
const CONTENTION_PAIRS: u64 = 20_000;

const PAGE: u64 = 4096;
/// The edu at 00:01.0 (the system pins it with `addr=1`).
const STREAM: StreamId = StreamId(0x8);
/// The peer's edu at 00:02.0.
const PEER_STREAM: StreamId = StreamId(0x10);
/// The process name that runs the peer's part.
const PEER: &str = "bench-peer";
/// Notifications between the two: the driver signals `bench-go` to start a
/// peer run; the peer signals `bench-back` when it is set up and after
/// each run.
const GO: &str = "bench-go";
const PEER_DONE: &str = "bench-back";
/// I/O addresses: one 2 MiB-aligned window (one leaf table) per benchmark.
const IOVA_4K: u64 = 0x4000_0000;
const IOVA_2M: u64 = 0x4020_0000;
const IOVA_256K: u64 = 0x4040_0000;
const IOVA_2M_BLOCK: u64 = 0x4060_0000;
const IOVA_CONTIG: u64 = 0x4080_0000;
const IOVA_FRAMES: u64 = 0x40a0_0000;
const LARGE: u64 = 2 << 20;
/// Pages in 2 MiB: a leaf table's worth.
const LEAF_PAGES: usize = 512;
/// Frames a memory handle is known to hold (the server's
/// `handler::MAX_FRAMES` today); the driver first tries all 512 in one.
const HANDLE_FRAMES: usize = 64;
/// Memory handles a client may hold at most (`handler::MAX_MEMORY`).
const MAX_HANDLES: usize = 8;
/// A page that stays mapped in the 4 KiB window, so that window's tables
/// stay allocated as in a driver with live buffers (the server frees
/// tables that become empty).
const IOVA_RESIDENT: u64 = IOVA_4K + 0x1f_f000;

#[derive(Clone, Copy)]
enum Op {
    Faults,
    Map4k,
    Unmap4k,
    Map2mBatch,
    Unmap2m,
    Map256k,
    Unmap256k,
    Map2mBlock,
    Unmap2mBlock,
    MapContig,
    UnmapLeafTable,
    Attach,
    Detach,
    MapFrames,
    UnmapFrames,
}

const OPS: [Op; 15] = [
    Op::Faults,
    Op::Map4k,
    Op::Unmap4k,
    Op::Map2mBatch,
    Op::Unmap2m,
    Op::Map256k,
    Op::Unmap256k,
    Op::Map2mBlock,
    Op::Unmap2mBlock,
    Op::MapContig,
    Op::UnmapLeafTable,
    Op::Attach,
    Op::Detach,
    Op::MapFrames,
    Op::UnmapFrames,
];

impl Op {
    /// The name `cargo xtask bench` knows the operation by.
    fn name(self) -> &'static str {
        match self {
            Op::Faults => "faults",
            Op::Map4k => "map-4k",
            Op::Unmap4k => "unmap-4k",
            Op::Map2mBatch => "map-2m-batch",
            Op::Unmap2m => "unmap-2m",
            Op::Map256k => "map-256k",
            Op::Unmap256k => "unmap-256k",
            Op::Map2mBlock => "map-2m-block",
            Op::Unmap2mBlock => "unmap-2m-block",
            Op::MapContig => "map-contig",
            Op::UnmapLeafTable => "unmap-leaf-table",
            Op::Attach => "attach",
            Op::Detach => "detach",
            Op::MapFrames => "map-frames",
            Op::UnmapFrames => "unmap-frames",
        }
    }
}

#[derive(Clone, Copy)]
struct Acc {
    iters: u64,
    ticks: u64,
    min: u64,
    max: u64,
}

/// What one contention phase took: operations, counter ticks, and how
/// often the driver was switched out in the middle.
#[derive(Clone, Copy, Default)]
struct Throughput {
    ops: u64,
    ticks: u64,
    switched: u64,
}

struct Bench {
    acc: [Acc; OPS.len()],
    /// The registered-frames row: pages mapped, memory handles used.
    frames: Option<(usize, usize)>,
    /// Contention: each client alone (driver, peer), both at once, and
    /// the driver's own part of that.
    contention: Option<[Throughput; 4]>,
}

impl Bench {
    fn new() -> Bench {
        Bench {
            acc: [Acc {
                iters: 0,
                ticks: 0,
                min: u64::MAX,
                max: 0,
            }; OPS.len()],
            frames: None,
            contention: None,
        }
    }

    /// Runs `f` once between two counter reads, with trace markers around
    /// (outside the timed part).
    fn time<R>(&mut self, op: Op, f: impl FnOnce() -> R) -> R {
        // Straight to the PL011: a message to the root task's console
        // thread would put a send and two thread switches between the
        // marker and the call, where the profile counts kernel entries.
        procrt::print_unlocked(format_args!("@{}\n", op.name()));
        let t0 = CounterDelay::now();
        let r = f();
        let t1 = CounterDelay::now();
        procrt::print_unlocked(format_args!("@\n"));
        let a = &mut self.acc[op as usize];
        let d = t1.wrapping_sub(t0);
        a.iters += 1;
        a.ticks += d;
        a.min = a.min.min(d);
        a.max = a.max.max(d);
        r
    }

    fn report(&self) {
        let hz = CounterDelay::frequency();
        let ns = |ticks: u64| ticks * 1_000_000_000 / hz;
        println!("bench: counter {hz} Hz");
        for op in OPS {
            let a = self.acc[op as usize];
            if a.iters == 0 {
                continue;
            }
            println!(
                "bench: {} iters={} ns={} min={} max={}",
                op.name(),
                a.iters,
                ns(a.ticks),
                ns(a.min),
                ns(a.max)
            );
        }
        if let Some((pages, handles)) = self.frames {
            for op in [Op::MapFrames, Op::UnmapFrames] {
                println!(
                    "bench: variant {} pages={pages} handles={handles}",
                    op.name()
                );
            }
        }
        if let Some(phases) = self.contention {
            let names = ["alone-driver", "alone-peer", "together", "together-driver"];
            for (name, t) in names.iter().zip(phases) {
                println!(
                    "bench: throughput {name} ops={} ns={} switched={}",
                    t.ops,
                    ns(t.ticks),
                    t.switched
                );
            }
        }
    }
}

fn fail(what: &str, e: impl core::fmt::Debug) -> bool {
    println!("bench: FAILED {what}: {e:?}");
    false
}

fn signal(info: &StartInfo, name: &str) {
    if let Some(cap) = info.cap(name) {
        syscalls::signal(Notification(CPtr(cap.cptr)));
    }
}

fn wait(info: &StartInfo, name: &str) {
    if let Some(cap) = info.cap(name) {
        syscalls::wait(Notification(CPtr(cap.cptr)));
    }
}

/// The frame cap of 4 KiB page `i` of the DMA pool.
fn small_frame(info: &StartInfo, i: usize) -> CPtr {
    CPtr(info.dma.first_frame_cap + i as u64)
}

/// The frame cap of 2 MiB frame `i` of the DMA pool (`dma.large_pages`;
/// the server's frame-size probe knows it for 2 MiB).
fn large_frame(info: &StartInfo, i: usize) -> CPtr {
    CPtr(info.dma_large.first_frame_cap + i as u64)
}

fn main(info: &'static StartInfo) -> bool {
    if info.name.as_str() == PEER {
        return peer(info);
    }
    if info.cap(GO).is_some() {
        return contention_main(info);
    }
    let Some(mut c) = sel4_iommu::connect(info) else {
        println!("bench: no IOMMU server to connect to");
        return false;
    };
    // Frames 0..64 for the 4 KiB and 256 KiB rows; 1..=512 (as many as the
    // server takes) for the registered-frames row.
    if info.dma.frames < 1 + LEAF_PAGES as u64 {
        println!(
            "bench: need {} DMA frames, have {}",
            1 + LEAF_PAGES,
            info.dma.frames
        );
        return false;
    }
    if info.dma_large.frames < 2 {
        println!("bench: need two 2 MiB frames in the DMA pool (dma.large_pages = 2)");
        return false;
    }
    let caps: [CPtr; HANDLE_FRAMES] = core::array::from_fn(|i| small_frame(info, i));
    let memory = match c.register_memory(&caps) {
        Ok(m) => m.handle,
        Err(e) => return fail("register_memory", e),
    };
    let large = match c.register_memory(&[large_frame(info, 0)]) {
        Ok(m) if m.len == LARGE => m.handle,
        Ok(m) => return fail("2 MiB frame registered as bytes", m.len),
        Err(e) => return fail("register_memory (2 MiB frame)", e),
    };
    let domain = match c.alloc_domain() {
        Ok(d) => d,
        Err(e) => return fail("alloc_domain", e),
    };
    if let Err(e) = c.attach(STREAM, Ssid(0), domain) {
        return fail("attach", e);
    }
    if let Err(e) = c.map(domain, IOVA_RESIDENT, memory, 63 * PAGE, PAGE, Perms::RW) {
        return fail("resident map", e);
    }
    println!(
        "bench: {} iterations per operation; DMA pool at physical {:#x}",
        ITERATIONS, info.dma.paddr
    );
    let mut b = Bench::new();
    let ok = run(&mut b, &mut c, domain, memory, large)
        .and_then(|()| contiguous(&mut b, info, &mut c, domain))
        .and_then(|pair| frames(&mut b, info, &mut c, domain, [memory, large, pair]));
    b.report();
    if let Err(e) = ok {
        return fail("benchmark", e);
    }
    println!("bench: done");
    true
}

/// What a client of the contention system sets up before the workload:
/// its 64 frames registered, a domain with `stream` attached (so every
/// unmap invalidates), and a page resident in the workload's window.
fn setup(info: &StartInfo, stream: StreamId) -> Result<(Client, DomainId, MemoryHandle), Error> {
    let mut c = sel4_iommu::connect(info).ok_or(Error::UnexpectedReply)?;
    if (info.dma.frames as usize) < HANDLE_FRAMES {
        println!(
            "bench: need {HANDLE_FRAMES} DMA frames, have {}",
            info.dma.frames
        );
        return Err(Error::UnexpectedReply);
    }
    let caps: [CPtr; HANDLE_FRAMES] = core::array::from_fn(|i| small_frame(info, i));
    let memory = c.register_memory(&caps)?.handle;
    let domain = c.alloc_domain()?;
    c.attach(stream, Ssid(0), domain)?;
    c.map(domain, IOVA_RESIDENT, memory, 63 * PAGE, PAGE, Perms::RW)?;
    Ok((c, domain, memory))
}

/// `bench-driver` in the `bench-contention` system (it holds `bench-go`):
/// only the throughput under contention, with `bench-peer`.
fn contention_main(info: &'static StartInfo) -> bool {
    let phases = setup(info, STREAM).and_then(|(mut c, domain, memory)| {
        // The peer's set-up calls must not fall among the timed ones.
        wait(info, PEER_DONE);
        contention(info, &mut c, domain, memory)
    });
    match phases {
        Ok(phases) => {
            let mut b = Bench::new();
            b.contention = Some(phases);
            b.report();
            println!("bench: done");
            true
        }
        Err(e) => fail("contention", e),
    }
}

/// One timed `MapBatch`: the only place that calls `Iommu::map_batch`, so
/// that it is inlined here whatever other rows there are (a second call
/// site made the compiler keep it out of line, which cost the driver ~650
/// instructions of copying per batch).
#[inline(never)]
fn time_batch(
    b: &mut Bench,
    op: Op,
    c: &mut Client,
    domain: DomainId,
    regions: &[Region],
) -> Result<(), Error> {
    b.time(op, || c.map_batch(domain, regions))
}

/// The rows of the first benchmark (issue 8), as they have always run.
fn run(
    b: &mut Bench,
    c: &mut Client,
    domain: DomainId,
    memory: MemoryHandle,
    large: MemoryHandle,
) -> Result<(), Error> {
    for _ in 0..ITERATIONS {
        let batch = b.time(Op::Faults, || c.faults())?;
        if !batch.records.is_empty() {
            println!("bench: unexpected fault {:?}", batch.records[0]);
        }
    }
    for i in 0..ITERATIONS {
        let iova = IOVA_4K + (i % 64) * PAGE;
        let offset = (i % 63) * PAGE;
        b.time(Op::Map4k, || {
            c.map(domain, iova, memory, offset, PAGE, Perms::RW)
        })?;
        b.time(Op::Unmap4k, || c.unmap(domain, iova, PAGE))?;
    }
    // 512 pages of 4 KiB in one MapBatch, standing for a scatter list: the
    // 64 registered frames, 8 times over (8 entries; a memory handle holds
    // at most 64 frames). They fill the window's leaf table, and nothing
    // else is in it: the unmap empties one whole leaf table.
    let regions: [Region; 8] = core::array::from_fn(|k| Region {
        iova: IOVA_2M + k as u64 * 64 * PAGE,
        memory,
        offset: 0,
        len: 64 * PAGE,
        perms: Perms::RW,
    });
    for _ in 0..ITERATIONS {
        time_batch(b, Op::Map2mBatch, c, domain, &regions)?;
        b.time(Op::Unmap2m, || c.unmap(domain, IOVA_2M, 512 * PAGE))?;
    }
    // The largest single Map of a registered region: 64 frames.
    for _ in 0..ITERATIONS {
        b.time(Op::Map256k, || {
            c.map(domain, IOVA_256K, memory, 0, 64 * PAGE, Perms::RW)
        })?;
        b.time(Op::Unmap256k, || c.unmap(domain, IOVA_256K, 64 * PAGE))?;
    }
    // One 2 MiB frame: one Map, one level-2 block descriptor.
    for _ in 0..ITERATIONS {
        b.time(Op::Map2mBlock, || {
            c.map(domain, IOVA_2M_BLOCK, large, 0, LARGE, Perms::RW)
        })?;
        b.time(Op::Unmap2mBlock, || c.unmap(domain, IOVA_2M_BLOCK, LARGE))?;
    }
    c.detach(STREAM, Ssid(0))?;
    for _ in 0..ITERATIONS {
        b.time(Op::Attach, || c.attach(STREAM, Ssid(0), domain))?;
        b.time(Op::Detach, || c.detach(STREAM, Ssid(0)))?;
    }
    Ok(())
}

/// 512 physically contiguous 4 KiB pages in one Map (Linux's `iommu_map`
/// of 2 MiB at a 4 KiB-aligned address): 2 MiB of the two 2 MiB frames,
/// registered as one 4 MiB memory, from offset 4 KiB, at a 2 MiB-aligned
/// IOVA. The frames are physically adjacent (the root task retypes them in
/// order from one untyped), and no block fits (the output is 4 KiB off a
/// 2 MiB boundary), so the pages fill exactly one leaf table, which holds
/// nothing else: the unmap is Linux's `iommu_unmap` of 2 MiB over a full
/// leaf table. Attaches the stream again first (so every unmap from here
/// on invalidates); returns the 4 MiB memory's handle.
fn contiguous(
    b: &mut Bench,
    info: &StartInfo,
    c: &mut Client,
    domain: DomainId,
) -> Result<MemoryHandle, Error> {
    c.attach(STREAM, Ssid(0), domain)?;
    let pair = c.register_memory(&[large_frame(info, 0), large_frame(info, 1)])?;
    if pair.len != 2 * LARGE {
        println!("bench: two 2 MiB frames registered as {} bytes", pair.len);
        return Err(Error::UnexpectedReply);
    }
    let pair = pair.handle;
    for _ in 0..ITERATIONS {
        b.time(Op::MapContig, || {
            c.map(domain, IOVA_CONTIG, pair, PAGE, LARGE, Perms::RW)
        })?;
        b.time(Op::UnmapLeafTable, || c.unmap(domain, IOVA_CONTIG, LARGE))?;
    }
    Ok(pair)
}

/// Counter ticks (16 ns each) between two pairs of the workload beyond
/// which the client was off the CPU: a pair takes some 3,000 instructions,
/// the other client's turn a time slice (10 ms).
const SWITCHED_OUT: u64 = 100_000 / 16;

/// `pairs` x (map 4 KiB, unmap 4 KiB), as the 4 KiB rows do them; returns
/// how often the client was switched out between two pairs.
fn workload(
    c: &mut Client,
    domain: DomainId,
    memory: MemoryHandle,
    pairs: u64,
) -> Result<u64, Error> {
    let mut switched = 0;
    let mut last = CounterDelay::now();
    for i in 0..pairs {
        let iova = IOVA_4K + (i % 64) * PAGE;
        c.map(domain, iova, memory, (i % 63) * PAGE, PAGE, Perms::RW)?;
        c.unmap(domain, iova, PAGE)?;
        let now = CounterDelay::now();
        switched += u64::from(now - last > SWITCHED_OUT);
        last = now;
    }
    Ok(switched)
}

/// Throughput under contention: the same workload, [`CONTENTION_PAIRS`]
/// map/unmap pairs for this driver and as many for the peer (another
/// client, in its own band, served by its own server thread, with its own
/// domain and stream), first one after the other, then both at once. The
/// two clients and their server threads all run at one priority (the
/// policy lets no client above its band thread, and a client below its
/// band thread loses the fastpath reply), so on this one core they take
/// turns at time-slice ends and whenever one blocks on a lock the other's
/// server thread holds. Each phase is timed from the driver's start to the
/// later of the two ends, thread switches and notifications included; the
/// driver also reports when its own part of the shared phase ended, and
/// how often it was switched out during it (the clients took turns).
fn contention(
    info: &StartInfo,
    c: &mut Client,
    domain: DomainId,
    memory: MemoryHandle,
) -> Result<[Throughput; 4], Error> {
    let ops = 2 * CONTENTION_PAIRS;
    let t0 = CounterDelay::now();
    workload(c, domain, memory, CONTENTION_PAIRS)?;
    let t1 = CounterDelay::now();
    signal(info, GO);
    wait(info, PEER_DONE);
    let t2 = CounterDelay::now();
    // Both at once: the peer becomes runnable behind this thread (same
    // priority), and gets its turn at this thread's first block or slice end.
    let t3 = CounterDelay::now();
    signal(info, GO);
    let switched = workload(c, domain, memory, CONTENTION_PAIRS)?;
    let t4 = CounterDelay::now();
    wait(info, PEER_DONE);
    let t5 = CounterDelay::now();
    Ok([
        Throughput {
            ops,
            ticks: t1 - t0,
            switched: 0,
        },
        Throughput {
            ops,
            ticks: t2 - t1,
            switched: 0,
        },
        Throughput {
            ops: 2 * ops,
            ticks: t5 - t3,
            switched: 0,
        },
        Throughput {
            ops,
            ticks: t4 - t3,
            switched,
        },
    ])
}

/// The registered-frames rows: a 2 MiB memory of 512 physically contiguous
/// 4 KiB frames (pool pages 1..=512, so 4 KiB off a 2 MiB boundary: Linux's
/// 4 KiB-aligned `iommu_map`), mapped at a 2 MiB-aligned IOVA by one `Map`,
/// then unmapped (one whole leaf table). The server may take fewer: a
/// handle holds at most `handler::MAX_FRAMES` frames, and a band's clients
/// at most its receive slots (`policy::BAND_RECEIVE_SLOTS`, less one) in
/// all; then it registers as many as its quota allows, in handles of 64,
/// and maps them with one `MapBatch` (one entry per handle), and says so
/// (`bench: variant`). Run last: it first gives back everything else.
fn frames(
    b: &mut Bench,
    info: &StartInfo,
    c: &mut Client,
    domain: DomainId,
    registered: [MemoryHandle; 3],
) -> Result<(), Error> {
    c.unmap(domain, IOVA_RESIDENT, PAGE)?;
    for m in registered {
        c.unregister_memory(m)?;
    }
    let s = c.stats()?;
    let budget = s.max_memory_frames.saturating_sub(s.memory_frames) as usize;
    let slots = s.max_memory_regions.saturating_sub(s.memory_regions) as usize;
    let want = LEAF_PAGES.min(budget);
    let caps: [CPtr; LEAF_PAGES] = core::array::from_fn(|i| small_frame(info, 1 + i));
    // (handle, frames) of each registration, and one map entry for each.
    let mut handles = [(MemoryHandle(0), 0usize); MAX_HANDLES];
    let mut count = 0;
    match c.register_memory(&caps[..want]) {
        Ok(m) => {
            handles[0] = (m.handle, want);
            count = 1;
        }
        // Refused as a whole (and unregistered again by the client):
        // handles of what one surely holds.
        Err(Error::Iommu(iommu_client::ErrorCode::QuotaExceeded)) => {
            for chunk in caps[..want]
                .chunks(HANDLE_FRAMES)
                .take(slots.min(MAX_HANDLES))
            {
                handles[count] = (c.register_memory(chunk)?.handle, chunk.len());
                count += 1;
            }
        }
        Err(e) => return Err(e),
    }
    let handles = &handles[..count];
    let pages: usize = handles.iter().map(|h| h.1).sum();
    let mut iova = IOVA_FRAMES;
    let regions: [Region; MAX_HANDLES] = core::array::from_fn(|i| {
        let (memory, n) = handles.get(i).copied().unwrap_or((MemoryHandle(0), 0));
        let r = Region {
            iova,
            memory,
            offset: 0,
            len: n as u64 * PAGE,
            perms: Perms::RW,
        };
        iova += r.len;
        r
    });
    let regions = &regions[..count];
    let len = pages as u64 * PAGE;
    for _ in 0..ITERATIONS {
        if let [r] = regions {
            b.time(Op::MapFrames, || {
                c.map(domain, r.iova, r.memory, 0, r.len, r.perms)
            })?;
        } else {
            time_batch(b, Op::MapFrames, c, domain, regions)?;
        }
        b.time(Op::UnmapFrames, || c.unmap(domain, IOVA_FRAMES, len))?;
    }
    b.frames = Some((pages, count));
    for &(m, _) in handles {
        c.unregister_memory(m)?;
    }
    Ok(())
}

/// `bench-peer`: sets up like the driver (its own memory, domain and
/// stream, a page resident in the window), says so, then runs the
/// workload each time the driver says go (twice), saying when it is done.
fn peer(info: &'static StartInfo) -> bool {
    let ok = setup(info, PEER_STREAM).and_then(|(mut c, domain, memory)| {
        signal(info, PEER_DONE);
        for _ in 0..2 {
            wait(info, GO);
            workload(&mut c, domain, memory, CONTENTION_PAIRS)?;
            signal(info, PEER_DONE);
        }
        Ok(())
    });
    if let Err(e) = &ok {
        println!("bench: FAILED bench-peer: {e:?}");
        // The driver must not wait for it forever.
        for _ in 0..3 {
            signal(info, PEER_DONE);
        }
    }
    ok.is_ok()
}
