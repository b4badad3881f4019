/* The SVM exit path: one VMRUN through the generated stub, and the #VMEXIT decoded into struct exit_info. */
#include <stdint.h>
#include "apic.h"
#include "boot_symbols.h"
#include "cpus.h"
#include "partition.h"
#include "printk.h"
#include "svm.h"
#include "cpu.h"
#include "tsc.h"
#include "vcpu_state.h"
#include "vlapic.h"

#define CR0_PE   (1ull << 0)
#define CR0_TS   (1ull << 3)
#define CR0_NW   (1ull << 29)
#define CR0_CD   (1ull << 30)
#define CR0_PG   (1ull << 31)
#define CR4_PAE  (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_SVME (1ull << 12)
#define OPCODE_HLT 0xf4
/* EFER bits that are defined (SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE);
 * VMRUN refuses any other set (APM vol. 2, 15.5.1). */
#define EFER_DEFINED 0xfd01ull
#define SEG_ATTR_L  (1u << VMCB_ATTR_L)
#define SEG_ATTR_DB (1u << VMCB_ATTR_DB)

/* Instruction lengths without prefixes, for exits TCG gives no next RIP for (FACTS.md). */
#define LEN_CPUID   2u   /* 0F A2 */
#define LEN_HLT     1u   /* F4 */
#define LEN_VMMCALL 3u   /* 0F 01 D9 */
#define LEN_RDWRMSR 2u   /* 0F 32 / 0F 30 */
#define LEN_XSETBV  3u   /* 0F 01 D1 */

#define MSR_TSC_AUX 0xc0000103u
/* EVENTINJ / EXITINTINFO types (APM vol. 2, 15.20). */
#define SVM_EVENT_INTR 0u
#define SVM_EVENT_NMI 2u
#define SVM_EVENT_EXCEPTION 3u
#define SVM_EVENT_SOFT_INT 4u
#define RFLAGS_IF (1ull << 9)
#define VEC_BP 3u
#define VEC_OF 4u

/* svm_run in the boot text (arch/x86_64/svm/entry.py): guest GPRs in, VMRUN, guest GPRs out;
 * save_host != 0 VMSAVEs the host's FS/GS/TR/LDTR/syscall MSRs first. */
typedef void (*svm_run_fn)(struct guest_regs *regs, uint64_t guest_vmcb_pa, uint64_t host_vmcb_pa,
                           struct vcpu_fpu *fpu, uint64_t save_host);
#define svm_run ((svm_run_fn)(uintptr_t)BOOT_SYM_SVM_RUN)

/*
 * The deadline of the slice each CPU runs, or 0 after the INTR exit that ended
 * one: a different deadline means a new slice, whose start saves the host's
 * VMSAVE state and looks up the CPU's host VMCB (see svm_vcpu_run).
 *
 * The slice timer itself is still armed before and drained after every VMRUN.
 * Arming it once a slice saved about 7 us of a 23 us CPUID exit under QEMU
 * TCG, but on the loaded emulator host it let cyclic windows run long
 * (tests/test_smp.py); docs/performance.md has the figures.
 */
static uint64_t svm_slice_deadline[CPUS_MAX];

static void svm_snapshot_entry(const uint8_t *vmcb, struct svm_entry_state *st)
{
    st->efer = vmcb_read64(vmcb, VMCB_EFER);
    st->cr0 = vmcb_read64(vmcb, VMCB_CR0);
    st->cr4 = vmcb_read64(vmcb, VMCB_CR4);
    st->dr6 = vmcb_read64(vmcb, VMCB_DR6);
    st->dr7 = vmcb_read64(vmcb, VMCB_DR7);
    memcpy(&st->cs_attrib, vmcb + VMCB_CS + VMCB_SEG_ATTRIB, sizeof(st->cs_attrib));
}

