/* The hypervisor's own serial console: a polled 16550 on COM1. */
#pragma once
#include <stddef.h>

void uart_init(void);
void uart_putc(char c);
void uart_write(const char *s, size_t len);
int uart_getc(void);   /* blocks until a byte arrives */
int uart_poll(void);   /* a received byte, or -1 when none is waiting */
