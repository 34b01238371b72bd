//! The `load` role: thousands of mixed requests against a log.
//!
//! The client keeps its own log of what it should hold (live domains and
//! memory handles, every mapping record) and, before each request, works out
//! from the log alone what the server must answer: the handler's checks in
//! the handler's order (server/src/handler/mod.rs `map_batch`, `unmap`,
//! ...). Every answer must match; refused requests must change nothing
//! (the log does not change on a refusal, and the periodic `stats` and the
//! final probes compare the server's view with it).

use crate::checks::Checks;
use crate::{connect, frame, micros, now, Client, Rng};
use heapless::Vec;
use iommu_client::{
    ClientStats, DomainId, Error, ErrorCode, MemoryHandle, Perms, Region, WIRE_PAGE_SIZE,
};
use procrt::{println, StartInfo};
use sel4_abi::CPtr;

/// Operations per client.
const OPS: u32 = 3000;
/// Every mapping lands in a 48-page window at IOVA 1 MiB of some domain,
/// so that overlaps, partial unmaps and holes are frequent.
const WINDOW_PFN: u64 = 0x100;
const WINDOW: u64 = 48;
/// The handler's per-client table of mapping records (`MAX_MAPPINGS`).
const SERVER_MAX_RECORDS: usize = 128;
/// IOVAs are 48 bits: page numbers below 2^36.
const MAX_PFN: u64 = 1 << 36;
/// Frames of the DMA pool used for registrations.
const POOL_FRAMES: u64 = 8;
/// The client-index bits of a handle (handler: `slot | client << 8 | ...`):
/// flipping one makes the handle another client's.
const FOREIGN: u32 = 1 << 8;

#[derive(Clone, Copy, Debug)]
struct Rec {
    dom: DomainId,
    pfn: u64,
    pages: u64,
    mem: MemoryHandle,
}

impl Rec {
    fn end(&self) -> u64 {
        self.pfn + self.pages
    }
}

/// The log: what this client holds according to the answers it got.
struct Log {
    q: ClientStats,
    domains: Vec<DomainId, 16>,
    stale_domains: Vec<DomainId, 16>,
    memory: Vec<(MemoryHandle, u64), 16>,
    stale_memory: Vec<MemoryHandle, 16>,
    recs: Vec<Rec, SERVER_MAX_RECORDS>,
    frames: u32,
}

type Outcome = Result<(), ErrorCode>;

/// One map entry in pages.
#[derive(Clone, Copy)]
struct Entry {
    pfn: u64,
    mem: MemoryHandle,
    off: u64,
    pages: u64,
}

impl Log {
    fn mapped_pages(&self) -> u64 {
        self.recs.iter().map(|r| r.pages).sum()
    }

    fn mem_pages(&self, h: MemoryHandle) -> Option<u64> {
        self.memory.iter().find(|m| m.0 == h).map(|m| m.1)
    }

    fn predict_map(&self, d: DomainId, entries: &[Entry]) -> Outcome {
        if !self.domains.contains(&d) {
            return Err(ErrorCode::NoSuchDomain);
        }
        let mut accepted: Vec<(u64, u64), 8> = Vec::new();
        let mut new_pages = 0;
        for e in entries {
            if e.pages == 0 {
                return Err(ErrorCode::Malformed);
            }
            let size = self.mem_pages(e.mem).ok_or(ErrorCode::NoSuchMemory)?;
            if e.off + e.pages > size {
                return Err(ErrorCode::OutOfRange);
            }
            let end = e.pfn.checked_add(e.pages).ok_or(ErrorCode::OutOfRange)?;
            if end > MAX_PFN {
                return Err(ErrorCode::OutOfRange);
            }
            let clash = self
                .recs
                .iter()
                .any(|r| r.dom == d && r.pfn < end && e.pfn < r.end())
                || accepted.iter().any(|&(s, x)| s < end && e.pfn < x);
            if clash {
                return Err(ErrorCode::Overlap);
            }
            new_pages += e.pages;
            let _ = accepted.push((e.pfn, end));
        }
        if (self.mapped_pages() + new_pages) * WIRE_PAGE_SIZE > self.q.max_mapped_bytes {
            return Err(ErrorCode::QuotaExceeded);
        }
        let records = self.recs.len() + entries.len();
        if records > self.q.max_mappings as usize {
            return Err(ErrorCode::QuotaExceeded);
        }
        if records > SERVER_MAX_RECORDS {
            return Err(ErrorCode::NoMemory);
        }
        Ok(())
    }

