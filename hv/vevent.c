/* Exception injection, vendor-neutral: the event queued for the next VM entry and the CPU's rules for folding two. */
#include "vcpu_state.h"

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
    /* Otherwise the new exception is delivered now; an external interrupt
     * or NMI it displaces stays pending where it came from (the virtual
     * APIC's IRR, later work) and is offered again. */
    *q = (struct vcpu_event){ .valid = true, .type = VEVENT_EXCEPTION, .vector = vector,
                              .has_error = has_error, .error = error };
    return true;
}
