/* The 8254 PIT at ports 0x40-0x43 and port 0x61: counters that count down at 1.193182 MHz by the TSC. */
#include "tsc.h"
#include "vplatform.h"

#define PIT_HZ 1193182ull
#define PORT_CONTROL 0x43
#define PORT_61 0x61
/* Port 0x61: bit 0 gates counter 2, bit 1 drives the speaker, bit 5 reads OUT2. */
#define P61_GATE2 0x01
#define P61_WRITABLE 0x0f
#define P61_OUT2 0x20

/*
 * Nobody gets interrupts from this PIT (a linux partition's FADT is
 * hardware-reduced, so Linux sets no PIT clock event up); what Linux needs is
 * counter 2 running, so that its TSC calibration against it ends in a few
 * milliseconds rather than polling a dead port 100,000 times.
 */
static uint64_t elapsed_ticks(const struct vpit_counter *c)
{
    if (!c->start_tsc)
        return 0;
    uint64_t khz = tsc_khz();
    uint64_t delta = tsc_read() - c->start_tsc;
    /* Split so that hours of counting do not overflow 64 bits. */
    uint64_t ms = delta / khz, rest = delta % khz;
    return ms * (PIT_HZ / 1000) + ms * (PIT_HZ % 1000) / 1000 + rest * PIT_HZ / (khz * 1000);
}

static uint16_t count_now(const struct vpit_counter *c, bool *out)
{
    uint64_t ticks = elapsed_ticks(c);
    uint32_t reload = c->reload ? c->reload : 0x10000;
    *out = false;
    switch (c->mode) {
    case 2:
    case 3:
        /* Rate generator and square wave: reload again at each terminal count. */
        *out = c->mode == 3 ? ticks % reload < reload / 2 : true;
        return (uint16_t)(reload - ticks % reload);
    default:
        /* Interrupt on terminal count (and the one-shots): OUT rises at zero, the count wraps on. */
        *out = ticks >= reload;
        return (uint16_t)(reload - ticks);
    }
}

static struct vpit_counter *counter(struct vplatform_state *s, uint16_t port)
{
    return &s->pit[port - 0x40];
}

uint8_t vpit_read(struct vplatform_state *s, uint16_t port)
{
    bool out;
    if (port == PORT_61) {
        count_now(&s->pit[2], &out);
        return (uint8_t)((s->port61 & P61_WRITABLE) | (out ? P61_OUT2 : 0));
    }
    if (port == PORT_CONTROL)
        return 0xff;   /* the control word is write-only */
    struct vpit_counter *c = counter(s, port);
    uint16_t value = c->latched ? c->latch : count_now(c, &out);
    if (c->access == 3 && !c->read_msb) {
        /* Reading LSB then MSB: the MSB comes from the same count. */
        c->latch = value;
        c->latched = true;
        c->read_msb = true;
        return (uint8_t)value;
    }
    c->read_msb = false;
    c->latched = false;
    return (uint8_t)(c->access == 2 || c->access == 3 ? value >> 8 : value);
}

static void control(struct vplatform_state *s, uint8_t v)
{
    unsigned sel = v >> 6;
    if (sel == 3)
        return;   /* read-back command: not offered (Linux does not use it) */
    struct vpit_counter *c = &s->pit[sel];
    unsigned access = (v >> 4) & 3;
    if (access == 0) {
        bool out;
        c->latch = count_now(c, &out);
        c->latched = true;
        c->read_msb = false;
        return;
    }
    c->access = (uint8_t)access;
    uint8_t mode = (v >> 1) & 7;
    c->mode = mode > 5 ? mode - 4 : mode;   /* 6 and 7 are 2 and 3 again */
    c->write_msb = c->read_msb = c->latched = false;
    c->start_tsc = 0;
}

void vpit_write(struct vplatform_state *s, uint16_t port, uint8_t v)
{
    if (port == PORT_61) {
        bool rising = (v & P61_GATE2) && !(s->port61 & P61_GATE2);
        s->port61 = v & P61_WRITABLE;
        /* Modes 1 and 5 are triggered by the gate's rising edge. */
        if (rising && (s->pit[2].mode == 1 || s->pit[2].mode == 5) && s->pit[2].reload)
            s->pit[2].start_tsc = tsc_read();
        return;
    }
    if (port == PORT_CONTROL) {
        control(s, v);
        return;
    }
    struct vpit_counter *c = counter(s, port);
    bool done = true;
    if (c->access == 1) {
        c->reload = v;
    } else if (c->access == 2) {
        c->reload = (uint32_t)v << 8;
    } else if (!c->write_msb) {
        c->reload = (c->reload & 0xff00u) | v;
        c->write_msb = true;
        done = false;
    } else {
        c->reload = (c->reload & 0x00ffu) | ((uint32_t)v << 8);
        c->write_msb = false;
    }
    if (done) {
        if (c->reload == 0)
            c->reload = 0x10000;   /* a count of 0 means 65536 */
        c->start_tsc = tsc_read();
    }
}
