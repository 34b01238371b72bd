//! Brings in the client policy that `cargo xtask image` generated from the
//! system description (`IOMMU_POLICY_RS`). Built any other way (clippy, a
//! plain `cargo build`), the server gets an empty policy: it serves no one.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=IOMMU_POLICY_RS");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let policy = match std::env::var_os("IOMMU_POLICY_RS") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        }
        None => {
            "pub static BANDS: [Band; 1] = [Band { endpoint: \"iommu\", thread: \"main\", policy: Policy::new(&[]) }];\npub const SUPERVISOR_BADGE: u64 = 0;\n"
                .to_string()
        }
    };
    std::fs::write(out.join("policy.rs"), policy).expect("writing policy.rs");
}
