/* A small printf: one formatter shared by the serial console (printk) and buffers (snprintk). */
#include <stdbool.h>
#include <stdint.h>
#include "printk.h"
#include "uart16550.h"

/* Where formatted characters go; buffer sinks count past their end to report the needed size. */
struct sink {
    void (*put)(struct sink *s, char c);
    char *buf;
    size_t size;
    size_t len;
};

static void sink_put_uart(struct sink *s, char c)
{
    /* Serial terminals need CR LF; C code writes LF. */
    if (c == '\n')
        uart_putc('\r');
    uart_putc(c);
    s->len++;
}

static void sink_put_buf(struct sink *s, char c)
{
    if (s->len + 1 < s->size)
        s->buf[s->len] = c;
    s->len++;
}

static void emit_padded(struct sink *s, const char *text, size_t len, int width, bool left, char pad)
{
    int fill = width > (int)len ? width - (int)len : 0;
    if (!left)
        while (fill-- > 0)
            s->put(s, pad);
    for (size_t i = 0; i < len; i++)
        s->put(s, text[i]);
    if (left)
        while (fill-- > 0)
            s->put(s, ' ');
}

static void emit_number(struct sink *s, uint64_t v, bool negative, unsigned base, bool upper,
                        int width, bool left, bool zero)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    size_t n = 0;

    do {
        tmp[sizeof(tmp) - 1 - n++] = digits[v % base];
        v /= base;
    } while (v);

    if (negative) {
        /* Zero padding goes between the sign and the digits. */
        if (zero && !left) {
            s->put(s, '-');
            width = width > 0 ? width - 1 : 0;
        } else {
            tmp[sizeof(tmp) - 1 - n++] = '-';
        }
    }
    emit_padded(s, tmp + sizeof(tmp) - n, n, width, left, zero && !left ? '0' : ' ');
}

static void format(struct sink *s, const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            s->put(s, *fmt);
            continue;
        }
        fmt++;

        bool left = false, zero = false, alt = false;
        for (;; fmt++) {
            if (*fmt == '-')
                left = true;
            else if (*fmt == '0')
                zero = true;
            else if (*fmt == '#')
                alt = true;   /* 0x before hexadecimal, as C's printf does */
            else
                break;
        }
        int width = 0;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');

        int longs = 0;
        bool size_t_arg = false;
        for (;; fmt++) {
            if (*fmt == 'l')
                longs++;
            else if (*fmt == 'z')
                size_t_arg = true;
            else if (*fmt != 'h')   /* h/hh: arguments arrive promoted to int anyway */
                break;
        }

        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v;
            if (size_t_arg || longs)
                v = longs >= 2 ? va_arg(ap, long long) : va_arg(ap, long);
            else
                v = va_arg(ap, int);
            uint64_t mag = v < 0 ? -(uint64_t)v : (uint64_t)v;
            emit_number(s, mag, v < 0, 10, false, width, left, zero);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v;
            if (size_t_arg)
                v = va_arg(ap, size_t);
            else if (longs)
                v = longs >= 2 ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned long);
            else
                v = va_arg(ap, unsigned int);
            if (alt && *fmt != 'u') {
                s->put(s, '0');
                s->put(s, *fmt);
                width = width > 2 ? width - 2 : 0;
            }
            emit_number(s, v, false, *fmt == 'u' ? 10 : 16, *fmt == 'X', width, left, zero);
            break;
        }
        case 'p':
            s->put(s, '0');
            s->put(s, 'x');
            emit_number(s, (uint64_t)(uintptr_t)va_arg(ap, void *), false, 16, false, 16, false, true);
            break;
        case 'c': {
            char c = (char)va_arg(ap, int);
            emit_padded(s, &c, 1, width, left, ' ');
            break;
        }
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str)
                str = "(null)";
            size_t len = 0;
            while (str[len])
                len++;
            emit_padded(s, str, len, width, left, ' ');
            break;
        }
        case '%':
            s->put(s, '%');
            break;
        case '\0':
            return;
        default:
            /* Unknown conversion: show it rather than guess at the argument. */
            s->put(s, '%');
            s->put(s, *fmt);
            break;
        }
    }
}

/*
 * One message at a time on the line, whichever CPU prints. A CPU that dies
 * holding the lock (an exception inside printk) must not silence the others:
 * a waiter gives up after about a second's worth of spins and prints anyway.
 */
#define PRINTK_SPINS 50000000u
static volatile uint32_t printk_lock;

int vprintk(const char *fmt, va_list ap)
{
    uint64_t flags;
    __asm__ volatile("pushfq; pop %0; cli" : "=r"(flags) : : "memory");
    bool held = false;
    for (uint32_t spins = 0; spins < PRINTK_SPINS; spins++) {
        if (!__atomic_exchange_n(&printk_lock, 1u, __ATOMIC_ACQUIRE)) {
            held = true;
            break;
        }
        __asm__ volatile("pause");
    }
    struct sink s = { .put = sink_put_uart };
    format(&s, fmt, ap);
    if (held)
        __atomic_store_n(&printk_lock, 0u, __ATOMIC_RELEASE);
    if (flags & (1ull << 9))
        __asm__ volatile("sti" : : : "memory");
    return (int)s.len;
}

int printk(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintk(fmt, ap);
    va_end(ap);
    return n;
}

int vsnprintk(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct sink s = { .put = sink_put_buf, .buf = buf, .size = size };
    format(&s, fmt, ap);
    if (size)
        buf[s.len < size ? s.len : size - 1] = '\0';
    return (int)s.len;
}

int snprintk(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintk(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
