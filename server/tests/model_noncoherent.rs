//! A non-coherent SMMU (SMMU_IDR0.COHACC = 0) on the software model, which
//! then reads and writes memory at the point of coherency only: what the
//! CPU writes through its (cached) view reaches the SMMU when cleaned, what
//! the SMMU writes reaches the CPU when invalidated (issue 13, item 4).
//!
//! The core must clean every command, STE, CD, stream- and CD-table
//! descriptor and page-table entry it writes before the SMMU is told to
//! look, invalidate every event record before reading it, and program
//! non-cacheable, outer-shareable attributes (CR1, STE.S1C*, CD.*RGN0/SH0,
//! leaves). The second half of this file shows each kind of maintenance is
//! needed: with it left out, the model serves stale memory and the test
//! sees it.
#![cfg(not(loom))]

use iommu_server::hal::{CacheMaintenance, DmaAllocator, DmaBlock, Mmio, OutOfMemory};
use iommu_server::{regs, Config, EventKind, Perms, Smmu};
use smmu_model::{Access, Features, Machine, MemConfig, ModelOptions, PhysMem};

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

const IOVA: u64 = 0x10_0000;

fn machine() -> Machine {
    let f = Features {
        coherent: false,
        ..Features::qemu_7_2()
    };
    let mem = MemConfig {
        phys_base: 0x4000_0000,
        size: 8 << 20,
        poison_on_free: Some(0xFF),
    };
    Machine::with(f, ModelOptions::default(), mem)
}

fn config() -> Config {
    Config {
        poll_timeout_us: 20,
        // Two-level stream table: level-2 tables and their descriptors are
        // written (and cleaned) at attach time.
        linear_strtab: false,
        ..Config::default()
    }
}

