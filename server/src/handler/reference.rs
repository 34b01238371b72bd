//! The reference core for host tests and fuzzing: a page map per domain
//! that implements the [`Core`] contract the handler relies on (all-or-
//! nothing map and unmap, no freeing of attached domains) and nothing more,
//! with failure injection (`fail_map_in`) for the handler's rollback paths.
//! The real core is tested against the SMMU model in `server/tests`.

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec as StdVec;

use iommu_protocol::{ErrorCode, Perms, Ssid, StreamId};

use super::{Core, CoreCaps, CoreEvent};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RefCore {
    next: u32,
    /// Per domain: page number -> (frame number, permissions).
    pub domains: BTreeMap<u32, BTreeMap<u64, (u64, Perms)>>,
    /// (StreamID, SSID) -> domain.
    pub attached: BTreeMap<(u32, u32), u32>,
    /// Fail the n-th next core map (0 = the next one).
    pub fail_map_in: Option<usize>,
    pub events: StdVec<CoreEvent>,
    pub ssid_bits: u8,
}

impl RefCore {
    /// An empty core whose SMMU has `ssid_bits` of substreams.
    pub fn with_ssid_bits(ssid_bits: u8) -> Self {
        RefCore {
            ssid_bits,
            ..RefCore::default()
        }
    }

    pub fn translate(&self, stream: StreamId, ssid: Ssid, iova: u64) -> Option<(u64, Perms)> {
        let d = self.attached.get(&(stream.0, ssid.0))?;
        let (p, perms) = self.domains.get(d)?.get(&(iova >> 12))?;
        Some(((p << 12) | (iova & 0xfff), *perms))
    }
}

impl Core for RefCore {
    type Domain = u32;
    fn caps(&self) -> CoreCaps {
        CoreCaps {
            ssid_bits: self.ssid_bits,
            ias_bits: 48,
            page_sizes: (1 << 12) | (1 << 21) | (1 << 30),
        }
    }
    fn alloc_domain(&mut self) -> Result<u32, ErrorCode> {
        self.next += 1;
        self.domains.insert(self.next, BTreeMap::new());
        Ok(self.next)
    }
    fn free_domain(&mut self, d: u32) -> Result<(), ErrorCode> {
        assert!(
            !self.attached.values().any(|&x| x == d),
            "freed an attached domain"
        );
        self.domains
            .remove(&d)
            .map(|_| ())
            .ok_or(ErrorCode::NoSuchDomain)
    }
    fn attach(&mut self, stream: StreamId, ssid: Ssid, d: u32) -> Result<(), ErrorCode> {
        assert!(self.domains.contains_key(&d));
        self.attached.insert((stream.0, ssid.0), d);
        Ok(())
    }
    fn detach(&mut self, stream: StreamId, ssid: Ssid) -> Result<(), ErrorCode> {
        self.attached
            .remove(&(stream.0, ssid.0))
            .map(|_| ())
            .ok_or(ErrorCode::NoSuchStream)
    }
    fn map(
        &mut self,
        d: u32,
        iova: u64,
        paddr: u64,
        len: u64,
        perms: Perms,
    ) -> Result<(), ErrorCode> {
        if let Some(n) = self.fail_map_in.as_mut() {
            if *n == 0 {
                self.fail_map_in = None;
                return Err(ErrorCode::NoMemory);
            }
            *n -= 1;
        }
        assert!((iova | paddr | len) & 0xfff == 0 && len > 0);
        let pt = self.domains.get_mut(&d).ok_or(ErrorCode::NoSuchDomain)?;
        let (v, p, n) = (iova >> 12, paddr >> 12, len >> 12);
        // Huge lengths are the handler's bug (quotas bound them).
        assert!(n <= 1 << 20, "map of {n} pages got through");
        if (v..v + n).any(|x| pt.contains_key(&x)) {
            return Err(ErrorCode::Overlap);
        }
        for i in 0..n {
            pt.insert(v + i, (p + i, perms));
        }
        Ok(())
    }
    fn unmap(&mut self, d: u32, iova: u64, len: u64) -> Result<(), ErrorCode> {
        let pt = self.domains.get_mut(&d).ok_or(ErrorCode::NoSuchDomain)?;
        let (v, n) = (iova >> 12, len >> 12);
        assert!(n <= 1 << 20, "unmap of {n} pages got through");
        if !(v..v + n).all(|x| pt.contains_key(&x)) {
            return Err(ErrorCode::NotMapped);
        }
        for x in v..v + n {
            pt.remove(&x);
        }
        Ok(())
    }
    fn pt_pages(&self, d: u32) -> u32 {
        let Some(pt) = self.domains.get(&d) else {
            return 0;
        };
        let l3: BTreeSet<u64> = pt.keys().map(|v| v >> 9).collect();
        let l2: BTreeSet<u64> = pt.keys().map(|v| v >> 18).collect();
        let l1: BTreeSet<u64> = pt.keys().map(|v| v >> 27).collect();
        // In 4 KiB pages, as the real tables: the root and the level 1-2
        // tables are 8 KiB (with their shadow), leaf tables 4 KiB.
        (2 + l3.len() + 2 * (l2.len() + l1.len())) as u32
    }
    fn drain_events(&mut self, sink: &mut dyn FnMut(CoreEvent)) -> bool {
        for e in self.events.drain(..) {
            sink(e);
        }
        false
    }
}
