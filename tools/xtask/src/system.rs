//! System descriptions (`images/systems/<name>.toml`): which processes a
//! bootable image runs and what each of them may touch.
//!
//! xtask validates a description and turns it into a Rust file that the root
//! task `include!`s (`ROOTTASK_SYSTEM_RS`): plain `static` data of the types in
//! `images/roottask/src/desc.rs`, with each process ELF embedded by
//! `include_bytes!`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// One line on what the system shows.
    #[serde(default)]
    pub description: String,
    /// Processes whose `done` ends the run (default: every process).
    pub wait_for: Option<Vec<String>>,
    /// `"debug"` (default) or `"release"`: a kernel without debug support,
    /// for benchmarks (output then goes through the PL011 from user level).
    #[serde(default)]
    pub kernel: KernelKind,
    #[serde(default)]
    pub qemu: Qemu,
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<Object>,
    #[serde(default, rename = "notification")]
    pub notifications: Vec<Object>,
    #[serde(rename = "process")]
    pub processes: Vec<Process>,
    /// The IOMMU server's clients (see `policy.rs`).
    pub iommu: Option<Iommu>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KernelKind {
    #[default]
    Debug,
    Release,
}

impl KernelKind {
    pub fn flavour(self) -> crate::kernel::Flavour {
        match self {
            KernelKind::Debug => crate::kernel::Flavour::Debug,
            KernelKind::Release => crate::kernel::Flavour::Release,
        }
    }
}

/// QEMU settings this system needs beyond the common command line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// The `edu` device's `-device` value (default `edu`).
    pub edu: Option<String>,
    /// Extra `-device` values.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Wall-clock limit of a run in seconds (default 30).
    pub timeout_secs: Option<u64>,
    /// A disk image xtask creates before each boot and attaches.
    pub disk: Option<Disk>,
}

/// `disk = { size_mib = 8, pattern = "lba", device = "nvme,serial=blk0,addr=3" }`:
/// before each boot xtask writes `build/images/<system>/disk.img` (raw,
/// `size_mib` MiB, filled with `pattern`) and gives QEMU
/// `-drive file=<img>,if=none,format=raw,id=disk0[,<drive_options>]` and
/// `-device <device>,drive=disk0`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The image's size in MiB (1..=1024).
    pub size_mib: u64,
    /// What every 512-byte sector holds; `"lba"` ([`lba_pattern_byte`]) is
    /// the only pattern.
    pub pattern: String,
    /// The `-device` value of the controller the disk hangs off, without
    /// `drive=` (xtask adds `drive=disk0`).
    pub device: String,
    /// More `-drive` options, e.g. `throttling.iops-total=1`.
    pub drive_options: Option<String>,
}

/// Sector size of the `"lba"` pattern.
pub const DISK_SECTOR: u64 = 512;

/// Byte `offset` (0..512) of sector `lba` in the `"lba"` pattern: the first
/// 8 bytes are `lba` as u64 little-endian, the rest a fixed function of
/// `lba` and `offset`. `images/processes/blk-driver/src/pattern.rs` is the
/// guest's copy (the client checks reads against it).
pub fn lba_pattern_byte(lba: u64, offset: usize) -> u8 {
    if offset < 8 {
        return lba.to_le_bytes()[offset];
    }
    let mixed = lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
    (mixed as u8) ^ (offset as u8).wrapping_mul(7) ^ ((offset >> 8) as u8).wrapping_add(0x5a)
}

impl Disk {
    /// The image's bytes.
    pub fn image(&self) -> Vec<u8> {
        let sectors = self.size_mib * (1 << 20) / DISK_SECTOR;
        let mut bytes = Vec::with_capacity((sectors * DISK_SECTOR) as usize);
        for lba in 0..sectors {
            bytes.extend((0..DISK_SECTOR as usize).map(|i| lba_pattern_byte(lba, i)));
        }
        bytes
    }

    /// The `-drive` and `-device` arguments for the image at `file`.
    pub fn qemu_args(&self, file: &Path) -> Vec<String> {
        let mut drive = format!("file={},if=none,format=raw,id=disk0", file.display());
        if let Some(more) = &self.drive_options {
            drive.push(',');
            drive.push_str(more);
        }
        vec![
            "-drive".into(),
            drive,
            "-device".into(),
            format!("{},drive=disk0", self.device),
        ]
    }

