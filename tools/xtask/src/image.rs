//! Builds a bootable image for a system description (placeholder).
use crate::Ctx;
use anyhow::{bail, Result};
use std::path::PathBuf;

pub fn build(_ctx: &Ctx, system: &str) -> Result<PathBuf> {
    bail!("building the image of {system} is not written yet")
}
