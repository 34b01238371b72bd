//! `cargo xtask bench [--iterations N] [--quick] [--profile]`: the cost of IOMMU
//! operations in the booted image, against Linux's in-kernel DMA and IOMMU
//! APIs (issue 14) and Linux's arm-smmu-v3 behind VFIO (issue 8) on the
//! same emulated SMMU, and the throughput of two clients in two bands.
//!
//! Builds the `bench` system (kernel without debug support) and boots it
//! under `-icount shift=0`, so one guest instruction is one virtual
//! nanosecond and the bench driver's CNTVCT_EL0 timings are instruction
//! counts, repeatable from run to run. The driver prints its totals; the
//! SMMU commands of each operation come from QEMU's own trace
//! (`smmuv3_cmdq_opcode`), attributed to operations by the markers the
//! driver writes to the PL011 before and after each timed call
//! (`pl011_write`, in the same trace, in order).
//!
//! Last, the `bench-blk` system: the NVMe block driver (`blk-driver` in its
//! `blk-bench` role) times 4 KiB random reads with each buffer mapped and
//! unmapped per request and with a premapped buffer pool; the table says
//! what the I/O rate is and how much of each read the IOMMU server calls
//! take (issue 15).

use crate::{image, qemu, system, Ctx, Tally};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The system the benchmark boots for its rows (one client, one band).
const SYSTEM: &str = "bench";
/// The system it boots for the throughput under contention (two clients,
/// each in a band of its own).
const CONTENTION_SYSTEM: &str = "bench-contention";
/// The system it boots for the block driver's reads (an NVMe disk).
const BLK_SYSTEM: &str = "bench-blk";

/// Linux 6.1 (Debian 12), arm-smmu-v3 behind VFIO type1, per ioctl from user
/// space and back, same QEMU machine under `-icount shift=0` (issue 8).
const VFIO_MAP_4K: f64 = 4_900.0;
const VFIO_UNMAP_4K: f64 = 4_800.0;
const VFIO_MAP_2M: f64 = 340_000.0;
const VFIO_UNMAP_2M: f64 = 260_000.0;
/// The issue 8 target: at most this fraction of Linux's VFIO cost.
const VFIO_TARGET: f64 = 0.3;

/// Linux 6.1.0-57 (Debian 12) in-kernel, strict mode, a module bound to the
/// edu, same QEMU machine under `-icount shift=0`, 200 iterations x 5 boots
/// (issue 14; DESIGN.md section 7): the DMA API and the raw IOMMU API on an
/// unmanaged domain.
const DMA_MAP_SINGLE_4K: f64 = 938.0;
const DMA_UNMAP_SINGLE_4K: f64 = 2_095.0;
const DMA_MAP_SINGLE_2M: f64 = 1_151.0;
const DMA_UNMAP_SINGLE_2M: f64 = 2_279.0;
const DMA_MAP_SG_512: f64 = 355_107.0;
const DMA_UNMAP_SG_512: f64 = 3_070.0;
const IOMMU_MAP_2M_BLOCK: f64 = 566.0;
const IOMMU_UNMAP_2M_BLOCK: f64 = 1_653.0;
const IOMMU_MAP_512_PAGES: f64 = 13_400.0;
const IOMMU_UNMAP_LEAF_TABLE: f64 = 1_955.0;

/// Pages in 2 MiB (rows that Linux measured for 512 pages).
const FULL_PAGES: u64 = 512;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    /// The driver's name for the operation.
    key: &'static str,
    /// What it is.
    what: String,
    /// Linux's in-kernel figures for the same work: the DMA API's first,
    /// then the raw IOMMU API's (empty: no comparable figure).
    kernel: Vec<f64>,
    /// Which Linux operations those are.
    linux: &'static str,
    /// Issue 14's goal for the row (at most this many instructions).
    goal: Option<f64>,
    /// Linux's VFIO figure (issue 8).
    vfio: Option<f64>,
}

