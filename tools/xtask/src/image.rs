//! Builds the bootable image of a system: kernel, process ELFs, root task
//! (with the system description compiled in) and the loader that embeds the
//! kernel and root task. The result is one ELF for QEMU's `-kernel`.

use crate::{kernel, system, Ctx};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::setup::TARGET;

/// Builds `build/images/<system>/image.elf`.
pub fn build(ctx: &Ctx, name: &str) -> Result<PathBuf> {
    let started = Instant::now();
    let desc = system::load(&ctx.root, name)?;
    let kernel = kernel::build_kernel(ctx, desc.kernel.flavour())?;
    let out = ctx.build.join("images").join(name);
    std::fs::create_dir_all(&out)?;
    let bin_dir = target_dir(ctx, &kernel).join(TARGET).join("release");

    let crates = desc.crates();
    let mut args = vec!["build", "--release", "--target", TARGET];
    for c in &crates {
        args.extend(["-p", c]);
    }
    // The IOMMU server process compiles in the system's client policy.
    let policy_rs = out.join("iommu_policy.rs");
    let policy = crate::policy::generate(&desc, name)?;
    kernel::write_if_changed(&policy_rs, policy.as_bytes())?;
    cargo(ctx, &kernel, &args, &[("IOMMU_POLICY_RS", &policy_rs)])
        .context("building the processes")?;

    // The root task embeds the processes without debug info (smaller image,
    // faster loader copy); the full ELFs stay in images/target for symbols.
    for c in &crates {
        strip(&bin_dir.join(c), &out.join(format!("{c}.elf")))?;
    }
    let system_rs = out.join("system.rs");
    let generated = desc.generate(name, |krate| out.join(format!("{krate}.elf")));
    kernel::write_if_changed(&system_rs, generated.as_bytes())?;
    cargo(
        ctx,
        &kernel,
        &["build", "--release", "--target", TARGET, "-p", "roottask"],
        &[("ROOTTASK_SYSTEM_RS", &system_rs)],
    )
    .context("building the root task")?;
    let roottask = out.join("roottask.elf");
    std::fs::copy(bin_dir.join("roottask"), &roottask)?;

    cargo(
        ctx,
        &kernel,
        &["build", "--release", "--target", TARGET, "-p", "loader"],
        &[
            ("LOADER_KERNEL_ELF", &kernel.elf),
            ("LOADER_ROOTTASK_ELF", &roottask),
        ],
    )
    .context("building the loader")?;
    let image = out.join("image.elf");
    std::fs::copy(bin_dir.join("loader"), &image)?;
    println!("image: {name} built in {:.1?}", started.elapsed());
    Ok(image)
}

/// Copies an ELF without its debug sections, unless the copy is up to date.
fn strip(from: &Path, to: &Path) -> Result<()> {
    let newer = |a: &Path, b: &Path| -> bool {
        match (
            a.metadata().and_then(|m| m.modified()),
            b.metadata().and_then(|m| m.modified()),
        ) {
            (Ok(a), Ok(b)) => a > b,
            _ => true,
        }
    };
    if to.is_file() && !newer(from, to) {
        return Ok(());
    }
    let status = Command::new("aarch64-linux-gnu-strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .context("could not run aarch64-linux-gnu-strip (Debian binutils-aarch64-linux-gnu)")?;
    if !status.success() {
        bail!("stripping {} failed", from.display());
    }
    Ok(())
}

/// A process's ELF as built (with symbols), for profiling.
pub fn process_elf(ctx: &Ctx, kernel: &kernel::Kernel, krate: &str) -> PathBuf {
    target_dir(ctx, kernel)
        .join(TARGET)
        .join("release")
        .join(krate)
}

/// One cargo target directory per kernel flavour: the bindings (and so
/// everything above them) differ, and switching would rebuild it all.
fn target_dir(ctx: &Ctx, kernel: &kernel::Kernel) -> PathBuf {
    let target = ctx.root.join("images/target");
    match kernel.flavour {
        kernel::Flavour::Debug => target,
        kernel::Flavour::Release => target.join("kernel-release"),
    }
}

/// Runs cargo in the `images/` workspace with the kernel's configuration in
/// the environment (sel4-abi's build script generates its bindings from it;
/// procrt and the root task pick their console from `SEL4_DEFINES`).
fn cargo(ctx: &Ctx, kernel: &kernel::Kernel, args: &[&str], env: &[(&str, &Path)]) -> Result<()> {
    let mut command = cargo_command(ctx, kernel, args);
    for (k, v) in env {
        command.env(k, v);
    }
    let status = command.status().context("could not run cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// `cargo test` of the `images/` crates that also build for the host (the
/// seL4 bindings and their generator, the start-info layout, the console
/// writer), against the debug kernel's configuration (built first if need
/// be). The caller runs and counts it.
pub fn host_unit_tests(ctx: &Ctx) -> Result<Command> {
    let kernel = kernel::build_kernel(ctx, kernel::Flavour::Debug)?;
    let mut command = cargo_command(
        ctx,
        &kernel,
        &["test", "-p", "sel4-abi", "-p", "procinfo", "--no-fail-fast"],
    );
    command.env("RUST_BACKTRACE", "1");
    Ok(command)
}

fn cargo_command(ctx: &Ctx, kernel: &kernel::Kernel, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(args)
        .arg("--target-dir")
        .arg(target_dir(ctx, kernel))
        .current_dir(ctx.root.join("images"))
        .env("SEL4_SOURCE", &kernel.src_dir)
        .env(
            "SEL4_AUTOCONF",
            kernel.src_dir.join("include/plat/virt/autoconf.h"),
        )
        .env("SEL4_DEFINES", kernel.flavour.command_line_defines())
        // The host workspace's xtask runs under `cargo run`; do not leak its
        // target directory or flags into the aarch64 build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}