    fn check(&self) -> Result<()> {
        if self.size_mib == 0 || self.size_mib > 1024 {
            bail!("[qemu] disk: size_mib must be in 1..=1024");
        }
        if self.pattern != "lba" {
            bail!(
                "[qemu] disk: pattern {:?}: the only pattern is \"lba\"",
                self.pattern
            );
        }
        if self.device.contains("drive=") {
            bail!("[qemu] disk: device must not name a drive (xtask adds drive=disk0)");
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub name: String,
    /// The crate under `images/` that builds this process's ELF.
    #[serde(rename = "crate")]
    pub krate: String,
    /// seL4 priority, below the root task's 255 (default 100).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Stack size in 4 KiB pages (default 16).
    #[serde(default = "default_stack_pages")]
    pub stack_pages: u32,
    /// Copy of its own CNode / VSpace cap into its CSpace.
    #[serde(default)]
    pub grant_cnode: bool,
    #[serde(default)]
    pub grant_vspace: bool,
    /// The PL011 mapped into it (`StartInfo::console`), on a release
    /// kernel only: for output that must cost no system call (the bench
    /// driver's markers, `procrt::print_unlocked`). Other processes print
    /// through the root task and cannot touch the UART.
    #[serde(default)]
    pub uart: bool,
    #[serde(default)]
    pub caps: Vec<Cap>,
    #[serde(default)]
    pub devices: Vec<Device>,
    /// PCI functions it drives: the root task programs their configuration
    /// space, the process never sees it.
    #[serde(default)]
    pub pci: Vec<PciFunction>,
    #[serde(default)]
    pub irqs: Vec<Irq>,
    pub dma: Option<Dma>,
    /// Untyped memory handed over, by size in bits (12..=30).
    #[serde(default)]
    pub untyped: Vec<u8>,
    /// At least this many empty CSpace slots (default 256).
    #[serde(default = "default_free_slots")]
    pub free_slots: u32,
    /// Threads besides the main one (at most 4): each gets a TCB, an IPC
    /// buffer, a stack and a wake notification, and is left suspended for
    /// the process to start (procrt::spawn).
    #[serde(default)]
    pub threads: Vec<Thread>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thread {
    pub name: String,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default = "default_stack_pages")]
    pub stack_pages: u32,
}

fn default_free_slots() -> u32 {
    256
}

fn default_priority() -> u8 {
    100
}

fn default_stack_pages() -> u32 {
    16
}

/// A capability to an endpoint or notification of the system.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// The endpoint's or notification's name.
    pub object: String,
    #[serde(default)]
    pub badge: u64,
    /// Any of `r` (read), `w` (write), `g` (grant), each at most once.
    /// Required, with no default: each cap says what its holder may do, the
    /// least its use needs (an endpoint it only calls `wg`, a notification
    /// it only waits on `r`, one it only signals `w`).
    pub rights: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    pub paddr: u64,
    pub size: u64,
    pub vaddr: u64,
    /// Mapped read-only (default: read-write). PCI configuration space
    /// (ECAM) may only be mapped read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A PCI function a process drives. The root task places BAR0 at `bar0`
/// (a 32-bit or 64-bit memory BAR, placed below 4 GiB, which one of the process's device regions must
/// map from its start), turns on memory decoding, and turns on bus mastering
/// once the IOMMU server has the SMMU enabled with every stream aborting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciFunction {
    /// Requester ID, bus << 8 | device << 3 | function: also the StreamID.
    pub function: u16,
    pub bar0: u64,
}

/// The PL011 UART on `virt`.
pub const PL011: (u64, u64) = (0x0900_0000, 0x1000);

