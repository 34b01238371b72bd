//! `cargo xtask bench [--iterations N] [--quick] [--profile]`: the cost of IOMMU
//! operations in the booted image, against Linux's arm-smmu-v3 behind VFIO
//! on the same emulated SMMU (issue 8).
//!
//! Builds the `bench` system (kernel without debug support) and boots it
//! under `-icount shift=0`, so one guest instruction is one virtual
//! nanosecond and the bench driver's CNTVCT_EL0 timings are instruction
//! counts, repeatable from run to run. The driver prints its totals; the
//! SMMU commands of each operation come from QEMU's own trace
//! (`smmuv3_cmdq_opcode`), attributed to operations by the markers the
//! driver writes to the PL011 before and after each timed call
//! (`pl011_write`, in the same trace, in order).

use crate::{image, qemu, system, Ctx, Tally};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The system the benchmark boots.
const SYSTEM: &str = "bench";

/// Linux 6.1 (Debian 12), arm-smmu-v3 behind VFIO type1, per ioctl from user
/// space and back, same QEMU machine under `-icount shift=0` (issue 8).
const LINUX_MAP_4K: f64 = 4_900.0;
const LINUX_UNMAP_4K: f64 = 4_800.0;
const LINUX_MAP_2M: f64 = 340_000.0;
const LINUX_UNMAP_2M: f64 = 260_000.0;
/// The target: at most this fraction of Linux's cost.
const TARGET: f64 = 0.3;

/// One row of the table: the driver's name for the operation, what it is,
/// and Linux's figure for the same work (None: no comparable figure).
const ROWS: [(&str, &str, Option<f64>); 10] = [
    ("faults", "faults, nothing pending (the call floor)", None),
    ("map-4k", "map 4 KiB (Map)", Some(LINUX_MAP_4K)),
    ("unmap-4k", "unmap 4 KiB (Unmap)", Some(LINUX_UNMAP_4K)),
    (
        "map-2m-batch",
        "map 2 MiB = 512 x 4 KiB (1 MapBatch, 8 x 64 frames)",
        Some(LINUX_MAP_2M),
    ),
    (
        "unmap-2m",
        "unmap 2 MiB = 512 pages (1 Unmap)",
        Some(LINUX_UNMAP_2M),
    ),
    (
        "map-256k",
        "map 256 KiB = 64 frames (1 Map) [Linux x64/512]",
        Some(LINUX_MAP_2M * 64.0 / 512.0),
    ),
    (
        "unmap-256k",
        "unmap 256 KiB (1 Unmap) [Linux x64/512]",
        Some(LINUX_UNMAP_2M * 64.0 / 512.0),
    ),
    (
        "map-2m-block",
        "map 2 MiB as one block (1 Map of a 2 MiB frame)",
        Some(LINUX_MAP_2M),
    ),
    (
        "unmap-2m-block",
        "unmap the 2 MiB block (1 Unmap)",
        Some(LINUX_UNMAP_2M),
    ),
    ("attach", "attach (stream abort -> domain)", None),
];

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

/// For `cargo xtask test`: the benchmark image builds (it is not booted).
pub fn build_check(ctx: &Ctx) -> Tally {
    println!("== benchmark image builds (cargo xtask image {SYSTEM})");
    set_iterations(None);
    match image::build(ctx, SYSTEM) {
        Ok(_) => {
            println!("test bench-image-builds ... ok");
            Tally {
                passed: 1,
                failed: 0,
            }
        }
        Err(e) => {
            println!("test bench-image-builds ... FAILED: {e:#}");
            Tally {
                passed: 0,
                failed: 1,
            }
        }
    }
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
    let image = image::build(ctx, SYSTEM)?;
    let desc = system::load(&ctx.root, SYSTEM)?;
    let out_dir = ctx.build.join("images").join(SYSTEM);
    if options.profile {
        let kernel = crate::kernel::build_kernel(ctx, desc.kernel.flavour())?;
        return crate::profile::run(
            &image,
            &image::process_elf(ctx, &kernel, "bench-driver"),
            &image::process_elf(ctx, &kernel, "iommu-serverd"),
            &kernel.elf,
            &out_dir.join("profile.log"),
        );
    }
    let trace = out_dir.join("bench-trace.log");
    let _ = std::fs::remove_file(&trace);
    let edu = desc.qemu.edu.as_deref().unwrap_or("edu");
    let mut cmd = qemu::command(&image, edu, &desc.qemu.devices, true);
    cmd.args([
        "-trace",
        "smmuv3_cmdq_opcode",
        "-trace",
        "pl011_write",
        "-D",
    ])
    .arg(&trace)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let timeout = Duration::from_secs(desc.qemu.timeout_secs.unwrap_or(300));
    println!("bench: booting {SYSTEM} under -icount shift=0 (limit {timeout:?})");
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
    let timings = parse_serial(&serial);
    if status.map(|s| s.code()) != Some(Some(0)) || !serial.contains("bench: done") {
        for line in serial.lines().filter(|l| !l.starts_with('@')) {
            println!("  | {line}");
        }
        bail!(
            "the benchmark did not finish cleanly ({}; serial log in {})",
            match status {
                None => format!("killed after {timeout:?}"),
                Some(s) => format!("{s}"),
            },
            out_dir.join("bench-serial.log").display()
        );
    }
    let commands = parse_trace(&std::fs::read_to_string(&trace).context("reading the trace")?);
    print_table(&timings, &commands, started.elapsed());
    Ok(())
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

fn print_table(
    timings: &BTreeMap<String, Timing>,
    commands: &BTreeMap<String, Commands>,
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
    println!(
        "{:<52} {:>9} {:>9} {:>9} {:>7} {:>7} {:>6} {:>6} {:>9} {:>7}",
        "operation", "instr/op", "min", "max", "cmds/op", "syncs", "tlbi", "cfgi", "Linux", "ratio"
    );
    let mut rows: Vec<(String, String, Option<f64>)> = ROWS
        .iter()
        .map(|(k, d, l)| (k.to_string(), d.to_string(), *l))
        .collect();
    rows.push(("detach".into(), "detach (domain -> abort)".into(), None));
    let mut over = Vec::new();
    for (key, what, linux) in &rows {
        let Some(t) = timings.get(key.as_str()) else {
            println!("{what:<52} (not measured)");
            continue;
        };
        let n = t.iters.max(1) as f64;
        let per = t.ns as f64 / n;
        let c = commands.get(key.as_str()).copied().unwrap_or_default();
        let (linux_s, ratio_s) = match linux {
            Some(l) => {
                let r = per / l;
                if r > TARGET {
                    over.push(format!("{what}: {r:.2}x"));
                }
                (thousands(*l), format!("{r:.3}x"))
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<52} {:>9} {:>9} {:>9} {:>7.2} {:>7.2} {:>6.2} {:>6.2} {:>9} {:>7}",
            what,
            thousands(per),
            thousands(t.min as f64),
            thousands(t.max as f64),
            c.total as f64 / n,
            c.syncs as f64 / n,
            c.tlbis as f64 / n,
            c.cfgis as f64 / n,
            linux_s,
            ratio_s
        );
    }
    if let (Some(a), Some(d)) = (timings.get("attach"), timings.get("detach")) {
        let n = a.iters.max(1) as f64;
        println!(
            "{:<52} {:>9}",
            "attach + detach",
            thousands((a.ns + d.ns) as f64 / n)
        );
    }
    println!(
        "target: at most {TARGET}x Linux; {}",
        if over.is_empty() {
            "every compared operation meets it".to_string()
        } else {
            format!("above it: {}", over.join("; "))
        }
    );
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
}
