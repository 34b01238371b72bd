//! Shared fakes for the core's host tests: a host-memory DMA allocator with
//! failure injection and a fake SMMU register file that plays the
//! command-queue consumer. (Included with `#[path]` by the `core_*` tests.)
#![allow(dead_code)]

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use iommu_server::hal::{DmaAllocator, DmaBlock, Mmio, OutOfMemory};
use iommu_server::regs;

/// `RefCell`'s interface over a mutex: the fakes are shared by clones, and
/// the core needs its hardware to be `Send` (it is the concurrent core, even
/// when one thread drives it).
#[derive(Default)]
pub struct Shared<T>(Mutex<T>);

impl<T> Shared<T> {
    pub fn new(v: T) -> Self {
        Shared(Mutex::new(v))
    }
    pub fn borrow(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
    pub fn borrow_mut(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
}

// ---------------------------------------------------------------- allocator

#[derive(Default)]
struct ArenaState {
    live: BTreeMap<usize, Layout>,
    /// Allocations still allowed (None: unlimited).
    budget: Option<usize>,
    allocs: u64,
    frees: u64,
    bad_frees: u64,
}

/// Host allocator: blocks from the Rust heap, physical address = virtual
/// address. Cloning shares the state.
#[derive(Clone, Default)]
pub struct HostAlloc(Arc<Shared<ArenaState>>);

impl HostAlloc {
    pub fn new() -> Self {
        Self::default()
    }
    /// Allow `n` more allocations, then fail.
    pub fn set_budget(&self, n: Option<usize>) {
        self.0.borrow_mut().budget = n;
    }
    pub fn live(&self) -> usize {
        self.0.borrow().live.len()
    }
    pub fn live_bytes(&self) -> usize {
        self.0.borrow().live.values().map(|l| l.size()).sum()
    }
    pub fn bad_frees(&self) -> u64 {
        self.0.borrow().bad_frees
    }
}

impl DmaAllocator for HostAlloc {
    // Host memory behind a fake SMMU: coherent by construction.
    type Cache = iommu_server::hal::NoCache;
    fn cache(&self) -> Option<Self::Cache> {
        None
    }
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory> {
        let mut s = self.0.borrow_mut();
        if let Some(b) = s.budget.as_mut() {
            if *b == 0 {
                return Err(OutOfMemory);
            }
            *b -= 1;
        }
        let layout = Layout::from_size_align(size.max(1), align.max(8)).map_err(|_| OutOfMemory)?;
        // SAFETY: non-zero size layout.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(OutOfMemory);
        }
        s.live.insert(p as usize, layout);
        s.allocs += 1;
        Ok(DmaBlock {
            vaddr: p,
            paddr: p as u64,
            size,
        })
    }

    fn free(&mut self, block: DmaBlock) {
        let mut s = self.0.borrow_mut();
        match s.live.remove(&(block.vaddr as usize)) {
            Some(layout) if block.paddr == block.vaddr as u64 && block.size <= layout.size() => {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { std::alloc::dealloc(block.vaddr, layout) };
                s.frees += 1;
            }
            Some(layout) => {
                s.live.insert(block.vaddr as usize, layout);
                s.bad_frees += 1;
            }
            None => s.bad_frees += 1,
        }
    }
}

/// Reads a u64 at a "physical" (= virtual) address of a HostAlloc block.
pub fn peek(paddr: u64) -> u64 {
    // SAFETY: tests only pass addresses inside live HostAlloc blocks.
    unsafe { std::ptr::read_volatile(paddr as *const u64) }
}

/// Writes a u64 at a physical address of a HostAlloc block.
pub fn poke(paddr: u64, v: u64) {
    // SAFETY: as in `peek`.
    unsafe { std::ptr::write_volatile(paddr as *mut u64, v) }
}

// ---------------------------------------------------------------- delay

/// A delay that only counts.
#[derive(Clone, Default)]
pub struct CountDelay(pub Arc<Shared<u64>>);

impl embedded_hal::delay::DelayNs for CountDelay {
    fn delay_ns(&mut self, ns: u32) {
        *self.0.borrow_mut() += ns as u64;
    }
}

// ---------------------------------------------------------------- fake SMMU

/// How the fake consumes commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// Everything at each PROD write (QEMU-like).
    Immediate,
    /// Never: the queue fills and syncs time out.
    Stuck,
    /// `n` commands per read of CMDQ_CONS.
    Slow(u32),
}

/// Called with each command the fake executes.
pub type CmdHook = Box<dyn FnMut(&[u64; 2]) + Send>;

