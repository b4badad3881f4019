/* The interrupt descriptor table every CPU loads, and the C side of exception handling. */
#pragma once
#include "exc_frame.h"

/* Installs the exception vectors 0..31 (from the stub's ISR table) and loads the IDT. */
void idt_init(void);
/* Load the IDT on this CPU (each AP, once its GDT is loaded). */
void idt_load(void);

/* Points a device vector (32..255) at an interrupt handler (an IRETQ-ending stub). */
void idt_set_handler(uint8_t vector, uint64_t handler);

/* Called by the exception entry stubs: prints a register dump and halts this CPU. */
_Noreturn void exception_dispatch(struct exc_frame *f);
