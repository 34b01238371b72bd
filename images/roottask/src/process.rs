//! Building one process from its description: CSpace, VSpace, ELF image,
//! stack, IPC buffer, start-info page, capabilities, TCB.

use crate::desc::{DmaDesc, ObjKind, Process, SYSTEM};
use crate::kobj::{
    Ctx, Fail, Kernel, Result, DEPTH, INIT_ASID_POOL, INIT_CNODE, IRQ_CONTROL, PAGE,
};
use procinfo::elf::{Elf, PF_W, PF_X};
use procinfo::{
    slot, CapKind, DeviceRegion, DmaGrant, DmaPool, IrqCap, LargeDmaPool, Name, NamedCap,
    PciFunction, StartInfo, ThreadInfo, UntypedCap, LARGE_PAGE, MAX_DMA_GRANTS, MAX_THREADS,
    MAX_UNTYPED,
};
use sel4_abi::{
    CNode, CPtr, CapData, CapRights, IRQHandler, ObjectType, Page, PageGlobalDirectory, PrioProps,
    Untyped, UserContext, VMAttributes, TCB,
};

/// Fixed addresses in every process (xtask keeps described regions below 4 GiB).
pub const INFO_VADDR: u64 = 0x1_0000_0000;
pub const IPC_VADDR: u64 = INFO_VADDR + PAGE;
/// The PL011, on kernels without printing, for a process with `uart = true`.
pub const CONSOLE_VADDR: u64 = INFO_VADDR + 2 * PAGE;
/// The IPC buffer of thread `i` (1 ..): from here, a page each.
pub const THREAD_IPC_VADDR: u64 = INFO_VADDR + 4 * PAGE;
/// The stack starts here (a guard page below it stays unmapped); the other
/// threads' stacks follow it, each above a guard page of its own.
pub const STACK_BOTTOM: u64 = INFO_VADDR + 0x10_0000;

/// Badges on the root task's endpoint: which process, and fault or control.
pub const FAULT_BADGE: u64 = 1 << 20;
pub const CONTROL_BADGE: u64 = 2 << 20;

/// What the root task keeps about a running process.
#[derive(Clone, Copy)]
pub struct Running {
    pub tcb: TCB,
    /// Its other threads (the process holds copies of these caps).
    pub threads: [Option<TCB>; MAX_THREADS - 1],
    /// The originals of the untyped caps it holds copies of.
    pub untyped: [Option<CPtr>; MAX_UNTYPED],
}

impl Running {
    /// Stops every thread of the process for good: the ones the root task
    /// made (every copy of their caps, wherever the process sent them, is
    /// revoked first, so nobody can resume them), and, by revoking the
    /// untyped memory it handed over, which deletes every object made from
    /// it, any the process made itself.
    pub fn stop(&self) {
        for t in core::iter::once(&self.tcb).chain(self.threads.iter().flatten()) {
            let _ = INIT_CNODE.revoke(t.cptr().0, DEPTH);
            let _ = t.suspend();
        }
        for ut in self.untyped.iter().flatten() {
            let _ = INIT_CNODE.revoke(ut.0, DEPTH);
        }
    }
}

/// Objects shared between processes, by index in the description.
pub struct Shared {
    pub endpoints: [CPtr; 32],
    pub notifications: [CPtr; 32],
    /// The root task's own endpoint (faults and control messages).
    pub root_ep: CPtr,
    /// The PL011's frame cap on a kernel without printing, for a process
    /// described with `uart = true`.
    pub console: Option<CPtr>,
    /// The endpoint the root task's console thread receives on
    /// (`procinfo::slot::CONSOLE`).
    pub console_ep: CPtr,
}

/// A process's DMA pool, made before any process is built: the IOMMU
/// server's start-info page lists every client's (`DmaGrant`). The root
/// task keeps the untyped it came from and the original frame caps (the
/// parents of every copy), and hands neither to anyone, so no process can
/// revoke a copy the server holds or retype the memory under a device.
#[derive(Clone, Copy)]
pub struct Pool {
    /// First of the 4 KiB frames (consecutive slots) and its address.
    small: CPtr,
    small_paddr: u64,
    /// First of the 2 MiB frames, right below the small ones.
    large: CPtr,
    large_paddr: u64,
}

