/* The time-stamp counter as a clock: its rate measured once against the PIT at boot. */
#include <stdint.h>
#include "io.h"
#include "tsc.h"

/*
 * No CPU Taipan targets reports its TSC rate everywhere (CPUID 0x15 is often
 * zero, emulators differ), but every PC has the 8254 PIT at 1.193182 MHz.
 * Channel 2 can be gated and polled without interrupts, so count TSC ticks
 * across a known number of PIT ticks.
 */
#define PIT_HZ          1193182u
#define PIT_CH2         0x42
#define PIT_CMD         0x43
#define PORT_B          0x61
#define CALIBRATE_MS    10u

static uint64_t tsc_khz_value;

static uint64_t tsc_measure_khz(void)
{
    uint16_t count = (uint16_t)(PIT_HZ * CALIBRATE_MS / 1000u);
    /* Gate channel 2 on, speaker off; mode 0 raises OUT2 when the count ends. */
    outb(PORT_B, (uint8_t)((inb(PORT_B) & ~0x02) | 0x01));
    outb(PIT_CMD, 0xB0);
    outb(PIT_CH2, (uint8_t)(count & 0xff));
    outb(PIT_CH2, (uint8_t)(count >> 8));
    uint64_t start = tsc_read();
    uint32_t spins = 0;
    while (!(inb(PORT_B) & 0x20)) {
        if (++spins == 0x4000000u) {
            return 0;   /* no PIT answering: leave the rate unknown */
        }
    }
    return (tsc_read() - start) / CALIBRATE_MS;
}

void tsc_calibrate(void)
{
    tsc_khz_value = tsc_measure_khz();
    if (tsc_khz_value == 0) {
        tsc_khz_value = 1000000;  /* assume 1 GHz so time still advances */
    }
}

uint64_t tsc_khz(void)
{
    return tsc_khz_value;
}

uint64_t tsc_to_us(uint64_t ticks)
{
    return ticks * 1000u / tsc_khz_value;
}
