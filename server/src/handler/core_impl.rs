//! The handler's [`Core`] over the server core, [`SharedSmmu`]: through a
//! shared reference (several handlers, e.g. one worker thread per client
//! priority band, each with its own clients, drive one SMMU at once), or
//! owned (one handler; [`crate::Smmu`]).

use embedded_hal::delay::DelayNs;
use iommu_protocol::{ErrorCode, FaultKind, Perms, Ssid, StreamId, WalkInfo};

use super::{Core, CoreCaps, CoreEvent};
use crate::hal::{DmaAllocator, Mmio};
use crate::shared::SharedSmmu;
use crate::sync::LockFamily;
use crate::{DomainId, Error, EventKind};

/// What a client is told about a core error. Table and ASID exhaustion are
/// server-wide shortages (`NoMemory`), not the client's quota; a timeout or
/// command error is `HardwareError`.
pub fn error_code(e: Error) -> ErrorCode {
    match e {
        Error::NoMemory | Error::NoSlot => ErrorCode::NoMemory,
        Error::NoAsid => ErrorCode::NoAsid,
        Error::Overlap => ErrorCode::Overlap,
        Error::NotMapped => ErrorCode::NotMapped,
        Error::Misaligned => ErrorCode::Misaligned,
        Error::OutOfRange => ErrorCode::OutOfRange,
        Error::NoSuchDomain => ErrorCode::NoSuchDomain,
        Error::StreamOutOfRange | Error::NotAttached => ErrorCode::NoSuchStream,
        Error::SsidOutOfRange | Error::Unsupported => ErrorCode::Unsupported,
        Error::Busy => ErrorCode::InUse,
        Error::Timeout(_) | Error::Hardware(_) => ErrorCode::HardwareError,
    }
}

/// What the core's page tables offer, for [`CoreCaps`]: 48-bit IOVAs with
/// 4 KiB pages and 2 MiB / 1 GiB blocks (chosen automatically).
pub(super) fn core_caps(ssid_bits: u8) -> CoreCaps {
    CoreCaps {
        ssid_bits,
        ias_bits: 48,
        page_sizes: (1 << 12) | (1 << 21) | (1 << 30),
    }
}

/// A core unmap's result as the handler sees it. The handler only unmaps
/// fully mapped ranges, so fewer bytes unmapped than asked means its records
/// and the page table disagree.
pub(super) fn unmap_result(result: Result<u64, Error>, len: u64) -> Result<(), ErrorCode> {
    match result {
        Ok(n) if n == len => Ok(()),
        Ok(_) => Err(ErrorCode::HardwareError),
        Err(e) => Err(error_code(e)),
    }
}

/// The protocol's permission bits are the core's READ and WRITE bits; the
/// handler has already refused any other bit.
pub(super) fn perms(p: Perms) -> crate::Perms {
    crate::Perms(p.0 & Perms::ALL.0)
}

pub(super) fn fault_kind(k: &EventKind) -> FaultKind {
    match k {
        EventKind::Translation(_) => FaultKind::Translation,
        EventKind::Permission(_) => FaultKind::Permission,
        EventKind::Access(_) => FaultKind::Access,
        EventKind::AddressSize(_) => FaultKind::AddressSize,
        EventKind::BadStreamId
        | EventKind::BadSte
        | EventKind::BadSubstreamId
        | EventKind::BadCd
        | EventKind::StreamDisabled
        | EventKind::SteFetch { .. }
        | EventKind::CdFetch { .. } => FaultKind::BadConfig,
        _ => FaultKind::Other,
    }
}

pub(super) fn fault_addr(k: &EventKind) -> u64 {
    match k {
        EventKind::Translation(f)
        | EventKind::Permission(f)
        | EventKind::Access(f)
        | EventKind::AddressSize(f)
        | EventKind::WalkExternalAbort(f) => f.addr,
        EventKind::UnsupportedUpstream { addr }
        | EventKind::BadAtsTreq { addr }
        | EventKind::TranslationForbidden { addr }
        | EventKind::TlbConflict { addr }
        | EventKind::PageRequest { addr } => *addr,
        _ => 0,
    }
}

