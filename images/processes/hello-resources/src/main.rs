//! `resources` system: checks, from inside a process, each kind of resource a
//! system description can grant, and prints one `check <name>: ok|FAIL` line
//! per kind.
#![no_std]
#![no_main]

use procrt::procinfo::slot;
use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CNode, CPtr, IRQHandler, Notification, ObjectType, Page, Untyped};

procrt::main!(main);

/// Capability type tags of seL4 5.0.0 (`structures.bf`), as DebugCapIdentify reports them.
const CAP_ENDPOINT: u32 = 4;
const CAP_CNODE: u32 = 10;
const CAP_PGD: u32 = 9;

fn report(name: &str, result: Result<(), &str>) -> bool {
    match result {
        Ok(()) => println!("check {name}: ok"),
        Err(why) => println!("check {name}: FAIL: {why}"),
    }
    result.is_ok()
}

fn main(info: &'static StartInfo) -> bool {
    let mut all = true;
    all &= report(
        "start-info",
        if info.name.as_str() == "checker" {
            Ok(())
        } else {
            Err("wrong name")
        },
    );
    all &= report("devices", devices(info));
    all &= report("dma-pool", dma(info));
    all &= report("irq", irq(info));
    all &= report("untyped-and-own-cnode", untyped(info));
    all &= report(
        "own-vspace",
        if syscalls::debug_cap_identify(CPtr(slot::VSPACE)) == CAP_PGD {
            Ok(())
        } else {
            Err("slot VSPACE is not a PGD cap")
        },
    );
    all
}

fn read32(vaddr: u64) -> u32 {
    // SAFETY: callers pass addresses inside device regions the root task
    // mapped for this process; these registers have no read side effects.
    unsafe { core::ptr::read_volatile(vaddr as *const u32) }
}

fn devices(info: &StartInfo) -> Result<(), &'static str> {
    let smmu = info.device("smmu").ok_or("no smmu region")?;
    // IDR0.S1P: the SMMU does stage 1 translation.
    if read32(smmu.vaddr) & 0b10 == 0 {
        return Err("SMMU IDR0 lacks stage 1");
    }
    let ecam = info.device("ecam-00-01-0").ok_or("no ECAM region")?;
    let id = read32(ecam.vaddr);
    println!(
        "checker: PCI 00:01.0 vendor:device = {:04x}:{:04x}",
        id & 0xffff,
        id >> 16
    );
    if id != 0x11e8_1234 {
        return Err("00:01.0 is not the edu device (1234:11e8)");
    }
    Ok(())
}

fn dma(info: &StartInfo) -> Result<(), &'static str> {
    let d = info.dma;
    if d.frames == 0 || d.size != d.frames * 4096 {
        return Err("no DMA pool");
    }
    println!(
        "checker: DMA pool {:#x} bytes at vaddr {:#x}, paddr {:#x}, frame caps {}..{}",
        d.size,
        d.vaddr,
        d.paddr,
        d.first_frame_cap,
        d.first_frame_cap + d.frames
    );
    for i in 0..d.size / 8 {
        // SAFETY: [vaddr, vaddr + size) is the pool, mapped read-write for us.
        unsafe { core::ptr::write_volatile((d.vaddr + i * 8) as *mut u64, i ^ 0x5a5a) };
    }
    for i in 0..d.size / 8 {
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile((d.vaddr + i * 8) as *const u64) } != i ^ 0x5a5a {
            return Err("DMA pool memory does not read back");
        }
    }
    for i in 0..d.frames {
        let paddr = Page(CPtr(d.first_frame_cap + i))
            .get_address()
            .map_err(|_| "GetAddress failed on a pool frame cap")?;
        if paddr != d.paddr + i * 4096 {
            return Err("pool frame caps are not the contiguous pages from paddr");
        }
    }
    Ok(())
}

fn irq(info: &StartInfo) -> Result<(), &'static str> {
    let q = info.irq("evtq").ok_or("no evtq IRQ")?;
    if q.irq != 106 || q.notification == 0 {
        return Err("evtq: wrong IRQ number or no notification");
    }
    IRQHandler(CPtr(q.cptr))
        .ack()
        .map_err(|_| "IRQHandler_Ack failed")?;
    // Nothing has fired: the notification has no pending badge.
    if syscalls::poll(Notification(CPtr(q.notification))).0 != 0 {
        return Err("the IRQ notification is already signalled");
    }
    gerror_irq(info)
}

