/* The exits the virtual CPU itself answers: RDMSR, WRMSR, MOV to CR and XSETBV, each emulated or turned into #GP. */
#include "partition.h"
#include "vcpu_state.h"

uint64_t *vcpu_gpr(struct vcpu *v, unsigned n)
{
    struct guest_regs *r = &v->regs;
    uint64_t *const map[16] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, NULL, &r->rbp, &r->rsi, &r->rdi,
                                &r->r8, &r->r9, &r->r10, &r->r11, &r->r12, &r->r13, &r->r14, &r->r15 };
    return map[n & 15];
}

bool vcpu_state_exit(struct vcpu *v, const struct exit_info *e)
{
    const struct vcpu_ops *ops = partition_backend();
    struct guest_regs *r = &v->regs;
    bool ok;
    switch (e->kind) {
    case EXIT_MSR_READ: {
        uint64_t value = 0;
        ok = vmsr_read(v, e->msr, &value);
        if (ok) {
            r->rax = (uint32_t)value;
            r->rdx = value >> 32;
        }
        break;
    }
    case EXIT_MSR_WRITE:
        ok = vmsr_write(v, e->msr, (r->rdx << 32) | (uint32_t)r->rax);
        break;
    case EXIT_CR_WRITE:
        ok = vcr_write(v, e->cr, e->cr_value);
        break;
    case EXIT_CR_READ: {
        uint64_t value = vcr_read(v, e->cr);
        uint64_t *reg = vcpu_gpr(v, e->cr_gpr);
        if (reg)
            *reg = value;
        else
            ops->reg_set(v, VREG_RSP, value);
        ok = true;
        break;
    }
    case EXIT_XSETBV:
        ok = vcr_xsetbv(v, (uint32_t)r->rcx, (r->rdx << 32) | (uint32_t)r->rax);
        break;
    default:
        ok = false;
        break;
    }
    if (ok) {
        ops->advance_rip(v, e->insn_len);
        return true;
    }
    /* A fault: RIP stays on the instruction, as the CPU leaves it. */
    return vevent_gp(v);
}
