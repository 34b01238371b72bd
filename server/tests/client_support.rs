//! Shared setup of the client end-to-end tests: the real server core over
//! the software SMMU model, the request handler on top, and clients that
//! reach it through `iommu_client::InProcess`. (Included with `#[path]`.)
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use iommu_client::{InProcess, Iommu};
use iommu_server::handler::{FakeFrames, Handler, ReceivedCap};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use iommu_server::{Config, Smmu};
use smmu_model::{Features, Machine};

pub struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

pub type Core = Smmu<smmu_model::Smmu, smmu_model::PhysMem, NoDelay>;
pub type Server = Rc<RefCell<Handler<Core, FakeFrames>>>;
/// The handler as the in-process transport calls it.
pub type HandleFn = Box<dyn FnMut(u64, &[u8], &[ReceivedCap], &mut [u8]) -> usize>;
pub type Transport = InProcess<HandleFn, ReceivedCap>;
pub type Client = Iommu<Transport>;

pub const A: u64 = 0xA;
pub const B: u64 = 0xB;
pub const STRANGER: u64 = 0x5;
pub const SID_A: u32 = 8;
pub const SID_A2: u32 = 9;
pub const SID_B: u32 = 16;

pub const QUOTAS: Quotas = Quotas {
    domains: 3,
    mapped_bytes: 16 << 20,
    mappings: 32,
    pt_pages: 64,
    asids: 3,
    memory_regions: 4,
    memory_frames: 16,
};

pub static CLIENTS: [ClientPolicy; 2] = [
    ClientPolicy {
        name: "driver-a",
        badge: A,
        streams: &[
            StreamGrant::with_ssids(StreamId(SID_A), 3),
            StreamGrant::new(StreamId(SID_A2)),
        ],
        quotas: QUOTAS,
    },
    ClientPolicy {
        name: "driver-b",
        badge: B,
        streams: &[StreamGrant::new(StreamId(SID_B))],
        quotas: QUOTAS,
    },
];
pub static POLICY: Policy = Policy::new(&CLIENTS);

use iommu_protocol::StreamId;

/// QEMU 7.2's SMMU (no substreams), or one with `ssid_bits` of substreams.
pub fn server_with(ssid_bits: u8) -> (Machine, Server) {
    let features = if ssid_bits == 0 {
        Features::qemu_7_2()
    } else {
        Features::with_substreams(ssid_bits)
    };
    let config = Config {
        ssid_bits,
        ..Config::default()
    };
    server_on(features, config)
}

/// The handler on an SMMU with `features`, its core set up with `config`.
pub fn server_on(features: Features, config: Config) -> (Machine, Server) {
    let m = Machine::new(features);
    let smmu = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, config).expect("SMMU comes up");
    let h = Rc::new(RefCell::new(
        Handler::new(smmu, FakeFrames::new(), POLICY).expect("policy is valid"),
    ));
    h.borrow_mut().grant_everything();
    (m, h)
}

pub fn server() -> (Machine, Server) {
    server_with(0)
}

/// A transport for the client with `badge`, straight into the handler.
pub fn transport(s: &Server, badge: u64) -> Transport {
    let s = s.clone();
    let f: HandleFn = Box::new(move |b, req, caps, out| s.borrow_mut().handle(b, req, caps, out));
    InProcess::new(badge, f)
}

pub fn connect(s: &Server, badge: u64) -> Client {
    Iommu::connect(transport(s, badge)).expect("hello")
}

/// A client buffer in the model's RAM and a (fake) frame cap to it.
pub fn frame(m: &Machine, s: &Server, size: u64) -> (u64, ReceivedCap) {
    let paddr = m
        .mem
        .alloc_buffer(size as usize, size.min(0x20_0000) as usize)
        .expect("buffer");
    let cap = s.borrow_mut().resolver_mut().frame(paddr, size);
    (paddr, cap)
}

/// One request sent by hand (for what the client API does not expose),
/// through the same transport as a client.
pub fn raw_call(
    s: &Server,
    badge: u64,
    req: &iommu_protocol::Request,
    caps: &[ReceivedCap],
) -> iommu_protocol::Reply {
    use iommu_client::Transport as _;
    let mut buf = [0u8; iommu_protocol::MSG_MAX_BYTES];
    let n = iommu_protocol::encode(req, &mut buf).unwrap();
    let mut reply = [0u8; iommu_protocol::MSG_MAX_BYTES];
    let len = transport(s, badge)
        .call(&buf[..n], caps, &mut reply)
        .unwrap();
    iommu_protocol::decode_reply(&reply[..len]).unwrap()
}
