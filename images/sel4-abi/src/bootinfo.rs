//! The boot information frame (`seL4_BootInfo`, libsel4 `bootinfo_types.h`)
//! and the initial thread's capability slots.
//!
//! The struct is packed, so it is read field by field at fixed offsets
//! (64-bit words): `extraLen` @0, `nodeID` @8, `numNodes` @16,
//! `numIOPTLevels` @24, `ipcBuffer` @32, slot regions (two words each)
//! `empty` @40, `sharedFrames` @56, `userImageFrames` @72, `userImagePaging`
//! @88, `ioSpaceCaps` @104, `extraBIPages` @120, `initThreadCNodeSizeBits`
//! (one byte) @136, `initThreadDomain` @137, `archInfo` @145, `untyped` @153,
//! `untypedList[CONFIG_MAX_NUM_BOOTINFO_UNTYPED_CAPS]` @169, 12 bytes per entry
//! (`paddr`, two padding bytes, `sizeBits`, `isDevice`).

use crate::types::*;

/// Initial capability slots of the root task's CNode (`seL4_Cap*`).
pub mod slots {
    use crate::types::*;

    pub const NULL: CPtr = CPtr(0);
    pub const INIT_THREAD_TCB: TCB = TCB(CPtr(1));
    pub const INIT_THREAD_CNODE: CNode = CNode(CPtr(2));
    /// The root task's VSpace root (a PageGlobalDirectory on AArch64).
    pub const INIT_THREAD_VSPACE: PageGlobalDirectory = PageGlobalDirectory(CPtr(3));
    pub const IRQ_CONTROL: IRQControl = IRQControl(CPtr(4));
    pub const ASID_CONTROL: ASIDControl = ASIDControl(CPtr(5));
    pub const INIT_THREAD_ASID_POOL: ASIDPool = ASIDPool(CPtr(6));
    /// Null on ARM (x86 I/O ports only).
    pub const IO_PORT: CPtr = CPtr(7);
    /// Null unless the kernel has its own (TK1) SMMU support.
    pub const IO_SPACE: IOSpace = IOSpace(CPtr(8));
    pub const BOOT_INFO_FRAME: Page = Page(CPtr(9));
    pub const INIT_THREAD_IPC_BUFFER: Page = Page(CPtr(10));
    pub const DOMAIN: DomainSet = DomainSet(CPtr(11));
    /// `seL4_NumInitialCaps`: the first slot the kernel may fill with other caps.
    pub const NUM_INITIAL_CAPS: Word = 12;
}

/// Size of the bootinfo frame the kernel maps (one 4 KiB page); extra
/// bootinfo (`extraLen` bytes) follows it.
pub const BOOTINFO_FRAME_SIZE: usize = 4096;

/// Number of entries in `untypedList` (`CONFIG_MAX_NUM_BOOTINFO_UNTYPED_CAPS`).
pub const MAX_UNTYPED_CAPS: usize = crate::config::MAX_NUM_BOOTINFO_UNTYPED_CAPS as usize;

/// Byte offsets of the fields.
pub mod offsets {
    pub const EXTRA_LEN: usize = 0;
    pub const NODE_ID: usize = 8;
    pub const NUM_NODES: usize = 16;
    pub const NUM_IOPT_LEVELS: usize = 24;
    pub const IPC_BUFFER: usize = 32;
    pub const EMPTY: usize = 40;
    pub const SHARED_FRAMES: usize = 56;
    pub const USER_IMAGE_FRAMES: usize = 72;
    pub const USER_IMAGE_PAGING: usize = 88;
    pub const IO_SPACE_CAPS: usize = 104;
    pub const EXTRA_BI_PAGES: usize = 120;
    pub const INIT_THREAD_CNODE_SIZE_BITS: usize = 136;
    pub const INIT_THREAD_DOMAIN: usize = 137;
    pub const ARCH_INFO: usize = 145;
    pub const UNTYPED: usize = 153;
    pub const UNTYPED_LIST: usize = 169;
    /// `sizeof(seL4_UntypedDesc)`.
    pub const UNTYPED_DESC_SIZE: usize = 12;
}

/// `sizeof(seL4_BootInfo)` in this configuration.
pub const BOOTINFO_SIZE: usize =
    offsets::UNTYPED_LIST + MAX_UNTYPED_CAPS * offsets::UNTYPED_DESC_SIZE;

/// A range of CNode slots `[start, end)` (`seL4_SlotRegion`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotRegion {
    pub start: Word,
    pub end: Word,
}

impl SlotRegion {
    pub const fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub const fn contains(&self, slot: Word) -> bool {
        self.start <= slot && slot < self.end
    }
    pub fn iter(&self) -> impl Iterator<Item = CPtr> {
        (self.start..self.end).map(CPtr)
    }
}

/// One untyped capability's description (`seL4_UntypedDesc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UntypedDesc {
    pub paddr: Word,
    /// The untyped covers `1 << size_bits` bytes.
    pub size_bits: u8,
    /// Device memory (MMIO; can only be retyped into frames).
    pub is_device: bool,
}

