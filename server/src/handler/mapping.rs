//! Map and unmap requests: validation against the client's records and
//! quotas (the page-table bound), all-or-nothing mapping run by run, unmap
//! with its record keeping.

use super::*;

impl<C: Core, R: FrameResolver> Handler<C, R> {
    /// Upper bound on the page-table memory, in 4 KiB pages, that mapping
    /// `[pfn, pfn + pages)` into domain slot `domain` can add: a level-3
    /// table (4 KiB) per 2 MiB block, a level-2 one (8 KiB) per 1 GiB and a
    /// level-1 one (8 KiB) per 512 GiB block touched that holds no mapping
    /// yet ([`TABLE_PAGES_PER_BLOCK`]; 4 KiB granule; `extra` are ranges the
    /// same batch maps first). The cost depends on the number of records, not on
    /// the size of the range, so a huge request cannot stall the server.
    pub(super) fn pt_bound(
        &self,
        ci: usize,
        domain: u8,
        pfn: u64,
        pages: u64,
        extra: &[(u64, u64)],
    ) -> u64 {
        let c = &self.clients[ci];
        let end = pfn + pages;
        let mut total = 0u64;
        for (shift, weight) in TABLE_PAGES_PER_BLOCK {
            let first = pfn >> shift;
            let last = (end - 1) >> shift;
            // Blocks of [first, last] that already hold a mapping, as
            // merged intervals of block numbers.
            let mut used: Vec<(u64, u64), { MAX_MAPPINGS + MAX_BATCH }> = Vec::new();
            let ranges = c
                .mappings
                .iter()
                .filter(|m| m.domain == domain)
                .map(|m| (m.iova_pfn, m.end()))
                .chain(extra.iter().copied());
            for (s, e) in ranges {
                let lo = (s >> shift).max(first);
                let hi = ((e - 1) >> shift).min(last);
                if lo <= hi {
                    // Cannot fail: at most MAX_MAPPINGS records and
                    // MAX_BATCH batch entries.
                    let _ = used.push((lo, hi));
                }
            }
            used.sort_unstable();
            // Iterated by reference below: consuming the Vec would move all
            // of it (2.5 KiB, most of a 4 KiB map's server time on seL4).
            let mut covered = 0u64;
            let mut reach: Option<u64> = None; // last block counted so far
            for &(lo, hi) in used.iter() {
                let from = match reach {
                    Some(r) if r >= hi => continue,
                    Some(r) => lo.max(r + 1),
                    None => lo,
                };
                covered += hi - from + 1;
                reach = Some(hi);
            }
            total += ((last - first + 1) - covered) * weight;
        }
        total
    }

