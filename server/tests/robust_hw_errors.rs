//! Hardware errors, seen through the request handler (what a client gets).
//!
//! The core's own behaviour is tested in `core_cmdq.rs` (illegal command
//! skipped, full queue and CMD_SYNC timeouts, GERROR acknowledged) and
//! `model_events.rs` (event-queue overflow drained and acknowledged). Here:
//! a client request that meets a command queue that stopped answering gets
//! `HardwareError` after a bounded wait and the handler's records stay as
//! they were, and requests work again once the queue runs; a command the
//! SMMU rejects inside an unmap is reported, skipped, and the unmap still
//! completes (falling back to TLBI by ASID); an event-queue overflow during
//! a fault storm is counted by the handler, the storming client's queue is
//! bounded with the rest counted as dropped, another client's fault still
//! arrives, and routing works after the overflow.

#[path = "core_support.rs"]
mod core_support;

use std::cell::RefCell;
use std::rc::Rc;

use core_support::{op, smmu_with, test_config, Consumer, CountDelay, FakeSmmu, HostAlloc};
use iommu_client::{Error, ErrorCode, InProcess, Iommu, Perms, Ssid, StreamId};
use iommu_server::handler::{FakeFrames, Handler, ReceivedCap, FAULT_QUEUE};
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
use iommu_server::regs;
use iommu_server::{Config, Smmu};

const A: u64 = 0xA;
const B: u64 = 0xB;
const SID_A: u32 = 8;
const SID_A2: u32 = 9;
const SID_B: u32 = 16;

static CLIENTS: [ClientPolicy; 2] = [
    ClientPolicy {
        name: "a",
        badge: A,
        streams: &[
            StreamGrant::new(StreamId(SID_A)),
            StreamGrant::new(StreamId(SID_A2)),
        ],
        quotas: Quotas::DEFAULT,
    },
    ClientPolicy {
        name: "b",
        badge: B,
        streams: &[StreamGrant::new(StreamId(SID_B))],
        quotas: Quotas::DEFAULT,
    },
];
static POLICY: Policy = Policy::new(&CLIENTS);

type FakeCore = Smmu<FakeSmmu, HostAlloc, CountDelay>;
type HandleFn = Box<dyn FnMut(u64, &[u8], &[ReceivedCap], &mut [u8]) -> usize>;
type Client = Iommu<InProcess<HandleFn, ReceivedCap>>;

fn client<C: iommu_server::handler::Core + 'static>(
    h: &Rc<RefCell<Handler<C, FakeFrames>>>,
    badge: u64,
) -> Client {
    let h = h.clone();
    let f: HandleFn = Box::new(move |b, req, caps, out| h.borrow_mut().handle(b, req, caps, out));
    Iommu::connect(InProcess::new(badge, f)).expect("hello")
}

/// The handler over the fake register file (which plays the command-queue
/// consumer and can stall or reject commands), with A holding a domain, a
/// mapping and an attached stream.
type FakeServer = Rc<RefCell<Handler<FakeCore, FakeFrames>>>;

fn fake_server() -> (
    FakeSmmu,
    HostAlloc,
    FakeServer,
    Client,
    iommu_protocol::DomainId,
) {
    let fake = FakeSmmu::qemu();
    let alloc = HostAlloc::new();
    let smmu = smmu_with(&fake, &alloc, test_config()).unwrap();
    let h = Rc::new(RefCell::new(
        Handler::new(smmu, FakeFrames::new(), POLICY).unwrap(),
    ));
    h.borrow_mut().grant_everything();
    let mut a = client(&h, A);
    let d = a.alloc_domain().unwrap();
    let cap = h.borrow_mut().resolver_mut().frame(0x8000_0000, 0x4000);
    let mem = a.register_memory(&[cap]).unwrap();
    a.map(d, 0x10_0000, mem.handle, 0, 0x4000, Perms::RW)
        .unwrap();
    a.attach(StreamId(SID_A), Ssid(0), d).unwrap();
    (fake, alloc, h, a, d)
}

