//! Boots an image in qemu-system-aarch64 with a hard wall-clock limit.
//!
//! The machine is DESIGN.md §4's: `virt` with an SMMUv3 in front of PCIe,
//! `highmem=off` (ECAM at 0x3f00_0000), a cortex-a53, 1 GiB, no NIC (so the
//! first `edu` sits at 00:01.0, StreamID 0x8) and semihosting from EL0 so the
//! root task can end the run with an exit code.

use crate::{kernel, system, Ctx};
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct BootOptions {
    pub system: String,
    /// Kill QEMU after this long (None: the system's `qemu.timeout_secs`, else 30 s).
    pub timeout: Option<Duration>,
    /// Echo the serial output to our stdout as it arrives.
    pub echo: bool,
    /// Record QEMU's `smmuv3_*` / `smmu_*` trace events in a file.
    pub trace: bool,
    /// `-icount shift=0`: one instruction = 1 ns of virtual time (benchmarks).
    pub icount: bool,
    /// More `-device` values, after the system's own.
    pub extra_devices: Vec<String>,
}

impl BootOptions {
    pub fn interactive(system: &str) -> BootOptions {
        BootOptions {
            system: system.to_string(),
            timeout: None,
            echo: true,
            trace: false,
            icount: false,
            extra_devices: Vec::new(),
        }
    }

    /// `[SYSTEM] [--trace] [--icount] [--timeout SECS] [--device DEV]...`
    pub fn from_args(args: &[String], default: &str) -> Result<(String, BootOptions)> {
        let mut system = None;
        let mut options = BootOptions::interactive(default);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--trace" => options.trace = true,
                "--icount" => options.icount = true,
                "--timeout" => {
                    let secs: u64 = it.next().context("--timeout needs seconds")?.parse()?;
                    options.timeout = Some(Duration::from_secs(secs));
                }
                "--device" => options
                    .extra_devices
                    .push(it.next().context("--device needs a value")?.clone()),
                s if s.starts_with("--") => anyhow::bail!("unknown option {s}"),
                s if system.is_none() => system = Some(s.to_string()),
                s => anyhow::bail!("unexpected argument {s}"),
            }
        }
        options.system = system.unwrap_or_else(|| default.to_string());
        Ok((options.system.clone(), options))
    }

    /// For tests: quiet, traced.
    pub fn test(system: &str) -> BootOptions {
        BootOptions {
            echo: false,
            trace: true,
            ..BootOptions::interactive(system)
        }
    }
}

pub struct BootOutcome {
    /// Everything the guest wrote to the serial port (loader, kernel, processes).
    pub serial: String,
    /// QEMU's exit status (the semihosting exit code); None if it was killed.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Where the SMMU trace went, when asked for.
    pub trace_file: Option<PathBuf>,
    /// What QEMU printed on stderr (its own errors).
    pub stderr: String,
    pub elapsed: Duration,
    /// When each chunk of serial output arrived: (time since QEMU started,
    /// byte offset of the chunk's end in `serial`).
    pub arrivals: Vec<(Duration, usize)>,
    /// Exit code 0 within the time limit.
    pub clean_exit: bool,
}

impl BootOutcome {
    /// Roughly when `needle` first appeared on the serial port (chunk granularity).
    pub fn time_to(&self, needle: &str) -> Option<Duration> {
        let at = self.serial.find(needle)? + needle.len();
        self.arrivals
            .iter()
            .find(|(_, end)| *end >= at)
            .map(|(t, _)| *t)
    }

    pub fn summary(&self) -> String {
        if self.timed_out {
            format!("killed after {:.1?} (time limit)", self.elapsed)
        } else {
            match self.exit_code {
                Some(code) => format!("exit code {code} after {:.1?}", self.elapsed),
                None => format!("QEMU ended by a signal after {:.1?}", self.elapsed),
            }
        }
    }
}

