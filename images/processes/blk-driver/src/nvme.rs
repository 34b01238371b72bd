//! NVMe controller registers and queues (NVM Express Base Specification
//! 1.4, sections 3.1 "Controller registers" and 4 "Data structures"), as
//! QEMU 7.2's `-device nvme` implements them. Polled: no interrupts.

use core::ptr::{read_volatile, write_volatile};

pub const VENDOR: u16 = 0x1b36;
pub const DEVICE: u16 = 0x0010;

const CAP: usize = 0x00;
const VS: usize = 0x08;
const INTMS: usize = 0x0c;
const CC: usize = 0x14;
const CSTS: usize = 0x1c;
const AQA: usize = 0x24;
const ASQ: usize = 0x28;
const ACQ: usize = 0x30;
const DOORBELLS: usize = 0x1000;

pub const CSTS_RDY: u32 = 1 << 0;
pub const CSTS_CFS: u32 = 1 << 1;
const CC_EN: u32 = 1 << 0;
/// I/O submission queue entry size 2^6 = 64, completion 2^4 = 16 bytes.
const CC_IOSQES: u32 = 6 << 16;
const CC_IOCQES: u32 = 4 << 20;

/// Submission queue entry: 64 bytes.
pub const SQE_BYTES: usize = 64;
/// Completion queue entry: 16 bytes.
pub const CQE_BYTES: usize = 16;

/// Admin opcodes.
pub const ADMIN_CREATE_SQ: u8 = 0x01;
pub const ADMIN_DELETE_SQ: u8 = 0x00;
pub const ADMIN_CREATE_CQ: u8 = 0x05;
pub const ADMIN_DELETE_CQ: u8 = 0x04;
pub const ADMIN_IDENTIFY: u8 = 0x06;
/// NVM opcodes.
pub const IO_FLUSH: u8 = 0x00;
pub const IO_WRITE: u8 = 0x01;
pub const IO_READ: u8 = 0x02;
/// Compare: the controller reads the blocks, then the host's buffer, and
/// completes with Compare Failure if they differ.
pub const IO_COMPARE: u8 = 0x05;

/// Status field of a completion: SCT 0 (generic) SC 0x04.
pub const STATUS_DATA_TRANSFER_ERROR: u16 = 0x0004;

/// The controller's register block (BAR0).
pub struct Regs {
    base: usize,
    /// Bytes between doorbells: 4 << CAP.DSTRD.
    stride: usize,
}