impl UntypedDesc {
    pub const fn size(&self) -> Word {
        1 << self.size_bits
    }
    pub const fn end(&self) -> Word {
        self.paddr + self.size()
    }
}

/// Why a buffer is not a bootinfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// Shorter than `seL4_BootInfo` in this configuration.
    TooShort { len: usize, need: usize },
    /// The untyped region lists more caps than `untypedList` holds (the kernel
    /// was built with a different `CONFIG_MAX_NUM_BOOTINFO_UNTYPED_CAPS`).
    TooManyUntypeds { count: usize, max: usize },
}

/// A view of the bootinfo frame.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo<'a> {
    bytes: &'a [u8],
}

impl<'a> BootInfo<'a> {
    /// Parse a bootinfo from its bytes (at least [`BOOTINFO_SIZE`]).
    pub fn new(bytes: &'a [u8]) -> Result<BootInfo<'a>, BootInfoError> {
        if bytes.len() < BOOTINFO_SIZE {
            return Err(BootInfoError::TooShort {
                len: bytes.len(),
                need: BOOTINFO_SIZE,
            });
        }
        let bi = BootInfo { bytes };
        let count = bi.untyped().len();
        if count > MAX_UNTYPED_CAPS {
            return Err(BootInfoError::TooManyUntypeds {
                count,
                max: MAX_UNTYPED_CAPS,
            });
        }
        Ok(bi)
    }

    /// The bootinfo the kernel passed to the root task (in `x0` at entry).
    ///
    /// # Safety
    /// `addr` must be the address of the mapped bootinfo frame
    /// ([`BOOTINFO_FRAME_SIZE`] readable bytes that stay mapped and unchanged
    /// for the program's life).
    pub unsafe fn from_addr(addr: usize) -> Result<BootInfo<'static>, BootInfoError> {
        // SAFETY: the caller guarantees a readable, immutable 4 KiB frame at `addr`.
        let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, BOOTINFO_FRAME_SIZE) };
        BootInfo::new(bytes)
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn word(&self, off: usize) -> Word {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[off..off + 8]);
        Word::from_le_bytes(b)
    }

    fn region(&self, off: usize) -> SlotRegion {
        SlotRegion {
            start: self.word(off),
            end: self.word(off + 8),
        }
    }

    /// Bytes of extra bootinfo after the frame (`extraLen`).
    pub fn extra_len(&self) -> Word {
        self.word(offsets::EXTRA_LEN)
    }
    pub fn node_id(&self) -> Word {
        self.word(offsets::NODE_ID)
    }
    pub fn num_nodes(&self) -> Word {
        self.word(offsets::NUM_NODES)
    }
    /// Levels of the kernel-managed IOMMU's page tables (0: none).
    pub fn num_io_pt_levels(&self) -> Word {
        self.word(offsets::NUM_IOPT_LEVELS)
    }
    /// Virtual address of the root task's IPC buffer.
    pub fn ipc_buffer(&self) -> Word {
        self.word(offsets::IPC_BUFFER)
    }
    /// Empty slots of the root CNode, free for the root task's use.
    pub fn empty(&self) -> SlotRegion {
        self.region(offsets::EMPTY)
    }
    pub fn shared_frames(&self) -> SlotRegion {
        self.region(offsets::SHARED_FRAMES)
    }
    /// Frame caps of the root task's image, in virtual address order.
    pub fn user_image_frames(&self) -> SlotRegion {
        self.region(offsets::USER_IMAGE_FRAMES)
    }
    /// Paging-structure caps of the root task's VSpace.
    pub fn user_image_paging(&self) -> SlotRegion {
        self.region(offsets::USER_IMAGE_PAGING)
    }
    pub fn io_space_caps(&self) -> SlotRegion {
        self.region(offsets::IO_SPACE_CAPS)
    }
    pub fn extra_bi_pages(&self) -> SlotRegion {
        self.region(offsets::EXTRA_BI_PAGES)
    }
    /// The root CNode has `1 << init_thread_cnode_size_bits` slots.
    pub fn init_thread_cnode_size_bits(&self) -> u8 {
        self.bytes[offsets::INIT_THREAD_CNODE_SIZE_BITS]
    }
    pub fn init_thread_domain(&self) -> Word {
        self.word(offsets::INIT_THREAD_DOMAIN)
    }
    pub fn arch_info(&self) -> Word {
        self.word(offsets::ARCH_INFO)
    }
    /// Slots of the untyped caps; entry `i` of [`Self::untyped_list`]
    /// describes slot `untyped().start + i`.
    pub fn untyped(&self) -> SlotRegion {
        self.region(offsets::UNTYPED)
    }

    /// Description of untyped number `i` (not its slot).
    pub fn untyped_desc(&self, i: usize) -> Option<UntypedDesc> {
        if i >= self.untyped().len().min(MAX_UNTYPED_CAPS) {
            return None;
        }
        let off = offsets::UNTYPED_LIST + i * offsets::UNTYPED_DESC_SIZE;
        Some(UntypedDesc {
            paddr: self.word(off),
            size_bits: self.bytes[off + 10],
            is_device: self.bytes[off + 11] != 0,
        })
    }

    /// The untyped descriptions, in slot order.
    pub fn untyped_list(&self) -> impl Iterator<Item = UntypedDesc> + 'a {
        let this = *self;
        (0..self.untyped().len().min(MAX_UNTYPED_CAPS)).filter_map(move |i| this.untyped_desc(i))
    }

    /// Each untyped cap with its description.
    pub fn untypeds(&self) -> impl Iterator<Item = (Untyped, UntypedDesc)> + 'a {
        let start = self.untyped().start;
        self.untyped_list()
            .enumerate()
            .map(move |(i, d)| (Untyped(CPtr(start + i as Word)), d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut [u8], off: usize, w: Word) {
        b[off..off + 8].copy_from_slice(&w.to_le_bytes());
    }

    /// A synthetic bootinfo like the one the kernel builds for our root task.
    fn synthetic() -> Vec<u8> {
        let mut b = vec![0u8; BOOTINFO_FRAME_SIZE];
        put(&mut b, 0, 0); // extraLen
        put(&mut b, 8, 0); // nodeID
        put(&mut b, 16, 1); // numNodes
        put(&mut b, 24, 0);
        put(&mut b, 32, 0x52_b000); // ipcBuffer
        put(&mut b, 40, 0x60); // empty
        put(&mut b, 48, 1 << 14);
        put(&mut b, 72, 12); // userImageFrames
        put(&mut b, 80, 0x50);
        put(&mut b, 88, 0x50); // userImagePaging
        put(&mut b, 96, 0x53);
        b[136] = 14;
        put(&mut b, 137, 0); // domain (unaligned)
        put(&mut b, 145, 0);
        put(&mut b, 153, 0x53); // untyped
        put(&mut b, 161, 0x56);
        let descs = [
            (0x4023_1000u64, 12u8, 0u8),
            (0x0905_0000, 16, 1),
            (0x4800_0000, 27, 0),
        ];
        for (i, (pa, bits, dev)) in descs.iter().enumerate() {
            let off = 169 + 12 * i;
            put(&mut b, off, *pa);
            b[off + 8] = 0xaa; // padding, ignored
            b[off + 9] = 0xbb;
            b[off + 10] = *bits;
            b[off + 11] = *dev;
        }
        b
    }

    #[test]
    fn parses_synthetic_bootinfo() {
        let b = synthetic();
        let bi = BootInfo::new(&b).unwrap();
        assert_eq!(bi.num_nodes(), 1);
        assert_eq!(bi.ipc_buffer(), 0x52_b000);
        assert_eq!(
            bi.empty(),
            SlotRegion {
                start: 0x60,
                end: 1 << 14
            }
        );
        assert_eq!(bi.user_image_frames().len(), 0x50 - 12);
        assert_eq!(
            bi.user_image_paging(),
            SlotRegion {
                start: 0x50,
                end: 0x53
            }
        );
        assert_eq!(bi.init_thread_cnode_size_bits(), 14);
        assert_eq!(
            bi.untyped(),
            SlotRegion {
                start: 0x53,
                end: 0x56
            }
        );
        let u: Vec<_> = bi.untypeds().collect();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].0, Untyped::from_word(0x53));
        assert_eq!(
            u[0].1,
            UntypedDesc {
                paddr: 0x4023_1000,
                size_bits: 12,
                is_device: false
            }
        );
        assert_eq!(
            u[1].1,
            UntypedDesc {
                paddr: 0x0905_0000,
                size_bits: 16,
                is_device: true
            }
        );
        assert_eq!(u[1].1.end(), 0x0906_0000);
        assert_eq!(u[2].0, Untyped::from_word(0x55));
        assert_eq!(bi.untyped_desc(3), None);
    }

    #[test]
    fn rejects_bad_buffers() {
        let b = synthetic();
        assert!(matches!(
            BootInfo::new(&b[..100]),
            Err(BootInfoError::TooShort { .. })
        ));
        let mut b = synthetic();
        put(&mut b, 161, 0x53 + MAX_UNTYPED_CAPS as Word + 1);
        assert!(matches!(
            BootInfo::new(&b),
            Err(BootInfoError::TooManyUntypeds { .. })
        ));
    }

    #[test]
    fn size_fits_the_frame() {
        // DESIGN section 7: untyped region at 153, list at 169, 12-byte entries.
        assert_eq!(offsets::UNTYPED, 153);
        assert_eq!(offsets::UNTYPED_LIST, 169);
        const { assert!(BOOTINFO_SIZE <= BOOTINFO_FRAME_SIZE) };
    }
}
