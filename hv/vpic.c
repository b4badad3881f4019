/* The 8259 pair at 0x20/0x21 and 0xa0/0xa1 (and the ELCR at 0x4d0/0x4d1): present, every line masked, nothing pending. */
#include "vplatform.h"

/*
 * A linux partition's interrupts come through the IOAPIC and the local APIC.
 * Linux probes the PIC by writing a mask and reading it back; an IMR that
 * always reads 0xff ("all masked") makes it choose its null PIC, as on a
 * machine whose firmware leaves the 8259s disabled. IRR and ISR (read after
 * an OCW3) read 0: nothing is ever pending. Writes are taken and dropped.
 */
bool vpic_port(uint16_t port)
{
    return port == 0x20 || port == 0x21 || port == 0xa0 || port == 0xa1 ||
           port == 0x4d0 || port == 0x4d1;
}

uint8_t vpic_read(uint16_t port)
{
    switch (port) {
    case 0x21:
    case 0xa1:
        return 0xff;   /* IMR: every line masked */
    default:
        return 0;      /* IRR/ISR: nothing pending; ELCR: every line edge-triggered */
    }
}
