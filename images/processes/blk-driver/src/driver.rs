//! The NVMe driver process: brings the controller up with every queue and
//! buffer in its own DMA domain at the IOMMU server, then serves block
//! requests ([`crate::proto`]) on its endpoint.
//!
//! What it holds: its PCI function's BAR0 (a device region), its StreamID
//! (the function's requester ID, granted to it alone in `[iommu]`), its DMA
//! pool; nothing else reaches the device.

pub mod bench;

use crate::checks::Checks;
use crate::nvme::{
    self, Command, Completion, QueuePair, Regs, ADMIN_CREATE_CQ, ADMIN_CREATE_SQ, ADMIN_DELETE_CQ,
    ADMIN_DELETE_SQ, ADMIN_IDENTIFY, CSTS_CFS, CSTS_RDY, IO_COMPARE, IO_FLUSH, IO_READ, IO_WRITE,
};
use crate::pattern::image_byte;
use crate::proto::{op, staging_range, status, CHUNK, CONTROL_BADGE, STAGING_BYTES};
use crate::{COUNTER_HZ, PAGE};
use iommu_client::{
    Direction, DmaAddr, DmaDomain, Error, FaultRecord, Iommu, MemoryHandle, Ssid, StreamId,
};
use procrt::{println, StartInfo};
use sel4_abi::{ipc_buffer, syscalls, CPtr, MessageInfo, Notification};
use sel4_iommu::platform::CounterDelay;
use sel4_iommu::transport::Sel4Transport;

type Client = Iommu<Sel4Transport>;

/// Pages of the DMA pool, by job.
const PAGE_ADMIN_SQ: u64 = 0;
const PAGE_ADMIN_CQ: u64 = 1;
const PAGE_IO_SQ: u64 = 2;
const PAGE_IO_CQ: u64 = 3;
const PAGE_IDENTIFY: u64 = 4;
const PAGE_PRP_LIST: u64 = 5;
/// A device-writable page mapped beside the test buffer: no byte of a
/// faulted read may land there.
const PAGE_CANARY: u64 = 6;
/// Four pages for the unmapped-buffer test.
const PAGE_TEST: u64 = 7;
const TEST_PAGES: u64 = 4;
const PAGE_STAGING: u64 = 11;
/// Pages registered with the IOMMU server.
const POOL_PAGES: u64 = PAGE_STAGING + STAGING_BYTES / PAGE;

/// 64 entries per queue at most (one page of submissions, a quarter of
/// completions); fewer if the controller's CAP.MQES allows fewer.
const QUEUE_ENTRIES: u16 = 64;
const IO_QID: u16 = 1;
const NSID: u32 = 1;
/// The largest command this driver issues (larger requests are split).
const MAX_COMMAND_BYTES: u64 = 64 * 1024;
/// I/O addresses the driver hands out: [1 MiB, 1 MiB + 256 MiB).
const IOVA_BASE: u64 = 0x10_0000;
const IOVA_SIZE: u64 = 0x1000_0000;
/// How long a command may take.
const COMMAND_TIMEOUT: u64 = 2 * COUNTER_HZ;
/// How long to wait for the IOMMU server's fault notification after a
/// completion that reports an error (a DMA the SMMU refused is a likely
/// cause): 10 ms.
const FAULT_SETTLE: u64 = COUNTER_HZ / 100;

const FILL_TEST: u8 = 0xa5;
const FILL_CANARY: u8 = 0xc5;

/// Why a request failed: a [`status`] code and its detail word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub code: u64,
    pub detail: u64,
}

impl Fail {
    fn new(code: u64, detail: u64) -> Fail {
        Fail { code, detail }
    }

    fn iommu(e: Error) -> Fail {
        let detail = match e {
            Error::Iommu(c) => c as u64,
            _ => u64::MAX,
        };
        Fail::new(status::IOMMU, detail)
    }
}

/// Where the last I/O command's time went, in counter ticks (CNTVCT_EL0,
/// read around each part; the `blk-bench` role adds them up, see
/// [`bench`]). A part the command did not have stays 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct IoTimes {
    /// From entering the command to its result.
    pub total: u64,
    /// Inside `DmaDomain::map_single` for the data buffer (and a PRP
    /// list's, when it has one): the client's IOVA allocation, the IPC
    /// round trip to the IOMMU server, the server's work.
    pub map: u64,
    /// Inside `DmaDomain::unmap` of them: the same, and the server's
    /// TLB invalidation and CMD_SYNC (strict: the reply comes after them).
    pub unmap: u64,
    /// From the doorbell write to the completion seen: polling the
    /// completion queue while QEMU's NVMe does the I/O.
    pub device: u64,
    /// Polling the IOMMU server's fault notification after completion
    /// (one system call first, see [`Driver::drain_faults`]; reading the
    /// fault records, if any arrived).
    pub fault_poll: u64,
}

/// A read or write of `count` blocks at `lba`, data at PRP1/PRP2.
fn rw_command(write: bool, lba: u64, count: u64, prp1: u64, prp2: u64) -> Command {
    let opcode = if write { IO_WRITE } else { IO_READ };
    Command::new(opcode, NSID)
        .prp(prp1, prp2)
        .cdw(10, lba as u32)
        .cdw(11, (lba >> 32) as u32)
        .cdw(12, (count - 1) as u32)
}

