//! Builds the seL4 5.0.0 kernel for our QEMU `virt` platform.
//!
//! The source comes from the crates.io package `sel4-sys` 0.0.28 (fetched by
//! cargo, never committed). It is copied to `build/kernel/src` (the kernel
//! build writes into its source tree), our platform files from
//! `images/kernel/` are laid over the copy, and a few checked text edits fix
//! the build for gcc 12 / AArch64 (DESIGN.md §3). The build is skipped when
//! none of its inputs changed.

use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The crates.io package that bundles the seL4 5.0.0 source.
const SEL4_SYS_VERSION: &str = "0.0.28";
/// Guest RAM: 0x4000_0000 + this; QEMU must run with the same `-m`.
pub const RAM_SIZE: u64 = 0x4000_0000;
/// Bumped whenever the edits below change, so old builds are not reused.
const RECIPE_VERSION: u32 = 1;

/// Which kernel configuration to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Flavour {
    /// `DEBUG=y`: CONFIG_DEBUG_BUILD and CONFIG_PRINTING (DebugPutChar,
    /// kernel fault printouts). What every system uses unless it says otherwise.
    #[default]
    Debug,
    /// No debug support: the fast paths benchmarks should measure. User
    /// level prints through the PL011, which the kernel then hands out as a
    /// device untyped.
    Release,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Debug => "debug",
            Flavour::Release => "release",
        }
    }

    /// The defines the kernel Makefile adds on the command line.
    pub fn command_line_defines(self) -> &'static str {
        match self {
            Flavour::Debug => "CONFIG_DEBUG_BUILD",
            Flavour::Release => "",
        }
    }
}

/// What a kernel build produced.
pub struct Kernel {
    pub flavour: Flavour,
    /// `kernel.elf`, for the loader.
    pub elf: PathBuf,
    /// The build directory: generated headers (`arch/api/invocation.h`, ...).
    pub build_dir: PathBuf,
    /// The patched source tree (interface XML under `libsel4/`).
    pub src_dir: PathBuf,
}

/// Builds a kernel, or reuses an up-to-date build. Both flavours share one
/// patched source tree, which is only recreated when its inputs change.
pub fn build_kernel(ctx: &Ctx, flavour: Flavour) -> Result<Kernel> {
    let root = ctx.build.join("kernel");
    let src_dir = root.join("src");
    let build_dir = root.join(format!("build-{}", flavour.name()));
    let elf = build_dir.join("kernel.elf");
    let src_stamp = root.join("src.stamp");
    let build_stamp = root.join(format!("{}.stamp", flavour.name()));

    let upstream = sel4_source(ctx)?;
    let ours = ctx.root.join("images/kernel");
    let fingerprint = fingerprint(&upstream, &ours)?;
    let kernel = Kernel {
        flavour,
        elf: elf.clone(),
        build_dir: build_dir.clone(),
        src_dir: src_dir.clone(),
    };
    let stamped =
        |stamp: &Path| fs::read_to_string(stamp).ok().as_deref() == Some(fingerprint.as_str());
    if elf.is_file() && stamped(&build_stamp) && stamped(&src_stamp) {
        println!("kernel: {} up to date ({})", flavour.name(), elf.display());
        return Ok(kernel);
    }

    let started = Instant::now();
    if !stamped(&src_stamp) {
        let _ = fs::remove_file(&src_stamp);
        if src_dir.exists() {
            fs::remove_dir_all(&src_dir)?;
        }
        copy_tree(&upstream, &src_dir)
            .with_context(|| format!("copying the seL4 source from {}", upstream.display()))?;
        apply_platform(&ours, &src_dir)?;
        fs::write(&src_stamp, &fingerprint)?;
    }

    if build_dir.exists() {
        fs::remove_dir_all(&build_dir)?;
    }
    fs::create_dir_all(&build_dir)?;
    let src = src_dir.to_str().context("non-UTF-8 build path")?;
    let mut make = Command::new("make");
    make.arg("-f").arg(src_dir.join("Makefile")).args([
        &format!("SOURCE_ROOT={src}"),
        "TOOLPREFIX=aarch64-linux-gnu-",
        "ARCH=arm",
        "SEL4_ARCH=aarch64",
        "PLAT=virt",
        "ARMV=armv8-a",
        "CPU=cortex-a53",
        "CIRCULAR_INCLUDES=true",
        "-j2",
        "kernel.elf",
    ]);
    if flavour == Flavour::Debug {
        make.arg("DEBUG=y");
    }
    let status = make
        .env("PYTHON", crate::setup::python())
        .current_dir(&build_dir)
        .status()
        .context("could not run make for the seL4 kernel")?;
    if !status.success() || !elf.is_file() {
        bail!("the seL4 kernel build failed (in {})", build_dir.display());
    }
    fs::write(&build_stamp, &fingerprint)?;
    println!(
        "kernel: built {} kernel {} in {:.1?}",
        flavour.name(),
        elf.display(),
        started.elapsed()
    );
    Ok(kernel)
}

