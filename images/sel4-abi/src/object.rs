//! Object sizes (libsel4 `sel4_arch/constants.h`, aarch64) and helpers for
//! [`ObjectType`].

use crate::generated::ObjectType;

/// 4 KiB page (`seL4_PageBits`).
pub const PAGE_BITS: u32 = 12;
/// 2 MiB large page (`seL4_LargePageBits`).
pub const LARGE_PAGE_BITS: u32 = 21;
/// 1 GiB huge page (`seL4_HugePageBits`).
pub const HUGE_PAGE_BITS: u32 = 30;
/// One CNode slot (`seL4_SlotBits`).
pub const SLOT_BITS: u32 = 5;
pub const TCB_BITS: u32 = 11;
pub const ENDPOINT_BITS: u32 = 4;
pub const NOTIFICATION_BITS: u32 = 5;
pub const PAGE_TABLE_BITS: u32 = 12;
pub const PAGE_DIR_BITS: u32 = 12;
pub const PUD_BITS: u32 = 12;
pub const PGD_BITS: u32 = 12;
pub const ASID_POOL_BITS: u32 = 12;
pub const IO_PAGE_TABLE_BITS: u32 = 12;
pub const MIN_UNTYPED_BITS: u32 = 4;
pub const MAX_UNTYPED_BITS: u32 = 47;

/// Virtual address bits resolved by each translation level (4 KiB granule).
pub const PAGE_TABLE_INDEX_BITS: u32 = 9;
/// A page table maps 2 MiB, a page directory 1 GiB, an upper directory 512 GiB.
pub const PAGE_TABLE_COVERAGE_BITS: u32 = PAGE_BITS + PAGE_TABLE_INDEX_BITS;
pub const PAGE_DIR_COVERAGE_BITS: u32 = PAGE_TABLE_COVERAGE_BITS + PAGE_TABLE_INDEX_BITS;
pub const PUD_COVERAGE_BITS: u32 = PAGE_DIR_COVERAGE_BITS + PAGE_TABLE_INDEX_BITS;

impl ObjectType {
    /// Size of one object of this type, for types whose size is fixed
    /// (`None` for Untyped and CapTable, whose size is the `size_bits`
    /// argument of retype: bytes for Untyped, slots for CapTable).
    pub const fn fixed_size_bits(self) -> Option<u32> {
        Some(match self {
            ObjectType::UntypedObject | ObjectType::CapTableObject => return None,
            ObjectType::TCBObject => TCB_BITS,
            ObjectType::EndpointObject => ENDPOINT_BITS,
            ObjectType::NotificationObject => NOTIFICATION_BITS,
            ObjectType::ARM_HugePageObject => HUGE_PAGE_BITS,
            ObjectType::ARM_PageUpperDirectoryObject => PUD_BITS,
            ObjectType::ARM_PageGlobalDirectoryObject => PGD_BITS,
            ObjectType::ARM_SmallPageObject => PAGE_BITS,
            ObjectType::ARM_LargePageObject => LARGE_PAGE_BITS,
            ObjectType::ARM_PageTableObject => PAGE_TABLE_BITS,
            ObjectType::ARM_PageDirectoryObject => PAGE_DIR_BITS,
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }

    /// Bytes of untyped memory `retype` consumes per object: the fixed size,
    /// or `size_bits` bytes (Untyped) / `1 << size_bits` slots (CapTable).
    pub const fn object_size_bits(self, size_bits: u32) -> u32 {
        match self.fixed_size_bits() {
            Some(b) => b,
            None => match self {
                ObjectType::CapTableObject => size_bits + SLOT_BITS,
                _ => size_bits,
            },
        }
    }
}