#[test]
fn stuck_command_queue_is_a_hardware_error_and_requests_recover() {
    let (fake, alloc, h, mut a, d) = fake_server();
    // A domain that has had a stream (so an ASID, which its free must
    // invalidate).
    let d2 = a.alloc_domain().unwrap();
    a.attach(StreamId(SID_A2), Ssid(0), d2).unwrap();
    a.detach(StreamId(SID_A2), Ssid(0)).unwrap();
    let stats = a.stats().unwrap();
    let live = alloc.live_bytes();
    fake.set_consumer(Consumer::Stuck);
    let hw = Err(Error::Iommu(ErrorCode::HardwareError));
    // Every request that needs the command queue: bounded, then refused.
    assert_eq!(a.unmap(d, 0x10_0000, 0x1000), hw);
    // Attach of a new stream, and a detach: each stops at its first
    // CMD_SYNC. The core's books follow memory (the new STE never got past
    // its unused qwords: not attached; the old STE reads abort: detached),
    // and the handler records what the core holds.
    assert_eq!(a.attach(StreamId(SID_A2), Ssid(0), d), hw);
    assert_eq!(a.detach(StreamId(SID_A), Ssid(0)), hw);
    assert_eq!(a.free_domain(d2), hw);
    // The handler's records are as before the refused requests.
    let now = a.stats().unwrap();
    assert_eq!(
        (now.mappings, now.mapped_bytes, now.domains),
        (stats.mappings, stats.mapped_bytes, stats.domains)
    );
    // A request that needs no command (a map: no invalidation) still works
    // meanwhile. (MemoryHandle(0) is A's first registration.)
    assert_eq!(
        a.map(
            d,
            0x20_0000,
            iommu_protocol::MemoryHandle(0),
            0,
            0x1000,
            Perms::RW
        ),
        Ok(())
    );
    // The queue runs again (the SMMU consumed what was stuck): requests
    // complete and the records follow.
    fake.set_consumer(Consumer::Immediate);
    let _ = h.borrow_mut().core_mut().issue_commands(&[]);
    // (The page whose unmap timed out stays recorded as mapped, and its
    // memory in use: its PTE is gone but whether the TLBI reached the SMMU
    // is unknown, so the memory must not be handed back. Freeing the domain
    // below clears it.)
    assert_eq!(a.unmap(d, 0x10_1000, 0x1000), Ok(()));
    assert_eq!(a.free_domain(d2), Ok(()));
    let gone = Err(Error::Iommu(ErrorCode::NoSuchStream));
    assert_eq!(a.detach(StreamId(SID_A), Ssid(0)), gone);
    assert_eq!(a.detach(StreamId(SID_A2), Ssid(0)), gone);
    // One page unmapped, one mapped while the queue was stuck.
    assert_eq!(a.stats().unwrap().mapped_bytes, stats.mapped_bytes);
    assert_eq!(a.free_domain(d), Ok(()));
    assert!(alloc.live_bytes() < live);
    assert_eq!(alloc.bad_frees(), 0);
}

#[test]
fn rejected_invalidation_is_reported_skipped_and_the_unmap_completes() {
    let (fake, _alloc, h, mut a, d) = fake_server();
    // The SMMU rejects range TLBI_NH_VA (CERROR_ILL): the core skips it,
    // acknowledges GERROR and invalidates the whole ASID instead.
    fake.0.borrow_mut().illegal.push(op::TLBI_NH_VA);
    fake.clear_log();
    assert_eq!(a.unmap(d, 0x10_0000, 0x2000), Ok(()));
    let ops = fake.opcodes();
    assert!(
        ops.ends_with(&[op::CMD_SYNC, op::CMD_SYNC, op::TLBI_NH_ASID, op::CMD_SYNC]),
        "{ops:x?}"
    );
    assert_eq!(h.borrow().core().stats().cmdq_errors, 1);
    assert_eq!(
        fake.reg(regs::GERROR) & 1,
        fake.reg(regs::GERRORN) & 1,
        "GERROR.CMDQ_ERR left unacknowledged"
    );
    assert_eq!(h.borrow_mut().core_mut().handle_gerror().active, 0);
    // The queue keeps working for everyone.
    fake.0.borrow_mut().illegal.clear();
    assert_eq!(a.unmap(d, 0x10_2000, 0x1000), Ok(()));
    assert_eq!(a.stats().unwrap().mapped_bytes, 0x1000);
}

