//! Self-tests of the model: tables written byte by byte from the
//! specification's layouts (not through any encoder of the server), then
//! translated, invalidated, faulted.

use iommu_server::hal::{DmaAllocator, Mmio};
use smmu_model::spec::{evt, op, reg};
use smmu_model::*;

const CMDQ_LOG2: u32 = 4; // 16 commands
const EVTQ_LOG2: u32 = 2; // 4 records

/// A hand-driven SMMU: queues and a stream table programmed by hand.
struct Rig {
    m: Machine,
    cmdq: u64,
    evtq: u64,
    strtab: u64,
}

/// STE word 0 for stage-1 translate (5.2): V, Config = 0b101, S1Fmt,
/// S1ContextPtr, S1CDMax.
fn ste_s1(cd_ptr: u64, s1fmt: u64, s1cdmax: u64, s1dss: u64) -> [u64; 8] {
    let mut s = [0u64; 8];
    s[0] = 1 | 0b101 << 1 | s1fmt << 4 | cd_ptr | s1cdmax << 59;
    s[1] = s1dss;
    s
}
fn ste_cfg(config: u64) -> [u64; 8] {
    let mut s = [0u64; 8];
    s[0] = 1 | config << 1;
    s
}

/// CD (5.4): 4K granule, T0SZ 16 (48-bit VA), EPD1, V, IPS 44 bits, AA64,
/// R (record), A (abort), ASID; TTB0; MAIR.
fn cd(ttb0: u64, asid: u16, record: bool) -> [u64; 8] {
    let mut c = [0u64; 8];
    c[0] = 16 | 1 << 30 | 1 << 31 | 4 << 32 | 1 << 41 | (record as u64) << 45 | 1 << 46;
    c[0] |= (asid as u64) << 48;
    c[1] = ttb0;
    c[3] = 0xff;
    c
}

/// Page/block descriptor attributes: AF, inner shareable, AttrIndx 0,
/// AP[2:1] = 01 (read/write at any level), nG.
const RW: u64 = 1 << 10 | 3 << 8 | 1 << 6 | 1 << 11;
const RO: u64 = 1 << 10 | 3 << 8 | 3 << 6 | 1 << 11;

impl Rig {
    fn new(f: Features) -> Rig {
        Self::with(f, ModelOptions::default())
    }
    fn with(f: Features, o: ModelOptions) -> Rig {
        let m = Machine::with(f, o, MemConfig::default());
        let mut mem = m.mem.clone();
        let cmdq = mem.alloc(16 << CMDQ_LOG2, 16 << CMDQ_LOG2).unwrap().paddr;
        let evtq = mem.alloc(32 << EVTQ_LOG2, 32 << EVTQ_LOG2).unwrap().paddr;
        let strtab = mem.alloc(64 * 256, 64 * 256).unwrap().paddr;
        let s = &m.smmu;
        s.write64(reg::CMDQ_BASE, cmdq | CMDQ_LOG2 as u64);
        s.write32(reg::CMDQ_PROD, 0);
        s.write32(reg::CMDQ_CONS, 0);
        s.write64(reg::EVENTQ_BASE, evtq | EVTQ_LOG2 as u64);
        s.write32(reg::EVENTQ_PROD, 0);
        s.write32(reg::EVENTQ_CONS, 0);
        s.write64(reg::STRTAB_BASE, strtab);
        s.write32(reg::STRTAB_BASE_CFG, 8); // linear, 256 STEs
        s.write32(reg::IRQ_CTRL, 7);
        s.write32(reg::CR0, reg::CR0_CMDQEN | reg::CR0_EVENTQEN);
        s.write32(
            reg::CR0,
            reg::CR0_CMDQEN | reg::CR0_EVENTQEN | reg::CR0_SMMUEN,
        );
        assert_eq!(s.read32(reg::CR0ACK), 0xD);
        Rig {
            m,
            cmdq,
            evtq,
            strtab,
        }
    }
    fn smmu(&self) -> &Smmu {
        &self.m.smmu
    }
    fn page(&self) -> u64 {
        self.m.mem.alloc_buffer(4096, 4096).unwrap()
    }
    /// Queues raw commands and rings the doorbell once.
    fn cmds(&self, cmds: &[[u64; 2]]) {
        let s = self.smmu();
        let mut prod = s.read32(reg::CMDQ_PROD);
        for c in cmds {
            let idx = prod & ((1 << CMDQ_LOG2) - 1);
            self.m
                .mem
                .write_words(self.cmdq + 16 * idx as u64, c)
                .unwrap();
            prod = (prod + 1) & ((2 << CMDQ_LOG2) - 1);
        }
        s.write32(reg::CMDQ_PROD, prod);
    }
    fn sync(&self) -> [u64; 2] {
        [op::SYNC as u64, 0]
    }
    fn cfgi_ste(&self, sid: u32) -> [u64; 2] {
        [op::CFGI_STE as u64 | (sid as u64) << 32, 1]
    }
    fn set_ste(&self, sid: u32, ste: [u64; 8]) {
        self.m
            .mem
            .write_words(self.strtab + 64 * sid as u64, &ste)
            .unwrap();
    }
    fn new_cd(&self, ttb0: u64, asid: u16, record: bool) -> u64 {
        let p = self.m.mem.alloc_buffer(64, 64).unwrap();
        self.m.mem.write_words(p, &cd(ttb0, asid, record)).unwrap();
        p
    }
    /// Maps `va` -> `pa` at `leaf_level` (3: 4K page, 2: 2M block, 1: 1G
    /// block) in the 4-level table rooted at `root`, creating tables.
    fn map(&self, root: u64, va: u64, pa: u64, leaf_level: u32, attrs: u64) {
        let mem = &self.m.mem;
        let mut table = root;
        for level in 0..=leaf_level {
            let shift = 12 + 9 * (3 - level);
            let slot = table + 8 * ((va >> shift) & 511);
            if level == leaf_level {
                let kind = if level == 3 { 3 } else { 1 };
                mem.write_u64(slot, pa | attrs | kind).unwrap();
                return;
            }
            let d = mem.read_u64(slot).unwrap();
            table = if d & 3 == 3 {
                d & 0x0000_FFFF_FFFF_F000
            } else {
                let t = self.page();
                mem.write_u64(slot, t | 3).unwrap();
                t
            };
        }
    }
    /// The descriptor slot for `va` at `level` (tables must exist).
    fn slot(&self, root: u64, va: u64, level: u32) -> u64 {
        let mut table = root;
        for l in 0..level {
            let d = self
                .m
                .mem
                .read_u64(table + 8 * ((va >> (12 + 9 * (3 - l))) & 511))
                .unwrap();
            table = d & 0x0000_FFFF_FFFF_F000;
        }
        table + 8 * ((va >> (12 + 9 * (3 - level))) & 511)
    }
    /// A stream `sid` translating through a fresh table with `asid`.
    fn s1_stream(&self, sid: u32, asid: u16) -> u64 {
        let root = self.page();
        let cdp = self.new_cd(root, asid, true);
        self.set_ste(sid, ste_s1(cdp, 0, 0, 0));
        self.cmds(&[self.cfgi_ste(sid), self.sync()]);
        root
    }
    fn eventq_prod(&self) -> u32 {
        self.smmu().read32(reg::EVENTQ_PROD)
    }
    fn event_at(&self, idx: u32) -> Event {
        Event::decode(
            self.m
                .mem
                .read_words::<4>(self.evtq + 32 * idx as u64)
                .unwrap(),
        )
    }
}