/// Makes the SMMU raise a real interrupt: an illegal command on the command
/// queue sets GERROR.CMDQ_ERR, whose interrupt (SPI 77, INTID 109) must reach
/// us through the kernel as a signal on the bound notification.
fn gerror_irq(info: &StartInfo) -> Result<(), &'static str> {
    let q = info.irq("gerror").ok_or("no gerror IRQ")?;
    let smmu = info.device("smmu").ok_or("no smmu region")?.vaddr;
    let dma = info.dma;
    let reg = |off: u64| (smmu + off) as *mut u32;
    // SAFETY: the SMMU register page is mapped uncached for us; the command
    // queue lives in the first page of our DMA pool, which nothing else uses.
    unsafe {
        use core::ptr::{read_volatile as rd, write_volatile as wr};
        // IRQ_CTRL.GERROR_IRQEN, then wait for IRQ_CTRLACK.
        wr(reg(0x50), 1);
        while rd(reg(0x54)) & 1 == 0 {}
        // A 2-entry command queue (log2 size 1) at the pool's physical address.
        wr((smmu + 0x90) as *mut u64, dma.paddr | 1);
        wr(reg(0x98), 0);
        wr(reg(0x9c), 0);
        // CR0.CMDQEN, then wait for CR0ACK.
        wr(reg(0x20), 1 << 3);
        while rd(reg(0x24)) & (1 << 3) == 0 {}
        // Opcode 0xff is not a command.
        wr(dma.vaddr as *mut u64, 0xff);
        wr((dma.vaddr + 8) as *mut u64, 0);
        core::arch::asm!("dsb sy");
        wr(reg(0x98), 1);
    }
    let ntfn = Notification(CPtr(q.notification));
    for _ in 0..10_000 {
        let badge = syscalls::poll(ntfn).0;
        if badge & q.badge != 0 {
            // SAFETY: as above; GERROR and CMDQ_CONS are plain reads.
            let (gerror, cons) = unsafe {
                (
                    core::ptr::read_volatile(reg(0x60)),
                    core::ptr::read_volatile(reg(0x9c)),
                )
            };
            println!(
                "checker: SMMU GERROR interrupt received (badge {badge:#x}, GERROR {gerror:#x}, CMDQ_CONS {cons:#x})"
            );
            IRQHandler(CPtr(q.cptr))
                .ack()
                .map_err(|_| "IRQHandler_Ack failed")?;
            return if gerror & 1 != 0 {
                Ok(())
            } else {
                Err("GERROR.CMDQ_ERR is not set")
            };
        }
        syscalls::yield_now();
    }
    Err("no GERROR interrupt arrived")
}

fn untyped(info: &StartInfo) -> Result<(), &'static str> {
    let ut = info.untyped().first().ok_or("no untyped")?;
    if syscalls::debug_cap_identify(CPtr(slot::CNODE)) != CAP_CNODE {
        return Err("slot CNODE is not a CNode cap");
    }
    if info.free_count == 0 {
        return Err("no free slots");
    }
    // A new endpoint in the first free slot, named through our own CNode
    // (node depth 0: the CNode itself).
    Untyped(CPtr(ut.cptr))
        .retype(
            ObjectType::EndpointObject,
            0,
            CNode(CPtr(slot::CNODE)),
            0,
            0,
            info.free_first,
            1,
        )
        .map_err(|_| "Untyped_Retype into our own CNode failed")?;
    if syscalls::debug_cap_identify(CPtr(info.free_first)) != CAP_ENDPOINT {
        return Err("the retyped endpoint is not in the first free slot");
    }
    // The next object lands after the endpoint, aligned to its own size: a
    // page at paddr + 4 KiB, which checks the reported physical address.
    Untyped(CPtr(ut.cptr))
        .retype(
            ObjectType::ARM_SmallPageObject,
            0,
            CNode(CPtr(slot::CNODE)),
            0,
            0,
            info.free_first + 1,
            1,
        )
        .map_err(|_| "Untyped_Retype of a page failed")?;
    let page = Page(CPtr(info.free_first + 1))
        .get_address()
        .map_err(|_| "GetAddress failed")?;
    if page != ut.paddr + 4096 {
        return Err("the untyped's reported paddr is wrong");
    }
    Ok(())
}
