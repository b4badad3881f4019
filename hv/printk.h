/* Formatted output for the hypervisor: printk to the serial console, snprintk to a buffer. */
#pragma once
#include <stdarg.h>
#include <stddef.h>

/*
 * Conversions: %s %c %d %i %u %x %X %p %%, length l / ll / z, flags '-' and
 * '0', a decimal width. Return the number of characters produced (for
 * snprintk: that the full output needs, like snprintf).
 */
int printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintk(const char *fmt, va_list ap);
int snprintk(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintk(char *buf, size_t size, const char *fmt, va_list ap);