/// Finds the seL4 source inside the `sel4-sys` package, fetching it with cargo.
fn sel4_source(ctx: &Ctx) -> Result<PathBuf> {
    let fetch = ctx.build.join("kernel/fetch");
    fs::create_dir_all(fetch.join("src"))?;
    // An empty `[workspace]` keeps this manifest out of the repository's workspace.
    let manifest = format!(
        "[package]\nname = \"sel4-kernel-source\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [lib]\npath = \"src/lib.rs\"\n\n[dependencies]\nsel4-sys = \"={SEL4_SYS_VERSION}\"\n\n[workspace]\n"
    );
    write_if_changed(&fetch.join("Cargo.toml"), manifest.as_bytes())?;
    write_if_changed(&fetch.join("src/lib.rs"), b"")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_path = fetch.join("Cargo.toml");
    let status = Command::new(&cargo)
        .args(["fetch", "--quiet", "--manifest-path"])
        .arg(&manifest_path)
        .status()
        .context("could not run cargo fetch")?;
    if !status.success() {
        bail!("cargo fetch of sel4-sys {SEL4_SYS_VERSION} failed");
    }
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest_path)
        .output()
        .context("could not run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["name"] == "sel4-sys" && p["version"] == SEL4_SYS_VERSION)
        })
        .context("cargo metadata does not list sel4-sys")?;
    let manifest = PathBuf::from(
        package["manifest_path"]
            .as_str()
            .context("no manifest_path")?,
    );
    let source = manifest
        .parent()
        .context("manifest has no parent")?
        .join("seL4");
    let version = fs::read_to_string(source.join("VERSION")).unwrap_or_default();
    if version.trim() != "5.0.0" {
        bail!(
            "{} is not seL4 5.0.0 (VERSION says {:?})",
            source.display(),
            version.trim()
        );
    }
    Ok(source)
}

/// Our files and where they land in the source tree.
const PLATFORM_FILES: &[(&str, &str)] = &[
    ("virt/include.mk", "include/plat/virt/plat/Makefile"),
    ("virt/machine.h", "include/plat/virt/plat/machine.h"),
    ("virt/devices.h", "include/plat/virt/plat/machine/devices.h"),
    (
        "virt/hardware.h",
        "include/plat/virt/plat/machine/hardware.h",
    ),
    (
        "virt/api_constants.h",
        "include/plat/virt/plat/api/constants.h",
    ),
    (
        "virt/api_constants.h",
        "libsel4/sel4_plat_include/virt/sel4/plat/api/constants.h",
    ),
    (
        "virt/mode_machine.h",
        "include/plat/virt/plat/64/plat_mode/machine.h",
    ),
    (
        "virt/mode_devices.h",
        "include/plat/virt/plat/64/plat_mode/machine/devices.h",
    ),
    (
        "virt/mode_hardware.h",
        "include/plat/virt/plat/64/plat_mode/machine/hardware.h",
    ),
    ("virt/src.mk", "src/plat/virt/Makefile"),
    ("virt/machine.c", "src/plat/virt/machine/machine.c"),
    ("virt/linker.lds", "src/plat/virt/linker.lds"),
];

