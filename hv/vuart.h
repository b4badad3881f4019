/* Each partition's virtual 16550 UART at 0x3f8: what the guest sees of a serial port. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct partition;

#define VUART_BASE 0x3f8
#define VUART_PORTS 8
/* Its interrupt: ISA IRQ 4, IOAPIC pin 4 (the MADT has no override for it). */
#define VUART_IRQ 4

/* Emulates one access to the UART's ports; false if the port is not the UART's. */
bool vuart_access(struct partition *p, uint16_t port, bool in, uint32_t *value);
/* Console input for the guest: queued for the receive register; false when the queue is full. */
bool vuart_feed(struct partition *p, uint8_t c);
/* A byte the guest wrote, by the UART or the console-write hypercall. */
void vuart_output(struct partition *p, uint8_t c);
/* The level of the UART's interrupt output: an enabled interrupt pending, gated by MCR.OUT2 as on a PC. */
bool vuart_irq_line(const struct partition *p);