fn tlbi_va(asid: u16, va: u64, leaf: bool) -> [u64; 2] {
    [
        op::TLBI_NH_VA as u64 | (asid as u64) << 48,
        va | leaf as u64,
    ]
}
fn tlbi_range(asid: u16, va: u64, num: u64, scale: u64, tg: u64, ttl: u64) -> [u64; 2] {
    [
        op::TLBI_NH_VA as u64 | (asid as u64) << 48 | num << 12 | scale << 20,
        va | 1 | ttl << 8 | tg << 10,
    ]
}

#[test]
fn id_registers_match_qemu_7_2() {
    let m = Machine::new(Features::qemu_7_2());
    assert_eq!(m.smmu.read32(reg::IDR0), 0x0d40101a);
    assert_eq!(m.smmu.read32(reg::IDR1), 0x02730010);
    assert_eq!(m.smmu.read32(reg::IDR3), 0x1404);
    assert_eq!(m.smmu.read32(reg::IDR5), 0x74);
    let f = Features {
        ril: false,
        two_level_strtab: false,
        asid16: false,
        sidsize: 8,
        ..Features::with_substreams(5)
    };
    let m = Machine::new(f);
    assert_eq!(
        m.smmu.read32(reg::IDR0) & (1 << 12 | 3 << 27 | 1 << 19),
        1 << 19
    );
    assert_eq!(m.smmu.read32(reg::IDR1) & 0x7FF, 5 << 6 | 8);
    assert_eq!(m.smmu.read32(reg::IDR3) & (1 << 10), 0);
}

#[test]
fn hand_built_tables_translate() {
    let r = Rig::new(Features::qemu_7_2());
    let root = r.s1_stream(3, 7);
    let (p1, p2) = (r.page(), r.page());
    r.map(root, 0x1000, p1, 3, RW);
    r.map(root, 0x7fff_f000, p2, 3, RO);
    // A 2 MiB block and a 1 GiB block (physical addresses need not be RAM
    // for translation).
    r.map(
        root,
        0x4000_0000_0000 & 0x0000_7FFF_FFE0_0000,
        0x9060_0000,
        2,
        RW,
    );
    r.map(root, 0x80_0000_0000, 0x4000_0000, 1, RW);
    let s = r.smmu();
    assert_eq!(s.translate(3, None, 0x1234, Access::READ), Ok(p1 + 0x234));
    assert_eq!(
        s.translate(3, None, 0x7fff_ffff, Access::READ),
        Ok(p2 + 0xfff)
    );
    let t = s
        .translate_ex(3, None, 0x4000_0012_3456, Access::WRITE)
        .unwrap();
    assert_eq!((t.paddr, t.page_size), (0x9072_3456, 2 << 20));
    let t = s
        .translate_ex(3, None, 0x80_1234_5678, Access::WRITE)
        .unwrap();
    assert_eq!((t.paddr, t.page_size), (0x5234_5678, 1 << 30));
    // Second access is a TLB hit.
    assert!(
        s.translate_ex(3, None, 0x1000, Access::READ)
            .unwrap()
            .tlb_hit
    );

    // Unmapped: F_TRANSLATION, recorded (CD.R = 1) in the event queue.
    let f = s.translate(3, None, 0x5000, Access::WRITE).unwrap_err();
    assert_eq!(f.code(), Some(evt::F_TRANSLATION));
    assert_eq!(r.eventq_prod(), 1);
    let e = r.event_at(0);
    assert_eq!(
        (e.code, e.sid, e.ssid, e.addr, e.rnw),
        (evt::F_TRANSLATION, 3, None, 0x5000, false)
    );
    // Write to a read-only page: F_PERMISSION.
    let f = s
        .translate(3, None, 0x7fff_f000, Access::WRITE)
        .unwrap_err();
    assert_eq!(f.code(), Some(evt::F_PERMISSION));
    // Privileged-only page read unprivileged; exec of a UXN page.
    r.map(root, 0x3000, p1, 3, 1 << 10 | 1 << 11); // AP 00: EL1 only
    r.map(root, 0x4000, p1, 3, RW | 1 << 54);
    assert_eq!(
        s.translate(3, None, 0x3000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::F_PERMISSION)
    );
    assert_eq!(
        s.translate(3, None, 0x3000, Access::READ.privileged()),
        Ok(p1)
    );
    assert_eq!(
        s.translate(3, None, 0x4000, Access::EXEC)
            .unwrap_err()
            .code(),
        Some(evt::F_PERMISSION)
    );
    // AF = 0: F_ACCESS.
    r.map(root, 0x6000, p1, 3, RW & !(1 << 10));
    assert_eq!(
        s.translate(3, None, 0x6000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::F_ACCESS)
    );
    // Output address beyond the 44-bit OAS: F_ADDR_SIZE.
    r.map(root, 0x8000, 1 << 45, 3, RW);
    assert_eq!(
        s.translate(3, None, 0x8000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::F_ADDR_SIZE)
    );
    // VA above the 48-bit TTB0 range: translation fault (EPD1 = 1).
    assert_eq!(
        s.translate(3, None, 0xffff_8000_0000_0000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::F_TRANSLATION)
    );
    assert!(s.violations().is_empty());
}