/* VMRUN's consistency checks (APM vol. 2, 15.5.1) that Taipan's own state could break, in words. */
static const char *svm_invalid_reason(const uint8_t *vmcb, const struct svm_entry_state *st)
{
    uint64_t efer = st->efer, cr0 = st->cr0, cr4 = st->cr4;
    uint16_t cs_attr = st->cs_attrib;

    if (!(efer & EFER_SVME))
        return "guest EFER.SVME is clear";
    if (efer & ~EFER_DEFINED)
        return "guest EFER has reserved bits set";
    if (!(cr0 & CR0_CD) && (cr0 & CR0_NW))
        return "guest CR0.NW is set with CR0.CD clear";
    if (cr0 >> 32)
        return "guest CR0 has bits 63:32 set";
    if ((cr0 & CR0_PG) && !(cr0 & CR0_PE))
        return "guest CR0.PG is set with CR0.PE clear";
    if ((efer & EFER_LME) && (cr0 & CR0_PG) && !(cr4 & CR4_PAE))
        return "guest EFER.LME and CR0.PG are set with CR4.PAE clear";
    if ((efer & EFER_LME) && (cr0 & CR0_PG) && (cs_attr & SEG_ATTR_L) && (cs_attr & SEG_ATTR_DB))
        return "guest CS has both L and D set in long mode";
    if (vmcb_read64(vmcb, VMCB_CR3) >> 52)
        return "guest CR3 has reserved bits set";
    if (st->dr6 >> 32 || st->dr7 >> 32)
        return "guest DR6 or DR7 has bits 63:32 set";
    if (vmcb_read32(vmcb, VMCB_GUEST_ASID) == 0)
        return "the guest ASID is 0 (the host's)";
    if (!(vmcb_read32(vmcb, VMCB_INTERCEPT_VMRUN_WORD) & VMCB_INTERCEPT_VMRUN))
        return "the VMRUN intercept is clear";
    if (!(vmcb_read64(vmcb, VMCB_NP_CONTROL) & (1ull << VMCB_BIT_NP_ENABLE)))
        return "nested paging is off";
    return "the guest state breaks a consistency check Taipan does not test";
}

static void svm_decode_io(uint64_t info1, uint64_t info2, uint64_t rip, struct exit_info *e)
{
    e->kind = EXIT_IO;
    e->port = (uint16_t)(info1 >> VMCB_BIT_IOIO_PORT_SHIFT);
    e->size = info1 & (1u << VMCB_BIT_IOIO_SZ32) ? 4 : info1 & (1u << VMCB_BIT_IOIO_SZ16) ? 2 : 1;
    e->in = info1 & (1u << VMCB_BIT_IOIO_IN);
    e->string = info1 & (1u << VMCB_BIT_IOIO_STR);
    e->rep = info1 & (1u << VMCB_BIT_IOIO_REP);
    e->addr_size = info1 & (1u << VMCB_BIT_IOIO_A64) ? 8 : info1 & (1u << VMCB_BIT_IOIO_A32) ? 4
                 : info1 & (1u << VMCB_BIT_IOIO_A16) ? 2 : 0;
    /* EXITINFO2 is the RIP of the instruction after the IN/OUT: the length without decoding. */
    e->insn_len = (uint32_t)(info2 - rip);
}

static void svm_decode_npf(uint64_t info1, uint64_t info2, struct exit_info *e)
{
    e->kind = EXIT_PAGE_FAULT;
    e->gpa = info2;
    e->write = info1 & (1u << VMCB_BIT_NPF_WRITE);
    e->exec = info1 & (1u << VMCB_BIT_NPF_EXEC);
    e->read = !e->write && !e->exec;
}

