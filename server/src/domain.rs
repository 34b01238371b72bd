//! The domain table: each domain is one stage-1 page table, one ASID and the
//! (StreamID, SSID) pairs attached to it (DESIGN.md 5). Fixed capacity, no
//! allocation; separate from the ASID allocator and the command queue so that
//! each can later sit behind its own lock (ASID lock → domain device-list
//! lock → command-queue lock).

use crate::error::{Error, Result};
use crate::pgtable::IoPageTable;

/// Domains the server can hold at once.
pub const MAX_DOMAINS: usize = 64;
/// (StreamID, SSID) pairs one domain can have attached.
pub const MAX_DEVICES_PER_DOMAIN: usize = 32;

/// Names a domain. Carries a generation, so an id of a freed domain never
/// names a later one in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(pub(crate) u32);

impl DomainId {
    /// The raw value (for the wire protocol).
    pub fn raw(self) -> u32 {
        self.0
    }
    /// From a raw value; validated by every operation that takes it.
    pub fn from_raw(v: u32) -> Self {
        DomainId(v)
    }
    fn slot(self) -> usize {
        (self.0 & 0xffff) as usize
    }
    fn gen(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// One attached device: (StreamID, SubstreamID).
pub type Device = (u32, u32);

/// A domain's state.
#[derive(Debug)]
pub struct Domain {
    pub asid: u16,
    pub pgtable: IoPageTable,
    pub devices: heapless::Vec<Device, MAX_DEVICES_PER_DOMAIN>,
}

/// What [`crate::Smmu::domain_info`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    pub asid: u16,
    /// Page-table blocks in use (root included): the quota unit.
    pub table_pages: u32,
    /// Bytes of DMA memory the page tables use.
    pub table_bytes: usize,
    /// Attached (StreamID, SSID) pairs.
    pub devices: usize,
}

/// Fixed-size table of domains.
#[derive(Debug)]
pub struct DomainTable {
    slots: [Option<Domain>; MAX_DOMAINS],
    gens: [u16; MAX_DOMAINS],
}

impl Default for DomainTable {
    fn default() -> Self {
        DomainTable {
            slots: core::array::from_fn(|_| None),
            gens: [0; MAX_DOMAINS],
        }
    }
}

impl DomainTable {
    /// A free slot, if any.
    pub fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.is_none())
    }

    /// Stores `d` in `slot` (from `free_slot`) and names it.
    pub fn insert(&mut self, slot: usize, d: Domain) -> DomainId {
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.slots[slot] = Some(d);
        DomainId(slot as u32 | (self.gens[slot] as u32) << 16)
    }

    /// The domain `id` names.
    pub fn get(&self, id: DomainId) -> Result<&Domain> {
        let s = id.slot();
        if s >= MAX_DOMAINS || self.gens[s] != id.gen() {
            return Err(Error::NoSuchDomain);
        }
        self.slots[s].as_ref().ok_or(Error::NoSuchDomain)
    }

    /// The domain `id` names, mutably.
    pub fn get_mut(&mut self, id: DomainId) -> Result<&mut Domain> {
        let s = id.slot();
        if s >= MAX_DOMAINS || self.gens[s] != id.gen() {
            return Err(Error::NoSuchDomain);
        }
        self.slots[s].as_mut().ok_or(Error::NoSuchDomain)
    }

    /// Removes and returns the domain.
    pub fn remove(&mut self, id: DomainId) -> Result<Domain> {
        self.get(id)?;
        self.slots[id.slot()].take().ok_or(Error::NoSuchDomain)
    }

    /// The domain `dev` is attached to.
    pub fn find_device(&self, dev: Device) -> Option<DomainId> {
        self.iter()
            .find(|(_, d)| d.devices.contains(&dev))
            .map(|(id, _)| id)
    }

    /// Live domains.
    pub fn iter(&self) -> impl Iterator<Item = (DomainId, &Domain)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.as_ref()
                .map(|d| (DomainId(i as u32 | (self.gens[i] as u32) << 16), d))
        })
    }

    /// Number of live domains.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether no domain is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
