//! Image tests: boot a system in QEMU and judge what it printed and how the
//! run ended. Each check counts as one test (`PASS name` / `FAIL name: why`).

use crate::qemu::{self, BootOptions, BootOutcome};
use crate::{image, system, Ctx, Tally};

mod blk;
mod dma_demo;
mod hostile;
mod robust;
mod trace;

/// What QEMU 7.2's SMMUv3 reports (DESIGN.md §4); other versions differ.
const QEMU72_IDR: [(&str, u32); 3] = [("IDR0", 0x0d40_101a), ("IDR1", 0x0273_0010), ("IDR5", 0x74)];

pub fn run_all(ctx: &Ctx) -> Tally {
    println!("== image tests (QEMU)");
    let mut t = Checks::default();
    t.check(
        "platform/dtb-matches-kernel-files",
        platform_matches_dtb(ctx),
    );
    hello(ctx, &mut t, "hello");
    // The same on a kernel without debug support (the benchmark configuration).
    hello(ctx, &mut t, "hello-release");
    fault(ctx, &mut t);
    resources(ctx, &mut t);
    misconfig(ctx, &mut t);
    misconfig_bar(ctx, &mut t);
    misconfig_cmb(ctx, &mut t);
    console(ctx, &mut t);
    dma_demo::run(ctx, &mut t);
    robust::run(ctx, &mut t);
    hostile::run(ctx, &mut t);
    blk::run(ctx, &mut t);
    println!(
        "== image tests: {} passed, {} failed",
        t.tally.passed, t.tally.failed
    );
    t.tally
}

#[derive(Default)]
struct Checks {
    tally: Tally,
}

impl Checks {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                println!("PASS {name}");
                self.tally.passed += 1;
            }
            Err(why) => {
                println!("FAIL {name}: {why}");
                self.tally.failed += 1;
            }
        }
    }
}

/// Builds and boots `system`; a failure to build or boot is one failed check.
fn boot(ctx: &Ctx, t: &mut Checks, system: &str) -> Option<BootOutcome> {
    let image = match image::build(ctx, system) {
        Ok(i) => i,
        Err(e) => {
            t.check(&format!("{system}/build"), Err(format!("{e:#}")));
            return None;
        }
    };
    t.check(&format!("{system}/build"), Ok(()));
    // No timeout of its own: `qemu::boot` takes the description's
    // (`[qemu] timeout_secs`; blk-death's throttled disk takes seconds by
    // design), else 30 s.
    let options = BootOptions::test(system);
    match qemu::boot(ctx, &image, &options) {
        Ok(outcome) => {
            if let Some(at) = outcome.time_to("root: seL4 root task") {
                println!(
                    "   ({system}: first root-task output {at:.1?} after QEMU start; run {})",
                    outcome.summary()
                );
            }
            Some(outcome)
        }
        Err(e) => {
            t.check(&format!("{system}/boot"), Err(format!("{e:#}")));
            None
        }
    }
}

