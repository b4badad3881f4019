/* Exception injection, vendor-neutral: the event queued for the next VM entry and the CPU's rules for folding two. */
#include "partition.h"
#include "vcpu_state.h"
#include "vlapic.h"

/* SDM vol. 3A, table 6-4: #DE, #TS, #NP, #SS, #GP are contributory. */
static bool vevent_contributory(uint8_t vector)
{
    return vector == 0 || (vector >= 10 && vector <= 13);
}

#define VEC_PF 14

bool vevent_exception(struct vcpu *v, uint8_t vector, bool has_error, uint32_t error)
{
    struct vcpu_event *q = &v->event;
    if (q->valid && q->type == VEVENT_EXCEPTION) {
        /* An exception while one is still to be delivered (an exit that
         * interrupted its delivery): table 6-5 decides. */
        if (q->vector == VEC_DF)
            return false;
        bool first_pf = q->vector == VEC_PF;
        if ((vevent_contributory(q->vector) || first_pf) && (vevent_contributory(vector) || vector == VEC_PF)) {
            *q = (struct vcpu_event){ .valid = true, .type = VEVENT_EXCEPTION, .vector = VEC_DF, .has_error = true };
            return true;
        }
    }
    /* Otherwise the new exception is delivered now. An external interrupt
     * it displaces was already taken from IRR into ISR: it goes back to
     * IRR, and an NMI back to pending, to be offered again. */
    if (q->valid && q->type == VEVENT_EXT_INTR) {
        v->lapic.isr[q->vector / 32] &= ~(1u << (q->vector % 32));
        vlapic_accept(v, q->vector, v->lapic.tmr[q->vector / 32] & (1u << (q->vector % 32)));
        v->part->interrupts--;
    } else if (q->valid && q->type == VEVENT_NMI) {
        v->lapic.nmi_pending = true;
    }
    *q = (struct vcpu_event){ .valid = true, .type = VEVENT_EXCEPTION, .vector = vector,
                              .has_error = has_error, .error = error };
    return true;
}

bool vevent_interrupt(struct vcpu *v, bool open, bool nmi_open)
{
    struct vlapic *a = &v->lapic;
    int vector = vlapic_pending(v);
    /* An event still to be delivered goes first; the interrupt waits for
     * the window after it (VMX and SVM inject one event per entry). */
    if (v->event.valid)
        return a->nmi_pending || vector >= 0;
    if (a->nmi_pending && nmi_open) {
        a->nmi_pending = false;
        v->event = (struct vcpu_event){ .valid = true, .type = VEVENT_NMI, .vector = VEC_NMI };
        return vector >= 0;
    }
    if (vector < 0)
        return a->nmi_pending;
    if (!open)
        return true;
    vlapic_ack(v, (uint8_t)vector);
    v->event = (struct vcpu_event){ .valid = true, .type = VEVENT_EXT_INTR, .vector = (uint8_t)vector };
    return a->nmi_pending;
}

bool vevent_wakes_hlt(struct vcpu *v, bool interrupts_on)
{
    return v->event.valid || v->lapic.nmi_pending || (interrupts_on && vlapic_pending(v) >= 0);
}
