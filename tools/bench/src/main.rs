//! Host benchmark of the IOMMU server: the real core (`iommu_server::Smmu`)
//! and the real request handler (through `iommu_client::InProcess`, the
//! transport the host tests use) driving the software SMMUv3 model with
//! QEMU 7.2's features (range invalidation, no substreams).
//!
//! ```sh
//! cargo run --release -p iommu-bench            # full run (a few seconds)
//! cargo run --release -p iommu-bench -- --quick # or IOMMU_BENCH_QUICK=1
//! ```
//!
//! It prints, per operation: operations per second and microseconds per
//! operation on this host (the model's emulation of every register access
//! and command is included, so these are for profiling and comparing
//! versions, not hardware figures), the commands and CMD_SYNCs per
//! operation as the model counted them (and the core's own `stats()`,
//! which must agree), the page-table memory used to map 1 GiB, and the
//! server's memory per client (the handler's per-client records, and page
//! tables per GiB mapped). It never fails on speed; it panics only if an
//! operation itself fails or the core and the model disagree on what was
//! issued.
//!
//! The figures in the booted image are `cargo xtask bench`'s.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use iommu_client::{InProcess, Iommu, Region};
use iommu_protocol::{Perms as WirePerms, Ssid, StreamId};
use iommu_server::handler::{FakeFrames, Handler, ReceivedCap};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use iommu_server::{Config, Perms, Smmu, Stats};
use smmu_model::{Features, Machine, MemConfig, ModelOptions};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 4 * KIB;
const BLOCK: u64 = 2 * MIB;
const SID: u32 = 8;

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

type Core = Smmu<smmu_model::Smmu, smmu_model::PhysMem, NoDelay>;

/// Run lengths: the full run, or the quick one CI uses.
#[derive(Clone, Copy)]
struct Mode {
    quick: bool,
}

impl Mode {
    fn from_env() -> Mode {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("IOMMU_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        Mode { quick }
    }

    /// Iterations of a cheap operation (4 KiB, attach) and of a 2 MiB one.
    fn small(self) -> u64 {
        if self.quick {
            50
        } else {
            5_000
        }
    }
    fn large(self) -> u64 {
        if self.quick {
            5
        } else {
            200
        }
    }
}

/// What the model and the core counted at one moment.
#[derive(Clone, Copy, Default)]
struct Snap {
    model_cmds: u64,
    model_syncs: u64,
    model_tlbis: u64,
    core_cmds: u64,
    core_syncs: u64,
}

fn snap(m: &Machine, stats: Stats) -> Snap {
    let c = m.smmu.counters();
    Snap {
        model_cmds: c.commands,
        model_syncs: c.syncs,
        model_tlbis: c.tlbi,
        core_cmds: stats.total_commands(),
        core_syncs: stats.syncs,
    }
}

/// Time and counts accumulated over the operations of one row.
#[derive(Default)]
struct Meter {
    ops: u64,
    time: Duration,
    counts: Snap,
}

impl Meter {
    fn add(&mut self, time: Duration, before: Snap, after: Snap) {
        self.ops += 1;
        self.time += time;
        let c = &mut self.counts;
        c.model_cmds += after.model_cmds - before.model_cmds;
        c.model_syncs += after.model_syncs - before.model_syncs;
        c.model_tlbis += after.model_tlbis - before.model_tlbis;
        c.core_cmds += after.core_cmds - before.core_cmds;
        c.core_syncs += after.core_syncs - before.core_syncs;
    }
}

/// Runs `op` once under the meter: time, and counter deltas around it.
macro_rules! timed {
    ($meter:expr, $m:expr, $stats:expr, $op:expr) => {{
        let before = snap($m, $stats);
        let t = Instant::now();
        let r = $op;
        let dt = t.elapsed();
        let after = snap($m, $stats);
        $meter.add(dt, before, after);
        r
    }};
}

fn header(title: &str) {
    println!();
    println!("{title}");
    println!(
        "  {:<46} {:>10} {:>9} {:>8} {:>8} {:>8}",
        "operation", "ops/s", "µs/op", "cmds/op", "syncs/op", "tlbi/op"
    );
}

fn row(name: &str, meter: &Meter) {
    let n = meter.ops.max(1) as f64;
    let secs = meter.time.as_secs_f64();
    let c = meter.counts;
    // The core's own counters must say what the model saw.
    assert_eq!(
        (c.core_cmds, c.core_syncs),
        (c.model_cmds, c.model_syncs),
        "{name}: the core's stats() disagree with the model's counters"
    );
    println!(
        "  {:<46} {:>10.0} {:>9.2} {:>8.2} {:>8.2} {:>8.2}",
        name,
        n / secs.max(1e-12),
        secs * 1e6 / n,
        c.model_cmds as f64 / n,
        c.model_syncs as f64 / n,
        c.model_tlbis as f64 / n,
    );
}

fn machine() -> Machine {
    Machine::with(
        Features::qemu_7_2(),
        ModelOptions::default(),
        MemConfig {
            // Room for 1 GiB of 4 KiB leaves (about 2 MiB of tables) and
            // the handler benchmark's client buffers.
            size: 64 << 20,
            // Poisoning freed blocks is a test aid; it would dominate the
            // cost of freeing tables here.
            poison_on_free: None,
            ..MemConfig::default()
        },
    )
}

fn core_on(m: &Machine) -> Core {
    Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, Config::default()).expect("SMMU comes up")
}