pub struct FakeState {
    pub regs: BTreeMap<usize, u64>,
    pub consumer: Consumer,
    /// Opcodes the fake rejects (with `err_code`, default CERROR_ILL = 1).
    pub illegal: Vec<u8>,
    pub err_code: u32,
    /// Executed commands.
    pub log: Vec<[u64; 2]>,
    /// Register writes, in order.
    pub writes: Vec<(usize, u64)>,
    /// CR0ACK never follows CR0.
    pub stuck_cr0: bool,
    /// Stopped on an error until GERRORN acknowledges it.
    pub halted: bool,
    /// Called at each executed command with (command, state) - e.g. to
    /// snapshot an STE at each CFGI_STE.
    pub on_cmd: Option<CmdHook>,
    pub doorbells: u64,
}

/// A fake SMMU register file. Cloning shares the state.
#[derive(Clone)]
pub struct FakeSmmu(pub Arc<Shared<FakeState>>);

/// QEMU 7.2's ID registers (DESIGN.md 4).
pub const QEMU_IDR: [u32; 6] = [0x0d40_101a, 0x0273_0010, 0, 0x1404, 0, 0x74];

impl FakeSmmu {
    pub fn new(idr: [u32; 6]) -> Self {
        let mut regs = BTreeMap::new();
        for (i, v) in idr.iter().enumerate() {
            regs.insert(regs::IDR0 + 4 * i, *v as u64);
        }
        FakeSmmu(Arc::new(Shared::new(FakeState {
            regs,
            consumer: Consumer::Immediate,
            illegal: Vec::new(),
            err_code: 1,
            log: Vec::new(),
            writes: Vec::new(),
            stuck_cr0: false,
            halted: false,
            on_cmd: None,
            doorbells: 0,
        })))
    }
    pub fn qemu() -> Self {
        Self::new(QEMU_IDR)
    }
    pub fn reg(&self, off: usize) -> u64 {
        *self.0.borrow().regs.get(&off).unwrap_or(&0)
    }
    pub fn set_reg(&self, off: usize, v: u64) {
        self.0.borrow_mut().regs.insert(off, v);
    }
    pub fn log(&self) -> Vec<[u64; 2]> {
        self.0.borrow().log.clone()
    }
    pub fn opcodes(&self) -> Vec<u8> {
        self.0.borrow().log.iter().map(|c| c[0] as u8).collect()
    }
    pub fn clear_log(&self) {
        self.0.borrow_mut().log.clear();
    }
    pub fn set_consumer(&self, c: Consumer) {
        self.0.borrow_mut().consumer = c;
    }
    pub fn writes(&self) -> Vec<(usize, u64)> {
        self.0.borrow().writes.clone()
    }
    pub fn doorbells(&self) -> u64 {
        self.0.borrow().doorbells
    }

    fn cmdq_geom(s: &FakeState) -> (u64, u32) {
        let base = *s.regs.get(&regs::CMDQ_BASE).unwrap_or(&0);
        (base & 0x000f_ffff_ffff_ffe0, (base & 0x1f) as u32)
    }

    /// Consumes up to `max` commands.
    fn consume(&self, max: u32) {
        let mut guard = self.0.borrow_mut();
        let s = &mut *guard;
        if s.halted {
            return;
        }
        let (base, log2) = Self::cmdq_geom(s);
        let mask = (2u32 << log2) - 1;
        let prod = (*s.regs.get(&regs::CMDQ_PROD).unwrap_or(&0) as u32) & mask;
        let mut cons = (*s.regs.get(&regs::CMDQ_CONS).unwrap_or(&0) as u32) & mask;
        let mut n = 0;
        while cons != prod && n < max {
            let idx = (cons & ((1 << log2) - 1)) as u64;
            let cmd = [peek(base + idx * 16), peek(base + idx * 16 + 8)];
            // 4.4.1.1: TLBI_NH_VA with TG != 0 and NUM = SCALE = TTL = 0 is Reserved.
            let reserved_range = cmd[0] as u8 == 0x12
                && (cmd[1] >> 10) & 3 != 0
                && (cmd[1] >> 8) & 3 == 0
                && (cmd[0] >> 12) & 0x1f == 0
                && (cmd[0] >> 20) & 0x1f == 0;
            if s.illegal.contains(&(cmd[0] as u8)) || reserved_range {
                // CERROR_ILL: CONS stays at the entry, ERR = 1, GERROR.CMDQ_ERR toggles.
                let g = *s.regs.get(&regs::GERROR).unwrap_or(&0) ^ 1;
                s.regs.insert(regs::GERROR, g);
                s.regs
                    .insert(regs::CMDQ_CONS, (cons | (s.err_code << 24)) as u64);
                s.halted = true;
                return;
            }
            s.log.push(cmd);
            if let Some(f) = s.on_cmd.as_mut() {
                f(&cmd);
            }
            cons = (cons + 1) & mask;
            n += 1;
        }
        s.regs.insert(regs::CMDQ_CONS, cons as u64);
    }

