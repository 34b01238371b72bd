//! Picks the console: DebugPutChar on a debug kernel, else the PL011.
fn main() {
    // The kernel flavour, from the defines xtask passes to sel4-abi too
    // (unset, e.g. under a bare clippy: sel4-abi's default, a debug kernel).
    println!("cargo::rustc-check-cfg=cfg(sel4_debug_build)");
    println!("cargo:rerun-if-env-changed=SEL4_DEFINES");
    let debug = std::env::var("SEL4_DEFINES").map_or(true, |d| {
        d.split_whitespace().any(|w| w == "CONFIG_DEBUG_BUILD")
    });
    if debug {
        println!("cargo:rustc-cfg=sel4_debug_build");
    }
}
