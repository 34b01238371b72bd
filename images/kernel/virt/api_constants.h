#ifndef __PLAT_API_CONSTANTS_H_QEMU_VIRT
#define __PLAT_API_CONSTANTS_H_QEMU_VIRT

#ifdef HAVE_AUTOCONF
#include <autoconf.h>
#endif

/* cortex-a53: 6 breakpoints and 4 watchpoints, only used with the debug API. */
#if !defined(CONFIG_VERIFICATION_BUILD) && (defined(CONFIG_HARDWARE_DEBUG_API) || defined(CONFIG_ARM_HYPERVISOR_SUPPORT))
#define seL4_NumHWBreakpoints (10)
#define seL4_NumExclusiveBreakpoints (6)
#define seL4_NumExclusiveWatchpoints (4)
#endif

#ifdef CONFIG_HARDWARE_DEBUG_API
#define seL4_FirstWatchpoint (6)
#define seL4_NumDualFunctionMonitors (0)
#endif

#endif