/// The driver's state.
struct Driver {
    info: &'static StartInfo,
    regs: Regs,
    iommu: Client,
    dma: DmaDomain,
    memory: MemoryHandle,
    stream: StreamId,
    notify: Option<CPtr>,
    admin: QueuePair,
    io: Option<QueuePair>,
    /// Persistent mappings (queues) and their purposes, unmapped at
    /// shutdown.
    rings: [Option<(DmaAddr, &'static str)>; 4],
    lba_size: u64,
    lba_count: u64,
    max_command: u64,
    /// Entries in each queue: min([`QUEUE_ENTRIES`], CAP.MQES + 1).
    queue_entries: u16,
    /// A command timed out or the controller reported a fatal status: the
    /// controller is out of service (reset, or trying to be).
    broken: bool,
    /// The broken controller was reset and reported CSTS.RDY = 0: it does
    /// no more DMA, so buffers may be unmapped and their I/O addresses
    /// handed out again.
    quiesced: bool,
    /// Bytes of I/O addresses kept allocated for good: buffers of commands
    /// a controller that never stopped may still be working on.
    quarantined: u64,
    /// Print every map and unmap (`<role>: dma map|unmap <purpose> IOVA
    /// <addr> pages <n>`): the image test attributes each translation in
    /// QEMU's SMMU trace to the mapping it went through and judges its
    /// permission by the purpose. Off in the bench role.
    log_dma: bool,
    /// Fault records for addresses no request of the moment used.
    stray_faults: u32,
    /// Where the last I/O command's time went.
    times: IoTimes,
    checks: Checks,
}

fn pool_page(info: &StartInfo, page: u64) -> &'static mut [u8; PAGE as usize] {
    assert!(page < info.dma.frames, "page {page} outside the DMA pool");
    // SAFETY: the pool is mapped read-write at vaddr for `frames` pages and
    // used by this single-threaded process alone; the device writes a page
    // only while a command that maps it is outstanding, and each caller
    // takes the page afresh after that.
    unsafe { &mut *((info.dma.vaddr + page * PAGE) as *mut [u8; PAGE as usize]) }
}

fn staging(info: &StartInfo) -> &'static mut [u8] {
    // SAFETY: as in `pool_page`; the staging pages are contiguous in the
    // pool's mapping.
    unsafe {
        core::slice::from_raw_parts_mut(
            (info.dma.vaddr + PAGE_STAGING * PAGE) as *mut u8,
            STAGING_BYTES as usize,
        )
    }
}

fn now() -> u64 {
    CounterDelay::now()
}

/// The process's first PCI function if it is an NVMe controller, and the
/// device region that maps its BAR0.
fn find_function(info: &StartInfo) -> Result<(StreamId, usize, u64, u64), &'static str> {
    let function = info
        .pci()
        .first()
        .ok_or("the system gave me no PCI function")?;
    if function.ids != u64::from(nvme::VENDOR) | u64::from(nvme::DEVICE) << 16 {
        return Err("the PCI function is not QEMU's NVMe controller");
    }
    let region = info
        .device("nvme-bar")
        .filter(|r| r.paddr == function.bar0)
        .ok_or("no device region maps the function's BAR0")?;
    Ok((
        StreamId(function.requester_id as u32),
        region.vaddr as usize,
        function.bar0,
        function.bar0_size,
    ))
}

/// Brings the controller up; `None` after printing why if it cannot.
/// `log_dma`: print every map and unmap (see [`Driver::log_dma`]).
fn bring_up(info: &'static StartInfo, role: &'static str, log_dma: bool) -> Option<Driver> {
    let mut checks = Checks::new(role);
    if !checks.check(
        "dma-pool",
        info.dma.frames >= POOL_PAGES,
        format_args!(
            "{} pages from the system's dma.pages, {POOL_PAGES} needed (queues, identify, PRP list, canary, test pages, staging buffer)",
            info.dma.frames
        ),
    ) {
        return None;
    }
    let found = find_function(info);
    let Ok((stream, vaddr, bar0, bar0_size)) = found else {
        checks.check("pci-probe", false, format_args!("{found:?}"));
        return None;
    };
    // SAFETY: the root task placed BAR0 at bar0 and mapped it at vaddr.
    let regs = unsafe { Regs::new(vaddr) };
    // What the root task tells of the BAR: its address and decoded size
    // (not its type); the image test compares them with the description.
    checks.check(
        "pci-probe",
        true,
        format_args!(
            "NVMe {:04x}:{:04x} BAR0 at {bar0:#x} ({} KiB, as the root task placed and sized it), StreamID {:#x}, version {:#x}, CAP {:#x}",
            nvme::VENDOR,
            nvme::DEVICE,
            bar0_size / 1024,
            stream.0,
            regs.version(),
            regs.cap()
        ),
    );
    println!(
        "{role}: DMA pool at physical {:#x} size {:#x}, IOVA window {IOVA_BASE:#x}+{IOVA_SIZE:#x}",
        info.dma.paddr, info.dma.size
    );
    let mut iommu = sel4_iommu::connect(info)?;
    let frames: [CPtr; POOL_PAGES as usize] =
        core::array::from_fn(|i| CPtr(info.dma.first_frame_cap + i as u64));
    let memory = match iommu.register_memory(&frames) {
        Ok(m) => m.handle,
        Err(e) => {
            println!("{role}: registering {POOL_PAGES} DMA frames failed: {e:?}");
            return None;
        }
    };
    let dma = DmaDomain::create(&mut iommu, IOVA_BASE, IOVA_SIZE);
    let attached = dma
        .as_ref()
        .map_err(|e| *e)
        .and_then(|d| iommu.attach(stream, Ssid(0), d.domain()));
    if !checks.check(
        "attach",
        attached.is_ok(),
        format_args!(
            "domain {:?}: {attached:?}",
            dma.as_ref().map(|d| d.domain())
        ),
    ) {
        return None;
    }
    let dma = dma.ok()?;
    let notify = sel4_iommu::server_endpoint(info).and_then(|cap| {
        let mut name = [0u8; 32];
        info.cap(sel4_iommu::fault_notification_name(cap.badge, &mut name))
            .map(|c| CPtr(c.cptr))
    });
    for page in 0..PAGE_STAGING {
        pool_page(info, page).fill(0);
    }
    // What AQA and the I/O queues' sizes say, and where the queues wrap.
    let queue_entries = u32::from(QUEUE_ENTRIES).min(regs.max_queue_entries()) as u16;
    if queue_entries < 2 {
        checks.check(
            "controller-enabled",
            false,
            format_args!("CAP.MQES allows {queue_entries} queue entries, 2 at least are needed"),
        );
        return None;
    }
    // SAFETY: pages 0 and 1 of the pool, zeroed, hold nothing else; a page
    // holds 64 entries of either kind.
    let admin = unsafe {
        QueuePair::new(
            0,
            (info.dma.vaddr + PAGE_ADMIN_SQ * PAGE) as usize,
            (info.dma.vaddr + PAGE_ADMIN_CQ * PAGE) as usize,
            queue_entries,
        )
    };
    let mut d = Driver {
        info,
        regs,
        iommu,
        dma,
        memory,
        stream,
        notify,
        admin,
        io: None,
        rings: [None, None, None, None],
        lba_size: 0,
        lba_count: 0,
        max_command: MAX_COMMAND_BYTES,
        queue_entries,
        broken: false,
        quiesced: false,
        quarantined: 0,
        log_dma,
        stray_faults: 0,
        times: IoTimes::default(),
        checks,
    };
    let up = d.enable();
    if !d
        .checks
        .check("controller-enabled", up.is_ok(), format_args!("{up:?}"))
    {
        return None;
    }
    let identified = d.identify();
    if !d.checks.check(
        "identify",
        identified.is_ok() && d.lba_size == 512 && d.lba_count > 0,
        format_args!(
            "{identified:?}: namespace {NSID}: {} blocks of {} bytes; largest command {} KiB",
            d.lba_count,
            d.lba_size,
            d.max_command / 1024
        ),
    ) {
        return None;
    }
    let queues = d.create_io_queues();
    if !d
        .checks
        .check("io-queues", queues.is_ok(), format_args!("{queues:?}"))
    {
        return None;
    }
    Some(d)
}

