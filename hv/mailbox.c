/* The management mailbox: a locked ring that every CPU posts to and CPU 0's MicroPython drains. */
#include "cpus.h"
#include "mailbox.h"
#include "mgmt.h"
#include "partition.h"
#include "spinlock.h"

/* Each partition has at most one message of each kind outstanding, so 4 per
 * partition never overflows; a full box still loses nothing (see post). */
#define MAILBOX_SLOTS 64

static spinlock_t lock;
static struct mail ring[MAILBOX_SLOTS];
static uint32_t head, tail;
static uint64_t posted;

static bool mailbox_put(uint8_t index, enum mailbox_event event)
{
    uint64_t f = spin_lock_irqsave(&lock);
    bool ok = head - tail < MAILBOX_SLOTS;
    if (ok) {
        ring[head++ % MAILBOX_SLOTS] = (struct mail){ index, (uint8_t)event };
        posted++;
    }
    spin_unlock_irqrestore(&lock, f);
    if (ok)
        mgmt_notify();
    return ok;
}

void mailbox_retry(struct partition *p)
{
    if (p->mail_owed && mailbox_put((uint8_t)p->index, (enum mailbox_event)(p->mail_owed - 1)))
        p->mail_owed = 0;
}

void mailbox_post(struct partition *p, enum mailbox_event event)
{
    p->mail_owed = (int)event + 1;
    mailbox_retry(p);
}

/* Only CPU 0 reads the box, so what it peeked is still the oldest when it drops it. */
bool mailbox_peek(struct mail *out)
{
    uint64_t f = spin_lock_irqsave(&lock);
    bool ok = head != tail;
    if (ok)
        *out = ring[tail % MAILBOX_SLOTS];
    spin_unlock_irqrestore(&lock, f);
    return ok;
}

void mailbox_drop(void)
{
    uint64_t f = spin_lock_irqsave(&lock);
    if (head != tail)
        tail++;
    spin_unlock_irqrestore(&lock, f);
}

bool mailbox_empty(void)
{
    return __atomic_load_n(&head, __ATOMIC_ACQUIRE) == __atomic_load_n(&tail, __ATOMIC_ACQUIRE);
}

uint64_t mailbox_posted(void)
{
    return posted;
}
