//! Failure injection at every point of every core operation (issue 13:
//! "every failure leaves the SMMU and the books in agreement").
//!
//! Each scenario boots a fresh `SharedSmmu` over the software SMMUv3 model,
//! sets up a few domains, streams and mappings (no injection), fills the
//! SMMU's caches (every device probes every address of interest), then runs
//! one core operation with one failure injected, for every injection point
//! the operation reaches, exhaustively:
//!
//! * **timeout**: from the N-th CMDQ_PROD write on, CMDQ_CONS reads as it did
//!   before that batch, while the model still executes every command (so
//!   each CMD_SYNC from there on times out; the SMMU did the work). The
//!   queue "runs again" once the operation returned.
//! * **timeout-once**: only the N-th batch is seen to time out; the queue
//!   runs again at the next doorbell (what an operation does after a
//!   timeout it goes on from).
//! * **reject**: on the N-th CMDQ_PROD write, entry `j` of that batch gets
//!   an illegal opcode (0x7f) in the queue memory before the doorbell, so the
//!   model rejects it (CMDQ_CONS.ERR = CERROR_ILL, GERROR.CMDQ_ERR) and the
//!   driver's own error path skips it: the command never runs.
//! * **alloc**: the k-th DMA allocation fails (`PhysMem::fail_nth_alloc`).
//!
//! N (or k) goes up from 1 until the operation no longer reaches it. The
//! `a_*_then_*` tests also inject a second failure at every point of the
//! operation's retry. After every injected failure (the injection cleared)
//! the harness checks ([`check_state`]):
//!
//! * inv 1: no ASID names two TTB0s, over every CD in memory, every CD the
//!   model has cached and every live domain's (ASID, TTB0);
//! * inv 2: every CD the SMMU can fetch from memory for a (StreamID, SSID)
//!   of the scenario carries the TTB0 (and the ASID, or a stale ASID no
//!   other domain holds) of the one domain whose device list holds that
//!   pair, and `attached_domain` names that domain; `attached_domain` and
//!   the device lists agree;
//! * inv 3/4 (TLB): a TLB entry tagged with a live domain's ASID translates
//!   as that domain's page table does;
//! * agreement: what a device reaches from memory (uncached walk) is what
//!   the books say (the page table of the domain `attached_domain` names;
//!   every domain maps to its own physical addresses, so a translation of
//!   another domain shows); through the SMMU's caches it may also reach
//!   what the domain it had before the failed operation maps *now* (an
//!   old configuration not yet invalidated: counted as "old-config-cached"
//!   in the report), nothing else, and nothing older at all once a retry
//!   of the operation returned `Ok`;
//! * nothing the SMMU caches or reads (STE CD-table pointers, cached CDs'
//!   TTB0) points at freed memory; ASIDs carried anywhere are no more than
//!   the allocator's in-use count;
//! * page tables: every table reachable from a domain's TTB0 is a live block
//!   of the right size, and `pt_pages` counts exactly them (more only for
//!   the domain whose map/unmap failed, while unlinked tables wait for an
//!   invalidation).
//!
//! Then, in order: the operation is retried (checked again); every domain
//! moves to a fresh ASID (after `Ok`, no CD in memory or cached may carry
//! the domain's TTB0 with another ASID); a new domain is attached to a new
//! stream and freed again (ASID churn, recycling with few ASIDs); every
//! page still mapped is unmapped after every device touched it, and an
//! `Ok` unmap means no device reaches it (cached probe: a stale TLB entry is
//! the failure mode), after which `pt_pages` must be exact; finally idle
//! domains are freed, every listed (StreamID, SSID) detached and every
//! domain freed (one retry each): then nothing translates, nothing is
//! cached, the allocator's live blocks are exactly those right after boot,
//! no ASID is in use and the model saw no architecture violation.
//!
//! Violations are collected over every point and reported together at the
//! end (operation, injection kind, point, what went wrong). Run with
//! `--nocapture` to see the number of injection points per operation.
#![cfg(not(loom))]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use iommu_server::hal::Mmio;
use iommu_server::regs;
use iommu_server::shared::SharedSmmu;
use iommu_server::sync::StdLocks;
use iommu_server::{Config, DomainId, Error, Perms};
use smmu_model::{
    Access, BlockKind, Features, LiveBlock, Machine, MemConfig, ModelOptions, PhysMem, SteConfig,
};

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

// ---------------------------------------------------------------------------
// The injecting register file
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every CMD_SYNC from the N-th doorbell on times out.
    Timeout,
    /// Only the N-th doorbell's CMD_SYNC times out (the queue is seen to run
    /// again at the next doorbell): explores what an operation does after
    /// a timeout it survives.
    TimeoutOnce,
    Reject,
    Alloc,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Timeout => "timeout",
            Kind::TimeoutOnce => "timeout-once",
            Kind::Reject => "reject",
            Kind::Alloc => "alloc",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
enum Plan {
    #[default]
    Off,
    /// From doorbell `from` (1-based) on, CMDQ_CONS reads frozen; with
    /// `once`, only until the next doorbell.
    Freeze { from: u32, once: bool },
    /// Entry `entry` of doorbell `batch`'s new commands gets an illegal
    /// opcode before the doorbell reaches the model.
    Reject { batch: u32, entry: u32 },
}

#[derive(Debug, Default)]
struct Inj {
    plan: Plan,
    /// CMDQ_PROD writes since the plan was armed.
    doorbells: u32,
    /// CMDQ_CONS as the driver sees it while frozen.
    frozen: Option<u32>,
    /// New entries in the targeted batch, once it was reached.
    batch_len: Option<u32>,
}

/// The model's register file with the injections above.
struct Regs {
    inner: smmu_model::Smmu,
    mem: PhysMem,
    inj: Arc<Mutex<Inj>>,
}

impl Regs {
    /// (queue address, log2 entries) from CMDQ_BASE.
    fn queue(&self) -> (u64, u32) {
        let base = self.inner.read64(regs::CMDQ_BASE);
        (
            base & smmu_model::spec::reg::Q_BASE_ADDR_MASK,
            (base & 0x1f) as u32,
        )
    }
}

impl Mmio for Regs {
    fn read32(&self, offset: usize) -> u32 {
        if offset == regs::CMDQ_CONS {
            if let Some(c) = self.inj.lock().unwrap().frozen {
                return c;
            }
        }
        self.inner.read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        if offset == regs::CMDQ_PROD {
            let mut s = self.inj.lock().unwrap();
            if !matches!(s.plan, Plan::Off) {
                s.doorbells += 1;
                let n = s.doorbells;
                let (addr, l2) = self.queue();
                let wrap_mask = (2u32 << l2) - 1;
                let old = self.inner.read32(regs::CMDQ_PROD) & wrap_mask;
                let len = (value & wrap_mask).wrapping_sub(old) & wrap_mask;
                match s.plan {
                    Plan::Freeze { from, .. } if n == from => {
                        s.frozen = Some(self.inner.read32(regs::CMDQ_CONS));
                        s.batch_len = Some(len);
                    }
                    Plan::Freeze { from, once: true } if n > from => s.frozen = None,
                    Plan::Reject { batch, entry } if n == batch => {
                        s.batch_len = Some(len);
                        if entry < len {
                            let idx = (old + entry) & ((1 << l2) - 1);
                            let at = addr + 16 * idx as u64;
                            let q0 = self.mem.read_u64(at).expect("queue memory");
                            self.mem
                                .write_u64(at, (q0 & !0xff) | 0x7f)
                                .expect("queue memory");
                        }
                    }
                    _ => {}
                }
            }
        }
        self.inner.write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        self.inner.read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        self.inner.write64(offset, value)
    }
}

// ---------------------------------------------------------------------------
// A scenario's world
// ---------------------------------------------------------------------------

