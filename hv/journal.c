/* The journal ring: "[name] line" records from all partitions, for `log` and `tail` on the console. */
#include "journal.h"
#include "page_alloc.h"
#include "spinlock.h"

#define JOURNAL_PAGES 8

static struct console_ring journal;
/* Partitions on several CPUs finish lines at once: each line goes in whole. */
static spinlock_t line_lock;

void journal_init(void)
{
    uint64_t buf = page_alloc_named("console journal", JOURNAL_PAGES);
    console_ring_init(&journal, (uint8_t *)(uintptr_t)buf, buf ? JOURNAL_PAGES * PAGE_SIZE : 0);
}

static void journal_puts(const char *s, uint32_t len)
{
    for (uint32_t i = 0; i < len && s[i]; i++) {
        console_ring_put(&journal, (uint8_t)s[i]);
    }
}

void journal_line(const char *name, const char *line, uint32_t len)
{
    uint64_t f = spin_lock_irqsave(&line_lock);
    console_ring_put(&journal, '[');
    journal_puts(name, 32);
    journal_puts("] ", 2);
    for (uint32_t i = 0; i < len; i++) {
        console_ring_put(&journal, (uint8_t)line[i]);
    }
    console_ring_put(&journal, '\n');
    spin_unlock_irqrestore(&line_lock, f);
}

struct console_ring *journal_ring(void)
{
    return &journal;
}
