//! The start-info page: what the root task tells a process about itself.
//!
//! Each process starts with `x0` = the address of a read-only page holding one
//! [`StartInfo`]. Capabilities are CPtrs into the process's own CSpace, which
//! is a single CNode whose guard makes every CPtr a plain slot number.
//! The crate also holds the ELF reader shared by the loader and the root task.
#![no_std]

pub mod elf;

/// `StartInfo::magic`: "seL4 START" in ASCII, little-endian.
pub const START_INFO_MAGIC: u64 = 0x5452_4154_5334_6c65;
/// Bumped whenever the layout changes.
pub const START_INFO_VERSION: u32 = 4;

pub const NAME_LEN: usize = 24;
pub const MAX_CAPS: usize = 16;
pub const MAX_DEVICES: usize = 8;
pub const MAX_IRQS: usize = 8;
pub const MAX_UNTYPED: usize = 8;
/// Threads of one process, the main thread included.
pub const MAX_THREADS: usize = 5;
/// DMA grants the IOMMU server's start-info page can list.
pub const MAX_DMA_GRANTS: usize = 16;
/// A large DMA frame: 2 MiB, one level-2 block in a page table.
pub const LARGE_PAGE: u64 = 2 << 20;
/// PCI functions one process may drive.
pub const MAX_PCI: usize = 4;

/// 2 MiB slots of every process's address space that the root task leaves
/// empty, one per thread (`FRAME_PROBE_BASE + i * 2 MiB` for thread `i`),
/// in the GiB of the start-info page, so a page directory covers them but
/// no page table does. A process holding its VSpace cap tells a 2 MiB frame
/// cap from a 4 KiB one by mapping it at its slot: only a 2 MiB frame maps
/// without a page table (seL4 5.0.0 tells a frame's size only to debug
/// kernels). Stacks end below it (the root task checks).
pub const FRAME_PROBE_BASE: u64 = 0x1_3000_0000;
/// Size of one probe slot: a level-2 block, the frame size it detects.
pub const FRAME_PROBE_SLOT: u64 = 2 << 20;

/// Thread `thread`'s frame-probe slot (index in `StartInfo::threads`).
pub const fn frame_probe_vaddr(thread: usize) -> u64 {
    FRAME_PROBE_BASE + thread as u64 * FRAME_PROBE_SLOT
}

/// Fixed slots in every process's CSpace (slot 0 stays empty).
pub mod slot {
    /// Badged endpoint to the root task: faults arrive there (kernel use).
    pub const FAULT_EP: u64 = 1;
    /// Badged endpoint to the root task for `done` and other reports.
    pub const CONTROL_EP: u64 = 2;
    /// The process's own TCB.
    pub const TCB: u64 = 3;
    /// Its own CNode, if the description grants it (else empty).
    pub const CNODE: u64 = 4;
    /// Its own VSpace (PGD), if granted (else empty).
    pub const VSPACE: u64 = 5;
    /// Console output: an endpoint the root task's console thread receives
    /// on, write right only, badged with the process's index; each message
    /// is printed whole ([`crate::console`], `procrt::println!`).
    pub const CONSOLE: u64 = 6;
    /// Described capabilities are placed from here on.
    pub const FIRST_FREE: u64 = 8;
}

/// Console output through the root task: the message a process sends on
/// its console cap (`slot::CONSOLE`, an endpoint the root task's console
/// thread receives on) for each piece of text it prints.
///
/// Label: the byte count, 1 ..= [`MAX_BYTES`]. Message registers
/// 0 .. `words(count)`: the bytes, packed little-endian, eight to a word
/// (the last word zero-padded); registers 0..4 travel in CPU registers, the
/// rest in the IPC buffer. The badge is the sender's process index. The
/// console thread prints each message whole, before it takes the next;
/// longer text is several messages.
pub mod console {
    /// seL4's message length, `seL4_MsgMaxLength` (120 words).
    pub const MAX_WORDS: usize = 120;
    /// Bytes one message carries.
    pub const MAX_BYTES: usize = MAX_WORDS * 8;

    /// Message words that carry `len` bytes.
    pub const fn words(len: usize) -> usize {
        len.div_ceil(8)
    }

    /// Word `i` of the message carrying `bytes` (little-endian, zero-padded).
    pub fn word(bytes: &[u8], i: usize) -> u64 {
        let mut w = [0u8; 8];
        let from = (i * 8).min(bytes.len());
        let to = (from + 8).min(bytes.len());
        w[..to - from].copy_from_slice(&bytes[from..to]);
        u64::from_le_bytes(w)
    }

