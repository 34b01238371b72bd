//! One PCI function's configuration space, reached through its 4 KiB ECAM
//! window (PCI Express Base Specification, 7.2.2 "ECAM"; type 0 header).
//!
//! No firmware runs before seL4 on QEMU's `virt` board, so nobody has
//! assigned BARs: the driver sizes and places BAR0 itself inside the window
//! the system description gave it.

use core::ptr::{read_volatile, write_volatile};

const VENDOR_ID: usize = 0x00;
const COMMAND: usize = 0x04;
const BAR0: usize = 0x10;

const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;

pub struct ConfigSpace {
    base: *mut u32,
}

impl ConfigSpace {
    /// # Safety
    /// `vaddr` must be a mapping (Device memory) of one function's 4 KiB
    /// ECAM window, used by nothing else.
    pub unsafe fn new(vaddr: usize) -> ConfigSpace {
        ConfigSpace {
            base: vaddr as *mut u32,
        }
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: offset < 4096 and 4-aligned at every call site; the window
        // is mapped per `new`'s contract.
        unsafe { read_volatile(self.base.add(offset / 4)) }
    }

    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { write_volatile(self.base.add(offset / 4), value) }
    }

    /// (vendor, device); 0xffff vendor means no function is present.
    pub fn ids(&self) -> (u16, u16) {
        let word = self.read32(VENDOR_ID);
        (word as u16, (word >> 16) as u16)
    }

    /// Size in bytes of 32-bit memory BAR0, found by the all-ones probe.
    pub fn bar0_size(&self) -> u32 {
        let saved = self.read32(BAR0);
        self.write32(BAR0, 0xffff_ffff);
        let mask = self.read32(BAR0) & !0xf;
        self.write32(BAR0, saved);
        (!mask).wrapping_add(1)
    }

    /// Places BAR0 at `bus_address` and turns on memory decoding and bus
    /// mastering (without bus mastering the device's DMA never reaches the SMMU).
    pub fn enable_bar0_at(&self, bus_address: u32) {
        let command = self.read32(COMMAND) as u16;
        self.write32(
            COMMAND,
            (command & !(COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER)) as u32,
        );
        self.write32(BAR0, bus_address);
        self.write32(
            COMMAND,
            (command | COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER) as u32,
        );
    }

    pub fn bar0(&self) -> u32 {
        self.read32(BAR0) & !0xf
    }
}