const SLOTS: usize = 6;
type Core = SharedSmmu<Regs, PhysMem, NoDelay, StdLocks, SLOTS>;

const KIB4: u64 = 0x1000;
const MIB2: u64 = 0x20_0000;
/// Two 4 KiB pages in one leaf table (every domain maps P1).
const P1: u64 = 0x10_0000;
const P2: u64 = 0x10_1000;
/// A 2 MiB block.
const B: u64 = 0x4000_0000;
/// A page whose level-1, -2 and -3 tables hold nothing else.
const FAR: u64 = 0x800_0000_0000;
/// Pages in 20 leaf tables (more than a gather holds before it flushes).
const M: u64 = 0x8000_0000;
const M_PAGES: u64 = 20;

/// Addresses every device probes.
const PROBES: [u64; 11] = [
    P1,
    P2,
    B,
    B + KIB4,
    B + 2 * KIB4,
    B + MIB2 - KIB4,
    FAR,
    M,
    M + 15 * MIB2,
    M + 16 * MIB2,
    M + 19 * MIB2,
];

/// The stream the follow-ups attach to a new domain.
const CHURN: (u32, u32) = (5, 0);

/// Domain number `k` maps `iova` to its own physical address.
fn pa_of(k: usize, iova: u64) -> u64 {
    ((k as u64 + 1) << 40) ^ iova
}

struct World {
    m: Machine,
    core: Core,
    inj: Arc<Mutex<Inj>>,
    boot_blocks: Vec<LiveBlock>,
    doms: Vec<DomainId>,
    universe: Vec<(u32, u32)>,
    ssid_bits: u8,
}

impl World {
    fn boot(sc: &Scenario) -> World {
        let mut features = if sc.ssid_bits == 0 {
            Features::qemu_7_2()
        } else {
            Features::with_substreams(sc.ssid_bits)
        };
        features.bbml = sc.bbml;
        let mem = MemConfig {
            phys_base: 0x8000_0000,
            size: 2 << 20,
            poison_on_free: Some(0xFF),
        };
        let m = Machine::with(features, ModelOptions::default(), mem);
        let inj = Arc::new(Mutex::new(Inj::default()));
        let regs = Regs {
            inner: m.smmu.clone(),
            mem: m.mem.clone(),
            inj: inj.clone(),
        };
        let config = Config {
            cmdq_log2: 5,
            evtq_log2: 4,
            max_sid_bits: 6,
            ssid_bits: sc.ssid_bits,
            linear_strtab: true,
            max_asids: sc.asids,
            poll_timeout_us: 10,
            ..Config::default()
        };
        let core = Core::new(regs, m.mem.clone(), NoDelay, config).expect("boots");
        let boot_blocks = m.mem.live_blocks();
        let mut universe: Vec<(u32, u32)> = if sc.ssid_bits == 0 {
            vec![(1, 0), (2, 0), (3, 0), (4, 0)]
        } else {
            let mut u = Vec::new();
            for sid in [1, 2] {
                for ssid in 0..4 {
                    u.push((sid, ssid));
                }
            }
            u
        };
        universe.extend_from_slice(sc.extra);
        universe.push(CHURN);
        World {
            m,
            core,
            inj,
            boot_blocks,
            doms: Vec::new(),
            universe,
            ssid_bits: sc.ssid_bits,
        }
    }

    fn ss(&self, ssid: u32) -> Option<u32> {
        (self.ssid_bits != 0 && ssid != 0).then_some(ssid)
    }

    /// A new domain (number `doms.len()`) with P1 mapped.
    fn dom(&mut self) -> DomainId {
        let d = self.core.alloc_domain().expect("alloc_domain");
        self.doms.push(d);
        self.map(self.doms.len() - 1, P1, KIB4);
        d
    }

    /// A new SVA space with P1 mapped.
    fn space(&mut self, pinned: Option<u16>) -> DomainId {
        let d = self.core.alloc_sva_space(pinned).expect("alloc_sva_space");
        self.doms.push(d);
        self.map(self.doms.len() - 1, P1, KIB4);
        d
    }

    fn map(&self, k: usize, iova: u64, len: u64) {
        self.core
            .map(self.doms[k], iova, pa_of(k, iova), len, Perms::RW)
            .unwrap_or_else(|e| panic!("setup map {iova:#x}: {e:?}"));
    }

    fn attach(&self, sid: u32, ssid: u32, k: usize) {
        self.core
            .attach(sid, ssid, self.doms[k])
            .unwrap_or_else(|e| panic!("setup attach ({sid}, {ssid}): {e:?}"));
    }

    fn probe(&self, sid: u32, ssid: u32, iova: u64) -> Option<u64> {
        self.m
            .smmu
            .probe(sid, self.ss(ssid), iova, Access::READ)
            .ok()
            .map(|t| t.paddr)
    }

    fn uncached(&self, sid: u32, ssid: u32, iova: u64) -> Option<u64> {
        self.m
            .smmu
            .translate_uncached(sid, self.ss(ssid), iova, Access::READ)
            .ok()
            .map(|t| t.paddr)
    }