/// The rows, in the order of issue 14's table, then the others. Rows whose
/// shape depends on what the server accepts are adjusted by
/// [`Row::adjust`].
fn rows() -> Vec<Row> {
    let row = |key, what: &str, kernel: &[f64], linux, goal, vfio| Row {
        key,
        what: what.to_string(),
        kernel: kernel.to_vec(),
        linux,
        goal,
        vfio,
    };
    vec![
        row(
            "faults",
            "faults, nothing pending (the call floor)",
            &[],
            "",
            None,
            None,
        ),
        row(
            "map-4k",
            "map 4 KiB (1 Map)",
            &[DMA_MAP_SINGLE_4K],
            "dma_map_single 4 KiB",
            Some(938.0),
            Some(VFIO_MAP_4K),
        ),
        row(
            "unmap-4k",
            "unmap 4 KiB (1 Unmap: TLBI + CMD_SYNC)",
            &[DMA_UNMAP_SINGLE_4K],
            "dma_unmap_single 4 KiB",
            Some(1_000.0),
            Some(VFIO_UNMAP_4K),
        ),
        row(
            "map-2m-block",
            "map 2 MiB as one block (1 Map of a 2 MiB frame)",
            &[DMA_MAP_SINGLE_2M, IOMMU_MAP_2M_BLOCK],
            "dma_map_single 2 MiB contiguous / iommu_map 2 MiB block",
            Some(938.0),
            Some(VFIO_MAP_2M),
        ),
        row(
            "unmap-2m-block",
            "unmap the 2 MiB block (1 Unmap)",
            &[DMA_UNMAP_SINGLE_2M, IOMMU_UNMAP_2M_BLOCK],
            "dma_unmap_single 2 MiB / iommu_unmap 2 MiB block",
            Some(1_200.0),
            Some(VFIO_UNMAP_2M),
        ),
        row(
            "map-contig",
            "map 512 contiguous 4 KiB pages, 4 KiB off 2 MiB (1 Map)",
            &[IOMMU_MAP_512_PAGES],
            "iommu_map 512 contiguous 4 KiB pages, 4 KiB-aligned",
            Some(IOMMU_MAP_512_PAGES),
            Some(VFIO_MAP_2M),
        ),
        row(
            "unmap-leaf-table",
            "unmap those 512 pages: one whole leaf table (1 Unmap)",
            &[IOMMU_UNMAP_LEAF_TABLE],
            "iommu_unmap 2 MiB of 512 pages filling one leaf table",
            Some(IOMMU_UNMAP_LEAF_TABLE),
            Some(VFIO_UNMAP_2M),
        ),
        row(
            "map-frames",
            "map 2 MiB = 512 registered 4 KiB frames (1 Map)",
            &[IOMMU_MAP_512_PAGES],
            "iommu_map 512 contiguous 4 KiB pages, 4 KiB-aligned",
            Some(IOMMU_MAP_512_PAGES),
            Some(VFIO_MAP_2M),
        ),
        row(
            "unmap-frames",
            "unmap those 512 frames: one whole leaf table (1 Unmap)",
            &[IOMMU_UNMAP_LEAF_TABLE],
            "iommu_unmap 2 MiB of 512 pages filling one leaf table",
            Some(IOMMU_UNMAP_LEAF_TABLE),
            Some(VFIO_UNMAP_2M),
        ),
        row(
            "map-2m-batch",
            "map 512 scattered 4 KiB pages (1 MapBatch, 8 x 64 frames)",
            &[DMA_MAP_SG_512],
            "dma_map_sg 512 scattered pages",
            Some(IOMMU_MAP_512_PAGES),
            Some(VFIO_MAP_2M),
        ),
        row(
            "unmap-2m",
            "unmap the 512 scattered pages: one whole leaf table (1 Unmap)",
            &[DMA_UNMAP_SG_512, IOMMU_UNMAP_LEAF_TABLE],
            "dma_unmap_sg 512 pages / iommu_unmap 2 MiB of a leaf table",
            Some(IOMMU_UNMAP_LEAF_TABLE),
            Some(VFIO_UNMAP_2M),
        ),
        row(
            "map-256k",
            "map 256 KiB = 64 frames (1 Map) [VFIO x64/512]",
            &[],
            "",
            None,
            Some(VFIO_MAP_2M * 64.0 / 512.0),
        ),
        row(
            "unmap-256k",
            "unmap 256 KiB (1 Unmap) [VFIO x64/512]",
            &[],
            "",
            None,
            Some(VFIO_UNMAP_2M * 64.0 / 512.0),
        ),
        row(
            "attach",
            "attach (stream abort -> domain)",
            &[],
            "",
            None,
            None,
        ),
        row("detach", "detach (domain -> abort)", &[], "", None, None),
    ]
}

/// How the driver ran a row whose shape depends on the server
/// (`bench: variant <op> pages=<n> handles=<k>`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Variant {
    pages: u64,
    handles: u64,
}

impl Row {
    /// The registered-frames rows as they really ran: fewer than 512
    /// frames (the server's limits) scale Linux's figures and the goal by
    /// pages/512 for the map; the unmap of a part of a leaf table has no
    /// Linux figure (only VFIO's, scaled). More than one handle is one
    /// `MapBatch`, an entry per handle.
    fn adjust(mut self, v: Option<&Variant>) -> Row {
        let Some(v) = v else { return self };
        let calls = if v.handles > 1 {
            format!("{} handles, 1 MapBatch", v.handles)
        } else {
            "1 Map".to_string()
        };
        if v.pages == FULL_PAGES {
            if self.key == "map-frames" {
                self.what = format!("map 2 MiB = 512 registered 4 KiB frames ({calls})");
            }
            return self;
        }
        let scale = v.pages as f64 / FULL_PAGES as f64;
        let tag = format!("x{}/{FULL_PAGES}", v.pages);
        self.vfio = self.vfio.map(|x| x * scale);
        if self.key == "map-frames" {
            self.what = format!("map {} contig. 4 KiB frames ({calls}) [{tag}]", v.pages);
            self.kernel = self.kernel.iter().map(|x| x * scale).collect();
            self.goal = self.goal.map(|x| x * scale);
        } else {
            self.what = format!("unmap those {} frames (1 Unmap) [VFIO {tag}]", v.pages);
            self.kernel.clear();
            self.linux = "";
            self.goal = None;
        }
        self
    }
}

