/* QEMU virt: memory map, kernel device frames, timer (written for this project). */
#ifndef __PLAT_MACHINE_HARDWARE_H
#define __PLAT_MACHINE_HARDWARE_H

#include <config.h>
#include <basic_types.h>
#include <arch/linker.h>
#include <plat/machine.h>
#include <plat/machine/devices.h>
#include <plat_mode/machine/hardware.h>

/* Must equal CNTFRQ_EL0 as QEMU sets it (62.5 MHz): a debug kernel checks. */
#define TIMER_CLOCK_HZ 62500000llu

#define physBase 0x40000000

static const kernel_frame_t BOOT_RODATA kernel_devices[] = {
    {
        GIC_CONTROLLER0_PADDR,
        GIC_CONTROLLER_PPTR,
        true  /* armExecuteNever */
    },
    {
        GIC_DISTRIBUTOR_PADDR,
        GIC_DISTRIBUTOR_PPTR,
        true  /* armExecuteNever */
#ifdef CONFIG_PRINTING
    },
    {
        UART0_PADDR,
        UART0_PPTR,
        true  /* armExecuteNever */
#endif
    }
};

/* VIRT_RAM_SIZE is appended to autoconf.h by `cargo xtask kernel`. */
static const p_region_t BOOT_RODATA avail_p_regs[] = {
    { .start = 0x40000000, .end = 0x40000000 + VIRT_RAM_SIZE }
};

static const p_region_t BOOT_RODATA dev_p_regs[] = {
    { .start = SMMU_PADDR,      .end = SMMU_PADDR + SMMU_SIZE },
    { .start = PCIE_MMIO_PADDR, .end = PCIE_MMIO_PADDR + PCIE_MMIO_SIZE },
    { .start = PCIE_PIO_PADDR,  .end = PCIE_PIO_PADDR + PCIE_PIO_SIZE },
    { .start = PCIE_ECAM_PADDR, .end = PCIE_ECAM_PADDR + PCIE_ECAM_SIZE },
#ifndef CONFIG_PRINTING
    /* Without kernel printing the UART is free: user level prints through it. */
    { .start = UART0_PADDR,     .end = UART0_PADDR + 0x1000 },
#endif
};

static inline void
handleReservedIRQ(irq_t irq)
{
}

#endif
