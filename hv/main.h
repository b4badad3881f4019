/* The C entry point the boot stub jumps to through struct boot_links. */
#pragma once
#include <stdint.h>

/* magic: EAX from the loader (multiboot1 or multiboot2); info: physical address of its boot information. */
_Noreturn void hv_main(uint32_t magic, uint64_t info);
