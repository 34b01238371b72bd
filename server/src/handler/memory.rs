//! Registering memory: frame caps resolved and checked against the
//! client's DMA grants before anything is recorded, and their release.

use super::*;

impl<C: Core, R: FrameResolver> Handler<C, R> {
    pub(super) fn register_memory(
        &mut self,
        ci: usize,
        extend: Option<MemoryHandle>,
        caps: &[ReceivedCap],
    ) -> Result<Reply, ErrorCode> {
        let result = self.register_memory_inner(ci, extend, caps);
        if result.is_err() {
            self.release_all(caps);
        }
        result
    }

    pub(super) fn register_memory_inner(
        &mut self,
        ci: usize,
        extend: Option<MemoryHandle>,
        caps: &[ReceivedCap],
    ) -> Result<Reply, ErrorCode> {
        if caps.is_empty() || caps.len() > MAX_CAPS_PER_MSG {
            return Err(ErrorCode::Malformed);
        }
        let c = &self.clients[ci];
        let q = c.policy.quotas;
        let slot = match extend {
            Some(h) => {
                let (slot, m) = c.memory(h)?;
                if m.frames.len() + caps.len() > MAX_FRAMES {
                    return Err(ErrorCode::QuotaExceeded);
                }
                slot as usize
            }
            None => {
                if c.region_count() >= q.memory_regions {
                    return Err(ErrorCode::QuotaExceeded);
                }
                let slot = c
                    .memory
                    .iter()
                    .position(|m| m.is_none())
                    .ok_or(ErrorCode::QuotaExceeded)?;
                if c.memory_gen[slot] >= MAX_GENERATION {
                    return Err(ErrorCode::QuotaExceeded);
                }
                slot
            }
        };
        if c.frames + caps.len() as u32 > q.memory_frames {
            return Err(ErrorCode::QuotaExceeded);
        }
        // Resolve all before recording any.
        let mut resolved: Vec<FrameEntry, MAX_CAPS_PER_MSG> = Vec::new();
        let mut read_only = 0u32;
        for &cap in caps {
            let f = self.resolver.resolve(cap)?;
            if f.size == 0
                || f.size % PAGE != 0
                || f.paddr % PAGE != 0
                || f.paddr.checked_add(f.size).is_none()
            {
                return Err(ErrorCode::BadCapability);
            }
            // A genuine frame, but is it memory the system gave this client?
            let grant = self.clients[ci]
                .grants
                .iter()
                .find(|g| g.covers(f.paddr, f.size))
                .ok_or(ErrorCode::NotPermitted)?;
            read_only += u32::from(!grant.writable);
            let _ = resolved.push(FrameEntry {
                cap,
                paddr: f.paddr,
                pages: f.size >> WIRE_PAGE_SHIFT,
            });
        }
        let added: u64 = resolved.iter().map(|f| f.pages).sum();
        let c = &mut self.clients[ci];
        let current = c.memory[slot].as_ref().map_or(0, |m| m.pages);
        // Offsets on the wire are u32 pages.
        if current + added > u64::from(u32::MAX) {
            return Err(ErrorCode::OutOfRange);
        }
        let generation = c.memory_gen[slot];
        let m = c.memory[slot].get_or_insert_with(|| MemSlot {
            generation,
            frames: Vec::new(),
            runs: Vec::new(),
            pages: 0,
            mapped: 0,
            read_only_frames: 0,
        });
        m.read_only_frames += read_only;
        for f in resolved {
            // Fits: the memory's pages stay within u32, checked above.
            let (first, pages) = (m.pages as u32, f.pages as u32);
            match m.runs.last_mut() {
                Some(r) if r.paddr + (u64::from(r.pages) << WIRE_PAGE_SHIFT) == f.paddr => {
                    r.pages += pages;
                }
                // Cannot fail: no more runs than frames.
                _ => {
                    let _ = m.runs.push(Run {
                        first,
                        pages,
                        paddr: f.paddr,
                    });
                }
            }
            m.pages += f.pages;
            // Cannot fail: capacity checked above.
            let _ = m.frames.push(f.cap);
        }
        let pages = m.pages;
        c.frames += caps.len() as u32;
        Ok(Reply::Memory {
            memory: MemoryHandle(make_handle(ci, slot, generation)),
            pages,
        })
    }

    pub(super) fn unregister_memory(
        &mut self,
        ci: usize,
        h: MemoryHandle,
    ) -> Result<(), ErrorCode> {
        let c = &mut self.clients[ci];
        let (slot, m) = c.memory(h)?;
        if m.mapped > 0 {
            return Err(ErrorCode::InUse);
        }
        let Some(m) = c.memory[slot as usize].take() else {
            return Err(ErrorCode::NoSuchMemory);
        };
        c.memory_gen[slot as usize] += 1;
        c.frames -= m.frames.len() as u32;
        for cap in m.frames {
            self.resolver.release(cap);
        }
        Ok(())
    }
}