/// PCIe ECAM on `virt,highmem=off`: 1 MiB per bus, 4 KiB per function.
pub const ECAM: (u64, u64) = (0x3f00_0000, 0x100_0000);
/// The 32-bit PCIe memory window BARs are placed in.
pub const PCI_MMIO: (u64, u64) = (0x1000_0000, 0x2eff_0000);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Irq {
    pub name: String,
    /// GIC interrupt ID (SPI n is n + 32).
    pub irq: u16,
    /// A notification of the system to bind it to, signalled with `badge`.
    pub notification: Option<String>,
    #[serde(default)]
    pub badge: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dma {
    pub pages: u32,
    pub vaddr: u64,
    /// 2 MiB frames (for block mappings), mapped from `vaddr` below the
    /// 4 KiB pages; `vaddr` must then be 2 MiB aligned.
    #[serde(default)]
    pub large_pages: u32,
    /// Its devices may only read it: the frame caps the process gets are
    /// read-only, and the IOMMU server maps them device-read-only (the
    /// process itself still writes the pool through its own mapping).
    #[serde(default)]
    pub device_read_only: bool,
}

impl Dma {
    /// Bytes of address space the pool covers.
    pub fn size(&self) -> u64 {
        u64::from(self.large_pages) * LARGE_PAGE + u64::from(self.pages) * PAGE
    }
}

/// A large DMA frame.
const LARGE_PAGE: u64 = 2 << 20;

pub fn path(root: &Path, name: &str) -> PathBuf {
    root.join("images/systems").join(format!("{name}.toml"))
}

/// Reads and checks `images/systems/<name>.toml`.
pub fn load(root: &Path, name: &str) -> Result<System> {
    let file = path(root, name);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("no system description {}", file.display()))?;
    let system: System = toml::from_str(&text).with_context(|| format!("in {}", file.display()))?;
    system
        .check()
        .with_context(|| format!("in {}", file.display()))?;
    Ok(system)
}

const PAGE: u64 = 4096;
/// Process images are linked at 0x20_0000 and up; described regions stay
/// clear of them and of the start-info page, IPC buffer and stack, which the
/// root task places from 0x1_0000_0000 (roottask/src/process.rs).
const LOW_LIMIT: u64 = 0x1000_0000;
const HIGH_LIMIT: u64 = 0x1_0000_0000;