#[test]
fn faults_not_recorded_without_cd_r() {
    let r = Rig::new(Features::qemu_7_2());
    let root = r.page();
    let cdp = r.new_cd(root, 1, false);
    r.set_ste(5, ste_s1(cdp, 0, 0, 0));
    let f = r
        .smmu()
        .translate(5, None, 0x1000, Access::READ)
        .unwrap_err();
    assert!(matches!(
        f,
        Fault::Event {
            recorded: false,
            ..
        }
    ));
    assert_eq!(r.eventq_prod(), 0);
    // Configuration errors are recorded regardless: sid 9 has V = 0.
    let f = r.smmu().translate(9, None, 0, Access::READ).unwrap_err();
    assert!(
        matches!(f, Fault::Event { recorded: true, event, .. } if event.code == evt::C_BAD_STE)
    );
    // StreamID beyond the table: C_BAD_STREAMID.
    assert_eq!(
        r.smmu()
            .translate(300, None, 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_STREAMID)
    );
    // A SubstreamID on a stream without substreams.
    assert_eq!(
        r.smmu()
            .translate(5, Some(1), 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_SUBSTREAMID)
    );
}

#[test]
fn abort_bypass_and_ste_cache() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    r.set_ste(1, ste_cfg(0b100));
    r.set_ste(2, ste_cfg(0b000));
    assert_eq!(
        s.translate(1, None, 0x8000_1234, Access::WRITE),
        Ok(0x8000_1234)
    );
    assert_eq!(
        s.translate(2, None, 0x1234, Access::WRITE),
        Err(Fault::Abort)
    );
    assert_eq!(r.eventq_prod(), 0, "abort records no event");
    // Change stream 1 to abort without CFGI: the cached bypass STE is used.
    r.set_ste(1, ste_cfg(0b000));
    assert!(s.translate(1, None, 0x10, Access::READ).is_ok());
    // CFGI for another stream does not help; the right one does.
    r.cmds(&[r.cfgi_ste(2), r.sync()]);
    assert!(s.translate(1, None, 0x10, Access::READ).is_ok());
    r.cmds(&[r.cfgi_ste(1), r.sync()]);
    assert_eq!(s.translate(1, None, 0x10, Access::READ), Err(Fault::Abort));
    // Negative caching: an invalid STE is cached until CFGI.
    assert_eq!(
        s.translate(4, None, 0, Access::READ).unwrap_err().code(),
        Some(evt::C_BAD_STE)
    );
    r.set_ste(4, ste_cfg(0b100));
    assert_eq!(
        s.translate(4, None, 0, Access::READ).unwrap_err().code(),
        Some(evt::C_BAD_STE)
    );
    // CFGI_STE_RANGE covering 0..=7 picks it up.
    r.cmds(&[[op::CFGI_STE_RANGE as u64 | 5 << 32, 2], r.sync()]);
    assert!(s.translate(4, None, 0, Access::READ).is_ok());
    // Stage-2 config and S1STALLD are C_BAD_STE on this SMMU.
    r.set_ste(6, ste_cfg(0b110));
    assert_eq!(
        s.translate(6, None, 0, Access::READ).unwrap_err().code(),
        Some(evt::C_BAD_STE)
    );
    let mut st = ste_s1(r.new_cd(r.page(), 1, true), 0, 0, 0);
    st[1] |= 1 << 27;
    r.set_ste(7, st);
    assert_eq!(
        s.translate(7, None, 0, Access::READ).unwrap_err().code(),
        Some(evt::C_BAD_STE)
    );
    let c = s.counters();
    assert_eq!((c.cfgi, c.syncs), (3, 3));
}

#[test]
fn stale_tlb_until_tlbi() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    let root = r.s1_stream(1, 5);
    let (a, b) = (r.page(), r.page());
    r.map(root, 0x10_0000, a, 3, RW);
    assert_eq!(s.translate(1, None, 0x10_0000, Access::READ), Ok(a));
    // Remap to b without TLBI: the stale translation is still used.
    r.map(root, 0x10_0000, b, 3, RW);
    assert_eq!(s.translate(1, None, 0x10_0000, Access::READ), Ok(a));
    assert_eq!(
        s.translate_uncached(1, None, 0x10_0000, Access::READ)
            .unwrap()
            .paddr,
        b
    );
    // TLBI for the wrong ASID or the wrong VA: still stale.
    r.cmds(&[
        tlbi_va(6, 0x10_0000, true),
        tlbi_va(5, 0x20_0000, true),
        r.sync(),
    ]);
    assert_eq!(s.translate(1, None, 0x10_0000, Access::READ), Ok(a));
    r.cmds(&[tlbi_va(5, 0x10_0000, true), r.sync()]);
    assert_eq!(s.translate(1, None, 0x10_0000, Access::READ), Ok(b));
    // Unmap + TLBI_NH_ASID.
    r.m.mem.write_u64(r.slot(root, 0x10_0000, 3), 0).unwrap();
    assert_eq!(s.translate(1, None, 0x10_0000, Access::READ), Ok(b));
    r.cmds(&[[op::TLBI_NH_ASID as u64 | 5 << 48, 0], r.sync()]);
    assert_eq!(
        s.translate(1, None, 0x10_0000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::F_TRANSLATION)
    );
    let c = s.counters();
    assert_eq!(c.tlbi, 4);
    assert_eq!(c.opcode(op::TLBI_NH_VA), 3);
}

