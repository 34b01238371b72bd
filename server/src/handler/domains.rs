//! Domains and streams: allocating and freeing domains (with their ASIDs and
//! page-table quota), attaching and detaching `(stream, ssid)` pairs, SVA
//! binding.

use super::*;

impl<C: Core, R: FrameResolver> Handler<C, R> {
    pub(super) fn client_pt_pages(&self, ci: usize) -> u32 {
        self.clients[ci].live_slots().fold(0u32, |acc, d| {
            acc.saturating_add(self.core.pt_pages(d.core))
        })
    }

    pub(super) fn alloc_domain(&mut self, ci: usize) -> Result<DomainId, ErrorCode> {
        let (slot, _) = self.alloc_domain_slot(ci)?;
        let c = &self.clients[ci];
        Ok(DomainId(make_handle(ci, slot, c.domain_gen[slot])))
    }

    /// Checks quotas, allocates the core's domain and records it.
    pub(super) fn alloc_domain_slot(&mut self, ci: usize) -> Result<(usize, C::Domain), ErrorCode> {
        let c = &self.clients[ci];
        let q = c.policy.quotas;
        let n = c.domain_count();
        // One ASID per domain.
        if n >= q.domains || n >= q.asids {
            return Err(ErrorCode::QuotaExceeded);
        }
        // A new domain costs at least its root table.
        if self.client_pt_pages(ci).saturating_add(1) > q.pt_pages {
            return Err(ErrorCode::QuotaExceeded);
        }
        let slot = c
            .domains
            .iter()
            .position(|d| d.is_none())
            .ok_or(ErrorCode::QuotaExceeded)?;
        if c.domain_gen[slot] >= MAX_GENERATION {
            // Generations exhausted: retire the slot rather than reuse a handle.
            return Err(ErrorCode::QuotaExceeded);
        }
        let d = self.core.alloc_domain()?;
        let c = &mut self.clients[ci];
        c.domains[slot] = Some(DomainSlot {
            core: d,
            generation: c.domain_gen[slot],
        });
        c.live_domains |= 1 << slot;
        Ok((slot, d))
    }

    pub(super) fn release_domain_slot(&mut self, ci: usize, slot: u8) {
        let c = &mut self.clients[ci];
        c.domains[slot as usize] = None;
        c.live_domains &= !(1 << slot);
        c.domain_gen[slot as usize] += 1;
        if c.sva_domain == Some(slot) {
            c.sva_domain = None;
        }
    }

    pub(super) fn free_domain(&mut self, ci: usize, id: DomainId) -> Result<(), ErrorCode> {
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        if c.attachments.iter().any(|a| a.domain == slot) {
            return Err(ErrorCode::InUse);
        }
        self.core.free_domain(d)?;
        // The core dropped the page tables: forget the records.
        let c = &mut self.clients[ci];
        let mut i = 0;
        while i < c.mappings.len() {
            if c.mappings[i].domain == slot {
                let m = c.mappings.swap_remove(i);
                c.unmapped(m.memory, m.pages);
            } else {
                i += 1;
            }
        }
        self.release_domain_slot(ci, slot);
        Ok(())
    }

    pub(super) fn check_stream(
        &self,
        ci: usize,
        stream: StreamId,
        ssid: Ssid,
    ) -> Result<(), ErrorCode> {
        if !self.clients[ci].policy.may_use(stream, ssid) {
            return Err(ErrorCode::NotPermitted);
        }
        let bits = self.core.caps().ssid_bits;
        if ssid.0 != 0 && (bits == 0 || (bits < 32 && ssid.0 >> bits != 0)) {
            return Err(ErrorCode::Unsupported);
        }
        Ok(())
    }

