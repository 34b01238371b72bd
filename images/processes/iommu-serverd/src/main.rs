//! The IOMMU server process.
//!
//! It alone maps the SMMUv3's registers. It initialises the SMMU with the
//! server core (every stream starts in abort, so a device no client attached
//! cannot DMA at all), then serves one endpoint: requests from driver
//! processes, identified by the badge the root task minted into each
//! driver's endpoint cap, and, through a notification bound to its TCB, the
//! SMMU's event-queue and global-error interrupts.
#![no_std]
#![no_main]

mod policy;

use iommu_protocol::{pack_words, unpack_words, ErrorCode, MsgBuf, MSG_MAX_BYTES, MSG_MAX_WORDS};
use iommu_server::dma_pool::DmaPool;
use iommu_server::handler::{Handler, ReceivedCap};
use iommu_server::regs::gerror;
use iommu_server::{Config, Smmu};
use procrt::procinfo::supervisor::{self, Retired};
use procrt::{println, StartInfo};
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::{ipc_buffer, syscalls, CPtr, IRQHandler, MessageInfo, Notification, TCB};
use sel4_iommu::message;
use sel4_iommu::platform::{CounterDelay, DeviceRegisters, ReceivedFrames};

procrt::main!(main);

/// Badges of the interrupt notification carry this bit, the top one of the
/// 28 a seL4 5.0.0 badge has (seL4_CapData's Badge field); the dma-demo
/// client badges stay below it, so one receive tells the two apart.
const IRQ_BADGE: u64 = 1 << 27;

/// DMA pool pages the bitmap can manage (64 per word).
const POOL_WORDS: usize = 64;
/// Receive slots for frame caps (64 per word).
const SLOT_WORDS: usize = 4;

type Core = Smmu<DeviceRegisters, DmaPool<POOL_WORDS>, CounterDelay>;
type Server = Handler<Core, ReceivedFrames<SLOT_WORDS>>;

/// Clients the counters below keep apart (the handler serves at most 8).
const MAX_CLIENTS: usize = 8;

/// What the request loop saw, reported when a client is retired (and then
/// checked by the image tests against the clients' own logs and QEMU's
/// trace).
#[derive(Default)]
struct Counters {
    /// Requests and refusals (replies that are an error) per client, by
    /// position in the policy.
    requests: [u64; MAX_CLIENTS],
    refusals: [u64; MAX_CLIENTS],
    /// Messages from badges that are no client.
    strangers: u64,
    /// Interrupt wake-ups.
    irqs: u64,
    /// Global errors seen active, by GERROR bit.
    gerrors: [u64; 9],
}

impl Counters {
    fn total(&self) -> (u64, u64) {
        (self.requests.iter().sum(), self.refusals.iter().sum())
    }
}

fn main(info: &'static StartInfo) -> bool {
    let Some(registers) = info.device("smmu") else {
        println!("iommu-server: the system gave me no device region named smmu");
        return false;
    };
    if info.dma.size == 0 {
        println!("iommu-server: the system gave me no DMA pool for SMMU tables");
        return false;
    }
    // SAFETY: the root task mapped the SMMU's 128 KiB register file at this
    // address for this process only.
    let mmio = unsafe { DeviceRegisters::new(registers.vaddr as usize) };
    // SAFETY: the DMA pool is mapped at dma.vaddr, physically contiguous from
    // dma.paddr, and given to this process alone.
    let pool = unsafe {
        DmaPool::<POOL_WORDS>::new(
            info.dma.vaddr as usize,
            info.dma.paddr,
            info.dma.size as usize,
        )
    };
    let smmu = match Smmu::new(mmio, pool, CounterDelay::new(), Config::default()) {
        Ok(smmu) => smmu,
        Err(e) => {
            println!("iommu-server: SMMU initialisation failed: {e:?}");
            return false;
        }
    };
    println!(
        "iommu-server: SMMUv3 at {:#x} enabled: {:?}",
        registers.paddr,
        smmu.features()
    );

    let frames = ReceivedFrames::new(
        CPtr(procrt::procinfo::slot::CNODE),
        info.free_first,
        info.free_count,
    );
    let mut server: Server = match Handler::new(smmu, frames, policy::POLICY) {
        Ok(server) => server,
        Err(e) => {
            println!("iommu-server: unusable policy: {e:?}");
            return false;
        }
    };

    let Some(endpoint) = info.cap("iommu") else {
        println!("iommu-server: the system gave me no endpoint named iommu");
        return false;
    };
    if let Some(irq_notification) = info.cap("iommu-irq") {
        let tcb = TCB(CPtr(procrt::procinfo::slot::TCB));
        if let Err(e) = tcb.bind_notification(CPtr(irq_notification.cptr)) {
            println!("iommu-server: cannot bind the interrupt notification: {e:?}");
            return false;
        }
    }
    // Interrupts already pending from start-up are taken on the first pass.
    for irq in info.irqs() {
        let _ = IRQHandler(CPtr(irq.cptr)).ack();
    }
    println!(
        "iommu-server: serving ({} bytes of server state)",
        core::mem::size_of::<Server>()
    );
    // The image tests compare this with the pages in use once every
    // client has been retired: nothing may leak.
    println!(
        "iommu-server: table memory at start: {} pages",
        server.core().allocator().pages_in_use()
    );
    if policy::SUPERVISOR_BADGE != 0 {
        println!(
            "iommu-server: the root task supervises clients (badge {:#x})",
            policy::SUPERVISOR_BADGE
        );
    }
    serve(&mut server, info, CPtr(endpoint.cptr))
}

