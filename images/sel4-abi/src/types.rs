//! Basic ABI types: words, capability pointers, badges, rights, cap data.

/// A machine word (`seL4_Word`): 64 bits on AArch64.
pub type Word = u64;

/// Bits in a word (`seL4_WordBits`).
pub const WORD_BITS: u32 = 64;

/// A capability pointer (`seL4_CPtr`): an address in the caller's CSpace.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CPtr(pub Word);

impl CPtr {
    /// The null capability pointer (slot 0 is always empty).
    pub const NULL: CPtr = CPtr(0);

    pub const fn new(w: Word) -> CPtr {
        CPtr(w)
    }
    pub const fn word(self) -> Word {
        self.0
    }
    pub const fn cptr(self) -> CPtr {
        self
    }
}

impl From<Word> for CPtr {
    fn from(w: Word) -> CPtr {
        CPtr(w)
    }
}

/// The badge of a received message or notification (`x0` after a receive).
/// For notifications it is the OR of the badges of every signal since the
/// last wait.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Badge(pub Word);

/// Bits of a badge the kernel keeps (`seL4_BadgeBits`).
pub const BADGE_BITS: u32 = 28;
/// Bits of a CNode guard (`seL4_GuardBits`).
pub const GUARD_BITS: u32 = 18;
/// Bits of a CNode guard size (`seL4_GuardSizeBits`).
pub const GUARD_SIZE_BITS: u32 = 5;
/// Most objects one `Untyped::retype` may create (`seL4_UntypedRetypeMaxObjects`).
pub const UNTYPED_RETYPE_MAX_OBJECTS: Word = 256;

/// Capability rights (`seL4_CapRights_t`: grant bit 2, read bit 1, write bit 0).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CapRights(pub Word);

impl CapRights {
    pub const NONE: CapRights = CapRights::new(false, false, false);
    pub const READ: CapRights = CapRights::new(false, true, false);
    pub const WRITE: CapRights = CapRights::new(false, false, true);
    pub const GRANT: CapRights = CapRights::new(true, false, false);
    pub const READ_WRITE: CapRights = CapRights::new(false, true, true);
    pub const ALL: CapRights = CapRights::new(true, true, true);

    /// `seL4_CapRights_new(grant, read, write)`.
    pub const fn new(grant: bool, read: bool, write: bool) -> CapRights {
        CapRights(((grant as Word) << 2) | ((read as Word) << 1) | (write as Word))
    }
    pub const fn grant(self) -> bool {
        self.0 & 4 != 0
    }
    pub const fn read(self) -> bool {
        self.0 & 2 != 0
    }
    pub const fn write(self) -> bool {
        self.0 & 1 != 0
    }
}

/// Capability data for `CNode::mint`/`mutate` and `TCB::configure`
/// (`seL4_CapData_t`): a badge for endpoint and notification caps, a guard for
/// CNode caps.
///
/// The 5.0.0 kernel reads the whole word as the badge of an endpoint or
/// notification cap, and `guardSize` (bits 2..8) and `guard` (bits 8..26) for a
/// CNode cap (`cnode_capdata` in `structures_64.bf`); libsel4's type bit (31)
/// is ignored, so it is left clear.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CapData(pub Word);

impl CapData {
    /// No badge / no guard change (`seL4_NilData`).
    pub const NONE: CapData = CapData(0);

    /// An endpoint badge. Endpoint caps hold [`BADGE_BITS`] (28) bits of
    /// badge: a wider value would trip an assertion in a debug kernel
    /// (`cap_endpoint_cap_set_capEPBadge`) and be truncated by a release one,
    /// so it panics here. (Notification caps hold a full word: use
    /// `CapData(word)` for those.)
    pub const fn badge(badge: Word) -> CapData {
        assert!(badge >> BADGE_BITS == 0, "endpoint badges have 28 bits");
        CapData(badge)
    }
    /// A CNode guard: `guard_size` bits whose value is `guard`.
    pub const fn guard(guard: Word, guard_size: Word) -> CapData {
        CapData(((guard & ((1 << GUARD_BITS) - 1)) << 8) | ((guard_size & 0x3f) << 2))
    }
}

/// Priority and maximum controlled priority for `TCB::configure`
/// (`seL4_PrioProps_t`: prio bits 0..8, mcp bits 8..16).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrioProps(pub Word);

impl PrioProps {
    pub const fn new(mcp: u8, prio: u8) -> PrioProps {
        PrioProps(((mcp as Word) << 8) | prio as Word)
    }
    pub const fn prio(self) -> u8 {
        self.0 as u8
    }
    pub const fn mcp(self) -> u8 {
        (self.0 >> 8) as u8
    }
}

/// Memory attributes of a mapping (`seL4_ARM_VMAttributes`).
///
/// On AArch64 the kernel maps a page *without* `PAGE_CACHEABLE` as
/// Device-nGnRnE memory, and `EXECUTE_NEVER` sets UXN.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VMAttributes(pub Word);

