//! A non-coherent SMMU (IDR0.COHACC = 0): the CPU writes through `vaddr`
//! pointers into its own (cached) view, the SMMU and devices see memory at
//! the point of coherency, and only `PhysMem::clean` / `invalidate` move
//! data between them.

use iommu_server::hal::{DmaAllocator, DmaBlock, Mmio};
use smmu_model::spec::{evt, op, reg};
use smmu_model::*;

const CMDQ_LOG2: u32 = 4;
const EVTQ_LOG2: u32 = 2;
const COHACC: u32 = 1 << 4;

fn non_coherent() -> Features {
    Features {
        coherent: false,
        msi: true,
        ..Features::qemu_7_2()
    }
}

fn small_mem() -> MemConfig {
    MemConfig {
        phys_base: 0x4000_0000,
        size: 1 << 20,
        poison_on_free: Some(0xFF),
    }
}

/// Stores `words` through the CPU's pointer (as the server does).
fn cpu_store(b: &DmaBlock, off: usize, words: &[u64]) {
    assert!(off + 8 * words.len() <= b.size);
    for (i, w) in words.iter().enumerate() {
        // SAFETY: inside the live block `b`, 8-byte aligned.
        unsafe { (b.vaddr.add(off + 8 * i) as *mut u64).write(*w) };
    }
}
fn cpu_load(b: &DmaBlock, off: usize) -> u64 {
    // SAFETY: as in `cpu_store`.
    unsafe { (b.vaddr.add(off) as *const u64).read() }
}

/// A driver on a non-coherent SMMU, with queues and a linear stream table
/// allocated through `DmaAllocator` and written through `vaddr`.
struct Rig {
    m: Machine,
    cmdq: DmaBlock,
    evtq: DmaBlock,
    strtab: DmaBlock,
    prod: u32,
}

impl Rig {
    fn new(f: Features) -> Rig {
        let m = Machine::with(f, ModelOptions::default(), small_mem());
        let mut mem = m.mem.clone();
        let cmdq = mem.alloc(16 << CMDQ_LOG2, 16 << CMDQ_LOG2).unwrap();
        let evtq = mem.alloc(32 << EVTQ_LOG2, 32 << EVTQ_LOG2).unwrap();
        let strtab = mem.alloc(64 * 16, 64 * 16).unwrap();
        let s = &m.smmu;
        s.write64(reg::CMDQ_BASE, cmdq.paddr | CMDQ_LOG2 as u64);
        s.write64(reg::EVENTQ_BASE, evtq.paddr | EVTQ_LOG2 as u64);
        s.write64(reg::STRTAB_BASE, strtab.paddr);
        s.write32(reg::STRTAB_BASE_CFG, 4); // linear, 16 STEs
        s.write32(reg::CR0, reg::CR0_CMDQEN | reg::CR0_EVENTQEN);
        s.write32(
            reg::CR0,
            reg::CR0_CMDQEN | reg::CR0_EVENTQEN | reg::CR0_SMMUEN,
        );
        Rig {
            m,
            cmdq,
            evtq,
            strtab,
            prod: 0,
        }
    }
    /// Writes commands through `vaddr`, cleans them if asked, rings.
    fn cmds(&mut self, cmds: &[[u64; 2]], clean: bool) {
        for c in cmds {
            let off = 16 * (self.prod & ((1 << CMDQ_LOG2) - 1)) as usize;
            cpu_store(&self.cmdq, off, c);
            if clean {
                // SAFETY: inside the command queue block.
                self.m.mem.clean(unsafe { self.cmdq.vaddr.add(off) }, 16);
            }
            self.prod = (self.prod + 1) & ((2 << CMDQ_LOG2) - 1);
        }
        self.m.smmu.write32(reg::CMDQ_PROD, self.prod);
    }
    fn set_ste(&self, sid: u32, ste: [u64; 8], clean: bool) {
        let off = 64 * sid as usize;
        cpu_store(&self.strtab, off, &ste);
        if clean {
            // SAFETY: inside the stream table block.
            self.m.mem.clean(unsafe { self.strtab.vaddr.add(off) }, 64);
        }
    }
}

fn ste_cfg(config: u64) -> [u64; 8] {
    let mut s = [0u64; 8];
    s[0] = 1 | config << 1;
    s
}
fn sync() -> [u64; 2] {
    [op::SYNC as u64, 0]
}
fn cfgi_ste(sid: u32) -> [u64; 2] {
    [op::CFGI_STE as u64 | (sid as u64) << 32, 1]
}

#[test]
fn idr0_cohacc_follows_features() {
    let q = Machine::new(Features::qemu_7_2());
    assert_eq!(q.smmu.read32(reg::IDR0), 0x0d40101a);
    assert_ne!(q.smmu.read32(reg::IDR0) & COHACC, 0, "QEMU is coherent");
    assert!(q.mem.is_coherent());
    let nc = Machine::with(
        Features {
            coherent: false,
            ..Features::qemu_7_2()
        },
        ModelOptions::default(),
        small_mem(),
    );
    assert_eq!(nc.smmu.read32(reg::IDR0), 0x0d40101a & !COHACC);
    assert!(!nc.mem.is_coherent());
}

