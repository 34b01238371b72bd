//! The IOMMU server process.
//!
//! It alone maps the SMMUv3's registers. It initialises the SMMU with the
//! server core (`SharedSmmu`, whose locks block through
//! `sel4_iommu::locks::ThreadLocks`; every stream starts in abort, so a
//! device no client attached cannot DMA at all), and serves:
//!
//! * one **band** of clients per endpoint (`[iommu] endpoint` and `bands`
//!   in the system description), each served by a thread of its own at the
//!   band's priority, with its own request handler (its clients' state and
//!   receive slots). The main thread serves the first band, and also
//!   receives the root task's `retire` messages (the supervisor badge);
//! * the SMMU's event-queue and global-error interrupts, on a thread named
//!   `events` if the description gives the process one (it waits on the
//!   interrupt notification), else on the main thread (the notification is
//!   bound to its TCB, so one receive takes both).
//!
//! Lock order: a band's handler lock, then the core's own (ASID → domain →
//! command queue → allocator, `iommu_server::sync`). The event thread
//! drains the event queue first (core lock only) and routes the records to
//! each band afterwards (band lock only), so it never holds both.
#![no_std]
#![no_main]

mod policy;

use iommu_protocol::ErrorCode;
use iommu_server::dma_pool::DmaPool;
use iommu_server::handler::{CoreEvent, FrameResolver, Handler};
use iommu_server::policy::DmaGrant;
use iommu_server::regs::gerror;
use iommu_server::shared::SharedSmmu;
use iommu_server::Config;
use procrt::procinfo::supervisor::{self, Retired};
use procrt::sync::OnceCell;
use procrt::{println, StartInfo};
use sel4_abi::message::MSG_REGISTERS;
use sel4_abi::{ipc_buffer, syscalls, CPtr, IRQHandler, MessageInfo, Notification, TCB};
use sel4_iommu::locks::{Mutex, ThreadLocks};
use sel4_iommu::platform::{CounterDelay, DeviceRegisters, FrameProbe, ReceivedFrames};

procrt::main!(main);

/// Badges of the interrupt notification carry this bit, the top one of the
/// 28 a seL4 5.0.0 badge has (seL4_CapData's Badge field); client badges
/// stay below it, so one receive tells the two apart.
const IRQ_BADGE: u64 = 1 << 27;

/// DMA pool pages the bitmap can manage (64 per word).
const POOL_WORDS: usize = 64;
/// Receive slots for frame caps per band (64 per word).
const SLOT_WORDS: usize = (iommu_server::policy::BAND_RECEIVE_SLOTS / 64) as usize;
/// Bands (threads serving clients) at most.
const MAX_BANDS: usize = 4;
/// The thread that takes the SMMU's interrupts, if the process has it.
const EVENT_THREAD: &str = "events";

type Core = SharedSmmu<DeviceRegisters, DmaPool<POOL_WORDS>, CounterDelay, ThreadLocks>;
type BandHandler = Handler<&'static Core, ReceivedFrames<SLOT_WORDS>>;

/// Clients the counters below keep apart (the handler serves at most 8).
const MAX_CLIENTS: usize = 8;

/// One band: its handler and what its thread saw (reported when a client
/// is retired, and checked by the image tests against the clients' own
/// logs and QEMU's trace).
struct Band {
    handler: BandHandler,
    /// Requests and refusals (replies that are an error) per client, by
    /// position in the band's policy.
    requests: [u64; MAX_CLIENTS],
    refusals: [u64; MAX_CLIENTS],
    /// Messages from badges that are no client of the band.
    strangers: u64,
}

/// What the interrupt path saw.
#[derive(Default)]
struct EventCounters {
    /// Interrupt wake-ups.
    irqs: u64,
    /// Global errors seen active, by GERROR bit.
    gerrors: [u64; 9],
    /// Event-queue overflows and events no client's stream raised.
    overflows: u64,
    unrouted: u64,
}

