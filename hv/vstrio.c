/* String port I/O (INS/OUTS, with REP): each element through the guest's page tables to the virtual UART or the default deny. */
#include "libc.h"
#include "mailbox.h"
#include "partition.h"
#include "vcpu_state.h"
#include "vstrio.h"
#include "vuart.h"

#define RFLAGS_DF (1ull << 10)
/* Elements moved in one exit: REP continues by re-entering at the same instruction, so
 * an exit costs a bounded time whatever RCX holds (SDM: REP may be interrupted between
 * iterations with RCX and RSI/RDI updated, RIP on the instruction). */
#define VSTRIO_BATCH 256u

static uint64_t vstrio_mask(uint8_t addr_size)
{
    return addr_size == 8 ? ~0ull : (1ull << (addr_size * 8)) - 1;
}

/* A register after a string step of `addr_size` bytes: 64 and 32 write the whole register
 * (32 zero-extends), 16 only its low word. */
static uint64_t vstrio_set(uint64_t reg, uint64_t value, uint8_t addr_size)
{
    if (addr_size == 2)
        return (reg & ~0xffffull) | (value & 0xffff);
    return value & vstrio_mask(addr_size);
}

static uint64_t vstrio_seg_base(struct vcpu *v, const struct vcpu_ops *ops, uint8_t seg)
{
    if (seg == VSEG_FS)
        return ops->reg_get(v, VREG_FS_BASE);
    if (seg == VSEG_GS)
        return ops->reg_get(v, VREG_GS_BASE);
    return 0;
}

enum vstrio_result vstrio_emulate(struct partition *p, const struct exit_info *e)
{
    struct vcpu *v = &p->vcpu;
    const struct vcpu_ops *ops = partition_backend();
    struct guest_regs *r = &v->regs;
    /* Only 64-bit code, where ES, DS and SS have base 0, is emulated; elsewhere the
     * segment bases would be needed too. */
    if (!e->addr_size || !ops->reg_get(v, VREG_CS_LONG))
        return VSTRIO_UNSUPPORTED;
    uint64_t amask = vstrio_mask(e->addr_size);
    uint64_t count = e->rep ? r->rcx & amask : 1;
    uint64_t n = count < VSTRIO_BATCH ? count : VSTRIO_BATCH;
    int64_t step = ops->reg_get(v, VREG_RFLAGS) & RFLAGS_DF ? -(int64_t)e->size : (int64_t)e->size;
    uint64_t *index = e->in ? &r->rdi : &r->rsi;
    uint64_t base = e->in ? 0 : vstrio_seg_base(v, ops, e->seg);
    bool denied = false;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t linear = base + (*index & amask);
        uint32_t value = 0;
        if (e->in) {
            if (!vuart_access(p, e->port, true, &value)) {
                value = 0xffffffffu;   /* no device: all ones, as IN gives */
                denied = true;
            }
            if (vmem_store(v, linear, (const uint8_t *)&value, e->size) != e->size)
                return VSTRIO_BAD_BUFFER;
        } else {
            if (vmem_fetch(v, linear, (uint8_t *)&value, e->size) != e->size)
                return VSTRIO_BAD_BUFFER;
            if (!vuart_access(p, e->port, false, &value))
                denied = true;   /* a port with no device drops it */
        }
        *index = vstrio_set(*index, *index + (uint64_t)step, e->addr_size);
        if (e->rep)
            r->rcx = vstrio_set(r->rcx, r->rcx - 1, e->addr_size);
    }
    /* Counted once an exit, as a batch. */
    if (denied && vdeny_count(p, e))
        mailbox_post(p, MAIL_DENIED);
    if (!e->rep || n == count)
        ops->advance_rip(v, e->insn_len);
    return VSTRIO_DONE;
}