/// Options of `cargo xtask bench`.
struct Options {
    iterations: Option<u64>,
    /// Profile instead of timing (`--profile`, see `profile.rs`).
    profile: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        iterations: None,
        profile: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.iterations = Some(20),
            "--profile" => o.profile = true,
            "--iterations" => {
                o.iterations = Some(
                    it.next()
                        .context("--iterations needs a number")?
                        .parse()
                        .context("--iterations needs a number")?,
                )
            }
            other => bail!("unknown option {other} (use --iterations N, --quick or --profile)"),
        }
    }
    Ok(o)
}

/// The bench driver reads its iteration count at compile time.
fn set_iterations(n: Option<u64>) {
    match n {
        Some(n) => std::env::set_var("BENCH_ITERATIONS", n.to_string()),
        None => std::env::remove_var("BENCH_ITERATIONS"),
    }
}

/// For `cargo xtask test`: the benchmark images build (they are not
/// booted).
pub fn build_check(ctx: &Ctx) -> Tally {
    set_iterations(None);
    let mut tally = Tally::default();
    for system in [SYSTEM, CONTENTION_SYSTEM, BLK_SYSTEM] {
        println!("== benchmark image builds (cargo xtask image {system})");
        match image::build(ctx, system) {
            Ok(_) => {
                println!("test {system}-image-builds ... ok");
                tally.passed += 1;
            }
            Err(e) => {
                println!("test {system}-image-builds ... FAILED: {e:#}");
                tally.failed += 1;
            }
        }
    }
    tally
}

/// What the driver printed for one operation.
#[derive(Debug, Default, Clone, Copy)]
struct Timing {
    iters: u64,
    ns: u64,
    min: u64,
    max: u64,
}

/// Commands QEMU's SMMU consumed during one operation's timed calls.
#[derive(Debug, Default, Clone, Copy)]
struct Commands {
    total: u64,
    syncs: u64,
    tlbis: u64,
    cfgis: u64,
}

pub fn run(ctx: &Ctx, args: &[String]) -> Result<()> {
    let options = parse(args)?;
    set_iterations(options.iterations);
    if options.profile {
        let image = image::build(ctx, SYSTEM)?;
        let desc = system::load(&ctx.root, SYSTEM)?;
        let out_dir = ctx.build.join("images").join(SYSTEM);
        let kernel = crate::kernel::build_kernel(ctx, desc.kernel.flavour())?;
        let order: Vec<&str> = rows().iter().map(|r| r.key).collect();
        return crate::profile::run(
            &crate::profile::Target {
                image: &image,
                edu: desc.qemu.edu.as_deref().unwrap_or("edu"),
                devices: &desc.qemu.devices,
                driver: &image::process_elf(ctx, &kernel, "bench-driver"),
                server: &image::process_elf(ctx, &kernel, "iommu-serverd"),
                kernel: &kernel.elf,
            },
            &out_dir.join("profile.log"),
            &order,
        );
    }
    let started = Instant::now();
    let rows = boot(ctx, SYSTEM, true)?;
    let commands = parse_trace(
        &std::fs::read_to_string(rows.trace.as_ref().expect("traced"))
            .context("reading the trace")?,
    );
    let contention = boot(ctx, CONTENTION_SYSTEM, false)?;
    let blk = boot(ctx, BLK_SYSTEM, true)?;
    let blk_commands = parse_trace(
        &std::fs::read_to_string(blk.trace.as_ref().expect("traced"))
            .context("reading the trace")?,
    );
    print_table(
        &parse_serial(&rows.serial),
        &commands,
        &parse_variants(&rows.serial),
        started.elapsed(),
    );
    print_throughput(&parse_throughput(&contention.serial));
    print_blk(&parse_blk(&blk.serial), &blk_commands);
    Ok(())
}

/// What one benchmark boot left.
struct Run {
    serial: String,
    /// QEMU's trace of SMMU commands and PL011 writes, when asked for.
    trace: Option<PathBuf>,
}

