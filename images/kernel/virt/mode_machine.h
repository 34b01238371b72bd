#ifndef __PLAT_MODE_MACHINE_H
#define __PLAT_MODE_MACHINE_H

/* 2^13 bytes of 32-byte slots: 256 IRQ handler slots, one per interrupt ID. */
#define IRQ_CNODE_BITS 13

#endif
