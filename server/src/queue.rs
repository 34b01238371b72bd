//! Circular-queue index arithmetic shared by the command and event queues
//! (3.5 "Command and Event queues"; 6.3.26/27 PROD/CONS): a pointer is
//! `wrap << log2 | index`; the queue is empty when both are equal and full
//! when the indices are equal and the wrap bits differ.

/// Pointer arithmetic of a queue of `1 << log2` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueGeom {
    pub log2: u8,
}

impl QueueGeom {
    /// Number of entries.
    pub const fn entries(&self) -> u32 {
        1 << self.log2
    }
    /// Mask of index and wrap bit.
    pub const fn ptr_mask(&self) -> u32 {
        (2u32 << self.log2) - 1
    }
    /// The index part.
    pub const fn idx(&self, p: u32) -> u32 {
        p & (self.entries() - 1)
    }
    /// The wrap bit (as a bit in place).
    pub const fn wrp(&self, p: u32) -> u32 {
        p & self.entries()
    }
    /// Entries in use between `cons` and `prod`.
    pub const fn used(&self, prod: u32, cons: u32) -> u32 {
        prod.wrapping_sub(cons) & self.ptr_mask()
    }
    /// Free entries.
    pub const fn free(&self, prod: u32, cons: u32) -> u32 {
        self.entries().saturating_sub(self.used(prod, cons))
    }
    /// Whether the queue is full.
    pub const fn full(&self, prod: u32, cons: u32) -> bool {
        self.idx(prod) == self.idx(cons) && self.wrp(prod) != self.wrp(cons)
    }
    /// Whether the queue is empty.
    pub const fn empty(&self, prod: u32, cons: u32) -> bool {
        (prod & self.ptr_mask()) == (cons & self.ptr_mask())
    }
    /// The pointer after `p`, wrapping and toggling the wrap bit.
    pub const fn inc(&self, p: u32) -> u32 {
        (p + 1) & self.ptr_mask()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_full_empty() {
        let q = QueueGeom { log2: 2 };
        assert!(q.empty(0, 0) && !q.full(0, 0));
        let mut p = 0;
        for _ in 0..4 {
            p = q.inc(p);
        }
        assert_eq!(p, 0b100); // index 0, wrap 1
        assert!(q.full(p, 0) && !q.empty(p, 0));
        assert_eq!(q.free(p, 0), 0);
        assert_eq!(q.used(p, 0), 4);
        for _ in 0..4 {
            p = q.inc(p);
        }
        assert_eq!(p, 0);
        assert_eq!(q.used(0b001, 0b110), 3);
        assert_eq!(q.free(0b001, 0b110), 1);
        assert!(q.empty(0b101, 0b101));
    }
}
