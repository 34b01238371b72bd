//! A DMA-API-style layer over [`Iommu`], in the spirit of Linux's DMA API:
//! a driver says *what* memory a device may reach and in which
//! [`Direction`], and gets back the address to program into the device; it
//! never picks an I/O address itself.
//!
//! - [`DmaDomain`] owns one [`DomainId`] and an [`IovaAllocator`] over an
//!   I/O address window the driver chooses once. Allocating an address is
//!   local (no server round trip); mapping and unmapping are one call each.
//! - [`DmaDomain::map_single`] maps one buffer for one request and
//!   [`DmaDomain::unmap`] takes it away on completion. The unmap is
//!   *strict*: it returns only after the server invalidated the SMMU's TLBs
//!   and synced, so from then on the device cannot reach the buffer.
//! - [`DmaDomain::map_sg`] maps a scatter list (pieces of one or several
//!   registered memories) at one contiguous I/O address range, with one
//!   `MapBatch` when the pieces fit one.
//! - [`DmaDomain::map_persistent`] maps rings and other long-lived
//!   structures, which stay until [`DmaDomain::unmap`].
//!
//! Every mapping takes the highest free I/O addresses that fit (top-down,
//! as Linux's IOVA allocator hands them out): a driver's rings, mapped
//! first, sit at the top of the window and its per-request buffers right
//! below them, in the same 2 MiB leaf table. The server frees a leaf table
//! when its last page goes, so a buffer alone in its 2 MiB would make it
//! build and free a table on every request (about 1,500 instructions a
//! request in `cargo xtask bench`'s block I/O rows); beside the rings the
//! table stays.
//!
//! Memory is named as in the rest of the library: by a [`MemoryHandle`]
//! from [`Iommu::register_memory`] and a byte offset into it. Offsets and
//! lengths need not be page-aligned; the whole 4 KiB pages that hold the
//! buffer are mapped (as Linux's IOMMU DMA path does), and the returned
//! [`DmaAddr::addr`] points at the buffer's first byte.
//!
//! # Failures leave nothing behind
//!
//! - If the server refuses a map ([`Error::Iommu`], e.g. a quota), it
//!   changed nothing (maps are all or nothing) and the I/O address range
//!   goes back to the allocator.
//! - If a map fails in a way that leaves the server's state unknown (a
//!   [`ErrorCode::HardwareError`], a transport error, a reply that does not
//!   decode), the device might still reach part of the range: it stays
//!   allocated ("quarantined", see [`DmaDomain::quarantined_bytes`]) so it
//!   is never handed out again.
//! - If an unmap fails, the device may still reach the buffer: the range
//!   stays allocated and the mapping comes back in [`UnmapError`], to retry.
//!
//! # Example
//!
//! A block driver's life. The hidden lines build the toy server of the
//! [crate documentation](crate#the-examples); on seL4 the transport is the
//! driver's endpoint.
//!
//! ```
//! # use std::{cell::RefCell, rc::Rc};
//! # use iommu_client::{FaultBatch, FaultRecord, InProcess, MemoryHandle, DomainId, ErrorCode};
//! # use iommu_client::{FaultKind, Perms, ServerInfo, WalkInfo, ABI_VERSION};
//! # use iommu_protocol::{decode_request, encode, MapEntry, Reply, Request};
//! # #[derive(Default)]
//! # struct Toy { maps: Vec<(u64, u64, Perms)>, faults: Vec<FaultRecord>, pages: u64, log: Vec<Request> }
//! # impl Toy {
//! #     fn at(&self, pfn: u64) -> Option<Perms> {
//! #         self.maps.iter().find(|m| m.0 <= pfn && pfn < m.0 + m.1).map(|m| m.2)
//! #     }
//! #     fn device_write(&mut self, iova: u64) {
//! #         let kind = match self.at(iova >> 12) {
//! #             Some(p) if p.contains(Perms::WRITE) => return,
//! #             Some(_) => FaultKind::Permission,
//! #             None => FaultKind::Translation,
//! #         };
//! #         let (stream, ssid, write, count) = (StreamId(8), Ssid(0), true, 1);
//! #         self.faults.push(FaultRecord { stream, ssid, iova, kind, write, count });
//! #     }
//! #     fn map(&mut self, entries: &[MapEntry]) -> Reply {
//! #         if entries.iter().any(|e| (e.iova_pfn..e.iova_pfn + u64::from(e.pages)).any(|p| self.at(p).is_some())) {
//! #             return Reply::Err(ErrorCode::Overlap);
//! #         }
//! #         self.maps.extend(entries.iter().map(|e| (e.iova_pfn, u64::from(e.pages), e.perms)));
//! #         Reply::Ok
//! #     }
//! #     fn answer(&mut self, request: Request, caps: u64) -> Reply {
//! #         self.log.push(request.clone());
//! #         match request {
//! #             Request::Hello { .. } => Reply::Hello(ServerInfo {
//! #                 version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21 | 1 << 30,
//! #                 ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: true,
//! #             }),
//! #             Request::AllocDomain => Reply::Domain(DomainId(1)),
//! #             Request::RegisterMemory { .. } => {
//! #                 self.pages += caps;
//! #                 Reply::Memory { memory: MemoryHandle(1), pages: self.pages }
//! #             }
//! #             Request::Attach { stream, .. } if stream != StreamId(8) => Reply::Err(ErrorCode::NotPermitted),
//! #             Request::Map { iova_pfn, memory, offset_pfn, pages, perms, .. } => {
//! #                 self.map(&[MapEntry { iova_pfn, memory, offset_pfn, pages, perms }])
//! #             }
//! #             Request::MapBatch { entries, .. } => self.map(&entries),
//! #             Request::Unmap { iova_pfn, pages, .. } => {
//! #                 let n = self.maps.len();
//! #                 self.maps.retain(|m| m.0 < iova_pfn || m.0 >= iova_pfn + u64::from(pages));
//! #                 if self.maps.len() == n { Reply::Err(ErrorCode::NotMapped) } else { Reply::Ok }
//! #             }
//! #             Request::Faults { .. } => Reply::Faults(FaultBatch {
//! #                 records: self.faults.drain(..).collect(), dropped: 0, more: false,
//! #             }),
//! #             Request::Walk { iova_pfn, .. } => Reply::Walk(match self.at(iova_pfn) {
//! #                 Some(perms) => WalkInfo { level: 3, descriptor: iova_pfn << 12 | 0x403, perms },
//! #                 None => WalkInfo { level: 3, descriptor: 0, perms: Perms(0) },
//! #             }),
//! #             _ => Reply::Ok,
//! #         }
//! #     }
//! # }
//! # let toy = Rc::new(RefCell::new(Toy::default()));
//! # let server = toy.clone();
//! # let transport = InProcess::new(1, move |_: u64, req: &[u8], caps: &[u32], out: &mut [u8]| {
//! #     let reply = server.borrow_mut().answer(decode_request(req).unwrap(), caps.len() as u64);
//! #     encode(&reply, out).unwrap()
//! # });
//! # let frames: Vec<u32> = (0..16).collect();
//! use iommu_client::{Direction, DmaDomain, Iommu, Segment, Ssid, StreamId};
//!
//! let mut iommu = Iommu::connect(transport)?;
//! // 64 KiB of the driver's DMA pool: sixteen 4 KiB frame caps it holds.
//! let memory = iommu.register_memory(&frames)?;
//! // A domain whose I/O addresses this driver hands out from
//! // [1 MiB, 1 MiB + 256 MiB), attached to the disk's stream.
//! let mut dma: DmaDomain = DmaDomain::create(&mut iommu, 0x10_0000, 0x1000_0000)?;
//! iommu.attach(StreamId(8), Ssid(0), dma.domain())?;
//!
//! // The descriptor ring, for the device's lifetime, at the top of the window.
//! let ring = dma.map_persistent(&mut iommu, memory.handle, 0, 0x1000, Direction::Bidirectional)?;
//! assert_eq!(ring.addr(), 0x1010_0000 - 0x1000);
//!
//! // One read request: the device writes 512 bytes at offset 0x2200.
//! // Right below the ring (top-down), in the same leaf table.
//! let buf = dma.map_single(&mut iommu, memory.handle, 0x2200, 512, Direction::FromDevice)?;
//! assert_eq!(buf.addr(), 0x1010_0000 - 0x2000 + 0x200, "the buffer's offset in its page is kept");
//! // ... put buf.addr() in a descriptor at ring.addr(), ring the doorbell ...
//! # toy.borrow_mut().device_write(buf.addr());
//! # assert!(toy.borrow().faults.is_empty(), "the device may write the buffer");
//! // On completion: from the reply on, the device cannot reach the buffer.
//! let old = buf.addr();
//! dma.unmap(&mut iommu, buf)?;
//! // A late write by the device to the old address faults.
//! # toy.borrow_mut().device_write(old);
//! let late = iommu.faults()?.records;
//! assert_eq!((late[0].iova, late[0].kind), (old, FaultKind::Translation));
//!
//! // A write request gathered from three scattered pages: the device sees
//! // one 12 KiB buffer, which it may only read.
//! let page = |n: u64| Segment { memory: memory.handle, offset: n * 0x1000, len: 0x1000 };
//! let sg = dma.map_sg(&mut iommu, &[page(7), page(2), page(11)], Direction::ToDevice)?;
//! assert_eq!((sg.addr(), sg.size()), (0x1010_0000 - 0x4000, 0x3000), "the freed addresses, reused");
//! # assert!(matches!(toy.borrow().log.last(), Some(Request::MapBatch { entries, .. }) if entries.len() == 3));
//! dma.unmap(&mut iommu, sg)?;
//!
//! // At shutdown.
//! dma.unmap(&mut iommu, ring)?;
//! assert_eq!(dma.allocator().live(), 0);
//! assert_eq!(dma.quarantined_bytes(), 0);
//! # assert!(toy.borrow().maps.is_empty());
//! # Ok::<(), iommu_client::Error>(())
//! ```