impl VMAttributes {
    /// Uncached: device memory (Device-nGnRnE on AArch64).
    pub const NONE: VMAttributes = VMAttributes(0);
    pub const PAGE_CACHEABLE: VMAttributes = VMAttributes(0x01);
    pub const PARITY_ENABLED: VMAttributes = VMAttributes(0x02);
    /// `seL4_ARM_Default_VMAttributes`: cacheable, parity enabled.
    pub const DEFAULT: VMAttributes = VMAttributes(0x03);
    pub const EXECUTE_NEVER: VMAttributes = VMAttributes(0x04);

    pub const fn union(self, other: VMAttributes) -> VMAttributes {
        VMAttributes(self.0 | other.0)
    }
    pub const fn contains(self, other: VMAttributes) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for VMAttributes {
    type Output = VMAttributes;
    fn bitor(self, rhs: VMAttributes) -> VMAttributes {
        self.union(rhs)
    }
}

macro_rules! cap_types {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub CPtr);

        impl $name {
            pub const fn new(cptr: CPtr) -> $name {
                $name(cptr)
            }
            /// A capability in slot `w` of the caller's CSpace.
            pub const fn from_word(w: Word) -> $name {
                $name(CPtr(w))
            }
            pub const fn cptr(self) -> CPtr {
                self.0
            }
        }

        impl From<CPtr> for $name {
            fn from(c: CPtr) -> $name {
                $name(c)
            }
        }

        impl From<$name> for CPtr {
            fn from(c: $name) -> CPtr {
                c.0
            }
        }
    )*};
}

cap_types! {
    /// Untyped memory (`seL4_Untyped`).
    Untyped,
    /// Thread control block (`seL4_TCB`).
    TCB,
    /// CNode (`seL4_CNode`): also used for a VSpace root where the XML says so
    /// (`TCB_Configure`'s `vspace_root`).
    CNode,
    /// Endpoint: IPC with `call`/`send`/`recv`.
    Endpoint,
    /// Notification: `signal`/`wait`/`poll`.
    Notification,
    /// IRQ control (`seL4_IRQControl`).
    IRQControl,
    /// IRQ handler (`seL4_IRQHandler`).
    IRQHandler,
    /// Domain set (`seL4_DomainSet`).
    DomainSet,
    /// Frame of any size (`seL4_ARM_Page`).
    Page,
    /// Level-3 translation table (`seL4_ARM_PageTable`).
    PageTable,
    /// Level-2 translation table (`seL4_ARM_PageDirectory`).
    PageDirectory,
    /// Level-1 translation table (`seL4_ARM_PageUpperDirectory`).
    PageUpperDirectory,
    /// Level-0 table: the VSpace root on AArch64 (`seL4_ARM_PageGlobalDirectory`).
    PageGlobalDirectory,
    /// ASID control (`seL4_ARM_ASIDControl`).
    ASIDControl,
    /// ASID pool (`seL4_ARM_ASIDPool`).
    ASIDPool,
    /// Kernel IOMMU space (`seL4_ARM_IOSpace`; only with the kernel's TK1 SMMU support).
    IOSpace,
    /// Kernel IOMMU page table (`seL4_ARM_IOPageTable`; TK1 SMMU only).
    IOPageTable,
}

/// The VSpace root type on AArch64 (5.0.0, 48-bit VA: four levels).
pub type VSpace = PageGlobalDirectory;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfields() {
        // shared_types_64.bf: capAllowGrant bit 2, capAllowRead bit 1, capAllowWrite bit 0;
        // libsel4's seL4_ReadWrite = seL4_CapRights_new(0, 1, 1).
        assert_eq!(CapRights::READ_WRITE.0, 0b011);
        assert_eq!(CapRights::ALL.0, 0b111);
        assert_eq!(CapRights::GRANT.0, 0b100);
        assert!(CapRights::READ.read() && !CapRights::READ.write());
        // structures_64.bf cnode_capdata: guard bits 8..26, guardSize bits 2..8.
        assert_eq!(CapData::guard(0x5, 10).0, (5 << 8) | (10 << 2));
        assert_eq!(CapData::guard(0, 50).0, 50 << 2);
        // shared_types_64.bf seL4_PrioProps: mcp bits 8..16, prio bits 0..8.
        let p = PrioProps::new(254, 100);
        assert_eq!(p.0, (254 << 8) | 100);
        assert_eq!((p.mcp(), p.prio()), (254, 100));
        assert_eq!((VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER).0, 7);
        assert!(VMAttributes::DEFAULT.contains(VMAttributes::PAGE_CACHEABLE));
    }

    #[test]
    fn badges() {
        assert_eq!(CapData::badge((1 << 28) - 1).0, 0x0fff_ffff);
        assert!(std::panic::catch_unwind(|| CapData::badge(1 << 28)).is_err());
    }
}
