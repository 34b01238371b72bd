//! PCI configuration space, which only the root task writes (PCI Express
//! Base Specification 7.2.2 "ECAM"; type 0 header).
//!
//! No firmware runs before seL4 on QEMU's `virt` board, so nobody has
//! placed the BARs. A driver that could write its function's configuration
//! space could move its BAR over another driver's (QEMU 7.2 decodes the
//! most recently mapped overlapping region, so the victim's MMIO would
//! reach the attacker's device and its DMA commands run under the
//! attacker's StreamID), or start bus mastering before the SMMU confines
//! it. So the root task places each function's BAR0 where the description
//! says, turns on memory decoding, and turns on bus mastering only after
//! the IOMMU server reported the SMMU enabled with every stream aborting
//! (`procinfo::control::READY`). Processes get their BAR frames and their
//! requester ID (`StartInfo::pci`), never the configuration space.

use crate::desc::PciDesc;
use crate::kobj::{Fail, Kernel, Result, INIT_VSPACE, PAGE};
use core::ptr::{read_volatile, write_volatile};
use procinfo::PciFunction;
use sel4_abi::{CapRights, VMAttributes};

/// ECAM on `virt,highmem=off`: 4 KiB per function.
const ECAM_BASE: u64 = 0x3f00_0000;
/// Where the root task maps the configuration pages it programs.
const CONFIG_VADDR: u64 = 0x7f00_0030_0000;
/// Functions in one system, at most.
pub const MAX_FUNCTIONS: usize = 16;

const VENDOR_ID: usize = 0x00;
const COMMAND: usize = 0x04;
const BAR0: usize = 0x10;
/// The upper half of a 64-bit BAR0.
const BAR1: usize = 0x14;
const COMMAND_IO_SPACE: u32 = 1;
const COMMAND_MEMORY_SPACE: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// BAR bits 2:1, type: 0b00 is a 32-bit memory BAR, 0b10 a 64-bit one
/// (BAR0 then holds the low word of the address and BAR1 the high word).
const BAR_TYPE: u32 = 0b110;
const BAR_TYPE_64: u32 = 0b100;
const BAR_IO: u32 = 1;
/// A type 0 header's BARs: six words from 0x10.
const BARS: usize = 6;
/// The 32-bit PCIe MMIO window of `virt,highmem=off` (QEMU's `hw/arm/virt.c`
/// VIRT_PCIE_MMIO): every BAR placed lies inside it.
const MMIO_WINDOW: (u64, u64) = (0x1000_0000, 0x3eff_0000);

/// The functions the root task programmed, to turn on bus mastering later.
pub struct Functions {
    config: [u64; MAX_FUNCTIONS],
    placed: [(u64, u64); MAX_FUNCTIONS],
    /// The process (index in the description) that drives each function,
    /// and the function's requester ID.
    owner: [usize; MAX_FUNCTIONS],
    rid: [u16; MAX_FUNCTIONS],
    count: usize,
}

impl Functions {
    pub const fn new() -> Functions {
        Functions {
            config: [0; MAX_FUNCTIONS],
            placed: [(0, 0); MAX_FUNCTIONS],
            owner: [0; MAX_FUNCTIONS],
            rid: [0; MAX_FUNCTIONS],
            count: 0,
        }
    }

