/* Console rings: a partition's output kept for `log`, streamed for `console`, losses counted. */
#include "console_ring.h"
#include "spinlock.h"

/* A partition's CPU writes its ring while CPU 0 reads it (and the journal
 * has a writer per CPU): every ring operation holds this one lock. */
static spinlock_t lock;

void console_ring_init(struct console_ring *r, uint8_t *buf, uint32_t size)
{
    *r = (struct console_ring){ .buf = buf, .size = size };
}

void console_ring_put(struct console_ring *r, uint8_t c)
{
    uint64_t f = spin_lock_irqsave(&lock);
    if (r->size == 0) {
        r->dropped++;
    } else {
        r->buf[r->written % r->size] = c;
        r->written++;
        if (r->written - r->cursor > r->size) {
            r->dropped += r->written - r->cursor - r->size;
            r->cursor = r->written - r->size;
        }
    }
    spin_unlock_irqrestore(&lock, f);
}

static size_t ring_copy(const struct console_ring *r, uint64_t from, uint8_t *out, size_t max)
{
    size_t n = 0;
    for (uint64_t at = from; at < r->written && n < max; at++) {
        out[n++] = r->buf[at % r->size];
    }
    return n;
}

size_t console_ring_read(struct console_ring *r, uint8_t *out, size_t max)
{
    uint64_t f = spin_lock_irqsave(&lock);
    size_t n = ring_copy(r, r->cursor, out, max);
    r->cursor += n;
    spin_unlock_irqrestore(&lock, f);
    return n;
}

size_t console_ring_tail(const struct console_ring *r, uint8_t *out, size_t max)
{
    uint64_t f = spin_lock_irqsave(&lock);
    uint64_t held = r->written < r->size ? r->written : r->size;
    if (max > held) {
        max = (size_t)held;
    }
    size_t n = ring_copy(r, r->written - max, out, max);
    spin_unlock_irqrestore(&lock, f);
    return n;
}