use core::ops::Range;

use crate::{
    DomainId, Error, ErrorCode, Iommu, MemoryHandle, Perms, Region, Transport, MAX_BATCH,
    WIRE_PAGE_SIZE,
};

/// The page size the allocator and the server count in: 4 KiB.
pub const PAGE_SIZE: u64 = WIRE_PAGE_SIZE;

/// The block size a range of at least this many bytes is aligned to, so
/// that the server can map it with 2 MiB blocks where the memory allows.
pub const BLOCK_SIZE: u64 = 0x20_0000;

/// Which way the data of a DMA goes, seen from the device; it decides the
/// device's permissions on the mapping ([`Direction::perms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The CPU wrote the buffer, the device reads it (a disk write, a
    /// command): [`Perms::READ`]. A device write to it faults.
    ToDevice,
    /// The device writes the buffer, the CPU reads it afterwards (a disk
    /// read, a completion): [`Perms::WRITE`]. (SMMUv3 stage 1 cannot express
    /// write-only, so the device may read it too.)
    FromDevice,
    /// Both (a ring the device reads and updates): [`Perms::RW`].
    Bidirectional,
}

impl Direction {
    /// The device's permissions for a mapping in this direction.
    ///
    /// ```
    /// use iommu_client::{Direction, Perms};
    /// assert_eq!(Direction::ToDevice.perms(), Perms::READ);
    /// assert_eq!(Direction::FromDevice.perms(), Perms::WRITE);
    /// assert_eq!(Direction::Bidirectional.perms(), Perms::RW);
    /// ```
    pub const fn perms(self) -> Perms {
        match self {
            Direction::ToDevice => Perms::READ,
            Direction::FromDevice => Perms::WRITE,
            Direction::Bidirectional => Perms::RW,
        }
    }
}

impl From<Direction> for Perms {
    fn from(d: Direction) -> Perms {
        d.perms()
    }
}

/// Which end of the window [`IovaAllocator::alloc`] takes a range from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// The lowest free range that fits (first fit): per-request mappings.
    Low,
    /// The highest free range that fits: long-lived mappings, so that they
    /// do not split the space per-request mappings come and go in.
    High,
}

