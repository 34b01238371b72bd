#![no_std]
#![no_main]

core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "    adrp x9, {stack}",
    "    add x9, x9, :lo12:{stack}",
    "    add x9, x9, #16, lsl #12",
    "    mov sp, x9",
    "    bl main",
    "1:  b 1b",
    stack = sym STACK,
);

#[repr(C, align(16))]
struct Stack([u8; 65536]);
static mut STACK: Stack = Stack([0; 65536]);

fn putc(c: u8) {
    unsafe {
        core::arch::asm!("svc #0", inout("x0") c as u64 => _, in("x7") -9i64 as u64, lateout("x1") _, lateout("x2") _, lateout("x3") _, lateout("x4") _, lateout("x5") _, lateout("x6") _);
    }
}

fn exit(code: u64) -> ! {
    let block = [0x20026u64, code];
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr());
    }
    loop {}
}

#[no_mangle]
extern "C" fn main(bootinfo: u64) -> ! {
    for b in b"roottask: hello\n" {
        putc(*b);
    }
    let _ = bootinfo;
    exit(0)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(3)
}