    /// The text a message carries: `label` bytes (at most [`MAX_BYTES`],
    /// and at most what `length` words hold) from message word `mr(i)`,
    /// unpacked into `out`.
    pub fn unpack(
        label: u64,
        length: usize,
        mr: impl Fn(usize) -> u64,
        out: &mut [u8; MAX_BYTES],
    ) -> &[u8] {
        let len = (label.min(MAX_BYTES as u64) as usize).min(length.min(MAX_WORDS) * 8);
        for i in 0..words(len) {
            let w = mr(i).to_le_bytes();
            let n = (len - i * 8).min(8);
            out[i * 8..i * 8 + n].copy_from_slice(&w[..n]);
        }
        &out[..len]
    }

    #[cfg(test)]
    mod tests {
        extern crate std;
        use super::*;
        use std::vec::Vec;

        fn round_trip(text: &[u8]) -> Vec<u8> {
            let n = words(text.len());
            let msg: Vec<u64> = (0..n).map(|i| word(text, i)).collect();
            let mut out = [0u8; MAX_BYTES];
            unpack(text.len() as u64, n, |i| msg[i], &mut out).to_vec()
        }

        #[test]
        fn text_survives_packing() {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 100, MAX_BYTES - 1, MAX_BYTES] {
                let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                assert_eq!(round_trip(&text), text, "{len} bytes");
            }
        }

        #[test]
        fn words_are_little_endian_and_zero_padded() {
            assert_eq!(word(b"abcdefghij", 0), u64::from_le_bytes(*b"abcdefgh"));
            assert_eq!(
                word(b"abcdefghij", 1),
                u64::from(b'i') | u64::from(b'j') << 8
            );
            assert_eq!(word(b"ab", 5), 0);
        }

        #[test]
        fn a_lying_label_reads_no_more_than_the_message() {
            let mut out = [0u8; MAX_BYTES];
            let read = core::cell::Cell::new(0);
            let got = unpack(
                u64::MAX,
                2,
                |i| {
                    read.set(read.get().max(i + 1));
                    u64::from_le_bytes(*b"01234567")
                },
                &mut out,
            );
            assert_eq!(got, b"0123456701234567");
            assert_eq!(read.get(), 2);
            assert_eq!(unpack(5000, 200, |_| 0, &mut out).len(), MAX_BYTES);
        }
    }
}

/// Messages on the control endpoint (the message label).
pub mod control {
    /// `done`: MR0 = 1 for pass, 0 for fail. The root task does not reply.
    pub const DONE: u64 = 0x646f;
    /// `ready`, from the IOMMU server only: the SMMU is enabled with every
    /// stream aborting. The root task starts the other processes, and turns
    /// on PCI bus mastering, only then. No reply.
    pub const READY: u64 = 0x7264;
}

/// The root task's messages to the IOMMU server, on its supervisor badge
/// (a badged cap of the server's endpoint that only the root task holds).
pub mod supervisor {
    /// `retire`: MR0 = the client's badge. The process is gone (done or
    /// faulted): the server takes back its streams, domains, tables, ASIDs
    /// and memory. Reply label 0 and [`Retired`] in MR0..3, or label
    /// [`REFUSED`] with the protocol's error index in MR0.
    pub const RETIRE: u64 = 0x7265;
    /// Reply label of a refused supervisor request.
    pub const REFUSED: u64 = 1;

    /// What the server took back from a retired client, as four message
    /// registers.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Retired {
        pub streams: u16,
        pub domains: u16,
        pub memory_regions: u16,
        pub faults: u16,
        pub pt_pages: u32,
        pub mappings: u32,
        pub frames: u64,
        pub mapped_bytes: u64,
    }

    impl Retired {
        pub fn to_mrs(&self) -> [u64; 4] {
            [
                u64::from(self.streams)
                    | u64::from(self.domains) << 16
                    | u64::from(self.memory_regions) << 32
                    | u64::from(self.faults) << 48,
                u64::from(self.pt_pages) | u64::from(self.mappings) << 32,
                self.frames,
                self.mapped_bytes,
            ]
        }
        pub fn from_mrs(m: &[u64; 4]) -> Retired {
            Retired {
                streams: m[0] as u16,
                domains: (m[0] >> 16) as u16,
                memory_regions: (m[0] >> 32) as u16,
                faults: (m[0] >> 48) as u16,
                pt_pages: m[1] as u32,
                mappings: (m[1] >> 32) as u32,
                frames: m[2],
                mapped_bytes: m[3],
            }
        }
    }
}

/// Kind of a named capability.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapKind {
    Endpoint = 1,
    Notification = 2,
}

/// A fixed-size, NUL-padded name.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name(pub [u8; NAME_LEN]);