impl Driver {
    fn persistent(
        &mut self,
        page: u64,
        dir: Direction,
        purpose: &'static str,
    ) -> Result<u64, Fail> {
        let m = self
            .dma
            .map_persistent(&mut self.iommu, self.memory, page * PAGE, PAGE, dir)
            .map_err(Fail::iommu)?;
        self.logged("map", purpose, m.mapped());
        let addr = m.addr();
        if let Some(slot) = self.rings.iter_mut().find(|r| r.is_none()) {
            *slot = Some((m, purpose));
        }
        Ok(addr)
    }

    /// One line of the DMA log (see [`Driver::log_dma`]).
    fn logged(&self, what: &str, purpose: &str, r: core::ops::Range<u64>) {
        if self.log_dma {
            println!(
                "{}: dma {what} {purpose} IOVA {:#x} pages {}",
                self.checks_role(),
                r.start,
                (r.end - r.start) / PAGE
            );
        }
    }

    /// `bytes` of the pool from byte `offset` mapped for one request
    /// (`map_single`); `purpose` names it in the DMA log.
    fn map(
        &mut self,
        offset: u64,
        bytes: u64,
        dir: Direction,
        purpose: &str,
    ) -> Result<DmaAddr, Fail> {
        let m = self
            .dma
            .map_single(&mut self.iommu, self.memory, offset, bytes, dir)
            .map_err(Fail::iommu)?;
        self.logged("map", purpose, m.mapped());
        Ok(m)
    }

    /// Takes a mapping away. Normally a strict unmap: the server replies
    /// after the SMMU's TLBs are invalidated and synced, and the I/O
    /// addresses go back to the allocator.
    ///
    /// After a command timed out (or the controller failed) and the reset
    /// did not bring CSTS.RDY to 0, the controller may still be working on
    /// any command it was given: the mapping is still taken away at the
    /// server (a late DMA then faults), but its I/O addresses stay
    /// allocated for good, so that no later buffer is ever given an address
    /// the device may still use ([`Driver::quarantined`]).
    fn unmap(&mut self, m: DmaAddr, purpose: &str) -> Result<(), Fail> {
        let r = m.mapped();
        if self.broken && !self.quiesced {
            self.iommu
                .unmap(self.dma.domain(), r.start, r.end - r.start)
                .map_err(Fail::iommu)?;
            self.logged("unmap", purpose, r.clone());
            self.quarantined += r.end - r.start;
            // Never handed back to the DMA domain: its addresses stay
            // allocated in the domain's allocator.
            let _kept_allocated = m;
            return Ok(());
        }
        match self.dma.unmap(&mut self.iommu, m) {
            Ok(()) => {
                self.logged("unmap", purpose, r);
                Ok(())
            }
            // Given up while still mapped: its addresses stay allocated.
            Err(e) => Err(Fail::iommu(e.error)),
        }
    }

    /// The controller is out of service (a command timed out, or CSTS.CFS):
    /// reset it (CC.EN = 0) and wait, for CAP.TO at most, until it reports
    /// CSTS.RDY = 0. A controller that completed its reset has stopped
    /// processing every command it was given (NVMe base specification,
    /// controller level reset; QEMU's cancels and drains its in-flight
    /// requests before RDY clears), so the buffers can then be unmapped
    /// and their addresses reused ([`Driver::quiesced`]); otherwise
    /// [`Driver::unmap`] keeps their addresses for good.
    fn halt(&mut self, why: Fail) {
        if self.broken {
            return;
        }
        self.broken = true;
        self.io = None;
        self.regs.disable();
        // RDY alone decides (a fatal status may stay set through the reset).
        let limit = (self.regs.timeout_500ms().max(1) * COUNTER_HZ) / 2;
        let start = now();
        let stopped = loop {
            let csts = self.regs.csts();
            if csts & CSTS_RDY == 0 {
                break Ok(());
            }
            if now().wrapping_sub(start) > limit {
                break Err(Fail::new(status::TIMEOUT, u64::from(csts)));
            }
            syscalls::yield_now();
        };
        self.quiesced = stopped.is_ok();
        println!(
            "{}: controller out of service ({why:?}): reset, CSTS.RDY = 0: {stopped:?}; the buffers of unfinished commands are {}",
            self.checks_role(),
            if self.quiesced {
                "unmapped and their I/O addresses freed"
            } else {
                "unmapped, their I/O addresses kept allocated for good"
            }
        );
    }

    /// Waits until CSTS.RDY is `ready`, for CAP.TO at most.
    fn wait_ready(&self, ready: bool) -> Result<(), Fail> {
        let limit = (self.regs.timeout_500ms().max(1) * COUNTER_HZ) / 2;
        let start = now();
        loop {
            let csts = self.regs.csts();
            if csts & CSTS_CFS != 0 {
                return Err(Fail::new(status::BROKEN, u64::from(csts)));
            }
            if (csts & CSTS_RDY != 0) == ready {
                return Ok(());
            }
            if now().wrapping_sub(start) > limit {
                return Err(Fail::new(status::TIMEOUT, u64::from(csts)));
            }
            syscalls::yield_now();
        }
    }