impl System {
    pub fn check(&self) -> Result<()> {
        if self.processes.is_empty() {
            bail!("a system needs at least one [[process]]");
        }
        if let Some(disk) = &self.qemu.disk {
            disk.check()?;
        }
        let mut names = HashSet::new();
        for o in self.endpoints.iter().chain(&self.notifications) {
            if !names.insert(o.name.as_str()) {
                bail!("object name {:?} is used twice", o.name);
            }
        }
        // A physical device page belongs to one region of one process: a
        // process mapping another's registers (the SMMU's, another device's
        // BAR) would drive that device.
        let physical: Vec<(&str, &Device)> = self
            .processes
            .iter()
            .flat_map(|p| p.devices.iter().map(move |d| (p.name.as_str(), d)))
            .collect();
        for (i, (p, d)) in physical.iter().enumerate() {
            for (q, e) in &physical[i + 1..] {
                if d.paddr < e.paddr.saturating_add(e.size)
                    && e.paddr < d.paddr.saturating_add(d.size)
                {
                    bail!(
                        "{p}: device {} ({:#x}+{:#x}) overlaps {q}'s device {} ({:#x}+{:#x}): a device page is one process's",
                        d.name,
                        d.paddr,
                        d.size,
                        e.name,
                        e.paddr,
                        e.size
                    );
                }
            }
        }
        let mut procs = HashSet::new();
        for p in &self.processes {
            if !procs.insert(p.name.as_str()) {
                bail!("process name {:?} is used twice", p.name);
            }
            if p.priority == 255 {
                bail!("{}: priority 255 is the root task's", p.name);
            }
            if p.uart && self.kernel != KernelKind::Release {
                bail!(
                    "{}: uart = true needs kernel = \"release\" (a debug kernel keeps the PL011 for itself)",
                    p.name
                );
            }
            if p.caps.len() > 16 || p.devices.len() > 8 || p.irqs.len() > 8 || p.untyped.len() > 8 {
                bail!("{}: at most 16 caps, 8 devices, 8 IRQs, 8 untypeds", p.name);
            }
            for c in &p.caps {
                if self.object_kind(&c.object).is_none() {
                    bail!(
                        "{}: no endpoint or notification named {:?}",
                        p.name,
                        c.object
                    );
                }
                let mut seen = String::new();
                for r in c.rights.chars() {
                    if !"rwg".contains(r) || seen.contains(r) {
                        bail!(
                            "{}: cap to {}: rights {:?}: use each of r, w, g at most once",
                            p.name,
                            c.object,
                            c.rights
                        );
                    }
                    seen.push(r);
                }
                if seen.is_empty() {
                    bail!(
                        "{}: cap to {}: rights \"\" allow nothing: name at least one of r, w, g",
                        p.name,
                        c.object
                    );
                }
            }
            let mut regions: Vec<(u64, u64, String)> = Vec::new();
            for d in &p.devices {
                if d.paddr % PAGE != 0 || d.size % PAGE != 0 || d.vaddr % PAGE != 0 || d.size == 0 {
                    bail!(
                        "{}: device {}: paddr, size and vaddr must be 4 KiB multiples",
                        p.name,
                        d.name
                    );
                }
                regions.push((d.vaddr, d.size, format!("device {}", d.name)));
                // Writing a function's configuration space moves or enables
                // devices (a BAR placed over another driver's takes its MMIO;
                // bus mastering starts DMA): the root task programs it, and
                // a process may at most read it.
                // The PL011 is the root task's (on a release kernel it prints
                // through it; `uart = true` maps it for a process, read-write).
                if d.paddr < PL011.0 + PL011.1 && PL011.0 < d.paddr + d.size {
                    bail!(
                        "{}: device {}: the PL011 ({:#x}) is the root task's console; `uart = true` maps it where a process may write it",
                        p.name,
                        d.name,
                        PL011.0
                    );
                }
                let in_ecam = d.paddr < ECAM.0 + ECAM.1 && ECAM.0 < d.paddr + d.size;
                if in_ecam && !d.read_only {
                    bail!(
                        "{}: device {}: PCI configuration space (ECAM) may only be mapped read_only; declare the function in `pci` and the root task programs it",
                        p.name,
                        d.name
                    );
                }
            }
            for f in &p.pci {
                let others = self
                    .processes
                    .iter()
                    .flat_map(|o| o.pci.iter().map(move |g| (o, g)));
                for (o, g) in others {
                    if std::ptr::eq(f, g) {
                        continue;
                    }
                    if g.function == f.function {
                        bail!(
                            "PCI function {:#06x} is given to both {} and {}",
                            f.function,
                            p.name,
                            o.name
                        );
                    }
                    if g.bar0 == f.bar0 {
                        bail!(
                            "{} and {}: two PCI functions with BAR0 at {:#x}",
                            p.name,
                            o.name,
                            f.bar0
                        );
                    }
                }
                if f.bar0 % PAGE != 0 || f.bar0 < PCI_MMIO.0 || f.bar0 >= PCI_MMIO.0 + PCI_MMIO.1 {
                    bail!(
                        "{}: PCI function {:#06x}: bar0 {:#x} must be page aligned, in the PCIe memory window {:#x}+{:#x}",
                        p.name,
                        f.function,
                        f.bar0,
                        PCI_MMIO.0,
                        PCI_MMIO.1
                    );
                }
                if !p.devices.iter().any(|d| d.paddr == f.bar0) {
                    bail!(
                        "{}: PCI function {:#06x}: no device region of its maps BAR0 at {:#x}",
                        p.name,
                        f.function,
                        f.bar0
                    );
                }
            }
            if p.pci.len() > 4 {
                bail!("{}: at most 4 PCI functions (procinfo::MAX_PCI)", p.name);
            }
            if let Some(dma) = &p.dma {
                if dma.vaddr % PAGE != 0 || dma.pages == 0 {
                    bail!("{}: dma: vaddr must be page aligned and pages > 0", p.name);
                }
                if dma.large_pages > 0 && dma.vaddr % LARGE_PAGE != 0 {
                    bail!(
                        "{}: dma: with large_pages, vaddr must be 2 MiB aligned",
                        p.name
                    );
                }
                regions.push((dma.vaddr, dma.size(), "dma".into()));
            }
            regions.sort();
            for r in &regions {
                if r.0 < LOW_LIMIT || r.0 + r.1 > HIGH_LIMIT {
                    bail!(
                        "{}: {} must lie in [{LOW_LIMIT:#x}, {HIGH_LIMIT:#x})",
                        p.name,
                        r.2
                    );
                }
            }
            for w in regions.windows(2) {
                if w[0].0 + w[0].1 > w[1].0 {
                    bail!("{}: {} and {} overlap", p.name, w[0].2, w[1].2);
                }
            }
            for i in &p.irqs {
                if i.irq > 255 || i.irq < 32 {
                    bail!("{}: IRQ {}: only SPIs 32..=255", p.name, i.irq);
                }
                if let Some(n) = &i.notification {
                    if !self.notifications.iter().any(|o| &o.name == n) {
                        bail!("{}: IRQ {}: no notification named {n:?}", p.name, i.name);
                    }
                }
            }
            if p.threads.len() > 4 {
                bail!("{}: at most 4 threads besides the main one", p.name);
            }
            let mut thread_names = HashSet::from([MAIN_THREAD]);
            for t in &p.threads {
                if !thread_names.insert(t.name.as_str()) {
                    bail!(
                        "{}: thread name {:?} is used twice (or is main)",
                        p.name,
                        t.name
                    );
                }
                if t.priority == 255 {
                    bail!(
                        "{}: thread {}: priority 255 is the root task's",
                        p.name,
                        t.name
                    );
                }
            }
            if p.free_slots > 1 << 16 {
                bail!("{}: free_slots above 65536", p.name);
            }
            for &u in &p.untyped {
                if !(12..=30).contains(&u) {
                    bail!("{}: untyped size bits {u} not in 12..=30", p.name);
                }
            }
        }
        for w in self.wait_for.iter().flatten() {
            if !procs.contains(w.as_str()) {
                bail!("wait_for names {w:?}, which is not a process");
            }
        }
        Ok(())
    }