/// A fixed-capacity allocator of I/O addresses in 4 KiB pages over one
/// window `[base, base + size)`, with no heap and no server round trip.
///
/// It keeps the free ranges of the window as a sorted list of at most `N`
/// extents, merged with their neighbours when a range is freed, so its
/// memory is `16 * N` bytes whatever the window's size (a 256 GiB window
/// costs what a 1 MiB one does). Since every free extent but one lies
/// between two allocated ranges, at most `N - 1` ranges can be allocated at
/// once ([`IovaAllocator::MAX_LIVE`]); the next allocation fails with
/// [`Error::IovaExhausted`], as does one no free range fits. Allocation and
/// freeing take time linear in the number of free extents.
///
/// Ranges are freed exactly as they were allocated (the same address and
/// size): the allocator does not remember the boundaries between adjacent
/// allocations.
///
/// ```
/// use iommu_client::{Error, IovaAllocator, Placement};
///
/// // 16 pages at 1 MiB; up to 7 ranges at once.
/// let mut a: IovaAllocator<8> = IovaAllocator::new(0x10_0000, 0x1_0000)?;
/// let x = a.alloc(0x2000, 0x1000, 0, Placement::Low)?;
/// let ring = a.alloc(0x1000, 0x1000, 0, Placement::High)?;
/// assert_eq!((x, ring), (0x10_0000, 0x10_f000));
/// assert_eq!(a.alloc(0x1_0000, 0x1000, 0, Placement::Low), Err(Error::IovaExhausted));
/// a.free(x, 0x2000)?;
/// a.free(ring, 0x1000)?;
/// assert_eq!(a.free_bytes(), 0x1_0000);
/// assert_eq!(a.largest_free(), 0x1_0000, "merged back into one range");
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IovaAllocator<const N: usize> {
    /// The window, in page numbers: `[start, end)`.
    start: u64,
    end: u64,
    /// Free extents `[s, e)` in page numbers: sorted, disjoint, never
    /// adjacent (merged), none empty.
    free: heapless::Vec<(u64, u64), N>,
    /// Ranges allocated and not freed.
    live: usize,
    /// Pages in `free`.
    free_pages: u64,
}

/// Page numbers above this are past the 64-bit address space.
const MAX_PFN: u64 = u64::MAX / PAGE_SIZE + 1;

impl<const N: usize> IovaAllocator<N> {
    /// How many ranges can be allocated at once: `N - 1`.
    pub const MAX_LIVE: usize = N - 1;

    /// An allocator with all of `[base, base + size)` free. `base` and
    /// `size` are multiples of 4 KiB ([`ErrorCode::Misaligned`]), `size` is
    /// not 0 and the window ends within the 64-bit address space
    /// ([`ErrorCode::OutOfRange`]). `N` must be at least 2 (checked at
    /// compile time).
    pub fn new(base: u64, size: u64) -> Result<Self, Error> {
        const { assert!(N >= 2, "an IovaAllocator needs N >= 2") };
        if !base.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(ErrorCode::Misaligned.into());
        }
        let start = base / PAGE_SIZE;
        let end = start + size / PAGE_SIZE;
        if size == 0 || end > MAX_PFN {
            return Err(ErrorCode::OutOfRange.into());
        }
        let mut free = heapless::Vec::new();
        // Cannot fail: N >= 2.
        let _ = free.push((start, end));
        Ok(IovaAllocator {
            start,
            end,
            free,
            live: 0,
            free_pages: end - start,
        })
    }

    /// The window, in bytes. (Its end is `u64::MAX + 1` for a window that
    /// reaches the top of the address space, which does not fit: then the
    /// range ends at `u64::MAX`.)
    pub fn window(&self) -> Range<u64> {
        self.start * PAGE_SIZE..self.end.saturating_mul(PAGE_SIZE)
    }

    /// Allocates `size` bytes (a multiple of 4 KiB, not 0) at an address
    /// `a` with `a % align == phase % align`, from the [`Placement`] end of
    /// the window. `align` is a power of two of at least 4 KiB and `phase` a
    /// multiple of 4 KiB ([`ErrorCode::Misaligned`] otherwise). A `phase`
    /// lets a range be congruent to the memory behind it, so that a 2 MiB
    /// block of the memory falls on a 2 MiB block of I/O addresses.
    ///
    /// Fails with [`Error::IovaExhausted`] if no free range fits or
    /// [`IovaAllocator::MAX_LIVE`] ranges are allocated already.
    ///
    /// ```
    /// use iommu_client::{IovaAllocator, Placement};
    ///
    /// let mut a: IovaAllocator<4> = IovaAllocator::new(0x10_0000, 0x4000_0000)?;
    /// // 4 MiB of memory that starts 1 MiB into a 2 MiB block gets an I/O
    /// // address 1 MiB into a 2 MiB block too, so that its middle 2 MiB
    /// // can be mapped as one block.
    /// let iova = a.alloc(0x40_0000, 0x20_0000, 0x10_0000, Placement::Low)?;
    /// assert_eq!(iova % 0x20_0000, 0x10_0000);
    /// # Ok::<(), iommu_client::Error>(())
    /// ```
    pub fn alloc(
        &mut self,
        size: u64,
        align: u64,
        phase: u64,
        placement: Placement,
    ) -> Result<u64, Error> {
        if size == 0 {
            return Err(ErrorCode::Malformed.into());
        }
        if !size.is_multiple_of(PAGE_SIZE)
            || !align.is_power_of_two()
            || align < PAGE_SIZE
            || !phase.is_multiple_of(PAGE_SIZE)
        {
            return Err(ErrorCode::Misaligned.into());
        }
        let pages = size / PAGE_SIZE;
        let step = align / PAGE_SIZE;
        let ph = (phase % align) / PAGE_SIZE;
        if self.live >= Self::MAX_LIVE || pages > self.free_pages {
            return Err(Error::IovaExhausted);
        }
        // All page numbers are below 2^52 and `step` at most 2^51: no sum
        // below overflows.
        let found = match placement {
            Placement::Low => self.free.iter().enumerate().find_map(|(i, &(s, e))| {
                let mut c = s - s % step + ph;
                if c < s {
                    c += step;
                }
                (c + pages <= e).then_some((i, c))
            }),
            Placement::High => self.free.iter().enumerate().rev().find_map(|(i, &(s, e))| {
                let top = e.checked_sub(pages)?;
                let mut c = top - top % step + ph;
                if c > top {
                    c = c.checked_sub(step)?;
                }
                (c >= s).then_some((i, c))
            }),
        };
        let (i, c) = found.ok_or(Error::IovaExhausted)?;
        let (s, e) = self.free[i];
        let (left, right) = ((s, c), (c + pages, e));
        match (left.0 < left.1, right.0 < right.1) {
            (true, true) => {
                // Cannot fail while `live < N - 1` (at most `live + 1` free
                // extents); refused rather than corrupted if it ever did.
                self.free
                    .insert(i + 1, right)
                    .map_err(|_| Error::IovaExhausted)?;
                self.free[i] = left;
            }
            (true, false) => self.free[i] = left,
            (false, true) => self.free[i] = right,
            (false, false) => {
                self.free.remove(i);
            }
        }
        self.live += 1;
        self.free_pages -= pages;
        Ok(c * PAGE_SIZE)
    }

    /// The index of the first free extent at or after page `start`, if
    /// `[start, start + pages)` lies in the window and is wholly allocated.
    fn allocated_at(&self, iova: u64, size: u64) -> Option<usize> {
        if !iova.is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
            || size == 0
            || self.live == 0
        {
            return None;
        }
        let start = iova / PAGE_SIZE;
        let end = start.checked_add(size / PAGE_SIZE)?;
        if start < self.start || end > self.end {
            return None;
        }
        let i = self.free.partition_point(|&(s, _)| s < start);
        let before_ok = i == 0 || self.free[i - 1].1 <= start;
        let after_ok = self.free.get(i).is_none_or(|&(s, _)| s >= end);
        (before_ok && after_ok).then_some(i)
    }

    /// Whether all of `[iova, iova + size)` is in the window and allocated.
    pub fn is_allocated(&self, iova: u64, size: u64) -> bool {
        self.allocated_at(iova, size).is_some()
    }

    /// Frees a range [`IovaAllocator::alloc`] returned, with the size it
    /// was allocated with. A range that is not wholly allocated (or not in
    /// the window) is refused with [`ErrorCode::NotMapped`] and nothing
    /// changes.
    pub fn free(&mut self, iova: u64, size: u64) -> Result<(), Error> {
        let i = self
            .allocated_at(iova, size)
            .ok_or(Error::Iommu(ErrorCode::NotMapped))?;
        let (start, pages) = (iova / PAGE_SIZE, size / PAGE_SIZE);
        let end = start + pages;
        let joins_prev = i > 0 && self.free[i - 1].1 == start;
        let joins_next = self.free.get(i).is_some_and(|&(s, _)| s == end);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.free[i - 1].1 = self.free[i].1;
                self.free.remove(i);
            }
            (true, false) => self.free[i - 1].1 = end,
            (false, true) => self.free[i].0 = start,
            (false, false) => {
                // Cannot fail: at most `live + 1 <= N - 1` extents before.
                self.free
                    .insert(i, (start, end))
                    .map_err(|_| Error::Iommu(ErrorCode::NoMemory))?;
            }
        }
        self.live -= 1;
        self.free_pages += pages;
        Ok(())
    }

    /// Ranges allocated and not freed.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Free bytes in the window, in all.
    pub fn free_bytes(&self) -> u64 {
        self.free_pages * PAGE_SIZE
    }

    /// The largest free range, in bytes (an allocation of this size with
    /// 4 KiB alignment succeeds if fewer than `N - 1` ranges are live).
    pub fn largest_free(&self) -> u64 {
        self.free.iter().map(|&(s, e)| e - s).max().unwrap_or(0) * PAGE_SIZE
    }

    /// The free ranges, in bytes, lowest first (for diagnostics and
    /// tests).
    pub fn free_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.free
            .iter()
            .map(|&(s, e)| s * PAGE_SIZE..e.saturating_mul(PAGE_SIZE))
    }
}