    pub(super) fn attach(
        &mut self,
        ci: usize,
        stream: StreamId,
        ssid: Ssid,
        id: DomainId,
    ) -> Result<(), ErrorCode> {
        self.check_stream(ci, stream, ssid)?;
        let c = &self.clients[ci];
        let (slot, d) = c.domain(id)?;
        let existing = c
            .attachments
            .iter()
            .position(|a| a.stream == stream && a.ssid == ssid);
        if existing.is_none() && c.attachments.is_full() {
            return Err(ErrorCode::QuotaExceeded);
        }
        if let Err(e) = self.core.attach(stream, ssid, d) {
            self.resync_attachment(ci, stream, ssid);
            return Err(e);
        }
        let c = &mut self.clients[ci];
        match existing {
            Some(i) => c.attachments[i].domain = slot,
            // Cannot fail: checked not full above.
            None => {
                let _ = c.attachments.push(Attachment {
                    stream,
                    ssid,
                    domain: slot,
                });
            }
        }
        Ok(())
    }

    /// After a failed core attach or detach, makes the client's record of
    /// `(stream, ssid)` say what the core holds (a timeout can leave the pair
    /// on the new domain, the old one, or none).
    pub(super) fn resync_attachment(&mut self, ci: usize, stream: StreamId, ssid: Ssid) {
        let Some(now) = self.core.attached(stream, ssid) else {
            return;
        };
        let c = &mut self.clients[ci];
        let slot = now.and_then(|cd| {
            c.domains
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.core == cd))
        });
        let at = c
            .attachments
            .iter()
            .position(|a| a.stream == stream && a.ssid == ssid);
        match (slot, at) {
            (Some(s), Some(i)) => c.attachments[i].domain = s as u8,
            (Some(s), None) => {
                // Cannot fail: attach checked there is room.
                let _ = c.attachments.push(Attachment {
                    stream,
                    ssid,
                    domain: s as u8,
                });
            }
            (None, Some(i)) => {
                c.attachments.swap_remove(i);
            }
            (None, None) => {}
        }
    }

    /// Detach, or (with `sva`) unbind: the pair must be attached to the SVA
    /// domain for an unbind, and to any domain for a detach.
    pub(super) fn detach(
        &mut self,
        ci: usize,
        stream: StreamId,
        ssid: Ssid,
        sva: bool,
    ) -> Result<(), ErrorCode> {
        self.check_stream(ci, stream, ssid)?;
        let c = &self.clients[ci];
        let i = c
            .attachments
            .iter()
            .position(|a| {
                a.stream == stream && a.ssid == ssid && (!sva || Some(a.domain) == c.sva_domain)
            })
            .ok_or(ErrorCode::NoSuchStream)?;
        if let Err(e) = self.core.detach(stream, ssid) {
            // A detach that stopped half-way may have taken the pair off
            // its domain in memory: the record follows the core.
            self.resync_attachment(ci, stream, ssid);
            return Err(e);
        }
        self.clients[ci].attachments.swap_remove(i);
        Ok(())
    }

    pub(super) fn bind_sva(
        &mut self,
        ci: usize,
        stream: StreamId,
        ssid: Ssid,
    ) -> Result<DomainId, ErrorCode> {
        self.check_stream(ci, stream, ssid)?;
        let (slot, created) = match self.clients[ci].sva_domain {
            Some(s) => (s as usize, false),
            None => (self.alloc_domain_slot(ci)?.0, true),
        };
        let id = DomainId(make_handle(ci, slot, self.clients[ci].domain_gen[slot]));
        if created {
            self.clients[ci].sva_domain = Some(slot as u8);
        }
        match self.attach(ci, stream, ssid, id) {
            Ok(()) => Ok(id),
            Err(e) => {
                // A bind that timed out half-way may have left the stream
                // on the new domain (recorded by `attach`): keep it then.
                let in_use = self.clients[ci]
                    .attachments
                    .iter()
                    .any(|a| a.domain == slot as u8);
                if created && !in_use {
                    // Roll back the domain we just made (it has nothing in it).
                    if let Ok((_, d)) = self.clients[ci].domain(id) {
                        let _ = self.core.free_domain(d);
                    }
                    self.release_domain_slot(ci, slot as u8);
                }
                Err(e)
            }
        }
    }
}
