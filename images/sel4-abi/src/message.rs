//! `seL4_MessageInfo_t`: the tag word of every message (`x1`).

use crate::types::Word;

/// Message registers in total (`seL4_MsgMaxLength`).
pub const MSG_MAX_LENGTH: usize = 120;
/// Extra capabilities per message (`seL4_MsgMaxExtraCaps`).
pub const MSG_MAX_EXTRA_CAPS: usize = 3;
/// Message registers passed in CPU registers (`x2`..`x5`) on AArch64; the rest
/// live in the IPC buffer from `msg[4]`.
pub const MSG_REGISTERS: usize = 4;

/// Message tag: `label << 12 | capsUnwrapped << 9 | extraCaps << 7 | length`
/// (`shared_types_64.bf`: label 20 bits, capsUnwrapped 3, extraCaps 2, length 7).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MessageInfo(pub Word);

impl MessageInfo {
    pub const LABEL_BITS: u32 = 20;

    /// `seL4_MessageInfo_new`. Out-of-range fields are truncated to their
    /// widths, as the C constructor does.
    pub const fn new(
        label: Word,
        caps_unwrapped: Word,
        extra_caps: Word,
        length: Word,
    ) -> MessageInfo {
        MessageInfo(
            ((label & 0xf_ffff) << 12)
                | ((caps_unwrapped & 0x7) << 9)
                | ((extra_caps & 0x3) << 7)
                | (length & 0x7f),
        )
    }
    pub const fn label(self) -> Word {
        (self.0 >> 12) & 0xf_ffff
    }
    /// Bit `i` set: the `i`th received cap was unwrapped into its badge.
    pub const fn caps_unwrapped(self) -> Word {
        (self.0 >> 9) & 0x7
    }
    pub const fn extra_caps(self) -> usize {
        ((self.0 >> 7) & 0x3) as usize
    }
    pub const fn length(self) -> usize {
        (self.0 & 0x7f) as usize
    }
    pub const fn with_label(self, label: Word) -> MessageInfo {
        MessageInfo((self.0 & 0xfff) | ((label & 0xf_ffff) << 12))
    }
    pub const fn with_length(self, length: Word) -> MessageInfo {
        MessageInfo((self.0 & !0x7f) | (length & 0x7f))
    }
    pub const fn with_extra_caps(self, n: Word) -> MessageInfo {
        MessageInfo((self.0 & !(0x3 << 7)) | ((n & 0x3) << 7))
    }
    pub const fn word(self) -> Word {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing() {
        let m = MessageInfo::new(0x12345, 5, 2, 100);
        assert_eq!(m.0, (0x12345 << 12) | (5 << 9) | (2 << 7) | 100);
        assert_eq!(m.label(), 0x12345);
        assert_eq!(m.caps_unwrapped(), 5);
        assert_eq!(m.extra_caps(), 2);
        assert_eq!(m.length(), 100);
        // DESIGN section 7: label << 12 | extra caps << 7 | length.
        assert_eq!(MessageInfo::new(1, 0, 1, 7).0, 0x1087);
        // Truncation to field widths.
        let t = MessageInfo::new(0x1f_ffff, 8, 4, 128);
        assert_eq!(
            (t.label(), t.caps_unwrapped(), t.extra_caps(), t.length()),
            (0xf_ffff, 0, 0, 0)
        );
        let w = m.with_label(3).with_length(4).with_extra_caps(1);
        assert_eq!(
            (w.label(), w.caps_unwrapped(), w.extra_caps(), w.length()),
            (3, 5, 1, 4)
        );
    }
}
