//! Kernel objects for the root task: CSpace slots, untyped memory, mappings.

use sel4_abi::BootInfo;
use sel4_abi::{
    ASIDPool, CNode, CPtr, CapRights, Error, IRQControl, ObjectType, Page, PageDirectory,
    PageGlobalDirectory, PageTable, PageUpperDirectory, Untyped, VMAttributes, Word,
};

/// Initial capabilities of the root task.
pub const INIT_CNODE: CNode = sel4_abi::slots::INIT_THREAD_CNODE;
pub const INIT_VSPACE: PageGlobalDirectory = sel4_abi::slots::INIT_THREAD_VSPACE;
pub const IRQ_CONTROL: IRQControl = sel4_abi::slots::IRQ_CONTROL;
pub const INIT_ASID_POOL: ASIDPool = sel4_abi::slots::INIT_THREAD_ASID_POOL;

/// The root CNode is addressed with full-word depth (its guard pads it).
pub const DEPTH: u8 = 64;
pub const PAGE: u64 = 4096;

const MAX_UNTYPED: usize = 256;
/// Objects one Untyped_Retype may make (seL4's default
/// CONFIG_RETYPE_FAN_OUT_LIMIT).
const RETYPE_FAN_OUT: u64 = 256;

/// Why the root task could not build the system.
#[derive(Debug, Clone, Copy)]
pub enum Fail {
    Kernel(&'static str, Error),
    OutOfSlots,
    OutOfMemory {
        size_bits: u8,
        count: u64,
    },
    NoDeviceUntyped {
        paddr: u64,
    },
    NotContiguous,
    Elf,
    /// More threads than the start-info page describes.
    TooManyThreads,
    /// Stacks reaching `procinfo::FRAME_PROBE_BASE`.
    StacksTooLarge,
    /// A PCI function that cannot be programmed as described.
    Pci {
        function: u16,
        why: &'static str,
    },
}

pub type Result<T> = core::result::Result<T, Fail>;

pub trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T>;
}

impl<T> Ctx<T> for core::result::Result<T, Error> {
    fn ctx(self, what: &'static str) -> Result<T> {
        self.map_err(|e| Fail::Kernel(what, e))
    }
}

/// An untyped capability and what it covers.
#[derive(Clone, Copy)]
pub struct UntypedDesc {
    pub cptr: u64,
    pub paddr: u64,
    pub size_bits: u8,
    pub is_device: bool,
}

#[derive(Clone, Copy)]
struct Ut {
    desc: UntypedDesc,
    /// Bytes used, mirroring the kernel's watermark (aligned per retype).
    used: u64,
    /// Set when the kernel said it is full, whatever our mirror thinks.
    full: bool,
    /// Device untypeds are split on demand; a split one is not used directly.
    split: bool,
}

pub struct Kernel {
    next_slot: u64,
    end_slot: u64,
    uts: [Option<Ut>; MAX_UNTYPED],
    n_uts: usize,
    /// Paging structures left over when a level turned out to exist already.
    spare: [Option<CPtr>; 3],
    /// The slot for the temporary frame copy `write_frame` maps.
    scratch: Option<CPtr>,
}

/// Bytes (log2) of untyped memory one object takes.
pub fn object_bits(ty: ObjectType, size_bits: u64) -> u64 {
    ty.object_size_bits(size_bits as u32) as u64
}

impl Kernel {
    pub fn new(bi: &BootInfo<'_>) -> Kernel {
        let empty = bi.empty();
        let mut k = Kernel {
            next_slot: empty.start,
            end_slot: empty.end,
            uts: [None; MAX_UNTYPED],
            n_uts: 0,
            spare: [None; 3],
            scratch: None,
        };
        for (cap, d) in bi.untypeds() {
            k.add_untyped(UntypedDesc {
                cptr: cap.cptr().0,
                paddr: d.paddr,
                size_bits: d.size_bits,
                is_device: d.is_device,
            });
        }
        k
    }

    fn add_untyped(&mut self, desc: UntypedDesc) {
        if self.n_uts < MAX_UNTYPED {
            self.uts[self.n_uts] = Some(Ut {
                desc,
                used: 0,
                full: false,
                split: false,
            });
            self.n_uts += 1;
        }
    }

    /// Free RAM in bytes, as far as the root task knows.
    pub fn free_ram(&self) -> u64 {
        self.uts[..self.n_uts]
            .iter()
            .flatten()
            .filter(|u| !u.desc.is_device && !u.full)
            .map(|u| (1u64 << u.desc.size_bits) - u.used)
            .sum()
    }

    pub fn slot(&mut self) -> Result<CPtr> {
        self.slots(1)
    }

