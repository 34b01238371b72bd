//! `cargo xtask`: the project's build, boot and test tool.
//!
//! - `cargo xtask run [SYSTEM] [--trace] [--icount] [--timeout SECS] [--device DEV]...`
//!   build the seL4 image of SYSTEM and boot it in QEMU
//! - `cargo xtask test`          every test, host and image; ends with `N passed, N failed`
//! - `cargo xtask image-tests`   only the QEMU image tests
//! - `cargo xtask setup`         install what the other commands need (they call it first)
//! - `cargo xtask kernel [--release]`  build only the seL4 kernel (debug, or without debug support)
//! - `cargo xtask image SYSTEM`  build only the bootable image of SYSTEM
//! - `cargo xtask bench [--iterations N | --quick | --profile]`  IOMMU operation costs in the booted image (-icount), or where they go

mod bench;
mod fuzz;
mod hosttests;
mod image;
mod imagetests;
mod kernel;
mod policy;
mod profile;
mod qemu;
mod setup;
mod system;

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Where things are; passed to every step.
pub struct Ctx {
    /// The repository root.
    pub root: PathBuf,
    /// Build products that are not cargo's: kernel build, images, QEMU logs.
    pub build: PathBuf,
    /// True under CI (CI=true): no interactive behaviour, shorter fuzz runs.
    pub ci: bool,
}

impl Ctx {
    fn new() -> Result<Ctx> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()?;
        let build = root.join("build");
        std::fs::create_dir_all(&build)?;
        let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
        Ok(Ctx { root, build, ci })
    }
}

/// The system `cargo xtask run` boots when none is named.
pub const DEFAULT_SYSTEM: &str = "dma-demo";

fn main() -> Result<()> {
    let ctx = Ctx::new()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("help");
    match command {
        "setup" => setup::ensure(&ctx),
        "kernel" => {
            setup::ensure(&ctx)?;
            let flavour = if args.iter().any(|a| a == "--release") {
                kernel::Flavour::Release
            } else {
                kernel::Flavour::Debug
            };
            let kernel = kernel::build_kernel(&ctx, flavour)?;
            println!("kernel: {}", kernel.elf.display());
            println!(
                "kernel: generated headers in {}",
                kernel.build_dir.display()
            );
            Ok(())
        }
        "image" => {
            setup::ensure(&ctx)?;
            let system = args.get(1).map(String::as_str).unwrap_or(DEFAULT_SYSTEM);
            let image = image::build(&ctx, system)?;
            println!("image: {}", image.display());
            Ok(())
        }
        "run" => {
            setup::ensure(&ctx)?;
            let (system, options) = qemu::BootOptions::from_args(&args[1..], DEFAULT_SYSTEM)?;
            let image = image::build(&ctx, &system)?;
            let outcome = qemu::boot(&ctx, &image, &options)?;
            if let Some(trace) = &outcome.trace_file {
                println!("qemu: SMMU trace in {}", trace.display());
            }
            if !outcome.clean_exit {
                bail!(
                    "{system}: the run did not end cleanly ({})",
                    outcome.summary()
                );
            }
            Ok(())
        }
        "bench" => {
            setup::ensure(&ctx)?;
            bench::run(&ctx, &args[1..])
        }
        "image-tests" => {
            setup::ensure(&ctx)?;
            let tally = imagetests::run_all(&ctx);
            println!("{} passed, {} failed", tally.passed, tally.failed);
            if tally.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        "test" => {
            setup::ensure(&ctx)?;
            let mut tally = hosttests::run(&ctx)?;
            tally.add(imagetests::run_all(&ctx));
            tally.add(bench::build_check(&ctx));
            println!("{} passed, {} failed", tally.passed, tally.failed);
            if tally.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask <run [SYSTEM] [--trace] [--icount] [--timeout SECS] [--device DEV] | test | image-tests | setup | kernel | image SYSTEM | bench [--iterations N | --quick | --profile]>");
            std::process::exit(2);
        }
    }
}

/// Counts of passed and failed tests across host and image suites.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}
