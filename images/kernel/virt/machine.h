/* QEMU virt: interrupt numbers (written for this project). */
#ifndef __PLAT_MACHINE_H
#define __PLAT_MACHINE_H

#include <plat_mode/machine.h>

/* GICv2 with 256 interrupt IDs: SGIs 0-15, PPIs 16-31, SPIs 32-255. */
#define N_INTERRUPTS 256

enum IRQConstants {
    /* PPI 11: the EL1 virtual timer (CNTV), what a cortex-a53 guest gets. */
    INTERRUPT_VTIMER = 27,
    /* SPIs 74-77 of the SMMUv3 (event queue, PRI, CMD_SYNC, GERROR). */
    INTERRUPT_SMMU_EVTQ = 106,
    INTERRUPT_SMMU_PRIQ = 107,
    INTERRUPT_SMMU_CMD_SYNC = 108,
    INTERRUPT_SMMU_GERROR = 109,
    maxIRQ = 255
} platform_interrupt_t;

#define KERNEL_TIMER_IRQ INTERRUPT_VTIMER

#include <arch/machine/gic_pl390.h>

#endif /* __PLAT_MACHINE_H */
