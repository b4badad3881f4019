/* The host's interrupt entry from C's side: acknowledge the local APIC, then let the scheduler act. */
#include "apic.h"
#include "boot_symbols.h"
#include "idt.h"
#include "irq.h"

void irq_init(void)
{
    idt_set_handler(IRQ_TIMER_VECTOR, BOOT_SYM_IRQ_STUB_TIMER);
    idt_set_handler(IRQ_IPI_VECTOR, BOOT_SYM_IRQ_STUB_IPI);
    idt_set_handler(IRQ_SPURIOUS_VECTOR, BOOT_SYM_IRQ_SPURIOUS);
}

void irq_acked(uint8_t vector)
{
    /* A spurious interrupt sets no ISR bit, so it takes no EOI. */
    if (vector == IRQ_SPURIOUS_VECTOR)
        return;
    apic_eoi();
    sched_interrupt(vector);
}

void irq_dispatch(struct exc_frame *f)
{
    irq_acked((uint8_t)f->vector);
}
