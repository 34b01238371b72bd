//! The `death` system: the hog takes all of the server's table memory and
//! then dies, by a fault, with its device still attached and a DMA on its
//! way; the root task, as supervisor, stops it and retires it at the server, which detaches the stream
//! (the DMA aborts), frees the hog's tables, ASIDs and frame caps; the heir,
//! refused while the hog lived, then gets that memory.

use crate::checks::Checks;
use crate::edu::Direction;
use crate::storm::{bring_up, dma, page};
use crate::{connect, frame, now, signal, wait, COUNTER_HZ};
use iommu_client::{Error, ErrorCode, Perms, Ssid, WIRE_PAGE_SIZE};
use procrt::{println, StartInfo};
use sel4_abi::syscalls;

const IOVA: u64 = 0x10_0000;
/// The heir maps this many pages, each in its own 2 MiB block (one
/// level-3 table each): more table pages than were free before the hog died.
const HEIR_MAPS: u64 = 20;

pub fn hog(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("hog");
    let Some(device) = bring_up(info, &mut checks) else {
        return false;
    };
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let setup = (|| {
        let memory = iommu.register_memory(&[frame(info, 0)])?;
        let domain = iommu.alloc_domain()?;
        iommu.attach(device.stream, Ssid(0), domain)?;
        iommu.map(domain, IOVA, memory.handle, 0, WIRE_PAGE_SIZE, Perms::RW)?;
        Ok::<_, Error>((memory, domain))
    })();
    let Ok((memory, domain)) = setup else {
        println!("hog: setup failed: {setup:?}");
        return false;
    };
    // DMA works while the hog lives.
    let p = page(info, 0);
    for (i, b) in p[..64].iter_mut().enumerate() {
        *b = i as u8 ^ 0x5a;
    }
    let moved = dma(&device, Direction::ToDevice, IOVA, 64);
    p[..64].fill(0);
    let back = dma(&device, Direction::ToMemory, IOVA, 64);
    let landed = (0..64).all(|i| p[i] == i as u8 ^ 0x5a);
    checks.check(
        "dma-works",
        moved && back && landed,
        format_args!("64 bytes RAM -> edu -> RAM through {IOVA:#x}"),
    );

    // Take every page of table memory: one 4 KiB map per 2 MiB block (one
    // level-3 table each), then empty domains (a root table each).
    let mut maps = 0u64;
    let mut last = Ok(());
    for k in 1..256u64 {
        last = iommu.map(
            domain,
            k << 21,
            memory.handle,
            0,
            WIRE_PAGE_SIZE,
            Perms::READ,
        );
        if last.is_err() {
            break;
        }
        maps += 1;
    }
    let mut domains = 1;
    let mut last_domain = Ok(());
    while domains < 8 {
        match iommu.alloc_domain() {
            Ok(_) => domains += 1,
            Err(e) => {
                last_domain = Err(e);
                break;
            }
        }
    }
    let stats = iommu.stats();
    let no_memory = Err(Error::Iommu(ErrorCode::NoMemory));
    checks.check(
        "took-all-table-memory",
        last == no_memory && (last_domain == no_memory || last_domain.is_ok()),
        format_args!(
            "{maps} more maps then {last:?}; {domains} domains then {last_domain:?}; {:?}",
            stats.map(|s| s.pt_pages)
        ),
    );
    signal(info, "hog-full");
    wait(info, "heir-refused");
    // Die with the stream attached and a DMA under way: the edu starts it
    // 100 ms from now, long after the root task has retired this client.
    p[..64].fill(0);
    // (A poll that gives up at once: start the transfer, do not wait.)
    let _ = device.edu.dma(Direction::ToMemory, IOVA, 0, 64, || false);
    println!(
        "hog: dying by a fault with StreamID {:#x} attached and a DMA to {IOVA:#x} under way",
        device.stream.0
    );
    if !checks.passed() {
        return false;
    }
    // SAFETY: a store to page 0x1000, which no process has mapped: it
    // faults, the kernel blocks this thread and tells the root task, which
    // stops the hog for good and retires it at the server. Nothing in this
    // program's memory is touched.
    unsafe { core::arch::asm!("str xzr, [{0}]", in(reg) 0x1000u64) };
    false
}

pub fn heir(info: &'static StartInfo) -> bool {
    let mut checks = Checks::new("heir");
    let Some(mut iommu) = connect(info) else {
        return false;
    };
    let Ok(memory) = iommu.register_memory(&[frame(info, 0)]) else {
        println!("heir: register failed");
        return false;
    };
    wait(info, "hog-full");
    let refused = iommu.alloc_domain();
    checks.check(
        "refused-while-hog-lives",
        refused == Err(Error::Iommu(ErrorCode::NoMemory)),
        format_args!("alloc_domain: {refused:?}"),
    );
    signal(info, "heir-refused");
    // The hog now exits and the root task retires it; until then the
    // server has no table memory for anyone.
    let start = now();
    let mut tries = 0;
    let domain = loop {
        tries += 1;
        match iommu.alloc_domain() {
            Ok(d) => break Some(d),
            Err(_) if now().wrapping_sub(start) < 5 * COUNTER_HZ => syscalls::yield_now(),
            Err(e) => {
                println!("heir: still refused after 5 s: {e:?}");
                break None;
            }
        }
    };
    let Some(domain) = domain else {
        checks.check(
            "gets-memory-after-hog-retired",
            false,
            format_args!("{tries} tries"),
        );
        return false;
    };
    let mut mapped = 0;
    for k in 0..HEIR_MAPS {
        if iommu
            .map(domain, k << 21, memory.handle, 0, WIRE_PAGE_SIZE, Perms::RW)
            .is_ok()
        {
            mapped += 1;
        }
    }
    let pt = iommu.stats().map(|s| s.pt_pages).unwrap_or(0);
    // The hog's last DMA starts 100 ms (virtual) after it exited: keep the
    // run going past it, so that QEMU's trace shows what became of it.
    let waited = now();
    while now().wrapping_sub(waited) < COUNTER_HZ / 2 {
        syscalls::yield_now();
    }
    checks.check(
        "gets-memory-after-hog-retired",
        mapped == HEIR_MAPS && pt as u64 > HEIR_MAPS,
        format_args!("a domain after {tries} tries, then {mapped} maps in separate 2 MiB blocks: {pt} page-table pages"),
    );
    checks.passed()
}
