//! `cargo xtask bench --profile`: where each benchmarked operation's guest
//! instructions go, by component (driver, kernel, server) and by function.
//!
//! Boots the bench image under `-icount shift=0` with QEMU logging every
//! translated block (`-d in_asm`: its instructions) and every execution of
//! one (`-d exec,nochain`), interleaved in one log with the PL011 trace that
//! spells the driver's `@<op>` markers. Between two markers, each executed
//! block counts its instructions for the function its address falls in. The
//! kernel runs at the top half of the address space; user code is the
//! driver's until the first kernel entry, then the server's until the next,
//! then the driver's again (a call and its reply: D K S K D). Both
//! processes are linked at the same addresses, so that alternation, not the
//! address, says whose a user block is. A timer interrupt inside a timed
//! call would flip it: one in thousands of calls at the timer's 2 ms tick.
//! `memcpy` and `memset` are charged to the function that called them.

use crate::bench::Markers;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// The three components of a round trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Owner {
    Driver,
    Kernel,
    Server,
}

impl Owner {
    fn name(self) -> &'static str {
        match self {
            Owner::Driver => "driver",
            Owner::Kernel => "kernel",
            Owner::Server => "server",
        }
    }
}

/// Kernel addresses (seL4's kernel window on AArch64).
const KERNEL_BASE: u64 = 0xffff_0000_0000_0000;

/// Function start addresses and names of one ELF.
struct Symbols(Vec<(u64, String)>);

impl Symbols {
    fn load(elf: &Path) -> Result<Symbols> {
        let out = Command::new("aarch64-linux-gnu-nm")
            .args(["-n", "-C", "--defined-only"])
            .arg(elf)
            .output()
            .with_context(|| format!("running aarch64-linux-gnu-nm on {}", elf.display()))?;
        let mut syms = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            if let Ok(a) = u64::from_str_radix(addr, 16) {
                syms.push((a, short_name(name)));
            }
        }
        Ok(Symbols(syms))
    }

    fn name(&self, pc: u64) -> &str {
        match self.0.partition_point(|(a, _)| *a <= pc) {
            0 => "?",
            i => &self.0[i - 1].1,
        }
    }
}

/// A demangled name without its hash, cut to a readable length.
fn short_name(name: &str) -> String {
    let name = match name.rfind("::h") {
        Some(i) if name.len() - i == 19 => &name[..i],
        _ => name,
    };
    name.chars().take(100).collect()
}

/// Instructions per (owner, function).
type ByFunction = HashMap<(Owner, String), u64>;

/// For each operation: how often it ran, and where its instructions went.
#[derive(Default)]
struct Profile {
    ops: BTreeMap<String, (u64, ByFunction)>,
    /// For the operation named by `XTASK_PROFILE_BLOCKS`: instructions per
    /// executed block, by owner and block start, to read beside
    /// `aarch64-linux-gnu-objdump -d` of the ELF.
    blocks: BTreeMap<(String, Owner, u64), u64>,
}

/// The environment variable naming the operations (comma-separated) whose
/// hottest blocks the profile also lists.
const BLOCKS_VAR: &str = "XTASK_PROFILE_BLOCKS";

/// What to boot and whose symbols to use.
pub struct Target<'a> {
    pub image: &'a Path,
    /// The system's `edu` and other `-device` values.
    pub edu: &'a str,
    pub devices: &'a [String],
    pub driver: &'a Path,
    pub server: &'a Path,
    pub kernel: &'a Path,
}

/// Boots the image with block logging and prints the profile, operations
/// in `order` first (the benchmark's rows), then any others.
pub fn run(t: &Target, log: &Path, order: &[&str]) -> Result<()> {
    let syms = [
        (Owner::Driver, Symbols::load(t.driver)?),
        (Owner::Kernel, Symbols::load(t.kernel)?),
        (Owner::Server, Symbols::load(t.server)?),
    ];
    let _ = std::fs::remove_file(log);
    let mut cmd = crate::qemu::command(t.image, t.edu, t.devices, true);
    cmd.args(["-trace", "pl011_write", "-d", "exec,nochain,in_asm", "-D"])
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    println!("profile: booting the bench image with QEMU's block log (takes a while; the log is some 500 MB)");
    let status = cmd
        .status()
        .context("could not start qemu-system-aarch64")?;
    if !status.success() {
        bail!("QEMU ended with {status}");
    }
    let profile = analyse(log, &syms)?;
    let _ = std::fs::remove_file(log);
    print(&profile, order);
    println!("\n(the throughput under contention is not profiled: the profile's image runs no contention phase)");
    Ok(())
}