// ---------------------------------------------------------------- core ----

/// Page-table memory to map 1 GiB in one layout: its name, the tables
/// (4 KiB pages of DMA memory) and the bytes the core reports.
struct TableMemory {
    layout: &'static str,
    tables: u32,
    bytes: usize,
}

fn bench_core(mode: Mode) -> Vec<TableMemory> {
    header("core (iommu_server::Smmu) on the model");
    let m = machine();
    let mut s = core_on(&m);
    let d = s.alloc_domain().unwrap();
    s.attach(SID, 0, d).unwrap();
    let rw = Perms::READ | Perms::WRITE;
    // Output addresses need not be RAM: the model only walks the tables.
    let pa = 0x1_0000_0000u64;
    let iova = 0x4000_0000u64;

    let (mut map, mut unmap) = (Meter::default(), Meter::default());
    for i in 0..mode.small() {
        let va = iova + (i % 512) * PAGE;
        timed!(map, &m, s.stats(), s.map(d, va, pa, PAGE, rw).unwrap());
        timed!(unmap, &m, s.stats(), s.unmap(d, va, PAGE).unwrap());
    }
    row("map 4 KiB", &map);
    row("unmap 4 KiB", &unmap);

    let (mut map, mut unmap) = (Meter::default(), Meter::default());
    for _ in 0..mode.large() {
        timed!(map, &m, s.stats(), s.map(d, iova, pa, BLOCK, rw).unwrap());
        timed!(unmap, &m, s.stats(), s.unmap(d, iova, BLOCK).unwrap());
    }
    row("map 2 MiB as one range (a 2 MiB block)", &map);
    row("unmap 2 MiB block", &unmap);

    // Output 4 KiB off a 2 MiB boundary: no block fits, 512 leaves.
    let (mut map, mut unmap) = (Meter::default(), Meter::default());
    for _ in 0..mode.large() {
        timed!(
            map,
            &m,
            s.stats(),
            s.map(d, iova, pa + PAGE, BLOCK, rw).unwrap()
        );
        timed!(unmap, &m, s.stats(), s.unmap(d, iova, BLOCK).unwrap());
    }
    row("map 2 MiB as one range of 512 × 4 KiB", &map);
    row("unmap 512 contiguous pages (one call)", &unmap);

    // 512 separate calls (what a 512-entry batch of scattered pages costs).
    let (mut map, mut unmap) = (Meter::default(), Meter::default());
    for _ in 0..mode.large() {
        timed!(map, &m, s.stats(), {
            for p in 0..512u64 {
                // Scattered output pages: every other physical page.
                s.map(d, iova + p * PAGE, pa + 2 * p * PAGE, PAGE, rw)
                    .unwrap();
            }
        });
        timed!(unmap, &m, s.stats(), s.unmap(d, iova, BLOCK).unwrap());
    }
    row("map 512 × 4 KiB, 512 calls (per 512)", &map);
    row("unmap those 512 pages (one call)", &unmap);

    let (mut attach, mut detach) = (Meter::default(), Meter::default());
    let other = s.alloc_domain().unwrap();
    s.detach(SID, 0).unwrap();
    for _ in 0..mode.small() {
        timed!(attach, &m, s.stats(), s.attach(SID, 0, d).unwrap());
        timed!(detach, &m, s.stats(), s.detach(SID, 0).unwrap());
    }
    row("attach (stream in abort → domain)", &attach);
    row("detach (domain → abort)", &detach);
    let mut moved = Meter::default();
    s.attach(SID, 0, d).unwrap();
    for i in 0..mode.small() {
        let to = if i % 2 == 0 { other } else { d };
        timed!(moved, &m, s.stats(), s.attach(SID, 0, to).unwrap());
    }
    row("attach, moving between two domains", &moved);
    s.detach(SID, 0).unwrap();

    let (mut alloc, mut free) = (Meter::default(), Meter::default());
    for _ in 0..mode.small() {
        let x = timed!(alloc, &m, s.stats(), s.alloc_domain().unwrap());
        timed!(free, &m, s.stats(), s.free_domain(x).unwrap());
    }
    row("alloc_domain", &alloc);
    row("free_domain (empty)", &free);

    table_memory(&m, &mut s)
}