    /// Reset, admin queues in persistent mappings, enable.
    fn enable(&mut self) -> Result<(), Fail> {
        self.regs.disable();
        self.wait_ready(false)?;
        self.regs.mask_interrupts();
        let entries = u32::from(self.queue_entries);
        let asq = self.persistent(PAGE_ADMIN_SQ, Direction::ToDevice, "admin-sq")?;
        let acq = self.persistent(PAGE_ADMIN_CQ, Direction::FromDevice, "admin-cq")?;
        self.regs.set_admin_queues(entries, entries, asq, acq);
        self.regs.enable();
        self.wait_ready(true)?;
        println!(
            "{}: controller enabled: admin SQ at IOVA {asq:#x}, CQ at IOVA {acq:#x}, {entries} entries",
            self.checks_role()
        );
        Ok(())
    }

    fn checks_role(&self) -> &'static str {
        self.info.name.as_str()
    }

    /// Waits for the completion of command `cid` on the I/O queue (`io`)
    /// or the admin queue. A timeout or a fatal controller status takes the
    /// controller out of service ([`Driver::halt`]) before it returns.
    fn wait(&mut self, io: bool, cid: u16) -> Result<Completion, Fail> {
        let start = now();
        loop {
            let queue = if io {
                self.io.as_mut().ok_or(Fail::new(status::BROKEN, 0))?
            } else {
                &mut self.admin
            };
            if let Some(c) = queue.poll(&self.regs) {
                if c.cid == cid {
                    return Ok(c);
                }
                println!(
                    "{}: completion for unknown command {c:?}",
                    self.checks_role()
                );
                continue;
            }
            let csts = self.regs.csts();
            if csts & CSTS_CFS != 0 {
                let f = Fail::new(status::BROKEN, u64::from(csts));
                self.halt(f);
                return Err(f);
            }
            if now().wrapping_sub(start) > COMMAND_TIMEOUT {
                // The command may still be under way: the controller is
                // reset before the caller unmaps the command's buffers.
                let f = Fail::new(status::TIMEOUT, u64::from(cid));
                self.halt(f);
                return Err(f);
            }
        }
    }

    fn admin(&mut self, command: Command) -> Result<Completion, Fail> {
        let cid = self.admin.push(command);
        self.admin.ring(&self.regs);
        let c = self.wait(false, cid)?;
        if c.ok() {
            Ok(c)
        } else {
            Err(Fail::new(status::IO_ERROR, u64::from(c.status)))
        }
    }

    /// Identify into the identify page, mapped for this command only.
    fn identify_page(&mut self, cns: u32, nsid: u32) -> Result<&'static [u8; 4096], Fail> {
        let buf = self.map(
            PAGE_IDENTIFY * PAGE,
            PAGE,
            Direction::FromDevice,
            "identify",
        )?;
        let command = Command::new(ADMIN_IDENTIFY, nsid)
            .prp(buf.addr(), 0)
            .cdw(10, cns);
        let result = self.admin(command);
        // After a timeout, `wait` reset the controller first.
        let unmapped = self.unmap(buf, "identify");
        result?;
        unmapped?;
        Ok(pool_page(self.info, PAGE_IDENTIFY))
    }

    fn identify(&mut self) -> Result<(), Fail> {
        let c = self.identify_page(1, 0)?;
        let text = |r: core::ops::Range<usize>| core::str::from_utf8(&c[r]).unwrap_or("?");
        let mdts = c[77];
        println!(
            "{}: identify controller: model {:?}, serial {:?}, firmware {:?}, MDTS {mdts}",
            self.checks_role(),
            text(24..64).trim_end(),
            text(4..24).trim_end(),
            text(64..72).trim_end(),
        );
        if mdts != 0 {
            self.max_command = self.max_command.min(PAGE << mdts);
        }
        let n = self.identify_page(0, NSID)?;
        let nsze = u64::from_le_bytes(n[0..8].try_into().unwrap_or([0; 8]));
        let format = usize::from(n[26] & 0xf);
        let lbads = n[128 + 4 * format + 2];
        self.lba_count = nsze;
        // The device's word: a shift past 63 is no size (0, which the
        // caller refuses), not a panic.
        self.lba_size = 1u64.checked_shl(u32::from(lbads)).unwrap_or(0);
        Ok(())
    }

    fn create_io_queues(&mut self) -> Result<(), Fail> {
        let cq = self.persistent(PAGE_IO_CQ, Direction::FromDevice, "io-cq")?;
        let sq = self.persistent(PAGE_IO_SQ, Direction::ToDevice, "io-sq")?;
        let entries = self.queue_entries;
        let size = u32::from(entries - 1) << 16 | u32::from(IO_QID);
        // Physically contiguous; interrupts off (polled).
        self.admin(
            Command::new(ADMIN_CREATE_CQ, 0)
                .prp(cq, 0)
                .cdw(10, size)
                .cdw(11, 1),
        )?;
        // Physically contiguous, completions to queue IO_QID.
        self.admin(
            Command::new(ADMIN_CREATE_SQ, 0)
                .prp(sq, 0)
                .cdw(10, size)
                .cdw(11, u32::from(IO_QID) << 16 | 1),
        )?;
        // SAFETY: the I/O queue pages, zeroed at bring-up, hold nothing else.
        self.io = Some(unsafe {
            QueuePair::new(
                IO_QID,
                (self.info.dma.vaddr + PAGE_IO_SQ * PAGE) as usize,
                (self.info.dma.vaddr + PAGE_IO_CQ * PAGE) as usize,
                entries,
            )
        });
        println!(
            "{}: I/O queue pair {IO_QID}: SQ at IOVA {sq:#x}, CQ at IOVA {cq:#x}, {entries} entries, polled",
            self.checks_role()
        );
        Ok(())
    }

    /// PRP1 and PRP2 for `data` (mapped contiguously from its first page);
    /// a PRP list in the PRP list page, mapped here, when it spans more than
    /// two pages.
    fn prps(&mut self, data: &DmaAddr) -> Result<(u64, u64, Option<DmaAddr>), Fail> {
        let first = data.addr();
        let base = data.mapped().start;
        let pages = (first - base + data.size()).div_ceil(PAGE);
        match pages {
            1 => Ok((first, 0, None)),
            2 => Ok((first, base + PAGE, None)),
            _ => {
                // The list ends at its page's end: a controller reads from
                // PRP2 to the end of the page (QEMU does, 4 KiB), so this
                // way it reads exactly the entries.
                let entries = (pages - 1) as usize;
                let start = PAGE as usize - entries * 8;
                let list = pool_page(self.info, PAGE_PRP_LIST);
                list.fill(0);
                for i in 0..entries {
                    let at = start + i * 8;
                    let page = base + (i as u64 + 1) * PAGE;
                    list[at..at + 8].copy_from_slice(&page.to_le_bytes());
                }
                let mapped = self.map(
                    PAGE_PRP_LIST * PAGE + start as u64,
                    (entries * 8) as u64,
                    Direction::ToDevice,
                    "prp-list",
                )?;
                Ok((first, mapped.addr(), Some(mapped)))
            }
        }
    }

    /// Fault records that arrived for this driver, once a command's
    /// completion was seen (or its wait given up): waits for the server's
    /// notification for `wait` counter ticks at most (0: only looks, after
    /// the barrier below), then drains them all. Calls `each` on every
    /// record.
    ///
    /// The barrier: the SMMU records a fault event, and raises its
    /// interrupt, when it refuses the device's DMA, which is before the
    /// device posts the command's completion. The interrupt is taken at the
    /// latest when this thread next returns from the kernel, and the IOMMU
    /// server's thread (a higher priority) then routes the record and
    /// signals this driver before this thread runs again. So one system
    /// call after the completion was seen (a yield) lets the poll below see
    /// every record of that command's DMA: none arrives later, to be blamed
    /// on the next request (which may get the same I/O addresses).
    fn drain_faults(&mut self, wait: u64, mut each: impl FnMut(&FaultRecord)) -> usize {
        let Some(notify) = self.notify else {
            return 0;
        };
        syscalls::yield_now();
        let start = now();
        while syscalls::poll(Notification(notify)).0 == 0 {
            if now().wrapping_sub(start) >= wait {
                return 0;
            }
            syscalls::yield_now();
        }
        let mut n = 0;
        while let Ok(batch) = self.iommu.faults() {
            for r in batch.records.iter() {
                n += 1;
                each(r);
            }
            if !batch.more {
                break;
            }
        }
        n
    }

    /// One NVMe read or write of `count` blocks at `lba`, between the disk
    /// and `bytes` of the pool from byte `offset`: maps the buffer for this
    /// command, unmaps it on completion, and fails if the device reported
    /// an error or the SMMU faulted the buffer's DMA. Where its time went
    /// is left in `self.times`.
    fn command(&mut self, write: bool, lba: u64, count: u64, offset: u64) -> Result<(), Fail> {
        let start = now();
        self.times = IoTimes::default();
        let bytes = count * self.lba_size;
        let dir = if write {
            Direction::ToDevice
        } else {
            Direction::FromDevice
        };
        let purpose = if write { "write" } else { "read" };
        let t = now();
        let data = self.map(offset, bytes, dir, purpose);
        self.times.map += now().wrapping_sub(t);
        let data = data?;
        let (prp1, prp2, list) = match self.prps(&data) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.unmap(data, purpose);
                return Err(e);
            }
        };
        let result = self.submit_io(rw_command(write, lba, count, prp1, prp2));
        let ranges = [Some(data.mapped()), list.as_ref().map(|l| l.mapped())];
        // After a timeout `wait` reset the controller before this point:
        // the buffers are unmapped once it stopped, or their addresses are
        // kept for good (`unmap`).
        let t = now();
        let unmapped = self.unmap(data, purpose);
        let list_unmapped = list.map(|l| self.unmap(l, "prp-list"));
        self.times.unmap = now().wrapping_sub(t);
        let outcome = self
            .completed(result, &ranges)
            .and(unmapped)
            .and(list_unmapped.unwrap_or(Ok(())));
        self.times.total = now().wrapping_sub(start);
        outcome
    }

    /// The end of every I/O command once the device answered (or not):
    /// drains the fault records that arrived (every record of the
    /// command's DMA has, see [`Driver::drain_faults`]; after an error
    /// completion it also waits up to [`FAULT_SETTLE`] for one), and fails
    /// if the device reported an error or the SMMU faulted DMA to one of
    /// `ranges` (the command's buffers, as mapped). A record anywhere else
    /// is counted as stray.
    fn completed(
        &mut self,
        result: Result<Completion, Fail>,
        ranges: &[Option<core::ops::Range<u64>>],
    ) -> Result<(), Fail> {
        let stream = self.stream;
        let mut hit = None;
        let mut stray = 0;
        let settle = match &result {
            Ok(c) if c.ok() => 0,
            _ => FAULT_SETTLE,
        };
        let t = now();
        self.drain_faults(settle, |r| {
            let ours =
                r.stream == stream && ranges.iter().flatten().any(|range| range.contains(&r.iova));
            if ours {
                hit.get_or_insert(*r);
            } else {
                stray += 1;
                println!("blk-driver: stray fault record: {r}");
            }
        });
        self.times.fault_poll = now().wrapping_sub(t);
        self.stray_faults += stray;
        let c = result?;
        if !c.ok() {
            return Err(Fail::new(status::IO_ERROR, u64::from(c.status)));
        }
        if let Some(r) = hit {
            println!("blk-driver: DMA fault during the command: {r}");
            return Err(Fail::new(status::DMA_FAULT, r.iova));
        }
        Ok(())
    }

    /// Submits `command` on the I/O queue and polls for its completion;
    /// `self.times.device` is the time from the doorbell to the completion.
    fn submit_io(&mut self, command: Command) -> Result<Completion, Fail> {
        if self.broken {
            return Err(Fail::new(status::BROKEN, 0));
        }
        let io = self.io.as_mut().ok_or(Fail::new(status::BROKEN, 0))?;
        let cid = io.push(command);
        let t = now();
        io.ring(&self.regs);
        let c = self.wait(true, cid);
        self.times.device = now().wrapping_sub(t);
        c
    }

    /// A read or write request: checked, split into commands of at most
    /// `max_command` bytes.
    fn transfer(&mut self, write: bool, lba: u64, count: u64, offset: u64) -> Result<(), Fail> {
        let bytes = count.checked_mul(self.lba_size);
        let fits_disk = lba.checked_add(count).is_some_and(|e| e <= self.lba_count);
        let fits_buffer = bytes
            .and_then(|b| b.checked_add(offset))
            .is_some_and(|e| e <= STAGING_BYTES);
        if count == 0 || !fits_disk || !fits_buffer || !offset.is_multiple_of(4) {
            return Err(Fail::new(status::INVALID, 0));
        }
        let per_command = self.max_command / self.lba_size;
        let mut done = 0;
        while done < count {
            let n = (count - done).min(per_command);
            self.command(
                write,
                lba + done,
                n,
                PAGE_STAGING * PAGE + offset + done * self.lba_size,
            )?;
            done += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Fail> {
        let c = self.submit_io(Command::new(IO_FLUSH, NSID))?;
        if c.ok() {
            Ok(())
        } else {
            Err(Fail::new(status::IO_ERROR, u64::from(c.status)))
        }
    }

    /// The unmapped-buffer test. A read into a mapped buffer first (and,
    /// for variant 1, through a mapped PRP list): the device's DMA goes
    /// through the SMMU, which caches the translations in its TLB. Then the
    /// buffer (and the list) are unmapped, and the same read is submitted
    /// again, to the now-unmapped I/O addresses: only the unmap's TLB
    /// invalidation keeps the device from the pages, which the test then
    /// finds untouched. Returns the error the second read got and the
    /// buffer's IOVA; prints checks of its own.
    fn test_unmapped(&mut self, variant: u64) -> (Result<(), Fail>, u64) {
        let role = self.checks_role();
        // Variant 0 reads one block into one page; variant 1 four pages.
        let (pages, bytes) = if variant == 0 {
            (1, self.lba_size)
        } else {
            (TEST_PAGES, TEST_PAGES * PAGE)
        };
        let fill_test = |info| {
            for p in 0..pages {
                pool_page(info, PAGE_TEST + p).fill(FILL_TEST);
            }
        };
        fill_test(self.info);
        pool_page(self.info, PAGE_CANARY).fill(FILL_CANARY);
        // The canary: device-writable, mapped just below the buffer.
        let canary = match self.map(PAGE_CANARY * PAGE, PAGE, Direction::FromDevice, "canary") {
            Ok(c) => c,
            Err(e) => return (Err(e), 0),
        };
        let buf = match self.map(PAGE_TEST * PAGE, bytes, Direction::FromDevice, "test-read") {
            Ok(b) => b,
            Err(e) => {
                let _ = self.unmap(canary, "canary");
                return (Err(e), 0);
            }
        };
        let iova = buf.addr();
        let (prp1, prp2, list) = match self.prps(&buf) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.unmap(buf, "test-read");
                let _ = self.unmap(canary, "canary");
                return (Err(e), iova);
            }
        };
        let blocks = bytes / self.lba_size;
        let lba = 0x40;
        let command = Command::new(IO_READ, NSID)
            .prp(prp1, prp2)
            .cdw(10, lba as u32)
            .cdw(12, (blocks - 1) as u32);
        // 1. The read into the mapped buffer: the data lands, the rest of
        // its pages keeps the fill, and the SMMU's TLB holds the pages.
        let ranges = [Some(buf.mapped()), list.as_ref().map(|l| l.mapped())];
        let warm = self.submit_io(command);
        let warm = self.completed(warm, &ranges);
        let size = self.lba_size as usize;
        let test_bytes = |info| {
            (0..(pages * PAGE) as usize)
                .map(move |b| pool_page(info, PAGE_TEST + (b as u64) / PAGE)[b % PAGE as usize])
        };
        let landed = test_bytes(self.info).enumerate().all(|(b, got)| {
            if (b as u64) < bytes {
                got == image_byte(lba + (b / size) as u64, b % size)
            } else {
                got == FILL_TEST
            }
        });
        println!(
            "{role}: test {variant}: read of {blocks} block(s) at LBA {lba:#x} into IOVA {iova:#x} while mapped: {warm:?}, data as on the disk and the rest of the page(s) untouched: {landed}"
        );
        fill_test(self.info);
        // 2. Unmap (strict: the SMMU's TLBs are invalidated and synced when
        // the reply comes), then ring the doorbell for the same read.
        let list_iova = list.as_ref().map(|l| l.addr());
        let unmapped = self.unmap(buf, "test-read");
        let list_unmapped = list.map(|l| self.unmap(l, "prp-list"));
        println!(
            "{role}: test {variant}: read of {blocks} block(s) at LBA {lba:#x} into IOVA {iova:#x}, PRP list at IOVA {:#x} (0: none), both unmapped before the doorbell ({:?}, {:?}); canary page at IOVA {:#x}",
            list_iova.unwrap_or(0),
            unmapped.as_ref().err(),
            list_unmapped.as_ref().map(|r| r.as_ref().err()),
            canary.addr()
        );
        let result = self.submit_io(command);
        let stream = self.stream;
        let mut first = None;
        let mut records = 0;
        let end = iova - iova % PAGE + pages * PAGE;
        let wanted = |r: &FaultRecord| {
            r.stream == stream
                && ((r.iova >= iova && r.iova < end)
                    || list_iova.is_some_and(|l| r.iova >> 12 == l >> 12))
        };
        self.drain_faults(COUNTER_HZ, |r| {
            records += 1;
            if wanted(r) {
                first.get_or_insert(*r);
            }
        });
        let walk = self.iommu.walk(self.dma.domain(), iova);
        if let Some(r) = &first {
            println!("{role}: test {variant}: fault record: {r}");
        }
        println!(
            "{role}: test {variant}: the SMMU's walk of IOVA {iova:#x}: {walk:?} ({})",
            match &walk {
                Ok(w) if w.mapped() => "mapped",
                Ok(_) => "not mapped",
                Err(_) => "walk failed",
            }
        );
        let untouched = test_bytes(self.info).all(|b| b == FILL_TEST);
        let canary_ok = pool_page(self.info, PAGE_CANARY)
            .iter()
            .all(|&b| b == FILL_CANARY);
        let canary_unmapped = self.unmap(canary, "canary");
        let outcome = match result {
            Err(e) => Err(e),
            Ok(c) if !c.ok() => Err(Fail::new(status::IO_ERROR, u64::from(c.status))),
            Ok(_) if first.is_some() => Err(Fail::new(status::DMA_FAULT, iova)),
            Ok(_) => Ok(()),
        };
        let name: &str = if variant == 0 {
            "unmapped-buffer-faults"
        } else {
            "unmapped-prp-list-faults"
        };
        // QEMU's NVMe reads the PRP list with a plain DMA read and fails
        // the command with Data Transfer Error when the SMMU refuses it;
        // data DMA goes through QEMU's bounce buffer when the translation
        // fails, and the command completes with success although no byte
        // arrived: only the fault record tells.
        let expected = if variant == 0 {
            outcome.is_err_and(|f| f.code == status::DMA_FAULT || f.code == status::IO_ERROR)
        } else {
            outcome.is_err_and(|f| {
                f.code == status::IO_ERROR
                    && f.detail as u16 & 0x7ff == nvme::STATUS_DATA_TRANSFER_ERROR
            })
        };
        self.checks.check(
            name,
            warm.is_ok()
                && landed
                && unmapped.is_ok()
                && list_unmapped.unwrap_or(Ok(())).is_ok()
                && expected
                && first.is_some()
                && untouched
                && canary_ok
                && walk.is_ok_and(|w| !w.mapped())
                && canary_unmapped.is_ok(),
            format_args!(
                "while mapped: {warm:?}, landed {landed}; after the unmap: completion {result:?} -> {outcome:?}; {records} fault record(s), first for the buffer: {}; buffer pages untouched: {untouched}; canary untouched: {canary_ok}",
                first.map(|r| r.iova).unwrap_or(0)
            ),
        );
        (outcome, iova)
    }

    /// Queues deleted, controller disabled, mappings unmapped, stream
    /// detached, domain freed. A controller out of service was reset
    /// already ([`Driver::halt`]): its queues are gone with it.
    fn shutdown(&mut self) -> Result<(), Fail> {
        if !self.broken {
            self.flush()?;
            self.admin(Command::new(ADMIN_DELETE_SQ, 0).cdw(10, u32::from(IO_QID)))?;
            self.admin(Command::new(ADMIN_DELETE_CQ, 0).cdw(10, u32::from(IO_QID)))?;
            self.io = None;
            self.regs.disable();
            self.wait_ready(false)?;
        }
        for k in 0..self.rings.len() {
            if let Some((m, purpose)) = self.rings[k].take() {
                self.unmap(m, purpose)?;
            }
        }
        self.iommu
            .detach(self.stream, Ssid(0))
            .map_err(Fail::iommu)?;
        self.iommu
            .free_domain(self.dma.domain())
            .map_err(Fail::iommu)?;
        self.iommu
            .unregister_memory(self.memory)
            .map_err(Fail::iommu)?;
        Ok(())
    }
}