/// One piece of a scatter list for [`DmaDomain::map_sg`]: `len` bytes of
/// registered memory from byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The memory, from [`Iommu::register_memory`].
    pub memory: MemoryHandle,
    /// The piece's first byte in the memory.
    pub offset: u64,
    /// The piece's length in bytes (not 0).
    pub len: u64,
}

/// A live mapping made by a [`DmaDomain`]: the address to give the device,
/// and what [`DmaDomain::unmap`] needs to take it away.
///
/// It is neither `Copy` nor `Clone` and [`DmaDomain::unmap`] consumes it,
/// so a mapping cannot be unmapped twice (which could unmap a later
/// mapping that got the same I/O addresses). Dropping it without unmapping
/// leaves the device access and the addresses allocated: keep it until
/// the device is done, e.g. in the request's slot.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a DMA mapping stays until it is unmapped with DmaDomain::unmap"]
pub struct DmaAddr {
    addr: u64,
    size: u64,
    iova: u64,
    span: u64,
    domain: DomainId,
    dir: Direction,
    persistent: bool,
}

impl DmaAddr {
    /// The I/O address of the buffer's first byte: what the device is
    /// given.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The buffer's length in bytes, as mapped (for a scatter list, all
    /// pieces together: `[addr, addr + size)` is contiguous for the device).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The whole I/O pages the mapping covers: the device can reach all of
    /// them, which includes the bytes around an unaligned buffer.
    pub fn mapped(&self) -> Range<u64> {
        self.iova..self.iova + self.span
    }

    /// The domain it is mapped in.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// Its direction.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Whether [`DmaDomain::map_persistent`] made it.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }
}

/// [`DmaDomain::unmap`] failed: the device may still reach the buffer, so
/// its I/O addresses stay allocated, and `mapping` comes back to retry
/// with. Converts into [`Error`] (with `?`), which gives the mapping up:
/// its addresses then stay allocated for good.
///
/// The buffer must not be reused for anything else until an unmap of the
/// returned mapping succeeds: the device might still write to it.
///
/// ```
/// # use std::cell::Cell;
/// # use iommu_client::{DomainId, InProcess, ServerInfo, ABI_VERSION};
/// # use iommu_protocol::{decode_request, encode, Reply, Request};
/// # // A toy server whose first unmap fails as if the SMMU did not
/// # // confirm the invalidation in time.
/// # let unmaps = Cell::new(0);
/// # let server = |_: u64, request: &[u8], _: &[u32], reply: &mut [u8]| {
/// #     let answer = match decode_request(request).unwrap() {
/// #         Request::Hello { .. } => Reply::Hello(ServerInfo {
/// #             version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21,
/// #             ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: false,
/// #         }),
/// #         Request::AllocDomain => Reply::Domain(DomainId(1)),
/// #         Request::RegisterMemory { .. } => Reply::Memory { memory: iommu_client::MemoryHandle(1), pages: 16 },
/// #         Request::Unmap { .. } if unmaps.replace(unmaps.get() + 1) == 0 => Reply::Err(ErrorCode::HardwareError),
/// #         _ => Reply::Ok,
/// #     };
/// #     encode(&answer, reply).unwrap()
/// # };
/// # let mut iommu = iommu_client::Iommu::connect(InProcess::new(1, server))?;
/// # let mut dma: DmaDomain = DmaDomain::create(&mut iommu, 0x10_0000, 0x1000_0000)?;
/// # let memory = iommu.register_memory(&[1])?;
/// use iommu_client::{Direction, DmaDomain, Error, ErrorCode, UnmapError};
///
/// let buf = dma.map_single(&mut iommu, memory.handle, 0, 4096, Direction::ToDevice)?;
/// // ... the device is done with it ...
/// match dma.unmap(&mut iommu, buf) {
///     Ok(()) => unreachable!("the toy server fails the first unmap"),
///     Err(UnmapError { error, mapping }) => {
///         assert_eq!(error, Error::Iommu(ErrorCode::HardwareError));
///         // Not handed out again meanwhile.
///         assert!(dma.allocator().is_allocated(mapping.mapped().start, 4096));
///         dma.unmap(&mut iommu, mapping)?;
///     }
/// }
/// assert_eq!(dma.allocator().live(), 0);
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct UnmapError {
    /// Why it failed: the server's or the transport's error, or, refused
    /// locally without a call, [`ErrorCode::NoSuchDomain`] for a mapping
    /// of another domain and [`ErrorCode::NotMapped`] for one whose
    /// addresses this domain's allocator does not hold.
    pub error: Error,
    /// The mapping, still live.
    pub mapping: DmaAddr,
}