/// Page-table memory for 1 GiB, against the physical limit.
fn table_memory(m: &Machine, s: &mut Core) -> Vec<TableMemory> {
    println!();
    println!(
        "  page-table memory to map 1 GiB (4 KiB granule; a table is 512 descriptors, 4 KiB):"
    );
    println!(
        "  {:<34} {:>7} {:>10} {:>9} {:>9} {:>10}",
        "layout", "tables", "bytes", "limit", "lim bytes", "map time"
    );
    let rw = Perms::READ | Perms::WRITE;
    let iova = 0x40_0000_0000u64;
    let cases: [(&str, u64, u32); 3] = [
        // pa 4 KiB off every larger boundary: 262,144 leaves.
        ("4 KiB pages (262,144 leaves)", 0x1_0000_1000, 512 + 3),
        // pa 2 MiB aligned but not 1 GiB aligned: 512 block entries.
        ("2 MiB blocks (512 leaves)", 0x1_0020_0000, 3),
        ("one 1 GiB block", 0x1_4000_0000, 2),
    ];
    let mut out = Vec::new();
    for (name, pa, limit) in cases {
        let d = s.alloc_domain().unwrap();
        let before = s.domain_info(d).unwrap();
        let t = Instant::now();
        s.map(d, iova, pa, GIB, rw).unwrap();
        let dt = t.elapsed();
        let info = s.domain_info(d).unwrap();
        assert_eq!(
            s.iova_to_phys(d, iova + GIB - 1).map(|x| x.0),
            Some(pa + GIB - 1)
        );
        println!(
            "  {:<34} {:>7} {:>10} {:>9} {:>9} {:>8.1}ms",
            name,
            info.table_pages,
            info.table_bytes,
            limit,
            limit as u64 * PAGE,
            dt.as_secs_f64() * 1e3,
        );
        let _ = before;
        s.free_domain(d).unwrap();
        out.push(TableMemory {
            layout: name,
            tables: info.table_pages,
            bytes: info.table_bytes,
        });
    }
    println!("  (limit: one leaf table per 2 MiB mapped in pages, plus one table per upper level;");
    println!(
        "   a larger byte count than the limit is the walk's per-table shadow of child pointers)"
    );
    let _ = m;
    out
}

