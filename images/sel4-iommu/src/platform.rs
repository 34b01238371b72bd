//! The server side on seL4: the SMMU's registers in device frames, received
//! frame capabilities, and time from the ARM generic timer.

use embedded_hal::delay::DelayNs;
use iommu_protocol::ErrorCode;
use iommu_server::hal::Mmio;
use iommu_server::handler::{Frame, FrameResolver, ReceivedCap};
use sel4_abi::{CNode, CPtr, CapRights, Page, VMAttributes};

/// The SMMU register file mapped (Device-nGnRnE) at `base`.
pub struct DeviceRegisters {
    base: usize,
}

impl DeviceRegisters {
    /// # Safety
    /// `base` must map the SMMU's two 64 KiB register pages as device memory,
    /// and nothing else may program the SMMU.
    pub unsafe fn new(base: usize) -> DeviceRegisters {
        DeviceRegisters { base }
    }
}

// The register file is 128 KiB; an offset past it is a bug of the core, which
// must not turn into a stray access elsewhere in the address space.
const REGISTER_FILE: usize = 0x2_0000;

impl Mmio for DeviceRegisters {
    fn read32(&self, offset: usize) -> u32 {
        if offset + 4 > REGISTER_FILE {
            return 0;
        }
        // SAFETY: in bounds of the mapping `new` was given; aligned by the
        // register layout.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write32(&self, offset: usize, value: u32) {
        if offset + 4 > REGISTER_FILE {
            return;
        }
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn read64(&self, offset: usize) -> u64 {
        if offset + 8 > REGISTER_FILE {
            return 0;
        }
        // SAFETY: as in `read32`.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u64) }
    }

    fn write64(&self, offset: usize, value: u64) {
        if offset + 8 > REGISTER_FILE {
            return;
        }
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u64, value) }
    }
}

/// Busy-waits on the virtual counter (CNTVCT_EL0), which the loader lets EL0
/// read (CNTKCTL_EL1.EL0VCTEN).
pub struct CounterDelay {
    ticks_per_us: u64,
}

impl CounterDelay {
    pub fn new() -> CounterDelay {
        CounterDelay {
            ticks_per_us: (Self::frequency() / 1_000_000).max(1),
        }
    }

    /// The counter's ticks per second (CNTFRQ_EL0), at least 1.
    pub fn frequency() -> u64 {
        let frequency: u64;
        // SAFETY: reading CNTFRQ_EL0 has no side effects; EL0 may read it
        // whenever it may read the counter.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) frequency) };
        frequency.max(1)
    }

    pub fn now() -> u64 {
        let ticks: u64;
        // SAFETY: as above; the ISB keeps the read from being hoisted.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) ticks) };
        ticks
    }
}

impl Default for CounterDelay {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayNs for CounterDelay {
    fn delay_ns(&mut self, ns: u32) {
        let ticks = (ns as u64 * self.ticks_per_us).div_ceil(1000);
        let start = Self::now();
        while Self::now().wrapping_sub(start) < ticks {
            core::hint::spin_loop();
        }
    }
}

/// Slots of the server's own CNode that receive frame caps, and the frames
/// they hold.
///
/// Each received cap stays in its slot while the memory is registered (so
/// the server keeps a reference to the frame) and is deleted on release.
pub struct ReceivedFrames<const WORDS: usize> {
    cnode: CNode,
    first: u64,
    count: u64,
    used: [u64; WORDS],
    probe: Option<FrameProbe>,
    /// An empty slot of the server's, for the read-only copy that proves a
    /// received cap is a frame (see `resolve`).
    scratch: u64,
}

/// Where a [`ReceivedFrames`] tells 2 MiB frames from 4 KiB ones: the
/// server's own VSpace cap and a 2 MiB slot of it that a page directory
/// covers and no page table does (`procinfo::FRAME_PROBE_BASE`), used by
/// this `ReceivedFrames` alone.
#[derive(Debug, Clone, Copy)]
pub struct FrameProbe {
    pub vspace: CPtr,
    pub vaddr: u64,
}

/// Depth that resolves a whole CPtr in a process CSpace: a single CNode whose
/// guard makes every CPtr a slot number.
const FULL_DEPTH: u8 = 64;

impl<const WORDS: usize> ReceivedFrames<WORDS> {
    /// `cnode`: the server's own CNode cap; slots `[first, first + count)`
    /// are free: the last one for checking caps, the others for received
    /// caps. Without a `probe` every frame counts as 4 KiB.
    pub fn new(cnode: CPtr, first: u64, count: u64, probe: Option<FrameProbe>) -> Self {
        let receive = count.saturating_sub(1);
        ReceivedFrames {
            cnode: CNode(cnode),
            first,
            count: receive.min(WORDS as u64 * 64),
            used: [0; WORDS],
            probe,
            scratch: first + receive,
        }
    }