#[test]
fn range_tlbi_decoding_and_hints() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    let root = r.s1_stream(1, 9);
    let pages: Vec<u64> = (0..8).map(|_| r.page()).collect();
    let base = 0x40_0000;
    for (i, p) in pages.iter().enumerate() {
        r.map(root, base + 0x1000 * i as u64, *p, 3, RW);
        assert!(s
            .translate(1, None, base + 0x1000 * i as u64, Access::READ)
            .is_ok());
    }
    // Clear all eight PTEs.
    for i in 0..8 {
        r.m.mem
            .write_u64(r.slot(root, base + 0x1000 * i, 3), 0)
            .unwrap();
    }
    // NUM = 2, SCALE = 1, TG = 4K: (2+1) * 2^1 = 6 pages from base.
    r.cmds(&[tlbi_range(9, base, 2, 1, 1, 3), r.sync()]);
    for i in 0..8u64 {
        let res = s.translate(1, None, base + 0x1000 * i, Access::READ);
        if i < 6 {
            assert!(res.is_err(), "page {i} should be invalidated");
        } else {
            assert!(res.is_ok(), "page {i} is outside the range");
        }
    }
    assert_eq!(s.counters().range_tlbi, 1);
    // A wrong TTL hint (level 2 for level-3 pages) invalidates nothing.
    r.cmds(&[tlbi_range(9, base, 31, 0, 1, 2), r.sync()]);
    assert!(s.translate(1, None, base + 0x6000, Access::READ).is_ok());
    // TTL 0 (no hint) does.
    r.cmds(&[tlbi_range(9, base, 31, 0, 1, 0), r.sync()]);
    assert!(s.translate(1, None, base + 0x6000, Access::READ).is_err());
    // Without RIL the range fields are ignored: one page only.
    let r = Rig::new(Features {
        ril: false,
        ..Features::qemu_7_2()
    });
    let s = r.smmu();
    let root = r.s1_stream(1, 9);
    for i in 0..2u64 {
        r.map(root, base + 0x1000 * i, r.page(), 3, RW);
        assert!(s
            .translate(1, None, base + 0x1000 * i, Access::READ)
            .is_ok());
        r.m.mem
            .write_u64(r.slot(root, base + 0x1000 * i, 3), 0)
            .unwrap();
    }
    r.cmds(&[tlbi_range(9, base, 1, 0, 1, 0), r.sync()]);
    assert!(s.translate(1, None, base, Access::READ).is_err());
    assert!(s.translate(1, None, base + 0x1000, Access::READ).is_ok());
    assert_eq!(s.counters().range_tlbi, 0);
}

#[test]
fn global_entries_match_every_asid() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    let root1 = r.s1_stream(1, 1);
    let root2 = r.s1_stream(2, 2);
    let (a, b) = (r.page(), r.page());
    r.map(root1, 0x5000, a, 3, RW & !(1 << 11)); // nG = 0: global
    r.map(root2, 0x5000, b, 3, RW);
    assert_eq!(s.translate(1, None, 0x5000, Access::READ), Ok(a));
    // Stream 2 (ASID 2) hits stream 1's global entry.
    assert_eq!(s.translate(2, None, 0x5000, Access::READ), Ok(a));
    // TLBI by ASID does not remove global entries; by VA it does.
    r.cmds(&[[op::TLBI_NH_ASID as u64 | 2 << 48, 0], r.sync()]);
    assert_eq!(s.translate(2, None, 0x5000, Access::READ), Ok(a));
    r.cmds(&[tlbi_va(2, 0x5000, true), r.sync()]);
    assert_eq!(s.translate(2, None, 0x5000, Access::READ), Ok(b));
}

#[test]
fn walk_cache_survives_leaf_tlbi() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    let root = r.s1_stream(1, 3);
    let (a, b) = (r.page(), r.page());
    r.map(root, 0x20_0000, a, 3, RW);
    assert_eq!(s.translate(1, None, 0x20_0000, Access::READ), Ok(a));
    assert!(s.walk_cache_len() >= 3);
    // Replace the level-3 table by a new one mapping b, leaf-only TLBI.
    let l2slot = r.slot(root, 0x20_0000, 2);
    let new_l3 = r.page();
    r.m.mem.write_u64(new_l3, b | RW | 3).unwrap();
    let old_l3 = r.m.mem.read_u64(l2slot).unwrap() & !0xFFF;
    r.m.mem.write_u64(l2slot, new_l3 | 3).unwrap();
    r.m.mem.write_u64(old_l3, 0).unwrap();
    r.cmds(&[tlbi_va(3, 0x20_0000, true), r.sync()]);
    // The walk cache still points at the old table, now empty.
    assert_eq!(
        s.translate(1, None, 0x20_0000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::F_TRANSLATION)
    );
    r.cmds(&[tlbi_va(3, 0x20_0000, false), r.sync()]);
    assert_eq!(s.translate(1, None, 0x20_0000, Access::READ), Ok(b));
}

#[test]
fn illegal_command_stops_queue_until_gerrorn() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    r.set_ste(1, ste_cfg(0b100));
    assert!(s.translate(1, None, 0, Access::READ).is_ok());
    r.set_ste(1, ste_cfg(0b000));
    // SYNC, illegal opcode 0x7f, CFGI_STE(1), SYNC.
    r.cmds(&[r.sync(), [0x7f, 0], r.cfgi_ste(1), r.sync()]);
    assert_eq!(
        s.read32(reg::CMDQ_CONS),
        1 | (1 << 24),
        "CONS at the bad entry, ERR = ILL"
    );
    assert_eq!(
        s.read32(reg::GERROR) ^ s.read32(reg::GERRORN),
        reg::GERROR_CMDQ_ERR
    );
    // The CFGI after it did not run.
    assert!(s.translate(1, None, 0, Access::READ).is_ok());
    // More PROD writes do nothing while the error is active.
    r.cmds(&[r.sync()]);
    assert_eq!(s.read32(reg::CMDQ_CONS) & 0xFFFF, 1);
    // Acknowledge without fixing: the same entry fails again.
    s.write32(reg::GERRORN, s.read32(reg::GERROR));
    assert_eq!(s.read32(reg::CMDQ_CONS), 1 | (1 << 24));
    assert_eq!(s.counters().cmd_errors, 2);
    // Replace it with CMD_SYNC (as Linux does) and acknowledge.
    r.m.mem.write_words(r.cmdq + 16, &r.sync()).unwrap();
    s.write32(reg::GERRORN, s.read32(reg::GERROR));
    // ERR keeps its last value (it is only meaningful while CMDQ_ERR is active).
    assert_eq!(s.read32(reg::CMDQ_CONS) & 0xFFFFF, 5);
    assert_eq!(s.translate(1, None, 0, Access::READ), Err(Fault::Abort));
    let c = s.counters();
    assert_eq!((c.syncs, c.cfgi), (4, 1));
    // Other illegal encodings: CMD_SYNC with CS = 0b11, TLBI_EL2_ALL without
    // HYP, CFGI_STE with SSec = 1.
    for bad in [
        [op::SYNC as u64 | 3 << 12, 0],
        [op::TLBI_EL2_ALL as u64, 0],
        [op::CFGI_STE as u64 | 1 << 10, 0],
    ] {
        let cons = s.read32(reg::CMDQ_CONS) & 0xFFFF;
        r.cmds(&[bad]);
        assert_eq!(s.read32(reg::CMDQ_CONS), cons | 1 << 24, "{bad:x?}");
        let e = s.read32(reg::GERROR);
        r.m.mem
            .write_words(r.cmdq + 16 * (cons as u64 & 15), &r.sync())
            .unwrap();
        s.write32(reg::GERRORN, e);
        assert_eq!(s.read32(reg::CMDQ_CONS) & 0xFFFF, (cons + 1) & 31);
    }
}