/// Builds and boots `system` under `-icount shift=0` until its driver says
/// `bench: done` (an error otherwise, with the serial output shown).
fn boot(ctx: &Ctx, system: &str, traced: bool) -> Result<Run> {
    let image = image::build(ctx, system)?;
    let desc = system::load(&ctx.root, system)?;
    let out_dir = ctx.build.join("images").join(system);
    let edu = desc.qemu.edu.as_deref().unwrap_or("edu");
    let trace = traced.then(|| out_dir.join("bench-trace.log"));
    let mut cmd = qemu::command(&image, edu, &desc.qemu.devices, true);
    qemu::attach_disk(ctx, system, &desc, &mut cmd)?;
    if let Some(trace) = &trace {
        let _ = std::fs::remove_file(trace);
        cmd.args([
            "-trace",
            "smmuv3_cmdq_opcode",
            "-trace",
            "pl011_write",
            "-D",
        ])
        .arg(trace);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let timeout = Duration::from_secs(desc.qemu.timeout_secs.unwrap_or(300));
    println!("bench: booting {system} under -icount shift=0 (limit {timeout:?})");
    let started = Instant::now();
    let mut child = cmd.spawn().context("could not start qemu-system-aarch64")?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let serial = String::from_utf8_lossy(&reader.join().unwrap_or_default()).replace('\r', "");
    std::fs::write(out_dir.join("bench-serial.log"), &serial)?;
    if status.map(|s| s.code()) != Some(Some(0))
        || !serial.contains("bench: done")
        || serial.contains("bench: FAILED")
    {
        for line in serial.lines().filter(|l| !l.starts_with('@')) {
            println!("  | {line}");
        }
        bail!(
            "the benchmark ({system}) did not finish cleanly ({}; serial log in {})",
            match status {
                None => format!("killed after {timeout:?}"),
                Some(s) => format!("{s}"),
            },
            out_dir.join("bench-serial.log").display()
        );
    }
    println!(
        "bench: {system} ran in {:.1?} wall clock",
        started.elapsed()
    );
    Ok(Run { serial, trace })
}

/// `bench: <op> iters=<n> ns=<total> min=<ns> max=<ns>` lines.
fn parse_serial(serial: &str) -> BTreeMap<String, Timing> {
    let mut out = BTreeMap::new();
    for line in serial.lines() {
        let Some(rest) = line.strip_prefix("bench: ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(op) = words.next() else { continue };
        let mut t = Timing::default();
        let mut seen = 0;
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            seen += 1;
            match k {
                "iters" => t.iters = v,
                "ns" => t.ns = v,
                "min" => t.min = v,
                "max" => t.max = v,
                _ => seen -= 1,
            }
        }
        if seen == 4 {
            out.insert(op.to_string(), t);
        }
    }
    out
}

/// `key=value` words of a driver line, as numbers.
fn fields(words: std::str::SplitWhitespace<'_>) -> BTreeMap<&str, u64> {
    words
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect()
}

/// The `<prefix><name> <key>=<n> ...` lines of `serial`: each line's name
/// and its numeric fields.
fn tagged<'a>(
    serial: &'a str,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, BTreeMap<&'a str, u64>)> + 'a {
    serial.lines().filter_map(move |line| {
        let mut words = line.strip_prefix(prefix)?.split_whitespace();
        let name = words.next()?;
        Some((name, fields(words)))
    })
}

/// `bench: variant <op> pages=<n> handles=<k>` lines.
fn parse_variants(serial: &str) -> BTreeMap<String, Variant> {
    let mut out = BTreeMap::new();
    for (op, f) in tagged(serial, "bench: variant ") {
        if let (Some(&pages), Some(&handles)) = (f.get("pages"), f.get("handles")) {
            out.insert(op.to_string(), Variant { pages, handles });
        }
    }
    out
}

/// One contention phase: operations, virtual nanoseconds, and how often
/// the driver was switched out during it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Phase {
    ops: u64,
    ns: u64,
    switched: u64,
}

/// `bench: throughput <phase> ops=<n> ns=<total>` lines.
fn parse_throughput(serial: &str) -> BTreeMap<String, Phase> {
    let mut out = BTreeMap::new();
    for (phase, f) in tagged(serial, "bench: throughput ") {
        if let (Some(&ops), Some(&ns)) = (f.get("ops"), f.get("ns")) {
            let switched = f.get("switched").copied().unwrap_or(0);
            out.insert(phase.to_string(), Phase { ops, ns, switched });
        }
    }
    out
}

/// Commands per operation: QEMU's trace of the PL011 data register spells
/// the driver's `@<op>` / `@` marker lines; each `smmuv3_cmdq_opcode` in
/// between belongs to that operation.
fn parse_trace(trace: &str) -> BTreeMap<String, Commands> {
    let mut out: BTreeMap<String, Commands> = BTreeMap::new();
    let mut markers = Markers::default();
    for l in trace.lines() {
        if markers.feed(l) {
            continue;
        }
        if let Some(i) = l.find("smmuv3_cmdq_opcode") {
            let Some(op) = &markers.current else { continue };
            let c = out.entry(op.clone()).or_default();
            let name = &l[i..];
            c.total += 1;
            if name.contains("CMD_SYNC") {
                c.syncs += 1;
            } else if name.contains("TLBI") {
                c.tlbis += 1;
            } else if name.contains("CFGI") {
                c.cfgis += 1;
            }
        }
    }
    out
}

/// The bench driver's `@<op>` / `@` marker lines, spelled out by QEMU's
/// trace of the PL011 data register (`pl011_write`), one byte a line.
#[derive(Default)]
pub(crate) struct Markers {
    line: String,
    /// The operation whose timed calls are running.
    pub current: Option<String>,
}

impl Markers {
    /// Takes one trace line; true if it was a PL011 data write.
    pub fn feed(&mut self, l: &str) -> bool {
        let Some(i) = l.find("pl011_write ") else {
            return false;
        };
        // "pl011_write addr 0x00000000 value 0x0000000a"
        let mut f = l[i..].split_whitespace();
        let (addr, value) = (f.nth(2), f.nth(1));
        let parse = |s: Option<&str>| {
            s.and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        };
        if parse(addr) != Some(0) {
            return false; // not the data register
        }
        let Some(byte) = parse(value) else {
            return true;
        };
        match byte as u8 {
            b'\n' => {
                if let Some(op) = self.line.strip_prefix('@') {
                    self.current = (!op.is_empty()).then(|| op.to_string());
                }
                self.line.clear();
            }
            b'\r' => {}
            b => self.line.push(b as char),
        }
        true
    }
}

