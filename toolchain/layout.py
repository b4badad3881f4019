"""The hypervisor's fixed physical memory layout: the one source of truth for stub, C and linker."""

# The image is linked at its physical address and runs identity-mapped, so
# every address here is both physical and virtual.
LOAD_BASE = 0x100000

# The boot stub's code: multiboot headers first (multiboot1 wants its header in
# the first 8 KiB of the file, multiboot2 in the first 32 KiB), then the entry.
BOOT_TEXT = 0x100000
BOOT_TEXT_MAX = 0x4000

# Boot-time data the stub needs before any C runs: page tables, GDT, TSS.
BOOT_DATA = 0x104000
BOOT_PML4 = BOOT_DATA + 0x0000
BOOT_PDPT = BOOT_DATA + 0x1000
BOOT_PD = BOOT_DATA + 0x2000  # four page directories, one per GiB
BOOT_GDT = BOOT_DATA + 0x6000
BOOT_TSS = BOOT_DATA + 0x6100
BOOT_AP_IMAGE = BOOT_DATA + 0x6200  # the AP trampoline's bytes, copied to AP_TRAMPOLINE
BOOT_DATA_MAX = 0x7000

# C's `struct boot_links` (function pointers and stack the stub jumps through):
# the linker fills it, so the stub never needs a C symbol's address.
BOOT_LINKS = 0x10B000

# Where the C image (text, rodata, data, bss) begins.
KERNEL_BASE = 0x10C000

# The boot page tables identity-map this much with 2 MiB pages: all RAM a
# small machine has plus the 32-bit MMIO hole (local APIC, IOAPIC).
IDENTITY_MAP_BYTES = 4 << 30

# RAM above 4 GiB (big machines) is identity-mapped at boot, from the memory
# map, up to this limit: one PML4 entry's worth, so the boot PDPT covers it
# all (1 GiB pages where the CPU has them, else 2 MiB pages).
HIGH_MEMORY_TOP = 512 << 30

# Below 4 GiB, firmware puts the 32-bit PCI window (and the APICs, the flash)
# between 2 GiB and 4 GiB on the machines we know (QEMU's q35 from 2 GiB, its
# pc from 3 GiB, most PCs from 2-3.5 GiB). Partitions placed by the toolchain
# stay out of it; a fixed host_address there is checked against the real map
# at boot.
LOW_MMIO_HOLE_BASE = 2 << 30
LOW_MMIO_HOLE_END = 4 << 30

# Partitions of 1 GiB or more are placed 1 GiB aligned, so EPT/NPT can map
# them with 1 GiB pages.
PARTITION_ALIGN_1G = 1 << 30
# GDT selectors.
SEL_CODE64 = 0x08
SEL_DATA = 0x10
SEL_CODE32 = 0x18
SEL_TSS = 0x20  # a 16-byte system descriptor: occupies 0x20 and 0x28
GDT_ENTRIES = 6
TSS_SIZE = 0x68

# Exception vectors that push an error code (Intel SDM vol. 3, table 6-1).
EXCEPTIONS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
EXCEPTION_VECTORS = 32

# Size budget of the whole loaded image; the verifier enforces it.
IMAGE_BUDGET_BYTES = 24 << 20

# Partition support, decided at build time (toolchain/partition_layout.py):
# the region the hypervisor copies the generated EPT/NPT tables and I/O and
# MSR bitmaps into at boot, and where partitions' memory begins. Both lie
# above anything the boot loader or the image uses, 2 MiB aligned so nested
# paging can use large pages.
HV_TABLES_BASE = 0x2000000
HV_TABLES_MAX = 0x200000
PARTITIONS_BASE = 0x4000000
PARTITION_ALIGN = 0x200000
PARTITIONS_MAX = 16

# The AP trampoline: a page below 1 MiB (a SIPI starts a CPU in real mode at
# vector * 4 KiB), copied there by C from the image before each INIT-SIPI-SIPI.
# Its last bytes hold the arguments the BSP leaves for the starting CPU.
AP_TRAMPOLINE = 0x8000
AP_TRAMPOLINE_ARGS = AP_TRAMPOLINE + 0x200
