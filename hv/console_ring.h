/* Byte rings that hold what partitions write to their consoles, and the journal of their lines. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/*
 * `written` counts every byte ever put; the ring keeps the last `size`. A
 * reader's cursor that falls more than `size` behind loses bytes, and those
 * are counted in `dropped` rather than silently skipped.
 */
struct console_ring {
    uint8_t *buf;
    uint32_t size;
    uint64_t written;
    uint64_t cursor;      /* the streaming reader's position (console attach, tail) */
    uint64_t dropped;     /* bytes overwritten before the streaming reader saw them */
};

void console_ring_init(struct console_ring *r, uint8_t *buf, uint32_t size);
void console_ring_put(struct console_ring *r, uint8_t c);
/* Bytes after the cursor, advancing it; returns how many were copied. */
size_t console_ring_read(struct console_ring *r, uint8_t *out, size_t max);
/* The last `max` bytes still held (or fewer), without moving the cursor. */
size_t console_ring_tail(const struct console_ring *r, uint8_t *out, size_t max);