    fn apply_map(&mut self, d: DomainId, entries: &[Entry]) {
        for e in entries {
            let _ = self.recs.push(Rec {
                dom: d,
                pfn: e.pfn,
                pages: e.pages,
                mem: e.mem,
            });
        }
    }

    fn predict_unmap(&self, d: DomainId, pfn: u64, pages: u64) -> Outcome {
        if !self.domains.contains(&d) {
            return Err(ErrorCode::NoSuchDomain);
        }
        if pages == 0 {
            return Err(ErrorCode::Malformed);
        }
        let end = pfn.checked_add(pages).ok_or(ErrorCode::OutOfRange)?;
        let mut covered = 0;
        let mut splits = 0;
        for r in self.recs.iter().filter(|r| r.dom == d) {
            let (lo, hi) = (r.pfn.max(pfn), r.end().min(end));
            if lo < hi {
                covered += hi - lo;
                if r.pfn < pfn && r.end() > end {
                    splits += 1;
                }
            }
        }
        if covered != pages {
            return Err(ErrorCode::NotMapped);
        }
        if self.recs.len() + splits > SERVER_MAX_RECORDS {
            return Err(ErrorCode::NoMemory);
        }
        Ok(())
    }

    fn apply_unmap(&mut self, d: DomainId, pfn: u64, pages: u64) {
        let end = pfn + pages;
        let mut kept: Vec<Rec, SERVER_MAX_RECORDS> = Vec::new();
        for r in self.recs.iter() {
            let (lo, hi) = (r.pfn.max(pfn), r.end().min(end));
            if r.dom != d || lo >= hi {
                let _ = kept.push(*r);
                continue;
            }
            if lo > r.pfn {
                let _ = kept.push(Rec {
                    pages: lo - r.pfn,
                    ..*r
                });
            }
            if hi < r.end() {
                let _ = kept.push(Rec {
                    pfn: hi,
                    pages: r.end() - hi,
                    ..*r
                });
            }
        }
        self.recs = kept;
    }

    fn predict_alloc(&self) -> Outcome {
        let n = self.domains.len() as u32;
        if n >= self.q.max_domains || n >= self.q.max_asids {
            return Err(ErrorCode::QuotaExceeded);
        }
        Ok(())
    }

    fn predict_free(&self, d: DomainId) -> Outcome {
        if self.domains.contains(&d) {
            Ok(())
        } else {
            Err(ErrorCode::NoSuchDomain)
        }
    }

    fn apply_free(&mut self, d: DomainId) {
        self.recs.retain(|r| r.dom != d);
        self.domains.retain(|&x| x != d);
        if self.stale_domains.is_full() {
            self.stale_domains.remove(0);
        }
        let _ = self.stale_domains.push(d);
    }

    /// Registering `k` frames, one request each (the client library
    /// unregisters the handle again if a later frame is refused).
    fn predict_register(&self, k: u32) -> Outcome {
        if self.memory.len() as u32 >= self.q.max_memory_regions
            || self.frames + k > self.q.max_memory_frames
        {
            return Err(ErrorCode::QuotaExceeded);
        }
        Ok(())
    }

    fn predict_unregister(&self, h: MemoryHandle) -> Outcome {
        if self.mem_pages(h).is_none() {
            return Err(ErrorCode::NoSuchMemory);
        }
        if self.recs.iter().any(|r| r.mem == h) {
            return Err(ErrorCode::InUse);
        }
        Ok(())
    }

