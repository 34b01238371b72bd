//! Names for domains and devices. A domain is one stage-1 page table, one
//! ASID and the (StreamID, SSID) pairs attached to it (DESIGN.md 5); the
//! core ([`crate::shared`]) keeps each behind its own lock.

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
}

/// One attached device: (StreamID, SubstreamID).
pub type Device = (u32, u32);

/// What [`crate::shared::SharedSmmu::domain_info`] reports.
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