impl core::fmt::Display for UnmapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "unmap of {:#x}+{:#x} failed ({}); still mapped",
            self.mapping.addr(),
            self.mapping.size(),
            self.error
        )
    }
}

impl core::error::Error for UnmapError {}

impl From<UnmapError> for Error {
    fn from(e: UnmapError) -> Error {
        e.error
    }
}

/// One I/O address space of a driver with a client-side allocator for its
/// addresses: see the [module documentation](self).
///
/// `N` bounds the allocator's bookkeeping: at most `N - 1` mappings live at
/// once (`N` is 64 by default: 63 mappings, for 1 KiB of memory). The
/// server's own quotas (bytes mapped, mapping records, page-table pages)
/// apply as well: a scatter mapping takes one record per piece that does
/// not continue the previous one in the same memory.
#[derive(Debug)]
pub struct DmaDomain<const N: usize = 64> {
    domain: DomainId,
    iova: IovaAllocator<N>,
    quarantined: u64,
}

/// The pages `[offset, offset + len)` touches: (first page's byte offset,
/// bytes of whole pages).
fn page_span(offset: u64, len: u64) -> Result<(u64, u64), Error> {
    if len == 0 {
        return Err(ErrorCode::Malformed.into());
    }
    let first = offset - offset % PAGE_SIZE;
    let end = offset
        .checked_add(len)
        .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
        .ok_or(Error::Iommu(ErrorCode::OutOfRange))?;
    Ok((first, end - first))
}

/// Alignment and phase of the I/O range for `span` bytes of memory from
/// page-aligned offset `first`: 2 MiB-congruent to the memory from 2 MiB on
/// (a block needs both sides aligned alike), 4 KiB otherwise.
fn placement_of(first: u64, span: u64) -> (u64, u64) {
    if span >= BLOCK_SIZE {
        (BLOCK_SIZE, first % BLOCK_SIZE)
    } else {
        (PAGE_SIZE, 0)
    }
}

/// Whether a failed map left the server as it was: it refused (maps are all
/// or nothing) and did not hit a hardware error half-way.
fn server_undid(e: &Error) -> bool {
    matches!(e, Error::Iommu(c) if *c != ErrorCode::HardwareError)
}

impl<const N: usize> DmaDomain<N> {
    /// A DMA domain over `domain` (already allocated, e.g. by
    /// [`Iommu::alloc_domain`]) that hands out I/O addresses from
    /// `[base, base + size)` (see [`IovaAllocator::new`] for the limits).
    /// Nothing else may map in that window of the domain.
    ///
    /// ```
    /// use iommu_client::{DmaDomain, DomainId};
    /// let dma: DmaDomain<16> = DmaDomain::new(DomainId(1), 0x4000_0000, 0x4000_0000)?;
    /// assert_eq!(dma.allocator().window(), 0x4000_0000..0x8000_0000);
    /// # Ok::<(), iommu_client::Error>(())
    /// ```
    pub fn new(domain: DomainId, base: u64, size: u64) -> Result<Self, Error> {
        Ok(DmaDomain {
            domain,
            iova: IovaAllocator::new(base, size)?,
            quarantined: 0,
        })
    }