#[test]
fn a_non_coherent_smmu_sees_every_structure_the_core_writes() {
    let m = machine();
    assert!(!m.mem.is_coherent());
    let s = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, config()).expect("boots");
    assert!(!s.features().coherent);
    // CR1: tables and queues non-cacheable (0), outer shareable (2).
    assert_eq!(m.smmu.read32(regs::CR1), 0b10_00_00_10_00_00);
    let (d1, d2) = (s.alloc_domain().unwrap(), s.alloc_domain().unwrap());
    let (p1, p2) = (
        m.mem.alloc_buffer(0x1000, 0x1000).unwrap(),
        m.mem.alloc_buffer(0x20_0000, 0x20_0000).unwrap(),
    );
    s.map(d1, IOVA, p1, 0x1000, Perms::RW).unwrap();
    // A 2 MiB block, then a 4 KiB hole split out of it (new leaf table).
    s.map(d2, 0x4000_0000, p2, 0x20_0000, Perms::RW).unwrap();
    s.unmap(d2, 0x4000_0000, 0x1000).unwrap();
    // A second page in the existing leaf table (written as a run, in
    // another cache line than the first), and three more from its middle.
    let p3 = m.mem.alloc_buffer(0x4000, 0x1000).unwrap();
    s.map(d1, IOVA + 0x8000, p3, 0x1000, Perms::RW).unwrap();
    s.map(d1, IOVA + 0x4_0000, p3 + 0x1000, 0x3000, Perms::RW)
        .unwrap();
    // Leaves map memory non-cacheable (AttrIndx 0), outer shareable (SH 2).
    let leaf = s.with_page_table(d1, |pt| pt.walk(IOVA)).unwrap();
    let attrs = (leaf.descriptor >> 2 & 7, leaf.descriptor >> 8 & 3);
    assert_eq!((leaf.level, attrs), (3, (0, 2)));
    s.attach(300, 0, d1).unwrap();
    for (iova, pa) in [(IOVA + 0x8000, p3), (IOVA + 0x4_2000, p3 + 0x3000)] {
        assert_eq!(m.smmu.translate(300, None, iova, Access::READ), Ok(pa));
    }
    let ste = m.smmu.ste_at(300).expect("the STE the SMMU fetches");
    let cd = m.smmu.cd_at(300, None).expect("the CD the SMMU fetches");
    assert!(cd.valid);
    assert_eq!((cd.ir0, cd.or0, cd.sh0), (0, 0, 2), "CD walk attributes");
    assert_eq!(ste.raw[1] >> 2 & 0x3f, 0b10_00_00, "STE S1CIR/S1COR/S1CSH");
    m.smmu.dma_write(300, None, IOVA + 8, b"cleaned").unwrap();
    let mut got = [0u8; 7];
    m.mem.read(p1 + 8, &mut got).unwrap();
    assert_eq!(&got, b"cleaned");
    // The move is a new CD table and an STE switch: both cleaned.
    s.attach(300, 0, d2).unwrap();
    assert_eq!(
        m.smmu.translate(300, None, 0x4000_1000, Access::READ),
        Ok(p2 + 0x1000)
    );
    assert!(m
        .smmu
        .translate(300, None, 0x4000_0000, Access::READ)
        .is_err());
    // The split's new leaf table, far from the entry the unmap cleared.
    assert_eq!(
        m.smmu.translate(300, None, 0x4010_0000, Access::READ),
        Ok(p2 + 0x10_0000)
    );
    // An unmap's cleared leaf reaches memory before its TLBI: nothing
    // walks to the old page again.
    s.unmap(d2, 0x4000_1000, 0x1000).unwrap();
    assert!(m
        .smmu
        .translate(300, None, 0x4000_1000, Access::READ)
        .is_err());
    // The SMMU writes the fault record to memory; the core invalidates it
    // before reading.
    let _ = s.drain_events(|_| {});
    assert!(m.smmu.dma_write(300, None, 0x7000_0000, &[1]).is_err());
    let mut faults = Vec::new();
    s.drain_events(|e| faults.push(e));
    assert!(
        matches!(faults.as_slice(), [e] if matches!(e.kind, EventKind::Translation(f) if f.addr == 0x7000_0000) && e.sid == 300),
        "{faults:?}"
    );
    s.detach(300, 0).unwrap();
    assert!(m
        .smmu
        .translate(300, None, 0x4000_2000, Access::READ)
        .is_err());
    s.free_domain(d1).unwrap();
    s.free_domain(d2).unwrap();
    assert!(m.smmu.violations().is_empty(), "{:?}", m.smmu.violations());
    let st = m.mem.cache_stats();
    assert!(st.cleans > 0 && st.invalidates > 0, "{st:?}");
}

#[test]
fn a_coherent_smmu_gets_no_cache_maintenance() {
    let m = Machine::new(Features::qemu_7_2());
    let s = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, config()).unwrap();
    let d = s.alloc_domain().unwrap();
    let p = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
    s.map(d, IOVA, p, 0x1000, Perms::RW).unwrap();
    s.attach(8, 0, d).unwrap();
    s.unmap(d, IOVA, 0x1000).unwrap();
    assert_eq!(m.mem.cache_ops(), (0, 0));
    let cd = m.smmu.cd_at(8, None).unwrap();
    assert_eq!((cd.ir0, cd.or0, cd.sh0), (1, 1, 3));
    // Leaves: write-back memory (AttrIndx 1), inner shareable (SH 3).
    let leaf = s.with_page_table(d, |pt| pt.walk(IOVA + 0x1000)).unwrap();
    assert!(!leaf.mapped());
    s.map(d, IOVA + 0x1000, p, 0x1000, Perms::RW).unwrap();
    let leaf = s.with_page_table(d, |pt| pt.walk(IOVA + 0x1000)).unwrap();
    let attrs = (leaf.descriptor >> 2 & 7, leaf.descriptor >> 8 & 3);
    assert_eq!((leaf.level, attrs), (3, (1, 3)));
}

// ---------------------------------------------------------------- negative

/// Which cache maintenance a [`Forgetful`] allocator drops.
#[derive(Clone, Copy, Debug)]
enum Forget {
    /// Cleans of a command-queue entry (16 bytes).
    Commands,
    /// Cleans of an STE or CD (64 bytes).
    Entries,
    /// Cleans of single page-table descriptors (8 bytes: each table link
    /// and each leaf written alone).
    Descriptors,
    /// Every invalidate (event records).
    Invalidates,
}