#[test]
fn cmdq_wraps() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    for _ in 0..40 {
        r.cmds(&[r.sync(), r.sync(), r.sync()]);
    }
    // 120 commands in a 16-entry queue: index 120 % 16 = 8, wrap bit
    // (120 / 16) % 2 = 1.
    assert_eq!(s.read32(reg::CMDQ_CONS), 8 | 16);
    assert_eq!(s.read32(reg::CMDQ_PROD), 8 | 16);
    assert_eq!(s.counters().syncs, 120);
    // Queue registers are ignored while enabled (and reported).
    s.write32(reg::CMDQ_CONS, 0);
    s.write64(reg::CMDQ_BASE, 0);
    assert_eq!(s.read32(reg::CMDQ_CONS), 24);
    assert_eq!(s.violations().len(), 2);
}

#[test]
fn eventq_wrap_and_overflow() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    // StreamIDs 100.. have V = 0 STEs: each access is one C_BAD_STE.
    let fault = |sid: u32| s.translate(sid, None, 0, Access::READ).unwrap_err();
    for i in 0..4 {
        assert!(matches!(
            fault(100 + i),
            Fault::Event { recorded: true, .. }
        ));
    }
    // 4 records in a 4-entry queue: full (index 0, wrap 1).
    assert_eq!(s.read32(reg::EVENTQ_PROD), 4);
    assert_eq!(
        s.pending_events().iter().map(|e| e.sid).collect::<Vec<_>>(),
        [100, 101, 102, 103]
    );
    assert!(matches!(
        fault(104),
        Fault::Event {
            recorded: false,
            ..
        }
    ));
    assert_eq!(s.read32(reg::EVENTQ_PROD), reg::EVENTQ_PROD_OVFLG | 4);
    // A second lost record does not toggle OVFLG back.
    fault(105);
    assert_eq!(s.read32(reg::EVENTQ_PROD), reg::EVENTQ_PROD_OVFLG | 4);
    // Consume two, acknowledging the overflow.
    s.write32(reg::EVENTQ_CONS, 2 | reg::EVENTQ_CONS_OVACKFLG);
    fault(106);
    fault(107);
    assert_eq!(s.read32(reg::EVENTQ_PROD), reg::EVENTQ_PROD_OVFLG | 4 | 2);
    assert_eq!(r.event_at(0).sid, 106);
    assert_eq!(r.event_at(1).sid, 107);
    assert_eq!(r.event_at(2).sid, 102);
    // Full again: a new overflow toggles OVFLG (now != OVACKFLG again).
    fault(108);
    assert_eq!(s.read32(reg::EVENTQ_PROD), 4 | 2);
    // Page-0 alias of EVENTQ_PROD (QEMU).
    assert_eq!(s.read32(0xA8), 6);
    let c = s.counters();
    assert_eq!(
        (c.events_written, c.eventq_overflows, c.eventq_irqs),
        (6, 3, 6)
    );
}

#[test]
fn two_level_stream_table() {
    let m = Machine::new(Features::qemu_7_2());
    let s = &m.smmu;
    let mut mem = m.mem.clone();
    // 2^16 StreamIDs, SPLIT 8: 256 L1 descriptors of 8 bytes.
    let l1 = mem.alloc(256 * 8, 4096).unwrap().paddr;
    // L1[1] covers StreamIDs 0x100..0x1FF; Span 5: 16 STEs.
    let l2 = m.mem.alloc_buffer(16 * 64, 1024).unwrap();
    m.mem.write_u64(l1 + 8, l2 | 5).unwrap();
    m.mem.write_words(l2 + 64 * 3, &ste_cfg(0b100)).unwrap();
    s.write64(reg::STRTAB_BASE, l1);
    s.write32(reg::STRTAB_BASE_CFG, 1 << 16 | 8 << 6 | 16);
    s.write32(reg::CR0, reg::CR0_SMMUEN);
    assert_eq!(s.translate(0x103, None, 0xabc, Access::READ), Ok(0xabc));
    assert_eq!(
        s.translate(0x104, None, 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_STE)
    );
    // Beyond Span, and in an L1 slot with Span 0.
    assert_eq!(
        s.translate(0x110, None, 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_STREAMID)
    );
    assert_eq!(
        s.translate(0x203, None, 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_STREAMID)
    );
    // ste_at decodes the same entry.
    let ste = s.ste_at(0x103).unwrap();
    assert!(ste.valid && ste.config == SteConfig::Bypass);
    // Without the feature, FMT = 2-level is not honoured.
    let m = Machine::new(Features {
        two_level_strtab: false,
        ..Features::qemu_7_2()
    });
    m.smmu.write64(reg::STRTAB_BASE, l1);
    m.smmu.write32(reg::STRTAB_BASE_CFG, 1 << 16 | 8 << 6 | 16);
    m.smmu.write32(reg::CR0, reg::CR0_SMMUEN);
    assert!(m.smmu.translate(0x103, None, 0, Access::READ).is_err());
}

