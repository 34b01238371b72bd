//! The error type of every fallible server-core operation.

use crate::hal::OutOfMemory;

/// What a bounded poll was waiting for when it gave up (see [`Error::Timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// `GBPA.Update` to clear (6.3.14 SMMU_GBPA).
    GbpaUpdate,
    /// `CR0ACK` to equal the value written to `CR0` (6.3.9 SMMU_CR0ACK).
    Cr0Ack,
    /// `IRQ_CTRLACK` to equal `IRQ_CTRL` (6.3.17 SMMU_IRQ_CTRLACK).
    IrqCtrlAck,
    /// Free space in the command queue (`CMDQ_CONS` to advance).
    CmdqSpace,
    /// `CMDQ_CONS` to pass a `CMD_SYNC` (4.7.3 CMD_SYNC completion).
    CmdSync,
}

/// Error code found in `SMMU_CMDQ_CONS.ERR` (6.3.27; 7.1 "Command queue errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdqErrorCode {
    /// CERROR_NONE (0): no error (spurious GERROR.CMDQ_ERR).
    None,
    /// CERROR_ILL (1): illegal or unsupported command.
    Illegal,
    /// CERROR_ABT (2): abort on command fetch.
    Abort,
    /// CERROR_ATC_INV_SYNC (3): ATC invalidation timeout at a CMD_SYNC.
    AtcInvSync,
    /// A code this driver does not know.
    Other(u8),
}

impl CmdqErrorCode {
    /// Decodes the 7-bit `CMDQ_CONS.ERR` field.
    pub fn from_raw(code: u8) -> Self {
        match code {
            0 => Self::None,
            1 => Self::Illegal,
            2 => Self::Abort,
            3 => Self::AtcInvSync,
            other => Self::Other(other),
        }
    }
}

/// A problem the SMMU itself reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardwareError {
    /// The SMMU lacks something the driver needs (e.g. stage 1, AArch64 tables,
    /// the 4 KiB granule, little-endian table walks).
    MissingFeature(&'static str),
    /// A command was rejected (`GERROR.CMDQ_ERR`); it was replaced by a
    /// `CMD_SYNC` and the queue kept running. `opcode` is the rejected command's.
    CommandError { code: CmdqErrorCode, opcode: u8 },
    /// The SMMU entered service failure mode (`GERROR.SFM_ERR`).
    ServiceFailure,
}

/// Errors of the server core. Every operation that returns an error leaves
/// tables, ASIDs and domains as they were, except where a method's
/// documentation says otherwise (only [`Error::Timeout`] and
/// [`Error::Hardware`] after the hardware stopped answering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The DMA allocator refused (out of memory or of its quota).
    NoMemory,
    /// Every ASID is in use.
    NoAsid,
    /// A fixed-capacity table is full (domains, streams in a domain,
    /// streams with a context-descriptor table); see the `MAX_*` constants.
    NoSlot,
    /// `map` found an existing mapping in the range; nothing was changed.
    Overlap,
    /// `unmap` found nothing mapped in the range.
    NotMapped,
    /// An address or length is not a multiple of 4 KiB, or a length is zero.
    Misaligned,
    /// An IOVA beyond 48 bits or a physical address beyond the SMMU's OAS.
    OutOfRange,
    /// The domain id does not name a live domain.
    NoSuchDomain,
    /// The StreamID is beyond the stream table.
    StreamOutOfRange,
    /// The SubstreamID is beyond what the SMMU (or the configuration) supports;
    /// with no substreams only SSID 0 is valid.
    SsidOutOfRange,
    /// The (StreamID, SSID) is not attached to any domain.
    NotAttached,
    /// The domain still has streams attached.
    Busy,
    /// A bounded poll gave up; the hardware did not respond in time.
    Timeout(WaitFor),
    /// The hardware reported an error.
    Hardware(HardwareError),
    /// A configuration value or feature this driver does not support.
    Unsupported,
}

impl From<OutOfMemory> for Error {
    fn from(_: OutOfMemory) -> Self {
        Error::NoMemory
    }
}

/// Result alias of the server core.
pub type Result<T> = core::result::Result<T, Error>;