/// What the threads share, set up by the main thread before it starts the
/// others. One cell per band, so that only one band's handler (about
/// 150 KB) is ever built on the stack at a time.
static CORE: OnceCell<Core> = OnceCell::new();
static BANDS: [OnceCell<Mutex<Band>>; MAX_BANDS] = [const { OnceCell::new() }; MAX_BANDS];
static EVENTS: OnceCell<Mutex<EventCounters>> = OnceCell::new();

/// The bands set up so far, in policy order.
fn bands() -> impl Iterator<Item = &'static Mutex<Band>> {
    BANDS.iter().map_while(|cell| cell.get())
}

fn main(info: &'static StartInfo) -> bool {
    let Some(core) = start_core(info) else {
        return false;
    };
    if EVENTS.set(Mutex::new(EventCounters::default())).is_err() {
        return false;
    }
    if !start_bands(info, core) {
        return false;
    }
    println!(
        "iommu-server: serving {} band(s) ({} bytes of core state, {} per band)",
        bands().count(),
        core::mem::size_of::<Core>(),
        core::mem::size_of::<Band>()
    );
    // The image tests compare this with the pages in use once every
    // client has been retired: nothing may leak.
    println!(
        "iommu-server: table memory at start: {} pages",
        core.with_allocator(|a| a.pages_in_use())
    );
    if policy::SUPERVISOR_BADGE != 0 {
        println!(
            "iommu-server: the root task supervises clients (badge {:#x})",
            policy::SUPERVISOR_BADGE
        );
    }

    let events_thread = info.thread(EVENT_THREAD);
    if let Some(irq_notification) = info.cap("iommu-irq") {
        if events_thread.is_none() {
            let tcb = TCB(CPtr(procrt::procinfo::slot::TCB));
            if let Err(e) = tcb.bind_notification(CPtr(irq_notification.cptr)) {
                println!("iommu-server: cannot bind the interrupt notification: {e:?}");
                return false;
            }
        }
    }
    // Interrupts already pending from start-up are taken on the first pass.
    for irq in info.irqs() {
        let _ = IRQHandler(CPtr(irq.cptr)).ack();
    }
    for (i, band) in policy::BANDS.iter().enumerate() {
        let thread = if i == 0 {
            info.threads().first()
        } else {
            info.thread(band.thread)
        };
        let Some(thread) = thread else {
            println!(
                "iommu-server: no thread {} for band {}",
                band.thread, band.endpoint
            );
            return false;
        };
        println!(
            "iommu-server: band {i}: thread {} (priority {}) serves {} ({} clients)",
            band.thread,
            thread.priority,
            band.endpoint,
            band.policy.clients.len()
        );
        if i > 0 {
            if let Err(e) = procrt::spawn(thread, band_thread, i) {
                println!("iommu-server: cannot start thread {}: {e:?}", band.thread);
                return false;
            }
        }
    }
    if let Some(t) = events_thread {
        println!(
            "iommu-server: thread {} (priority {}) takes the SMMU's interrupts",
            EVENT_THREAD, t.priority
        );
        if let Err(e) = procrt::spawn(t, event_thread, 0) {
            println!("iommu-server: cannot start the event thread: {e:?}");
            return false;
        }
    }
    // Every stream aborts and every band is served: the root task may start
    // the drivers and let their devices master the bus.
    procrt::ready();
    serve(0)
}