/// Text edits to the copied seL4 source: (file, old, new). Each must apply once.
const EDITS: &[(&str, &str, &str)] = &[
    // Our platform joins the list of known ones.
    (
        "Makefile",
        "hikey bcm2837 tx1\n",
        "hikey bcm2837 tx1 virt\n",
    ),
    // `-marm` selects the AArch32 instruction set; aarch64 gcc rejects it.
    (
        "Makefile",
        "CFLAGS += -mtune=${CPU} -marm -march=${ARMV}",
        "CFLAGS += -mtune=${CPU} -march=${ARMV}",
    ),
    // gcc 12 rejects `CONST` (attribute const) on a void function.
    (
        "Makefile",
        "missing-declarations undef pointer-arith no-nonnull",
        "missing-declarations undef pointer-arith no-nonnull no-error=attributes",
    ),
    // Clashes with the definition in our autoconf.h.
    (
        "Makefile",
        "DEFINES += -DCONFIG_USER_STACK_TRACE_LENGTH=1\n",
        "",
    ),
    // The GICv2 driver is built for our platform too.
    (
        "src/arch/arm/machine/Makefile",
        "ifeq ($(PLAT), hikey)\n",
        "ifeq ($(PLAT), $(filter $(PLAT), hikey virt))\n",
    ),    // Cacheable user frames are inner shareable on our uniprocessor build
    // too (seL4 makes them non-shareable without SMP). The SMMU snoops the
    // CPU's caches as an inner-shareable observer (CR1, STE.S1CSH, CD.SH0,
    // leaf SH all say so); a non-shareable CPU mapping of the same memory
    // (the server's tables and queues, the clients' DMA pools) would leave
    // coherence between them outside the architecture's guarantees (Arm ARM
    // B2.7.1). Issue 13, item 4.
    (
        "src/arch/arm/64/kernel/vspace.c",
        "pte_new(\n                   nonexecutable,              /* unprivileged execute never */\n                   paddr,\n                   1,                          /* not global */\n                   1,                          /* access flag */\n                   SMP_TERNARY(3, 0),",
        "pte_new(\n                   nonexecutable,              /* unprivileged execute never */\n                   paddr,\n                   1,                          /* not global */\n                   1,                          /* access flag */\n                   3, /* inner shareable: the SMMU walks and DMAs inner shareable */",
    ),
    (
        "src/arch/arm/64/kernel/vspace.c",
        "pde_pde_large_new(\n                   nonexecutable,              /* unprivileged execute never */\n                   paddr,\n                   1,                          /* not global */\n                   1,                          /* access flag */\n                   SMP_TERNARY(3, 0),",
        "pde_pde_large_new(\n                   nonexecutable,              /* unprivileged execute never */\n                   paddr,\n                   1,                          /* not global */\n                   1,                          /* access flag */\n                   3, /* inner shareable: the SMMU walks and DMAs inner shareable */",
    ),
    (
        "src/arch/arm/64/kernel/vspace.c",
        "pude_pude_1g_new(\n                   nonexecutable,              /* unprivileged execute never */\n                   paddr,\n                   1,                          /* not global */\n                   1,                          /* access flag */\n                   SMP_TERNARY(3, 0),",
        "pude_pude_1g_new(\n                   nonexecutable,              /* unprivileged execute never */\n                   paddr,\n                   1,                          /* not global */\n                   1,                          /* access flag */\n                   3, /* inner shareable: the SMMU walks and DMAs inner shareable */",
    ),
];

fn apply_platform(ours: &Path, src: &Path) -> Result<()> {
    for (from, to) in PLATFORM_FILES {
        let to = src.join(to);
        fs::create_dir_all(to.parent().unwrap())?;
        fs::copy(ours.join(from), &to).with_context(|| format!("copying images/kernel/{from}"))?;
    }
    let mut autoconf = fs::read_to_string(ours.join("autoconf.h"))?;
    autoconf.push_str(&format!("#define VIRT_RAM_SIZE {RAM_SIZE:#x}ul\n"));
    fs::write(src.join("include/plat/virt/autoconf.h"), autoconf)?;

    for (file, old, new) in EDITS {
        let path = src.join(file);
        let text = fs::read_to_string(&path)?;
        if text.matches(old).count() != 1 {
            bail!("kernel source edit: {file} does not contain {old:?} exactly once");
        }
        fs::write(&path, text.replacen(old, new, 1))?;
    }
    Ok(())
}

/// A digest of everything the kernel build depends on.
fn fingerprint(upstream: &Path, ours: &Path) -> Result<String> {
    let mut hasher = DefaultHasher::new();
    RECIPE_VERSION.hash(&mut hasher);
    RAM_SIZE.hash(&mut hasher);
    upstream.hash(&mut hasher);
    format!("{PLATFORM_FILES:?}{EDITS:?}").hash(&mut hasher);
    let mut files = Vec::new();
    list_files(ours, &mut files)?;
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        fs::read(&file)?.hash(&mut hasher);
    }
    Ok(format!("{:016x}\n", hasher.finish()))
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
            // The registry copy is read-only; the build writes next to it.
            let mut perms = fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            fs::set_permissions(&target, perms)?;
        }
    }
    Ok(())
}

pub fn write_if_changed(path: &Path, contents: &[u8]) -> Result<()> {
    if fs::read(path).ok().as_deref() != Some(contents) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, contents)?;
    }
    Ok(())
}