#[test]
fn substreams_and_cd_tables() {
    let r = Rig::new(Features::with_substreams(8));
    let s = r.smmu();
    let mem = &r.m.mem;
    // A 2-level CD table (S1Fmt 1: 64 CDs per leaf), S1CDMax 8.
    let l1 = mem.alloc_buffer(4 * 8, 64).unwrap();
    let leaf1 = mem.alloc_buffer(4096, 4096).unwrap(); // SSIDs 64..127
    mem.write_u64(l1 + 8, leaf1 | 1).unwrap();
    let leaf0 = mem.alloc_buffer(4096, 4096).unwrap(); // SSIDs 0..63
    mem.write_u64(l1, leaf0 | 1).unwrap();
    let (root0, root70) = (r.page(), r.page());
    let (p0, p70) = (r.page(), r.page());
    r.map(root0, 0x1000, p0, 3, RW);
    r.map(root70, 0x1000, p70, 3, RW);
    mem.write_words(leaf0, &cd(root0, 10, true)).unwrap();
    mem.write_words(leaf1 + 64 * 6, &cd(root70, 11, true))
        .unwrap();
    // S1DSS = SSID0: non-substream traffic uses CD 0; SSID 0 is illegal.
    r.set_ste(2, ste_s1(l1, 1, 8, 0b10));
    assert_eq!(s.translate(2, Some(70), 0x1000, Access::READ), Ok(p70));
    assert_eq!(s.translate(2, None, 0x1000, Access::READ), Ok(p0));
    assert_eq!(
        s.translate(2, Some(0), 0x1000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_SUBSTREAMID)
    );
    // SSID 130: L1[2] invalid. SSID 300 >= 2^8.
    assert_eq!(
        s.translate(2, Some(130), 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_SUBSTREAMID)
    );
    assert_eq!(
        s.translate(2, Some(300), 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_SUBSTREAMID)
    );
    // SSID 71: V = 0 CD.
    assert_eq!(
        s.translate(2, Some(71), 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_CD)
    );
    let e = s.pending_events().into_iter().last().unwrap();
    assert_eq!((e.code, e.sid, e.ssid), (evt::C_BAD_CD, 2, Some(71)));
    assert_eq!(s.cd_at(2, Some(70)).unwrap().asid, 11);
    // The CD is cached: clearing it needs CFGI_CD for (2, 70).
    mem.write_words(leaf1 + 64 * 6, &[0; 8]).unwrap();
    assert_eq!(s.translate(2, Some(70), 0x1000, Access::READ), Ok(p70));
    r.cmds(&[[op::CFGI_CD as u64 | 71 << 12 | 2 << 32, 1], r.sync()]);
    assert_eq!(s.translate(2, Some(70), 0x1000, Access::READ), Ok(p70));
    // CFGI_CD for another stream does not help either.
    r.cmds(&[[op::CFGI_CD as u64 | 70 << 12 | 3 << 32, 1], r.sync()]);
    assert_eq!(s.translate(2, Some(70), 0x1000, Access::READ), Ok(p70));
    r.cmds(&[[op::CFGI_CD as u64 | 70 << 12 | 2 << 32, 1], r.sync()]);
    assert_eq!(
        s.translate(2, Some(70), 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_CD)
    );
    // CFGI_STE also drops every CD cached through the StreamID (4.3.1).
    mem.write_words(leaf1 + 64 * 6, &cd(root70, 11, true))
        .unwrap();
    assert_eq!(
        s.translate(2, Some(70), 0x1000, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_CD)
    );
    r.cmds(&[r.cfgi_ste(2), r.sync()]);
    assert_eq!(s.translate(2, Some(70), 0x1000, Access::READ), Ok(p70));
    // S1DSS variants for non-substream traffic.
    r.set_ste(3, ste_s1(l1, 1, 8, 0b00));
    r.set_ste(4, ste_s1(l1, 1, 8, 0b01));
    assert_eq!(
        s.translate(3, None, 0, Access::READ).unwrap_err().code(),
        Some(evt::F_STREAM_DISABLED)
    );
    assert_eq!(s.translate(3, Some(0), 0x1000, Access::READ), Ok(p0));
    assert_eq!(s.translate(4, None, 0x1234, Access::READ), Ok(0x1234));
    // Linear CD table (S1Fmt 0).
    let lin = mem.alloc_buffer(64 * 4, 256).unwrap();
    mem.write_words(lin + 64 * 3, &cd(root70, 12, true))
        .unwrap();
    r.set_ste(5, ste_s1(lin, 0, 2, 0b00));
    assert_eq!(s.translate(5, Some(3), 0x1000, Access::READ), Ok(p70));
    assert_eq!(
        s.translate(5, Some(4), 0, Access::READ).unwrap_err().code(),
        Some(evt::C_BAD_SUBSTREAMID)
    );
    // On QEMU 7.2 features, S1CDMax != 0 is C_BAD_STE.
    let q = Rig::new(Features::qemu_7_2());
    q.set_ste(5, ste_s1(lin, 0, 2, 0b00));
    assert_eq!(
        q.smmu()
            .translate(5, Some(3), 0, Access::READ)
            .unwrap_err()
            .code(),
        Some(evt::C_BAD_STE)
    );
}

#[test]
fn dma_helpers() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    let root = r.s1_stream(1, 1);
    let (a, b) = (r.page(), r.page());
    r.map(root, 0x1000, a, 3, RW);
    r.map(root, 0x2000, b, 3, RO);
    let data: Vec<u8> = (0..0x1800).map(|i| i as u8).collect();
    // 0x1800..0x2800 write: first 0x800 land in a, the read-only page faults.
    let f = s.dma_write(1, None, 0x1800, &data[..0x1000]).unwrap_err();
    assert_eq!(
        (f.iova, f.done, f.fault.code()),
        (0x2000, 0x800, Some(evt::F_PERMISSION))
    );
    let mut got = vec![0u8; 0x800];
    r.m.mem.read(a + 0x800, &mut got).unwrap();
    assert_eq!(got, data[..0x800]);
    let mut bpage = vec![0u8; 0x1000];
    r.m.mem.read(b, &mut bpage).unwrap();
    assert!(
        bpage.iter().all(|&x| x == 0),
        "the faulting page is untouched"
    );
    // Reads cross pages fine.
    r.m.mem.write(b, &[0xAB; 16]).unwrap();
    let mut buf = [0u8; 32];
    s.dma_read(1, None, 0x1ff0, &mut buf).unwrap();
    assert_eq!(&buf[..16], &data[0x7f0..0x800]);
    assert_eq!(&buf[16..], &[0xAB; 16]);
    // Unmapped read.
    let f = s.dma_read(1, None, 0x9000, &mut buf).unwrap_err();
    assert_eq!(f.fault.code(), Some(evt::F_TRANSLATION));
}