impl Pool {
    /// `[paddr, paddr + size)` of the whole pool (large frames first).
    pub fn range(&self, d: &DmaDesc) -> (u64, u64) {
        let large = u64::from(d.large_pages) * LARGE_PAGE;
        let start = if d.large_pages > 0 {
            self.large_paddr
        } else {
            self.small_paddr
        };
        (start, large + u64::from(d.pages) * PAGE)
    }
}

/// Physically contiguous frames for `d`: the 2 MiB ones (if any) from the
/// start of an untyped of their own, then the 4 KiB ones right after them.
pub fn alloc_pool(k: &mut Kernel, d: &DmaDesc) -> Result<Pool> {
    let pages = u64::from(d.pages);
    let large = u64::from(d.large_pages);
    let pool = if large == 0 {
        let (small, small_paddr) = k.alloc_placed(ObjectType::ARM_SmallPageObject, 0, pages)?;
        Pool {
            small,
            small_paddr,
            large: CPtr(0),
            large_paddr: 0,
        }
    } else {
        let bits = log2_ceil(large * LARGE_PAGE + pages * PAGE);
        let (ut, paddr) = k.alloc_placed(ObjectType::UntypedObject, bits, 1)?;
        let large_frames = retype_from(k, ut, ObjectType::ARM_LargePageObject, large)?;
        let small = retype_from(k, ut, ObjectType::ARM_SmallPageObject, pages)?;
        Pool {
            small,
            small_paddr: paddr + large * LARGE_PAGE,
            large: large_frames,
            large_paddr: paddr,
        }
    };
    let first = Page(pool.small).get_address().ctx("ARM_Page_GetAddress")?;
    let last = Page(CPtr(pool.small.0 + pages - 1))
        .get_address()
        .ctx("ARM_Page_GetAddress")?;
    if first != pool.small_paddr || last != first + (pages - 1) * PAGE {
        return Err(Fail::NotContiguous);
    }
    if large > 0 {
        let at = Page(pool.large).get_address().ctx("ARM_Page_GetAddress")?;
        if at != pool.large_paddr {
            return Err(Fail::NotContiguous);
        }
    }
    Ok(pool)
}

/// `count` objects of `ty` from the untyped `ut` (which nothing else
/// retypes from), into consecutive root CNode slots.
fn retype_from(k: &mut Kernel, ut: CPtr, ty: ObjectType, count: u64) -> Result<CPtr> {
    let first = k.slots(count)?;
    let mut done = 0;
    while done < count {
        let n = (count - done).min(sel4_abi::UNTYPED_RETYPE_MAX_OBJECTS);
        Untyped(ut)
            .retype(ty, 0, INIT_CNODE, 0, 0, first.0 + done, n)
            .ctx("Untyped_Retype (DMA pool)")?;
        done += n;
    }
    Ok(first)
}

/// The badge of process `p`'s cap to the IOMMU server (a client's identity
/// there), if it is a client.
pub fn iommu_badge(p: &Process) -> Option<u64> {
    let iommu = SYSTEM.iommu.as_ref()?;
    p.caps
        .iter()
        .find(|c| {
            c.kind == ObjKind::Endpoint
                && iommu.client_endpoints.contains(&c.object)
                && c.badge != 0
        })
        .map(|c| c.badge)
}

/// What the IOMMU server's start-info page lists: each client's DMA pool.
pub fn dma_grants(pools: &[Option<Pool>]) -> ([DmaGrant; MAX_DMA_GRANTS], u64) {
    let mut grants = [DmaGrant::default(); MAX_DMA_GRANTS];
    let mut n = 0;
    for (p, pool) in SYSTEM.processes.iter().zip(pools) {
        let (Some(badge), Some(pool), Some(d)) = (iommu_badge(p), pool, &p.dma) else {
            continue;
        };
        if let Some(g) = grants.get_mut(n) {
            let (paddr, size) = pool.range(d);
            *g = DmaGrant {
                badge,
                paddr,
                size,
                writable: u64::from(!d.device_read_only),
            };
            n += 1;
        }
    }
    (grants, n as u64)
}

