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
    /// `variant`: a read whose data buffer the driver unmaps before it
    /// rings the doorbell (0: one page, PRP1 only; 1: four pages through a
    /// PRP list, which is unmapped too). Reply: the error the read got;
    /// word 2 the IOVA of the buffer.
    pub const TEST_UNMAPPED: u64 = 7;
    /// Queues deleted, controller disabled, mappings and domain freed; the
    /// driver reports done after replying.
    pub const SHUTDOWN: u64 = 8;
    /// `lba, count`: submits a read, replies (word 2: the buffer's IOVA),
    /// and dies by a fault with the read outstanding (`blk-death`).
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
}

/// Staging buffer size.
pub const STAGING_BYTES: u64 = 128 * 1024;
/// Bytes a GET or PUT carries.
pub const CHUNK: usize = 512;