/// The QEMU command line for an image (without `-trace`).
pub fn command(image: &Path, edu: &str, devices: &[String], icount: bool) -> Command {
    let mut c = Command::new("qemu-system-aarch64");
    c.args(["-M", "virt,iommu=smmuv3,highmem=off", "-cpu", "cortex-a53"]);
    c.args(["-m", &format!("{}M", kernel::RAM_SIZE >> 20)]);
    c.args([
        "-nographic",
        "-nic",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ]);
    c.args(["-device", edu]);
    for d in devices {
        c.args(["-device", d]);
    }
    c.arg("-kernel").arg(image);
    c.args([
        "-semihosting-config",
        "enable=on,target=native,userspace=on",
    ]);
    if icount {
        c.args(["-icount", "shift=0"]);
    }
    c
}

/// Where a system's disk image (`[qemu] disk`) is written before each boot,
/// and where the tests read it back after QEMU exits.
pub fn disk_image(ctx: &Ctx, system: &str) -> PathBuf {
    ctx.build.join("images").join(system).join("disk.img")
}

/// Writes `system`'s disk image afresh, if its description has one, and
/// attaches it to `cmd`: the tests judge what the guest wrote against the
/// pattern, so every boot starts from it.
pub fn attach_disk(
    ctx: &Ctx,
    system: &str,
    desc: &system::System,
    cmd: &mut Command,
) -> Result<()> {
    if let Some(disk) = &desc.qemu.disk {
        let file = disk_image(ctx, system);
        std::fs::write(&file, disk.image())
            .with_context(|| format!("writing {}", file.display()))?;
        cmd.args(disk.qemu_args(&file));
    }
    Ok(())
}

pub fn boot(ctx: &Ctx, image: &Path, options: &BootOptions) -> Result<BootOutcome> {
    let desc = system::load(&ctx.root, &options.system)?;
    let timeout = options
        .timeout
        .unwrap_or(Duration::from_secs(desc.qemu.timeout_secs.unwrap_or(30)));
    let mut devices = desc.qemu.devices.clone();
    devices.extend(options.extra_devices.iter().cloned());
    let edu = desc.qemu.edu.as_deref().unwrap_or("edu");
    let mut cmd = command(image, edu, &devices, options.icount);
    if options.echo && !desc.description.is_empty() {
        println!("qemu: booting {}: {}", options.system, desc.description);
    }

    let log_dir = ctx.build.join("images").join(&options.system);
    std::fs::create_dir_all(&log_dir)?;
    attach_disk(ctx, &options.system, &desc, &mut cmd)?;
    let trace_file = options.trace.then(|| log_dir.join("smmu-trace.log"));
    if let Some(file) = &trace_file {
        let _ = std::fs::remove_file(file);
        cmd.args(["-trace", "smmuv3_*", "-trace", "smmu_*", "-D"])
            .arg(file);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let started = Instant::now();
    let mut child = cmd.spawn().context("could not start qemu-system-aarch64")?;
    let serial = Arc::new(Mutex::new(Vec::<u8>::new()));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("piped");
    let echo = options.echo;
    let reader = {
        let serial = Arc::clone(&serial);
        let arrivals = Arc::clone(&arrivals);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
                let mut serial = serial.lock().unwrap();
                // Carriage returns are dropped: the loader sends CRLF, the kernel LF.
                serial.extend(buf[..n].iter().filter(|&&b| b != b'\r'));
                arrivals
                    .lock()
                    .unwrap()
                    .push((started.elapsed(), serial.len()));
            }
        })
    };
    let mut stderr_pipe = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });

    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let serial = String::from_utf8_lossy(&serial.lock().unwrap()).into_owned();
    let exit_code = status.and_then(|s| s.code());
    if !stderr.trim().is_empty() && echo {
        eprintln!("qemu: {}", stderr.trim());
    }
    let outcome = BootOutcome {
        clean_exit: !timed_out && exit_code == Some(0),
        serial,
        exit_code,
        timed_out,
        trace_file,
        stderr,
        elapsed,
        arrivals: std::mem::take(&mut *arrivals.lock().unwrap()),
    };
    let _ = std::fs::write(log_dir.join("serial.log"), &outcome.serial);
    if echo {
        println!("\nqemu: {} ({})", options.system, outcome.summary());
    }
    Ok(outcome)
}
