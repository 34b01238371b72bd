//! Builds the seL4 kernel (placeholder until the kernel build lands).
use crate::Ctx;
use anyhow::{bail, Result};
use std::path::PathBuf;

pub fn build(_ctx: &Ctx) -> Result<PathBuf> {
    bail!("the seL4 kernel build is not written yet")
}
