//! Just enough ELF64 (little-endian, AArch64) to load static executables.
//!
//! Every field is read byte by byte: the loader runs with the MMU off, where
//! an unaligned wide load faults, and embedded ELF files are only byte-aligned.

/// `PT_LOAD`.
pub const PT_LOAD: u32 = 1;
/// Segment permission bits.
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// Why an ELF file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    NotElf64Le,
    NotAarch64,
    Truncated,
}

/// A validated ELF64 file.
#[derive(Clone, Copy)]
pub struct Elf<'a> {
    bytes: &'a [u8],
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let mut v = [0u8; 4];
    for (i, b) in v.iter_mut().enumerate() {
        *b = *bytes.get(at + i)?;
    }
    Some(u32::from_le_bytes(v))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let mut v = [0u8; 8];
    for (i, b) in v.iter_mut().enumerate() {
        *b = *bytes.get(at + i)?;
    }
    Some(u64::from_le_bytes(v))
}

impl<'a> Elf<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        let ident = bytes.get(..16).ok_or(ElfError::Truncated)?;
        // ELFCLASS64, ELFDATA2LSB.
        if ident[..4] != *b"\x7fELF" || ident[4] != 2 || ident[5] != 1 {
            return Err(ElfError::NotElf64Le);
        }
        // EM_AARCH64.
        if read_u16(bytes, 18) != Some(183) {
            return Err(ElfError::NotAarch64);
        }
        let elf = Elf { bytes };
        let count = elf.segment_count();
        let end = elf.phoff() + count * elf.phentsize();
        if elf.phentsize() < 56 || end > bytes.len() {
            return Err(ElfError::Truncated);
        }
        for i in 0..count {
            let s = elf.segment(i);
            if s.kind == PT_LOAD && s.offset.saturating_add(s.filesz) > bytes.len() as u64 {
                return Err(ElfError::Truncated);
            }
        }
        Ok(elf)
    }

    pub fn entry(&self) -> u64 {
        read_u64(self.bytes, 24).unwrap_or(0)
    }

    fn phoff(&self) -> usize {
        read_u64(self.bytes, 32).unwrap_or(0) as usize
    }

    fn phentsize(&self) -> usize {
        read_u16(self.bytes, 54).unwrap_or(0) as usize
    }

    pub fn segment_count(&self) -> usize {
        read_u16(self.bytes, 56).unwrap_or(0) as usize
    }

    /// Program header `i` (< `segment_count()`, checked in `parse`).
    pub fn segment(&self, i: usize) -> Segment {
        let at = self.phoff() + i * self.phentsize();
        let b = self.bytes;
        Segment {
            kind: read_u32(b, at).unwrap_or(0),
            flags: read_u32(b, at + 4).unwrap_or(0),
            offset: read_u64(b, at + 8).unwrap_or(0),
            vaddr: read_u64(b, at + 16).unwrap_or(0),
            paddr: read_u64(b, at + 24).unwrap_or(0),
            filesz: read_u64(b, at + 32).unwrap_or(0),
            memsz: read_u64(b, at + 40).unwrap_or(0),
        }
    }

    /// The loadable segments.
    pub fn loads(&self) -> impl Iterator<Item = Segment> + '_ {
        (0..self.segment_count())
            .map(|i| self.segment(i))
            .filter(|s| s.kind == PT_LOAD && s.memsz > 0)
    }

    /// The file bytes of a segment.
    pub fn data(&self, s: &Segment) -> &'a [u8] {
        &self.bytes[s.offset as usize..(s.offset + s.filesz) as usize]
    }

    /// [lowest vaddr, highest vaddr) over the loadable segments.
    pub fn vaddr_range(&self) -> (u64, u64) {
        let lo = self.loads().map(|s| s.vaddr).min().unwrap_or(0);
        let hi = self.loads().map(|s| s.vaddr + s.memsz).max().unwrap_or(0);
        (lo, hi)
    }
}