impl Name {
    pub const EMPTY: Name = Name([0; NAME_LEN]);

    /// Truncates to `NAME_LEN` bytes.
    pub const fn new(s: &str) -> Name {
        let mut out = [0u8; NAME_LEN];
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() && i < NAME_LEN {
            out[i] = b[i];
            i += 1;
        }
        Name(out)
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// An endpoint or notification capability the description gave this process.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NamedCap {
    /// The object's name in the system description.
    pub name: Name,
    pub kind: u32,
    /// Rights granted: bit 0 read, 1 write, 2 grant, 3 grant-reply.
    pub rights: u32,
    pub cptr: u64,
    /// The badge minted into this cap (0: unbadged).
    pub badge: u64,
}

/// Device memory mapped uncached into this process.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeviceRegion {
    pub name: Name,
    pub vaddr: u64,
    pub paddr: u64,
    pub size: u64,
}

/// An IRQ handler capability (already bound to nothing: the process calls
/// `IRQHandler_SetNotification` itself, or the description bound it to
/// `notification`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IrqCap {
    pub name: Name,
    /// GIC interrupt ID.
    pub irq: u64,
    pub cptr: u64,
    /// Notification the root task bound it to (0: none), signalled with `badge`.
    pub notification: u64,
    pub badge: u64,
}

/// Physically contiguous DMA memory: `frames` 4 KiB frames from `paddr`,
/// mapped cached at `vaddr`, with their frame caps in consecutive slots from
/// `first_frame_cap` (page `i` is slot `first_frame_cap + i`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DmaPool {
    pub vaddr: u64,
    pub paddr: u64,
    pub size: u64,
    pub first_frame_cap: u64,
    pub frames: u64,
}

/// The 2 MiB frames of a DMA pool (`dma.large_pages`): `frames` of them
/// from `paddr`, mapped cached at `vaddr` (both 2 MiB aligned), caps in
/// consecutive slots from `first_frame_cap`. They sit right below the
/// pool's 4 KiB pages, in physical and in virtual memory, so the pool's
/// first 4 KiB page is 2 MiB aligned too.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LargeDmaPool {
    pub vaddr: u64,
    pub paddr: u64,
    pub first_frame_cap: u64,
    pub frames: u64,
}

/// Memory an IOMMU client may give its devices, as the root task tells the
/// IOMMU server: a client's DMA pool, `[paddr, paddr + size)`, which the
/// root task carved from untyped memory it hands to nobody, so no process
/// can revoke the frames or retype the memory. `badge`: the client's badge
/// on the server's endpoint.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DmaGrant {
    pub badge: u64,
    pub paddr: u64,
    pub size: u64,
    /// 1: the device may write it; 0: read only.
    pub writable: u64,
}

/// A PCI function the process drives (`pci` in its description). The
/// root task programmed it before starting the process: BAR0 at `bar0`
/// (which one of the process's device regions maps), memory decoding on,
/// and bus mastering on once the IOMMU server reported the SMMU enabled
/// with every stream aborting; the process gets no access to its
/// configuration space.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PciFunction {
    /// Its requester ID (bus << 8 | device << 3 | function): the SMMU
    /// StreamID of its DMA.
    pub requester_id: u64,
    /// Vendor ID (bits 0-15) and device ID (bits 16-31) as the root task read
    /// them.
    pub ids: u64,
    pub bar0: u64,
    /// BAR0's size in bytes, as the device decodes it.
    pub bar0_size: u64,
}

/// An untyped capability handed to the process.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct UntypedCap {
    pub cptr: u64,
    pub paddr: u64,
    pub size_bits: u64,
}

/// A thread of the process. Entry 0 is the main thread, which the root task
/// starts; the others are configured (same CSpace and VSpace, their own
/// IPC buffer, stack and priority) but left suspended for the process to
/// start with `TCB_WriteRegisters` (see `procrt::spawn`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ThreadInfo {
    pub name: Name,
    /// Its TCB cap (0 for the main thread: that one is `slot::TCB`).
    pub tcb: u64,
    /// Its IPC buffer; the runtime puts it in `TPIDR_EL0`, so it also tells
    /// threads apart.
    pub ipc_buffer: u64,
    /// Stack [stack_bottom, stack_top), with an unmapped guard page below.
    pub stack_bottom: u64,
    pub stack_top: u64,
    pub priority: u64,
    /// A notification only this thread waits on (and anyone signals):
    /// for blocking locks.
    pub wake: u64,
}

impl ThreadInfo {
    pub const EMPTY: ThreadInfo = ThreadInfo {
        name: Name::EMPTY,
        tcb: 0,
        ipc_buffer: 0,
        stack_bottom: 0,
        stack_top: 0,
        priority: 0,
        wake: 0,
    };
}