impl<M, A, D, F, const N: usize> Core for &SharedSmmu<M, A, D, F, N>
where
    M: Mmio + Send,
    A: DmaAllocator + Send,
    D: DelayNs + Send,
    F: LockFamily,
{
    type Domain = DomainId;

    fn caps(&self) -> CoreCaps {
        core_caps(self.ssid_bits())
    }

    fn alloc_domain(&mut self) -> Result<DomainId, ErrorCode> {
        SharedSmmu::alloc_domain(self).map_err(error_code)
    }

    fn free_domain(&mut self, domain: DomainId) -> Result<(), ErrorCode> {
        SharedSmmu::free_domain(self, domain).map_err(error_code)
    }

    fn attach(&mut self, stream: StreamId, ssid: Ssid, domain: DomainId) -> Result<(), ErrorCode> {
        SharedSmmu::attach(self, stream.0, ssid.0, domain).map_err(error_code)
    }

    fn detach(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), ErrorCode> {
        SharedSmmu::detach(self, stream.0, ssid.0).map_err(error_code)
    }

    fn map(
        &mut self,
        domain: DomainId,
        iova: u64,
        paddr: u64,
        len: u64,
        p: Perms,
    ) -> Result<(), ErrorCode> {
        SharedSmmu::map(self, domain, iova, paddr, len, perms(p)).map_err(error_code)
    }

    fn unmap(&mut self, domain: DomainId, iova: u64, len: u64) -> Result<(), ErrorCode> {
        unmap_result(SharedSmmu::unmap(self, domain, iova, len), len)
    }

    /// Where the core lists `(stream, ssid)`: after an attach that timed
    /// out half-way, the core may keep the stream listed (and its STE or
    /// CD live), and the handler must record it so that it can be
    /// detached, its domain freed, and the client retired.
    fn attached(&self, stream: StreamId, ssid: Ssid) -> Option<Option<DomainId>> {
        Some(self.attached_domain(stream.0, ssid.0))
    }

    fn pt_pages(&self, domain: DomainId) -> u32 {
        SharedSmmu::pt_pages(self, domain).unwrap_or(0)
    }

    fn walk(&self, domain: DomainId, iova: u64) -> Option<WalkInfo> {
        let w = self.with_page_table(domain, |pt| pt.walk(iova)).ok()?;
        Some(WalkInfo {
            level: w.level,
            descriptor: w.descriptor,
            perms: Perms(w.perms().0 & Perms::ALL.0),
        })
    }

    fn drain_events(&mut self, sink: &mut dyn FnMut(CoreEvent)) -> bool {
        let report = SharedSmmu::drain_events(self, |e| {
            sink(CoreEvent {
                stream: StreamId(e.sid),
                ssid: Ssid(e.ssid.unwrap_or(0)),
                iova: fault_addr(&e.kind),
                kind: fault_kind(&e.kind),
                write: e.fault().is_some_and(|f| !f.read),
            })
        });
        report.overflowed
    }
}

/// An owned core is driven through a shared reference to itself.
impl<M, A, D, F, const N: usize> Core for SharedSmmu<M, A, D, F, N>
where
    M: Mmio + Send,
    A: DmaAllocator + Send,
    D: DelayNs + Send,
    F: LockFamily,
{
    type Domain = DomainId;

    fn caps(&self) -> CoreCaps {
        Core::caps(&self)
    }
    fn alloc_domain(&mut self) -> Result<DomainId, ErrorCode> {
        Core::alloc_domain(&mut &*self)
    }
    fn free_domain(&mut self, domain: DomainId) -> Result<(), ErrorCode> {
        Core::free_domain(&mut &*self, domain)
    }
    fn attach(&mut self, stream: StreamId, ssid: Ssid, domain: DomainId) -> Result<(), ErrorCode> {
        Core::attach(&mut &*self, stream, ssid, domain)
    }
    fn detach(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), ErrorCode> {
        Core::detach(&mut &*self, stream, ssid)
    }
    fn map(
        &mut self,
        domain: DomainId,
        iova: u64,
        paddr: u64,
        len: u64,
        p: Perms,
    ) -> Result<(), ErrorCode> {
        Core::map(&mut &*self, domain, iova, paddr, len, p)
    }
    fn unmap(&mut self, domain: DomainId, iova: u64, len: u64) -> Result<(), ErrorCode> {
        Core::unmap(&mut &*self, domain, iova, len)
    }
    fn attached(&self, stream: StreamId, ssid: Ssid) -> Option<Option<DomainId>> {
        Core::attached(&self, stream, ssid)
    }
    fn pt_pages(&self, domain: DomainId) -> u32 {
        Core::pt_pages(&self, domain)
    }
    fn walk(&self, domain: DomainId, iova: u64) -> Option<WalkInfo> {
        Core::walk(&self, domain, iova)
    }
    fn drain_events(&mut self, sink: &mut dyn FnMut(CoreEvent)) -> bool {
        Core::drain_events(&mut &*self, sink)
    }
}