#[test]
fn uncleaned_ste_is_fetched_stale() {
    let mut r = Rig::new(non_coherent());
    // Bypass STE written by the CPU, not cleaned: the SMMU fetches the
    // zeroed (V = 0) STE.
    r.set_ste(3, ste_cfg(0b100), false);
    r.cmds(&[cfgi_ste(3), sync()], true);
    let f =
        r.m.smmu
            .translate(3, None, 0x1000, Access::READ)
            .unwrap_err();
    assert_eq!(f.code(), Some(evt::C_BAD_STE));
    assert_eq!(r.m.smmu.ste_at(3).unwrap(), Ste::decode([0; 8]));
    // The record is in memory for the SMMU, not yet for the CPU.
    assert_eq!(r.m.smmu.pending_events()[0].code, evt::C_BAD_STE);
    assert_eq!(
        cpu_load(&r.evtq, 0),
        0,
        "event record seen without invalidate"
    );
    r.m.mem.invalidate(r.evtq.vaddr, 32);
    assert_eq!(cpu_load(&r.evtq, 0) & 0xFF, evt::C_BAD_STE as u64);
    // Cleaned (and invalidated in the SMMU): now it bypasses.
    r.set_ste(3, ste_cfg(0b100), true);
    r.cmds(&[cfgi_ste(3), sync()], true);
    assert_eq!(
        r.m.smmu.translate(3, None, 0x1000, Access::READ),
        Ok(0x1000)
    );
    assert!(r.m.smmu.violations().is_empty());
}

#[test]
fn uncleaned_command_reads_as_zero() {
    let mut r = Rig::new(non_coherent());
    r.cmds(&[sync()], false);
    // Opcode 0 is not a command: CERROR_ILL at the first entry.
    assert_eq!(r.m.smmu.read32(reg::CMDQ_CONS), 1 << reg::CONS_ERR_SHIFT);
    assert_eq!(r.m.smmu.counters().syncs, 0);
    let log = r.m.smmu.commands_since(0);
    assert_eq!(log[0].raw, [0, 0]);
    // Clean it and acknowledge the error: the entry is re-executed.
    r.m.mem.clean(r.cmdq.vaddr, 16);
    let gerror = r.m.smmu.read32(reg::GERROR);
    r.m.smmu.write32(reg::GERRORN, gerror);
    assert_eq!(r.m.smmu.counters().syncs, 1);
}

#[test]
fn msi_and_device_writes_need_invalidate() {
    let mut r = Rig::new(non_coherent());
    let mut mem = r.m.mem.clone();
    let flag = mem.alloc(64, 64).unwrap();
    let w0 = op::SYNC as u64 | 0xC0FFEE << 32;
    r.cmds(&[[w0, flag.paddr]], true);
    assert_eq!(r.m.smmu.counters().sync_msis, 1);
    assert_eq!(mem.read_u32(flag.paddr), Some(0xC0FFEE));
    assert_eq!(cpu_load(&flag, 0), 0, "MSI seen through a stale line");
    mem.invalidate(flag.vaddr, 4);
    assert_eq!(cpu_load(&flag, 0), 0xC0FFEE);

    // Device DMA (bypass stream) reads and writes the PoC copy too.
    r.set_ste(1, ste_cfg(0b100), true);
    r.cmds(&[cfgi_ste(1), sync()], true);
    let buf = mem.alloc(4096, 4096).unwrap();
    cpu_store(&buf, 0, &[0x1111]);
    let mut got = [0u8; 8];
    r.m.smmu.dma_read(1, None, buf.paddr, &mut got).unwrap();
    assert_eq!(u64::from_le_bytes(got), 0, "device read an uncleaned line");
    mem.clean(buf.vaddr, 8);
    r.m.smmu.dma_read(1, None, buf.paddr, &mut got).unwrap();
    assert_eq!(u64::from_le_bytes(got), 0x1111);
    r.m.smmu
        .dma_write(1, None, buf.paddr + 0x100, &0x2222u64.to_le_bytes())
        .unwrap();
    assert_eq!(cpu_load(&buf, 0x100), 0);
    assert_eq!(mem.cpu_read_u64(buf.paddr + 0x100), Some(0));
    mem.invalidate(buf.vaddr, 4096);
    assert_eq!(cpu_load(&buf, 0x100), 0x2222);
    assert_eq!(cpu_load(&buf, 0), 0x1111);
}

