/* The boot_links table the stub jumps through: C entry, exception entry, boot stack, .bss bounds. */
#include <stdint.h>
#include "boot_links.h"
#include "idt.h"
#include "irq.h"
#include "main.h"

extern char __bss_start[], __bss_end[];

/*
 * In .bss so it costs no image bytes; the ABI wants 16-byte alignment at calls.
 * Sized by BOOT_STACK_BYTES because MicroPython's stack check reads the same number.
 */
static uint8_t boot_stack[BOOT_STACK_BYTES] __attribute__((aligned(16)));

/* The linker script places .bootlinks at LAYOUT_BOOT_LINKS, where the stub looks. */
const struct boot_links boot_links __attribute__((section(".bootlinks"), used)) = {
    .main = (uint64_t)(uintptr_t)hv_main,
    .exception = (uint64_t)(uintptr_t)exception_dispatch,
    .irq = (uint64_t)(uintptr_t)irq_dispatch,
    .stack_top = (uint64_t)(uintptr_t)(boot_stack + BOOT_STACK_BYTES),
    .bss_start = (uint64_t)(uintptr_t)__bss_start,
    .bss_end = (uint64_t)(uintptr_t)__bss_end,
};