#[test]
fn smmu_disabled_uses_gbpa() {
    let m = Machine::new(Features::qemu_7_2());
    let s = &m.smmu;
    assert_eq!(s.translate(0, None, 0x1234, Access::READ), Ok(0x1234));
    // Write without Update: ignored.
    s.write32(reg::GBPA, reg::GBPA_ABORT);
    assert_eq!(s.read32(reg::GBPA), 0);
    s.write32(reg::GBPA, reg::GBPA_ABORT | reg::GBPA_UPDATE);
    assert_eq!(s.read32(reg::GBPA), reg::GBPA_ABORT);
    assert_eq!(
        s.translate(0, None, 0x1234, Access::READ),
        Err(Fault::Abort)
    );
}

#[test]
fn sync_snapshots_and_hook() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    s.watch_ste(1);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    s.set_sync_hook(Some(Box::new(move |v: &mut SyncView<'_>| {
        seen2.lock().unwrap().push(v.ste(1).map(|s| s.config).ok());
    })));
    r.set_ste(1, ste_cfg(0b100));
    r.cmds(&[r.cfgi_ste(1), r.sync()]);
    r.set_ste(1, ste_cfg(0b000));
    r.cmds(&[r.cfgi_ste(1), r.sync()]);
    let snaps = s.take_sync_snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0].stes[0].1.unwrap().config, SteConfig::Bypass);
    assert_eq!(snaps[1].stes[0].1.unwrap().config, SteConfig::Abort);
    assert_eq!(snaps[1].cmd_seq, 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [Some(SteConfig::Bypass), Some(SteConfig::Abort)]
    );
    let log = s.commands_since(0);
    assert_eq!(log.len(), 4);
    assert!(matches!(
        log[0].decoded,
        Ok(Command::CfgiSte { sid: 1, leaf: true })
    ));
}

#[test]
fn allocator_contract_and_failures() {
    let mut mem = PhysMem::new(MemConfig {
        size: 1 << 20,
        phys_base: 0x4000_0000,
        poison_on_free: Some(0xFF),
    });
    let a = mem.alloc(100, 64).unwrap();
    let b = mem.alloc(4096, 4096).unwrap();
    assert_eq!(b.paddr % 4096, 0);
    assert_eq!(b.vaddr as usize % 4096, 0);
    assert_eq!(mem.paddr_of(b.vaddr), Some(b.paddr));
    // SAFETY: b is live and 4096 bytes long.
    unsafe { b.vaddr.add(8).write(0x5A) };
    assert_eq!(mem.read_u64(b.paddr + 8), Some(0x5A));
    mem.free(b);
    assert_eq!(
        mem.read_u64(b.paddr),
        Some(u64::MAX),
        "freed memory is poisoned"
    );
    let c = mem.alloc(4096, 4096).unwrap();
    assert_eq!(mem.read_u64(c.paddr), Some(0), "zero-filled");
    mem.fail_nth_alloc(2);
    assert!(mem.alloc(64, 64).is_ok());
    assert!(mem.alloc(64, 64).is_err());
    assert!(mem.alloc(64, 64).is_ok());
    mem.set_budget(Some(mem.stats().live_bytes + 128));
    assert!(mem.alloc(128, 64).is_ok());
    assert!(mem.alloc(64, 64).is_err());
    mem.clear_failures();
    mem.fail_allocs_after(1);
    assert!(mem.alloc(64, 64).is_ok());
    assert!(mem.alloc(64, 64).is_err());
    assert!(mem.alloc(64, 64).is_err());
    mem.clear_failures();
    // Large alignments hold.
    let big = mem.alloc(8192, 256 << 10).unwrap();
    assert_eq!(big.paddr % (256 << 10), 0);
    assert_eq!(big.vaddr as usize % (256 << 10), 0);
    assert!(mem.alloc(2 << 20, 4096).is_err(), "larger than the arena");
    let st = mem.stats();
    assert_eq!(st.failures, 5);
    mem.free(a);
    let double = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mem.clone().free(a)));
    assert!(double.is_err(), "double free is caught");
}

#[test]
fn tlbi_encoding_corner_cases() {
    let r = Rig::new(Features {
        asid16: false,
        ..Features::qemu_7_2()
    });
    let s = r.smmu();
    let root = r.s1_stream(1, 0x12);
    let a = r.page();
    r.map(root, 0x20_0000, a, 3, RW);
    assert!(s.translate(1, None, 0x20_0000, Access::READ).is_ok());
    r.m.mem.write_u64(r.slot(root, 0x20_0000, 3), 0).unwrap();
    // 8-bit ASIDs: a TLBI naming ASID 0x112 need not (and here does not)
    // touch ASID 0x12.
    r.cmds(&[[op::TLBI_NH_ASID as u64 | 0x112 << 48, 0], r.sync()]);
    assert!(s.translate(1, None, 0x20_0000, Access::READ).is_ok());
    // TG != 0 with NUM = SCALE = TTL = 0 is Reserved: CERROR_ILL.
    r.cmds(&[tlbi_range(0x12, 0x20_0000, 0, 0, 1, 0)]);
    assert_eq!(s.read32(reg::CMDQ_CONS) >> 24, 1);
    let cons = s.read32(reg::CMDQ_CONS) & 0xFFFF;
    r.m.mem
        .write_words(r.cmdq + 16 * (cons as u64 & 15), &r.sync())
        .unwrap();
    s.write32(reg::GERRORN, s.read32(reg::GERROR));
    // A level-2 hint with an address that is not 2 MiB aligned is
    // UNPREDICTABLE: reported as a violation.
    assert!(s.violations().is_empty());
    r.cmds(&[tlbi_range(0x12, 0x20_1000, 0, 0, 1, 2), r.sync()]);
    assert_eq!(s.violations().len(), 1);
    r.cmds(&[tlbi_range(0x12, 0x20_0000, 0, 0, 1, 3), r.sync()]);
    assert!(s.translate(1, None, 0x20_0000, Access::READ).is_err());
}