/// The request loop. Returns only if the kernel gives it no IPC buffer.
fn serve(server: &mut Server, info: &'static StartInfo, endpoint: CPtr) -> bool {
    let mut words = [0u64; MSG_MAX_WORDS];
    let mut request: MsgBuf = [0; MSG_MAX_BYTES];
    let mut reply: MsgBuf = [0; MSG_MAX_BYTES];
    // The reply owed to the last caller, sent with the next receive.
    let mut pending: Option<(MessageInfo, [u64; MSG_REGISTERS])> = None;
    let mut counters = Counters::default();
    loop {
        let Some(buffer) = ipc_buffer() else {
            return false;
        };
        let receive_slot = server.resolver().free_slot();
        match receive_slot {
            Some(slot) => {
                let (cnode, index, depth) = server.resolver().receive_path(slot);
                buffer.set_receive_path(cnode, index, depth);
            }
            // No slot left: a cap sent now is dropped by the kernel and the
            // request is refused as carrying none.
            None => buffer.set_receive_path(CPtr(0), 0, 0),
        }
        let mut registers = [0u64; MSG_REGISTERS];
        let (tag, badge) = match pending.take() {
            Some((tag, out)) => {
                registers = out;
                syscalls::reply_recv_with_mrs(endpoint, tag, &mut registers)
            }
            None => syscalls::recv_with_mrs(endpoint, &mut registers),
        };
        if badge.0 & IRQ_BADGE != 0 {
            counters.irqs += 1;
            service_interrupts(server, info, badge.0, &mut counters);
            continue;
        }
        if policy::SUPERVISOR_BADGE != 0 && badge.0 == policy::SUPERVISOR_BADGE {
            // A cap sent along would sit in the receive slot, which the
            // next receive reuses: nothing to release.
            pending = Some(supervise(server, tag.label(), &registers, &counters));
            continue;
        }

        let Some(buffer) = ipc_buffer() else {
            return false;
        };
        let n = message::load(tag.length(), &registers, buffer, &mut words);
        let length = unpack_words(&words[..n], &mut request).unwrap_or(0);
        // A cap arrived only if the sender sent one and the kernel did not
        // unwrap it into a badge (that happens only for caps to our own
        // endpoint, which are not frames).
        let mut caps = [ReceivedCap(0)];
        let received = match receive_slot {
            Some(slot) if tag.extra_caps() > 0 && tag.caps_unwrapped() & 1 == 0 => {
                caps[0] = server.resolver_mut().take(slot);
                1
            }
            _ => 0,
        };
        let reply_length =
            server.handle(badge.0, &request[..length], &caps[..received], &mut reply);
        match policy::POLICY.client(badge.0) {
            Some((i, _)) if i < MAX_CLIENTS => {
                counters.requests[i] += 1;
                // Reply::Err is variant 6 (protocol wire format).
                if reply.first() == Some(&6) {
                    counters.refusals[i] += 1;
                }
            }
            _ => counters.strangers += 1,
        }
        let reply_words = pack_words(&reply[..reply_length], &mut words).unwrap_or(0);
        let mut out = [0u64; MSG_REGISTERS];
        message::store(&words[..reply_words], &mut out, buffer);
        pending = Some((MessageInfo::new(0, 0, 0, reply_words as u64), out));
    }
}