    /// Every device touches every address of interest (fills the caches).
    fn warm(&self) {
        for &(sid, ssid) in &self.universe {
            for &iova in &PROBES {
                let _ = self.probe(sid, ssid, iova);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

type Op = fn(&mut World) -> Result<(), Error>;

struct Scenario {
    name: &'static str,
    ssid_bits: u8,
    /// Config::max_asids (0: all).
    asids: u32,
    bbml: u8,
    /// (StreamID, SSID) pairs beyond the default universe.
    extra: &'static [(u32, u32)],
    setup: fn(&mut World),
    op: Op,
    /// The operation maps or unmaps in domain 0 (whose unlinked tables may
    /// wait in its gather after a failed invalidation).
    tables: bool,
}

const fn sc(name: &'static str, setup: fn(&mut World), op: Op) -> Scenario {
    Scenario {
        name,
        ssid_bits: 0,
        asids: 0,
        bbml: 2,
        extra: &[],
        setup,
        op,
        tables: false,
    }
}

const fn ss(name: &'static str, setup: fn(&mut World), op: Op) -> Scenario {
    Scenario {
        ssid_bits: 2,
        ..sc(name, setup, op)
    }
}

const fn pt(name: &'static str, setup: fn(&mut World), op: Op) -> Scenario {
    Scenario {
        tables: true,
        ..sc(name, setup, op)
    }
}

fn unmap(w: &World, k: usize, iova: u64, len: u64) -> Result<(), Error> {
    w.core.unmap(w.doms[k], iova, len).map(|_| ())
}

fn scenarios() -> Vec<Scenario> {
    vec![
        // ----- domains -----
        sc(
            "alloc_domain",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
            },
            |w| w.core.alloc_domain().map(|d| w.doms.push(d)),
        ),
        sc(
            "alloc_sva_space(pinned)",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
            },
            |w| w.core.alloc_sva_space(Some(7)).map(|d| w.doms.push(d)),
        ),
        sc(
            "free_domain (idle, had an ASID and TLB entries)",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 0, 0);
                w.attach(2, 0, 1);
                w.warm();
                w.core.detach(1, 0).unwrap();
            },
            |w| w.core.free_domain(w.doms[0]),
        ),
        // ----- attach, no substreams -----
        sc(
            "attach: first attach of a stream",
            |w| {
                w.dom();
            },
            |w| w.core.attach(1, 0, w.doms[0]),
        ),
        sc(
            "attach: second stream to a domain with an ASID",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
            },
            |w| w.core.attach(2, 0, w.doms[0]),
        ),
        sc(
            "attach: move a single-CD stream to another domain",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 0, 0);
                w.attach(2, 0, 1);
            },
            |w| w.core.attach(1, 0, w.doms[1]),
        ),
        sc(
            "attach: move a single-CD stream to a domain without ASID",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 0, 0);
                w.attach(2, 0, 0);
            },
            |w| w.core.attach(1, 0, w.doms[1]),
        ),
        Scenario {
            asids: 3,
            ..sc(
                "attach: recycles an idle domain's ASID (2 ASIDs)",
                |w| {
                    w.dom();
                    w.dom();
                    w.dom();
                    w.attach(1, 0, 0);
                    w.attach(2, 0, 1);
                    w.warm();
                    w.core.detach(2, 0).unwrap();
                },
                |w| w.core.attach(3, 0, w.doms[2]),
            )
        },
        Scenario {
            asids: 3,
            ..sc(
                "attach: move a single-CD stream (2 ASIDs, one idle domain)",
                |w| {
                    w.dom();
                    w.dom();
                    w.dom();
                    w.attach(1, 0, 0);
                    w.attach(2, 0, 1);
                    w.warm();
                    w.core.detach(2, 0).unwrap();
                },
                |w| w.core.attach(1, 0, w.doms[1]),
            )
        },
        // ----- detach, no substreams -----
        sc(
            "detach: the stream's last CD, domain keeps another device",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
                w.attach(2, 0, 0);
            },
            |w| w.core.detach(1, 0),
        ),
        sc(
            "detach: the domain's last device",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
            },
            |w| w.core.detach(1, 0),
        ),
        Scenario {
            asids: 3,
            ..sc(
                "detach: the domain's last device (2 ASIDs)",
                |w| {
                    w.dom();
                    w.dom();
                    w.attach(1, 0, 0);
                    w.attach(2, 0, 1);
                },
                |w| w.core.detach(1, 0),
            )
        },
        // ----- ASIDs -----
        sc(
            "reassign_asid: three devices on the domain",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 0, 0);
                w.attach(2, 0, 0);
                w.attach(3, 0, 0);
                w.attach(4, 0, 1);
            },
            |w| w.core.reassign_asid(w.doms[0]).map(|_| ()),
        ),
        Scenario {
            asids: 3,
            ..sc(
                "reassign_asid: recycles an idle domain's ASID (2 ASIDs)",
                |w| {
                    w.dom();
                    w.dom();
                    w.attach(1, 0, 0);
                    w.attach(2, 0, 0);
                    w.attach(3, 0, 1);
                    w.warm();
                    w.core.detach(3, 0).unwrap();
                },
                |w| w.core.reassign_asid(w.doms[0]).map(|_| ()),
            )
        },
        sc(
            "bind_sva: pinned ASID taken from a private domain",
            |w| {
                w.dom();
                let asid = {
                    w.attach(1, 0, 0);
                    w.attach(3, 0, 0);
                    w.core.domain_asid(w.doms[0]).unwrap()
                };
                w.space(Some(asid));
            },
            |w| w.core.bind_sva(2, 0, w.doms[1]),
        ),
        sc(
            "unbind_sva",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
                let asid = w.core.domain_asid(w.doms[0]).unwrap();
                let s = w.space(Some(asid));
                w.core.bind_sva(2, 0, s).unwrap();
            },
            |w| w.core.unbind_sva(2, 0),
        ),
        // ----- page tables -----
        pt(
            "map: a page needing tables at levels 1-3",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
            },
            |w| w.core.map(w.doms[0], FAR, pa_of(0, FAR), KIB4, Perms::RW),
        ),
        pt(
            "map: a 2 MiB block and a page (undone on failure)",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
            },
            |w| {
                w.core
                    .map(w.doms[0], B, pa_of(0, B), MIB2 + KIB4, Perms::RW)
            },
        ),
        pt(
            "unmap: a page sharing its leaf table",
            |w| {
                w.dom();
                w.map(0, P2, KIB4);
                w.attach(1, 0, 0);
                w.attach(2, 0, 0);
            },
            |w| unmap(w, 0, P1, KIB4),
        ),
        pt(
            "unmap: 4 KiB out of a 2 MiB block (split)",
            |w| {
                w.dom();
                w.map(0, B, MIB2);
                w.attach(1, 0, 0);
            },
            |w| unmap(w, 0, B + KIB4, KIB4),
        ),
        Scenario {
            bbml: 0,
            ..pt(
                "unmap: 4 KiB out of a 2 MiB block (split, break-before-make)",
                |w| {
                    w.dom();
                    w.map(0, B, MIB2);
                    w.attach(1, 0, 0);
                },
                |w| unmap(w, 0, B + KIB4, KIB4),
            )
        },
        pt(
            "unmap: a page whose level-1..3 tables are freed",
            |w| {
                w.dom();
                w.map(0, FAR, KIB4);
                w.attach(1, 0, 0);
            },
            |w| unmap(w, 0, FAR, KIB4),
        ),
        pt(
            "unmap: 20 leaf tables freed (gather flushes mid-way)",
            |w| {
                w.dom();
                for i in 0..M_PAGES {
                    w.map(0, M + i * MIB2, KIB4);
                }
                w.attach(1, 0, 0);
            },
            |w| unmap(w, 0, M, M_PAGES * MIB2),
        ),
        // ----- substreams (2 SSID bits) -----
        ss(
            "ssid: first attach of a stream at SSID 1",
            |w| {
                w.dom();
            },
            |w| w.core.attach(1, 1, w.doms[0]),
        ),
        ss(
            "ssid: attach another SSID of an attached stream",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 1, 0);
            },
            |w| w.core.attach(1, 2, w.doms[1]),
        ),
        ss(
            "ssid: attach SSID 0 (S1DSS becomes SSID0)",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 1, 0);
            },
            |w| w.core.attach(1, 0, w.doms[1]),
        ),
        ss(
            "ssid: move an SSID between domains",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 1, 0);
                w.attach(1, 2, 1);
            },
            |w| w.core.attach(1, 1, w.doms[1]),
        ),
        ss(
            "ssid: move SSID 0 between domains",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 0, 0);
                w.attach(1, 1, 1);
            },
            |w| w.core.attach(1, 0, w.doms[1]),
        ),
        ss(
            "ssid: detach, not the stream's last CD",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 1, 0);
                w.attach(1, 2, 1);
            },
            |w| w.core.detach(1, 1),
        ),
        ss(
            "ssid: detach SSID 0 (S1DSS back to terminate)",
            |w| {
                w.dom();
                w.dom();
                w.attach(1, 0, 0);
                w.attach(1, 1, 1);
            },
            |w| w.core.detach(1, 0),
        ),
        ss(
            "ssid: detach the stream's last CD",
            |w| {
                w.dom();
                w.attach(1, 1, 0);
            },
            |w| w.core.detach(1, 1),
        ),
        ss(
            "ssid: reassign_asid, CDs of two streams",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
                w.attach(1, 1, 0);
                w.attach(2, 2, 0);
            },
            |w| w.core.reassign_asid(w.doms[0]).map(|_| ()),
        ),
        ss(
            "ssid: bind_sva, pinned ASID taken from a private domain",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
                w.attach(2, 1, 0);
                let asid = w.core.domain_asid(w.doms[0]).unwrap();
                w.space(Some(asid));
            },
            |w| w.core.bind_sva(1, 2, w.doms[1]),
        ),
        ss(
            "ssid: unbind_sva",
            |w| {
                w.dom();
                w.attach(1, 0, 0);
                let asid = w.core.domain_asid(w.doms[0]).unwrap();
                let s = w.space(Some(asid));
                w.core.bind_sva(1, 2, s).unwrap();
            },
            |w| w.core.unbind_sva(1, 2),
        ),
        Scenario {
            ssid_bits: 7,
            extra: &[(1, 64), (1, 65)],
            ..sc(
                "ssid (7 bits, 2-level CD table): attach in a new CD leaf",
                |w| {
                    w.dom();
                    w.dom();
                    w.attach(1, 1, 0);
                },
                |w| w.core.attach(1, 64, w.doms[1]),
            )
        },
    ]
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct SeenDomain {
    id: DomainId,
    asid: u16,
    ttbr: u64,
    devices: Vec<(u32, u32)>,
}

