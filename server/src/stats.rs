//! Counters of what the driver told the hardware (issue item 7).

/// Command and event counters, exposed by [`crate::Smmu::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Commands written to the command queue, indexed by opcode
    /// (`cmd::op::*`; opcodes ≥ 0x80 count in slot 0x7f).
    pub commands: [u64; 128],
    /// `CMD_SYNC`s issued (also in `commands[0x46]`).
    pub syncs: u64,
    /// TLB invalidations issued (every `TLBI_*`).
    pub tlbis: u64,
    /// Configuration invalidations issued (every `CFGI_*`).
    pub cfgis: u64,
    /// Times the producer index was written (doorbells).
    pub doorbells: u64,
    /// Commands the SMMU rejected (`GERROR.CMDQ_ERR`), replaced by CMD_SYNC.
    pub cmdq_errors: u64,
    /// Event records consumed.
    pub events: u64,
    /// Event queue overflows seen (`EVENTQ_PROD.OVFLG` toggled).
    pub event_overflows: u64,
    /// Global errors seen, by GERROR bit index (0..=8).
    pub gerrors: [u64; 9],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            commands: [0; 128],
            syncs: 0,
            tlbis: 0,
            cfgis: 0,
            doorbells: 0,
            cmdq_errors: 0,
            events: 0,
            event_overflows: 0,
            gerrors: [0; 9],
        }
    }
}

impl Stats {
    /// Total commands issued.
    pub fn total_commands(&self) -> u64 {
        self.commands.iter().sum()
    }

    /// Commands issued with `opcode`.
    pub fn by_opcode(&self, opcode: u8) -> u64 {
        self.commands[(opcode as usize).min(127)]
    }
}