    pub(super) fn map_batch(
        &mut self,
        ci: usize,
        id: DomainId,
        entries: &[MapEntry],
    ) -> Result<(), ErrorCode> {
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        let q = c.policy.quotas;
        let ias = u32::from(self.core.caps().ias_bits.clamp(WIRE_PAGE_SHIFT as u8, 64));
        let max_pfn: u64 = if ias >= 64 {
            u64::MAX >> WIRE_PAGE_SHIFT
        } else {
            1u64 << (ias - WIRE_PAGE_SHIFT)
        };
        if entries.is_empty() {
            return Err(ErrorCode::Malformed);
        }
        // Validate every entry, against the state and against the earlier
        // entries, before changing anything.
        let mut accepted: Vec<(u64, u64), MAX_BATCH> = Vec::new();
        let mut new_pages = 0u64;
        // Tables the batch can add at most: every 2 MiB / 1 GiB / 512 GiB
        // block it touches. Only if that could exceed the quota is the exact
        // bound (which discounts blocks already holding a mapping) worked out.
        let mut pt_touched = 0u64;
        let pt_now = u64::from(self.client_pt_pages(ci));
        let pt_left = u64::from(q.pt_pages).saturating_sub(pt_now);
        for e in entries {
            if !e.perms.is_valid() || e.pages == 0 {
                return Err(ErrorCode::Malformed);
            }
            let (_, mem) = c.memory(e.memory)?;
            if mem.read_only_frames > 0 && e.perms.contains(Perms::WRITE) {
                return Err(ErrorCode::NotPermitted);
            }
            let pages = u64::from(e.pages);
            let off = u64::from(e.offset_pfn);
            if off + pages > mem.pages {
                return Err(ErrorCode::OutOfRange);
            }
            let end = e.iova_pfn.checked_add(pages).ok_or(ErrorCode::OutOfRange)?;
            if end > max_pfn {
                return Err(ErrorCode::OutOfRange);
            }
            if c.overlaps(slot, e.iova_pfn, pages)
                || accepted.iter().any(|&(s, x)| s < end && e.iova_pfn < x)
            {
                return Err(ErrorCode::Overlap);
            }
            pt_touched += blocks_touched(e.iova_pfn, pages);
            new_pages += pages;
            // Cannot fail: entries.len() <= MAX_BATCH.
            accepted
                .push((e.iova_pfn, end))
                .map_err(|_| ErrorCode::Malformed)?;
        }
        let c = &self.clients[ci];
        let new_bytes = (c.mapped_pages + new_pages)
            .checked_mul(PAGE)
            .ok_or(ErrorCode::QuotaExceeded)?;
        if new_bytes > q.mapped_bytes {
            return Err(ErrorCode::QuotaExceeded);
        }
        let records = c.mappings.len() + entries.len();
        if records > q.mappings as usize {
            return Err(ErrorCode::QuotaExceeded);
        }
        if records > MAX_MAPPINGS {
            return Err(ErrorCode::NoMemory);
        }
        if pt_touched > pt_left {
            let mut pt_needed = 0u64;
            for (k, e) in entries.iter().enumerate() {
                let before = accepted.get(..k).unwrap_or(&[]);
                pt_needed += self.pt_bound(ci, slot, e.iova_pfn, u64::from(e.pages), before);
            }
            if pt_needed > pt_left {
                return Err(ErrorCode::QuotaExceeded);
            }
        }
        // Perform; on a core failure undo everything done so far. Each entry
        // covers one contiguous IOVA range, mapped run by run: frames that
        // are physically contiguous (a DMA pool's, say) go to the core as one
        // range, so it walks the tables once per run rather than once per
        // frame and may use 2 MiB / 1 GiB blocks where the run allows.
        let mut failure = None;
        let mut reached = 0usize;
        let mut partial = 0u64;
        'entries: for (k, e) in entries.iter().enumerate() {
            reached = k;
            partial = 0;
            let (_, mem) = self.clients[ci].memory(e.memory)?;
            let pages = u64::from(e.pages);
            let offset = u64::from(e.offset_pfn);
            let start = mem.runs.partition_point(|r| r.end() <= offset);
            for r in mem.runs.iter().skip(start) {
                if partial == pages {
                    break;
                }
                let at = offset + partial;
                let skip = at - u64::from(r.first);
                let n = (u64::from(r.pages) - skip).min(pages - partial);
                let paddr = r.paddr + (skip << WIRE_PAGE_SHIFT);
                let iova = e.iova_pfn + partial;
                if let Err(err) = self.core.map(
                    d,
                    iova << WIRE_PAGE_SHIFT,
                    paddr,
                    n << WIRE_PAGE_SHIFT,
                    e.perms,
                ) {
                    failure = Some(err);
                    break 'entries;
                }
                partial += n;
            }
        }
        if let Some(err) = failure {
            // Unmapping what we just mapped cannot meet a hole. What could
            // not be undone (its invalidation failed) stays recorded, its
            // memory in use, as after an unmap that timed out: a device may
            // still reach it. So does the rest of the failing entry when
            // the core's own undo of it failed (a hardware error).
            let mut kept: Vec<(usize, u64, u64), { MAX_BATCH + 2 }> = Vec::new();
            for (k, e) in entries[..reached].iter().enumerate() {
                let pages = u64::from(e.pages);
                let undone =
                    self.core
                        .unmap(d, e.iova_pfn << WIRE_PAGE_SHIFT, pages << WIRE_PAGE_SHIFT);
                if undone.is_err() {
                    let _ = kept.push((k, 0, pages));
                }
            }
            let e = &entries[reached];
            if partial > 0
                && self
                    .core
                    .unmap(d, e.iova_pfn << WIRE_PAGE_SHIFT, partial << WIRE_PAGE_SHIFT)
                    .is_err()
            {
                let _ = kept.push((reached, 0, partial));
            }
            if err == ErrorCode::HardwareError {
                let _ = kept.push((reached, partial, u64::from(e.pages) - partial));
            }
            for (k, skip, pages) in kept {
                self.record_mapping(ci, slot, &entries[k], skip, pages)?;
            }
            return Err(err);
        }
        for e in entries {
            self.record_mapping(ci, slot, e, 0, u64::from(e.pages))?;
        }
        Ok(())
    }

    /// Records `pages` of batch entry `e` from its `skip`-th page on as
    /// mapped in domain slot `slot` (room was checked before mapping).
    fn record_mapping(
        &mut self,
        ci: usize,
        slot: u8,
        e: &MapEntry,
        skip: u64,
        pages: u64,
    ) -> Result<(), ErrorCode> {
        let c = &mut self.clients[ci];
        let (mslot, _) = c.memory(e.memory)?;
        // Cannot fail: capacity checked above.
        let _ = c.mappings.push(MapRec {
            domain: slot,
            iova_pfn: e.iova_pfn + skip,
            pages,
            memory: mslot,
            offset_pfn: u64::from(e.offset_pfn) + skip,
        });
        c.mapped_pages += pages;
        if let Some(m) = c.memory[mslot as usize].as_mut() {
            m.mapped += pages;
        }
        Ok(())
    }

    pub(super) fn unmap(
        &mut self,
        ci: usize,
        id: DomainId,
        pfn: u64,
        pages: u32,
    ) -> Result<(), ErrorCode> {
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        if pages == 0 {
            return Err(ErrorCode::Malformed);
        }
        let pages = u64::from(pages);
        let end = pfn.checked_add(pages).ok_or(ErrorCode::OutOfRange)?;
        // The usual unmap undoes one map exactly: that record alone covers
        // the range (records of a domain do not overlap) and nothing splits.
        if let Some(i) = c
            .mappings
            .iter()
            .position(|m| m.domain == slot && m.iova_pfn == pfn && m.pages == pages)
        {
            self.core
                .unmap(d, pfn << WIRE_PAGE_SHIFT, pages << WIRE_PAGE_SHIFT)?;
            let c = &mut self.clients[ci];
            let m = c.mappings.swap_remove(i);
            c.unmapped(m.memory, pages);
            return Ok(());
        }
        // The whole range must be mapped; count what it covers and how many
        // records a partial unmap splits in two, and note which records it
        // touches (one pass over the records, not two).
        let mut covered = 0u64;
        let mut splits = 0usize;
        let mut hits: Vec<u8, MAX_MAPPINGS> = Vec::new();
        for (i, m) in c.mappings.iter().enumerate() {
            let lo = m.iova_pfn.max(pfn);
            let hi = m.end().min(end);
            if m.domain == slot && lo < hi {
                covered += hi - lo;
                splits += usize::from(m.iova_pfn < pfn && m.end() > end);
                // Cannot fail: at most MAX_MAPPINGS records (indices fit u8).
                let _ = hits.push(i as u8);
            }
        }
        if covered != pages {
            return Err(ErrorCode::NotMapped);
        }
        if c.mappings.len() + splits > MAX_MAPPINGS {
            return Err(ErrorCode::NoMemory);
        }
        self.core
            .unmap(d, pfn << WIRE_PAGE_SHIFT, pages << WIRE_PAGE_SHIFT)?;
        let c = &mut self.clients[ci];
        // Highest index first: `swap_remove` moves the last record into the
        // hole, and that one is never a hit still to come (those all sit
        // lower) but an untouched record or a piece pushed here, which lie
        // outside the range.
        // Pages taken off each memory's count, applied once per memory.
        let mut freed = [0u64; MAX_MEMORY];
        for &i in hits.iter().rev() {
            let m = c.mappings.swap_remove(usize::from(i));
            let lo = m.iova_pfn.max(pfn);
            let hi = m.end().min(end);
            if let Some(n) = freed.get_mut(usize::from(m.memory)) {
                *n += hi - lo;
            }
            if lo == m.iova_pfn && hi == m.end() {
                // Wholly inside the range (the usual case): nothing left.
                continue;
            }
            let head = MapRec {
                pages: lo - m.iova_pfn,
                ..m
            };
            let tail = MapRec {
                iova_pfn: hi,
                pages: m.end() - hi,
                offset_pfn: m.offset_pfn + (hi - m.iova_pfn),
                ..m
            };
            // Room was checked above.
            if head.pages > 0 {
                let _ = c.mappings.push(head);
            }
            if tail.pages > 0 {
                let _ = c.mappings.push(tail);
            }
        }
        for (memory, &n) in freed.iter().enumerate() {
            if n > 0 {
                c.unmapped(memory as u8, n);
            }
        }
        Ok(())
    }
}

// An unmap notes the records it touches by u8 index.
const _: () = assert!(MAX_MAPPINGS <= 256);

/// Level-3, level-2 and level-1 blocks (2 MiB, 1 GiB, 512 GiB) that
/// `[pfn, pfn + pages)` touches: at most the tables mapping it can add.
pub(super) fn blocks_touched(pfn: u64, pages: u64) -> u64 {
    let last = pfn + pages - 1;
    TABLE_PAGES_PER_BLOCK
        .iter()
        .map(|&(shift, weight)| ((last >> shift) - (pfn >> shift) + 1) * weight)
        .sum()
}

/// For each block size a map can need a new table for (2 MiB, 1 GiB,
/// 512 GiB, as a shift of 4 KiB pages), the 4 KiB pages of that table: a
/// leaf table is 4 KiB, a level 1-2 table 8 KiB with its shadow
/// (`pgtable::table_size`), so the quota counts memory, not tables.
pub(super) const TABLE_PAGES_PER_BLOCK: [(u32, u64); 3] = [(9, 1), (18, 2), (27, 2)];
