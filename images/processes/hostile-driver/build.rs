//! The kernel flavour, as procrt's build script finds it: the debug-only
//! system calls (`seL4_DebugCapIdentify`) exist on a debug kernel only.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(sel4_debug_build)");
    println!("cargo:rerun-if-env-changed=SEL4_DEFINES");
    let debug = std::env::var("SEL4_DEFINES").map_or(true, |d| {
        d.split_whitespace().any(|w| w == "CONFIG_DEBUG_BUILD")
    });
    if debug {
        println!("cargo:rustc-cfg=sel4_debug_build");
    }
}