    /// Allocates a new domain on the server and makes it a DMA domain over
    /// `[base, base + size)`. The window is checked against the server's
    /// input address size first ([`ErrorCode::OutOfRange`], and no domain
    /// is allocated).
    ///
    /// ```
    /// # use std::cell::RefCell;
    /// # use iommu_client::{DomainId, InProcess, Perms, ServerInfo, ABI_VERSION};
    /// # use iommu_protocol::{decode_request, encode, Reply, Request};
    /// # // A toy server that accepts everything and logs what it is sent.
    /// # let log = RefCell::new(Vec::new());
    /// # let server = |_: u64, request: &[u8], _: &[u32], reply: &mut [u8]| {
    /// #     let request = decode_request(request).unwrap();
    /// #     let answer = match request {
    /// #         Request::Hello { .. } => Reply::Hello(ServerInfo {
    /// #             version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21,
    /// #             ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: false,
    /// #         }),
    /// #         Request::AllocDomain => Reply::Domain(DomainId(1)),
    /// #         Request::RegisterMemory { .. } => Reply::Memory { memory: iommu_client::MemoryHandle(1), pages: 16 },
    /// #         _ => Reply::Ok,
    /// #     };
    /// #     log.borrow_mut().push(request);
    /// #     encode(&answer, reply).unwrap()
    /// # };
    /// # let mut iommu = iommu_client::Iommu::connect(InProcess::new(1, server))?;
    /// use iommu_client::{DmaDomain, Error, ErrorCode, Iommu, Ssid, StreamId, Transport};
    ///
    /// fn bring_up<T: Transport>(iommu: &mut Iommu<T>) -> Result<DmaDomain, Error> {
    ///     // 1 GiB of I/O addresses from 1 GiB on.
    ///     let dma: DmaDomain = DmaDomain::create(iommu, 1 << 30, 1 << 30)?;
    ///     iommu.attach(StreamId(8), Ssid(0), dma.domain())?;
    ///     Ok(dma)
    /// }
    ///
    /// let dma = bring_up(&mut iommu)?;
    /// assert_eq!(dma.allocator().window(), 1 << 30..2 << 30);
    /// // The server said its domains have 48 address bits: a window past
    /// // them is refused before a domain is allocated.
    /// let far = DmaDomain::<64>::create(&mut iommu, 1 << 48, 1 << 30);
    /// assert_eq!(far.unwrap_err(), Error::Iommu(ErrorCode::OutOfRange));
    /// # assert_eq!(log.borrow().iter().filter(|r| **r == Request::AllocDomain).count(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn create<T: Transport>(iommu: &mut Iommu<T>, base: u64, size: u64) -> Result<Self, Error> {
        let iova = IovaAllocator::new(base, size)?;
        let ias = u32::from(iommu.info().ias_bits);
        if ias < 64 && base.saturating_add(size) > 1u64 << ias {
            return Err(ErrorCode::OutOfRange.into());
        }
        let domain = iommu.alloc_domain()?;
        Ok(DmaDomain {
            domain,
            iova,
            quarantined: 0,
        })
    }

    /// The domain, to attach streams to and to free at the end.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The I/O address allocator, to read its state.
    pub fn allocator(&self) -> &IovaAllocator<N> {
        &self.iova
    }

    /// Bytes of I/O addresses kept allocated after maps that failed in a
    /// way that left the server's state unknown (see the
    /// [module documentation](self)). They are never handed out again.
    pub fn quarantined_bytes(&self) -> u64 {
        self.quarantined
    }

    /// After a failed map of `[iova, iova + span)`: back to the allocator
    /// if the server is known to have changed nothing, kept otherwise.
    fn release(&mut self, iova: u64, span: u64, undone: bool) {
        if undone {
            // Cannot fail: the range was allocated just before.
            let _ = self.iova.free(iova, span);
        } else {
            self.quarantined += span;
        }
    }

    /// Maps `len` bytes of `memory` from byte `offset` for one request, in
    /// direction `dir`, at I/O addresses of this domain's window; one
    /// server call. Returns the device address of byte `offset`.
    ///
    /// The whole 4 KiB pages holding the buffer are mapped. A buffer of
    /// 2 MiB or more gets an I/O address 2 MiB-congruent to its offset in
    /// the memory, so the server can use 2 MiB blocks where the memory is
    /// 2 MiB-aligned and contiguous.
    ///
    /// Errors: [`Error::IovaExhausted`] (nothing sent); `len` 0 is
    /// [`ErrorCode::Malformed`]; the server's errors as
    /// [`Iommu::map`] gives them, after which the I/O addresses are free
    /// again (see the [module documentation](self) for the exceptions).
    ///
    /// ```
    /// # use std::cell::RefCell;
    /// # use iommu_client::{DomainId, InProcess, Perms, ServerInfo, ABI_VERSION};
    /// # use iommu_protocol::{decode_request, encode, Reply, Request};
    /// # // A toy server that accepts everything and logs what it is sent.
    /// # let log = RefCell::new(Vec::new());
    /// # let server = |_: u64, request: &[u8], _: &[u32], reply: &mut [u8]| {
    /// #     let request = decode_request(request).unwrap();
    /// #     let answer = match request {
    /// #         Request::Hello { .. } => Reply::Hello(ServerInfo {
    /// #             version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21,
    /// #             ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: false,
    /// #         }),
    /// #         Request::AllocDomain => Reply::Domain(DomainId(1)),
    /// #         Request::RegisterMemory { .. } => Reply::Memory { memory: iommu_client::MemoryHandle(1), pages: 16 },
    /// #         _ => Reply::Ok,
    /// #     };
    /// #     log.borrow_mut().push(request);
    /// #     encode(&answer, reply).unwrap()
    /// # };
    /// # let mut iommu = iommu_client::Iommu::connect(InProcess::new(1, server))?;
    /// # let mut dma: iommu_client::DmaDomain = iommu_client::DmaDomain::create(&mut iommu, 0x10_0000, 0x1000_0000)?;
    /// # let memory = iommu.register_memory(&[1])?;
    /// use iommu_client::{Direction, DmaDomain, Error, Iommu, MemoryHandle, Transport};
    ///
    /// /// Has the device write one 4 KiB block into `memory` at `offset`.
    /// fn read_block<T: Transport>(
    ///     iommu: &mut Iommu<T>,
    ///     dma: &mut DmaDomain,
    ///     memory: MemoryHandle,
    ///     offset: u64,
    ///     submit_and_wait: impl FnOnce(u64),
    /// ) -> Result<(), Error> {
    ///     let buf = dma.map_single(iommu, memory, offset, 4096, Direction::FromDevice)?;
    ///     submit_and_wait(buf.addr());
    ///     dma.unmap(iommu, buf)?;
    ///     Ok(())
    /// }
    ///
    /// // The device gets the highest free page of the window (which ends
    /// // at 257 MiB here), and nothing is left mapped afterwards.
    /// let mut given = 0;
    /// read_block(&mut iommu, &mut dma, memory.handle, 0x3000, |addr| given = addr)?;
    /// assert_eq!(given, 0x100f_f000);
    /// assert_eq!(dma.allocator().live(), 0);
    /// # let log = log.borrow();
    /// # assert!(matches!(log[log.len() - 2], Request::Map { iova_pfn: 0x100ff, offset_pfn: 3, pages: 1, perms: Perms::WRITE, .. }));
    /// # assert!(matches!(log[log.len() - 1], Request::Unmap { iova_pfn: 0x100ff, pages: 1, .. }));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn map_single<T: Transport>(
        &mut self,
        iommu: &mut Iommu<T>,
        memory: MemoryHandle,
        offset: u64,
        len: u64,
        dir: Direction,
    ) -> Result<DmaAddr, Error> {
        self.map_one(iommu, memory, offset, len, dir, false)
    }

    /// Maps `len` bytes of `memory` from byte `offset` until
    /// [`DmaDomain::unmap`]: for descriptor rings, completion queues and
    /// premapped buffer pools, which live as long as the device does. Like
    /// [`DmaDomain::map_single`], but the addresses come from the top of
    /// the window, away from per-request mappings.
    ///
    /// ```
    /// # use std::cell::RefCell;
    /// # use iommu_client::{DomainId, InProcess, Perms, ServerInfo, ABI_VERSION};
    /// # use iommu_protocol::{decode_request, encode, Reply, Request};
    /// # // A toy server that accepts everything and logs what it is sent.
    /// # let log = RefCell::new(Vec::new());
    /// # let server = |_: u64, request: &[u8], _: &[u32], reply: &mut [u8]| {
    /// #     let request = decode_request(request).unwrap();
    /// #     let answer = match request {
    /// #         Request::Hello { .. } => Reply::Hello(ServerInfo {
    /// #             version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21,
    /// #             ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: false,
    /// #         }),
    /// #         Request::AllocDomain => Reply::Domain(DomainId(1)),
    /// #         Request::RegisterMemory { .. } => Reply::Memory { memory: iommu_client::MemoryHandle(1), pages: 16 },
    /// #         _ => Reply::Ok,
    /// #     };
    /// #     log.borrow_mut().push(request);
    /// #     encode(&answer, reply).unwrap()
    /// # };
    /// # let mut iommu = iommu_client::Iommu::connect(InProcess::new(1, server))?;
    /// # let mut dma: iommu_client::DmaDomain = iommu_client::DmaDomain::create(&mut iommu, 0x10_0000, 0x1000_0000)?;
    /// # let rings = iommu.register_memory(&[1])?;
    /// use iommu_client::{Direction, DmaAddr, DmaDomain, Error, Iommu, Memory, Transport};
    ///
    /// /// The submission ring (device reads) and completion ring (device
    /// /// writes), one page each at the start of `rings`.
    /// fn map_rings<T: Transport>(
    ///     iommu: &mut Iommu<T>,
    ///     dma: &mut DmaDomain,
    ///     rings: &Memory,
    /// ) -> Result<(DmaAddr, DmaAddr), Error> {
    ///     let sq = dma.map_persistent(iommu, rings.handle, 0, 4096, Direction::ToDevice)?;
    ///     let cq = dma.map_persistent(iommu, rings.handle, 4096, 4096, Direction::FromDevice)?;
    ///     Ok((sq, cq))
    /// }
    ///
    /// // The window is [1 MiB, 257 MiB): the rings take its top pages.
    /// let (sq, cq) = map_rings(&mut iommu, &mut dma, &rings)?;
    /// assert_eq!((sq.addr(), cq.addr()), (0x100f_f000, 0x100f_e000));
    /// assert!(sq.is_persistent() && sq.direction() == Direction::ToDevice);
    /// // Per-request mappings come right below them, in the same leaf
    /// // table (which the server then never frees and builds again).
    /// let buf = dma.map_single(&mut iommu, rings.handle, 0x2000, 512, Direction::ToDevice)?;
    /// assert_eq!(buf.addr(), 0x100f_d000);
    /// # dma.unmap(&mut iommu, buf)?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn map_persistent<T: Transport>(
        &mut self,
        iommu: &mut Iommu<T>,
        memory: MemoryHandle,
        offset: u64,
        len: u64,
        dir: Direction,
    ) -> Result<DmaAddr, Error> {
        self.map_one(iommu, memory, offset, len, dir, true)
    }

    fn map_one<T: Transport>(
        &mut self,
        iommu: &mut Iommu<T>,
        memory: MemoryHandle,
        offset: u64,
        len: u64,
        dir: Direction,
        persistent: bool,
    ) -> Result<DmaAddr, Error> {
        let (first, span) = page_span(offset, len)?;
        let (align, phase) = placement_of(first, span);
        // Top-down for every mapping (see the module docs): per-request
        // buffers share the rings' leaf table.
        let iova = self.iova.alloc(span, align, phase, Placement::High)?;
        if let Err(e) = iommu.map(self.domain, iova, memory, first, span, dir.perms()) {
            self.release(iova, span, server_undid(&e));
            return Err(e);
        }
        Ok(DmaAddr {
            addr: iova + (offset - first),
            size: len,
            iova,
            span,
            domain: self.domain,
            dir,
            persistent,
        })
    }

    /// Maps the pieces of a scatter list, in order, at one contiguous range
    /// of I/O addresses, in direction `dir`: the device sees
    /// `[addr, addr + size)` as one buffer of all the pieces' bytes.
    ///
    /// So that no gap appears between pieces, every piece but the first
    /// starts on a 4 KiB boundary and every piece but the last ends on one
    /// ([`ErrorCode::Misaligned`] otherwise, before anything is sent);
    /// pieces that continue each other in the same memory are merged. The
    /// pieces are mapped with one [`Iommu::map`] if they merge into one,
    /// else with one [`Iommu::map_batch`] per `info().max_batch` of them
    /// (one call when they fit); if a later batch fails, the earlier ones
    /// are unmapped again. Errors as for [`DmaDomain::map_single`]; an
    /// empty list is [`ErrorCode::Malformed`].
    ///
    /// ```
    /// # use std::cell::RefCell;
    /// # use iommu_client::{DomainId, InProcess, Perms, ServerInfo, ABI_VERSION};
    /// # use iommu_protocol::{decode_request, encode, Reply, Request};
    /// # // A toy server that accepts everything and logs what it is sent.
    /// # let log = RefCell::new(Vec::new());
    /// # let server = |_: u64, request: &[u8], _: &[u32], reply: &mut [u8]| {
    /// #     let request = decode_request(request).unwrap();
    /// #     let answer = match request {
    /// #         Request::Hello { .. } => Reply::Hello(ServerInfo {
    /// #             version: ABI_VERSION, max_batch: 32, page_sizes: 1 << 12 | 1 << 21,
    /// #             ias_bits: 48, ssid_bits: 0, max_faults: 32, sva: false,
    /// #         }),
    /// #         Request::AllocDomain => Reply::Domain(DomainId(1)),
    /// #         Request::RegisterMemory { .. } => Reply::Memory { memory: iommu_client::MemoryHandle(1), pages: 16 },
    /// #         _ => Reply::Ok,
    /// #     };
    /// #     log.borrow_mut().push(request);
    /// #     encode(&answer, reply).unwrap()
    /// # };
    /// # let mut iommu = iommu_client::Iommu::connect(InProcess::new(1, server))?;
    /// # let mut dma: iommu_client::DmaDomain = iommu_client::DmaDomain::create(&mut iommu, 0x10_0000, 0x1000_0000)?;
    /// # let pool = iommu.register_memory(&[1])?;
    /// use iommu_client::{Direction, DmaAddr, DmaDomain, Error, ErrorCode, Iommu, Memory};
    /// use iommu_client::{Segment, Transport};
    ///
    /// /// A 12 KiB write from three scattered pages of `pool`.
    /// fn map_write<T: Transport>(
    ///     iommu: &mut Iommu<T>,
    ///     dma: &mut DmaDomain,
    ///     pool: &Memory,
    /// ) -> Result<DmaAddr, Error> {
    ///     let page = |n: u64| Segment { memory: pool.handle, offset: n * 4096, len: 4096 };
    ///     dma.map_sg(iommu, &[page(7), page(2), page(11)], Direction::ToDevice)
    /// }
    ///
    /// // One buffer for the device, mapped with one call.
    /// let write = map_write(&mut iommu, &mut dma, &pool)?;
    /// assert_eq!((write.addr(), write.size()), (0x1010_0000 - 3 * 4096, 3 * 4096));
    /// # assert!(matches!(&log.borrow()[..], [.., Request::MapBatch { entries, .. }] if entries.len() == 3));
    /// dma.unmap(&mut iommu, write)?;
    ///
    /// // A piece that ends inside a page, followed by another, would leave
    /// // a hole in the device's view: refused before anything is sent.
    /// let a = Segment { memory: pool.handle, offset: 0, len: 512 };
    /// let b = Segment { memory: pool.handle, offset: 0x1000, len: 512 };
    /// let hole = dma.map_sg(&mut iommu, &[a, b], Direction::ToDevice);
    /// assert_eq!(hole.unwrap_err(), Error::Iommu(ErrorCode::Misaligned));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn map_sg<T: Transport>(
        &mut self,
        iommu: &mut Iommu<T>,
        segments: &[Segment],
        dir: Direction,
    ) -> Result<DmaAddr, Error> {
        let (first_seg, last) = match segments {
            [] => return Err(ErrorCode::Malformed.into()),
            [f, ..] => (*f, segments.len() - 1),
        };
        // Check every piece and add up the whole pages, before allocating.
        let mut span = 0u64;
        for (k, s) in segments.iter().enumerate() {
            if (k > 0 && !s.offset.is_multiple_of(PAGE_SIZE))
                || (k < last && !s.offset.wrapping_add(s.len).is_multiple_of(PAGE_SIZE))
            {
                return Err(ErrorCode::Misaligned.into());
            }
            let (_, pages) = page_span(s.offset, s.len)?;
            span = span
                .checked_add(pages)
                .ok_or(Error::Iommu(ErrorCode::OutOfRange))?;
        }
        let size = segments.iter().map(|s| s.len).sum::<u64>();
        let (first, _) = page_span(first_seg.offset, first_seg.len)?;
        let (align, phase) = placement_of(first, span);
        let iova = self.iova.alloc(span, align, phase, Placement::High)?;
        let mapping = DmaAddr {
            addr: iova + (first_seg.offset - first),
            size,
            iova,
            span,
            domain: self.domain,
            dir,
            persistent: false,
        };
        let perms = dir.perms();
        let regions = merged(segments, iova, perms);
        let per_call = usize::from(iommu.info().max_batch).clamp(1, MAX_BATCH);
        // One region: the fastpath map.
        let mut all = regions.clone();
        if let (Some(r), None) = (all.next(), all.next()) {
            return match iommu.map(self.domain, r.iova, r.memory, r.offset, r.len, perms) {
                Ok(()) => Ok(mapping),
                Err(e) => {
                    self.release(iova, span, server_undid(&e));
                    Err(e)
                }
            };
        }
        let mut done = 0u64; // bytes of I/O addresses mapped so far
        let mut batch: heapless::Vec<Region, MAX_BATCH> = heapless::Vec::new();
        let mut regions = regions.peekable();
        while let Some(r) = regions.next() {
            // Cannot fail: flushed at `per_call <= MAX_BATCH` below.
            let _ = batch.push(r);
            if batch.len() < per_call && regions.peek().is_some() {
                continue;
            }
            if let Err(e) = iommu.map_batch(self.domain, &batch) {
                let mut undone = server_undid(&e);
                if undone && done > 0 && iommu.unmap(self.domain, iova, done).is_err() {
                    undone = false;
                }
                self.release(iova, span, undone);
                return Err(e);
            }
            done += batch.iter().map(|r| r.len).sum::<u64>();
            batch.clear();
        }
        Ok(mapping)
    }

    /// Takes a mapping away, whichever call made it; one server call. When
    /// it returns `Ok`, the server has invalidated the SMMU's TLBs and
    /// synced (strict): the device can no longer reach the memory, and the
    /// I/O addresses are free for the next mapping.
    ///
    /// On failure nothing is freed and the mapping comes back in the
    /// [`UnmapError`] (the device may still reach it).
    pub fn unmap<T: Transport>(
        &mut self,
        iommu: &mut Iommu<T>,
        mapping: DmaAddr,
    ) -> Result<(), UnmapError> {
        let local = if mapping.domain != self.domain {
            Some(ErrorCode::NoSuchDomain)
        } else if !self.iova.is_allocated(mapping.iova, mapping.span) {
            Some(ErrorCode::NotMapped)
        } else {
            None
        };
        if let Some(code) = local {
            return Err(UnmapError {
                error: Error::Iommu(code),
                mapping,
            });
        }
        if let Err(error) = iommu.unmap(self.domain, mapping.iova, mapping.span) {
            return Err(UnmapError { error, mapping });
        }
        // Cannot fail: checked above.
        let _ = self.iova.free(mapping.iova, mapping.span);
        Ok(())
    }
}