    fn object_kind(&self, name: &str) -> Option<(&'static str, usize)> {
        if let Some(i) = self.endpoints.iter().position(|o| o.name == name) {
            return Some(("Endpoint", i));
        }
        self.notifications
            .iter()
            .position(|o| o.name == name)
            .map(|i| ("Notification", i))
    }

    /// The crates to build, in process order, deduplicated.
    pub fn crates(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.processes {
            if !out.contains(&p.krate.as_str()) {
                out.push(&p.krate);
            }
        }
        out
    }

    /// The Rust source the root task includes; `elf(krate)` gives each ELF path.
    pub fn generate(&self, name: &str, elf: impl Fn(&str) -> PathBuf) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "// Generated by `cargo xtask image {name}` from images/systems/{name}.toml. Do not edit.");
        let _ = writeln!(s, "pub static SYSTEM: System = System {{");
        let _ = writeln!(s, "    name: {name:?},");
        let _ = writeln!(
            s,
            "    endpoints: &{:?},",
            self.endpoints.iter().map(|o| &o.name).collect::<Vec<_>>()
        );
        let _ = writeln!(
            s,
            "    notifications: &{:?},",
            self.notifications
                .iter()
                .map(|o| &o.name)
                .collect::<Vec<_>>()
        );
        let _ = writeln!(s, "    processes: &[");
        for p in &self.processes {
            let wait = match &self.wait_for {
                Some(list) => list.contains(&p.name),
                None => true,
            };
            let _ = writeln!(s, "        Process {{");
            let _ = writeln!(s, "            name: {:?},", p.name);
            let _ = writeln!(
                s,
                "            elf: include_bytes!({:?}),",
                elf(&p.krate).display().to_string()
            );
            let _ = writeln!(s, "            priority: {},", p.priority);
            let _ = writeln!(s, "            stack_pages: {},", p.stack_pages);
            let _ = writeln!(s, "            grant_cnode: {},", p.grant_cnode);
            let _ = writeln!(s, "            grant_vspace: {},", p.grant_vspace);
            let _ = writeln!(s, "            uart: {},", p.uart);
            let _ = writeln!(s, "            wait: {wait},");
            let _ = writeln!(s, "            caps: &[");
            for c in &p.caps {
                let (kind, index) = self.object_kind(&c.object).expect("checked");
                let _ = writeln!(
                    s,
                    "                CapDesc {{ kind: ObjKind::{kind}, object: {index}, badge: {:#x}, read: {}, write: {}, grant: {} }},",
                    c.badge,
                    c.rights.contains('r'),
                    c.rights.contains('w'),
                    c.rights.contains('g'),
                );
            }
            let _ = writeln!(s, "            ],");
            let _ = writeln!(s, "            devices: &[");
            for d in &p.devices {
                let _ = writeln!(
                    s,
                    "                DeviceDesc {{ name: {:?}, paddr: {:#x}, size: {:#x}, vaddr: {:#x}, read_only: {} }},",
                    d.name, d.paddr, d.size, d.vaddr, d.read_only
                );
            }
            let _ = writeln!(s, "            ],");
            let _ = writeln!(s, "            pci: &[");
            for f in &p.pci {
                let _ = writeln!(
                    s,
                    "                PciDesc {{ function: {:#x}, bar0: {:#x} }},",
                    f.function, f.bar0
                );
            }
            let _ = writeln!(s, "            ],");
            let _ = writeln!(s, "            irqs: &[");
            for i in &p.irqs {
                let notification = match &i.notification {
                    Some(n) => format!(
                        "Some({})",
                        self.notifications
                            .iter()
                            .position(|o| &o.name == n)
                            .expect("checked")
                    ),
                    None => "None".into(),
                };
                let _ = writeln!(
                    s,
                    "                IrqDesc {{ name: {:?}, irq: {}, notification: {notification}, badge: {:#x} }},",
                    i.name, i.irq, i.badge
                );
            }
            let _ = writeln!(s, "            ],");
            match &p.dma {
                Some(d) => {
                    let _ = writeln!(
                        s,
                        "            dma: Some(DmaDesc {{ pages: {}, vaddr: {:#x}, large_pages: {}, device_read_only: {} }}),",
                        d.pages, d.vaddr, d.large_pages, d.device_read_only
                    );
                }
                None => {
                    let _ = writeln!(s, "            dma: None,");
                }
            }
            let _ = writeln!(s, "            untyped: &{:?},", p.untyped);
            let _ = writeln!(s, "            free_slots: {},", p.free_slots);
            let _ = writeln!(s, "            threads: &[");
            for t in &p.threads {
                let _ = writeln!(
                    s,
                    "                ThreadDesc {{ name: {:?}, priority: {}, stack_pages: {} }},",
                    t.name, t.priority, t.stack_pages
                );
            }
            let _ = writeln!(s, "            ],");
            let _ = writeln!(s, "        }},");
        }
        let _ = writeln!(s, "    ],");
        // The root task mints itself a cap to the IOMMU server's endpoint
        // with this badge and retires clients through it.
        // The IOMMU server learns every client's DMA pool from the root
        // task (procinfo::DmaGrant).
        let server = self
            .iommu
            .as_ref()
            .and_then(|_| self.processes.iter().position(|p| p.krate == SERVER_CRATE));
        match (&self.iommu, server) {
            (Some(i), Some(server)) => {
                let index = |name: &str| self.endpoints.iter().position(|o| o.name == name);
                let endpoint = index(&i.endpoint).unwrap_or(0);
                let clients: Vec<usize> = std::iter::once(endpoint)
                    .chain(i.bands.iter().filter_map(|b| index(&b.endpoint)))
                    .collect();
                let _ = writeln!(
                    s,
                    "    iommu: Some(Iommu {{ server: {server}, client_endpoints: &{clients:?} }}),"
                );
                match i.supervisor_badge {
                    Some(badge) => {
                        let _ = writeln!(
                            s,
                            "    supervisor: Some(Supervisor {{ endpoint: {endpoint}, badge: {badge:#x} }}),"
                        );
                    }
                    None => {
                        let _ = writeln!(s, "    supervisor: None,");
                    }
                }
            }
            _ => {
                let _ = writeln!(s, "    iommu: None,");
                let _ = writeln!(s, "    supervisor: None,");
            }
        }
        let _ = writeln!(s, "}};");
        s
    }
}