impl Regs {
    /// # Safety
    /// `base` maps BAR0 of an NVMe controller (device memory, at least the
    /// registers and the doorbells this driver uses), used by nothing else.
    pub unsafe fn new(base: usize) -> Regs {
        let mut r = Regs { base, stride: 4 };
        r.stride = 4 << ((r.cap() >> 32) & 0xf);
        r
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: every offset used is a 4-aligned register inside BAR0,
        // mapped per `new`'s contract.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// CAP, read as two words (low first).
    pub fn cap(&self) -> u64 {
        u64::from(self.read32(CAP)) | u64::from(self.read32(CAP + 4)) << 32
    }

    pub fn version(&self) -> u32 {
        self.read32(VS)
    }

    pub fn csts(&self) -> u32 {
        self.read32(CSTS)
    }

    pub fn cc(&self) -> u32 {
        self.read32(CC)
    }

    /// CAP.TO: the worst-case time for CSTS.RDY to change, in 500 ms units.
    pub fn timeout_500ms(&self) -> u64 {
        (self.cap() >> 24) & 0xff
    }

    /// CAP.MQES + 1: entries per queue at most.
    pub fn max_queue_entries(&self) -> u32 {
        (self.cap() & 0xffff) as u32 + 1
    }

    /// Clears CC.EN (a controller reset; the admin queues are forgotten).
    pub fn disable(&self) {
        self.write32(CC, self.cc() & !CC_EN);
    }

    /// Masks every interrupt vector: this driver polls.
    pub fn mask_interrupts(&self) {
        self.write32(INTMS, u32::MAX);
    }

    /// Programs the admin queues (entries in each, IOVAs).
    pub fn set_admin_queues(&self, sq_entries: u32, cq_entries: u32, asq: u64, acq: u64) {
        self.write32(AQA, (cq_entries - 1) << 16 | (sq_entries - 1));
        self.write32(ASQ, asq as u32);
        self.write32(ASQ + 4, (asq >> 32) as u32);
        self.write32(ACQ, acq as u32);
        self.write32(ACQ + 4, (acq >> 32) as u32);
    }

    /// CC.EN = 1 with 4 KiB pages (MPS 0), the NVM command set, round robin
    /// and 64/16-byte queue entries.
    pub fn enable(&self) {
        self.write32(CC, CC_IOSQES | CC_IOCQES | CC_EN);
    }

    fn doorbell(&self, qid: u16, completion: bool) -> usize {
        DOORBELLS + (2 * usize::from(qid) + usize::from(completion)) * self.stride
    }

    pub fn ring_sq(&self, qid: u16, tail: u16) {
        // The entry must be in memory before the device hears of it.
        barrier();
        self.write32(self.doorbell(qid, false), u32::from(tail));
    }

    pub fn ring_cq(&self, qid: u16, head: u16) {
        self.write32(self.doorbell(qid, true), u32::from(head));
    }
}

/// Orders this CPU's normal-memory writes before its next device write
/// (and device reads before normal-memory reads that depend on them).
pub fn barrier() {
    // SAFETY: a full-system data synchronization barrier; no memory or
    // register is touched.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// One submission queue entry, as 16 dwords.
#[derive(Clone, Copy, Debug, Default)]
pub struct Command {
    pub dw: [u32; 16],
}

impl Command {
    pub fn new(opcode: u8, nsid: u32) -> Command {
        let mut c = Command::default();
        c.dw[0] = u32::from(opcode);
        c.dw[1] = nsid;
        c
    }

    pub fn prp(mut self, prp1: u64, prp2: u64) -> Command {
        self.dw[6] = prp1 as u32;
        self.dw[7] = (prp1 >> 32) as u32;
        self.dw[8] = prp2 as u32;
        self.dw[9] = (prp2 >> 32) as u32;
        self
    }

    pub fn cdw(mut self, index: usize, value: u32) -> Command {
        self.dw[index] = value;
        self
    }

    fn with_cid(mut self, cid: u16) -> Command {
        self.dw[0] = (self.dw[0] & 0xffff) | u32::from(cid) << 16;
        self
    }
}

/// One completion queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub result: u32,
    pub sq_head: u16,
    pub cid: u16,
    /// Status field (bits 31:17 of DW3): SC bits 7:0, SCT 10:8, M, DNR.
    pub status: u16,
}

impl Completion {
    pub fn ok(&self) -> bool {
        self.status & 0x7ff == 0
    }
}

/// A submission/completion queue pair in DMA memory this process maps.
pub struct QueuePair {
    pub qid: u16,
    sq: *mut u32,
    cq: *const u32,
    entries: u16,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    next_cid: u16,
}

impl QueuePair {
    /// # Safety
    /// `sq` and `cq` point at `entries` zeroed entries each of memory the
    /// device reaches (at the IOVAs given to it), used by nothing else.
    pub unsafe fn new(qid: u16, sq: usize, cq: usize, entries: u16) -> QueuePair {
        QueuePair {
            qid,
            sq: sq as *mut u32,
            cq: cq as *const u32,
            entries,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            next_cid: 1,
        }
    }

    /// Writes `command` at the tail and returns its command ID; the device
    /// sees it only at [`QueuePair::ring`].
    pub fn push(&mut self, command: Command) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        let entry = command.with_cid(cid);
        let slot = usize::from(self.sq_tail) * SQE_BYTES / 4;
        for (i, &dw) in entry.dw.iter().enumerate() {
            // SAFETY: slot + i is inside the queue (tail < entries), per
            // `new`'s contract.
            unsafe { write_volatile(self.sq.add(slot + i), dw) };
        }
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        cid
    }

    /// Tells the device about every pushed entry.
    pub fn ring(&self, regs: &Regs) {
        regs.ring_sq(self.qid, self.sq_tail);
    }

    /// The next completion if the device posted one (phase tag matches);
    /// consumes it and updates the head doorbell.
    pub fn poll(&mut self, regs: &Regs) -> Option<Completion> {
        let slot = usize::from(self.cq_head) * CQE_BYTES / 4;
        // SAFETY: slot + 3 is inside the queue, per `new`'s contract.
        let dw3 = unsafe { read_volatile(self.cq.add(slot + 3)) };
        if (dw3 >> 16) & 1 != u32::from(self.phase) {
            return None;
        }
        barrier();
        // SAFETY: as above.
        let (dw0, dw2) = unsafe {
            (
                read_volatile(self.cq.add(slot)),
                read_volatile(self.cq.add(slot + 2)),
            )
        };
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        regs.ring_cq(self.qid, self.cq_head);
        Some(Completion {
            result: dw0,
            sq_head: dw2 as u16,
            cid: dw3 as u16,
            status: (dw3 >> 17) as u16,
        })
    }
}