/// Brings up the SMMU and hands it to the shared core.
fn start_core(info: &'static StartInfo) -> Option<&'static Core> {
    let Some(registers) = info.device("smmu") else {
        println!("iommu-server: the system gave me no device region named smmu");
        return None;
    };
    if info.dma.size == 0 {
        println!("iommu-server: the system gave me no DMA pool for SMMU tables");
        return None;
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
    let smmu = match Core::new(mmio, pool, CounterDelay::new(), Config::default()) {
        Ok(smmu) => smmu,
        Err(e) => {
            println!("iommu-server: SMMU initialisation failed: {e:?}");
            return None;
        }
    };
    println!(
        "iommu-server: SMMUv3 at {:#x} enabled: {:?}",
        registers.paddr,
        smmu.features()
    );
    CORE.set(smmu).ok()
}

/// One handler per band, each with its share of the free CSpace slots.
fn start_bands(info: &'static StartInfo, core: &'static Core) -> bool {
    let count = policy::BANDS.len();
    if count > MAX_BANDS {
        println!("iommu-server: {count} bands; at most {MAX_BANDS}");
        return false;
    }
    // One owner per stream in the whole system, not just in each band: a
    // stream granted in two bands would let one client attach another's
    // device (xtask refuses such a description; this is the server's own
    // check of what it was built with).
    for (i, band) in policy::BANDS.iter().enumerate() {
        for later in &policy::BANDS[i + 1..] {
            let shared = band
                .policy
                .clients
                .iter()
                .flat_map(|c| c.streams)
                .find(|g| later.policy.owner_of(g.stream).is_some());
            if let Some(g) = shared {
                println!(
                    "iommu-server: stream {:#x} is granted in bands {} and {}: refusing to start",
                    g.stream.0, band.endpoint, later.endpoint
                );
                return false;
            }
        }
    }
    // Every grant must name a client: anything else is a root task that
    // disagrees with the policy this server was built with.
    for g in info.dma_grants() {
        if !policy::BANDS
            .iter()
            .any(|b| b.policy.client(g.badge).is_some())
        {
            println!(
                "iommu-server: DMA memory {:#x}+{:#x} granted to badge {:#x}, which is no client",
                g.paddr, g.size, g.badge
            );
            return false;
        }
    }
    let share = info.free_count / count as u64;
    for (i, band) in policy::BANDS.iter().enumerate() {
        if info.cap(band.endpoint).is_none() {
            println!(
                "iommu-server: the system gave me no endpoint named {}",
                band.endpoint
            );
            return false;
        }
        // Each band its own probe slot: its handler lock keeps the band's
        // registrations apart. Without a VSpace cap (`grant_vspace`) every
        // probe fails and frames count as 4 KiB.
        let probe = FrameProbe {
            vspace: CPtr(procrt::procinfo::slot::VSPACE),
            vaddr: procrt::procinfo::frame_probe_vaddr(i),
        };
        let frames = ReceivedFrames::new(
            CPtr(procrt::procinfo::slot::CNODE),
            info.free_first + i as u64 * share,
            share,
            Some(probe),
        );
        let mut handler = match Handler::new(core, frames, band.policy) {
            Ok(h) => h,
            Err(e) => {
                println!("iommu-server: unusable policy for {}: {e:?}", band.endpoint);
                return false;
            }
        };
        // Each client may register frames of its own DMA pool only, which
        // the root task carved from memory no process holds as untyped.
        for g in info.dma_grants() {
            if band.policy.client(g.badge).is_none() {
                continue;
            }
            let grant = DmaGrant {
                paddr: g.paddr,
                size: g.size,
                writable: g.writable != 0,
            };
            if let Err(e) = handler.grant_dma(g.badge, grant) {
                println!(
                    "iommu-server: cannot grant {grant:?} to badge {:#x}: {e:?}",
                    g.badge
                );
                return false;
            }
        }
        let state = Mutex::new(Band {
            handler,
            requests: [0; MAX_CLIENTS],
            refusals: [0; MAX_CLIENTS],
            strangers: 0,
        });
        if BANDS[i].set(state).is_err() {
            return false;
        }
    }
    true
}

extern "C" fn band_thread(band: usize) -> ! {
    serve(band);
    procrt::done(false)
}

extern "C" fn event_thread(_: usize) -> ! {
    let info = procrt::info();
    let Some(notification) = info.cap("iommu-irq") else {
        println!("iommu-server: the event thread has no interrupt notification");
        procrt::done(false)
    };
    loop {
        let badge = syscalls::wait(Notification(CPtr(notification.cptr)));
        service_interrupts(info, badge.0);
    }
}

/// The request loop of one band. Returns only if something it needs is
/// missing.
fn serve(band_index: usize) -> bool {
    let info = procrt::info();
    let (Some(core), Some(band)) = (CORE.get(), BANDS[band_index].get()) else {
        return false;
    };
    let policy = &policy::BANDS[band_index];
    let Some(endpoint) = info.cap(policy.endpoint).map(|c| CPtr(c.cptr)) else {
        return false;
    };
    let mut scratch = sel4_iommu::serve::Scratch::new();
    // The reply owed to the last caller, sent with the next receive.
    let mut pending: Option<(MessageInfo, [u64; MSG_REGISTERS])> = None;
    // Only this thread takes this band's receive slots, so a free slot
    // stays free until a message brings a cap (the supervisor's retire only
    // frees slots). Chosen again after such a request, under its lock.
    let mut receive_slot = receive_path(&band.lock().handler);
    // The receive path stays in the IPC buffer from one receive to the
    // next (nothing else writes those fields): set when it changes.
    let Some(buffer) = ipc_buffer() else {
        return false;
    };
    set_receive_path(buffer, receive_slot);
    loop {
        let mut registers = [0u64; MSG_REGISTERS];
        let (tag, badge) = match pending.take() {
            Some((tag, out)) => {
                registers = out;
                syscalls::reply_recv_with_mrs(endpoint, tag, &mut registers)
            }
            None => syscalls::recv_with_mrs(endpoint, &mut registers),
        };
        if badge.0 & IRQ_BADGE != 0 {
            service_interrupts(info, badge.0);
            continue;
        }
        if band_index == 0 && policy::SUPERVISOR_BADGE != 0 && badge.0 == policy::SUPERVISOR_BADGE {
            // The root task sends no cap; one that came anyway is
            // released, so the slot stays usable.
            {
                let mut b = band.lock();
                let slot = receive_slot.map(|(slot, _)| slot);
                if let Some(cap) = sel4_iommu::serve::take_received(&mut b.handler, tag, slot) {
                    b.handler.resolver_mut().release(cap);
                }
            }
            pending = Some(supervise(core, tag.label(), &registers));
            continue;
        }

        let Some(buffer) = ipc_buffer() else {
            return false;
        };
        let mut b = band.lock();
        // The hot requests straight from and to the registers, anything
        // else through the full decoder (sel4_iommu::serve).
        let answer = sel4_iommu::serve::request(
            &mut b.handler,
            badge.0,
            tag,
            receive_slot.map(|(slot, _)| slot),
            &mut registers,
            buffer,
            &mut scratch,
        );
        match policy.policy.client(badge.0) {
            Some((i, _)) if i < MAX_CLIENTS => {
                b.requests[i] += 1;
                if answer.refused {
                    b.refusals[i] += 1;
                }
            }
            _ => b.strangers += 1,
        }
        // A slot stays free unless this message's cap went into it; with
        // none free, one may have been freed since.
        if receive_slot.is_none() || tag.extra_caps() > 0 {
            receive_slot = receive_path(&b.handler);
            set_receive_path(buffer, receive_slot);
        }
        drop(b);
        pending = Some((answer.tag, registers));
    }
}

/// Points the next receive's capability at `slot`'s path; with none, a cap
/// sent is dropped by the kernel and the request is refused as carrying
/// none.
fn set_receive_path(buffer: &mut sel4_abi::IpcBuffer, slot: Option<(u64, (CPtr, u64, u64))>) {
    match slot {
        Some((_, (cnode, index, depth))) => buffer.set_receive_path(cnode, index, depth),
        None => buffer.set_receive_path(CPtr(0), 0, 0),
    }
}

/// A free receive slot of the band's, and the receive path that names it.
fn receive_path(handler: &BandHandler) -> Option<(u64, (CPtr, u64, u64))> {
    let frames = handler.resolver();
    frames
        .free_slot()
        .map(|slot| (slot, frames.receive_path(slot)))
}

/// A message from the root task, the supervisor: `retire` a client that is
/// gone. Returns the reply. Prints the client's and the server's counters
/// first (the image tests compare them with the clients' logs).
fn supervise(
    core: &'static Core,
    label: u64,
    registers: &[u64; MSG_REGISTERS],
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
    let Some((band, (i, client))) = policy::BANDS
        .iter()
        .enumerate()
        .find_map(|(n, b)| b.policy.client(badge).map(|c| (n, c)))
    else {
        return refuse(ErrorCode::NotPermitted);
    };
    let Some(state) = BANDS[band].get() else {
        return refuse(ErrorCode::NotPermitted);
    };
    let retired = {
        let mut b = state.lock();
        let (requests, refusals) = b
            .requests
            .get(i)
            .zip(b.refusals.get(i))
            .map_or((0, 0), |(r, f)| (*r, *f));
        println!(
            "iommu-server: retiring {} (badge {badge:#x}): it made requests {requests} refused {refusals}",
            client.name
        );
        b.handler.retire_client(badge)
    };
    match retired {
        Ok(r) => {
            report(core);
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

/// The server's totals over every band, in one line the image tests parse.
fn report(core: &'static Core) {
    let stats = core.stats();
    let (mut requests, mut refusals, mut strangers) = (0u64, 0u64, 0u64);
    for band in bands() {
        let b = band.lock();
        requests += b.requests.iter().sum::<u64>();
        refusals += b.refusals.iter().sum::<u64>();
        strangers += b.strangers;
    }
    let Some(events) = EVENTS.get() else {
        return;
    };
    let e = events.lock();
    println!(
        "iommu-server: totals: requests {requests} refused {refusals} strangers {strangers} commands {} syncs {} tlbis {} cfgis {} events {} overflows {} evtq-aborts {} gerrors {} irqs {} unrouted {} pool-pages {} lock-waits {}",
        stats.total_commands(),
        stats.syncs,
        stats.tlbis,
        stats.cfgis,
        stats.events,
        e.overflows,
        e.gerrors[2],
        e.gerrors.iter().sum::<u64>(),
        e.irqs,
        e.unrouted,
        core.with_allocator(|a| a.pages_in_use()),
        sel4_iommu::locks::parked_count(),
    );
}

/// Event-queue and global-error interrupts: drain the SMMU's records to the
/// clients that own the faulting streams (through their band's handler),
/// wake those clients, re-arm the IRQs.
///
/// A fault storm fills the event queue faster than it is drained: QEMU then
/// drops events and raises GERROR.EVENTQ_ABT_ERR (a real SMMU may instead
/// toggle EVENTQ_PROD.OVFLG, which the drain counts). Both are
/// acknowledged and counted here; the first of each kind is printed, the
/// rest only counted, so a storm cannot flood the console either.
fn service_interrupts(info: &'static StartInfo, badge: u64) {
    let Some(core) = CORE.get() else {
        return;
    };
    let errors = core.handle_gerror();
    // The event queue holds 2^evtq_log2 (128) records: one drain.
    let mut drained: heapless::Vec<CoreEvent, 128> = heapless::Vec::new();
    let mut lost = 0u64;
    // The handler's view of the core (events decoded to CoreEvent).
    let overflowed = iommu_server::handler::Core::drain_events(&mut { core }, &mut |ev| {
        if drained.push(ev).is_err() {
            lost += 1;
        }
    });
    {
        let Some(events) = EVENTS.get() else {
            return;
        };
        let mut e = events.lock();
        e.irqs += 1;
        e.overflows += u64::from(overflowed) + lost;
        e.unrouted += drained
            .iter()
            .filter(|ev| {
                !policy::BANDS
                    .iter()
                    .any(|b| b.policy.owner_of(ev.stream).is_some())
            })
            .count() as u64;
        for bit in 0..9 {
            if errors.active & (1 << bit) != 0 {
                e.gerrors[bit] += 1;
                if e.gerrors[bit] == 1 {
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
    }
    if !drained.is_empty() {
        for band in bands() {
            let notify = band.lock().handler.route_events(&drained);
            for client in notify {
                if let Some(cap) = notification_of(info, client) {
                    syscalls::signal(Notification(CPtr(cap)));
                }
            }
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