fn analyse(log: &Path, syms: &[(Owner, Symbols); 3]) -> Result<Profile> {
    let file = std::fs::File::open(log).with_context(|| format!("{}", log.display()))?;
    let symbols = |o: Owner| &syms.iter().find(|(k, _)| *k == o).expect("all three").1;
    let mut profile = Profile::default();
    let mut markers = Markers::default();
    let mut block_size: HashMap<u64, u64> = HashMap::new();
    // The block being listed by `-d in_asm`: its start and length so far.
    let mut listing: Option<(Option<u64>, u64)> = None;
    let mut op: Option<String> = None;
    let mut user = Owner::Driver;
    let mut in_kernel = false;
    // Per user owner: the last function outside memcpy/memset (the caller).
    let mut caller: HashMap<Owner, String> = HashMap::new();
    let blocks_of = std::env::var(BLOCKS_VAR).unwrap_or_default();
    let wanted = |op: &str| blocks_of.split(',').any(|o| o == op);
    for line in BufReader::new(file).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        if let Some((start, n)) = listing.as_mut() {
            if let Some(pc) = line
                .strip_prefix("0x")
                .and_then(|l| l.split(':').next())
                .and_then(|a| u64::from_str_radix(a, 16).ok())
            {
                start.get_or_insert(pc);
                *n += 1;
                continue;
            }
            if let Some(s) = *start {
                block_size.insert(s, *n);
            }
            listing = None;
        }
        if line.starts_with("IN:") {
            listing = Some((None, 0));
            continue;
        }
        if markers.feed(&line) {
            if markers.current != op {
                op = markers.current.clone();
                if let Some(o) = &op {
                    profile.ops.entry(o.clone()).or_default().0 += 1;
                }
                user = Owner::Driver;
                in_kernel = false;
            }
            continue;
        }
        let Some(o) = &op else { continue };
        // "Trace 0: 0x7f.. [0000000000004000/0000000000401000/00000121/ff020200] "
        let Some(pc) = line
            .strip_prefix("Trace ")
            .and_then(|l| l.split('[').nth(1))
            .and_then(|l| l.split('/').nth(1))
            .and_then(|a| u64::from_str_radix(a, 16).ok())
        else {
            continue;
        };
        let n = block_size.get(&pc).copied().unwrap_or(1);
        let owner = if pc >= KERNEL_BASE {
            in_kernel = true;
            Owner::Kernel
        } else {
            if in_kernel {
                user = if user == Owner::Driver {
                    Owner::Server
                } else {
                    Owner::Driver
                };
                in_kernel = false;
            }
            user
        };
        if wanted(o) {
            *profile.blocks.entry((o.clone(), owner, pc)).or_default() += n;
        }
        let name = symbols(owner).name(pc).to_string();
        let name = if matches!(name.as_str(), "memcpy" | "memset" | "memmove") {
            format!(
                "{name} <- {}",
                caller.get(&owner).map_or("?", String::as_str)
            )
        } else {
            caller.insert(owner, name.clone());
            name
        };
        *profile
            .ops
            .get_mut(o)
            .expect("counted at its marker")
            .1
            .entry((owner, name))
            .or_default() += n;
    }
    Ok(profile)
}

/// The operations of `profile`, those in `order` first, in that order.
fn ordered<'a>(profile: &'a Profile, order: &[&str]) -> Vec<&'a String> {
    let rank = |op: &String| order.iter().position(|o| o == op).unwrap_or(order.len());
    let mut ops: Vec<&String> = profile.ops.keys().collect();
    ops.sort_by_key(|op| rank(op));
    ops
}