// ---------------------------------------------------- memory per client ----

/// What the server holds for each client: the handler's records (a fixed
/// slot per client, `handler::MAX_CLIENTS` of them, allocated up front:
/// its domains, memory handles and their frames, mapping records,
/// attachments, queued faults), and the page tables of what it maps, per
/// GiB (`tables`, from the core's own accounting above).
fn memory_per_client(tables: &[TableMemory]) {
    use iommu_server::handler::MAX_CLIENTS;
    use std::mem::size_of;
    println!();
    println!("server memory per client");
    // The handler holds the core, the resolver, the policy, a few counters
    // and MAX_CLIENTS client slots; what is not the first three is the
    // slots (and the counters, a few bytes each spread over them).
    let handler = size_of::<Handler<Core, FakeFrames>>();
    let around = size_of::<Core>() + size_of::<FakeFrames>() + size_of::<Policy>();
    let per_client = handler.saturating_sub(around) / MAX_CLIENTS;
    println!(
        "  {:<60} {:>10} bytes",
        "handler records (one client slot, fixed size)",
        thousands(per_client as u64)
    );
    println!(
        "  {:<60} {:>10} bytes",
        format!("  (the handler: {MAX_CLIENTS} slots, less core, resolver and policy)"),
        thousands((handler - around) as u64)
    );
    for t in tables {
        println!(
            "  {:<60} {:>10} bytes ({} tables of 4 KiB)",
            format!("page tables per GiB mapped, {}", t.layout),
            thousands(t.bytes as u64),
            t.tables
        );
    }
    println!("  (on seL4, each registered frame cap also takes one slot of the server's CSpace: 32 bytes of kernel memory)");
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ------------------------------------------------------------- handler ----

type HandleFn = Box<dyn FnMut(u64, &[u8], &[ReceivedCap], &mut [u8]) -> usize>;
type Server = Rc<RefCell<Handler<Core, FakeFrames>>>;
type Client = Iommu<InProcess<HandleFn, ReceivedCap>>;

const BADGE: u64 = 0x10;

static CLIENTS: [ClientPolicy; 1] = [ClientPolicy {
    name: "bench",
    badge: BADGE,
    streams: &[StreamGrant::new(StreamId(SID))],
    quotas: Quotas {
        domains: 4,
        mapped_bytes: 64 << 20,
        mappings: 128,
        pt_pages: 64,
        asids: 4,
        memory_regions: 8,
        memory_frames: 128,
    },
}];
static POLICY: Policy = Policy::new(&CLIENTS);

fn bench_handler(mode: Mode) {
    header("request handler via the client API (InProcess transport) on the model");
    let m = machine();
    let core = core_on(&m);
    let server: Server = Rc::new(RefCell::new(
        Handler::new(core, FakeFrames::new(), POLICY).expect("policy"),
    ));
    server.borrow_mut().grant_everything();
    let handle: HandleFn = {
        let s = server.clone();
        Box::new(move |b, req, caps, out| s.borrow_mut().handle(b, req, caps, out))
    };
    let mut c: Client = Iommu::connect(InProcess::new(BADGE, handle)).expect("hello");

    // Memory: one 2 MiB frame (2 MiB aligned), and 64 separate 4 KiB frames.
    let big_pa = m.mem.alloc_buffer(BLOCK as usize, BLOCK as usize).unwrap();
    let big_cap = server.borrow_mut().resolver_mut().frame(big_pa, BLOCK);
    let big = c.register_memory(&[big_cap]).unwrap();
    let mut small_caps = Vec::new();
    for _ in 0..64 {
        let pa = m.mem.alloc_buffer(PAGE as usize, PAGE as usize).unwrap();
        small_caps.push(server.borrow_mut().resolver_mut().frame(pa, PAGE));
    }
    let small = c.register_memory(&small_caps).unwrap();
    let d = c.alloc_domain().unwrap();
    let rw = WirePerms::RW;
    let iova = 0x4000_0000u64;

    let stats = |s: &Server| s.borrow().core().stats();
    let (mut map, mut unmap) = (Meter::default(), Meter::default());
    for i in 0..mode.small() {
        let va = iova + (i % 512) * PAGE;
        timed!(
            map,
            &m,
            stats(&server),
            c.map(d, va, small.handle, 0, PAGE, rw).unwrap()
        );
        timed!(unmap, &m, stats(&server), c.unmap(d, va, PAGE).unwrap());
    }
    row("Map 4 KiB", &map);
    row("Unmap 4 KiB", &unmap);

    let (mut map, mut unmap) = (Meter::default(), Meter::default());
    for _ in 0..mode.large() {
        timed!(
            map,
            &m,
            stats(&server),
            c.map(d, iova, big.handle, 0, BLOCK, rw).unwrap()
        );
        timed!(unmap, &m, stats(&server), c.unmap(d, iova, BLOCK).unwrap());
    }
    row("Map 2 MiB of one 2 MiB frame (a block)", &map);
    row("Unmap 2 MiB block", &unmap);

    // 512 frames of 4 KiB in one MapBatch: 8 entries × the 64-frame region
    // (a handle holds at most 64 frames, a client 128 mapping records).
    let regions: Vec<Region> = (0..8)
        .map(|k| Region {
            iova: iova + k * 64 * PAGE,
            memory: small.handle,
            offset: 0,
            len: 64 * PAGE,
            perms: rw,
        })
        .collect();
    let (mut map, mut unmap) = (Meter::default(), Meter::default());
    for _ in 0..mode.large() {
        timed!(map, &m, stats(&server), c.map_batch(d, &regions).unwrap());
        timed!(unmap, &m, stats(&server), c.unmap(d, iova, BLOCK).unwrap());
    }
    row("MapBatch 2 MiB = 512 × 4 KiB frames (8 × 64)", &map);
    row("Unmap 512 contiguous pages (one call)", &unmap);

    let (mut attach, mut detach) = (Meter::default(), Meter::default());
    for _ in 0..mode.small() {
        timed!(
            attach,
            &m,
            stats(&server),
            c.attach(StreamId(SID), Ssid(0), d).unwrap()
        );
        timed!(
            detach,
            &m,
            stats(&server),
            c.detach(StreamId(SID), Ssid(0)).unwrap()
        );
    }
    row("Attach", &attach);
    row("Detach", &detach);

    let mut faults = Meter::default();
    for _ in 0..mode.small() {
        let b = timed!(faults, &m, stats(&server), c.faults().unwrap());
        assert!(b.records.is_empty());
    }
    row("Faults (none pending: the call floor)", &faults);
}

fn main() {
    let mode = Mode::from_env();
    println!(
        "iommu-bench: server core and handler on the software SMMUv3 (QEMU 7.2 features){}",
        if mode.quick { ", quick run" } else { "" }
    );
    println!(
        "  iterations: {} per 4 KiB / attach row, {} per 2 MiB row; host time includes the model's emulation",
        mode.small(),
        mode.large()
    );
    let tables = bench_core(mode);
    bench_handler(mode);
    memory_per_client(&tables);
}

#[cfg(test)]
mod tests {
    /// `cargo test` (and so `.ci/run`) runs the quick benchmark: it must
    /// build, run and print; it never judges speed.
    #[test]
    fn quick_run() {
        let mode = super::Mode { quick: true };
        let tables = super::bench_core(mode);
        super::bench_handler(mode);
        super::memory_per_client(&tables);
    }
}