    fn apply_unregister(&mut self, h: MemoryHandle) {
        if let Some(i) = self.memory.iter().position(|m| m.0 == h) {
            let (_, pages) = self.memory.swap_remove(i);
            self.frames -= pages as u32;
            if self.stale_memory.is_full() {
                self.stale_memory.remove(0);
            }
            let _ = self.stale_memory.push(h);
        }
    }

    /// Differences between the server's stats and the log.
    fn stats_match(&self, s: &ClientStats) -> bool {
        s.domains == self.domains.len() as u32
            && s.asids == self.domains.len() as u32
            && s.mappings == self.recs.len() as u32
            && s.mapped_bytes == self.mapped_pages() * WIRE_PAGE_SIZE
            && s.memory_regions == self.memory.len() as u32
            && s.memory_frames == self.frames
            && s.faults_pending == 0
            && s.faults_dropped == 0
    }
}

/// What happened, by outcome: index 0 is success, 1 + n the server's error
/// code n, and the last slot a refusal by the client library itself.
struct Tally {
    role: &'static str,
    op: u32,
    outcomes: [u32; 19],
    mismatches: u32,
}

const LOCAL: usize = 18;

impl Tally {
    fn slot(r: &Result<(), Error>) -> usize {
        match r {
            Ok(()) => 0,
            Err(Error::Iommu(code)) => 1 + *code as usize,
            Err(_) => LOCAL,
        }
    }

    /// Records the answer of one operation and whether it was the predicted
    /// one; returns whether it was.
    fn record(&mut self, what: &str, got: &Result<(), Error>, want: Outcome) -> bool {
        self.outcomes[Self::slot(got)] += 1;
        let matched = match got {
            Ok(()) => want.is_ok(),
            Err(Error::Iommu(c)) => want == Err(*c),
            // The transport failed or the reply made no sense.
            Err(_) => false,
        };
        if !matched {
            self.mismatches += 1;
            if self.mismatches <= 5 {
                println!(
                    "{}: MISMATCH at operation {} ({what}): server said {got:?}, the log says {want:?}",
                    self.role, self.op
                );
            }
        }
        matched
    }
}

fn pick_domain(log: &Log, rng: &mut Rng) -> DomainId {
    let r = rng.below(20);
    if r == 0 && !log.stale_domains.is_empty() {
        return log.stale_domains[rng.below(log.stale_domains.len() as u64) as usize];
    }
    if log.domains.is_empty() {
        return DomainId(rng.next_u64() as u32);
    }
    let d = log.domains[rng.below(log.domains.len() as u64) as usize];
    if r == 1 {
        DomainId(d.0 ^ FOREIGN)
    } else {
        d
    }
}

fn pick_memory(log: &Log, rng: &mut Rng) -> MemoryHandle {
    let r = rng.below(20);
    if r == 0 && !log.stale_memory.is_empty() {
        return log.stale_memory[rng.below(log.stale_memory.len() as u64) as usize];
    }
    if log.memory.is_empty() {
        return MemoryHandle(rng.next_u64() as u32);
    }
    let m = log.memory[rng.below(log.memory.len() as u64) as usize].0;
    if r == 1 {
        MemoryHandle(m.0 ^ FOREIGN)
    } else {
        m
    }
}

fn random_entry(log: &Log, rng: &mut Rng) -> Entry {
    let mem = pick_memory(log, rng);
    let size = log.mem_pages(mem).unwrap_or(1);
    Entry {
        pfn: WINDOW_PFN + rng.below(WINDOW),
        mem,
        // Now and then past the end of the memory (OutOfRange).
        off: rng.below(size + 1),
        pages: 1 + rng.below(6),
    }
}

