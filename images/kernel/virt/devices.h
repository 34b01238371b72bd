/* QEMU virt (highmem=off): physical and kernel-window addresses of devices. */
#ifndef __PLAT_MACHINE_DEVICES_H
#define __PLAT_MACHINE_DEVICES_H

#include <plat_mode/machine/devices.h>

#define GIC_PL390_CONTROLLER_PPTR   GIC_CONTROLLER_PPTR
#define GIC_PL390_DISTRIBUTOR_PPTR  GIC_DISTRIBUTOR_PPTR

#define GIC_DISTRIBUTOR_PADDR       0x08000000
#define GIC_CONTROLLER0_PADDR       0x08010000
#define UART0_PADDR                 0x09000000

/* Handed to user level as device untypeds. */
#define SMMU_PADDR                  0x09050000
#define SMMU_SIZE                   0x00020000
#define PCIE_MMIO_PADDR             0x10000000
#define PCIE_MMIO_SIZE              0x2eff0000
#define PCIE_PIO_PADDR              0x3eff0000
#define PCIE_PIO_SIZE               0x00010000
#define PCIE_ECAM_PADDR             0x3f000000
#define PCIE_ECAM_SIZE              0x01000000

#endif