/* The vCPU's queued event as EVENTINJ (vector 7:0, type 10:8, EV 11, V 31, error code 63:32). */
static uint64_t svm_eventinj(struct vcpu *v)
{
    struct vcpu_event *ev = &v->event;
    v->entered = *ev;
    if (!ev->valid)
        return 0;
    ev->valid = false;
    uint64_t type;
    switch (ev->type) {
    case VEVENT_EXT_INTR: type = SVM_EVENT_INTR; break;
    case VEVENT_NMI: type = SVM_EVENT_NMI; break;
    case VEVENT_SOFT_INT: type = SVM_EVENT_SOFT_INT; break;
    default: type = SVM_EVENT_EXCEPTION; break;
    }
    uint64_t inj = ev->vector | type << VMCB_BIT_EVENT_TYPE_SHIFT | 1ull << VMCB_BIT_EXITINTINFO_VALID;
    /* Real mode pushes no error code. */
    if (ev->has_error && (vmcb_read64(((struct svm_vcpu *)v->arch)->vmcb, VMCB_CR0) & CR0_PE))
        inj |= 1ull << VMCB_BIT_EVENT_EV | (uint64_t)ev->error << 32;
    return inj;
}

/*
 * An event whose delivery the #VMEXIT interrupted (EXITINTINFO) is queued
 * again. INTn, INT3 and INTO are not: RIP still points at the instruction,
 * which raises them again when it re-executes (TCG gives no next RIP to
 * inject them with).
 */
static void svm_requeue_event(struct vcpu *v, uint64_t intinfo)
{
    if (!(intinfo & (1ull << VMCB_BIT_EXITINTINFO_VALID)))
        return;
    uint32_t type = (uint32_t)(intinfo >> VMCB_BIT_EVENT_TYPE_SHIFT) & 7;
    uint8_t vector = (uint8_t)intinfo;
    if (type == SVM_EVENT_SOFT_INT || (type == SVM_EVENT_EXCEPTION && (vector == VEC_BP || vector == VEC_OF)))
        return;
    v->event = (struct vcpu_event){
        .valid = true, .vector = vector,
        .type = type == SVM_EVENT_INTR ? VEVENT_EXT_INTR : type == SVM_EVENT_NMI ? VEVENT_NMI : VEVENT_EXCEPTION,
        .has_error = intinfo & (1ull << VMCB_BIT_EVENT_EV), .error = (uint32_t)(intinfo >> 32),
    };
}

/* A general register by its x86 number (0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, ...); RSP lives in the VMCB. */
static uint64_t svm_gpr(const struct vcpu *v, const uint8_t *vmcb, unsigned n)
{
    const struct guest_regs *r = &v->regs;
    const uint64_t regs[16] = { r->rax, r->rcx, r->rdx, r->rbx, vmcb_read64(vmcb, VMCB_RSP), r->rbp, r->rsi, r->rdi,
                                r->r8, r->r9, r->r10, r->r11, r->r12, r->r13, r->r14, r->r15 };
    return regs[n & 15];
}

static bool svm_long64(const uint8_t *vmcb)
{
    uint16_t cs_attr;
    memcpy(&cs_attr, vmcb + VMCB_CS + VMCB_SEG_ATTRIB, sizeof(cs_attr));
    return (vmcb_read64(vmcb, VMCB_EFER) & EFER_LMA) && (cs_attr & SEG_ATTR_L);
}

static bool svm_legacy_prefix(uint8_t b)
{
    return b == 0x66 || b == 0x67 || b == 0xf2 || b == 0xf3 || b == 0xf0 || b == 0x2e || b == 0x36 ||
           b == 0x3e || b == 0x26 || b == 0x64 || b == 0x65;
}

/*
 * The length of the instruction at RIP whose opcode is `base` bytes: the CPU's
 * next RIP where it saves one, else its prefixes (and REX) read from guest
 * memory through the guest's page tables, plus `base`. A fixed length would
 * step a prefixed CPUID into the middle of itself (found by guests/hostile).
 */
