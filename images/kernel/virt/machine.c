/* QEMU virt: timer, caches and debug UART hooks (written for this project). */
#include <config.h>
#include <types.h>
#include <arch/machine.h>
#include <mode/machine/timer.h>
#include <arch/linker.h>
#include <machine/io.h>
#include <plat/machine/devices.h>

void resetTimer(void)
{
    resetGenericTimer();
}

BOOT_CODE void initTimer(void)
{
    initGenericTimer();
}

/* QEMU models no outer cache. */
void initL2Cache(void) {}
void plat_cleanL2Range(paddr_t start, paddr_t end) {}
void plat_invalidateL2Range(paddr_t start, paddr_t end) {}
void plat_cleanInvalidateL2Range(paddr_t start, paddr_t end) {}
void plat_cleanInvalidateCache(void) {}

#define PL011_DR 0x000
#define PL011_FR 0x018
#define PL011_FR_TXFF (1 << 5)
#define PL011_REG(x) ((volatile uint32_t *)(UART0_PPTR + (x)))

#if defined(CONFIG_DEBUG_BUILD) || defined(CONFIG_PRINTING)
void putDebugChar(unsigned char c)
{
    while ((*PL011_REG(PL011_FR) & PL011_FR_TXFF) != 0);
    *PL011_REG(PL011_DR) = c;
}
#endif

#ifdef CONFIG_DEBUG_BUILD
unsigned char getDebugChar(void)
{
    return 0;
}
#endif