/// The map regions of `segments` laid out from `iova`: whole pages, pieces
/// that continue each other in the same memory merged into one region.
fn merged(
    segments: &[Segment],
    iova: u64,
    perms: Perms,
) -> impl Iterator<Item = Region> + Clone + '_ {
    let mut at = iova;
    let mut k = 0;
    core::iter::from_fn(move || {
        let s = segments.get(k)?;
        // Each piece was checked by `page_span` already.
        let (first, mut len) = page_span(s.offset, s.len).ok()?;
        k += 1;
        while let Some(n) = segments.get(k) {
            if n.memory != s.memory || first + len != n.offset {
                break;
            }
            len += page_span(n.offset, n.len).ok()?.1;
            k += 1;
        }
        let r = Region {
            iova: at,
            memory: s.memory,
            offset: first,
            len,
            perms,
        };
        at += len;
        Some(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_at(memory: u32, page: u64) -> Segment {
        Segment {
            memory: MemoryHandle(memory),
            offset: page * PAGE_SIZE,
            len: PAGE_SIZE,
        }
    }

    #[test]
    fn merged_joins_continuing_pieces_only() {
        let segs = [
            page_at(1, 3),
            page_at(1, 4),
            page_at(2, 5),
            page_at(1, 5),
            page_at(1, 9),
        ];
        let r: heapless::Vec<Region, 8> = merged(&segs, 0x10_0000, Perms::READ).collect();
        let got: heapless::Vec<(u64, u32, u64, u64), 8> = r
            .iter()
            .map(|r| (r.iova, r.memory.0, r.offset, r.len))
            .collect();
        assert_eq!(
            got.as_slice(),
            &[
                (0x10_0000, 1, 0x3000, 0x2000),
                (0x10_2000, 2, 0x5000, 0x1000),
                (0x10_3000, 1, 0x5000, 0x1000),
                (0x10_4000, 1, 0x9000, 0x1000),
            ]
        );
    }

    #[test]
    fn page_span_rounds_out_to_whole_pages() {
        assert_eq!(page_span(0x2200, 0x200), Ok((0x2000, 0x1000)));
        assert_eq!(page_span(0x2e00, 0x400), Ok((0x2000, 0x2000)));
        assert_eq!(page_span(0x3000, 0x1000), Ok((0x3000, 0x1000)));
        assert_eq!(page_span(0, 0), Err(Error::Iommu(ErrorCode::Malformed)));
        assert_eq!(
            page_span(u64::MAX - 0xfff, 0x1000),
            Err(Error::Iommu(ErrorCode::OutOfRange))
        );
    }
}