#[test]
fn lines_round_outward_and_write_back_whole() {
    let m = Machine::with(non_coherent(), ModelOptions::default(), small_mem());
    let mut mem = m.mem.clone();
    let b = mem.alloc(256, 64).unwrap();
    cpu_store(&b, 0, &[1]);
    cpu_store(&b, 64, &[2]);
    cpu_store(&b, 128, &[3]);
    // One byte at offset 70: line [64, 128) only.
    // SAFETY: inside `b`.
    mem.clean(unsafe { b.vaddr.add(70) }, 1);
    assert_eq!(mem.read_u64(b.paddr), Some(0));
    assert_eq!(mem.read_u64(b.paddr + 64), Some(2));
    assert_eq!(mem.read_u64(b.paddr + 128), Some(0));
    // Bytes 60..68 straddle lines 0 and 1: both.
    // SAFETY: inside `b`.
    mem.clean(unsafe { b.vaddr.add(60) }, 8);
    assert_eq!(mem.read_u64(b.paddr), Some(1));
    let st = mem.cache_stats();
    assert_eq!((st.cleans, st.clean_bytes), (2, 9));
    assert_eq!(st.lines_written_back, 2, "a clean line is not written back");

    // The device writes word 1 of line 2 while the CPU has word 0 dirty:
    // the write-back of the whole line loses the device's word.
    mem.write_u64(b.paddr + 136, 0xDE).unwrap();
    // SAFETY: inside `b`.
    mem.invalidate(unsafe { b.vaddr.add(128) }, 64);
    assert_eq!(
        mem.read_u64(b.paddr + 128),
        Some(3),
        "dirty data written back"
    );
    assert_eq!(mem.read_u64(b.paddr + 136), Some(0), "device write lost");
    assert_eq!(cpu_load(&b, 128), 3);
    let st = mem.cache_stats();
    assert_eq!(st.lost_poc_writes, 1);
    assert_eq!(mem.cache_ops(), (2, 1));

    // Invalidate of a clean line just reloads it.
    mem.write_u64(b.paddr + 192, 0xAB).unwrap();
    // SAFETY: inside `b`.
    mem.invalidate(unsafe { b.vaddr.add(192) }, 8);
    assert_eq!(cpu_load(&b, 192), 0xAB);
    assert_eq!(mem.cache_stats().lost_poc_writes, 1);
}

#[test]
fn alloc_and_free_are_clean_in_both_views() {
    let m = Machine::with(non_coherent(), ModelOptions::default(), small_mem());
    let mut mem = m.mem.clone();
    let b = mem.alloc(4096, 4096).unwrap();
    cpu_store(&b, 0, &[7]);
    mem.write_u64(b.paddr + 8, 9).unwrap();
    let (paddr, vaddr) = (b.paddr, b.vaddr);
    mem.free(b);
    assert_eq!(mem.read_u64(paddr), Some(u64::MAX), "poisoned at the PoC");
    assert_eq!(mem.cpu_read_u64(paddr), Some(u64::MAX), "and for the CPU");
    let c = mem.alloc(4096, 4096).unwrap();
    assert_eq!((c.paddr, c.vaddr), (paddr, vaddr));
    for off in [0, 8] {
        assert_eq!(mem.read_u64(c.paddr + off), Some(0));
        assert_eq!(cpu_load(&c, off as usize), 0);
    }
    // Nothing dirty: a clean writes nothing back.
    mem.clean(c.vaddr, 4096);
    assert_eq!(mem.cache_stats().lines_written_back, 0);
}

#[test]
fn switching_coherency() {
    let mem = PhysMem::new(small_mem());
    let mut a = mem.clone();
    let b = a.alloc(128, 64).unwrap();
    cpu_store(&b, 0, &[5]);
    mem.set_coherent(false);
    assert_eq!(mem.read_u64(b.paddr), Some(5), "snapshot taken");
    cpu_store(&b, 0, &[6]);
    mem.write_u64(b.paddr + 64, 8).unwrap();
    assert_eq!(mem.read_u64(b.paddr), Some(5));
    mem.set_coherent(true);
    assert_eq!(mem.read_u64(b.paddr), Some(6), "dirty line written back");
    assert_eq!(cpu_load(&b, 64), 8, "PoC write now visible");
    cpu_store(&b, 0, &[7]);
    assert_eq!(mem.read_u64(b.paddr), Some(7));
}

#[test]
fn coherent_mode_is_unchanged() {
    let m = Machine::with(Features::qemu_7_2(), ModelOptions::default(), small_mem());
    let mut mem = m.mem.clone();
    let b = mem.alloc(64, 64).unwrap();
    cpu_store(&b, 0, &[0x77]);
    assert_eq!(mem.read_u64(b.paddr), Some(0x77), "no clean needed");
    mem.write_u64(b.paddr + 8, 0x88).unwrap();
    assert_eq!(cpu_load(&b, 8), 0x88, "no invalidate needed");
    mem.clean(b.vaddr, 64);
    mem.invalidate(b.vaddr, 64);
    mem.invalidate(b.vaddr, 0);
    assert_eq!(mem.cache_ops(), (1, 2), "counted");
    let st = mem.cache_stats();
    assert_eq!((st.clean_bytes, st.invalidate_bytes), (64, 64));
    assert_eq!(st.lines_written_back, 0);
    assert_eq!(mem.read_u64(b.paddr), Some(0x77));
}

#[test]
#[should_panic(expected = "not inside the arena")]
fn maintenance_outside_the_arena_panics() {
    let mem = PhysMem::new(small_mem());
    let x = [0u8; 64];
    mem.clean(x.as_ptr(), 64);
}