/// Message words of the request just received.
fn request_words(length: usize) -> [u64; 120] {
    let mut words = [0u64; 120];
    if let Some(b) = ipc_buffer() {
        for (i, w) in words.iter_mut().enumerate().take(length.min(120)) {
            *w = b.mr(i);
        }
    }
    words
}

fn reply(words: &[u64]) {
    if let Some(b) = ipc_buffer() {
        for (i, &w) in words.iter().enumerate().take(120) {
            b.set_mr(i, w);
        }
    }
    syscalls::reply(MessageInfo::new(0, 0, 0, words.len().min(120) as u64));
}

fn result_words(r: Result<(), Fail>) -> [u64; 2] {
    match r {
        Ok(()) => [status::OK, 0],
        Err(f) => [f.code, f.detail],
    }
}

/// What a driver role serves beyond the block requests every role serves.
#[derive(Clone, Copy)]
struct Role {
    /// [`op::TEST_UNMAPPED`] (the `blk` system's `blk-driver`).
    test_unmapped: bool,
    /// [`op::DIE_MID_IO`] (the `blk-death` system's `doomed-driver`).
    die_mid_io: bool,
}

fn op_name(label: u64) -> &'static str {
    match label {
        op::TEST_UNMAPPED => "TEST_UNMAPPED",
        op::SHUTDOWN => "SHUTDOWN",
        op::DIE_MID_IO => "DIE_MID_IO",
        _ => "?",
    }
}