    /// Places `f`'s BAR0 and turns on memory decoding, bus mastering off;
    /// returns what the process is told about it.
    pub fn program(&mut self, k: &mut Kernel, f: &PciDesc, owner: usize) -> Result<PciFunction> {
        let fail = |why| Fail::Pci {
            function: f.function,
            why,
        };
        if self.count == MAX_FUNCTIONS {
            return Err(fail("more PCI functions than the root task programs"));
        }
        let frame = k.device_frames(ECAM_BASE + (u64::from(f.function) << 12), PAGE)?;
        let vaddr = CONFIG_VADDR + self.count as u64 * PAGE;
        k.map(
            INIT_VSPACE,
            frame,
            vaddr,
            CapRights::READ_WRITE,
            VMAttributes::EXECUTE_NEVER,
        )?;
        // SAFETY: the function's 4 KiB ECAM window was just mapped at
        // `vaddr` (Device-nGnRnE), for the root task alone.
        let config = unsafe { Config::new(vaddr) };
        let ids = config.read(VENDOR_ID);
        if ids & 0xffff == 0xffff {
            return Err(fail("no function there"));
        }
        // Decoding off while the BARs are sized; I/O space stays off for
        // good (no process is given the I/O window).
        config.write(
            COMMAND,
            config.read(COMMAND) & !(COMMAND_IO_SPACE | COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER),
        );
        config.write(BAR0, u32::MAX);
        let probe = config.read(BAR0);
        if probe & BAR_IO != 0 {
            return Err(fail("BAR0 is an I/O BAR, not a memory BAR"));
        }
        // A 64-bit BAR is sized over both words: all ones into each, and
        // the bits that stay zero (below the size) give the size.
        let wide = match probe & BAR_TYPE {
            0 => false,
            BAR_TYPE_64 => true,
            _ => return Err(fail("BAR0 is neither a 32-bit nor a 64-bit memory BAR")),
        };
        let high = if wide {
            config.write(BAR1, u32::MAX);
            config.read(BAR1)
        } else {
            u32::MAX
        };
        let mask = u64::from(high) << 32 | u64::from(probe & !0xf);
        let size = (!mask).wrapping_add(1);
        // The place must be a 32-bit address (xtask checks it lies in the
        // 32-bit PCIe window); a 64-bit BAR that large could not fit there.
        if size == 0 || size > 1 << 31 {
            return Err(fail("BAR0 is larger than the 32-bit PCIe window holds"));
        }
        if !f.bar0.is_multiple_of(size) {
            return Err(fail("bar0 is not aligned to BAR0's size"));
        }
        let end = f.bar0 + size;
        if f.bar0 < MMIO_WINDOW.0 || end > MMIO_WINDOW.1 {
            return Err(fail("BAR0 would not lie inside the PCIe MMIO window"));
        }
        // Memory decoding turns on every memory BAR of the function, and
        // QEMU's virt board decodes a BAR left at address 0 there (it
        // allows BARs at 0): one the root task does not place could cover
        // another function's BAR0 or anything else below its size. Only
        // BAR0 is placed, so a function with another memory BAR is
        // refused. (An I/O BAR stays dark: I/O space is never enabled.
        // The expansion ROM has its own enable bit, never set.)
        for i in (if wide { 2 } else { 1 })..BARS {
            let at = BAR0 + 4 * i;
            let was = config.read(at);
            config.write(at, u32::MAX);
            let probe = config.read(at);
            config.write(at, was);
            // An unimplemented BAR reads all zeroes (PCI Local Bus 6.2.5.1);
            // a 64-bit one of 4 GiB or more has no size bits in its low word.
            if probe & BAR_IO == 0 && probe != 0 {
                return Err(fail(
                    "the function has a memory BAR besides BAR0, which the root task does not place",
                ));
            }
        }
        if self.placed[..self.count]
            .iter()
            .any(|&(start, stop)| start < end && f.bar0 < stop)
        {
            return Err(fail("BAR0 would overlap another function's"));
        }
        config.write(BAR0, f.bar0 as u32);
        if wide {
            // The upper word: the window is below 4 GiB.
            config.write(BAR1, (f.bar0 >> 32) as u32);
        }
        config.write(COMMAND, config.read(COMMAND) | COMMAND_MEMORY_SPACE);
        self.config[self.count] = vaddr;
        self.placed[self.count] = (f.bar0, end);
        self.owner[self.count] = owner;
        self.rid[self.count] = f.function;
        self.count += 1;
        Ok(PciFunction {
            requester_id: u64::from(f.function),
            ids: u64::from(ids),
            bar0: f.bar0,
            bar0_size: size,
        })
    }

    /// The requester ID of a function whose BAR, as the device decodes it,
    /// `[paddr, paddr + size)` overlaps although process `owner` does not
    /// drive it: the description's regions are checked against declared
    /// sizes only, a BAR's real size is known here.
    pub fn foreign_bar(&self, owner: usize, paddr: u64, size: u64) -> Option<u16> {
        let end = paddr.saturating_add(size);
        (0..self.count)
            .find(|&i| {
                let (start, stop) = self.placed[i];
                self.owner[i] != owner && start < end && paddr < stop
            })
            .map(|i| self.rid[i])
    }

    /// Functions programmed so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Turns on bus mastering for every function programmed: their DMA
    /// now reaches the SMMU, which aborts it until the IOMMU server
    /// attaches the stream.
    pub fn enable_bus_mastering(&self) {
        for &vaddr in &self.config[..self.count] {
            // SAFETY: mapped by `program`, never unmapped.
            let config = unsafe { Config::new(vaddr) };
            config.write(COMMAND, config.read(COMMAND) | COMMAND_BUS_MASTER);
        }
    }
}

/// One function's configuration space, mapped.
struct Config {
    base: *mut u32,
}

impl Config {
    /// # Safety
    /// `vaddr` maps one function's 4 KiB ECAM window as device memory.
    unsafe fn new(vaddr: u64) -> Config {
        Config {
            base: vaddr as *mut u32,
        }
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: offset < 4096 and 4-aligned at every call site; mapped
        // per `new`'s contract.
        unsafe { read_volatile(self.base.add(offset / 4)) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile(self.base.add(offset / 4), value) }
    }
}