#[test]
fn external_aborts_on_fetches() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    // STE pointing at a CD outside RAM: F_CD_FETCH with the address.
    r.set_ste(1, ste_s1(0x1_0000_0000, 0, 0, 0));
    let e = match s.translate(1, None, 0, Access::READ).unwrap_err() {
        Fault::Event { event, .. } => event,
        f => panic!("{f:?}"),
    };
    assert_eq!((e.code, e.fetch_addr), (evt::F_CD_FETCH, 0x1_0000_0000));
    // A CD whose TTB0 is outside RAM: F_WALK_EABT, recorded even with R = 0.
    let cdp = r.new_cd(0x2_0000_0000, 1, false);
    r.set_ste(2, ste_s1(cdp, 0, 0, 0));
    let f = s.translate(2, None, 0x1000, Access::WRITE).unwrap_err();
    match f {
        Fault::Event {
            event, recorded, ..
        } => {
            assert_eq!(event.code, evt::F_WALK_EABT);
            assert!(recorded);
            assert_eq!(event.fetch_addr, 0x2_0000_0000);
            assert_eq!(event.addr, 0x1000);
        }
        f => panic!("{f:?}"),
    }
    // A stream table outside RAM: F_STE_FETCH (SMMU re-enabled on it).
    s.write32(reg::CR0, reg::CR0_CMDQEN | reg::CR0_EVENTQEN);
    s.write64(reg::STRTAB_BASE, 0x3_0000_0000);
    s.write32(
        reg::CR0,
        reg::CR0_CMDQEN | reg::CR0_EVENTQEN | reg::CR0_SMMUEN,
    );
    let e = s.translate(4, None, 0, Access::READ).unwrap_err();
    assert_eq!(e.code(), Some(evt::F_STE_FETCH));
    // Bypass to an address outside RAM: the DMA sees a bus error.
    s.write32(reg::CR0, 0);
    let f = s.dma_write(0, None, 0x10, &[1]).unwrap_err();
    assert_eq!(f.fault, Fault::Bus { paddr: 0x10 });
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[test]
fn sixty_four_k_granule_walk() {
    // TG0 = 0b01 (64 KiB), T0SZ = 16: levels 1..3, level 1 indexes VA[47:42]
    // (64 entries), level 2 VA[41:29], level 3 VA[28:16]; a level-2 block is
    // 512 MiB.
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    let mem = &r.m.mem;
    let t = |size| mem.alloc_buffer(size, 0x1_0000).unwrap();
    let (l1, l2, l3) = (t(64 * 8), t(0x1_0000), t(0x1_0000));
    let page = mem.alloc_buffer(0x1_0000, 0x1_0000).unwrap();
    let va: u64 = 0x0000_1234_5678_0000 & !0xFFFF;
    mem.write_u64(l1 + 8 * ((va >> 42) & 63), l2 | 3).unwrap();
    mem.write_u64(l2 + 8 * ((va >> 29) & 8191), l3 | 3).unwrap();
    mem.write_u64(l3 + 8 * ((va >> 16) & 8191), page | RW | 3)
        .unwrap();
    // A 512 MiB block at level 2 elsewhere.
    let vb: u64 = 0x0000_1234_0000_0000;
    assert_ne!((vb >> 29) & 8191, (va >> 29) & 8191);
    mem.write_u64(l2 + 8 * ((vb >> 29) & 8191), 0x4000_0000 | RW | 1)
        .unwrap();
    let mut c = cd(l1, 4, true);
    c[0] |= 0b01 << 6;
    let cdp = mem.alloc_buffer(64, 64).unwrap();
    mem.write_words(cdp, &c).unwrap();
    r.set_ste(1, ste_s1(cdp, 0, 0, 0));
    let t = s.translate_ex(1, None, va + 0xBEEF, Access::READ).unwrap();
    assert_eq!((t.paddr, t.page_size), (page + 0xBEEF, 0x1_0000));
    let t = s
        .translate_ex(1, None, vb + 0x123_4567, Access::READ)
        .unwrap();
    assert_eq!((t.paddr, t.page_size), (0x4123_4567, 512 << 20));
    // Range TLBI with TG = 64K removes the page; TG = 4K does not.
    mem.write_u64(l3 + 8 * ((va >> 16) & 8191), 0).unwrap();
    r.cmds(&[tlbi_range(4, va, 0, 0, 1, 3), r.sync()]);
    assert!(s.translate(1, None, va, Access::READ).is_ok());
    r.cmds(&[tlbi_range(4, va, 0, 0, 3, 3), r.sync()]);
    assert_eq!(
        s.translate(1, None, va, Access::READ).unwrap_err().code(),
        Some(evt::F_TRANSLATION)
    );
}

#[test]
fn edu_style_dma_faults_per_word() {
    let r = Rig::new(Features::qemu_7_2());
    let s = r.smmu();
    let root = r.s1_stream(1, 1);
    let a = r.page();
    r.map(root, 0x1000, a, 3, RW);
    // 16 bytes straddling the end of the mapped page: 2 words land, 2 fault.
    let faults = s.edu_dma_write(1, None, 0x1ff8, &[0xAA; 16]);
    assert_eq!(
        faults.iter().map(|f| f.iova).collect::<Vec<_>>(),
        [0x2000, 0x2004]
    );
    assert_eq!(r.m.mem.read_u64(a + 0xff8), Some(0xAAAA_AAAA_AAAA_AAAA));
    let mut buf = [0x55u8; 16];
    let faults = s.edu_dma_read(1, None, 0x1ff8, &mut buf);
    assert_eq!(faults.len(), 2);
    assert_eq!(
        buf,
        [0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // One event per faulting word (4-entry queue: 4 written, then overflow).
    let c = s.counters();
    assert_eq!((c.events_generated, c.events_written), (4, 4));
}