    /// The physical address of the frame `cap` names, or `BadCapability`
    /// if it names anything else: proven without invoking `cap` itself.
    ///
    /// Invoking a client's cap runs whatever its object does (seL4 5.0.0,
    /// `decodeInvocation`): an endpoint cap that may send turns
    /// `Page_GetAddress` into an IPC to whoever receives on it, who answers
    /// any "address" (and gets the caps an invocation carries); a
    /// notification cap that may send returns an empty success. A copy
    /// with read rights only (`maskCapRights`) can do neither: the kernel
    /// refuses to invoke an endpoint or notification cap that cannot send
    /// (`seL4_InvalidCapability`), every other object refuses the label
    /// (`seL4_IllegalOperation`), and caps that cannot be copied (reply
    /// caps, untypeds with children) fail the copy. Only a frame answers.
    fn frame_address(&self, cap: ReceivedCap) -> Result<u64, ErrorCode> {
        self.cnode
            .copy(
                self.scratch,
                FULL_DEPTH,
                self.cnode,
                cap.0,
                FULL_DEPTH,
                CapRights::READ,
            )
            .map_err(|_| ErrorCode::BadCapability)?;
        let address = Page(CPtr(self.scratch)).get_address();
        // The scratch slot must be empty for the next check; if it cannot
        // be emptied, no later cap can be checked, and refusing is safe.
        let emptied = self.cnode.delete(self.scratch, FULL_DEPTH);
        match (address, emptied) {
            (Ok(paddr), Ok(())) => Ok(paddr),
            _ => Err(ErrorCode::BadCapability),
        }
    }

    /// The size of the frame at `paddr` that `cap` names: [`LARGE_FRAME`]
    /// if it maps at the probe slot, where only a level-2 block fits (a
    /// 4 KiB frame needs a page table there: `FailedLookup`; a 1 GiB frame
    /// finds the page directory in its way: `DeleteFirst`), else
    /// [`SMALL_FRAME`]. Any doubt gives the small size, which never covers
    /// more memory than the client holds. A received cap is a derived copy,
    /// which seL4 leaves unmapped, so the client's own mappings do not stop
    /// the probe.
    fn probe_size(&self, cap: ReceivedCap, paddr: u64) -> u64 {
        let Some(probe) = self.probe else {
            return SMALL_FRAME;
        };
        // Large frames are aligned to their size (seL4 retypes objects at
        // their natural alignment): most small frames need no system call.
        if !paddr.is_multiple_of(LARGE_FRAME) {
            return SMALL_FRAME;
        }
        let page = Page(CPtr(cap.0));
        // Not cacheable (Device-nGnRnE) and never executable: the CPU then
        // makes no speculative access through the probe mapping, which
        // matters if the frame is a device's; nothing reads it anyway.
        let attrs = VMAttributes::EXECUTE_NEVER;
        match page.map(probe.vspace, probe.vaddr, CapRights::READ, attrs) {
            Ok(()) => {
                // Back to unmapped; a frame the server cannot unmap again is
                // refused by the caller rather than trusted.
                match page.unmap() {
                    Ok(()) => LARGE_FRAME,
                    Err(_) => 0,
                }
            }
            Err(_) => SMALL_FRAME,
        }
    }

    /// A free slot to point the next receive at, without taking it.
    pub fn free_slot(&self) -> Option<u64> {
        // A word at a time: the server asks before every receive, and a
        // bit-by-bit scan past 64 registered frames cost ~700 instructions
        // of each round trip.
        self.used
            .iter()
            .enumerate()
            .find(|(_, &w)| w != u64::MAX)
            .map(|(k, &w)| k as u64 * 64 + u64::from(w.trailing_ones()))
            .filter(|&i| i < self.count)
            .map(|i| self.first + i)
    }

    /// A cap arrived in `slot` (the one `free_slot` named).
    pub fn take(&mut self, slot: u64) -> ReceivedCap {
        if let Some(i) = slot.checked_sub(self.first).filter(|&i| i < self.count) {
            self.used[i as usize / 64] |= 1 << (i % 64);
        }
        ReceivedCap(slot)
    }

    /// (CNode, index, depth) for the IPC buffer's receive path.
    pub fn receive_path(&self, slot: u64) -> (CPtr, u64, u64) {
        (self.cnode.0, slot, FULL_DEPTH as u64)
    }
}

/// Frame sizes a [`ReceivedFrames`] tells apart. seL4 5.0.0 tells a frame's
/// address (Page_GetAddress) but not its size outside debug kernels, so the
/// size comes from [`FrameProbe`]; a frame it does not recognise (1 GiB)
/// counts as its first 4 KiB: never more memory than the client holds.
pub const SMALL_FRAME: u64 = 4096;
pub const LARGE_FRAME: u64 = 2 << 20;

impl<const WORDS: usize> FrameResolver for ReceivedFrames<WORDS> {
    fn resolve(&mut self, cap: ReceivedCap) -> Result<Frame, ErrorCode> {
        // From here on `cap` is known to be a frame: invoking it (the size
        // probe) reaches no object a client controls.
        let paddr = self.frame_address(cap)?;
        // Size 0 (an unmap that failed) is refused as BadCapability.
        Ok(Frame {
            paddr,
            size: self.probe_size(cap, paddr),
        })
    }

    fn release(&mut self, cap: ReceivedCap) {
        let _ = self.cnode.delete(cap.0, FULL_DEPTH);
        if let Some(i) = cap.0.checked_sub(self.first).filter(|&i| i < self.count) {
            self.used[i as usize / 64] &= !(1 << (i % 64));
        }
    }
}
