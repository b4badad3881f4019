/* The hypervisor's own serial console: a polled 16550 on COM1. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

void uart_init(void);
void uart_putc(char c);
void uart_write(const char *s, size_t len);
int uart_getc(void);   /* blocks until a byte arrives */
int uart_poll(void);   /* a received byte, or -1 when none is waiting */
bool uart_rx_ready(void);   /* a received byte waits, without taking it */
bool uart_present(void);   /* a 16550 answers at COM1 (its scratch register holds a value) */