fn qemu_version() -> String {
    std::process::Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "QEMU (version unknown)".into())
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
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

/// `a / b` of the figures, each as `f` formats it.
fn joined(xs: &[f64], f: impl Fn(f64) -> String) -> String {
    xs.iter().map(|&x| f(x)).collect::<Vec<_>>().join(" / ")
}

/// The table of operations, as printed; and the rows above their goal
/// (issue 14) and above the VFIO target (issue 8).
fn table(
    timings: &BTreeMap<String, Timing>,
    commands: &BTreeMap<String, Commands>,
    variants: &BTreeMap<String, Variant>,
) -> (String, Vec<String>, Vec<String>) {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<64} {:>9} {:>9} {:>9} {:>7} {:>5} {:>5} {:>5}  {:>15} {:>15} {:>11}  {:>9} {:>6}  Linux in-kernel operation",
        "operation",
        "instr/op",
        "min",
        "max",
        "cmds/op",
        "syncs",
        "tlbi",
        "cfgi",
        "Linux in-kernel",
        "ratio",
        "goal",
        "VFIO",
        "ratio"
    );
    let (mut over_goal, mut over_vfio) = (Vec::new(), Vec::new());
    for row in rows() {
        let variant = variants.get(row.key);
        let row = row.adjust(variant);
        let Some(t) = timings.get(row.key) else {
            let _ = writeln!(out, "{:<64} (not measured)", row.what);
            continue;
        };
        let n = t.iters.max(1) as f64;
        let per = t.ns as f64 / n;
        let c = commands.get(row.key).copied().unwrap_or_default();
        let (kernel, ratio) = if row.kernel.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                joined(&row.kernel, thousands),
                joined(&row.kernel, |l| format!("{:.2}x", per / l)),
            )
        };
        let goal = match row.goal {
            Some(g) if per <= g => format!("<={} ok", thousands(g)),
            Some(g) => {
                over_goal.push(format!("{} {} > {}", row.key, thousands(per), thousands(g)));
                format!("<={} NO", thousands(g))
            }
            None => "-".into(),
        };
        let (vfio, vfio_ratio) = match row.vfio {
            Some(l) => {
                let r = per / l;
                if r > VFIO_TARGET {
                    over_vfio.push(format!("{} {r:.3}x", row.key));
                }
                (thousands(l), format!("{r:.3}x"))
            }
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<64} {:>9} {:>9} {:>9} {:>7.2} {:>5.2} {:>5.2} {:>5.2}  {:>15} {:>15} {:>11}  {:>9} {:>6}  {}",
            row.what,
            thousands(per),
            thousands(t.min as f64),
            thousands(t.max as f64),
            c.total as f64 / n,
            c.syncs as f64 / n,
            c.tlbis as f64 / n,
            c.cfgis as f64 / n,
            kernel,
            ratio,
            goal,
            vfio,
            vfio_ratio,
            row.linux
        );
    }
    if let (Some(a), Some(d)) = (timings.get("attach"), timings.get("detach")) {
        let n = a.iters.max(1) as f64;
        let _ = writeln!(
            out,
            "{:<64} {:>9}",
            "attach + detach",
            thousands((a.ns + d.ns) as f64 / n)
        );
    }
    (out, over_goal, over_vfio)
}

fn print_table(
    timings: &BTreeMap<String, Timing>,
    commands: &BTreeMap<String, Commands>,
    variants: &BTreeMap<String, Variant>,
    wall: Duration,
) {
    let iters = timings.values().map(|t| t.iters).max().unwrap_or(0);
    println!();
    println!(
        "bench: {}, -icount shift=0 (guest instructions = virtual ns), seL4 release kernel, {} iterations per operation, {:.1?} wall clock",
        qemu_version(),
        iters,
        wall
    );
    println!("Linux: 6.1 on the same machine; in-kernel = DMA API (strict) / raw IOMMU API, ratio = ours / theirs (issue 14); VFIO = type1 ioctls from user space (issue 8)");
    let (table, over_goal, over_vfio) = table(timings, commands, variants);
    print!("{table}");
    println!(
        "goal (issue 14, at or below Linux in-kernel, our IPC included): {}",
        if over_goal.is_empty() {
            "every row with a goal meets it".to_string()
        } else {
            format!("above it: {}", over_goal.join("; "))
        }
    );
    println!(
        "VFIO target (issue 8): at most {VFIO_TARGET}x; {}",
        if over_vfio.is_empty() {
            "every compared operation meets it".to_string()
        } else {
            format!("above it: {}", over_vfio.join("; "))
        }
    );
}

