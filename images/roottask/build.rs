//! The system description comes from xtask as a generated Rust file.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_system)");
    println!("cargo:rerun-if-env-changed=ROOTTASK_SYSTEM_RS");
    if let Ok(path) = std::env::var("ROOTTASK_SYSTEM_RS") {
        println!("cargo:rerun-if-changed={path}");
        println!("cargo:rustc-cfg=has_system");
    }
}
