//! The boot loader: QEMU starts it at EL1 with the MMU off (DESIGN.md §7).
//!
//! It copies the embedded `kernel.elf` to its physical address, places the
//! root task as one contiguous user image after the kernel, sets up the
//! memory attributes and boot page tables the kernel expects, enables the MMU
//! and jumps to the kernel. With the MMU off every access is Device memory,
//! so all copies below use aligned accesses only (the target is strict-align).
#![no_std]
#![no_main]

use core::fmt::Write;
use procinfo::elf::Elf;

#[cfg(has_images)]
static KERNEL: &[u8] = include_bytes!(env!("LOADER_KERNEL_ELF"));
#[cfg(not(has_images))]
static KERNEL: &[u8] = &[];
#[cfg(has_images)]
static ROOTTASK: &[u8] = include_bytes!(env!("LOADER_ROOTTASK_ELF"));
#[cfg(not(has_images))]
static ROOTTASK: &[u8] = &[];

const PAGE: u64 = 4096;
/// The loader itself (see link.ld): nothing may be placed over it.
const LOADER_BASE: u64 = 0x4800_0000;
const UART: usize = 0x0900_0000;

core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    // Floating point/SIMD registers trap at EL1 until CPACR_EL1.FPEN allows
    // them, and compiled Rust may use them for copies.
    "    mov x9, #(3 << 20)",
    "    msr cpacr_el1, x9",
    "    isb",
    "    ldr x9, =__stack_top",
    "    mov sp, x9",
    "    ldr x9, =__bss_start",
    "    ldr x10, =__bss_end",
    "1:  cmp x9, x10",
    "    b.hs 2f",
    "    str xzr, [x9], #8",
    "    b 1b",
    "2:  bl loader_main",
    "3:  wfe",
    "    b 3b",
);

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    let fr = (UART + 0x18) as *const u32;
    let dr = UART as *mut u32;
    // SAFETY: the PL011 of QEMU virt sits at 0x0900_0000 (identity-mapped
    // when the MMU is on); FR bit 5 is "transmit FIFO full".
    unsafe {
        while core::ptr::read_volatile(fr) & (1 << 5) != 0 {}
        core::ptr::write_volatile(dr, b as u32);
    }
}

macro_rules! say {
    ($($arg:tt)*) => {{ let _ = write!(Uart, $($arg)*); }};
}

fn halt(why: &str) -> ! {
    say!("loader: {why}\n");
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("loader: panic: {info}\n");
    loop {
        core::hint::spin_loop();
    }
}

/// Copies `src` to physical `dst` and zeroes up to `dst + len`.
///
/// # Safety
/// `[dst, dst + len)` must be RAM that nothing else uses.
unsafe fn place(dst: u64, src: &[u8], len: u64) {
    let dst = dst as *mut u8;
    for (i, b) in src.iter().enumerate() {
        // SAFETY: within [dst, dst + len) by the caller's contract.
        unsafe { core::ptr::write_volatile(dst.add(i), *b) };
    }
    for i in src.len() as u64..len {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(dst.add(i as usize), 0) };
    }
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut TTBR0_L0: Table = Table([0; 512]);
static mut TTBR0_L1: Table = Table([0; 512]);
static mut TTBR1_L0: Table = Table([0; 512]);
static mut TTBR1_L1: Table = Table([0; 512]);

/// MAIR_EL1: Device-nGnRnE, Device-nGnRE, Device-GRE, Normal non-cacheable,
/// Normal write-back; the kernel's `enum mair_types` indexes it this way.
const MAIR: u64 = 0x0000_00ff_440c_0400;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 4 << 2;
/// Block descriptor: valid block, access flag, inner shareable, EL1 RW.
const BLOCK: u64 = 0b01 | (1 << 10) | (3 << 8);
const TABLE: u64 = 0b11;
/// The kernel window starts here and maps physical 0x4000_0000.
const KERNEL_VBASE: u64 = 0xffff_ff80_0000_0000;