/// The `blk-driver` role (and `doomed-driver`, which dies on
/// [`op::DIE_MID_IO`]).
pub fn run(info: &'static StartInfo, role: &'static str) -> bool {
    let Some(ep) = info.cap("blk").map(|c| CPtr(c.cptr)) else {
        println!("{role}: no blk endpoint");
        return false;
    };
    let serves = Role {
        test_unmapped: role == "blk-driver",
        die_mid_io: role == "doomed-driver",
    };
    let Some(mut d) = bring_up(info, role, true) else {
        return false;
    };
    println!(
        "{role}: serving block requests: {} blocks of {} bytes; SHUTDOWN{} from badge {CONTROL_BADGE:#x} only",
        d.lba_count,
        d.lba_size,
        match (serves.test_unmapped, serves.die_mid_io) {
            (true, _) => " and TEST_UNMAPPED",
            (_, true) => " and DIE_MID_IO",
            _ => "",
        }
    );
    let mut requests = 0u64;
    let mut refused = 0u64;
    loop {
        let (msg, badge) = syscalls::recv(ep);
        let w = request_words(msg.length());
        requests += 1;
        let label = msg.label();
        // Requests for the one client the system names, or for this role.
        let allowed = match label {
            op::TEST_UNMAPPED => serves.test_unmapped && badge.0 == CONTROL_BADGE,
            op::DIE_MID_IO => serves.die_mid_io && badge.0 == CONTROL_BADGE,
            op::SHUTDOWN => badge.0 == CONTROL_BADGE,
            _ => true,
        };
        if !allowed {
            refused += 1;
            println!(
                "{role}: refused {} from badge {:#x} (not {CONTROL_BADGE:#x}, or not in this role)",
                op_name(label),
                badge.0
            );
            reply(&[status::REFUSED, 0]);
            continue;
        }
        match label {
            op::INFO => reply(&[
                status::OK,
                0,
                d.lba_size,
                d.lba_count,
                STAGING_BYTES,
                d.max_command,
            ]),
            op::READ | op::WRITE => {
                let r = d.transfer(label == op::WRITE, w[0], w[1], w[2]);
                reply(&result_words(r));
            }
            op::GET => {
                let Some(range) = staging_range(w[0], w[1]) else {
                    reply(&[status::INVALID, 0]);
                    continue;
                };
                let mut out = [0u64; 2 + CHUNK / 8];
                let len = range.len();
                for (k, chunk) in staging(info)[range].chunks(8).enumerate() {
                    out[2 + k] = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                }
                reply(&out[..2 + len / 8]);
            }
            op::PUT => {
                // The data words must all have come with the message.
                let range = staging_range(w[0], w[1]).filter(|r| msg.length() >= 2 + r.len() / 8);
                let Some(range) = range else {
                    reply(&[status::INVALID, 0]);
                    continue;
                };
                for (k, chunk) in staging(info)[range].chunks_mut(8).enumerate() {
                    chunk.copy_from_slice(&w[2 + k].to_le_bytes());
                }
                reply(&[status::OK, 0]);
            }
            op::FLUSH => {
                let r = d.flush();
                reply(&result_words(r));
            }
            op::TEST_UNMAPPED => {
                if w[0] > 1 {
                    reply(&[status::INVALID, 0]);
                    continue;
                }
                let (r, iova) = d.test_unmapped(w[0]);
                let [code, detail] = result_words(r);
                reply(&[code, detail, iova]);
            }
            op::DIE_MID_IO => {
                die_mid_io(&mut d, w[0], w[1]);
            }
            op::SHUTDOWN => {
                let r = d.shutdown();
                d.checks.check(
                    "shutdown",
                    r.is_ok(),
                    format_args!(
                        "{r:?} after {requests} requests ({refused} refused): flushed, I/O queues deleted, controller disabled, queues unmapped, stream detached, domain freed, memory unregistered; IOVA ranges still allocated: {}, bytes kept for good after a timeout: {}",
                        d.dma.allocator().live(),
                        d.quarantined
                    ),
                );
                let stray = d.stray_faults;
                d.checks.check(
                    "no-stray-faults",
                    stray == 0,
                    format_args!("{stray} fault record(s) outside a request's buffers"),
                );
                let [code, detail] = result_words(r);
                reply(&[code, detail]);
                return d.checks.passed();
            }
            other => {
                println!("{role}: unknown request label {other}");
                reply(&[status::INVALID, 0]);
            }
        }
    }
}