/// The contention phases as printed: each client alone, their sum (one
/// after the other), both at once, and the ratio of the two throughputs.
fn throughput_table(phases: &BTreeMap<String, Phase>) -> Option<String> {
    use std::fmt::Write;
    let get = |k: &str| phases.get(k).copied();
    let (a, b, both) = (get("alone-driver")?, get("alone-peer")?, get("together")?);
    let seq = Phase {
        ops: a.ops + b.ops,
        ns: a.ns + b.ns,
        switched: 0,
    };
    let rate = |p: Phase| p.ops as f64 * 1e9 / p.ns.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<64} {:>9} {:>12} {:>9} {:>16}",
        "throughput (map 4 KiB + unmap 4 KiB pairs)",
        "ops",
        "virtual ms",
        "instr/op",
        "ops per virt. s"
    );
    for (what, p) in [
        ("bench-driver alone (band 1: the server's main thread)", a),
        ("bench-peer alone (band 2: server thread band-2)", b),
        ("both, one after the other", seq),
        ("both at once, interleaved (two bands, contention)", both),
    ] {
        let _ = writeln!(
            out,
            "{:<64} {:>9} {:>12.2} {:>9} {:>16}",
            what,
            thousands(p.ops as f64),
            p.ns as f64 / 1e6,
            thousands(p.ns as f64 / p.ops.max(1) as f64),
            thousands(rate(p))
        );
    }
    if let Some(part) = get("together-driver") {
        let _ = writeln!(
            out,
            "(at once: bench-driver's part ended after {:.2} of the {:.2} virtual ms, and it was switched out {} times in it)",
            part.ns as f64 / 1e6,
            both.ns as f64 / 1e6,
            part.switched
        );
    }
    let _ = writeln!(
        out,
        "at once / one after the other: {:.3}x the throughput",
        rate(both) / rate(seq)
    );
    Some(out)
}

fn print_throughput(phases: &BTreeMap<String, Phase>) {
    println!();
    match throughput_table(phases) {
        Some(t) => print!("{t}"),
        None => println!("throughput under contention: not measured"),
    }
}

/// One mode of the block driver's reads (`bench: blk <mode> ...`): sums
/// over its timed reads, in virtual nanoseconds (= guest instructions).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct BlkMode {
    ios: u64,
    /// From entering the driver's read to its result.
    ns: u64,
    /// Inside `DmaDomain::map_single` / `unmap`.
    map: u64,
    unmap: u64,
    /// From the doorbell write to the completion seen (polling).
    device: u64,
    /// Polling the server's fault notification after each completion.
    fault_poll: u64,
    /// One read's least and most device wait.
    device_min: u64,
    device_max: u64,
}

impl BlkMode {
    /// Everything but the device wait: the driver, the kernel, the IOMMU
    /// server.
    fn cpu(&self) -> u64 {
        self.ns.saturating_sub(self.device)
    }

    fn iommu(&self) -> u64 {
        self.map + self.unmap
    }
}

/// The modes of `bench-blk`, in the order of the table: the driver's name,
/// what the table calls it.
const BLK_MODES: [(&str, &str); 3] = [
    (
        "strict",
        "per-request map_single + unmap (beside the queues)",
    ),
    (
        "strict-neighbour",
        "the same, one more page mapped beside the buffer",
    ),
    ("pool", "premapped pool (map_persistent once)"),
];

/// `bench: blk <mode> ios=<n> ns=<total> ...` lines.
fn parse_blk(serial: &str) -> BTreeMap<String, BlkMode> {
    let mut out = BTreeMap::new();
    for (mode, f) in tagged(serial, "bench: blk ") {
        let get = |k: &str| f.get(k).copied();
        if let (Some(ios), Some(ns)) = (get("ios"), get("ns")) {
            out.insert(
                mode.to_string(),
                BlkMode {
                    ios,
                    ns,
                    map: get("map").unwrap_or(0),
                    unmap: get("unmap").unwrap_or(0),
                    device: get("device").unwrap_or(0),
                    fault_poll: get("faultpoll").unwrap_or(0),
                    device_min: get("devmin").unwrap_or(0),
                    device_max: get("devmax").unwrap_or(0),
                },
            );
        }
    }
    out
}

