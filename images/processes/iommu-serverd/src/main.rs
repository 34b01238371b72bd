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

use iommu_protocol::{pack_words, unpack_words, MsgBuf, MSG_MAX_BYTES, MSG_MAX_WORDS};
use iommu_server::dma_pool::DmaPool;
use iommu_server::handler::{Handler, ReceivedCap};
use iommu_server::{Config, Smmu};
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
    serve(&mut server, info, CPtr(endpoint.cptr))
}

/// The request loop. Returns only if the kernel gives it no IPC buffer.
fn serve(server: &mut Server, info: &'static StartInfo, endpoint: CPtr) -> bool {
    let mut words = [0u64; MSG_MAX_WORDS];
    let mut request: MsgBuf = [0; MSG_MAX_BYTES];
    let mut reply: MsgBuf = [0; MSG_MAX_BYTES];
    // The reply owed to the last caller, sent with the next receive.
    let mut pending: Option<(MessageInfo, [u64; MSG_REGISTERS])> = None;
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
            service_interrupts(server, info, badge.0);
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
        let reply_words = pack_words(&reply[..reply_length], &mut words).unwrap_or(0);
        let mut out = [0u64; MSG_REGISTERS];
        message::store(&words[..reply_words], &mut out, buffer);
        pending = Some((MessageInfo::new(0, 0, 0, reply_words as u64), out));
    }
}

/// Event-queue and global-error interrupts: drain the SMMU's records to the
/// clients that own the faulting streams, wake those clients, re-arm the IRQs.
fn service_interrupts(server: &mut Server, info: &'static StartInfo, badge: u64) {
    let gerror = server.core_mut().handle_gerror();
    if gerror.active != 0 {
        println!("iommu-server: global error {gerror:?}");
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
