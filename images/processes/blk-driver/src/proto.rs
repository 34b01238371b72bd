//! The block protocol between the driver and its client, over one seL4
//! endpoint the driver receives on (`blk`; the client holds it `wg` and
//! uses `seL4_Call`).
//!
//! The system format has no memory shared between processes, so the data
//! stays in the driver's DMA pool: a staging buffer of [`STAGING_BYTES`]
//! that the client fills and drains through message registers ([`op::PUT`],
//! [`op::GET`], [`CHUNK`] bytes a message), and that [`op::READ`] and
//! [`op::WRITE`] move to and from the disk. Each NVMe command maps the part
//! of the staging buffer it moves with `DmaDomain::map_single` and unmaps
//! it on completion.
//!
//! A request is the message label ([`op`]) and its words; the reply's label
//! is 0, word 0 a [`status`], word 1 a detail (the NVMe status field, or
//! the IOMMU error code), then the op's own words.
//!
//! Every word of a request is the client's: the driver checks each with
//! checked arithmetic and answers a bad one with [`status::INVALID`],
//! never a panic. [`op::SHUTDOWN`] is for the caller whose badge is
//! [`CONTROL_BADGE`] only; the test requests ([`op::TEST_UNMAPPED`],
//! [`op::DIE_MID_IO`]) only in the driver role made for that test, and for
//! that caller only. Anything else is refused with [`status::REFUSED`].

/// Request labels.
pub mod op {
    /// Reply: LBA size, LBA count, staging buffer bytes, largest command.
    pub const INFO: u64 = 1;
    /// `lba, count, offset`: disk -> staging buffer at byte `offset`.
    pub const READ: u64 = 2;
    /// `lba, count, offset`: staging buffer at byte `offset` -> disk.
    pub const WRITE: u64 = 3;
    /// `offset, len`: reply words 2.. carry `len` bytes of the staging buffer.
    pub const GET: u64 = 4;
    /// `offset, len, data...`: into the staging buffer.
    pub const PUT: u64 = 5;
    /// NVMe Flush.
    pub const FLUSH: u64 = 6;
    /// `variant`: a read into a mapped buffer (the SMMU's TLB then holds
    /// its pages), then the same read again after the driver unmapped the
    /// buffer (0: one page, PRP1 only; 1: four pages through a PRP list,
    /// which is unmapped too). Reply: the error the second read got; word 2
    /// the IOVA of the buffer. The `blk-driver` role only, from
    /// [`CONTROL_BADGE`].
    pub const TEST_UNMAPPED: u64 = 7;
    /// Queues deleted, controller disabled, mappings and domain freed; the
    /// driver reports done after replying. From [`CONTROL_BADGE`] only.
    pub const SHUTDOWN: u64 = 8;
    /// `lba, count`: submits a read and a compare, replies (words 2 and 3:
    /// their buffers' IOVAs), and dies by a fault with both outstanding
    /// (`blk-death`). The `doomed-driver` role only, from
    /// [`CONTROL_BADGE`].
    pub const DIE_MID_IO: u64 = 9;
}

/// Reply word 0.
pub mod status {
    pub const OK: u64 = 0;
    /// The device completed the command with an error status (word 1).
    pub const IO_ERROR: u64 = 1;
    /// The SMMU faulted the device's DMA to the request's buffer: the data
    /// did not all arrive, whatever the completion said.
    pub const DMA_FAULT: u64 = 2;
    /// No completion within the time limit.
    pub const TIMEOUT: u64 = 3;
    /// The IOMMU server refused a map or unmap (word 1: its error code).
    pub const IOMMU: u64 = 4;
    /// Bad arguments: beyond the disk or the staging buffer, unknown op.
    pub const INVALID: u64 = 5;
    /// The controller is out of service (an earlier timeout or fatal status).
    pub const BROKEN: u64 = 6;
    /// Not for this caller (its badge) or not in this driver role.
    pub const REFUSED: u64 = 7;
}

/// The badge of the `blk` endpoint cap that the system description gives
/// the one client that may shut the driver down and ask for the role's test
/// requests (`badge = 1` on `blk-client`'s cap in blk.toml, on
/// `blk-watcher`'s in blk-death.toml). An unbadged cap's calls arrive with
/// badge 0.
pub const CONTROL_BADGE: u64 = 1;

/// Staging buffer size.
pub const STAGING_BYTES: u64 = 128 * 1024;
/// Bytes a GET or PUT carries at most.
pub const CHUNK: usize = 512;

/// The staging bytes a GET or PUT of `len` bytes from `offset` names: a
/// multiple of 8 bytes, at most [`CHUNK`], inside the staging buffer.
/// `None` for anything else, whatever the words (no overflow).
pub fn staging_range(offset: u64, len: u64) -> Option<core::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    if len > CHUNK as u64 || !len.is_multiple_of(8) || end > STAGING_BYTES {
        return None;
    }
    Some(offset as usize..end as usize)
}