static uint32_t svm_insn_len(struct vcpu *v, const uint8_t *vmcb, uint64_t rip, uint32_t base)
{
    uint64_t next = vmcb_read64(vmcb, VMCB_NRIP);
    if (next > rip && next - rip <= 15)
        return (uint32_t)(next - rip);
    uint8_t insn[15];
    bool long64 = svm_long64(vmcb);
    uint64_t cs_base = long64 ? 0 : vmcb_read64(vmcb, VMCB_CS + VMCB_SEG_BASE);
    uint32_t got = vmem_fetch(v, cs_base + rip, insn, sizeof(insn));
    uint32_t i = 0;
    while (i < got && svm_legacy_prefix(insn[i]))
        i++;
    if (long64 && i < got && (insn[i] & 0xf0) == 0x40)
        i++;
    return i + base <= 15 ? i + base : base;
}

/*
 * STI; HLT with an interrupt pending, the vCPU stopped between them (the slice
 * timer's exit lands in STI's shadow): on the hardware the HLT runs in the
 * shadow and the interrupt wakes it, to return after the HLT. QEMU's TCG does
 * not load the shadow at VMRUN, so the interrupt window opened before the HLT
 * and the handler returned onto it: the guest halted for good, its wake-up
 * spent (docs/interrupts.md). So the HLT is completed here, as the CPU would:
 * RIP past it, the shadow over, and the interrupt delivered now.
 */
static void svm_complete_shadowed_hlt(struct vcpu *v, uint8_t *vmcb)
{
    if (!(vmcb_read64(vmcb, VMCB_INTERRUPT_SHADOW) & 1) || !(vmcb_read64(vmcb, VMCB_RFLAGS) & RFLAGS_IF))
        return;
    uint64_t rip = vmcb_read64(vmcb, VMCB_RIP);
    uint64_t cs_base = svm_long64(vmcb) ? 0 : vmcb_read64(vmcb, VMCB_CS + VMCB_SEG_BASE);
    uint8_t opcode;
    if (vmem_fetch(v, cs_base + rip, &opcode, 1) != 1 || opcode != OPCODE_HLT)
        return;
    vmcb_write64(vmcb, VMCB_RIP, rip + 1);
    vmcb_write64(vmcb, VMCB_INTERRUPT_SHADOW, 0);
}

/*
 * OUTS's segment, DS unless a prefix overrides it, from the instruction's prefixes
 * (EXITINFO1's SEG needs decode assists, which TCG lacks); and in 64-bit code, where QEMU's
 * TCG sets no address-size bit the APM names, the address size from the 0x67 prefix.
 */
static void svm_decode_string(struct vcpu *v, const uint8_t *vmcb, struct exit_info *e)
{
    static const uint8_t overrides[][2] = {
        { 0x26, VSEG_ES }, { 0x2e, VSEG_CS }, { 0x36, VSEG_SS }, { 0x3e, VSEG_DS }, { 0x64, VSEG_FS }, { 0x65, VSEG_GS },
    };
    uint8_t insn[15];
    bool long64 = svm_long64(vmcb);
    uint32_t got = vmem_fetch(v, (long64 ? 0 : vmcb_read64(vmcb, VMCB_CS + VMCB_SEG_BASE)) + e->rip, insn,
                              sizeof(insn));
    bool addr32 = false;
    e->seg = VSEG_DS;
    for (uint32_t i = 0; i < got && svm_legacy_prefix(insn[i]); i++) {
        addr32 |= insn[i] == 0x67;
        for (unsigned k = 0; k < sizeof(overrides) / sizeof(overrides[0]); k++) {
            if (insn[i] == overrides[k][0])
                e->seg = overrides[k][1];
        }
    }
    if (long64)
        e->addr_size = addr32 ? 4 : 8;
}

/*
 * A CR0/CR4/CR8 write intercept gives no operand without decode assists (TCG has
 * none): read the instruction through the guest's page tables. MOV to CR
 * (0F 22 /r), CLTS (0F 06) and register-form LMSW (0F 01 /6) are the writes
 * these intercepts see; anything else is EXIT_OTHER, for policy.
 */