fn map_one(iommu: &mut Client, d: DomainId, e: &Entry, perms: Perms) -> Result<(), Error> {
    iommu.map(
        d,
        e.pfn.wrapping_mul(WIRE_PAGE_SIZE),
        e.mem,
        e.off * WIRE_PAGE_SIZE,
        e.pages * WIRE_PAGE_SIZE,
        perms,
    )
}

struct Run<'a> {
    info: &'a StartInfo,
    iommu: Client,
    log: Log,
    rng: Rng,
    tally: Tally,
    stats_checks: u32,
    stats_mismatches: u32,
}

impl Run<'_> {
    fn frames(&self, first: u64, k: u64) -> Vec<CPtr, 8> {
        (0..k)
            .map(|i| frame(self.info, ((first + i) % POOL_FRAMES) as usize))
            .collect()
    }

    fn step(&mut self) {
        let r = self.rng.below(100);
        let (log, rng, iommu) = (&mut self.log, &mut self.rng, &mut self.iommu);
        match r {
            0..=3 => {
                let want = log.predict_alloc();
                let got = iommu.alloc_domain();
                let ok = self.tally.record("alloc_domain", &got.map(|_| ()), want);
                if let (true, Ok(d)) = (ok, got) {
                    let _ = log.domains.push(d);
                }
            }
            4..=5 => {
                let d = pick_domain(log, rng);
                let want = log.predict_free(d);
                let got = iommu.free_domain(d);
                if self.tally.record("free_domain", &got, want) && got.is_ok() {
                    log.apply_free(d);
                }
            }
            6..=9 => {
                let k = 1 + rng.below(3);
                let first = rng.below(POOL_FRAMES);
                let want = log.predict_register(k as u32);
                let caps = self.frames(first, k);
                let (log, iommu) = (&mut self.log, &mut self.iommu);
                let got = iommu.register_memory(&caps);
                let ok = self.tally.record("register_memory", &got.map(|_| ()), want);
                if let (true, Ok(m)) = (ok, got) {
                    let _ = log.memory.push((m.handle, m.len / WIRE_PAGE_SIZE));
                    log.frames += k as u32;
                }
            }
            10..=12 => {
                let h = pick_memory(log, rng);
                let want = log.predict_unregister(h);
                let got = iommu.unregister_memory(h);
                if self.tally.record("unregister_memory", &got, want) && got.is_ok() {
                    log.apply_unregister(h);
                }
            }
            13..=54 => {
                let d = pick_domain(log, rng);
                let e = random_entry(log, rng);
                let want = log.predict_map(d, &[e]);
                let got = map_one(iommu, d, &e, Perms::RW);
                if self.tally.record("map", &got, want) && got.is_ok() {
                    log.apply_map(d, &[e]);
                }
            }
            55..=64 => {
                let d = pick_domain(log, rng);
                let n = 2 + rng.below(3) as usize;
                let entries: Vec<Entry, 4> = (0..n).map(|_| random_entry(log, rng)).collect();
                let regions: Vec<Region, 4> = entries
                    .iter()
                    .map(|e| Region {
                        iova: e.pfn * WIRE_PAGE_SIZE,
                        memory: e.mem,
                        offset: e.off * WIRE_PAGE_SIZE,
                        len: e.pages * WIRE_PAGE_SIZE,
                        perms: Perms::READ,
                    })
                    .collect();
                let want = log.predict_map(d, &entries);
                let got = iommu.map_batch(d, &regions);
                if self.tally.record("map_batch", &got, want) && got.is_ok() {
                    log.apply_map(d, &entries);
                }
            }
            65..=89 => {
                let d = pick_domain(log, rng);
                let mine: Vec<Rec, SERVER_MAX_RECORDS> =
                    log.recs.iter().filter(|r| r.dom == d).copied().collect();
                // Half the time a piece of an existing mapping (whole, head,
                // tail or middle), else any range of the window.
                let (pfn, pages) = if !mine.is_empty() && rng.below(2) == 0 {
                    let rec = mine[rng.below(mine.len() as u64) as usize];
                    let start = rec.pfn + rng.below(rec.pages);
                    (start, 1 + rng.below(rec.end() - start))
                } else {
                    (WINDOW_PFN + rng.below(WINDOW), 1 + rng.below(8))
                };
                let want = log.predict_unmap(d, pfn, pages);
                let got = iommu.unmap(d, pfn * WIRE_PAGE_SIZE, pages * WIRE_PAGE_SIZE);
                if self.tally.record("unmap", &got, want) && got.is_ok() {
                    log.apply_unmap(d, pfn, pages);
                }
            }
            90..=94 => self.hostile(),
            95..=97 => self.check_stats(),
            _ => {
                let got = iommu.faults();
                let quiet =
                    matches!(&got, Ok(b) if b.records.is_empty() && b.dropped == 0 && !b.more);
                self.tally.record("faults", &got.map(|_| ()), Ok(()));
                if !quiet {
                    self.tally.mismatches += 1;
                }
            }
        }
    }

    /// Requests no honest driver sends.
    fn hostile(&mut self) {
        let (log, rng, iommu) = (&mut self.log, &mut self.rng, &mut self.iommu);
        let d = pick_domain(log, rng);
        let mut e = random_entry(log, rng);
        match rng.below(6) {
            0 => {
                // Misaligned: refused by the client library before sending.
                let got = iommu.map(
                    d,
                    e.pfn * WIRE_PAGE_SIZE + 0x800,
                    e.mem,
                    0,
                    WIRE_PAGE_SIZE,
                    Perms::RW,
                );
                self.tally
                    .record("misaligned map", &got, Err(ErrorCode::Misaligned));
            }
            1 => {
                // A huge length: 4 GiB - 4 KiB.
                e.off = 0;
                e.pages = (u32::MAX >> 12) as u64;
                let want = log.predict_map(d, &[e]);
                let got = map_one(iommu, d, &e, Perms::RW);
                self.tally.record("huge map", &got, want);
            }
            2 => {
                // An IOVA range that wraps past the top of the address space.
                e.pfn = u64::MAX >> 12;
                e.off = 0;
                e.pages = 2;
                let want = log.predict_map(d, &[e]);
                let got = map_one(iommu, d, &e, Perms::RW);
                self.tally.record("wrapping map", &got, want);
                let want = log.predict_unmap(d, u64::MAX >> 12, 2);
                let got = iommu.unmap(d, !0xfff, 2 * WIRE_PAGE_SIZE);
                self.tally.record("wrapping unmap", &got, want);
            }
            3 => {
                // Zero length.
                e.pages = 0;
                let want = log.predict_map(d, &[e]);
                let got = map_one(iommu, d, &e, Perms::RW);
                self.tally.record("empty map", &got, want);
            }
            4 => {
                // Another client's handle for one of mine.
                let foreign = DomainId(d.0 ^ FOREIGN);
                // (`d` may itself have been another client's handle, which
                // makes this one the caller's own: the log decides.)
                let want = log.predict_unmap(foreign, e.pfn, 1);
                let got = iommu.unmap(foreign, e.pfn * WIRE_PAGE_SIZE, WIRE_PAGE_SIZE);
                if self.tally.record("foreign unmap", &got, want) && got.is_ok() {
                    log.apply_unmap(foreign, e.pfn, 1);
                }
                let want = log.predict_free(foreign);
                let got = iommu.free_domain(foreign);
                if self.tally.record("foreign free", &got, want) && got.is_ok() {
                    log.apply_free(foreign);
                }
            }
            _ => {
                let foreign = MemoryHandle(e.mem.0 ^ FOREIGN);
                let want = log.predict_unregister(foreign);
                let got = iommu.unregister_memory(foreign);
                if self.tally.record("foreign unregister", &got, want) && got.is_ok() {
                    log.apply_unregister(foreign);
                }
            }
        }
    }

    fn check_stats(&mut self) {
        self.stats_checks += 1;
        match self.iommu.stats() {
            Ok(s) if self.log.stats_match(&s) => {}
            other => {
                self.stats_mismatches += 1;
                if self.stats_mismatches <= 3 {
                    println!(
                        "load: MISMATCH stats {other:?}; log: domains {} records {} pages {} regions {} frames {}",
                        self.log.domains.len(),
                        self.log.recs.len(),
                        self.log.mapped_pages(),
                        self.log.memory.len(),
                        self.log.frames
                    );
                }
            }
        }
    }

    /// Map probes over every domain's window: `Overlap` exactly where the
    /// log has a mapping (the handler checks overlap before any quota);
    /// a probe that maps is unmapped again at once. Returns (probes,
    /// mismatches).
    fn probe(&mut self) -> (u32, u32) {
        let before = self.tally.mismatches;
        if self.log.memory.is_empty() {
            let want = self.log.predict_register(1);
            let caps = self.frames(0, 1);
            let got = self.iommu.register_memory(&caps);
            if self.tally.record("probe memory", &got.map(|_| ()), want) {
                if let Ok(m) = got {
                    let _ = self.log.memory.push((m.handle, 1));
                    self.log.frames += 1;
                }
            }
        }
        let Some(&(mem, _)) = self.log.memory.first() else {
            return (0, 1);
        };
        let mut probes = 0;
        let domains = self.log.domains.clone();
        for d in domains {
            for pfn in WINDOW_PFN..WINDOW_PFN + WINDOW {
                probes += 1;
                let e = Entry {
                    pfn,
                    mem,
                    off: 0,
                    pages: 1,
                };
                let want = self.log.predict_map(d, &[e]);
                let got = map_one(&mut self.iommu, d, &e, Perms::READ);
                let mapped_in_log = self
                    .log
                    .recs
                    .iter()
                    .any(|r| r.dom == d && r.pfn <= pfn && pfn < r.end());
                let overlap = got == Err(Error::Iommu(ErrorCode::Overlap));
                if overlap != mapped_in_log {
                    self.tally.mismatches += 1;
                }
                if self.tally.record("probe", &got, want) && got.is_ok() {
                    let got = self.iommu.unmap(d, pfn * WIRE_PAGE_SIZE, WIRE_PAGE_SIZE);
                    self.tally.record("probe unmap", &got, Ok(()));
                }
            }
        }
        (probes, self.tally.mismatches - before)
    }
}