/// Tables reachable from `ttbr`: (address, level).
fn reachable_tables(mem: &PhysMem, ttbr: u64) -> Vec<(u64, usize)> {
    const ADDR: u64 = 0x0000_ffff_ffff_f000;
    let mut out = vec![(ttbr, 0usize)];
    let mut i = 0;
    while i < out.len() {
        let (t, level) = out[i];
        i += 1;
        if level == 3 {
            continue;
        }
        for e in 0..512u64 {
            let Some(desc) = mem.read_u64(t + 8 * e) else {
                break;
            };
            if desc & 3 == 3 {
                out.push((desc & ADDR, level + 1));
            }
        }
    }
    out
}

/// Checks 1 and 2 (see the module doc). `pending`: the domain whose
/// `pt_pages` may exceed its reachable tables.
/// Domains each device may still use through the SMMU's caches besides
/// the one the books name: after a failed operation, the configuration the
/// device had before (until a sync covering the device completes).
type Allowed = BTreeMap<(u32, u32), BTreeSet<DomainId>>;

/// Adds every device's current domain to `allowed`.
fn allow_current(w: &World, allowed: &mut Allowed) {
    for &(sid, ssid) in &w.universe {
        if let Some(d) = w.core.attached_domain(sid, ssid) {
            allowed.entry((sid, ssid)).or_default().insert(d);
        }
    }
}

/// What [`check_state`] may accept in the caches (`allowed`: an older
/// configuration, but only as that domain's page table is now); `notes`
/// records the devices seen doing so.
struct Before<'a> {
    allowed: &'a Allowed,
    notes: &'a mut Vec<String>,
}

impl<'a> Before<'a> {
    /// Nothing older than the books may be cached.
    fn strict(none: &'a Allowed, notes: &'a mut Vec<String>) -> Self {
        Before {
            allowed: none,
            notes,
        }
    }
}