#[test]
fn event_queue_overflow_is_counted_and_routing_recovers() {
    let m = smmu_model::Machine::new(smmu_model::Features::qemu_7_2());
    let config = Config {
        evtq_log2: 3,
        ..Config::default()
    };
    struct NoDelay;
    impl embedded_hal::delay::DelayNs for NoDelay {
        fn delay_ns(&mut self, _ns: u32) {}
    }
    let smmu = Smmu::new(m.smmu.clone(), m.mem.clone(), NoDelay, config).unwrap();
    let h = Rc::new(RefCell::new(
        Handler::new(smmu, FakeFrames::new(), POLICY).unwrap(),
    ));
    h.borrow_mut().grant_everything();
    let mut a = client(&h, A);
    let mut b = client(&h, B);
    let da = a.alloc_domain().unwrap();
    a.attach(StreamId(SID_A), Ssid(0), da).unwrap();
    let db = b.alloc_domain().unwrap();
    b.attach(StreamId(SID_B), Ssid(0), db).unwrap();

    // 20 faults on 20 pages into an 8-entry queue before anyone drains it.
    for i in 0..20u64 {
        let _ = m
            .smmu
            .dma_write(SID_A, None, 0x100_0000 + (i << 12), &[0; 4]);
    }
    h.borrow_mut().route_faults();
    assert_eq!(h.borrow().event_overflows(), 1, "overflow not counted");
    assert_eq!(h.borrow().core().stats().event_overflows, 1);

    // A storm drained as it comes, on more pages than A's queue holds
    // (each of A's two streams gets half of it); B faults in the middle.
    let share = FAULT_QUEUE / 2;
    for i in 0..(2 * share as u64) {
        let _ = m
            .smmu
            .dma_write(SID_A, None, 0x200_0000 + (i << 12), &[0; 4]);
        if i == share as u64 {
            let _ = m.smmu.dma_write(SID_B, None, 0x30_0000, &[0; 4]);
        }
        if i % 4 == 3 {
            h.borrow_mut().route_faults();
        }
    }
    h.borrow_mut().route_faults();
    let sa = a.stats().unwrap();
    assert_eq!(
        sa.faults_pending as usize, share,
        "A's queue is not bounded"
    );
    assert!(sa.faults_dropped > 0, "A's excess not counted");
    let fb = b.faults().unwrap();
    assert_eq!(fb.records.len(), 1, "B's fault was crowded out: {fb:?}");
    assert_eq!(fb.records[0].iova, 0x30_0000);
    // A reads its records (bounded) and the dropped count, once.
    let mut got = 0;
    let mut dropped = 0;
    loop {
        let f = a.faults().unwrap();
        got += f.records.len();
        dropped += f.dropped;
        if !f.more {
            break;
        }
    }
    assert_eq!(got, share);
    assert_eq!(dropped, sa.faults_dropped);
    assert_eq!(a.stats().unwrap().faults_dropped, 0);
    // After all that, a new fault is routed normally; no second overflow.
    let _ = m.smmu.dma_write(SID_A, None, 0x900_0000, &[0; 4]);
    h.borrow_mut().route_faults();
    let f = a.faults().unwrap();
    assert_eq!(f.records.len(), 1);
    assert_eq!(f.records[0].iova, 0x900_0000);
    assert_eq!(h.borrow().event_overflows(), 1);
    assert!(m.smmu.violations().is_empty());
}

#[test]
fn a_retirement_that_times_out_still_refuses_the_client() {
    let (fake, _alloc, h, mut a, _d) = fake_server();
    fake.set_consumer(Consumer::Stuck);
    // Detaching A's stream needs a CMD_SYNC that never completes.
    assert_eq!(
        h.borrow_mut().retire_client(A),
        Err(ErrorCode::HardwareError)
    );
    // Whatever of A still runs is refused at once, before and after the
    // queue runs again, and retiring again takes back the rest.
    assert_eq!(a.stats(), Err(Error::Iommu(ErrorCode::NotPermitted)));
    fake.set_consumer(Consumer::Immediate);
    let _ = h.borrow_mut().core_mut().issue_commands(&[]);
    let rest = h.borrow_mut().retire_client(A).unwrap();
    assert_eq!(rest.domains, 1);
    assert_eq!(a.stats(), Err(Error::Iommu(ErrorCode::NotPermitted)));
}
