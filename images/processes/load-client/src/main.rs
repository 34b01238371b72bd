//! IOMMU clients for the robustness systems (issue 7). One program, roles
//! chosen by the process name:
//!
//! - `load-*` (`load` system): thousands of mixed requests, refused ones
//!   included, each checked against a log of what this client should hold;
//!   at the end the server's view (stats, and map probes that must say
//!   `Overlap` exactly where the log has a mapping) must equal the log.
//! - `stormer` / `victim` (`storm` system): one device DMAs in a loop to
//!   unmapped IOVAs (QEMU writes one event per 4 bytes, the event queue
//!   overflows) while another client's map/unmap requests must still
//!   complete; the victim measures their latency.
//! - `hog` / `heir` (`death` system): the hog takes all of the server's table
//!   memory and dies; the root task retires it at the server; the heir gets
//!   the memory.
//!
//! Each check prints `check <role>/<name>: ok|FAILED (...)`, as the
//! edu-driver's do; the image tests (tools/xtask/src/imagetests/robust.rs)
//! require every expected line.
#![no_std]
#![no_main]

#[path = "../../edu-driver/src/checks.rs"]
mod checks;
mod death;
#[path = "../../edu-driver/src/edu.rs"]
#[allow(dead_code)]
mod edu;
mod load;
#[path = "../../edu-driver/src/pci.rs"]
mod pci;
mod storm;

use iommu_client::{Iommu, Transport, TransportError, MSG_MAX_BYTES};
use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CPtr, Notification};
use sel4_iommu::platform::CounterDelay;
use sel4_iommu::transport::Sel4Transport;

procrt::main!(main);

fn main(info: &'static StartInfo) -> bool {
    let name = info.name.as_str();
    match name {
        _ if name.starts_with("load-") => load::run(info),
        "stormer" => storm::stormer(info),
        "victim" => storm::victim(info),
        "hog" => death::hog(info),
        "heir" => death::heir(info),
        other => {
            println!("load-client: no role named {other}");
            false
        }
    }
}

/// A transport that counts what it carried: every call is one request the
/// server sees, and a reply whose first byte is 6 (`Reply::Err`, protocol
/// wire format) is one the server refused. The image tests compare these
/// counts with the server's own.
pub struct Counting {
    inner: Sel4Transport,
    pub calls: u64,
    pub refused: u64,
}

impl Transport for Counting {
    type Cap = CPtr;
    fn call(
        &mut self,
        request: &[u8],
        caps: &[CPtr],
        reply: &mut [u8; MSG_MAX_BYTES],
    ) -> Result<usize, TransportError> {
        let n = self.inner.call(request, caps, reply)?;
        self.calls += 1;
        if n > 0 && reply[0] == 6 {
            self.refused += 1;
        }
        Ok(n)
    }
}

pub type Client = Iommu<Counting>;

pub fn connect(info: &StartInfo) -> Option<Client> {
    let endpoint = sel4_iommu::server_endpoint(info)?;
    let transport = Counting {
        inner: Sel4Transport::new(CPtr(endpoint.cptr)),
        calls: 0,
        refused: 0,
    };
    match Iommu::connect(transport) {
        Ok(client) => Some(client),
        Err(e) => {
            println!("{}: cannot connect: {e:?}", info.name.as_str());
            None
        }
    }
}

/// CNTFRQ of QEMU's cortex-a53 (DESIGN.md section 3): 62.5 MHz.
pub const COUNTER_HZ: u64 = 62_500_000;

pub fn now() -> u64 {
    CounterDelay::now()
}

/// Counter ticks to microseconds.
pub fn micros(ticks: u64) -> u64 {
    ticks * 1_000_000 / COUNTER_HZ
}

pub fn signal(info: &StartInfo, name: &str) {
    if let Some(cap) = info.cap(name) {
        syscalls::signal(Notification(CPtr(cap.cptr)));
    }
}

pub fn wait(info: &StartInfo, name: &str) {
    if let Some(cap) = info.cap(name) {
        syscalls::wait(Notification(CPtr(cap.cptr)));
    }
}

/// Whether `name` was signalled (does not block).
pub fn poll(info: &StartInfo, name: &str) -> bool {
    info.cap(name)
        .is_some_and(|cap| syscalls::poll(Notification(CPtr(cap.cptr))).0 != 0)
}

/// The frame cap of page `i` of this process's DMA pool.
pub fn frame(info: &StartInfo, i: usize) -> CPtr {
    CPtr(info.dma.first_frame_cap + i as u64)
}

/// xorshift64*: deterministic, so a failing run can be replayed exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