/// Submits a read of `count` blocks (at most two pages) at `lba` into the
/// staging buffer and a Compare of the same blocks against the staging
/// buffer's third page, replies with both buffers' IOVAs, and dies by a
/// fault with both outstanding: the root task stops this process and
/// retires it at the IOMMU server (stream to abort, domain and tables
/// freed). Bad arguments get [`status::INVALID`] and no death.
///
/// QEMU's NVMe translates a read's buffer when it starts the command (the
/// block layer then writes through the host mapping it got, so the read's
/// data does land in this process's pool after the retirement: no SMMU
/// sees that write), but a Compare reads the host's data only after its
/// disk read, which the throttled disk delays past the retirement: that
/// DMA, and both completions, meet the aborting stream.
fn die_mid_io(d: &mut Driver, lba: u64, count: u64) {
    let role = d.checks_role();
    let count = count.clamp(1, 2 * PAGE / d.lba_size);
    if lba.checked_add(count).is_none_or(|e| e > d.lba_count) {
        reply(&[status::INVALID, 0]);
        return;
    }
    let bytes = count * d.lba_size;
    let read = d.map(PAGE_STAGING * PAGE, bytes, Direction::FromDevice, "read");
    let compare = d.map(
        (PAGE_STAGING + 2) * PAGE,
        bytes,
        Direction::ToDevice,
        "compare",
    );
    let prp2 = |m: &DmaAddr| {
        if bytes > PAGE {
            m.mapped().start + PAGE
        } else {
            0
        }
    };
    let (read_iova, compare_iova) = (
        read.as_ref().map(|m| m.addr()).unwrap_or(0),
        compare.as_ref().map(|m| m.addr()).unwrap_or(0),
    );
    let submitted = match (&read, &compare, d.io.as_mut()) {
        (Ok(r), Ok(c), Some(io)) => {
            let blocks = |cmd: Command| cmd.cdw(10, lba as u32).cdw(12, (count - 1) as u32);
            let a = io.push(blocks(Command::new(IO_READ, NSID).prp(r.addr(), prp2(r))));
            let b = io.push(blocks(
                Command::new(IO_COMPARE, NSID).prp(c.addr(), prp2(c)),
            ));
            io.ring(&d.regs);
            Some((a, b))
        }
        _ => None,
    };
    reply(&[
        if submitted.is_some() {
            status::OK
        } else {
            status::BROKEN
        },
        0,
        read_iova,
        compare_iova,
    ]);
    println!(
        "{role}: dying by a fault with StreamID {:#x} attached, a read (command {:?}) of LBA {lba:#x}+{count} into IOVA {read_iova:#x} and a compare (command {:?}) from IOVA {compare_iova:#x} outstanding",
        d.stream.0,
        submitted.map(|s| s.0),
        submitted.map(|s| s.1),
    );
    // The mappings are deliberately kept (never unmapped): the server takes
    // them back when it retires this client.
    let _kept = (read, compare);
    // SAFETY: a store to page 0x1000, which no process has mapped: it
    // faults, the kernel blocks this thread and tells the root task, which
    // stops this process for good and retires it at the IOMMU server.
    unsafe { core::arch::asm!("str xzr, [{0}]", in(reg) 0x1000u64) };
    loop {
        syscalls::yield_now();
    }
}
