# Our QEMU virt platform headers (no bitfield files of its own).
DIRECTORIES += plat/machine