/// A message from the root task, the supervisor: `retire` a client that is
/// gone. Returns the reply. Prints the client's and the server's counters
/// first (the image tests compare them with the clients' logs).
fn supervise(
    server: &mut Server,
    label: u64,
    registers: &[u64; MSG_REGISTERS],
    counters: &Counters,
) -> (MessageInfo, [u64; MSG_REGISTERS]) {
    let refuse = |e: ErrorCode| {
        let mut out = [0u64; MSG_REGISTERS];
        out[0] = e as u64;
        (MessageInfo::new(supervisor::REFUSED, 0, 0, 1), out)
    };
    if label != supervisor::RETIRE {
        return refuse(ErrorCode::Malformed);
    }
    let badge = registers[0];
    let Some((i, client)) = policy::POLICY.client(badge) else {
        return refuse(ErrorCode::NotPermitted);
    };
    let (requests, refusals) = counters
        .requests
        .get(i)
        .zip(counters.refusals.get(i))
        .map_or((0, 0), |(r, f)| (*r, *f));
    println!(
        "iommu-server: retiring {} (badge {badge:#x}): it made requests {requests} refused {refusals}",
        client.name
    );
    match server.retire_client(badge) {
        Ok(r) => {
            report(server, counters);
            let out = Retired {
                streams: r.streams as u16,
                domains: r.domains as u16,
                memory_regions: r.memory_regions as u16,
                faults: r.faults as u16,
                pt_pages: r.pt_pages,
                mappings: r.mappings,
                frames: u64::from(r.frames),
                mapped_bytes: r.mapped_bytes,
            }
            .to_mrs();
            (MessageInfo::new(0, 0, 0, 4), out)
        }
        Err(e) => {
            println!("iommu-server: retiring {} failed: {e:?}", client.name);
            refuse(e)
        }
    }
}

/// The server's totals, in one line the image tests parse.
fn report(server: &Server, counters: &Counters) {
    let stats = server.core().stats();
    let (requests, refusals) = counters.total();
    println!(
        "iommu-server: totals: requests {requests} refused {refusals} strangers {} commands {} syncs {} tlbis {} cfgis {} events {} overflows {} evtq-aborts {} gerrors {} irqs {} unrouted {} pool-pages {}",
        counters.strangers,
        stats.total_commands(),
        stats.syncs,
        stats.tlbis,
        stats.cfgis,
        stats.events,
        server.event_overflows(),
        counters.gerrors[2],
        counters.gerrors.iter().sum::<u64>(),
        counters.irqs,
        server.unrouted_faults(),
        server.core().allocator().pages_in_use(),
    );
}

/// Event-queue and global-error interrupts: drain the SMMU's records to the
/// clients that own the faulting streams, wake those clients, re-arm the IRQs.
///
/// A fault storm fills the event queue faster than it is drained: QEMU then
/// drops events and raises GERROR.EVENTQ_ABT_ERR (a real SMMU may instead
/// toggle EVENTQ_PROD.OVFLG, which `route_faults` counts). Both are
/// acknowledged and counted here; the first of each kind is printed, the
/// rest only counted, so a storm cannot flood the console either.
fn service_interrupts(
    server: &mut Server,
    info: &'static StartInfo,
    badge: u64,
    counters: &mut Counters,
) {
    let errors = server.core_mut().handle_gerror();
    for bit in 0..9 {
        if errors.active & (1 << bit) != 0 {
            counters.gerrors[bit] += 1;
            if counters.gerrors[bit] == 1 {
                let what = match 1u32 << bit {
                    gerror::CMDQ_ERR => "command queue error (skipped)",
                    gerror::EVENTQ_ABT_ERR => "event queue full, events lost",
                    gerror::SFM_ERR => "service failure mode",
                    _ => "global error",
                };
                println!(
                    "iommu-server: GERROR bit {bit}: {what}, acknowledged ({errors:?}); further ones are counted"
                );
            }
        }
    }
    for client in server.route_faults() {
        if let Some(cap) = notification_of(info, client) {
            syscalls::signal(Notification(CPtr(cap)));
        }
    }
    for irq in info.irqs() {
        if irq.badge & badge & !IRQ_BADGE != 0 {
            let _ = IRQHandler(CPtr(irq.cptr)).ack();
        }
    }
}

/// The notification that wakes the client with `badge`.
fn notification_of(info: &StartInfo, badge: u64) -> Option<u64> {
    let mut name = [0u8; 32];
    info.cap(sel4_iommu::fault_notification_name(badge, &mut name))
        .map(|cap| cap.cptr)
}