/// The model's memory, with one kind of maintenance silently dropped.
#[derive(Clone)]
struct Forgetful {
    mem: PhysMem,
    forget: Forget,
}

impl CacheMaintenance for Forgetful {
    fn clean(&self, vaddr: *const u8, len: usize) {
        let dropped = match self.forget {
            Forget::Commands => len == 16,
            Forget::Entries => len == 64,
            Forget::Descriptors => len == 8,
            Forget::Invalidates => false,
        };
        if !dropped {
            self.mem.clean(vaddr, len)
        }
    }
    fn invalidate(&self, vaddr: *const u8, len: usize) {
        if !matches!(self.forget, Forget::Invalidates) {
            self.mem.invalidate(vaddr, len)
        }
    }
}

impl DmaAllocator for Forgetful {
    type Cache = Forgetful;
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory> {
        self.mem.alloc(size, align)
    }
    fn free(&mut self, block: DmaBlock) {
        self.mem.free(block)
    }
    fn cache(&self) -> Option<Forgetful> {
        Some(self.clone())
    }
}

/// Boots, maps a page, attaches a stream and DMAs to it, then faults once;
/// returns what went wrong, if anything.
fn run_with(forget: Forget) -> Result<(), String> {
    let m = machine();
    let alloc = Forgetful {
        mem: m.mem.clone(),
        forget,
    };
    let s =
        Smmu::new(m.smmu.clone(), alloc, NoDelay, config()).map_err(|e| format!("boot: {e:?}"))?;
    let d = s.alloc_domain().map_err(|e| format!("{e:?}"))?;
    let p = m.mem.alloc_buffer(0x1000, 0x1000).unwrap();
    s.map(d, IOVA, p, 0x1000, Perms::RW)
        .map_err(|e| format!("map: {e:?}"))?;
    s.attach(300, 0, d).map_err(|e| format!("attach: {e:?}"))?;
    m.smmu
        .dma_write(300, None, IOVA, &[0x5a])
        .map_err(|e| format!("DMA: {e:?}"))?;
    let _ = m.smmu.dma_write(300, None, 0x7000_0000, &[1]);
    let mut faults = Vec::new();
    s.drain_events(|e| faults.push(e));
    match faults.as_slice() {
        [e] if matches!(e.kind, EventKind::Translation(f) if f.addr == 0x7000_0000) => Ok(()),
        other => Err(format!("events read: {other:?}")),
    }
}

#[test]
fn without_each_kind_of_maintenance_the_smmu_reads_stale_memory() {
    for forget in [
        Forget::Commands,
        Forget::Entries,
        Forget::Descriptors,
        Forget::Invalidates,
    ] {
        let r = run_with(forget);
        let err = r.expect_err(&format!("{forget:?} dropped, yet everything worked"));
        eprintln!("{forget:?} dropped: {err}");
        let expected = match forget {
            Forget::Commands => "boot:",
            Forget::Entries | Forget::Descriptors => "DMA:",
            Forget::Invalidates => "events read:",
        };
        assert!(err.starts_with(expected), "{forget:?} dropped: {err}");
    }
}

#[test]
fn an_allocator_that_cannot_maintain_caches_is_refused_on_a_non_coherent_smmu() {
    struct CoherentOnly(PhysMem);
    impl DmaAllocator for CoherentOnly {
        type Cache = iommu_server::hal::NoCache;
        fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory> {
            self.0.alloc(size, align)
        }
        fn free(&mut self, block: DmaBlock) {
            self.0.free(block)
        }
        fn cache(&self) -> Option<Self::Cache> {
            None
        }
    }
    let m = machine();
    let r = Smmu::new(
        m.smmu.clone(),
        CoherentOnly(m.mem.clone()),
        NoDelay,
        config(),
    );
    assert!(
        matches!(
            r,
            Err(iommu_server::Error::Hardware(
                iommu_server::HardwareError::MissingFeature(_)
            ))
        ),
        "{:?}",
        r.err()
    );
}