fn check_state(w: &World, pending: Option<DomainId>, before: Before<'_>, errs: &mut Vec<String>) {
    let mut doms: Vec<SeenDomain> = Vec::new();
    let mut tlb_errs: Vec<String> = Vec::new();
    let tlb = w.m.smmu.tlb_entries();
    w.core.audit(
        |d| {
            doms.push(SeenDomain {
                id: d.id,
                asid: d.asid,
                ttbr: d.ttbr,
                devices: d.devices.to_vec(),
            });
            if d.asid != 0 {
                for e in tlb.iter().filter(|e| e.asid == Some(d.asid)) {
                    let now = d.pgtable.iova_to_phys(e.va).map(|(pa, _)| pa);
                    if now != Some(e.pa) {
                        tlb_errs.push(format!(
                            "inv 3/4 (TLB): entry ASID {} va {:#x} -> {:#x}, but ASID {} is {:?}'s, whose table gives {:?}",
                            d.asid, e.va, e.pa, d.asid, d.id, now
                        ));
                    }
                }
            }
        },
        |_| (),
    );
    errs.extend(tlb_errs);

    // Books against themselves.
    for &dev in &w.universe {
        let att = w.core.attached_domain(dev.0, dev.1);
        let listing: Vec<&SeenDomain> = doms.iter().filter(|d| d.devices.contains(&dev)).collect();
        let ok = match (att, listing.as_slice()) {
            (None, []) => true,
            (Some(a), [d]) => d.id == a,
            _ => false,
        };
        if !ok {
            errs.push(format!(
                "books: attached_domain{dev:?} = {att:?} but the device is on the lists of {:?}",
                listing.iter().map(|d| d.id).collect::<Vec<_>>()
            ));
        }
    }

    // Inv 1 over memory CDs, cached CDs and the domains' own (ASID, TTB0).
    let mut names: BTreeMap<u16, BTreeSet<(u64, String)>> = BTreeMap::new();
    let mut carried: BTreeSet<u16> = BTreeSet::new();
    for d in &doms {
        if d.asid != 0 {
            names
                .entry(d.asid)
                .or_default()
                .insert((d.ttbr, format!("domain {:?}", d.id)));
            carried.insert(d.asid);
        }
    }
    let mut sids: Vec<u32> = w.universe.iter().map(|d| d.0).collect();
    sids.dedup();
    for &sid in &sids {
        for idx in 0..(1u32 << w.ssid_bits) {
            if let Some(cd) = w.m.smmu.cached_cd(sid, idx) {
                if cd.valid {
                    names
                        .entry(cd.asid)
                        .or_default()
                        .insert((cd.ttb0, format!("cached CD ({sid}, {idx})")));
                    carried.insert(cd.asid);
                }
            }
        }
    }
    // Inv 2 over memory CDs.
    for &dev in &w.universe {
        let Ok(cd) = w.m.smmu.cd_at(dev.0, w.ss(dev.1)) else {
            continue;
        };
        if !cd.valid {
            continue;
        }
        names
            .entry(cd.asid)
            .or_default()
            .insert((cd.ttb0, format!("CD of {dev:?} in memory")));
        carried.insert(cd.asid);
        let listing: Vec<&SeenDomain> = doms.iter().filter(|d| d.devices.contains(&dev)).collect();
        match listing.as_slice() {
            [d] => {
                if cd.ttb0 != d.ttbr {
                    errs.push(format!(
                        "inv 2: CD of {dev:?} has TTB0 {:#x} (ASID {}) but the device is listed on {:?} (TTB0 {:#x})",
                        cd.ttb0, cd.asid, d.id, d.ttbr
                    ));
                } else if cd.asid != d.asid {
                    if let Some(o) = doms.iter().find(|o| o.asid == cd.asid) {
                        errs.push(format!(
                            "inv 2: CD of {dev:?} (domain {:?}, whose ASID is {}) carries ASID {}, which is {:?}'s",
                            d.id, d.asid, cd.asid, o.id
                        ));
                    }
                }
                let att = w.core.attached_domain(dev.0, dev.1);
                if att != Some(d.id) {
                    errs.push(format!(
                        "inv 2: CD of {dev:?} is {:?}'s but attached_domain says {att:?}",
                        d.id
                    ));
                }
            }
            _ => errs.push(format!(
                "inv 2: the SMMU can use a CD for {dev:?} (ASID {}, TTB0 {:#x}) but the device is on {} domain lists",
                cd.asid,
                cd.ttb0,
                listing.len()
            )),
        }
    }
    for (asid, set) in &names {
        let ttbs: BTreeSet<u64> = set.iter().map(|(t, _)| *t).collect();
        if ttbs.len() > 1 {
            errs.push(format!(
                "inv 1: ASID {asid} names {} translations: {}",
                ttbs.len(),
                set.iter()
                    .map(|(t, who)| format!("{who} TTB0 {t:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let in_use = w.core.asids_in_use();
    if (carried.len() as u32) > in_use {
        errs.push(format!(
            "ASIDs: {} carried (CDs, domains: {carried:?}) but the allocator has {in_use} in use",
            carried.len()
        ));
    }

    // Agreement: what devices reach is what the books say. Memory must say
    // exactly what the books say; the caches may still hold the device's
    // configuration from before a failed operation (until a sync covering
    // the device completes), but never a translation its domain no longer
    // has, nor another domain's.
    let fmt = |p: Option<u64>| p.map_or("nothing".to_string(), |p| format!("{p:#x}"));
    let empty = BTreeSet::new();
    for &(sid, ssid) in &w.universe {
        let att = w.core.attached_domain(sid, ssid);
        let older = before.allowed.get(&(sid, ssid)).unwrap_or(&empty);
        for &iova in &PROBES {
            let books = att.and_then(|d| w.core.iova_to_phys(d, iova).map(|(pa, _)| pa));
            let mem = w.uncached(sid, ssid, iova);
            if mem.is_some() && mem != books {
                errs.push(format!(
                    "agreement: ({sid}, {ssid}) reaches {iova:#x} -> {} from memory (STE/CD/tables), but the books say {} ({att:?})",
                    fmt(mem),
                    fmt(books)
                ));
            }
            let cached = w.probe(sid, ssid, iova);
            if cached.is_some() && cached != books {
                let old = older.iter().copied().find(|&d| {
                    Some(d) != att && w.core.iova_to_phys(d, iova).map(|(pa, _)| pa) == cached
                });
                if let Some(old) = old {
                    before.notes.push(format!(
                        "({sid}, {ssid}) still uses {old:?} through the caches; books: {att:?}"
                    ));
                } else if older.is_empty() {
                    errs.push(format!(
                        "agreement: ({sid}, {ssid}) reaches {iova:#x} -> {} through the SMMU's caches, but the books say {} ({att:?}), and nothing older may be cached here",
                        fmt(cached),
                        fmt(books),
                    ));
                } else {
                    errs.push(format!(
                        "agreement: ({sid}, {ssid}) reaches {iova:#x} -> {} through the SMMU's caches, but the books say {} ({att:?}), and the older configurations ({older:?}) give {:?}",
                        fmt(cached),
                        fmt(books),
                        older
                            .iter()
                            .map(|&d| fmt(w.core.iova_to_phys(d, iova).map(|(pa, _)| pa)))
                            .collect::<Vec<_>>()
                    ));
                }
            }
        }
    }

    // Nothing the SMMU holds or reads points at freed memory.
    let live_roots: BTreeSet<u64> = doms.iter().map(|d| d.ttbr).collect();
    for &sid in &sids {
        for (how, ste) in [
            ("cached", w.m.smmu.cached_ste(sid)),
            ("in memory", w.m.smmu.ste_at(sid).ok()),
        ] {
            let Some(ste) = ste else { continue };
            if ste.valid && ste.config == SteConfig::S1Trans {
                match w.m.mem.block_containing(ste.s1_context_ptr) {
                    Some(b) if b.kind == BlockKind::Dma => {}
                    b => errs.push(format!(
                        "freed memory: the STE of stream {sid} ({how}) points at a CD table at {:#x}, which is not live ({b:?})",
                        ste.s1_context_ptr
                    )),
                }
            }
        }
        for idx in 0..(1u32 << w.ssid_bits) {
            if let Some(cd) = w.m.smmu.cached_cd(sid, idx) {
                if cd.valid && !live_roots.contains(&cd.ttb0) {
                    errs.push(format!(
                        "freed memory: the SMMU caches a CD ({sid}, {idx}) (ASID {}) whose TTB0 {:#x} is no live domain's",
                        cd.asid, cd.ttb0
                    ));
                }
            }
        }
    }

    // Page-table pages.
    for d in &doms {
        let mut bytes = 0usize;
        for (t, level) in reachable_tables(&w.m.mem, d.ttbr) {
            let want = if level < 3 { 8192 } else { 4096 };
            match w.m.mem.block_containing(t) {
                Some(b) if b.paddr == t && b.kind == BlockKind::Dma && b.size == want => {
                    bytes += b.size
                }
                b => errs.push(format!(
                    "tables: {:?}'s level-{level} table at {t:#x} is not a live {want}-byte table block ({b:?}): freed under the SMMU",
                    d.id
                )),
            }
        }
        let reach = bytes.div_ceil(4096) as u32;
        match w.core.pt_pages(d.id) {
            Ok(p) if p == reach => {}
            Ok(p) if p > reach && pending == Some(d.id) => {}
            r => errs.push(format!(
                "pt_pages({:?}) = {r:?} but {reach} pages of tables are reachable from its TTB0",
                d.id
            )),
        }
    }
}

/// Check 3: unmap whatever is still mapped (each page touched by every
/// device first); an `Ok` unmap means no device reaches the page; then the
/// page-table books must be exact.
fn check_unmap(w: &World, before: Before<'_>, errs: &mut Vec<String>) {
    let live: Vec<DomainId> = w.core.domains().collect();
    for d in live {
        let mut leaves = Vec::new();
        let _ = w.core.with_page_table(d, |pt| {
            pt.for_each_leaf(&mut |iova, pa, size, _| leaves.push((iova, pa, size)))
        });
        for (iova, pa, size) in leaves {
            for &(sid, ssid) in &w.universe {
                let _ = w.probe(sid, ssid, iova);
            }
            match w.core.unmap(d, iova, size) {
                Ok(n) if n == size => {}
                r => {
                    errs.push(format!(
                        "unmap after the failure: {d:?} [{iova:#x}, +{size:#x}) -> {r:?}"
                    ));
                    continue;
                }
            }
            for &(sid, ssid) in &w.universe {
                for probe in [iova, iova + size - KIB4] {
                    if let Some(got) = w.probe(sid, ssid, probe) {
                        if (pa..pa + size).contains(&got) {
                            errs.push(format!(
                                "inv 3: unmap of {d:?} [{iova:#x}, +{size:#x}) returned Ok but ({sid}, {ssid}) still reaches {probe:#x} -> {got:#x}"
                            ));
                        }
                    }
                }
            }
        }
    }
    // Everything unmapped: the books must equal the reachable tables.
    check_state(w, None, before, errs);
}

/// What the second injection (in the retry) did.
#[derive(Debug, Default, Clone, Copy)]
struct Second {
    reached: bool,
    batch_len: u32,
}

/// Follow-ups once the injection is cleared: the failed operation is
/// retried (with `second` injected into the retry, if given; if the retry
/// returns `Ok`, the SMMU must do exactly what the books say), then every
/// domain moves to a fresh ASID (after an `Ok`, no CD in memory or in the
/// SMMU's caches may carry the domain's TTB0 with another ASID).
#[allow(clippy::too_many_arguments)]
fn check_follow_ups(
    w: &mut World,
    sc: &Scenario,
    pending: Option<DomainId>,
    allowed: &mut Allowed,
    second: Option<(Kind, Point)>,
    out: &mut Second,
    notes: &mut Vec<String>,
    errs: &mut Vec<String>,
) {
    allow_current(w, allowed);
    let armed = second.map(|(k, p)| (k, arm(w, k, p)));
    let r = (sc.op)(w);
    if let Some((k, before)) = armed {
        let (reached, batch_len) = disarm(w, k, before);
        *out = Second { reached, batch_len };
        if !reached {
            return;
        }
        if k == Kind::Reject && second.unwrap().1.entry >= batch_len {
            out.reached = false;
            return;
        }
    }
    let none = Allowed::new();
    let mut e = Vec::new();
    let b = if r.is_ok() {
        Before::strict(&none, notes)
    } else {
        Before { allowed, notes }
    };
    check_state(w, pending, b, &mut e);
    errs.extend(e.into_iter().map(|e| format!("[retried: {r:?}] {e}")));
    if r.is_err() {
        allow_current(w, allowed);
    }

    let live: Vec<DomainId> = w.core.domains().collect();
    for d in live {
        let ttbr = {
            let mut t = None;
            w.core.audit(
                |x| {
                    if x.id == d {
                        t = Some(x.ttbr)
                    }
                },
                |_| (),
            );
            t.expect("live domain")
        };
        match w.core.reassign_asid(d) {
            Ok(new) => {
                let mut cds = Vec::new();
                for &dev in &w.universe {
                    if let Ok(cd) = w.m.smmu.cd_at(dev.0, w.ss(dev.1)) {
                        cds.push((format!("CD of {dev:?} in memory"), cd));
                    }
                }
                let mut sids: Vec<u32> = w.universe.iter().map(|d| d.0).collect();
                sids.dedup();
                for sid in sids {
                    for idx in 0..(1u32 << w.ssid_bits) {
                        if let Some(cd) = w.m.smmu.cached_cd(sid, idx) {
                            cds.push((format!("cached CD ({sid}, {idx})"), cd));
                        }
                    }
                }
                for (who, cd) in cds {
                    if cd.valid && cd.ttb0 == ttbr && cd.asid != new {
                        errs.push(format!(
                            "[reassign_asid] reassign_asid({d:?}) returned Ok({new}) but the {who} still carries ASID {} with its TTB0 {ttbr:#x}",
                            cd.asid
                        ));
                    }
                }
            }
            // Pinned SVA spaces; no ASID left to move to.
            Err(Error::Busy | Error::NoAsid) => {}
            Err(e) => errs.push(format!(
                "[reassign_asid] reassign_asid({d:?}) after the failure: {e:?}"
            )),
        }
    }
    let mut e = Vec::new();
    let b = Before { allowed, notes };
    check_state(w, pending, b, &mut e);
    errs.extend(e.into_iter().map(|e| format!("[reassign_asid] {e}")));

    // Churn: a new domain for a new stream (which may have to recycle the
    // ASID of an idle domain, perhaps one the SMMU may still use), then
    // gone again.
    let Ok(d) = w.core.alloc_domain() else {
        return;
    };
    w.doms.push(d);
    w.map(w.doms.len() - 1, P1, KIB4);
    let (sid, ssid) = CHURN;
    match w.core.attach(sid, ssid, d) {
        Ok(()) => {
            let _ = w.probe(sid, ssid, P1);
            let mut e = Vec::new();
            let b = Before { allowed, notes };
            check_state(w, pending, b, &mut e);
            errs.extend(
                e.into_iter()
                    .map(|e| format!("[churn: attach {CHURN:?}] {e}")),
            );
            if let Err(e) = w.core.detach(sid, ssid) {
                errs.push(format!("[churn] detach {CHURN:?}: {e:?}"));
            }
        }
        Err(Error::NoAsid) => {}
        Err(e) => errs.push(format!("[churn] attach {CHURN:?}: {e:?}")),
    }
    if let Err(e) = w.core.free_domain(d) {
        errs.push(format!("[churn] free_domain: {e:?}"));
    }
    let mut e = Vec::new();
    let b = Before { allowed, notes };
    check_state(w, pending, b, &mut e);
    errs.extend(e.into_iter().map(|e| format!("[churn: gone again] {e}")));
}

/// Check 4: everything can be undone.
fn check_undo(w: &World, before: Before<'_>, errs: &mut Vec<String>) {
    // Domains without devices go first, while the other streams are still
    // attached (a domain the SMMU may still use through its caches must
    // not be freed under it).
    let mut idle: Vec<DomainId> = Vec::new();
    w.core.audit(
        |d| {
            if d.devices.is_empty() {
                idle.push(d.id)
            }
        },
        |_| (),
    );
    for d in idle {
        if let Err(e) = w.core.free_domain(d) {
            if let Err(e2) = w.core.free_domain(d) {
                errs.push(format!(
                    "undo: free_domain({d:?}) (no devices listed) failed twice: {e:?}, {e2:?}"
                ));
            }
        }
    }
    check_state(w, None, before, errs);
    let mut listed: BTreeSet<(u32, u32)> = BTreeSet::new();
    w.core
        .audit(|d| listed.extend(d.devices.iter().copied()), |_| ());
    for &dev in &w.universe {
        if w.core.attached_domain(dev.0, dev.1).is_some() {
            listed.insert(dev);
        }
    }
    for (sid, ssid) in listed {
        if let Err(e) = w.core.detach(sid, ssid) {
            if let Err(e2) = w.core.detach(sid, ssid) {
                errs.push(format!(
                    "undo: detach ({sid}, {ssid}) failed twice: {e:?}, {e2:?}"
                ));
            }
        }
    }
    for &dev in &w.universe {
        if let Some(d) = w.core.attached_domain(dev.0, dev.1) {
            errs.push(format!(
                "undo: {dev:?} still attached to {d:?} after detach"
            ));
        }
    }
    let live: Vec<DomainId> = w.core.domains().collect();
    for d in live {
        if let Err(e) = w.core.free_domain(d) {
            if let Err(e2) = w.core.free_domain(d) {
                errs.push(format!(
                    "undo: free_domain({d:?}) failed twice: {e:?}, {e2:?}"
                ));
            }
        }
    }
    let left: Vec<DomainId> = w.core.domains().collect();
    if !left.is_empty() {
        errs.push(format!("undo: domains still live: {left:?}"));
    }
    let mut iovas: Vec<u64> = PROBES.to_vec();
    iovas.extend((0..M_PAGES).map(|i| M + i * MIB2));
    for &(sid, ssid) in &w.universe {
        for &iova in &iovas {
            if let Some(pa) = w.uncached(sid, ssid, iova) {
                errs.push(format!(
                    "undo: after detaching and freeing everything ({sid}, {ssid}) still translates {iova:#x} -> {pa:#x} from memory"
                ));
            }
            if let Some(pa) = w.probe(sid, ssid, iova) {
                errs.push(format!(
                    "undo: after detaching and freeing everything ({sid}, {ssid}) still reaches {iova:#x} -> {pa:#x} through the caches"
                ));
            }
        }
    }
    let mut sids: Vec<u32> = w.universe.iter().map(|d| d.0).collect();
    sids.dedup();
    for sid in sids {
        if let Some(ste) = w.m.smmu.cached_ste(sid) {
            if ste.valid && ste.config != SteConfig::Abort {
                errs.push(format!(
                    "undo: the SMMU still caches a {:?} STE for stream {sid} (context {:#x})",
                    ste.config, ste.s1_context_ptr
                ));
            }
        }
        for idx in 0..(1u32 << w.ssid_bits) {
            if let Some(cd) = w.m.smmu.cached_cd(sid, idx) {
                if cd.valid {
                    errs.push(format!(
                        "undo: the SMMU still caches CD ({sid}, {idx}) (ASID {}, TTB0 {:#x})",
                        cd.asid, cd.ttb0
                    ));
                }
            }
        }
    }
    let now = w.m.mem.live_blocks();
    if now != w.boot_blocks {
        let extra: Vec<_> = now.iter().filter(|b| !w.boot_blocks.contains(b)).collect();
        let gone: Vec<_> = w.boot_blocks.iter().filter(|b| !now.contains(b)).collect();
        errs.push(format!(
            "undo: live blocks differ from right after boot: leaked {} ({}), missing {gone:?}",
            extra.len(),
            extra
                .iter()
                .map(|b| format!("{:#x}+{:#x}", b.paddr, b.size))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let asids = w.core.asids_in_use();
    if asids != 0 {
        errs.push(format!("undo: {asids} ASIDs still in use with no domain"));
    }
    let v = w.m.smmu.violations();
    if !v.is_empty() {
        errs.push(format!("model: architecture violations: {v:?}"));
    }
}

// ---------------------------------------------------------------------------
// Exploration
// ---------------------------------------------------------------------------

/// One injection point: (N, entry) for reject, N otherwise.
#[derive(Debug, Clone, Copy)]
struct Point {
    n: u32,
    entry: u32,
}

impl Point {
    fn describe(self, kind: Kind, batch_len: u32) -> String {
        let n = self.n;
        match kind {
            Kind::Reject => format!("doorbell {n}, entry {} of {batch_len}", self.entry),
            Kind::Timeout => format!("from doorbell {n} (a batch of {batch_len})"),
            Kind::TimeoutOnce => format!("doorbell {n} only (a batch of {batch_len})"),
            Kind::Alloc => format!("allocation {n}"),
        }
    }
}

/// Arms `kind` at `p`; returns the allocator's failure count before.
fn arm(w: &World, kind: Kind, p: Point) -> u64 {
    let failures = w.m.mem.stats().failures;
    let mut s = w.inj.lock().unwrap();
    *s = Inj::default();
    s.plan = match kind {
        Kind::Timeout => Plan::Freeze {
            from: p.n,
            once: false,
        },
        Kind::TimeoutOnce => Plan::Freeze {
            from: p.n,
            once: true,
        },
        Kind::Reject => Plan::Reject {
            batch: p.n,
            entry: p.entry,
        },
        Kind::Alloc => {
            w.m.mem.fail_nth_alloc(p.n as u64);
            Plan::Off
        }
    };
    failures
}

/// Clears every injection (the queue runs again, allocations succeed);
/// returns whether the point was reached and the targeted batch's length.
fn disarm(w: &World, kind: Kind, failures_before: u64) -> (bool, u32) {
    let mut s = w.inj.lock().unwrap();
    let out = match kind {
        Kind::Alloc => (w.m.mem.stats().failures > failures_before, 1),
        _ => (s.batch_len.is_some(), s.batch_len.unwrap_or(0)),
    };
    *s = Inj::default();
    w.m.mem.clear_failures();
    out
}

struct Outcome {
    reached: bool,
    /// Entries in the targeted batch (reject).
    batch_len: u32,
    result: String,
    second: Second,
    errs: Vec<String>,
    /// Whether a device still used an older configuration through the
    /// caches after the failure (allowed; counted for the report).
    ghost: bool,
}

fn short(r: &Result<(), Error>) -> String {
    match r {
        Ok(()) => "Ok".to_string(),
        Err(Error::Timeout(_)) => "Timeout".to_string(),
        Err(Error::Hardware(_)) => "Hardware".to_string(),
        Err(e) => format!("{e:?}"),
    }
}

/// Boots the scenario, injects `kind` at `p` into its operation (and, with
/// `second`, another failure into the operation's retry) and runs every
/// check.
fn run_point(sc: &Scenario, kind: Kind, p: Point, second: Option<(Kind, Point)>) -> Outcome {
    let mut w = World::boot(sc);
    (sc.setup)(&mut w);
    w.warm();
    let mut allowed = Allowed::new();
    allow_current(&w, &mut allowed);
    let before = arm(&w, kind, p);
    let r = (sc.op)(&mut w);
    let (reached, batch_len) = disarm(&w, kind, before);
    let mut out = Outcome {
        reached,
        batch_len,
        result: short(&r),
        second: Second::default(),
        errs: Vec::new(),
        ghost: false,
    };
    if !reached {
        if let Err(e) = r {
            out.errs
                .push(format!("without injection the operation failed: {e:?}"));
        }
        return out;
    }
    if second.is_some() && kind == Kind::Reject && p.entry >= batch_len {
        return out;
    }
    let pending = sc.tables.then(|| w.doms[0]);
    let mut notes = Vec::new();
    let mut e = Vec::new();
    let b = Before {
        allowed: &allowed,
        notes: &mut notes,
    };
    check_state(&w, pending, b, &mut e);
    out.ghost = !notes.is_empty();
    out.errs
        .extend(e.into_iter().map(|e| format!("[after the failure] {e}")));
    let mut e = Vec::new();
    check_follow_ups(
        &mut w,
        sc,
        pending,
        &mut allowed,
        second,
        &mut out.second,
        &mut notes,
        &mut e,
    );
    if second.is_some() && !out.second.reached {
        // The retry did not reach the second point: nothing new to check.
        return out;
    }
    out.errs.extend(e);
    let mut e = Vec::new();
    let b = Before {
        allowed: &allowed,
        notes: &mut notes,
    };
    check_unmap(&w, b, &mut e);
    out.errs
        .extend(e.into_iter().map(|e| format!("[unmap afterwards] {e}")));
    let mut e = Vec::new();
    let b = Before {
        allowed: &allowed,
        notes: &mut notes,
    };
    check_undo(&w, b, &mut e);
    out.errs
        .extend(e.into_iter().map(|e| format!("[undo] {e}")));
    out
}

fn run_point_caught(sc: &Scenario, kind: Kind, p: Point, second: Option<(Kind, Point)>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run_point(sc, kind, p, second))) {
        Ok(o) => o,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            // Stops the exploration of this operation.
            Outcome {
                reached: false,
                batch_len: 0,
                result: "panic".into(),
                second: Second::default(),
                errs: vec![format!("panicked: {msg}")],
                ghost: false,
            }
        }
    }
}

/// Calls `run` at every injection point of `kind` in order (reject: every
/// entry of every batch), until `run` says a point was not reached; `run`
/// returns (reached, length of the targeted batch).
fn for_each_point(kind: Kind, mut run: impl FnMut(Point) -> (bool, u32)) {
    let mut n = 1u32;
    loop {
        assert!(n < 400, "{} injection points and counting", kind.name());
        let mut entry = 0u32;
        loop {
            let (reached, len) = run(Point { n, entry });
            if !reached {
                return;
            }
            entry += 1;
            if kind != Kind::Reject || entry >= len {
                break;
            }
        }
        n += 1;
    }
}

/// Per operation: points explored, failing points, points where a device
/// kept an older configuration cached, results.
#[derive(Default)]
struct Tally {
    points: u32,
    failing: u32,
    ghosts: u32,
    results: BTreeMap<String, u32>,
}

impl Tally {
    fn add(&mut self, o: &Outcome, result: &str) {
        self.points += 1;
        self.failing += !o.errs.is_empty() as u32;
        self.ghosts += o.ghost as u32;
        *self.results.entry(result.to_string()).or_default() += 1;
    }
    fn line(&self, name: &str) -> String {
        format!(
            "  {:<66} {:>4} points {:>3} failing {:>3} old-config-cached  {:?}\n",
            name, self.points, self.failing, self.ghosts, self.results
        )
    }
}

fn finish(title: &str, started: std::time::Instant, total: u32, report: &str, failures: &[String]) {
    eprintln!(
        "robust_inject: {title}, {total} points in {:.1?}\n{report}",
        started.elapsed()
    );
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(80).map(|s| s.as_str()).collect();
        panic!(
            "{} violations with {title} ({} shown):\n{}",
            failures.len(),
            shown.len(),
            shown.join("\n")
        );
    }
}

/// Explores every injection point of `kind` in every scenario; prints the
/// points per operation; fails with every violation found.
fn explore(kind: Kind) {
    let started = std::time::Instant::now();
    let mut report = String::new();
    let mut failures: Vec<String> = Vec::new();
    let mut total = 0;
    for sc in scenarios() {
        let mut tally = Tally::default();
        for_each_point(kind, |p| {
            let o = run_point_caught(&sc, kind, p, None);
            let at = if o.reached {
                p.describe(kind, o.batch_len)
            } else {
                "beyond the last point".to_string()
            };
            for e in &o.errs {
                failures.push(format!(
                    "{} / {} / {at} / returned {}: {e}",
                    sc.name,
                    kind.name(),
                    o.result
                ));
            }
            if o.reached {
                tally.add(&o, &o.result);
            }
            (o.reached, o.batch_len)
        });
        total += tally.points;
        report.push_str(&tally.line(sc.name));
    }
    finish(
        &format!("{} injection", kind.name()),
        started,
        total,
        &report,
        &failures,
    );
}

/// Whether the operation reaches injection point `p` of `kind` (no checks).
fn reaches(sc: &Scenario, kind: Kind, p: Point) -> (bool, u32) {
    let mut w = World::boot(sc);
    (sc.setup)(&mut w);
    let before = arm(&w, kind, p);
    let _ = (sc.op)(&mut w);
    disarm(&w, kind, before)
}

/// Explores every pair: a failure of `first` at every point of the
/// operation, then a failure of `second` at every point of its retry.
fn explore_pairs(first: Kind, second: Kind) {
    let started = std::time::Instant::now();
    let mut report = String::new();
    let mut failures: Vec<String> = Vec::new();
    let mut total = 0;
    for sc in scenarios() {
        let mut tally = Tally::default();
        for_each_point(first, |p1| {
            let (reached, len1) = reaches(&sc, first, p1);
            if !reached {
                return (false, 0);
            }
            for_each_point(second, |p2| {
                let o = run_point_caught(&sc, first, p1, Some((second, p2)));
                let reached2 = o.reached && o.second.reached;
                let at = format!(
                    "{} / retry: {}",
                    p1.describe(first, len1),
                    if reached2 {
                        p2.describe(second, o.second.batch_len)
                    } else {
                        "beyond the last point".to_string()
                    }
                );
                for e in &o.errs {
                    failures.push(format!(
                        "{} / {} then {} / {at} / first returned {}: {e}",
                        sc.name,
                        first.name(),
                        second.name(),
                        o.result
                    ));
                }
                if reached2 {
                    tally.add(&o, &o.result);
                }
                (reached2, o.second.batch_len)
            });
            (true, len1)
        });
        total += tally.points;
        report.push_str(&tally.line(sc.name));
    }
    finish(
        &format!("{} then {} (in the retry)", first.name(), second.name()),
        started,
        total,
        &report,
        &failures,
    );
}

#[test]
fn every_cmd_sync_timeout_leaves_the_smmu_and_the_books_in_agreement() {
    explore(Kind::Timeout);
}

#[test]
fn every_single_cmd_sync_timeout_leaves_the_smmu_and_the_books_in_agreement() {
    explore(Kind::TimeoutOnce);
}

#[test]
fn every_rejected_command_leaves_the_smmu_and_the_books_in_agreement() {
    explore(Kind::Reject);
}

#[test]
fn every_allocation_failure_leaves_the_smmu_and_the_books_in_agreement() {
    explore(Kind::Alloc);
}

/// A rejected command, then another rejected command (or a CMD_SYNC
/// timeout) at every point of the retry: recovery from a failure, failing.
#[test]
fn a_rejected_command_then_another_in_the_retry() {
    explore_pairs(Kind::Reject, Kind::Reject);
}

#[test]
fn a_rejected_command_then_a_timeout_in_the_retry() {
    explore_pairs(Kind::Reject, Kind::TimeoutOnce);
}

/// A CMD_SYNC timeout, then another one or a rejected command at every
/// point of the retry.
#[test]
fn a_timeout_then_another_in_the_retry() {
    explore_pairs(Kind::TimeoutOnce, Kind::TimeoutOnce);
}

#[test]
fn a_timeout_then_a_rejected_command_in_the_retry() {
    explore_pairs(Kind::TimeoutOnce, Kind::Reject);
}

/// The injectors do what they claim, and every scenario passes every check
/// without an injection.
#[test]
fn the_injectors_work_and_the_scenarios_are_clean() {
    for sc in scenarios() {
        let mut w = World::boot(&sc);
        (sc.setup)(&mut w);
        w.warm();
        let r = (sc.op)(&mut w);
        assert_eq!(r, Ok(()), "{}", sc.name);
        let mut errs = Vec::new();
        let (none, mut notes) = (BTreeMap::new(), Vec::new());
        let b = Before::strict(&none, &mut notes);
        check_state(&w, None, b, &mut errs);
        let b = Before::strict(&none, &mut notes);
        check_unmap(&w, b, &mut errs);
        let b = Before::strict(&none, &mut notes);
        check_undo(&w, b, &mut errs);
        assert!(errs.is_empty(), "{}: {errs:#?}", sc.name);
    }
    // A frozen CMDQ_CONS makes the first CMD_SYNC of an attach time out,
    // although the model ran it.
    let all = scenarios();
    let s = all
        .iter()
        .find(|s| s.name == "attach: first attach of a stream")
        .unwrap();
    let mut w = World::boot(s);
    (s.setup)(&mut w);
    w.inj.lock().unwrap().plan = Plan::Freeze {
        from: 1,
        once: false,
    };
    let seq = w.m.smmu.command_seq();
    let r = (s.op)(&mut w);
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(w.m.smmu.command_seq() > seq, "the model ran the batch");
    // An illegal opcode is rejected by the model and reported by the driver.
    let mut w = World::boot(s);
    (s.setup)(&mut w);
    w.inj.lock().unwrap().plan = Plan::Reject { batch: 1, entry: 0 };
    let seq = w.m.smmu.command_seq();
    let r = (s.op)(&mut w);
    assert!(
        matches!(
            r,
            Err(Error::Hardware(iommu_server::HardwareError::CommandError {
                code: iommu_server::CmdqErrorCode::Illegal,
                opcode: 0x7f
            }))
        ),
        "{r:?}"
    );
    assert!(
        w.m.smmu
            .commands_since(seq)
            .iter()
            .any(|c| c.decoded == Err(1)),
        "the model logged CERROR_ILL"
    );
}

/// The checks are not vacuous: violations planted by hand are reported.
#[test]
fn the_checks_see_planted_violations() {
    use iommu_server::hal::DmaAllocator;
    let all = scenarios();
    // Two domains, streams 1 and 2 attached.
    let s = all
        .iter()
        .find(|s| s.name == "attach: move a single-CD stream to another domain")
        .unwrap();
    let (none, mut notes) = (BTreeMap::new(), Vec::new());
    let found = |w: &World, notes: &mut Vec<String>| {
        let mut errs = Vec::new();
        check_state(w, None, Before::strict(&none, notes), &mut errs);
        errs
    };

    // A stream the books do not list, in bypass: memory disagrees.
    let mut w = World::boot(s);
    (s.setup)(&mut w);
    w.core.set_stream_bypass(3, true).unwrap();
    let errs = found(&w, &mut notes);
    assert!(
        errs.iter()
            .any(|e| e.contains("(3, 0) reaches") && e.contains("from memory")),
        "{errs:#?}"
    );

    // Stream 1's CD rewritten behind the core's back with domain 1's ASID:
    // one ASID, two TTB0s (inv 1), and a CD its domain does not own (inv 2).
    let mut w = World::boot(s);
    (s.setup)(&mut w);
    let a1 = w.core.domain_asid(w.doms[1]).unwrap();
    let cd = w.m.smmu.ste_at(1).unwrap().s1_context_ptr;
    let q0 = w.m.mem.read_u64(cd).unwrap();
    w.m.mem
        .write_u64(cd, (q0 & !(0xffff << 48)) | (a1 as u64) << 48)
        .unwrap();
    let errs = found(&w, &mut notes);
    assert!(errs.iter().any(|e| e.starts_with("inv 1:")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.starts_with("inv 2:")), "{errs:#?}");

    // A table block nobody frees: the undo check reports the leak.
    let mut w = World::boot(s);
    (s.setup)(&mut w);
    let mut mem = w.m.mem.clone();
    let _leak = mem.alloc(4096, 4096).unwrap();
    let mut errs = Vec::new();
    check_undo(&w, Before::strict(&none, &mut notes), &mut errs);
    assert!(errs.iter().any(|e| e.contains("leaked 1")), "{errs:#?}");
}
