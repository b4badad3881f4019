/* The table through which the generated boot stub reaches C: filled by the linker, read by the stub. */
#pragma once
#include <stdint.h>

/*
 * The stub is assembled before C is linked, so it cannot name C symbols.
 * Instead the linker script places this table at BOOT_LINKS (toolchain/layout.py)
 * and the stub jumps through it; its field offsets reach the stub through
 * asm_offsets.c, never by hand.
 */
/* The boot CPU's stack; MicroPython's stack check is sized from it. */
#define BOOT_STACK_BYTES (256u * 1024u)

struct boot_links {
    uint64_t main;       /* void hv_main(uint32_t magic, uint64_t info) */
    uint64_t exception;  /* void exception_dispatch(struct exc_frame *) */
    uint64_t irq;        /* void irq_dispatch(struct exc_frame *) */
    uint64_t stack_top;  /* top of the boot CPU's stack, 16-byte aligned */
    uint64_t bss_start;  /* the stub zeroes [bss_start, bss_end) before C runs */
    uint64_t bss_end;
};
