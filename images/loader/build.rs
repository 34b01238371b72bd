//! Links the loader at its load address and embeds the ELF files xtask names.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rustc-link-arg=-T{}", dir.join("link.ld").display());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo::rustc-check-cfg=cfg(has_images)");
    let mut found = 0;
    for var in ["LOADER_KERNEL_ELF", "LOADER_ROOTTASK_ELF"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Ok(path) = std::env::var(var) {
            println!("cargo:rerun-if-changed={path}");
            found += 1;
        }
    }
    // Without both (clippy, a bare `cargo build`) the loader embeds nothing
    // and says so when booted.
    if found == 2 {
        println!("cargo:rustc-cfg=has_images");
    }
}
