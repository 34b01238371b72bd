//! Boots an image in qemu-system-aarch64 (placeholder).
use crate::Ctx;
use anyhow::{bail, Result};
use std::path::Path;

pub struct BootOptions {
    pub system: String,
}

impl BootOptions {
    pub fn interactive(system: &str) -> BootOptions {
        BootOptions { system: system.to_string() }
    }
}

pub struct BootOutcome {
    pub clean_exit: bool,
}

impl BootOutcome {
    pub fn summary(&self) -> String {
        String::new()
    }
}

pub fn boot(_ctx: &Ctx, _image: &Path, options: &BootOptions) -> Result<BootOutcome> {
    bail!("booting {} is not written yet", options.system)
}
