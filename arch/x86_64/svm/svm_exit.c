/* The SVM exit path: one VMRUN through the generated stub, and the #VMEXIT decoded into struct exit_info. */
#include <stdint.h>
#include "apic.h"
#include "boot_symbols.h"
#include "partition.h"
#include "printk.h"
#include "svm.h"
#include "tsc.h"

#define CR0_PE   (1ull << 0)
#define CR0_NW   (1ull << 29)
#define CR0_CD   (1ull << 30)
#define CR0_PG   (1ull << 31)
#define CR4_PAE  (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_SVME (1ull << 12)
/* EFER bits that are defined (SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE);
 * VMRUN refuses any other set (APM vol. 2, 15.5.1). */
#define EFER_DEFINED 0xfd01ull
#define SEG_ATTR_L  (1u << VMCB_ATTR_L)
#define SEG_ATTR_DB (1u << VMCB_ATTR_DB)

/* Instruction lengths for exits TCG gives no next RIP for (FACTS.md). */
#define LEN_CPUID   2u   /* 0F A2 */
#define LEN_HLT     1u   /* F4 */
#define LEN_VMMCALL 3u   /* 0F 01 D9 */
#define LEN_RDWRMSR 2u   /* 0F 32 / 0F 30 */

/* svm_run in the boot text (arch/x86_64/svm/entry.py): guest GPRs in, VMRUN, guest GPRs out. */
typedef void (*svm_run_fn)(struct guest_regs *regs, uint64_t guest_vmcb_pa, uint64_t host_vmcb_pa);
#define svm_run ((svm_run_fn)(uintptr_t)BOOT_SYM_SVM_RUN)

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
    /* An event the last exit interrupted (e.g. a guest exception cut by the
     * slice timer) would be lost unless injected again. */
    vmcb_write64(vmcb, VMCB_EVENTINJ, s->reinject);
    s->reinject = 0;
    vmcb_write64(vmcb, VMCB_RAX, v->regs.rax);
    svm_snapshot_entry(vmcb, &s->entered);

    apic_timer_arm(deadline_tsc - now);
    svm_run(&v->regs, s->vmcb_pa, svm_host_vmcb());
    apic_timer_drain();

    v->regs.rax = vmcb_read64(vmcb, VMCB_RAX);
    uint64_t code = vmcb_read64(vmcb, VMCB_EXITCODE);
    uint64_t info1 = vmcb_read64(vmcb, VMCB_EXITINFO1);
    uint64_t info2 = vmcb_read64(vmcb, VMCB_EXITINFO2);
    uint64_t intinfo = vmcb_read64(vmcb, VMCB_EXITINTINFO);
    if (intinfo & (1ull << VMCB_BIT_EXITINTINFO_VALID))
        s->reinject = intinfo;

    e->raw_reason = (uint32_t)code;
    e->rip = vmcb_read64(vmcb, VMCB_RIP);
    e->qualification = info1;

    switch ((uint32_t)code) {
    case VMCB_EXIT_CPUID:
        e->kind = EXIT_CPUID;
        e->insn_len = LEN_CPUID;
        break;
    case VMCB_EXIT_HLT:
        e->kind = EXIT_HLT;
        e->insn_len = LEN_HLT;
        break;
    case VMCB_EXIT_VMMCALL:
        e->kind = EXIT_HYPERCALL;
        e->insn_len = LEN_VMMCALL;
        break;
    case VMCB_EXIT_IOIO:
        svm_decode_io(info1, info2, e->rip, e);
        break;
    case VMCB_EXIT_MSR:
        /* EXITINFO1: 0 for RDMSR, 1 for WRMSR. */
        e->kind = info1 ? EXIT_MSR_WRITE : EXIT_MSR_READ;
        e->msr = (uint32_t)v->regs.rcx;
        e->insn_len = LEN_RDWRMSR;
        break;
    case VMCB_EXIT_NPF:
        svm_decode_npf(info1, info2, e);
        break;
    case VMCB_EXIT_SHUTDOWN:
        e->kind = EXIT_TRIPLE_FAULT;
        break;
    case VMCB_EXIT_INTR:
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
