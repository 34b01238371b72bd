//! Benchmark driver of the `bench` system (`cargo xtask bench`).
//!
//! Times round trips through the real IOMMU server and QEMU's SMMUv3 with
//! the architectural virtual counter (CNTVCT_EL0; the loader lets EL0 read
//! it). Under `-icount shift=0` one guest instruction is one virtual
//! nanosecond, so `ticks * 1e9 / CNTFRQ` is the guest instructions an
//! operation took: the driver's call, the kernel's IPC, the server's
//! decoding, validation, page tables, commands and CMD_SYNC, and the reply.
//!
//! Output (the kernel has no debug console; the root task prints through
//! the PL011):
//! * `@<op>` before and `@` after each timed call, written straight to the
//!   PL011 (the description maps it here, `uart = true`): markers that
//!   `cargo xtask bench` finds in QEMU's trace (`pl011_write`) to attribute
//!   the SMMU commands in between (`smmuv3_cmdq_opcode`) to that operation;
//! * through the root task, like any process's: `bench: <op> iters=<n>
//!   ns=<total> min=<ns> max=<ns>` per operation at the end, and
//!   `bench: done`.
#![no_std]
#![no_main]

use iommu_client::{DomainId, Iommu, MemoryHandle, Perms, Region, Ssid, StreamId};
use procrt::{println, StartInfo};
use sel4_abi::CPtr;
use sel4_iommu::platform::CounterDelay;
use sel4_iommu::transport::Sel4Transport;

procrt::main!(main);

type Client = Iommu<Sel4Transport>;

/// Round trips averaged per operation (issue 8: at least 200).
const ITERATIONS: u64 = match option_env!("BENCH_ITERATIONS") {
    Some(s) => parse(s),
    None => 200,
};

/// `const` parsing of BENCH_ITERATIONS (decimal).
const fn parse(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u64;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    n
}
const PAGE: u64 = 4096;
/// The edu at 00:01.0 (the system pins it with `addr=1`).
const STREAM: StreamId = StreamId(0x8);
/// I/O addresses: one 2 MiB-aligned window per benchmark.
const IOVA_4K: u64 = 0x4000_0000;
const IOVA_2M: u64 = 0x4020_0000;
const IOVA_256K: u64 = 0x4040_0000;
const IOVA_2M_BLOCK: u64 = 0x4060_0000;
const LARGE: u64 = 2 << 20;
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
    Attach,
    Detach,
}

const OPS: [Op; 11] = [
    Op::Faults,
    Op::Map4k,
    Op::Unmap4k,
    Op::Map2mBatch,
    Op::Unmap2m,
    Op::Map256k,
    Op::Unmap256k,
    Op::Map2mBlock,
    Op::Unmap2mBlock,
    Op::Attach,
    Op::Detach,
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
            Op::Attach => "attach",
            Op::Detach => "detach",
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

struct Bench {
    acc: [Acc; OPS.len()],
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
        let hz: u64;
        // SAFETY: reading CNTFRQ_EL0 has no side effects; EL0 may read it.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) hz) };
        let ns = |ticks: u64| ticks * 1_000_000_000 / hz.max(1);
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
    }
}

fn fail(what: &str, e: impl core::fmt::Debug) -> bool {
    println!("bench: FAILED {what}: {e:?}");
    false
}

fn main(info: &'static StartInfo) -> bool {
    let Some(endpoint) = sel4_iommu::server_endpoint(info) else {
        println!("bench: the system gave me no endpoint named iommu");
        return false;
    };
    let mut c = match Iommu::connect(Sel4Transport::new(CPtr(endpoint.cptr))) {
        Ok(c) => c,
        Err(e) => return fail("connect", e),
    };
    let frames = info.dma.frames.min(64);
    if frames < 64 {
        println!("bench: need 64 DMA frames, have {frames}");
        return false;
    }
    let caps: [CPtr; 64] = core::array::from_fn(|i| CPtr(info.dma.first_frame_cap + i as u64));
    let memory = match c.register_memory(&caps) {
        Ok(m) => m.handle,
        Err(e) => return fail("register_memory", e),
    };
    let large = match large_frame(info) {
        Ok(cap) => cap,
        Err(why) => {
            println!("bench: FAILED 2 MiB frame: {why}");
            return false;
        }
    };
    let large = match c.register_memory(&[large]) {
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
    let ok = run(&mut b, &mut c, domain, memory, large);
    b.report();
    if let Err(e) = ok {
        return fail("benchmark", e);
    }
    println!("bench: done");
    true
}

/// The 2 MiB frame of the bench driver's DMA pool (`dma.large_pages`; the
/// server's frame-size probe knows it for 2 MiB).
fn large_frame(info: &StartInfo) -> Result<CPtr, &'static str> {
    match info.dma_large.frames {
        0 => Err("no 2 MiB frame in the DMA pool (dma.large_pages)"),
        _ => Ok(CPtr(info.dma_large.first_frame_cap)),
    }
}

fn run(
    b: &mut Bench,
    c: &mut Client,
    domain: DomainId,
    memory: MemoryHandle,
    large: MemoryHandle,
) -> Result<(), iommu_client::Error> {
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
    // 2 MiB of 4 KiB frames in one MapBatch: the 64 registered frames, 8
    // times over (a memory handle holds at most 64 frames).
    let regions: [Region; 8] = core::array::from_fn(|k| Region {
        iova: IOVA_2M + k as u64 * 64 * PAGE,
        memory,
        offset: 0,
        len: 64 * PAGE,
        perms: Perms::RW,
    });
    for _ in 0..ITERATIONS {
        b.time(Op::Map2mBatch, || c.map_batch(domain, &regions))?;
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
