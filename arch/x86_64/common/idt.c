/* The 256-entry IDT: exception vectors to the generated entry stubs, critical ones on their own stack. */
#include <stdbool.h>
#include <stdint.h>
#include "boot_symbols.h"
#include "idt.h"
#include "layout.h"
#include "smp.h"

#define IDT_ENTRIES 256
#define GATE_INTERRUPT 0x8e   /* present, DPL 0, 64-bit interrupt gate: IF cleared on entry */

struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type;
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct idt_gate) == 16, "long-mode gates are 16 bytes");

static struct idt_gate idt[IDT_ENTRIES] __attribute__((aligned(16)));

static void idt_set_gate(uint8_t vector, uint64_t handler, uint8_t ist)
{
    idt[vector] = (struct idt_gate){
        .offset_low = (uint16_t)handler,
        .selector = LAYOUT_SEL_CODE64,
        .ist = ist,
        .type = GATE_INTERRUPT,
        .offset_mid = (uint16_t)(handler >> 16),
        .offset_high = (uint32_t)(handler >> 32),
    };
}

void idt_set_handler(uint8_t vector, uint64_t handler)
{
    /* Only device vectors: 0..31 belong to the exception stubs. */
    if (vector >= LAYOUT_EXCEPTION_VECTORS)
        idt_set_gate(vector, handler, 0);
}

void idt_load(void)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

/* One IDT for every CPU: it is written once at boot and only read after;
 * what differs per CPU (the IST stacks) lives in each CPU's TSS. */
void idt_init(void)
{
    const uint64_t *isr_table = (const uint64_t *)(uintptr_t)BOOT_SYM_ISR_TABLE;

    /* Vectors 32..255 stay not-present: a stray interrupt becomes #NP and is dumped.
     * #DF, NMI and #MC can arrive with the current stack unusable (the fault may
     * be the stack overflowing), so the CPU switches to an IST stack for them. */
    for (uint8_t v = 0; v < LAYOUT_EXCEPTION_VECTORS; v++) {
        uint8_t ist = v == 8 ? IST_DOUBLE_FAULT : v == 2 ? IST_NMI : v == 18 ? IST_MACHINE_CHECK : 0;
        idt_set_gate(v, isr_table[v], ist);
    }
    idt_load();
}