/// The IOMMU server's clients (`[iommu]`); `crate::policy` checks them and
/// turns them into the server's policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iommu {
    pub endpoint: String,
    /// The badge of the root task's own cap to the server's endpoint: the
    /// supervisor that tells the server when a client is gone (retire).
    /// None: the root task gets no such cap and retires nobody.
    #[serde(default)]
    pub supervisor_badge: Option<u64>,
    #[serde(default, rename = "client")]
    pub clients: Vec<Client>,
    /// Bands besides the main thread's (`endpoint`).
    #[serde(default)]
    pub bands: Vec<Band>,
    /// Lets the quotas add up to more than a pool the clients share (domain
    /// slots, attachments, receive slots, table memory): then a client
    /// within its quota can be denied by another within its own. Only for
    /// systems that test the server's own exhaustion handling (`death`).
    #[serde(default)]
    pub oversubscribe_shared_pools: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub endpoint: String,
    /// The server thread that serves it.
    pub thread: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub process: String,
    #[serde(default)]
    pub streams: Vec<u32>,
    #[serde(default)]
    pub max_ssid: u32,
    #[serde(default)]
    pub quotas: Quotas,
}

/// Overrides of `iommu_server::policy::Quotas::DEFAULT`, field by field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    pub domains: Option<u32>,
    pub mapped_bytes: Option<u64>,
    pub mappings: Option<u32>,
    pub pt_pages: Option<u32>,
    pub asids: Option<u32>,
    pub memory_regions: Option<u32>,
    pub memory_frames: Option<u32>,
}