/// The start-info page.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StartInfo {
    pub magic: u64,
    pub version: u32,
    /// Index of this process in the system description (also its badge on
    /// the fault and control endpoints).
    pub index: u32,
    pub name: Name,
    /// Where the IPC buffer is mapped; the runtime puts it in `TPIDR_EL0`.
    pub ipc_buffer: u64,
    /// Stack [stack_bottom, stack_top); `sp` starts at the top.
    pub stack_bottom: u64,
    pub stack_top: u64,
    /// log2 of the CSpace CNode's slot count.
    pub cnode_size_bits: u64,
    /// Empty slots `[free_first, free_first + free_count)` for receiving caps.
    pub free_first: u64,
    pub free_count: u64,
    pub num_caps: u64,
    pub caps: [NamedCap; MAX_CAPS],
    pub num_devices: u64,
    pub devices: [DeviceRegion; MAX_DEVICES],
    pub num_irqs: u64,
    pub irqs: [IrqCap; MAX_IRQS],
    pub dma: DmaPool,
    pub dma_large: LargeDmaPool,
    pub num_untyped: u64,
    pub untyped: [UntypedCap; MAX_UNTYPED],
    /// Where the PL011 is mapped, for output with no system call
    /// (`procrt::print_unlocked`): only on a kernel without printing, and
    /// only for a process described with `uart = true`; else 0. Other
    /// output goes through the root task ([`slot::CONSOLE`]).
    pub console: u64,
    /// Its threads, the main one first.
    pub num_threads: u64,
    pub threads: [ThreadInfo; MAX_THREADS],
    pub num_pci: u64,
    pub pci: [PciFunction; MAX_PCI],
    /// In the IOMMU server's page only: every client's DMA memory.
    pub num_dma_grants: u64,
    pub dma_grants: [DmaGrant; MAX_DMA_GRANTS],
}

impl StartInfo {
    pub fn is_valid(&self) -> bool {
        self.magic == START_INFO_MAGIC && self.version == START_INFO_VERSION
    }

    pub fn caps(&self) -> &[NamedCap] {
        &self.caps[..(self.num_caps as usize).min(MAX_CAPS)]
    }

    pub fn devices(&self) -> &[DeviceRegion] {
        &self.devices[..(self.num_devices as usize).min(MAX_DEVICES)]
    }

    pub fn irqs(&self) -> &[IrqCap] {
        &self.irqs[..(self.num_irqs as usize).min(MAX_IRQS)]
    }

    pub fn untyped(&self) -> &[UntypedCap] {
        &self.untyped[..(self.num_untyped as usize).min(MAX_UNTYPED)]
    }

    pub fn pci(&self) -> &[PciFunction] {
        &self.pci[..(self.num_pci as usize).min(MAX_PCI)]
    }

    pub fn dma_grants(&self) -> &[DmaGrant] {
        &self.dma_grants[..(self.num_dma_grants as usize).min(MAX_DMA_GRANTS)]
    }

    pub fn threads(&self) -> &[ThreadInfo] {
        &self.threads[..(self.num_threads as usize).min(MAX_THREADS)]
    }

    /// The thread the description calls `name`.
    pub fn thread(&self, name: &str) -> Option<&ThreadInfo> {
        self.threads().iter().find(|t| t.name.as_str() == name)
    }

    /// The capability the description calls `name`.
    pub fn cap(&self, name: &str) -> Option<&NamedCap> {
        self.caps().iter().find(|c| c.name.as_str() == name)
    }

    /// The device region the description calls `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceRegion> {
        self.devices().iter().find(|d| d.name.as_str() == name)
    }

    /// The IRQ handler the description calls `name`.
    pub fn irq(&self, name: &str) -> Option<&IrqCap> {
        self.irqs().iter().find(|i| i.name.as_str() == name)
    }
}

/// Writes one byte to a PL011 UART whose registers are mapped at `base`.
///
/// # Safety
/// `base` must be the mapped (device memory) address of a PL011.
pub unsafe fn pl011_putc(base: u64, b: u8) {
    let fr = (base + 0x18) as *const u32;
    // SAFETY: the caller guarantees a PL011 at `base`; FR bit 5 is TXFF.
    unsafe {
        while core::ptr::read_volatile(fr) & (1 << 5) != 0 {}
        core::ptr::write_volatile(base as *mut u32, b as u32);
    }
}

// The page is 4 KiB; the struct must fit.
const _: () = assert!(core::mem::size_of::<StartInfo>() <= 4096);
