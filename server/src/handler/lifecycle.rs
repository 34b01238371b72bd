//! What the system gives a client before it asks for anything (its DMA
//! memory, `grant_dma`), and taking everything back when it is gone
//! (`retire_client`).

use super::*;

impl<C: Core, R: FrameResolver> Handler<C, R> {
    /// Lets the client with `badge` register frames inside `grant` (see
    /// [`DmaGrant`]): called at start-up with what the system builder gave
    /// each client, before any request is served. A client with no grant
    /// can register nothing. `NotPermitted` for a badge that is no client,
    /// `OutOfRange` for an empty, unaligned or wrapping region,
    /// `QuotaExceeded` past [`MAX_DMA_GRANTS`].
    pub fn grant_dma(&mut self, badge: u64, grant: DmaGrant) -> Result<(), ErrorCode> {
        let Some((ci, _)) = self.policy.client(badge) else {
            return Err(ErrorCode::NotPermitted);
        };
        if grant.size == 0
            || !grant.paddr.is_multiple_of(PAGE)
            || !grant.size.is_multiple_of(PAGE)
            || grant.paddr.checked_add(grant.size).is_none()
        {
            return Err(ErrorCode::OutOfRange);
        }
        self.clients[ci]
            .grants
            .push(grant)
            .map_err(|_| ErrorCode::QuotaExceeded)
    }

    /// Grants every client all of physical memory ([`DmaGrant::EVERYTHING`]):
    /// for host tests and software models, where frames are fakes that
    /// nobody can revoke. Never on seL4.
    pub fn grant_everything(&mut self) {
        for c in self.clients.iter_mut() {
            c.grants.clear();
            let _ = c.grants.push(DmaGrant::EVERYTHING);
        }
    }

    /// Takes everything back from the client with `badge`, for a supervisor
    /// that retired it (the process ended or faulted): detaches its streams
    /// (their DMA aborts from here on), frees its domains with their page
    /// tables and ASIDs, releases its memory registrations (deleting the
    /// frame caps) and drops its pending faults. The global resources it
    /// held (table memory, ASIDs, receive slots) are free for other
    /// clients; its badge is refused (`NotPermitted`) from then on, like a
    /// stranger's, so a thread of the process that still runs can do
    /// nothing.
    /// Handles the client held are dead afterwards (generations bumped).
    ///
    /// Not reachable from a client: only the server's transport calls it,
    /// for a message on the supervisor's own badge. `NotPermitted` for a
    /// badge that is no client. If the core fails (a command-queue timeout),
    /// what was already taken back stays taken back and the error is
    /// returned; calling again continues.
    pub fn retire_client(&mut self, badge: u64) -> Result<Retired, ErrorCode> {
        let Some((ci, _)) = self.policy.client(badge) else {
            return Err(ErrorCode::NotPermitted);
        };
        // Refused from here on, even if taking back fails half-way below:
        // the process is gone, whatever of it still runs.
        self.clients[ci].retired = true;
        self.clients[ci].greeted = false;
        let mut r = Retired {
            pt_pages: self.client_pt_pages(ci),
            ..Retired::default()
        };
        // Streams first: no device may keep using tables about to go.
        while let Some(a) = self.clients[ci].attachments.last().copied() {
            if let Err(e) = self.core.detach(a.stream, a.ssid) {
                self.resync_attachment(ci, a.stream, a.ssid);
                return Err(e);
            }
            self.clients[ci].attachments.pop();
            r.streams += 1;
        }
        for slot in 0..MAX_DOMAINS {
            let Some(d) = self.clients[ci].domains[slot] else {
                continue;
            };
            // TLBI by ASID and sync, then tables and ASID freed.
            self.core.free_domain(d.core)?;
            let c = &mut self.clients[ci];
            let mut i = 0;
            while i < c.mappings.len() {
                if c.mappings[i].domain == slot as u8 {
                    let m = c.mappings.swap_remove(i);
                    c.unmapped(m.memory, m.pages);
                    r.mappings += 1;
                    r.mapped_bytes += m.pages << WIRE_PAGE_SHIFT;
                } else {
                    i += 1;
                }
            }
            self.release_domain_slot(ci, slot as u8);
            r.domains += 1;
        }
        for slot in 0..MAX_MEMORY {
            let c = &mut self.clients[ci];
            let Some(m) = c.memory[slot].take() else {
                continue;
            };
            c.memory_gen[slot] += 1;
            c.frames -= m.frames.len() as u32;
            r.memory_regions += 1;
            r.frames += m.frames.len() as u32;
            for cap in m.frames {
                self.resolver.release(cap);
            }
        }
        let c = &mut self.clients[ci];
        r.faults = c.faults.len() as u32;
        c.faults.clear();
        c.faults_dropped = 0;
        Ok(r)
    }
}