static void svm_decode_cr_write(struct vcpu *v, const uint8_t *vmcb, unsigned cr, struct exit_info *e)
{
    uint8_t insn[15];
    uint64_t cs_base = vmcb_read64(vmcb, VMCB_CS + VMCB_SEG_BASE);
    bool long64 = svm_long64(vmcb);
    uint32_t got = vmem_fetch(v, (long64 ? 0 : cs_base) + e->rip, insn, sizeof(insn));
    uint32_t i = 0;
    uint8_t rex = 0;
    e->kind = EXIT_OTHER;
    while (i < got && svm_legacy_prefix(insn[i]))
        i++;
    if (long64 && i < got && (insn[i] & 0xf0) == 0x40)
        rex = insn[i++];
    if (i + 2 > got || insn[i] != 0x0f)
        return;
    uint8_t op = insn[i + 1];
    uint64_t old = cr == 8 ? 0 : svm_reg_get(v, cr == 0 ? VREG_CR0 : VREG_CR4);
    if (op == 0x22 && i + 3 <= got) {
        uint8_t modrm = insn[i + 2];
        unsigned target = ((modrm >> 3) & 7) | (rex & 4 ? 8u : 0u);
        if (target != cr)
            return;
        uint64_t value = svm_gpr(v, vmcb, (modrm & 7) | (rex & 1 ? 8u : 0u));
        e->cr_value = long64 ? value : (uint32_t)value;
        e->insn_len = i + 3;
    } else if (op == 0x06 && cr == 0) {
        e->cr_value = old & ~CR0_TS;
        e->insn_len = i + 2;
    } else if (op == 0x01 && cr == 0 && i + 3 <= got && (insn[i + 2] & 0xf8) == 0xf0) {
        /* LMSW writes PE, MP, EM, TS and can set PE but never clear it. */
        uint64_t src = svm_gpr(v, vmcb, (insn[i + 2] & 7) | (rex & 1 ? 8u : 0u)) & 0xf;
        e->cr_value = (old & ~0xeull) | src | (old & CR0_PE);
        e->insn_len = i + 3;
    } else {
        return;
    }
    e->kind = EXIT_CR_WRITE;
    e->cr = (uint8_t)cr;
}