#[no_mangle]
extern "C" fn loader_main() -> ! {
    say!("\nloader: seL4 boot loader for QEMU virt\n");
    if KERNEL.is_empty() || ROOTTASK.is_empty() {
        halt("built without a kernel or root task (xtask sets LOADER_KERNEL_ELF and LOADER_ROOTTASK_ELF)");
    }
    let kernel = Elf::parse(KERNEL).unwrap_or_else(|_| halt("kernel.elf is not an AArch64 ELF64"));
    let root = Elf::parse(ROOTTASK).unwrap_or_else(|_| halt("root task is not an AArch64 ELF64"));

    // The kernel: its segments at their physical addresses.
    let mut kernel_end = 0;
    for s in kernel.loads() {
        if s.paddr < 0x4000_0000 || s.paddr + s.memsz > LOADER_BASE {
            halt("a kernel segment lies outside [RAM start, loader)");
        }
        // SAFETY: checked to lie in RAM below the loader; nothing runs there yet.
        unsafe { place(s.paddr, kernel.data(&s), s.memsz) };
        say!(
            "loader: kernel  {:#x}..{:#x} (vaddr {:#x}, {} bytes from file)\n",
            s.paddr,
            s.paddr + s.memsz,
            s.vaddr,
            s.filesz
        );
        kernel_end = kernel_end.max(s.paddr + s.memsz);
    }

    // The user image: [lowest, highest) vaddr of the root task, contiguous.
    let (lo, hi) = root.vaddr_range();
    let (lo, hi) = (lo & !(PAGE - 1), round_up(hi, PAGE));
    let ui_start = round_up(kernel_end, PAGE);
    let ui_end = ui_start + (hi - lo);
    if ui_end > LOADER_BASE {
        halt("the root task image does not fit between the kernel and the loader");
    }
    // SAFETY: [ui_start, ui_end) is RAM between the kernel and the loader.
    unsafe { place(ui_start, &[], ui_end - ui_start) };
    for s in root.loads() {
        let at = ui_start + (s.vaddr - lo);
        // SAFETY: inside [ui_start, ui_end), which was just checked.
        unsafe { place(at, root.data(&s), s.memsz) };
    }
    let pv_offset = ui_start.wrapping_sub(lo);
    say!(
        "loader: root task {:#x}..{:#x} (vaddr {:#x}..{:#x}, entry {:#x})\n",
        ui_start,
        ui_end,
        lo,
        hi,
        root.entry()
    );
    say!("loader: jumping to the kernel at {:#x}\n", kernel.entry());

    // SAFETY: single-threaded boot code; the tables are only touched here,
    // before the MMU uses them.
    let (ttbr0, ttbr1) = unsafe {
        let t0l0 = &raw mut TTBR0_L0;
        let t0l1 = &raw mut TTBR0_L1;
        let t1l0 = &raw mut TTBR1_L0;
        let t1l1 = &raw mut TTBR1_L1;
        // Identity: the first GiB (devices: UART) and RAM, where the loader runs.
        (*t0l1).0[0] = BLOCK | ATTR_DEVICE | (1 << 54);
        (*t0l1).0[1] = 0x4000_0000 | BLOCK | ATTR_NORMAL;
        (*t0l0).0[0] = t0l1 as u64 | TABLE;
        // Kernel window: index 511 of level 0, then 1 GiB blocks of RAM.
        (*t1l1).0[0] = 0x4000_0000 | BLOCK | ATTR_NORMAL;
        (*t1l0).0[511] = t1l1 as u64 | TABLE;
        (t0l0 as u64, t1l0 as u64)
    };
    debug_assert_eq!(KERNEL_VBASE >> 39 & 511, 511);

    // SAFETY: sets up translation as DESIGN.md §7 steps 4-6 and never returns;
    // the kernel takes over with x0-x3 as its boot arguments.
    unsafe {
        let mmfr0: u64;
        core::arch::asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0);
        let ips = mmfr0 & 0xf;
        let tcr: u64 = 16          // T0SZ: 48-bit
            | (1 << 8) | (1 << 10) | (3 << 12) // TTBR0: WBWA, inner shareable
            | (16 << 16)           // T1SZ
            | (1 << 24) | (1 << 26) | (3 << 28) // TTBR1: WBWA, inner shareable
            | (2 << 30)            // TG1: 4 KiB (TG0 = 0 is 4 KiB too)
            | (ips << 32)
            | (1 << 36); // AS: 16-bit ASIDs
        core::arch::asm!(
            // EL0 may read the virtual and physical counters (benchmarks).
            "mrs x9, cntkctl_el1",
            "orr x9, x9, #3",
            "msr cntkctl_el1, x9",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "msr ttbr1_el1, {ttbr1}",
            "isb",
            "tlbi vmalle1",
            "dsb sy",
            "isb",
            "mrs x9, sctlr_el1",
            "orr x9, x9, #1",          // M
            "orr x9, x9, #(1 << 2)",   // C
            "orr x9, x9, #(1 << 12)",  // I
            // UCT, UCI: EL0 may read CTR_EL0 and clean or invalidate data
            // cache lines by address, which the IOMMU server needs on an
            // SMMU that does not snoop the CPU's caches (IDR0.COHACC = 0).
            // seL4 5.0.0's head.S keeps bits it does not set or clear.
            "orr x9, x9, #(1 << 15)",
            "orr x9, x9, #(1 << 26)",
            // DZE: EL0 may zero a block with DC ZVA (the IOMMU server
            // zeroes its page tables so); no more than stores could do.
            "orr x9, x9, #(1 << 14)",
            "msr sctlr_el1, x9",
            "isb",
            "msr daifset, #0xf",
            "br {entry}",
            // x9 is scratch: the block never returns, so clobbering an input is fine.
            in("x9") 0u64,
            mair = in(reg) MAIR,
            tcr = in(reg) tcr,
            ttbr0 = in(reg) ttbr0,
            ttbr1 = in(reg) ttbr1,
            entry = in(reg) kernel.entry(),
            in("x0") ui_start,
            in("x1") ui_end,
            in("x2") pv_offset,
            in("x3") root.entry(),
            options(noreturn)
        );
    }
}
