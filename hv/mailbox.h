/* Messages from any CPU to the management context on CPU 0: up-calls for policy, and partitions that ended. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

enum mailbox_event {
    MAIL_UPCALL,     /* p->pending waits for policy's answer (partition_answer) */
    MAIL_EXITED,     /* it ended itself: p->exit_code */
    MAIL_FAULTED,    /* the hypervisor stopped it: p->reason */
    MAIL_TIMEOUT,    /* policy did not answer in time; stopped: p->reason */
    MAIL_DENIED,     /* its first access since its start to a port no policy claims (p->deny) */
};

struct mail {
    uint8_t index;   /* the partition */
    uint8_t event;   /* enum mailbox_event */
};

struct partition;
/* Post from the partition's CPU. When the box is full the message is kept
 * in the partition and posted again by mailbox_retry: nothing is lost. */
void mailbox_post(struct partition *p, enum mailbox_event event);
void mailbox_retry(struct partition *p);
/* The oldest message (CPU 0), left in the box until mailbox_drop takes it;
 * false when there is none. */
bool mailbox_peek(struct mail *out);
void mailbox_drop(void);
bool mailbox_empty(void);
uint64_t mailbox_posted(void);