fn print(profile: &Profile, order: &[&str]) {
    for op in ordered(profile, order) {
        let (runs, fns) = &profile.ops[op];
        let runs = (*runs).max(1);
        let mut per_owner: BTreeMap<Owner, u64> = BTreeMap::new();
        for ((owner, _), n) in fns {
            *per_owner.entry(*owner).or_default() += n;
        }
        let total: u64 = per_owner.values().sum();
        println!(
            "\n{op}: {} instructions per call ({runs} calls): {}",
            total / runs,
            per_owner
                .iter()
                .map(|(o, n)| format!("{} {}", o.name(), n / runs))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut top: Vec<_> = fns.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        for ((owner, name), n) in top.into_iter().take(12) {
            println!("  {:>7}  {:<6}  {name}", n / runs, owner.name());
        }
        let mut hot: Vec<_> = profile
            .blocks
            .iter()
            .filter(|((o, _, _), _)| o == op)
            .collect();
        if !hot.is_empty() {
            hot.sort_by(|a, b| b.1.cmp(a.1));
            println!("  hottest blocks ({BLOCKS_VAR}):");
            for ((_, owner, pc), n) in hot.into_iter().take(400) {
                println!("  {:>7}  {:<6}  {pc:#x}", n / runs, owner.name());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(s: &str) -> String {
        s.bytes()
            .chain([b'\n'])
            .map(|b| format!("pl011_write addr 0x00000000 value 0x{b:08x}\n"))
            .collect()
    }

    /// A call D K S K D between markers: blocks are charged to the right
    /// component and function, memcpy to its caller, and nothing outside
    /// the markers counts.
    #[test]
    fn attributes_blocks_between_markers() {
        let syms = [
            (
                Owner::Driver,
                Symbols(vec![(0x1000, "drive".into()), (0x3000, "memcpy".into())]),
            ),
            (
                Owner::Kernel,
                Symbols(vec![(KERNEL_BASE, "fastpath".into())]),
            ),
            (
                Owner::Server,
                Symbols(vec![(0x1000, "serve".into()), (0x3000, "memcpy".into())]),
            ),
        ];
        let trace =
            |pc: u64| format!("Trace 0: 0x7f00 [0000000000004000/{pc:016x}/00000121/ff020200] \n");
        let listing = |pc: u64, n: u64| {
            let mut s = "IN: \n".to_string();
            for i in 0..n {
                s += &format!("0x{:016x}:  d503201f  nop\n", pc + 4 * i);
            }
            s + "\n"
        };
        let mut log = listing(0x1000, 3) + &listing(0x3000, 5) + &listing(KERNEL_BASE, 7);
        log += &trace(0x1000); // before any marker: not counted
        log += &marker("@op");
        log += &(trace(0x1000) + &trace(KERNEL_BASE)); // driver, kernel
        log += &(trace(0x1000) + &trace(0x3000) + &trace(KERNEL_BASE)); // server + its memcpy
        log += &trace(0x1000); // driver again
        log += &marker("@");
        log += &trace(0x3000);
        let path = std::env::temp_dir().join(format!("profile-test-{}.log", std::process::id()));
        std::fs::write(&path, log).unwrap();
        let p = analyse(&path, &syms).unwrap();
        let _ = std::fs::remove_file(&path);
        let (runs, fns) = &p.ops["op"];
        assert_eq!(*runs, 1);
        let get = |o: Owner, f: &str| fns.get(&(o, f.to_string())).copied();
        assert_eq!(get(Owner::Driver, "drive"), Some(6));
        assert_eq!(get(Owner::Kernel, "fastpath"), Some(14));
        assert_eq!(get(Owner::Server, "serve"), Some(3));
        assert_eq!(get(Owner::Server, "memcpy <- serve"), Some(5));
        assert_eq!(fns.values().sum::<u64>(), 28);
    }

    /// The benchmark's rows first, in its order; operations it does not
    /// know after them.
    #[test]
    fn prints_operations_in_the_benchmark_s_order() {
        let mut p = Profile::default();
        for op in ["attach", "map-4k", "zzz", "unmap-4k"] {
            p.ops.insert(op.to_string(), (1, HashMap::new()));
        }
        let ops = ordered(&p, &["map-4k", "unmap-4k", "attach"]);
        assert_eq!(ops, ["map-4k", "unmap-4k", "attach", "zzz"]);
    }
}