pub fn run(info: &'static StartInfo) -> bool {
    let role = info.name.as_str();
    let mut checks = Checks::new(role);
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let q = match iommu.stats() {
        Ok(q) => q,
        Err(e) => {
            println!("{role}: stats: {e:?}");
            return false;
        }
    };
    let seed = role.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut run = Run {
        info,
        iommu,
        log: Log {
            q,
            domains: Vec::new(),
            stale_domains: Vec::new(),
            memory: Vec::new(),
            stale_memory: Vec::new(),
            recs: Vec::new(),
            frames: 0,
        },
        rng: Rng::new(seed),
        tally: Tally {
            role,
            op: 0,
            outcomes: [0; 19],
            mismatches: 0,
        },
        stats_checks: 0,
        stats_mismatches: 0,
    };
    let start = now();
    for op in 0..OPS {
        run.tally.op = op;
        run.step();
    }
    let ops_mismatches = run.tally.mismatches;
    run.check_stats();
    let (probes, probe_mismatches) = run.probe();
    run.check_stats();
    let ticks = now().wrapping_sub(start).max(1);
    let t = run.iommu.transport_mut();
    let (requests, refused) = (t.calls, t.refused);
    let o = &run.tally.outcomes;
    let code = |c: ErrorCode| o[1 + c as usize];
    // Reports printed at once would interleave character by character on
    // the console: the clients take turns (`turn-*` notifications).
    report_turn(info, Turn::Wait);
    println!(
        "{role}: {OPS} operations + {probes} probes: {requests} requests, {refused} refused by the server, {} refused by the client library (misaligned), {} transport errors, in {} us of virtual time: {} requests/s",
        code(ErrorCode::Misaligned),
        o[LOCAL],
        micros(ticks),
        requests * crate::COUNTER_HZ / ticks
    );
    println!(
        "{role}: outcomes: ok {} Overlap {} NotMapped {} OutOfRange {} QuotaExceeded {} NoSuchDomain {} NoSuchMemory {} InUse {} Malformed {} NoMemory {} Misaligned {}",
        o[0],
        code(ErrorCode::Overlap),
        code(ErrorCode::NotMapped),
        code(ErrorCode::OutOfRange),
        code(ErrorCode::QuotaExceeded),
        code(ErrorCode::NoSuchDomain),
        code(ErrorCode::NoSuchMemory),
        code(ErrorCode::InUse),
        code(ErrorCode::Malformed),
        code(ErrorCode::NoMemory),
        code(ErrorCode::Misaligned),
    );
    // The image test compares these with what the server counted for this
    // badge and with what the root task's retirement freed.
    println!("{role}: my transport counted requests {requests} refused {refused}");
    let log = &run.log;
    println!(
        "{role}: final log: domains {} mappings {} bytes {} memory registrations {} frames {}",
        log.domains.len(),
        log.recs.len(),
        log.mapped_pages() * WIRE_PAGE_SIZE,
        log.memory.len(),
        log.frames
    );
    checks.check(
        "outcomes-match-log",
        ops_mismatches == 0,
        format_args!(
            "{ops_mismatches} of {OPS} operations answered otherwise than the log predicts"
        ),
    );
    checks.check(
        "stats-match-log",
        run.stats_mismatches == 0 && run.stats_checks > 10,
        format_args!(
            "{} of {} stats replies differ from the log",
            run.stats_mismatches, run.stats_checks
        ),
    );
    checks.check(
        "probes-match-log",
        probe_mismatches == 0 && probes > 0,
        format_args!("{probe_mismatches} of {probes} probes disagree with the log"),
    );
    let kinds = [
        ErrorCode::Overlap,
        ErrorCode::NotMapped,
        ErrorCode::OutOfRange,
        ErrorCode::QuotaExceeded,
        ErrorCode::NoSuchDomain,
        ErrorCode::NoSuchMemory,
        ErrorCode::InUse,
        ErrorCode::Malformed,
        ErrorCode::Misaligned,
    ];
    let missing = kinds.iter().filter(|&&k| code(k) == 0).count();
    checks.check(
        "every-refusal-kind",
        missing == 0 && o[0] > OPS / 8,
        format_args!(
            "{missing} kinds of refusal never happened; {} successes",
            o[0]
        ),
    );
    report_turn(info, Turn::Pass);
    checks.passed()
}

enum Turn {
    /// Wait for this client's turn (the `turn-*` notification it may read;
    /// none: it goes first).
    Wait,
    /// Hand the turn on (the `turn-*` notification it may only write).
    Pass,
}

fn report_turn(info: &StartInfo, turn: Turn) {
    // Rights: bit 0 read, bit 1 write (procinfo::NamedCap).
    let want = match turn {
        Turn::Wait => |r: u32| r & 1 != 0,
        Turn::Pass => |r: u32| r & 1 == 0 && r & 2 != 0,
    };
    let Some(cap) = info
        .caps()
        .iter()
        .find(|c| c.name.as_str().starts_with("turn-") && want(c.rights))
    else {
        return;
    };
    let ntfn = sel4_abi::Notification(sel4_abi::CPtr(cap.cptr));
    match turn {
        Turn::Wait => {
            sel4_abi::syscalls::wait(ntfn);
        }
        Turn::Pass => sel4_abi::syscalls::signal(ntfn),
    }
}
