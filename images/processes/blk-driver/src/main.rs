//! A block device driver process for QEMU's NVMe controller, and its
//! client: issue 15's driver that reads and writes a disk through the SMMU.
//!
//! One program, roles chosen by the process name:
//! - `blk-driver` (`blk` system) brings the controller up with its queues
//!   and every data buffer mapped through its own domain at the IOMMU
//!   server (`iommu_client::DmaDomain`: queues persistent, each request's
//!   buffer `map_single` with a direction and unmapped on completion), and
//!   serves block requests on its `blk` endpoint ([`proto`]).
//! - `blk-client` asks it to read and write and checks the bytes against
//!   the disk image's pattern ([`pattern`]) and the bytes around each read
//!   against a guard pattern; it holds the badge that may shut the driver
//!   down ([`proto::CONTROL_BADGE`]). `blk-stranger`, another client, is
//!   refused the control and test requests and every overflowing request.
//! - `doomed-driver` / `blk-watcher` (`blk-death` system): the driver dies
//!   by a fault with a read outstanding; the watcher outlives it.
//! - `blk-bench` (`bench-blk` system, `cargo xtask bench`): the driver
//!   times 4 KiB random reads with per-request mappings and with a
//!   premapped buffer pool ([`driver::bench`]).
//!
//! Each check prints `check <role>/<name>: ok|FAILED (...)`; the image
//! tests (tools/xtask/src/imagetests/blk.rs) require every expected line
//! and judge QEMU's SMMU trace and the disk image file too.
#![no_std]
#![no_main]

#[path = "../../edu-driver/src/checks.rs"]
mod checks;
mod client;
mod driver;
mod nvme;
mod pattern;
mod proto;

use procrt::{println, StartInfo};

procrt::main!(main);

/// CNTFRQ of QEMU's cortex-a53 (DESIGN.md section 3): 62.5 MHz.
pub const COUNTER_HZ: u64 = 62_500_000;
pub const PAGE: u64 = 4096;

fn main(info: &'static StartInfo) -> bool {
    match info.name.as_str() {
        "blk-driver" => driver::run(info, "blk-driver"),
        "doomed-driver" => driver::run(info, "doomed-driver"),
        "blk-client" => client::run(info),
        "blk-stranger" => client::stranger(info),
        "blk-watcher" => client::watcher(info),
        "blk-bench" => driver::bench::run(info),
        other => {
            println!("blk-driver: no role named {other}");
            false
        }
    }
}