fn contains(out: &BootOutcome, needle: &str) -> Result<(), String> {
    if out.serial.contains(needle) {
        Ok(())
    } else {
        let qemu = if out.stderr.trim().is_empty() {
            String::new()
        } else {
            format!("; QEMU said: {}", out.stderr.trim())
        };
        Err(format!(
            "no {needle:?} in the serial output ({}{qemu})\n{}",
            out.summary(),
            tail(&out.serial)
        ))
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(15);
    lines[from..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

/// The hex value printed after `key=` on the first line containing `prefix`.
fn hex_after(serial: &str, prefix: &str, key: &str) -> Option<u64> {
    let line = serial.lines().find(|l| l.contains(prefix))?;
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    let digits: String = rest
        .trim_start_matches("0x")
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The hex number (`0x...`) after `word ` on the first line containing `prefix`.
fn hex_word(serial: &str, prefix: &str, word: &str) -> Option<u64> {
    let line = serial.lines().find(|l| l.contains(prefix))?;
    let rest = &line[line.find(&format!("{word} 0x"))? + word.len() + 3..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The decimal number after `word ` on the first line containing `prefix`.
fn number_after(serial: &str, prefix: &str, word: &str) -> Option<u64> {
    let line = serial.lines().find(|l| l.contains(prefix))?;
    let rest = &line[line.find(&format!("{word} "))? + word.len() + 1..];
    rest.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

fn qemu_is_72() -> bool {
    std::process::Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("version 7.2"))
        .unwrap_or(false)
}

fn hello(ctx: &Ctx, t: &mut Checks, system: &str) {
    let Some(out) = boot(ctx, t, system) else {
        return;
    };
    t.check(
        &format!("{system}/kernel-boots"),
        // Only a debug kernel prints; any kernel runs the root task.
        if out.serial.contains("Bootstrapping kernel") {
            contains(&out, "Booting all finished, dropped to user space")
        } else {
            Ok(())
        }
        .and(contains(&out, "root: seL4 root task")),
    );
    t.check(
        &format!("{system}/two-processes-started"),
        contains(&out, "root: built process server")
            .and(contains(&out, "root: built process client"))
            .and(contains(&out, "root: started 2 process(es)")),
    );

    // The answer must be request * 1000 + the client's badge, where the
    // badge comes from the system description, not from the guest.
    let badge = system::load(&ctx.root, system).ok().and_then(|s| {
        s.processes
            .iter()
            .find(|p| p.name == "client")
            .and_then(|p| p.caps.first().map(|c| c.badge))
    });
    let request = number_after(&out.serial, "client: called server", "with");
    let reply = number_after(&out.serial, "client: called server", "reply");
    t.check(
        &format!("{system}/badged-call-reply"),
        match (badge, request, reply) {
            (Some(b), Some(q), Some(r)) if r == q * 1000 + b => Ok(()),
            (Some(b), Some(q), Some(r)) => Err(format!(
                "reply {r}, want {q} * 1000 + badge {b:#x} = {}",
                q * 1000 + b
            )),
            _ => Err(format!(
                "no client call line ({})\n{}",
                out.summary(),
                tail(&out.serial)
            )),
        },
    );

    let read: Vec<(&str, Option<u64>)> = QEMU72_IDR
        .iter()
        .map(|(k, _)| (*k, hex_after(&out.serial, "server: SMMU at", k)))
        .collect();
    t.check(
        &format!("{system}/smmu-id-registers"),
        if read.iter().any(|(_, v)| v.is_none()) {
            Err(format!(
                "no SMMU ID register line ({})\n{}",
                out.summary(),
                tail(&out.serial)
            ))
        } else if qemu_is_72() {
            let wrong: Vec<String> = QEMU72_IDR
                .iter()
                .zip(&read)
                .filter(|((_, want), (_, got))| Some(*want as u64) != *got)
                .map(|((k, want), (_, got))| {
                    format!("{k} read {:#x}, QEMU 7.2 has {want:#x}", got.unwrap())
                })
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        } else {
            // Another QEMU: at least stage 1 (IDR0.S1P) and AArch64 tables (IDR0.TTF).
            let idr0 = read[0].1.unwrap();
            if idr0 & 0b10 != 0 && (idr0 >> 2) & 0b11 & 0b10 != 0 {
                Ok(())
            } else {
                Err(format!("IDR0 {idr0:#x} lacks stage 1 or AArch64 tables"))
            }
        },
    );
    // QEMU's own trace is an independent witness that the printed values are
    // what the guest read from the SMMU's MMIO.
    t.check(
        &format!("{system}/smmu-reads-match-qemu-trace"),
        trace_witness(&out, &read),
    );
    t.check(
        &format!("{system}/ends-by-itself-with-pass"),
        if out.timed_out {
            Err(format!("killed at the time limit\n{}", tail(&out.serial)))
        } else if out.exit_code != Some(0) {
            Err(format!("{}\n{}", out.summary(), tail(&out.serial)))
        } else {
            contains(&out, "root: all 2 awaited process(es) done: PASS")
        },
    );
}

/// Offsets of the ID registers in the SMMU's page 0.
fn idr_offset(name: &str) -> u64 {
    match name {
        "IDR0" => 0x0,
        "IDR1" => 0x4,
        _ => 0x14,
    }
}

fn trace_witness(out: &BootOutcome, read: &[(&str, Option<u64>)]) -> Result<(), String> {
    let file = out.trace_file.as_ref().ok_or("no trace file requested")?;
    let trace = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    for (name, value) in read {
        let value = value.ok_or(format!("{name} was not printed"))?;
        let want = format!(
            "smmuv3_read_mmio addr: {:#x} val:{value:#x} ",
            idr_offset(name)
        );
        if !trace.contains(&want) {
            return Err(format!("QEMU's trace ({}) has no {want:?}", file.display()));
        }
    }
    Ok(())
}

fn fault(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot(ctx, t, "fault") else {
        return;
    };
    let fault_addr =
        |who: &str| hex_word(&out.serial, &format!("FAULT in {who}: VM fault"), "address");
    t.check(
        "fault/reported-by-root-task",
        contains(&out, "FAULT in faulter: VM fault at address 0xdead0000"),
    );
    // The address the process says it wrote to, as the root task reported it.
    let target = hex_word(&out.serial, "scribbler: writing to my own code", "at");
    t.check(
        "fault/write-to-read-only-code",
        match (target, fault_addr("scribbler")) {
            (Some(a), Some(f)) if a == f => Ok(()),
            (a, f) => Err(format!(
                "wrote to {a:x?}, fault reported at {f:x?}\n{}",
                tail(&out.serial)
            )),
        },
    );
    let guard_top = hex_word(&out.serial, "recurser: recursing", "below");
    t.check(
        "fault/stack-overflow-hits-guard-page",
        match (guard_top, fault_addr("recurser")) {
            (Some(g), Some(f)) if (g - 4096..g).contains(&f) => Ok(()),
            (g, f) => Err(format!(
                "guard page below {g:x?}, fault reported at {f:x?}\n{}",
                tail(&out.serial)
            )),
        },
    );
    t.check(
        "fault/no-hang",
        if out.timed_out {
            Err(format!("killed at the time limit\n{}", tail(&out.serial)))
        } else if out.exit_code != Some(1) {
            Err(format!(
                "want exit code 1 (a failed process), got {}",
                out.summary()
            ))
        } else if out.serial.contains("no fault happened") {
            Err("a forbidden access went through".into())
        } else {
            Ok(())
        },
    );
}

/// A misconfigured system stops at boot with a clear error, not a hang.
fn misconfig(ctx: &Ctx, t: &mut Checks) {
    refused_at_boot(
        ctx,
        t,
        "misconfig",
        "root: ERROR: greedy: no device untyped covers 0x8000000",
    );
}

fn misconfig_bar(ctx: &Ctx, t: &mut Checks) {
    refused_at_boot(
        ctx,
        t,
        "misconfig-bar",
        "root: ERROR: snoop: PCI function 00:01.0: a device region of this process overlaps the function's BAR",
    );
}

/// A function with a memory BAR besides BAR0 (an NVMe controller memory
/// buffer) is refused: memory decoding would turn it on at address 0.
fn misconfig_cmb(ctx: &Ctx, t: &mut Checks) {
    refused_at_boot(
        ctx,
        t,
        "misconfig-cmb",
        "root: ERROR: driver: PCI function 00:03.0: the function has a memory BAR besides BAR0, which the root task does not place",
    );
}

/// Boots `system`, which the root task must refuse: it prints `error`
/// and stops with exit code 2 (not a timeout).
fn refused_at_boot(ctx: &Ctx, t: &mut Checks, system: &str, error: &str) {
    let Some(out) = boot(ctx, t, system) else {
        return;
    };
    t.check(&format!("{system}/clear-boot-error"), contains(&out, error));
    t.check(
        &format!("{system}/stops-with-exit-code-2"),
        if out.exit_code == Some(2) && !out.timed_out {
            Ok(())
        } else {
            Err(out.summary())
        },
    );
}

/// What the `resources` system's checker verifies from inside the guest.
const RESOURCE_CHECKS: &[&str] = &[
    "start-info",
    "devices",
    "dma-pool",
    "irq",
    "untyped-and-own-cnode",
    "own-vspace",
];

fn resources(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot(ctx, t, "resources") else {
        return;
    };
    for name in RESOURCE_CHECKS {
        let line = format!("check {name}: ");
        let result = match out.serial.lines().find(|l| l.starts_with(&line)) {
            Some(l) if l.ends_with(": ok") => Ok(()),
            Some(l) => Err(l.to_string()),
            None => Err(format!(
                "no {line:?} line ({})\n{}",
                out.summary(),
                tail(&out.serial)
            )),
        };
        t.check(&format!("resources/{name}"), result);
    }
    t.check(
        "resources/ends-with-pass",
        if out.clean_exit {
            Ok(())
        } else {
            Err(format!("{}\n{}", out.summary(), tail(&out.serial)))
        },
    );
}

/// `console`: three threads print 150 long lines each at once; every line
/// must arrive whole, and the writers must have taken turns mid-burst (else
/// the run proved nothing about whole messages). Before them, a hostile
/// process tries to take the console with its console cap and is stopped;
/// the writers' lines must all arrive whole after that, and the run must
/// end by itself (with a console lock any process can hold, it hangs).
fn console(ctx: &Ctx, t: &mut Checks) {
    const LINES: usize = 150; // images/processes/console-burst: LINES
    let writers = ["burst-a/0", "burst-a/1", "burst-b/0"];
    let Some(out) = boot(ctx, t, "console") else {
        return;
    };
    let expected = |writer: &str, i: usize| {
        let digit = char::from(b'0' + (i % 10) as u8);
        format!("burst {writer} {i} {}", digit.to_string().repeat(96))
    };
    let want: std::collections::HashSet<String> = writers
        .iter()
        .flat_map(|w| (0..LINES).map(move |i| expected(w, i)))
        .collect();
    let got: std::collections::HashSet<&str> = out.serial.lines().collect();
    let missing = want.iter().filter(|l| !got.contains(l.as_str())).count();
    let mangled: Vec<&str> = out
        .serial
        .lines()
        .filter(|l| l.contains("burst ") && !want.contains(*l))
        .take(3)
        .collect();
    t.check(
        "console/every-line-whole",
        if missing == 0 {
            Ok(())
        } else {
            Err(format!(
                "{missing} of {} lines not found whole; e.g. {mangled:?}",
                want.len()
            ))
        },
    );
    // Who wrote each burst line, in console order; a change is a turn.
    let order: Vec<&str> = out
        .serial
        .lines()
        .filter_map(|l| l.strip_prefix("burst "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let turns = order.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "   (console: {} burst lines, writers took {turns} turns)",
        order.len()
    );
    t.check(
        "console/writers-ran-at-once",
        if turns >= writers.len() {
            Ok(())
        } else {
            Err(format!(
                "only {turns} turns between writers: they did not overlap"
            ))
        },
    );
    // The quitter's worker reported done first; the bursts ran after it,
    // so the worker stopped instead of spinning above them.
    let quit = out.serial.find("root: quitter done: pass");
    let after = quit.map_or(0, |at| {
        out.serial[at..]
            .lines()
            .filter(|l| l.starts_with("burst "))
            .count()
    });
    t.check(
        "console/done-stops-the-worker-thread",
        match quit {
            Some(_) if after == order.len() && after > 0 => Ok(()),
            Some(_) => Err(format!(
                "{after} of {} burst lines after the quitter's done",
                order.len()
            )),
            None => contains(&out, "root: quitter done: pass"),
        },
    );
    console_thief(&out, t, &want);
    t.check(
        "console/run-ends-with-pass",
        if out.timed_out {
            Err(format!("killed at the time limit\n{}", tail(&out.serial)))
        } else {
            contains(&out, "root: all 3 awaited process(es) done: PASS").and(ended_with_pass(&out))
        },
    );
}

/// The `console` system's hostile process (images/processes/console-burst,
/// `thief.rs`): each of its attempts on its console cap failed, the root
/// task reported its last one as a capability fault on slot 6, and every
/// burst line (`bursts`) arrived whole after that fault.
fn console_thief(out: &BootOutcome, t: &mut Checks, bursts: &std::collections::HashSet<String>) {
    const LINES: usize = 20; // images/processes/console-burst/src/thief.rs: LINES
    for probe in ["bind-refused", "recv-faults"] {
        t.check(
            &format!("console/thief-{probe}"),
            process_check(out, &format!("console-thief/{probe}")),
        );
    }
    let fault = out
        .serial
        .lines()
        .find(|l| l.starts_with("FAULT in console-thief: "));
    let failed: Vec<&str> = out
        .serial
        .lines()
        .filter(|l| l.starts_with("check console-thief/") && !l.contains(": ok"))
        .collect();
    t.check(
        "console/thief-wait-faults-and-call-waits",
        match fault {
            _ if !failed.is_empty() => Err(format!("{failed:?}")),
            Some(l) if l.contains("capability fault") && l.contains("cptr 0x6 ") => {
                contains(out, "console-thief: this line came by seL4_Call (no grant: the caller now waits for good)")
            }
            Some(l) => Err(format!("not a capability fault on slot 6: {l:?}")),
            None => Err(format!(
                "the root task reported no fault of console-thief ({})\n{}",
                out.summary(),
                tail(&out.serial)
            )),
        },
    );
    let got: std::collections::HashSet<&str> = out.serial.lines().collect();
    let missing = (0..LINES)
        .filter(|&i| {
            let digit = char::from(b'0' + (i % 10) as u8);
            let line = format!("thief console-thief {i} {}", digit.to_string().repeat(96));
            !got.contains(line.as_str())
        })
        .count();
    t.check(
        "console/thief-prints-whole-after-its-fault",
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} of its {LINES} lines not found whole"))
        },
    );
    // The thief runs above the bursts: all of them come after its fault.
    let after = out.serial.find("FAULT in console-thief: ").map(|at| {
        out.serial[at..]
            .lines()
            .filter(|l| bursts.contains(*l))
            .count()
    });
    t.check(
        "console/bursts-whole-after-thief-fault",
        match after {
            Some(n) if n == bursts.len() => Ok(()),
            Some(n) => Err(format!(
                "{n} of {} burst lines arrived whole after the thief's fault{}",
                bursts.len(),
                if out.timed_out {
                    " (the run timed out)"
                } else {
                    ""
                }
            )),
            None => Err("no fault of console-thief reported".into()),
        },
    );
}

/// QEMU's own device tree for our machine must agree with the addresses in
/// our kernel platform files (and the RAM size xtask builds the kernel for).
fn platform_matches_dtb(ctx: &Ctx) -> Result<(), String> {
    let dtb = ctx.build.join("virt.dtb");
    let status = std::process::Command::new("qemu-system-aarch64")
        .args([
            "-M",
            &format!("virt,iommu=smmuv3,highmem=off,dumpdtb={}", dtb.display()),
        ])
        .args([
            "-cpu",
            "cortex-a53",
            "-m",
            &format!("{}M", crate::kernel::RAM_SIZE >> 20),
        ])
        .args(["-nographic", "-nic", "none", "-device", "edu"])
        .output()
        .map_err(|e| format!("qemu-system-aarch64: {e}"))?;
    if !dtb.is_file() {
        return Err(format!(
            "QEMU wrote no dtb: {}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let fdt = fdt::parse(&std::fs::read(&dtb).map_err(|e| e.to_string())?)?;
    let devices_h = std::fs::read_to_string(ctx.root.join("images/kernel/virt/devices.h"))
        .map_err(|e| e.to_string())?;
    let define = |name: &str| -> Result<u64, String> {
        devices_h
            .lines()
            .filter_map(|l| l.strip_prefix("#define "))
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next()).flatten()
            })
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .ok_or(format!("devices.h has no {name}"))
    };
    let node =
        |prefix: &str| fdt::node(&fdt, prefix).ok_or(format!("the dtb has no /{prefix}* node"));
    let mut wrong = Vec::new();
    let mut expect = |what: &str, got: Option<u64>, want: u64| {
        if got != Some(want) {
            wrong.push(format!("{what}: dtb {got:x?}, ours {want:#x}"));
        }
    };
    let reg = |n: &fdt::Node, i: usize| fdt::cells(n, "reg").and_then(|c| c.get(i).copied());
    let mem = node("memory@")?;
    expect("RAM base", reg(mem, 0), 0x4000_0000);
    expect("RAM size", reg(mem, 1), crate::kernel::RAM_SIZE);
    expect("PL011", reg(node("pl011@")?, 0), define("UART0_PADDR")?);
    let gic = node("intc@")?;
    expect(
        "GIC distributor",
        reg(gic, 0),
        define("GIC_DISTRIBUTOR_PADDR")?,
    );
    expect(
        "GIC CPU interface",
        reg(gic, 2),
        define("GIC_CONTROLLER0_PADDR")?,
    );
    let smmu = node("smmuv3@")?;
    expect("SMMU base", reg(smmu, 0), define("SMMU_PADDR")?);
    expect("SMMU size", reg(smmu, 1), define("SMMU_SIZE")?);
    let irqs = fdt::u32s(smmu, "interrupts").unwrap_or_default();
    for (i, intid) in [106u64, 107, 108, 109].iter().enumerate() {
        // <type spi flags>: SPI n is INTID n + 32; flags 1 = rising edge.
        expect(
            "SMMU INTID",
            irqs.get(i * 3 + 1).map(|&n| n as u64 + 32),
            *intid,
        );
        expect("SMMU IRQ edge", irqs.get(i * 3 + 2).map(|&f| f as u64), 1);
    }
    let pcie = node("pcie@")?;
    expect("PCIe ECAM base", reg(pcie, 0), define("PCIE_ECAM_PADDR")?);
    expect("PCIe ECAM size", reg(pcie, 1), define("PCIE_ECAM_SIZE")?);
    // ranges: <space(1) pci-addr(2) cpu-addr(2) size(2)> in 32-bit cells.
    let ranges = fdt::u32s(pcie, "ranges").unwrap_or_default();
    for r in ranges.chunks(7).filter(|r| r.len() == 7) {
        let cpu = (r[3] as u64) << 32 | r[4] as u64;
        let size = (r[5] as u64) << 32 | r[6] as u64;
        match r[0] >> 24 & 3 {
            1 => {
                expect("PCIe PIO base", Some(cpu), define("PCIE_PIO_PADDR")?);
                expect("PCIe PIO size", Some(size), define("PCIE_PIO_SIZE")?);
            }
            2 => {
                expect("PCIe MMIO base", Some(cpu), define("PCIE_MMIO_PADDR")?);
                expect("PCIe MMIO size", Some(size), define("PCIE_MMIO_SIZE")?);
            }
            _ => {}
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// A minimal flattened-device-tree reader: top-level nodes and their properties.
mod fdt {
    pub struct Node {
        pub name: String,
        pub props: Vec<(String, Vec<u8>)>,
    }

    fn be32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    pub fn parse(b: &[u8]) -> Result<Vec<Node>, String> {
        if be32(b, 0) != Some(0xd00d_feed) {
            return Err("not a flattened device tree".into());
        }
        let structs = be32(b, 8).ok_or("short dtb")? as usize;
        let strings = be32(b, 12).ok_or("short dtb")? as usize;
        let cstr = |at: usize| -> String {
            let end = b[at..]
                .iter()
                .position(|&c| c == 0)
                .map_or(b.len(), |e| at + e);
            String::from_utf8_lossy(&b[at..end]).into_owned()
        };
        let (mut at, mut depth, mut nodes) = (structs, 0usize, Vec::new());
        loop {
            let token = be32(b, at).ok_or("truncated dtb")?;
            at += 4;
            match token {
                1 => {
                    let name = cstr(at);
                    at += (name.len() + 1).div_ceil(4) * 4;
                    depth += 1;
                    if depth == 2 {
                        nodes.push(Node {
                            name,
                            props: Vec::new(),
                        });
                    }
                }
                2 => depth = depth.checked_sub(1).ok_or("unbalanced dtb")?,
                3 => {
                    let len = be32(b, at).ok_or("truncated dtb")? as usize;
                    let name = cstr(strings + be32(b, at + 4).ok_or("truncated dtb")? as usize);
                    let value = b.get(at + 8..at + 8 + len).ok_or("truncated dtb")?.to_vec();
                    at += 8 + len.div_ceil(4) * 4;
                    if depth == 2 {
                        if let Some(n) = nodes.last_mut() {
                            n.props.push((name, value));
                        }
                    }
                }
                4 => {}
                9 => return Ok(nodes),
                t => return Err(format!("bad dtb token {t}")),
            }
        }
    }

    pub fn node<'a>(nodes: &'a [Node], prefix: &str) -> Option<&'a Node> {
        nodes.iter().find(|n| n.name.starts_with(prefix))
    }

    pub fn u32s(n: &Node, prop: &str) -> Option<Vec<u32>> {
        let v = &n.props.iter().find(|(k, _)| k == prop)?.1;
        Some(v.chunks(4).filter_map(|c| be32(c, 0)).collect())
    }

    /// A property of 64-bit (two-cell) values, as our machine's nodes use.
    pub fn cells(n: &Node, prop: &str) -> Option<Vec<u64>> {
        let v = u32s(n, prop)?;
        Some(
            v.chunks(2)
                .map(|c| (c[0] as u64) << 32 | *c.get(1).unwrap_or(&0) as u64)
                .collect(),
        )
    }
}

/// The line `check <name>: ok (...)` a process printed, or why not (its
/// `... FAILED (why)` text, or that it never reported).
pub(crate) fn process_check(out: &BootOutcome, name: &str) -> Result<(), String> {
    let prefix = format!("check {name}: ");
    match out
        .serial
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
    {
        Some(rest) if rest.starts_with("ok") => Ok(()),
        Some(rest) => Err(rest.to_string()),
        None => Err(format!(
            "never reported{}",
            if out.timed_out {
                " (the run timed out)"
            } else {
                ""
            }
        )),
    }
}

pub(crate) fn ended_with_pass(out: &BootOutcome) -> Result<(), String> {
    if out.clean_exit && out.exit_code == Some(0) {
        Ok(())
    } else {
        Err(format!("{}\n{}", out.summary(), tail(&out.serial)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_lines() {
        let s = "x\nserver: SMMU at 0x9050000 (mapped at 0x10000000): IDR0=0x0d40101a IDR1=0x02730010 IDR5=0x00000074\n\
                 client: called server with 7 (my badge 0x42); reply 7066 (label 0, expected 7066)\n";
        assert_eq!(hex_after(s, "server: SMMU at", "IDR0"), Some(0x0d40101a));
        assert_eq!(hex_after(s, "server: SMMU at", "IDR5"), Some(0x74));
        assert_eq!(number_after(s, "client: called", "with"), Some(7));
        assert_eq!(number_after(s, "client: called", "reply"), Some(7066));
        let f = "FAULT in x: VM fault at address 0x1000ffef0, pc 0x210cf4, data access";
        assert_eq!(hex_word(f, "FAULT in x", "address"), Some(0x1_000f_fef0));
        assert_eq!(hex_word(f, "FAULT in x", "pc"), Some(0x210cf4));
    }
}
