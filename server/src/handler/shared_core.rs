//! The handler's [`Core`] over the concurrent core, [`SharedSmmu`], through
//! a shared reference: several handlers (e.g. one worker thread per client
//! priority band, each with its own clients) can drive one SMMU at once.

use embedded_hal::delay::DelayNs;
use iommu_protocol::{ErrorCode, Perms, Ssid, StreamId};

use super::smmu::{core_caps, error_code, fault_addr, fault_kind, perms, unmap_result};
use super::{Core, CoreCaps, CoreEvent};
use crate::hal::{DmaAllocator, Mmio};
use crate::shared::SharedSmmu;
use crate::sync::LockFamily;
use crate::DomainId;

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
