/* Polled driver for the COM1 16550 UART that carries the console and every boot message. */
#include <stdint.h>
#include "io.h"
#include "uart16550.h"

#define COM1 0x3f8

/* Register offsets from the base port; DLL/DLM alias RBR/IER while LCR.DLAB is set. */
#define UART_DATA 0
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_SCR 7

#define LSR_DATA_READY 0x01
#define LSR_THR_EMPTY 0x20

void uart_init(void)
{
    /* Polled only: the hypervisor owns no interrupt controller this early. */
    outb(COM1 + UART_IER, 0x00);
    /* The 1.8432 MHz clock / 16 is 115200 baud, so divisor 1. */
    outb(COM1 + UART_LCR, 0x80);
    outb(COM1 + UART_DATA, 0x01);
    outb(COM1 + UART_IER, 0x00);
    outb(COM1 + UART_LCR, 0x03);   /* 8 data bits, no parity, 1 stop bit */
    outb(COM1 + UART_FCR, 0xc7);   /* FIFOs on and cleared, 14-byte trigger */
    outb(COM1 + UART_MCR, 0x03);   /* DTR, RTS; OUT2 off keeps the IRQ line quiet */
}

void uart_putc(char c)
{
    while (!(inb(COM1 + UART_LSR) & LSR_THR_EMPTY))
        ;
    outb(COM1 + UART_DATA, (uint8_t)c);
}

void uart_write(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        uart_putc(s[i]);
}

int uart_poll(void)
{
    if (!(inb(COM1 + UART_LSR) & LSR_DATA_READY))
        return -1;
    return inb(COM1 + UART_DATA);
}

bool uart_rx_ready(void)
{
    /* An absent port reads all ones: nothing will ever arrive there. */
    uint8_t lsr = inb(COM1 + UART_LSR);
    return lsr != 0xff && (lsr & LSR_DATA_READY);
}

int uart_getc(void)
{
    int c;
    while ((c = uart_poll()) < 0)
        __asm__ volatile("pause");
    return c;
}

bool uart_present(void)
{
    /*
     * The scratch register holds what was written on every 16550; an absent
     * port (a UEFI-only machine without a legacy UART) reads back 0xff.
     */
    static const uint8_t probes[2] = { 0x5a, 0xa5 };
    for (int i = 0; i < 2; i++) {
        outb(COM1 + UART_SCR, probes[i]);
        if (inb(COM1 + UART_SCR) != probes[i])
            return false;
    }
    return true;
}