fn log2_ceil(n: u64) -> u64 {
    64 - (n.max(2) - 1).leading_zeros() as u64
}

/// Builds process `index` of the description, `p`, with its DMA pool
/// (made by [`alloc_pool`]) and, for the IOMMU server, the grants of its
/// clients' pools.
pub fn build(
    k: &mut Kernel,
    shared: &Shared,
    index: usize,
    p: &Process,
    pool: Option<Pool>,
    grants: Option<&([DmaGrant; MAX_DMA_GRANTS], u64)>,
    pci: &[PciFunction],
) -> Result<Running> {
    let elf = Elf::parse(p.elf).map_err(|_| Fail::Elf)?;
    let dma_pages = p
        .dma
        .as_ref()
        .map(|d| u64::from(d.pages) + u64::from(d.large_pages))
        .unwrap_or(0);
    let needed = slot::FIRST_FREE
        + p.caps.len() as u64
        + p.irqs.len() as u64
        + p.untyped.len() as u64
        + dma_pages
        // A TCB (not the main one) and a wake notification per thread.
        + 2 * (p.threads.len() as u64 + 1)
        + p.free_slots as u64;
    let cnode_bits = log2_ceil(needed).max(8);
    let guard = CapData::guard(0, 64 - cnode_bits);
    // Slots of the new CNode are named relative to its cap, which has no guard.
    let pdepth = cnode_bits as u8;

    let cnode = CNode(k.alloc(sel4_abi::ObjectType::CapTableObject, cnode_bits)?);
    let vspace =
        PageGlobalDirectory(k.alloc(sel4_abi::ObjectType::ARM_PageGlobalDirectoryObject, 0)?);
    INIT_ASID_POOL
        .assign(vspace.cptr())
        .ctx("ASIDPool_Assign")?;
    let tcb = TCB(k.alloc(sel4_abi::ObjectType::TCBObject, 0)?);

    load_elf(k, vspace, &elf)?;

    // IPC buffer and stack.
    let ipc = map_fresh(k, vspace, IPC_VADDR, 1)?;
    let stack_pages = p.stack_pages.max(1) as u64;
    let stack_top = STACK_BOTTOM + stack_pages * PAGE;
    if stack_top > procinfo::FRAME_PROBE_BASE {
        return Err(Fail::StacksTooLarge);
    }
    map_fresh(k, vspace, STACK_BOTTOM, stack_pages)?;

    let mut info = StartInfo {
        magic: procinfo::START_INFO_MAGIC,
        version: procinfo::START_INFO_VERSION,
        index: index as u32,
        name: Name::new(p.name),
        ipc_buffer: IPC_VADDR,
        stack_bottom: STACK_BOTTOM,
        stack_top,
        cnode_size_bits: cnode_bits,
        free_first: 0,
        free_count: 0,
        num_caps: 0,
        caps: [NamedCap {
            name: Name::EMPTY,
            kind: 0,
            rights: 0,
            cptr: 0,
            badge: 0,
        }; procinfo::MAX_CAPS],
        num_devices: 0,
        devices: [DeviceRegion {
            name: Name::EMPTY,
            vaddr: 0,
            paddr: 0,
            size: 0,
        }; procinfo::MAX_DEVICES],
        num_irqs: 0,
        irqs: [IrqCap {
            name: Name::EMPTY,
            irq: 0,
            cptr: 0,
            notification: 0,
            badge: 0,
        }; procinfo::MAX_IRQS],
        dma: DmaPool::default(),
        dma_large: LargeDmaPool::default(),
        num_untyped: 0,
        untyped: [UntypedCap::default(); procinfo::MAX_UNTYPED],
        console: 0,
        num_threads: 0,
        threads: [ThreadInfo::EMPTY; MAX_THREADS],
        num_pci: pci.len() as u64,
        pci: core::array::from_fn(|i| pci.get(i).copied().unwrap_or_default()),
        num_dma_grants: grants.map_or(0, |g| g.1),
        dma_grants: grants.map_or([DmaGrant::default(); MAX_DMA_GRANTS], |g| g.0),
    };

    // Fixed slots. The fault endpoint is the kernel's to send on (it needs
    // write and grant: faults.c sendFaultIPC); without read, no process
    // can receive on the root task's endpoint and take other processes'
    // faults and reports (a Recv on it is a capability fault).
    let root_ep = shared.root_ep;
    cnode
        .mint(
            slot::FAULT_EP,
            pdepth,
            INIT_CNODE,
            root_ep.0,
            DEPTH,
            CapRights::new(true, false, true),
            CapData::badge(FAULT_BADGE | index as u64),
        )
        .ctx("CNode_Mint (fault endpoint)")?;
    cnode
        .mint(
            slot::CONTROL_EP,
            pdepth,
            INIT_CNODE,
            root_ep.0,
            DEPTH,
            CapRights::new(true, false, true),
            CapData::badge(CONTROL_BADGE | index as u64),
        )
        .ctx("CNode_Mint (control endpoint)")?;
    cnode
        .copy(
            slot::TCB,
            pdepth,
            INIT_CNODE,
            tcb.cptr().0,
            DEPTH,
            CapRights::ALL,
        )
        .ctx("CNode_Copy (TCB)")?;
    // Output goes to the root task's console thread: write only (no read,
    // so no process can take messages or block the thread; no grant, so a
    // `seL4_Call` on it only stops the caller), badged with the process.
    cnode
        .mint(
            slot::CONSOLE,
            pdepth,
            INIT_CNODE,
            shared.console_ep.0,
            DEPTH,
            CapRights::WRITE,
            CapData::badge(index as u64),
        )
        .ctx("CNode_Mint (console endpoint)")?;
    if p.grant_cnode {
        cnode
            .mint(
                slot::CNODE,
                pdepth,
                INIT_CNODE,
                cnode.cptr().0,
                DEPTH,
                CapRights::ALL,
                guard,
            )
            .ctx("CNode_Mint (own CNode)")?;
    }
    if p.grant_vspace {
        cnode
            .copy(
                slot::VSPACE,
                pdepth,
                INIT_CNODE,
                vspace.cptr().0,
                DEPTH,
                CapRights::ALL,
            )
            .ctx("CNode_Copy (own VSpace)")?;
    }
    let mut next = slot::FIRST_FREE;

    for (i, c) in p.caps.iter().enumerate() {
        let (object, name, kind) = match c.kind {
            ObjKind::Endpoint => (
                shared.endpoints[c.object],
                SYSTEM.endpoints[c.object],
                CapKind::Endpoint,
            ),
            ObjKind::Notification => (
                shared.notifications[c.object],
                SYSTEM.notifications[c.object],
                CapKind::Notification,
            ),
        };
        let rights = CapRights::new(c.grant, c.read, c.write);
        cnode
            .mint(
                next,
                pdepth,
                INIT_CNODE,
                object.0,
                DEPTH,
                rights,
                CapData::badge(c.badge),
            )
            .ctx("CNode_Mint (described cap)")?;
        info.caps[i] = NamedCap {
            name: Name::new(name),
            kind: kind as u32,
            rights: c.read as u32 | (c.write as u32) << 1 | (c.grant as u32) << 2,
            cptr: next,
            badge: c.badge,
        };
        info.num_caps += 1;
        next += 1;
    }

    for (i, d) in p.devices.iter().enumerate() {
        let frames = k.device_frames(d.paddr, d.size)?;
        for pg in 0..d.size / PAGE {
            // Attributes 0: Device-nGnRnE, never executable.
            let rights = if d.read_only {
                CapRights::READ
            } else {
                CapRights::READ_WRITE
            };
            k.map(
                vspace,
                CPtr(frames.0 + pg),
                d.vaddr + pg * PAGE,
                rights,
                VMAttributes::EXECUTE_NEVER,
            )?;
        }
        info.devices[i] = DeviceRegion {
            name: Name::new(d.name),
            vaddr: d.vaddr,
            paddr: d.paddr,
            size: d.size,
        };
        info.num_devices += 1;
    }

    for (i, q) in p.irqs.iter().enumerate() {
        let handler = k.slot()?;
        IRQ_CONTROL
            .get(q.irq as i32, INIT_CNODE, handler.0, DEPTH)
            .ctx("IRQControl_Get")?;
        let mut ntfn_cptr = 0;
        if let Some(n) = q.notification {
            let badged = k.slot()?;
            INIT_CNODE
                .mint(
                    badged.0,
                    DEPTH,
                    INIT_CNODE,
                    shared.notifications[n].0,
                    DEPTH,
                    CapRights::ALL,
                    CapData::badge(q.badge),
                )
                .ctx("CNode_Mint (IRQ notification)")?;
            IRQHandler(handler)
                .set_notification(badged)
                .ctx("IRQHandler_SetNotification")?;
            ntfn_cptr = (0..p.caps.len())
                .find(|&c| p.caps[c].kind == ObjKind::Notification && p.caps[c].object == n)
                .map(|c| info.caps[c].cptr)
                .unwrap_or(0);
        }
        cnode
            .move_(next, pdepth, INIT_CNODE, handler.0, DEPTH)
            .ctx("CNode_Move (IRQ handler)")?;
        info.irqs[i] = IrqCap {
            name: Name::new(q.name),
            irq: q.irq as u64,
            cptr: next,
            notification: ntfn_cptr,
            badge: q.badge,
        };
        info.num_irqs += 1;
        next += 1;
    }

    if let (Some(d), Some(pool)) = (&p.dma, pool) {
        let pages = u64::from(d.pages);
        let large = u64::from(d.large_pages);
        let small_vaddr = d.vaddr + large * LARGE_PAGE;
        // A pool its devices may only read: the process writes it through
        // its own mapping, and the frame caps it can hand on are read-only.
        let frame_rights = if d.device_read_only {
            CapRights::READ
        } else {
            CapRights::ALL
        };
        // Mapped for the CPU; the copies the process gets are unmapped, to
        // hand to the IOMMU server (or to others).
        let frames = (0..large)
            .map(|i| (pool.large.0 + i, d.vaddr + i * LARGE_PAGE))
            .chain((0..pages).map(|i| (pool.small.0 + i, small_vaddr + i * PAGE)));
        for (n, (frame, vaddr)) in frames.enumerate() {
            k.map(
                vspace,
                CPtr(frame),
                vaddr,
                CapRights::READ_WRITE,
                VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER,
            )?;
            cnode
                .copy(
                    next + n as u64,
                    pdepth,
                    INIT_CNODE,
                    frame,
                    DEPTH,
                    frame_rights,
                )
                .ctx("CNode_Copy (DMA frame)")?;
        }
        info.dma_large = LargeDmaPool {
            vaddr: d.vaddr,
            paddr: pool.large_paddr,
            first_frame_cap: next,
            frames: large,
        };
        info.dma = DmaPool {
            vaddr: small_vaddr,
            paddr: pool.small_paddr,
            size: pages * PAGE,
            first_frame_cap: next + large,
            frames: pages,
        };
        next += large + pages;
    }

    let mut untyped = [None; MAX_UNTYPED];
    for (i, &bits) in p.untyped.iter().enumerate().take(MAX_UNTYPED) {
        let (ut, paddr) = k.alloc_placed(sel4_abi::ObjectType::UntypedObject, bits as u64, 1)?;
        // A copy: the root task keeps the original, the parent of every
        // object the process makes from it, and revokes it when the process
        // is done, so a thread the process made itself stops too.
        cnode
            .copy(next, pdepth, INIT_CNODE, ut.0, DEPTH, CapRights::ALL)
            .ctx("CNode_Copy (untyped)")?;
        untyped[i] = Some(ut);
        info.untyped[i] = UntypedCap {
            cptr: next,
            paddr,
            size_bits: bits as u64,
        };
        info.num_untyped += 1;
        next += 1;
    }

    // The PL011 itself only where the description asks for it (benchmark
    // markers that must cost no system call): a process holding it could
    // reprogram or disable the UART under everyone's output.
    if let Some(uart) = shared.console.filter(|_| p.uart) {
        let copy = k.slot()?;
        INIT_CNODE
            .copy(copy.0, DEPTH, INIT_CNODE, uart.0, DEPTH, CapRights::ALL)
            .ctx("CNode_Copy (console)")?;
        k.map(
            vspace,
            copy,
            CONSOLE_VADDR,
            CapRights::READ_WRITE,
            VMAttributes::EXECUTE_NEVER,
        )?;
        info.console = CONSOLE_VADDR;
    }

    // Threads: the main one (started below) and the suspended others, each
    // with a notification of its own to block on.
    if p.threads.len() + 1 > MAX_THREADS {
        return Err(Fail::TooManyThreads);
    }
    let mut stack_end = stack_top;
    let mut thread_tcbs = [None; MAX_THREADS - 1];
    for i in 0..=p.threads.len() {
        let wake = k.alloc(sel4_abi::ObjectType::NotificationObject, 0)?;
        cnode
            .move_(next, pdepth, INIT_CNODE, wake.0, DEPTH)
            .ctx("CNode_Move (wake notification)")?;
        let wake_cptr = next;
        next += 1;
        let t = match i.checked_sub(1).map(|j| &p.threads[j]) {
            None => ThreadInfo {
                name: Name::new("main"),
                tcb: 0,
                ipc_buffer: IPC_VADDR,
                stack_bottom: STACK_BOTTOM,
                stack_top,
                priority: p.priority as u64,
                wake: wake_cptr,
            },
            Some(t) => {
                let thread_tcb = TCB(k.alloc(sel4_abi::ObjectType::TCBObject, 0)?);
                let ipc_vaddr = THREAD_IPC_VADDR + (i as u64 - 1) * PAGE;
                let thread_ipc = map_fresh(k, vspace, ipc_vaddr, 1)?;
                let pages = t.stack_pages.max(1) as u64;
                let bottom = stack_end + PAGE;
                stack_end = bottom + pages * PAGE;
                if stack_end > procinfo::FRAME_PROBE_BASE {
                    return Err(Fail::StacksTooLarge);
                }
                map_fresh(k, vspace, bottom, pages)?;
                thread_tcb
                    .configure(
                        CPtr(slot::FAULT_EP),
                        PrioProps::new(t.priority, t.priority),
                        cnode,
                        guard,
                        CNode(vspace.cptr()),
                        CapData::NONE,
                        ipc_vaddr,
                        thread_ipc,
                    )
                    .ctx("TCB_Configure (thread)")?;
                thread_tcb
                    .set_priority(t.priority)
                    .ctx("TCB_SetPriority (thread)")?;
                // A copy for the process to start it; the root task keeps
                // the original to stop it if the process faults.
                cnode
                    .copy(
                        next,
                        pdepth,
                        INIT_CNODE,
                        thread_tcb.cptr().0,
                        DEPTH,
                        CapRights::ALL,
                    )
                    .ctx("CNode_Copy (thread TCB)")?;
                next += 1;
                thread_tcbs[i - 1] = Some(thread_tcb);
                ThreadInfo {
                    name: Name::new(t.name),
                    tcb: next - 1,
                    ipc_buffer: ipc_vaddr,
                    stack_bottom: bottom,
                    stack_top: stack_end,
                    priority: t.priority as u64,
                    wake: wake_cptr,
                }
            }
        };
        info.threads[i] = t;
        info.num_threads += 1;
    }

    info.free_first = next;
    info.free_count = (1u64 << cnode_bits) - next;

    // The start-info page, read-only for the process.
    let info_frame = k.alloc(sel4_abi::ObjectType::ARM_SmallPageObject, 0)?;
    // SAFETY: StartInfo is repr(C) plain data; viewing it as bytes is sound.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            &info as *const StartInfo as *const u8,
            core::mem::size_of::<StartInfo>(),
        )
    };
    k.write_frame(info_frame, 0, bytes)?;
    k.map(
        vspace,
        info_frame,
        INFO_VADDR,
        CapRights::READ,
        VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER,
    )?;

    tcb.configure(
        CPtr(slot::FAULT_EP),
        PrioProps::new(p.priority, p.priority),
        cnode,
        guard,
        CNode(vspace.cptr()),
        CapData::NONE,
        IPC_VADDR,
        ipc,
    )
    .ctx("TCB_Configure")?;
    tcb.set_priority(p.priority).ctx("TCB_SetPriority")?;
    // spsr 0: EL0t with interrupts unmasked. Only pc, sp, spsr, x0 matter.
    let regs = UserContext {
        pc: elf.entry(),
        sp: stack_top,
        x0: INFO_VADDR,
        ..Default::default()
    };
    tcb.write_registers(false, 0, 4, &regs)
        .ctx("TCB_WriteRegisters")?;
    Ok(Running {
        tcb,
        threads: thread_tcbs,
        untyped,
    })
}

