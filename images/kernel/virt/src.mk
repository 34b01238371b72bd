# Our QEMU virt platform sources.
DIRECTORIES += src/plat/virt/machine
PLAT_C_SOURCES += machine/machine.c