/// The block driver's table, as printed (None: no mode measured).
fn blk_table(
    modes: &BTreeMap<String, BlkMode>,
    commands: &BTreeMap<String, Commands>,
) -> Option<String> {
    use std::fmt::Write;
    if modes.is_empty() {
        return None;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<58} {:>5} {:>10} {:>13} {:>9} {:>9} {:>9} {:>13} {:>7} {:>7} {:>8} {:>8} {:>8}",
        "4 KiB random reads, queue depth 1, polled (NVMe)",
        "I/Os",
        "virt. ms",
        "I/Os/virt. s",
        "instr/IO",
        "dev.wait",
        "CPU path",
        "CPU-bound/s",
        "map",
        "unmap",
        "IOMMU %",
        "% of CPU",
        "cmds/IO"
    );
    let per = |x: u64, m: &BlkMode| x as f64 / m.ios.max(1) as f64;
    let rate = |ns: u64, m: &BlkMode| m.ios as f64 * 1e9 / ns.max(1) as f64;
    let pct = |x: u64, of: u64| 100.0 * x as f64 / of.max(1) as f64;
    for (key, what) in BLK_MODES {
        let Some(m) = modes.get(key) else {
            let _ = writeln!(out, "{what:<58} (not measured)");
            continue;
        };
        let cmds = commands.get(&format!("blk-{key}")).map_or(0, |c| c.total);
        let _ = writeln!(
            out,
            "{:<58} {:>5} {:>10.3} {:>13} {:>9} {:>9} {:>9} {:>13} {:>7} {:>7} {:>7.1}% {:>7.1}% {:>8.2}",
            what,
            m.ios,
            m.ns as f64 / 1e6,
            thousands(rate(m.ns, m)),
            thousands(per(m.ns, m)),
            thousands(per(m.device, m)),
            thousands(per(m.cpu(), m)),
            thousands(rate(m.cpu(), m)),
            thousands(per(m.map, m)),
            thousands(per(m.unmap, m)),
            pct(m.iommu(), m.ns),
            pct(m.iommu(), m.cpu()),
            per(cmds, m)
        );
    }
    if let (Some(s), Some(p)) = (modes.get("strict"), modes.get("pool")) {
        let _ = writeln!(
            out,
            "per-request mapping: {} more instructions per read on the CPU path than the pool ({} of them inside map_single + unmap); the pool does {:.2}x the CPU-bound reads per virtual second",
            thousands(per(s.cpu(), s) - per(p.cpu(), p)),
            thousands(per(s.iommu(), s)),
            rate(p.cpu(), p) / rate(s.cpu(), s)
        );
    }
    let (lo, hi) = modes.values().fold((u64::MAX, 0), |(lo, hi), m| {
        (lo.min(m.device_min), hi.max(m.device_max))
    });
    let poll = modes
        .values()
        .map(|m| per(m.fault_poll, m))
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "instr/IO: virtual ns (= guest instructions) from the driver's read call to its result, mean; virt. ms: their sum; I/Os/virt. s: I/Os / virt. ms"
    );
    let _ = writeln!(
        out,
        "dev.wait: from the doorbell write to the completion seen, the driver polling; only what the guest ran meanwhile counts, which depends on the host (one read: {} to {}): not reproducible",
        thousands(lo as f64),
        thousands(hi as f64)
    );
    let _ = writeln!(
        out,
        "CPU path: instr/IO less dev.wait, the driver, the kernel and the IOMMU server ({} of it the driver's poll of the server's fault notification): reproducible; CPU-bound/s: I/Os per virtual second of it",
        thousands(poll)
    );
    let _ = writeln!(
        out,
        "map, unmap: per read, inside DmaDomain::map_single / ::unmap as the driver sees them: IOVA allocation, the IPC call and reply, the server's work (the unmap's reply comes after its TLBI + CMD_SYNC)"
    );
    let _ = writeln!(
        out,
        "IOMMU %: (map + unmap) / instr/IO; % of CPU: (map + unmap) / CPU path; cmds/IO: SMMU commands per read in QEMU's trace"
    );
    Some(out)
}

