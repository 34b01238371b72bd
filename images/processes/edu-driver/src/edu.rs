//! QEMU's `edu` teaching device (QEMU docs/specs/edu.txt): a DMA engine that
//! copies between its 4 KiB internal buffer at device address 0x4_0000 and
//! bus addresses, which the SMMU translates as IOVAs of the device's stream.

use core::ptr::{read_volatile, write_volatile};

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;

/// Where the device's own buffer sits in its DMA address map.
pub const BUFFER: u64 = 0x4_0000;
pub const BUFFER_SIZE: usize = 4096;

const ID: usize = 0x00;
const DMA_SOURCE: usize = 0x80;
const DMA_DESTINATION: usize = 0x88;
const DMA_COUNT: usize = 0x90;
const DMA_COMMAND: usize = 0x98;

const COMMAND_START: u64 = 1 << 0;
const COMMAND_TO_RAM: u64 = 1 << 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the IOVA into the device's buffer (the device reads memory).
    ToDevice,
    /// From the device's buffer to the IOVA (the device writes memory).
    ToMemory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EduError {
    /// The transfer would reach the end of the device's buffer: QEMU 7.2's
    /// range check rejects even a transfer that ends exactly there
    /// ("0x40000-0x40fff out of bounds (0x40000-0x40fff)") and stops the
    /// whole machine.
    OutsideBuffer,
    /// The engine stayed busy for longer than the poll budget.
    Timeout,
}

pub struct Edu {
    base: *mut u8,
}

impl Edu {
    /// # Safety
    /// `vaddr` must map the device's BAR0 (Device memory, at least 256 bytes),
    /// used by nothing else.
    pub unsafe fn new(vaddr: usize) -> Edu {
        Edu {
            base: vaddr as *mut u8,
        }
    }

    fn read(&self, offset: usize) -> u64 {
        // SAFETY: every offset used is an 8-aligned register inside BAR0,
        // mapped per `new`'s contract.
        unsafe { read_volatile(self.base.add(offset) as *const u64) }
    }

    fn write(&self, offset: usize, value: u64) {
        // SAFETY: as in `read`.
        unsafe { write_volatile(self.base.add(offset) as *mut u64, value) }
    }

    /// The identification register: 0x010000ed on QEMU's edu 1.0.
    pub fn id(&self) -> u32 {
        // SAFETY: offset 0 is the 32-bit ID register.
        unsafe { read_volatile(self.base.add(ID) as *const u32) }
    }

    /// Runs one DMA between the device buffer at `buffer_offset` and `iova`,
    /// and waits for the engine to finish. The device reports completion even
    /// when the SMMU blocked the transfer, so callers judge the outcome from
    /// memory and from the server's fault records, never from this result.
    pub fn dma(
        &self,
        direction: Direction,
        iova: u64,
        buffer_offset: usize,
        len: usize,
        mut poll: impl FnMut() -> bool,
    ) -> Result<(), EduError> {
        if buffer_offset + len >= BUFFER_SIZE || len == 0 {
            return Err(EduError::OutsideBuffer);
        }
        let device = BUFFER + buffer_offset as u64;
        let (source, destination, command) = match direction {
            Direction::ToDevice => (iova, device, COMMAND_START),
            Direction::ToMemory => (device, iova, COMMAND_START | COMMAND_TO_RAM),
        };
        self.write(DMA_SOURCE, source);
        self.write(DMA_DESTINATION, destination);
        self.write(DMA_COUNT, len as u64);
        self.write(DMA_COMMAND, command);
        while self.read(DMA_COMMAND) & COMMAND_START != 0 {
            if !poll() {
                return Err(EduError::Timeout);
            }
        }
        Ok(())
    }
}
