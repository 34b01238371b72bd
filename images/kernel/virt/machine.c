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

/* GIC INTIDs that QEMU's devices pulse (edge-triggered in the device tree):
 * the SMMUv3's event queue, PRI queue, CMD_SYNC and GERROR interrupts. The
 * GIC driver configures every SPI level-sensitive, and QEMU's GIC drops a
 * pulse on a level-sensitive line, so these must be edge-triggered. */
static const word_t virt_edge_irqs[] = { 106, 107, 108, 109 };

/* Called by init_plat() right after initIRQController(): the one platform
 * hook that runs after the GIC distributor's reset, so the trigger modes are
 * set here. QEMU models no outer cache, which is this hook's usual job. */
void initL2Cache(void)
{
    word_t i;
    for (i = 0; i < sizeof(virt_edge_irqs) / sizeof(virt_edge_irqs[0]); i++) {
        word_t irq = virt_edge_irqs[i];
        /* GICD_ICFGR: two bits per interrupt, the upper one set = edge. */
        gic_dist->config[irq >> 4] |= BIT(((irq & 0xf) << 1) + 1);
    }
}
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