    /// `n` consecutive empty slots of the root CNode.
    pub fn slots(&mut self, n: u64) -> Result<CPtr> {
        if self.next_slot + n > self.end_slot {
            return Err(Fail::OutOfSlots);
        }
        let s = self.next_slot;
        self.next_slot += n;
        Ok(CPtr(s))
    }

    /// `count` objects, consecutive in memory and in slots; returns the first slot.
    pub fn alloc_n(&mut self, ty: ObjectType, size_bits: u64, count: u64) -> Result<CPtr> {
        Ok(self.alloc_placed(ty, size_bits, count)?.0)
    }

    /// As `alloc_n`, also returning the physical address of the first object
    /// (exact: every retype of our untypeds goes through here, and the
    /// kernel aligns its watermark to the object size as we do).
    pub fn alloc_placed(
        &mut self,
        ty: ObjectType,
        size_bits: u64,
        count: u64,
    ) -> Result<(CPtr, u64)> {
        let bits = object_bits(ty, size_bits);
        let need = count << bits;
        // Smallest untyped that fits first, so big ones stay whole for DMA pools.
        let mut order: [usize; MAX_UNTYPED] = [0; MAX_UNTYPED];
        for (i, o) in order.iter_mut().enumerate().take(self.n_uts) {
            *o = i;
        }
        let order = &mut order[..self.n_uts];
        order.sort_unstable_by_key(|&i| self.uts[i].map(|u| u.desc.size_bits).unwrap_or(0));
        for &i in order.iter() {
            let Some(u) = self.uts[i] else { continue };
            if u.desc.is_device || u.full || u.split {
                continue;
            }
            let start = u.used.div_ceil(1 << bits) << bits;
            if start + need > 1u64 << u.desc.size_bits {
                continue;
            }
            let first = self.slots(count)?;
            let mut done = 0;
            while done < count {
                let n = (count - done).min(sel4_abi::UNTYPED_RETYPE_MAX_OBJECTS);
                let r = Untyped(CPtr(u.desc.cptr)).retype(
                    ty,
                    size_bits,
                    INIT_CNODE,
                    0,
                    0,
                    first.0 + done,
                    n,
                );
                match r {
                    Ok(()) => done += n,
                    Err(Error::NotEnoughMemory) if done == 0 => break,
                    Err(e) => return Err(Fail::Kernel("Untyped_Retype", e)),
                }
            }
            if done < count {
                // Our mirror was wrong (objects of other sizes): skip this one.
                if let Some(u) = self.uts[i].as_mut() {
                    u.full = true;
                }
                self.next_slot -= count;
                return self.alloc_placed(ty, size_bits, count);
            }
            if let Some(u) = self.uts[i].as_mut() {
                u.used = start + need;
            }
            return Ok((first, u.desc.paddr + start));
        }
        Err(Fail::OutOfMemory {
            size_bits: bits as u8,
            count,
        })
    }

    pub fn alloc(&mut self, ty: ObjectType, size_bits: u64) -> Result<CPtr> {
        self.alloc_n(ty, size_bits, 1)
    }

    /// Frame caps for the device memory [paddr, paddr + size), one per 4 KiB
    /// page in consecutive slots, carved out of the device untypeds by
    /// splitting them in halves until a half lies inside the range, which is
    /// then retyped into all its frames at once (so a 1 MiB BAR takes one
    /// retype and a few splits, not a split per page).
    pub fn device_frames(&mut self, paddr: u64, size: u64) -> Result<CPtr> {
        let pages = size / PAGE;
        let first = self.slots(pages)?;
        let mut done = 0;
        while done < pages {
            done += self.device_frames_at(paddr + done * PAGE, first.0 + done, pages - done)?;
        }
        Ok(first)
    }

    /// Frames for the device pages from `paddr` (at most `max_pages`), made
    /// into the empty slots from `dest`; returns how many.
    fn device_frames_at(&mut self, paddr: u64, dest: u64, max_pages: u64) -> Result<u64> {
        loop {
            let i = (0..self.n_uts)
                .find(|&i| {
                    self.uts[i].is_some_and(|u| {
                        u.desc.is_device
                            && !u.split
                            && !u.full
                            && paddr >= u.desc.paddr
                            && paddr < u.desc.paddr + (1u64 << u.desc.size_bits)
                    })
                })
                .ok_or(Fail::NoDeviceUntyped { paddr })?;
            let u = self.uts[i].unwrap();
            let frames = 1u64 << (u.desc.size_bits - 12);
            if u.desc.paddr == paddr && frames <= max_pages && frames <= RETYPE_FAN_OUT {
                Untyped(CPtr(u.desc.cptr))
                    .retype(
                        ObjectType::ARM_SmallPageObject,
                        0,
                        INIT_CNODE,
                        0,
                        0,
                        dest,
                        frames as Word,
                    )
                    .ctx("Untyped_Retype (device frames)")?;
                self.uts[i].as_mut().unwrap().full = true;
                return Ok(frames);
            }
            if self.n_uts + 2 > MAX_UNTYPED {
                return Err(Fail::OutOfSlots);
            }
            // Split in two halves and look again.
            let half = u.desc.size_bits - 1;
            let slots = self.slots(2)?;
            Untyped(CPtr(u.desc.cptr))
                .retype(
                    ObjectType::UntypedObject,
                    half as Word,
                    INIT_CNODE,
                    0,
                    0,
                    slots.0,
                    2,
                )
                .ctx("Untyped_Retype (split device untyped)")?;
            self.uts[i].as_mut().unwrap().split = true;
            for h in 0..2u64 {
                self.add_untyped(UntypedDesc {
                    cptr: slots.0 + h,
                    paddr: u.desc.paddr + (h << half),
                    size_bits: half,
                    is_device: true,
                });
            }
        }
    }

