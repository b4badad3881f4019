/* The host's interrupt vectors and their C entry: the local APIC timer, the scheduler's IPI, the spurious vector. */
#pragma once
#include <stdint.h>
#include "exc_frame.h"

/* Above the exceptions and the legacy PIC's range, one priority class each. */
#define IRQ_TIMER_VECTOR 0x40
#define IRQ_IPI_VECTOR 0x50
/* The APIC requires the spurious vector's low four bits set; 0xff is customary. */
#define IRQ_SPURIOUS_VECTOR 0xff

/* Install the vectors' gates (the generated irq stubs) in the IDT. */
void irq_init(void);

/* Called by the generated irq stubs with the interrupted frame: EOI, then the scheduler's say. */
void irq_dispatch(struct exc_frame *f);

/* A vector VT-x acknowledged on a VM exit: EOI it and act on it as if delivered. */
void irq_acked(uint8_t vector);

/* What the core does with an interrupt (hv/sched.c): may switch away from the
 * management context, so it runs last, after the EOI. */
void sched_interrupt(uint8_t vector);
