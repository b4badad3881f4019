/* The default answer for ports no policy claims, given in C: reads all ones, writes dropped, repeats counted per port. */
#include "partition.h"
#include "vdeny.h"

/*
 * A port sweep is tens of thousands of exits: handed up one by one, each was
 * a MicroPython up-call (about 125 a second under QEMU) and an event line
 * that pushed every other event out of the log. Here each costs what a
 * virtual UART access costs, and the log gets one line a start.
 */

bool vdeny_claimed(const struct partition *p, uint16_t port)
{
    const struct vdeny *d = &p->deny;
    for (uint32_t i = 0; i < d->claim_count; i++) {
        if (port >= d->claims[i].first && port <= d->claims[i].last)
            return true;
    }
    return false;
}

int vdeny_claim(struct partition *p, uint16_t first, uint16_t last)
{
    struct vdeny *d = &p->deny;
    if (first > last || d->claim_count >= VDENY_CLAIMS)
        return -1;
    d->claims[d->claim_count].first = first;
    d->claims[d->claim_count].last = last;
    __atomic_store_n(&d->claim_count, d->claim_count + 1, __ATOMIC_RELEASE);
    return 0;
}

bool vdeny_count(struct partition *p, const struct exit_info *e)
{
    struct vdeny *d = &p->deny;
    d->total++;
    for (uint32_t i = 0; i < d->key_count; i++) {
        if (d->keys[i].port == e->port && d->keys[i].in == e->in) {
            d->keys[i].count++;
            return false;
        }
    }
    if (d->key_count < VDENY_KEYS)
        d->keys[d->key_count++] = (struct vdeny_key){ .port = e->port, .in = e->in, .count = 1 };
    else
        d->uncounted++;
    bool first = !d->noticed;
    d->noticed = true;
    return first;
}

void vdeny_reset(struct partition *p)
{
    struct vdeny *d = &p->deny;
    d->key_count = 0;
    d->total = 0;
    d->uncounted = 0;
    d->noticed = false;
}
