//! Generates the configuration-dependent parts of the bindings from the seL4
//! kernel source (see `build/gen.rs`).
//!
//! Environment:
//! - `SEL4_SOURCE`: the kernel source tree (default: the crates.io package
//!   `sel4-sys` 0.0.28's `seL4/` under `$CARGO_HOME/registry/src`);
//! - `SEL4_AUTOCONF`: the `autoconf.h` the kernel is built with (default: a
//!   built-in copy of DESIGN.md's `virt` debug configuration);
//! - `SEL4_DEFINES`: extra `NAME[=VALUE]` defines the kernel build passes on the
//!   command line, e.g. `CONFIG_DEBUG_BUILD` for `DEBUG=y` (applied before
//!   `SEL4_AUTOCONF`).

#[path = "build/gen.rs"]
mod gen;

use std::path::PathBuf;

fn main() {
    for v in ["SEL4_SOURCE", "SEL4_AUTOCONF", "SEL4_DEFINES", "CARGO_HOME"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/gen.rs");

    let src =
        gen::Sources::locate(std::env::var("SEL4_SOURCE").ok()).unwrap_or_else(|e| panic!("{e}"));
    for p in src.inputs() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let autoconf = std::env::var_os("SEL4_AUTOCONF")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(p) = &autoconf {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let defines = std::env::var("SEL4_DEFINES").ok();
    let cfg = gen::resolve_config(autoconf.as_deref(), defines.as_deref())
        .unwrap_or_else(|e| panic!("{e}"));

    if cfg.int("CONFIG_WORD_SIZE") != Some(64) || !cfg.is_defined("CONFIG_ARCH_AARCH64") {
        panic!("sel4-abi supports AArch64 kernels only (CONFIG_ARCH_AARCH64, CONFIG_WORD_SIZE 64)");
    }

    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let generated = gen::generate(&src, &cfg);
    for (name, text) in &generated.files {
        std::fs::write(out.join(name), text).unwrap();
    }
    std::fs::write(out.join("sel4_source.txt"), src.root.display().to_string()).unwrap();

    // Configuration switches the hand-written code needs.
    for (cfg_name, define) in [
        ("sel4_debug_build", "CONFIG_DEBUG_BUILD"),
        ("sel4_printing", "CONFIG_PRINTING"),
        ("sel4_hardware_debug_api", "CONFIG_HARDWARE_DEBUG_API"),
        (
            "sel4_danger_code_injection",
            "CONFIG_DANGEROUS_CODE_INJECTION",
        ),
    ] {
        println!("cargo:rustc-check-cfg=cfg({cfg_name})");
        if cfg.is_defined(define) {
            println!("cargo:rustc-cfg={cfg_name}");
        }
    }
}