void svm_vcpu_run(struct vcpu *v, uint64_t deadline_tsc, struct exit_info *e)
{
    struct svm_vcpu *s = v->arch;
    uint8_t *vmcb = s->vmcb;

    e->kind = EXIT_NONE;
    e->raw_reason = 0;
    e->insn_len = 0;
    e->qualification = 0;

    uint64_t now = tsc_read();
    if (deadline_tsc <= now) {
        /* The slice is already over: entering would only waste a VMRUN. */
        e->kind = EXIT_PREEMPT;
        e->rip = vmcb_read64(vmcb, VMCB_RIP);
        return;
    }

    vmcb[VMCB_TLB_CONTROL] = (uint8_t)(s->flush_tlb ? VMCB_TLB_FLUSH_ALL : VMCB_TLB_DO_NOTHING);
    s->flush_tlb = false;
    /*
     * The virtual APIC's interrupt or NMI when the guest can take it; if it
     * cannot (IF clear, an interrupt shadow, an event first), V_IRQ with the
     * VINTR intercept exits as soon as it can, and an NMI waits for the IRET
     * that ends the last one.
     */
    bool window = false;
    if (vevent_interrupt_waiting(v)) {
        if (!v->event.valid && vlapic_pending(v) >= 0)
            svm_complete_shadowed_hlt(v, vmcb);
        bool shadow = vmcb_read64(vmcb, VMCB_INTERRUPT_SHADOW) & 1;
        window = vevent_interrupt(v, (vmcb_read64(vmcb, VMCB_RFLAGS) & RFLAGS_IF) && !shadow,
                                  !shadow && !s->nmi_blocked);
    }
    if (v->event.valid && v->event.type == VEVENT_NMI)
        s->nmi_blocked = true;
    /* V_TPR is what the guest's CR8 reads and writes (V_INTR_MASKING): the virtual APIC's TPR[7:4]. */
    uint64_t vintr = 1ull << VMCB_BIT_V_INTR_MASKING | ((v->lapic.tpr >> 4) & 0xf);
    if (window)
        vintr |= 1ull << VMCB_BIT_V_IRQ | 0xfull << VMCB_BIT_V_INTR_PRIO_SHIFT | 1ull << VMCB_BIT_V_IGN_TPR;
    vmcb_write64(vmcb, VMCB_V_INTR, vintr);
    uint32_t misc1 = vmcb_read32(vmcb, VMCB_INTERCEPT_MISC1) & ~(VMCB_INTERCEPT_VINTR | VMCB_INTERCEPT_IRET);
    if (window)
        misc1 |= VMCB_INTERCEPT_VINTR;
    if (s->nmi_blocked)
        misc1 |= VMCB_INTERCEPT_IRET;
    vmcb_write32(vmcb, VMCB_INTERCEPT_MISC1, misc1);
    /* An exception the core raised, an event the last exit interrupted
     * (e.g. a guest exception cut by the slice timer), or the interrupt. */
    vmcb_write64(vmcb, VMCB_EVENTINJ, svm_eventinj(v));
    vmcb_write64(vmcb, VMCB_RAX, v->regs.rax);
    svm_snapshot_entry(vmcb, &s->entered);

    if (s->has_tsc_aux) {
        s->host_tsc_aux = rdmsr(MSR_TSC_AUX);   /* this CPU's: the vCPU may run on any */
        wrmsr(MSR_TSC_AUX, s->tsc_aux);
    }
    /*
     * A new slice saves the host's VMSAVE state anew, since host code between
     * slices (MicroPython, the scheduler) may have changed it. Within a slice
     * the host runs only the exit fast path, which changes none of it.
     */
    uint64_t *slice = &svm_slice_deadline[cpu_current()->index];
    bool new_slice = deadline_tsc != *slice;
    if (new_slice) {
        *slice = deadline_tsc;
        /* A slice runs on one CPU: look its host VMCB up once, not at every exit. */
        s->host_vmcb_pa = svm_host_vmcb();
    }
    /*
     * Armed before every VMRUN and stopped after, though each write of the
     * initial count costs about 7 us under QEMU TCG (docs/performance.md):
     * armed once a slice instead, the timer is often already pending at
     * VMRUN, and under QEMU's multi-threaded TCG -smp 4 that was seen twice
     * in about thirty 10-second runs to end in a page fault on the host's
     * first instruction after #VMEXIT and a triple fault; armed per exit it
     * did not happen in the runs since (docs/performance.md).
     */
    apic_timer_arm(deadline_tsc - now);
    svm_run(&v->regs, s->vmcb_pa, s->host_vmcb_pa, &v->fpu, new_slice);
    apic_timer_drain();
    if (s->has_tsc_aux)
        wrmsr(MSR_TSC_AUX, s->host_tsc_aux);

    v->regs.rax = vmcb_read64(vmcb, VMCB_RAX);
    /* A MOV to CR8 changed V_TPR: TPR[7:4] from it, TPR[3:0] cleared, as CR8 writes do. */
    uint32_t vtpr = (uint32_t)vmcb_read64(vmcb, VMCB_V_INTR) & 0xf;
    if (vtpr != ((v->lapic.tpr >> 4) & 0xf))
        v->lapic.tpr = vtpr << 4;
    uint64_t code = vmcb_read64(vmcb, VMCB_EXITCODE);
    uint64_t info1 = vmcb_read64(vmcb, VMCB_EXITINFO1);
    uint64_t info2 = vmcb_read64(vmcb, VMCB_EXITINFO2);
    svm_requeue_event(v, vmcb_read64(vmcb, VMCB_EXITINTINFO));

    e->raw_reason = (uint32_t)code;
    e->rip = vmcb_read64(vmcb, VMCB_RIP);
    e->qualification = info1;

    switch ((uint32_t)code) {
    case VMCB_EXIT_CPUID:
        e->kind = EXIT_CPUID;
        e->insn_len = svm_insn_len(v, vmcb, e->rip, LEN_CPUID);
        break;
    case VMCB_EXIT_HLT:
        e->kind = EXIT_HLT;
        e->insn_len = svm_insn_len(v, vmcb, e->rip, LEN_HLT);
        break;
    case VMCB_EXIT_VMMCALL:
        e->kind = EXIT_HYPERCALL;
        e->insn_len = svm_insn_len(v, vmcb, e->rip, LEN_VMMCALL);
        break;
    case VMCB_EXIT_IOIO:
        svm_decode_io(info1, info2, e->rip, e);
        if (e->string)
            svm_decode_string(v, vmcb, e);
        break;
    case VMCB_EXIT_MSR:
        /* EXITINFO1: 0 for RDMSR, 1 for WRMSR. */
        e->kind = info1 ? EXIT_MSR_WRITE : EXIT_MSR_READ;
        e->msr = (uint32_t)v->regs.rcx;
        e->insn_len = svm_insn_len(v, vmcb, e->rip, LEN_RDWRMSR);
        break;
    case VMCB_EXIT_WRITE_CR0:
        svm_decode_cr_write(v, vmcb, 0, e);
        break;
    case VMCB_EXIT_WRITE_CR4:
        svm_decode_cr_write(v, vmcb, 4, e);
        break;
    case VMCB_EXIT_WRITE_CR8:
        svm_decode_cr_write(v, vmcb, 8, e);
        break;
    case VMCB_EXIT_XSETBV:
        e->kind = EXIT_XSETBV;
        e->insn_len = svm_insn_len(v, vmcb, e->rip, LEN_XSETBV);
        break;
    case VMCB_EXIT_VMRUN: case VMCB_EXIT_VMLOAD: case VMCB_EXIT_VMSAVE: case VMCB_EXIT_STGI:
    case VMCB_EXIT_CLGI: case VMCB_EXIT_SKINIT: case VMCB_EXIT_INVLPGA:
        /* Intercepted because the hardware's EFER.SVME is set under the guest; the guest's
         * own EFER.SVME is clear, so the CPU it sees raises #UD. */
        e->kind = EXIT_INVALID_OPCODE;
        break;
    case VMCB_EXIT_NPF:
        svm_decode_npf(info1, info2, e);
        break;
    case VMCB_EXIT_SHUTDOWN:
        e->kind = EXIT_TRIPLE_FAULT;
        break;
    case VMCB_EXIT_VINTR:
        e->kind = EXIT_INTR_WINDOW;
        break;
    case VMCB_EXIT_IRET:
        /* The NMI handler returns: the IRET runs unintercepted, and the next NMI may come. */
        s->nmi_blocked = false;
        e->kind = EXIT_INTR_WINDOW;
        break;
    case VMCB_EXIT_INTR:
        /* The slice ends: a call with the same deadline is a new slice too. */
        svm_slice_deadline[cpu_current()->index] = 0;
        e->kind = EXIT_PREEMPT;
        break;
    case VMCB_EXIT_INVALID:
        e->kind = EXIT_ENTRY_FAILED;
        e->error = (uint32_t)code;
        snprintk(e->what, sizeof(e->what), "VMRUN refused the guest (VMEXIT_INVALID): %s",
                 svm_invalid_reason(vmcb, &s->entered));
        break;
    default:
        e->kind = EXIT_OTHER;
        break;
    }
}
