//! The system description, as data. xtask generates the `SYSTEM` static from
//! `images/systems/<name>.toml` (see tools/xtask/src/system.rs).

#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(has_system), allow(dead_code))]
pub enum ObjKind {
    Endpoint,
    Notification,
}

pub struct System {
    pub name: &'static str,
    pub endpoints: &'static [&'static str],
    pub notifications: &'static [&'static str],
    pub processes: &'static [Process],
    /// The IOMMU server, if the system runs one.
    pub iommu: Option<Iommu>,
    /// The IOMMU server's endpoint and the badge of the root task's own cap
    /// to it: when a process that is one of its clients ends or faults, the
    /// root task tells the server to retire it.
    pub supervisor: Option<Supervisor>,
}

pub struct Iommu {
    /// Index into `System::processes`: the server, whose start-info page
    /// lists every client's DMA pool (`procinfo::DmaGrant`).
    pub server: usize,
    /// Every endpoint the server serves clients on (its bands, the main
    /// one first): a client is a process with a badged cap to one of them,
    /// and its badge is that cap's.
    pub client_endpoints: &'static [usize],
}

pub struct Supervisor {
    /// Index into `System::endpoints`: the server's main endpoint, which
    /// the supervisor cap is minted from.
    pub endpoint: usize,
    pub badge: u64,
}

pub struct Process {
    pub name: &'static str,
    pub elf: &'static [u8],
    pub priority: u8,
    pub stack_pages: u32,
    pub grant_cnode: bool,
    pub grant_vspace: bool,
    /// The PL011 mapped at `StartInfo::console` (kernels without printing).
    pub uart: bool,
    /// The run ends when every process with `wait` has reported done.
    pub wait: bool,
    pub caps: &'static [CapDesc],
    pub devices: &'static [DeviceDesc],
    /// PCI functions it drives (the root task programs them).
    pub pci: &'static [PciDesc],
    pub irqs: &'static [IrqDesc],
    pub dma: Option<DmaDesc>,
    /// Untyped memory to hand over, by size in bits.
    pub untyped: &'static [u8],
    /// At least this many empty CSpace slots (for received caps, new objects).
    pub free_slots: u32,
    /// Threads besides the main one, left suspended for the process to start.
    pub threads: &'static [ThreadDesc],
}

pub struct ThreadDesc {
    pub name: &'static str,
    pub priority: u8,
    pub stack_pages: u32,
}

pub struct CapDesc {
    pub kind: ObjKind,
    /// Index into `System::endpoints` or `System::notifications`.
    pub object: usize,
    pub badge: u64,
    pub read: bool,
    pub write: bool,
    pub grant: bool,
}

pub struct DeviceDesc {
    pub name: &'static str,
    pub paddr: u64,
    pub size: u64,
    pub vaddr: u64,
    pub read_only: bool,
}

pub struct PciDesc {
    /// Requester ID (bus << 8 | device << 3 | function).
    pub function: u16,
    pub bar0: u64,
}

pub struct IrqDesc {
    pub name: &'static str,
    pub irq: u16,
    /// Index into `System::notifications`.
    pub notification: Option<usize>,
    pub badge: u64,
}

pub struct DmaDesc {
    pub pages: u32,
    pub vaddr: u64,
    /// 2 MiB frames mapped from `vaddr`, below the 4 KiB pages.
    pub large_pages: u32,
    /// Its devices may only read it (read-only frame caps, a read-only
    /// grant at the IOMMU server).
    pub device_read_only: bool,
}

#[cfg(has_system)]
include!(env!("ROOTTASK_SYSTEM_RS"));

/// Without a description (clippy, a bare `cargo build`) the root task runs
/// nothing and says so.
#[cfg(not(has_system))]
pub static SYSTEM: System = System {
    name: "(none: build with cargo xtask image)",
    endpoints: &[],
    notifications: &[],
    processes: &[],
    iommu: None,
    supervisor: None,
};