    /// Writes an event record into the event queue (as the SMMU would).
    pub fn inject_event(&self, rec: [u64; 4]) -> bool {
        let mut s = self.0.borrow_mut();
        let base = *s.regs.get(&regs::EVENTQ_BASE).unwrap_or(&0);
        let (addr, log2) = (base & 0x000f_ffff_ffff_ffe0, (base & 0x1f) as u32);
        let mask = (2u32 << log2) - 1;
        let prod_raw = *s.regs.get(&regs::EVENTQ_PROD).unwrap_or(&0) as u32;
        let cons = *s.regs.get(&regs::EVENTQ_CONS).unwrap_or(&0) as u32 & mask;
        let prod = prod_raw & mask;
        let full = (prod ^ cons) == (1 << log2);
        if full {
            // overflow: toggle OVFLG, drop the record
            s.regs
                .insert(regs::EVENTQ_PROD, (prod_raw ^ (1 << 31)) as u64);
            return false;
        }
        let idx = (prod & ((1 << log2) - 1)) as u64;
        for (i, q) in rec.iter().enumerate() {
            poke(addr + idx * 32 + 8 * i as u64, *q);
        }
        let np = ((prod + 1) & mask) | (prod_raw & (1 << 31));
        s.regs.insert(regs::EVENTQ_PROD, np as u64);
        true
    }
}

impl Mmio for FakeSmmu {
    fn read32(&self, offset: usize) -> u32 {
        if offset == regs::CMDQ_CONS {
            let c = self.0.borrow().consumer;
            if let Consumer::Slow(n) = c {
                self.consume(n);
            }
        }
        self.reg(offset) as u32
    }
    fn write32(&self, offset: usize, value: u32) {
        let mut consume = false;
        {
            let mut s = self.0.borrow_mut();
            s.writes.push((offset, value as u64));
            s.regs.insert(offset, value as u64);
            match offset {
                regs::CR0 if !s.stuck_cr0 => {
                    s.regs.insert(regs::CR0ACK, value as u64);
                }
                regs::IRQ_CTRL => {
                    s.regs.insert(regs::IRQ_CTRLACK, value as u64);
                }
                regs::GBPA => {
                    s.regs.insert(regs::GBPA, (value & !(1 << 31)) as u64);
                }
                regs::CMDQ_PROD => {
                    s.doorbells += 1;
                    consume = s.consumer == Consumer::Immediate;
                }
                regs::GERRORN if s.halted => {
                    let g = *s.regs.get(&regs::GERROR).unwrap_or(&0) as u32;
                    if (g ^ value) & 1 == 0 {
                        s.halted = false;
                        let c = *s.regs.get(&regs::CMDQ_CONS).unwrap_or(&0) & 0x00ff_ffff;
                        s.regs.insert(regs::CMDQ_CONS, c);
                        consume = s.consumer == Consumer::Immediate;
                    }
                }
                _ => {}
            }
        }
        if consume {
            self.consume(u32::MAX);
        }
    }
    fn read64(&self, offset: usize) -> u64 {
        self.reg(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        let mut s = self.0.borrow_mut();
        s.writes.push((offset, value));
        s.regs.insert(offset, value);
    }
}

/// A fresh SMMU over the fake and a host allocator.
pub fn smmu_with(
    fake: &FakeSmmu,
    alloc: &HostAlloc,
    cfg: iommu_server::Config,
) -> iommu_server::Result<iommu_server::Smmu<FakeSmmu, HostAlloc, CountDelay>> {
    iommu_server::Smmu::new(fake.clone(), alloc.clone(), CountDelay::default(), cfg)
}

/// A test config: short polls.
pub fn test_config() -> iommu_server::Config {
    iommu_server::Config {
        poll_timeout_us: 50,
        ..Default::default()
    }
}

/// Opcode names for readable assertions.
pub mod op {
    #[allow(unused_imports)]
    pub use iommu_server::cmd::op::*;
}