/// `pages` fresh frames mapped read-write, never executable, from `vaddr`
/// up (an IPC buffer or a stack); returns the first frame's cap.
fn map_fresh(k: &mut Kernel, vspace: PageGlobalDirectory, vaddr: u64, pages: u64) -> Result<CPtr> {
    let frames = k.alloc_n(sel4_abi::ObjectType::ARM_SmallPageObject, 0, pages)?;
    for i in 0..pages {
        k.map(
            vspace,
            CPtr(frames.0 + i),
            vaddr + i * PAGE,
            CapRights::READ_WRITE,
            VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER,
        )?;
    }
    Ok(frames)
}

/// Loads every PT_LOAD segment into fresh frames mapped in `vspace`.
fn load_elf(k: &mut Kernel, vspace: PageGlobalDirectory, elf: &Elf) -> Result<()> {
    // Segments come in address order (the ELF rules), so the only page two
    // segments can share is the previous segment's last one.
    let mut last: Option<(u64, CPtr)> = None;
    let mut prev_end = 0;
    for s in elf.loads() {
        if s.vaddr < prev_end {
            return Err(Fail::Elf);
        }
        prev_end = s.vaddr + s.memsz;
        let data = elf.data(&s);
        let start = s.vaddr & !(PAGE - 1);
        let end = (s.vaddr + s.memsz).div_ceil(PAGE) * PAGE;
        let mut page = start;
        while page < end {
            let frame = match last {
                Some((v, f)) if v == page => f,
                _ => {
                    let f = k.alloc(sel4_abi::ObjectType::ARM_SmallPageObject, 0)?;
                    // A page two segments share gets both their permissions.
                    let flags = elf
                        .loads()
                        .filter(|o| o.vaddr < page + PAGE && o.vaddr + o.memsz > page)
                        .fold(0, |acc, o| acc | o.flags);
                    let mut attrs = VMAttributes::DEFAULT;
                    if flags & PF_X == 0 {
                        attrs = attrs | VMAttributes::EXECUTE_NEVER;
                    }
                    let rights = if flags & PF_W != 0 {
                        CapRights::READ_WRITE
                    } else {
                        CapRights::READ
                    };
                    k.map(vspace, f, page, rights, attrs)?;
                    last = Some((page, f));
                    f
                }
            };
            // The file bytes that fall into this page (frames start zeroed).
            let lo = page.max(s.vaddr);
            let hi = (page + PAGE).min(s.vaddr + s.filesz);
            if lo < hi {
                let from = (lo - s.vaddr) as usize;
                let to = (hi - s.vaddr) as usize;
                k.write_frame(frame, (lo - page) as usize, &data[from..to])?;
            }
            page += PAGE;
        }
    }
    Ok(())
}