/// The server's thread name for the band of `[iommu] endpoint`.
pub const MAIN_THREAD: &str = "main";

/// The crate of the IOMMU server process.
pub const SERVER_CRATE: &str = "iommu-serverd";

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn every_checked_in_system_parses() {
        let dir = root().join("images/systems");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let name = path.file_stem().unwrap().to_str().unwrap().to_string();
                let system = load(&root(), &name).unwrap();
                let rust = system.generate(&name, |k| PathBuf::from(format!("/x/{k}")));
                assert!(rust.contains("pub static SYSTEM"));
                seen += 1;
            }
        }
        assert!(seen >= 2);
    }

    #[test]
    fn refuses_unknown_objects_and_overlaps() {
        let bad_cap = r#"
            [[process]]
            name = "a"
            crate = "hello-client"
            caps = [{ object = "nope", rights = "w" }]
        "#;
        let s: System = toml::from_str(bad_cap).unwrap();
        assert!(s.check().is_err());
        let overlap = r#"
            [[process]]
            name = "a"
            crate = "hello-client"
            devices = [{ name = "x", paddr = 0x9050000, size = 0x2000, vaddr = 0x10000000 }]
            dma = { pages = 4, vaddr = 0x10001000 }
        "#;
        let s: System = toml::from_str(overlap).unwrap();
        assert!(s.check().is_err());
    }

    #[test]
    fn uart_only_on_a_release_kernel() {
        let with = |kernel: &str| {
            toml::from_str::<System>(&format!(
                "kernel = {kernel:?}\n[[process]]\nname = \"a\"\ncrate = \"hello-client\"\nuart = true\n"
            ))
            .unwrap()
            .check()
        };
        assert!(with("release").is_ok());
        let err = with("debug").unwrap_err().to_string();
        assert!(err.contains("uart = true needs kernel"), "{err}");
    }

    #[test]
    fn cap_rights_are_required_and_checked() {
        let with = |rights: &str| {
            format!(
                "[[endpoint]]\nname = \"e\"\n[[process]]\nname = \"a\"\ncrate = \"hello-client\"\ncaps = [{{ object = \"e\"{rights} }}]\n"
            )
        };
        let missing = toml::from_str::<System>(&with("")).unwrap_err();
        assert!(missing.to_string().contains("rights"), "{missing}");
        let check = |rights: &str| {
            toml::from_str::<System>(&with(&format!(", rights = {rights:?}")))
                .unwrap()
                .check()
        };
        assert!(check("wg").is_ok());
        assert!(check("rwg").is_ok());
        for bad in ["", "x", "ww", "rwgr"] {
            let err = check(bad).unwrap_err().to_string();
            assert!(err.contains("a: cap to e: rights"), "{bad:?}: {err}");
        }
    }
}