    /// Maps `frame` at `vaddr` in `vspace`, creating the paging structures
    /// the address needs.
    pub fn map(
        &mut self,
        vspace: PageGlobalDirectory,
        frame: CPtr,
        vaddr: u64,
        rights: CapRights,
        attrs: VMAttributes,
    ) -> Result<()> {
        loop {
            match Page(frame).map(vspace.cptr(), vaddr, rights, attrs) {
                Ok(()) => return Ok(()),
                Err(Error::FailedLookup) => self.add_table(vspace, vaddr)?,
                Err(e) => return Err(Fail::Kernel("ARM_Page_Map", e)),
            }
        }
    }

    /// Adds the highest missing paging level above `vaddr`.
    fn add_table(&mut self, vspace: PageGlobalDirectory, vaddr: u64) -> Result<()> {
        let levels = [
            ObjectType::ARM_PageUpperDirectoryObject,
            ObjectType::ARM_PageDirectoryObject,
            ObjectType::ARM_PageTableObject,
        ];
        for (level, ty) in levels.into_iter().enumerate() {
            let table = match self.spare[level].take() {
                Some(t) => t,
                None => self.alloc(ty, 0)?,
            };
            let attrs = VMAttributes::DEFAULT;
            let r = match level {
                0 => PageUpperDirectory(table).map(vspace.cptr(), vaddr, attrs),
                1 => PageDirectory(table).map(vspace.cptr(), vaddr, attrs),
                _ => PageTable(table).map(vspace.cptr(), vaddr, attrs),
            };
            match r {
                Ok(()) => return Ok(()),
                // This level exists; keep the object for next time.
                Err(Error::DeleteFirst) => self.spare[level] = Some(table),
                Err(Error::FailedLookup) => {
                    self.spare[level] = Some(table);
                    // A level above is missing: the loop reaches it first,
                    // so this cannot happen; report it if it does.
                    return Err(Fail::Kernel("paging structure map", Error::FailedLookup));
                }
                Err(e) => return Err(Fail::Kernel("paging structure map", e)),
            }
        }
        Err(Fail::Kernel(
            "ARM_Page_Map (all levels present)",
            Error::FailedLookup,
        ))
    }

    /// Writes `data` at byte `offset` of `frame` through a scratch mapping
    /// in the root task's own VSpace.
    pub fn write_frame(&mut self, frame: CPtr, offset: usize, data: &[u8]) -> Result<()> {
        const SCRATCH: u64 = 0x7f00_0000_0000;
        let copy = self.scratch_slot()?;
        INIT_CNODE
            .copy(copy.0, DEPTH, INIT_CNODE, frame.0, DEPTH, CapRights::ALL)
            .ctx("CNode_Copy (scratch)")?;
        self.map(
            INIT_VSPACE,
            copy,
            SCRATCH,
            CapRights::READ_WRITE,
            VMAttributes::DEFAULT,
        )?;
        let len = data.len().min(PAGE as usize - offset);
        // SAFETY: SCRATCH maps the 4 KiB frame just now, and nothing else
        // refers to that address range.
        unsafe {
            let dst = (SCRATCH as *mut u8).add(offset);
            core::ptr::copy_nonoverlapping(data.as_ptr(), dst, len);
        }
        Page(copy).unmap().ctx("ARM_Page_Unmap (scratch)")?;
        INIT_CNODE
            .delete(copy.0, DEPTH)
            .ctx("CNode_Delete (scratch)")?;
        Ok(())
    }

    fn scratch_slot(&mut self) -> Result<CPtr> {
        match self.scratch {
            Some(slot) => Ok(slot),
            None => {
                let slot = self.slot()?;
                self.scratch = Some(slot);
                Ok(slot)
            }
        }
    }
}