fn print_blk(modes: &BTreeMap<String, BlkMode>, commands: &BTreeMap<String, Commands>) {
    println!();
    match blk_table(modes, commands) {
        Some(t) => print!("{t}"),
        None => println!("block driver reads: not measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_driver_lines_and_trace_markers() {
        let t = parse_serial(
            "bench: counter 62500000 Hz\nbench: map-4k iters=2 ns=100 min=40 max=60\n@map-4k\n",
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t["map-4k"].ns, 100);
        let mut trace = String::new();
        for b in b"@unmap-4k\n" {
            trace += &format!("pl011_write addr 0x00000000 value 0x{b:08x}\n");
        }
        trace +=
            "smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n";
        for b in b"@\n" {
            trace += &format!("pl011_write addr 0x00000000 value 0x{b:08x}\n");
        }
        trace += "smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n";
        let c = parse_trace(&trace);
        assert_eq!(
            (
                c["unmap-4k"].total,
                c["unmap-4k"].syncs,
                c["unmap-4k"].tlbis
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn the_registered_frames_rows_follow_what_the_server_took() {
        let serial = "bench: variant map-frames pages=255 handles=4\n\
                      bench: variant unmap-frames pages=255 handles=4\n\
                      bench: variant broken pages=x\n";
        let v = parse_variants(serial);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v["map-frames"],
            Variant {
                pages: 255,
                handles: 4
            }
        );
        let row = |key: &str| rows().into_iter().find(|r| r.key == key).unwrap();
        // Fewer than 512 frames: Linux and the goal scaled, one MapBatch.
        let map = row("map-frames").adjust(v.get("map-frames"));
        assert!(map.what.contains("255") && map.what.contains("4 handles, 1 MapBatch"));
        assert_eq!(map.kernel, vec![IOMMU_MAP_512_PAGES * 255.0 / 512.0]);
        assert_eq!(map.goal, Some(IOMMU_MAP_512_PAGES * 255.0 / 512.0));
        // Its unmap is no whole leaf table: no Linux figure, no goal.
        let unmap = row("unmap-frames").adjust(v.get("unmap-frames"));
        assert!(unmap.kernel.is_empty() && unmap.goal.is_none());
        assert_eq!(unmap.vfio, Some(VFIO_UNMAP_2M * 255.0 / 512.0));
        // All 512 in one handle: the rows as issue 14 has them.
        let full = Variant {
            pages: 512,
            handles: 1,
        };
        let map = row("map-frames").adjust(Some(&full));
        assert_eq!(map.kernel, vec![IOMMU_MAP_512_PAGES]);
        assert!(map.what.contains("(1 Map)"));
        assert_eq!(row("unmap-frames").adjust(Some(&full)), row("unmap-frames"));
        // No variant line: unchanged.
        assert_eq!(row("map-4k").adjust(None), row("map-4k"));
    }

    #[test]
    fn table_compares_with_linux_in_kernel_and_vfio() {
        let timings = parse_serial(
            "bench: map-4k iters=2 ns=1800 min=900 max=900\n\
             bench: map-2m-block iters=1 ns=1000 min=1000 max=1000\n",
        );
        let (text, over_goal, over_vfio) = table(&timings, &BTreeMap::new(), &BTreeMap::new());
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap()
                .to_string()
        };
        let map = line("map 4 KiB");
        assert!(map.contains("938") && map.contains("0.96x") && map.contains("<=938 ok"));
        assert!(map.contains("4,900") && map.contains("0.184x"));
        // Two in-kernel figures: a ratio to each; 1,000 is above the goal.
        let block = line("map 2 MiB as one block");
        assert!(block.contains("1,151 / 566") && block.contains("0.87x / 1.77x"));
        assert!(block.contains("<=938 NO"));
        assert_eq!(over_goal, vec!["map-2m-block 1,000 > 938".to_string()]);
        assert!(over_vfio.is_empty());
        assert!(line("unmap 4 KiB").contains("(not measured)"));
    }

    #[test]
    fn block_driver_lines_make_the_reads_table() {
        let serial = "bench: blk strict ios=100 ns=800000 map=250000 unmap=250000 device=200000 faultpoll=20000 min=1 max=2 p50=3 devmin=80 devmax=90000 devp50=96 loop=9\n\
                      bench: blk pool ios=100 ns=300000 map=0 unmap=0 device=200000 faultpoll=20000 min=1 max=2 p50=3 devmin=64 devmax=50000 devp50=96 loop=9\n\
                      bench: blk broken ns=1\n\
                      bench: map-4k iters=1 ns=1 min=1 max=1\n";
        let modes = parse_blk(serial);
        assert_eq!(modes.len(), 2);
        assert_eq!(modes["strict"].cpu(), 600_000);
        assert_eq!(modes["pool"].device_min, 64);
        // The blk lines are no timed row.
        assert!(!parse_serial(serial).contains_key("blk"));
        let mut trace = String::new();
        for b in b"@blk-strict\n" {
            trace += &format!("pl011_write addr 0x00000000 value 0x{b:08x}\n");
        }
        for _ in 0..100 {
            trace += "smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n";
        }
        let t = blk_table(&modes, &parse_trace(&trace)).unwrap();
        let line = |start: &str| t.lines().find(|l| l.starts_with(start)).unwrap();
        // 100 reads in 800 us: 125,000 a second; 6,000 on the CPU path,
        // 5,000 of them map + unmap: 62.5% of a read, 83.3% of its CPU path.
        let strict = line("per-request map_single + unmap (beside");
        for want in [
            "0.800", "125,000", "8,000", "2,000", "6,000", "166,667", "2,500",
        ] {
            assert!(strict.contains(want), "{want} in {strict}");
        }
        assert!(strict.contains("62.5%") && strict.contains("83.3%") && strict.ends_with("2.00"));
        let pool = line("premapped pool");
        assert!(pool.contains("1,000,000") && pool.contains("0.0%") && pool.ends_with("0.00"));
        assert!(line("the same, one more page").contains("(not measured)"));
        assert!(t.contains("5,000 more instructions per read"), "{t}");
        assert!(t.contains("(5,000 of them"), "{t}");
        assert!(t.contains("6.00x the CPU-bound reads"), "{t}");
        assert!(t.contains("64 to 90,000"), "{t}");
        assert!(blk_table(&BTreeMap::new(), &BTreeMap::new()).is_none());
    }

    #[test]
    fn throughput_lines_make_the_contention_table() {
        let serial = "bench: throughput alone-driver ops=100 ns=100000 switched=0\n\
                      bench: throughput alone-peer ops=100 ns=100000 switched=0\n\
                      bench: throughput together ops=200 ns=250000 switched=0\n\
                      bench: throughput together-driver ops=100 ns=240000 switched=3\n\
                      bench: map-4k iters=1 ns=1 min=1 max=1\n";
        let p = parse_throughput(serial);
        assert_eq!(p.len(), 4);
        assert_eq!(
            p["together-driver"],
            Phase {
                ops: 100,
                ns: 240_000,
                switched: 3
            }
        );
        let t = throughput_table(&p).unwrap();
        assert!(t.contains("1,000,000"), "{t}"); // 200 ops in 200 us
        assert!(t.contains("800,000"), "{t}"); // 200 ops in 250 us
        assert!(t.contains("0.800x the throughput"), "{t}");
        assert!(t.contains("switched out 3 times"), "{t}");
        // Timed rows are no throughput, and a missing phase is no table.
        assert!(parse_serial(serial).contains_key("map-4k"));
        assert!(!parse_serial(serial).contains_key("together"));
        let mut partial = p.clone();
        partial.remove("alone-peer");
        assert!(throughput_table(&partial).is_none());
    }
}
