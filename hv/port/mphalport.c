// The serial console and clock as MicroPython sees them, with Ctrl-C noticed while Python runs.
#include <stdint.h>
#include "py/mphal.h"
#include "py/runtime.h"
#include "py/stream.h"
#include "uart16550.h"
#include "tsc.h"

/*
 * Bytes read while polling for Ctrl-C during a long computation must not be
 * lost: they wait here until the REPL or input() asks for them.
 */
#define RX_RING 256
static uint8_t rx_ring[RX_RING];
static unsigned int rx_head, rx_tail;

static void rx_take(int c)
{
    if (c == mp_interrupt_char) {
        rx_head = rx_tail;  // what was typed before Ctrl-C is abandoned with the computation
        mp_sched_keyboard_interrupt();
        return;
    }
    if (rx_head - rx_tail < RX_RING) {
        rx_ring[rx_head++ % RX_RING] = (uint8_t)c;
    }
}

void mp_hal_poll_input(void)
{
    int c;
    while ((c = uart_poll()) >= 0) {
        rx_take(c);
    }
}

int mp_hal_stdin_rx_chr(void)
{
    for (;;) {
        if (rx_head != rx_tail) {
            return rx_ring[rx_tail++ % RX_RING];
        }
        int c = uart_poll();
        if (c >= 0) {
            return c;
        }
        __asm__ volatile ("pause");
    }
}

uintptr_t mp_hal_stdio_poll(uintptr_t poll_flags)
{
    uintptr_t ret = 0;
    mp_hal_poll_input();
    if ((poll_flags & MP_STREAM_POLL_RD) && rx_head != rx_tail) {
        ret |= MP_STREAM_POLL_RD;
    }
    if (poll_flags & MP_STREAM_POLL_WR) {
        ret |= MP_STREAM_POLL_WR;
    }
    return ret;
}

mp_uint_t mp_hal_stdout_tx_strn(const char *str, size_t len)
{
    uart_write(str, len);
    return len;
}

mp_uint_t mp_hal_ticks_us(void)
{
    return tsc_to_us(tsc_read());
}

mp_uint_t mp_hal_ticks_ms(void)
{
    return tsc_to_us(tsc_read()) / 1000;
}

void mp_hal_delay_us(mp_uint_t us)
{
    uint64_t end = tsc_read() + us * tsc_khz() / 1000;
    while (tsc_read() < end) {
        mp_hal_poll_input();
        __asm__ volatile ("pause");
    }
}

void mp_hal_delay_ms(mp_uint_t ms)
{
    mp_hal_delay_us(ms * 1000);
}

uint32_t mp_hal_random_seed(void)
{
    return (uint32_t)(tsc_read() * 2654435761u);
}
