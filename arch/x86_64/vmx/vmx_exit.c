/* One VMX entry and its exit: the preemption-timer slice, the stub call, and the exit decoded into struct exit_info. */
#include "boot_symbols.h"
#include "cpu.h"
#include "cpus.h"
#include "irq.h"
#include "libc.h"
#include "partition.h"
#include "printk.h"
#include "tsc.h"
#include "vcpu_state.h"
#include "vlapic.h"
#include "vmx.h"

/* The generated stub (arch/x86_64/vmx/entry.py): 0 after a VM exit, else the VMfail kind.
 * It switches the FPU/SSE/AVX state and XCR0 from fpu around the guest. */
typedef uint32_t (*vmx_enter_fn)(struct guest_regs *regs, uint64_t resume, struct vcpu_fpu *fpu);
#define ENTER_EXITED 0u
#define ENTER_FAIL_VALID 1u
#define ENTER_FAIL_INVALID 2u

#define PREEMPT_MAX 0xffffffffull

/* I/O exit qualification (SDM vol. 3C, table 28-5). */
#define IO_SIZE(q) ((uint8_t)(((q) & 7) + 1))
#define IO_IN (1ull << 3)
#define IO_STRING (1ull << 4)
#define IO_REP (1ull << 5)
#define IO_PORT(q) ((uint16_t)((q) >> 16))
/* EPT violation qualification (table 28-7). */
#define EPT_READ (1ull << 0)
#define EPT_WRITE (1ull << 1)
#define EPT_EXEC (1ull << 2)
/* Control-register access qualification (table 28-3). */
#define CRQ_CR(q) ((unsigned)((q) & 0xf))
#define CRQ_TYPE(q) ((unsigned)(((q) >> 4) & 3))
#define CRQ_GPR(q) ((unsigned)(((q) >> 8) & 0xf))
#define CRQ_LMSW_DATA(q) ((uint16_t)((q) >> 16))
#define CRQ_MOV_TO_CR 0
#define CRQ_MOV_FROM_CR 1
#define CRQ_LMSW 3
/* Interruption information: valid bit (25.8.3, 28.2.4). */
#define INTR_INFO_VALID (1u << 31)
#define INTR_INFO_HAS_ERROR (1u << 11)
#define INTR_TYPE(i) (((i) >> 8) & 7)
#define INTR_TYPE_SOFT_INT 4
#define INTR_TYPE_PRIV_SOFT_EXC 5
#define INTR_TYPE_SOFT_EXC 6

#define RFLAGS_RESERVED_CLEAR 0xffffffffffc08028ull   /* bits 3, 5, 15, 22-63 must be 0 */
#define RFLAGS_FIXED1 (1ull << 1)
#define RFLAGS_VM (1ull << 17)
#define RFLAGS_IF (1ull << 9)
/* Guest interruptibility state (24.4.2): blocking by STI, by MOV SS, by NMI. */
#define BLOCK_STI (1u << 0)
#define BLOCK_MOV_SS (1u << 1)
#define BLOCK_NMI (1u << 3)

/* VM-instruction error numbers (SDM vol. 3C, 31.4). */
static const char *const instruction_errors[] = {
    [1] = "VMCALL executed in VMX root operation",
    [2] = "VMCLEAR with invalid physical address",
    [3] = "VMCLEAR with VMXON pointer",
    [4] = "VMLAUNCH with non-clear VMCS",
    [5] = "VMRESUME with non-launched VMCS",
    [6] = "VMRESUME after VMXOFF",
    [7] = "VM entry with invalid control field(s)",
    [8] = "VM entry with invalid host-state field(s)",
    [9] = "VMPTRLD with invalid physical address",
    [10] = "VMPTRLD with VMXON pointer",
    [11] = "VMPTRLD with incorrect VMCS revision identifier",
    [12] = "VMREAD/VMWRITE from/to unsupported VMCS component",
    [13] = "VMWRITE to read-only VMCS component",
    [15] = "VMXON executed in VMX root operation",
    [16] = "VM entry with invalid executive-VMCS pointer",
    [17] = "VM entry with non-launched executive VMCS",
    [18] = "VM entry with executive-VMCS pointer not VMXON pointer",
    [19] = "VMCALL with non-clear VMCS",
    [20] = "VMCALL with invalid VM-exit control fields",
    [22] = "VMCALL with incorrect MSEG revision identifier",
    [23] = "VMXOFF under dual-monitor treatment of SMIs and SMM",
    [24] = "VMCALL with invalid SMM-monitor features",
    [25] = "VM entry with invalid VM-execution control fields in executive VMCS",
    [26] = "VM entry with events blocked by MOV SS",
    [28] = "invalid operand to INVEPT/INVVPID",
};

static const char *vmx_error_text(uint32_t error)
{
    if (error < sizeof(instruction_errors) / sizeof(instruction_errors[0]) && instruction_errors[error])
        return instruction_errors[error];
    return "unknown VM-instruction error";
}

/* Bits outside fixed1 or missing from fixed0, for CR0 and CR4 checks. */
static bool fixed_ok(uint64_t value, uint64_t fixed0, uint64_t fixed1)
{
    return (value & fixed0) == fixed0 && (value & ~fixed1) == 0;
}

#define PROBLEM(cond, text)              \
    do {                                 \
        if (cond) {                      \
            snprintk(buf, size, text);   \
            return buf;                  \
        }                                \
    } while (0)

/* A segment's limit and G bit agree (SDM vol. 3C, 27.3.1.2): limit[11:0] all
 * ones if G is set, limit[31:20] all zeros if G is clear. */
static bool limit_ok(uint32_t limit, uint32_t ar)
{
    bool g = ar & (1u << 15);
    if ((limit & 0xfff) != 0xfff && g)
        return false;
    if ((limit & 0xfff00000u) && !g)
        return false;
    return true;
}

/*
 * The guest-state checks of SDM vol. 3C 27.3.1 that Taipan's own setup could
 * plausibly break, in the order the manual lists them; the first one the
 * current VMCS fails, in words.
 */
static const char *vmx_exit_guest_state_problem(char *buf, uint32_t size)
{
    uint32_t entry = (uint32_t)vmx_vmread(VMCS_ENTRY_CONTROLS);
    uint32_t proc2 = (uint32_t)vmx_vmread(VMCS_PROC_BASED_CONTROLS2);
    bool ia32e = entry & VMX_ENTRY_CTL_IA32E_MODE_GUEST;
    bool unrestricted = proc2 & VMX_PROC2_UNRESTRICTED_GUEST;
    uint64_t cr0 = vmx_vmread(VMCS_GUEST_CR0), cr4 = vmx_vmread(VMCS_GUEST_CR4);
    uint64_t efer = vmx_vmread(VMCS_GUEST_IA32_EFER);
    uint64_t fixed0 = vmx_caps.cr0_fixed0;
    if (unrestricted)
        fixed0 &= ~(CR0_PE | CR0_PG);

    PROBLEM(!fixed_ok(cr0, fixed0, vmx_caps.cr0_fixed1), "guest CR0: a bit fixed by IA32_VMX_CR0_FIXED0/1 is wrong");
    PROBLEM((cr0 & CR0_PG) && !(cr0 & CR0_PE), "guest CR0: PG set with PE clear");
    PROBLEM(!fixed_ok(cr4, vmx_caps.cr4_fixed0, vmx_caps.cr4_fixed1), "guest CR4: a bit fixed by IA32_VMX_CR4_FIXED0/1 is wrong (VMXE?)");
    PROBLEM(ia32e && (!(cr0 & CR0_PG) || !(cr4 & CR4_PAE)), "IA-32e mode guest without CR0.PG and CR4.PAE");
    PROBLEM(!ia32e && (cr4 & (1ull << 17)), "guest CR4: PCIDE set outside IA-32e mode");
    PROBLEM(vmx_vmread(VMCS_GUEST_IA32_DEBUGCTL) & ~0xffc3ull, "guest IA32_DEBUGCTL: reserved bits set");
    PROBLEM(!!(efer & EFER_LMA) != ia32e, "guest IA32_EFER: LMA differs from the IA-32e mode guest control");
    PROBLEM((cr0 & CR0_PG) && !!(efer & EFER_LMA) != !!(efer & EFER_LME), "guest IA32_EFER: LMA differs from LME with paging on");

    uint32_t cs_ar = (uint32_t)vmx_vmread(VMCS_GUEST_CS_ACCESS);
    uint32_t ss_ar = (uint32_t)vmx_vmread(VMCS_GUEST_SS_ACCESS);
    uint32_t tr_ar = (uint32_t)vmx_vmread(VMCS_GUEST_TR_ACCESS);
    uint32_t ldtr_ar = (uint32_t)vmx_vmread(VMCS_GUEST_LDTR_ACCESS);
    uint32_t cs_type = cs_ar & 0xf;
    PROBLEM(!(cs_type == 9 || cs_type == 11 || cs_type == 13 || cs_type == 15 || (unrestricted && cs_type == 3)),
            "guest CS access rights: type is not an accessed code segment");
    PROBLEM(!(cs_ar & (1u << 4)) || !(cs_ar & (1u << 7)), "guest CS access rights: S or P clear");
    PROBLEM(ia32e && (cs_ar & (1u << 13)) && (cs_ar & (1u << 14)), "guest CS access rights: L and D both set");
    PROBLEM(!limit_ok((uint32_t)vmx_vmread(VMCS_GUEST_CS_LIMIT), cs_ar), "guest CS: limit and G bit disagree");
    PROBLEM(!(ss_ar & (1u << 16)) && ((ss_ar & 0xf) != 3 && (ss_ar & 0xf) != 7), "guest SS access rights: not a writable data segment");
    PROBLEM(!(ss_ar & (1u << 16)) && ((ss_ar >> 5) & 3) != ((cs_ar >> 5) & 3) && !unrestricted,
            "guest SS access rights: DPL differs from CS's");
    PROBLEM(tr_ar & (1u << 16), "guest TR: unusable (VM entry needs a TSS)");
    PROBLEM(ia32e ? (tr_ar & 0xf) != 11 : ((tr_ar & 0xf) != 11 && (tr_ar & 0xf) != 3),
            "guest TR access rights: not a busy TSS");
    PROBLEM((tr_ar & (1u << 4)) || !(tr_ar & (1u << 7)), "guest TR access rights: S set or P clear");
    PROBLEM(!limit_ok((uint32_t)vmx_vmread(VMCS_GUEST_TR_LIMIT), tr_ar), "guest TR: limit and G bit disagree");
    PROBLEM(vmx_vmread(VMCS_GUEST_TR_SELECTOR) & 4, "guest TR selector: TI set");
    PROBLEM(!(ldtr_ar & (1u << 16)) && (ldtr_ar & 0xf) != 2, "guest LDTR: usable but not an LDT");
    PROBLEM(vmx_vmread(VMCS_GUEST_GDTR_LIMIT) > 0xffff || vmx_vmread(VMCS_GUEST_IDTR_LIMIT) > 0xffff,
            "guest GDTR/IDTR limit above 0xffff");

    uint64_t rflags = vmx_vmread(VMCS_GUEST_RFLAGS);
    PROBLEM((rflags & RFLAGS_RESERVED_CLEAR) || !(rflags & RFLAGS_FIXED1), "guest RFLAGS: reserved bits wrong (bit 1 must be set)");
    PROBLEM(ia32e && (rflags & RFLAGS_VM), "guest RFLAGS: VM set in IA-32e mode");
    uint64_t rip = vmx_vmread(VMCS_GUEST_RIP);
    PROBLEM(!(ia32e && (cs_ar & (1u << 13))) && (rip >> 32), "guest RIP: bits 63:32 set outside 64-bit mode");
    PROBLEM(vmx_vmread(VMCS_GUEST_ACTIVITY_STATE) > 3, "guest activity state: not a defined state");
    PROBLEM(vmx_vmread(VMCS_VMCS_LINK_POINTER) != ~0ull, "VMCS link pointer: not all ones");
    return NULL;
}

/* Error 7: the control checks of 27.2.1 a Taipan VMCS could break. */
static const char *vmx_control_problem(char *buf, uint32_t size)
{
    uint32_t pin = (uint32_t)vmx_vmread(VMCS_PIN_BASED_CONTROLS), proc = (uint32_t)vmx_vmread(VMCS_PROC_BASED_CONTROLS);
    uint32_t proc2 = (uint32_t)vmx_vmread(VMCS_PROC_BASED_CONTROLS2);
    uint32_t exit = (uint32_t)vmx_vmread(VMCS_EXIT_CONTROLS), entry = (uint32_t)vmx_vmread(VMCS_ENTRY_CONTROLS);
    uint64_t eptp = vmx_vmread(VMCS_EPT_POINTER);
#define OUTSIDE(v, cap) ((((v) & (uint32_t)(cap)) != (uint32_t)(cap)) || ((v) & ~(uint32_t)((cap) >> 32)))
    PROBLEM(OUTSIDE(pin, vmx_caps.pin), "pin-based controls outside IA32_VMX_(TRUE_)PINBASED_CTLS");
    PROBLEM(OUTSIDE(proc, vmx_caps.proc), "processor-based controls outside IA32_VMX_(TRUE_)PROCBASED_CTLS");
    PROBLEM(OUTSIDE(proc2, vmx_caps.proc2), "secondary controls outside IA32_VMX_PROCBASED_CTLS2");
    PROBLEM(OUTSIDE(exit, vmx_caps.exit), "VM-exit controls outside IA32_VMX_(TRUE_)EXIT_CTLS");
    PROBLEM(OUTSIDE(entry, vmx_caps.entry), "VM-entry controls outside IA32_VMX_(TRUE_)ENTRY_CTLS");
#undef OUTSIDE
    PROBLEM((vmx_vmread(VMCS_IO_BITMAP_A) | vmx_vmread(VMCS_IO_BITMAP_B)) & 0xfff, "I/O bitmap address not page-aligned");
    PROBLEM(vmx_vmread(VMCS_MSR_BITMAP) & 0xfff, "MSR bitmap address not page-aligned");
    PROBLEM((eptp & 7) != 0 && (eptp & 7) != 6, "EPTP: memory type neither UC nor WB");
    PROBLEM(((eptp >> 3) & 7) != 3, "EPTP: page-walk length is not 4");
    PROBLEM(eptp & 0xf80, "EPTP: reserved bits 11:7 set");
    PROBLEM((proc2 & VMX_PROC2_UNRESTRICTED_GUEST) && !(proc2 & VMX_PROC2_ENABLE_EPT), "unrestricted guest without EPT");
    PROBLEM((exit & VMX_EXIT_CTL_SAVE_PREEMPTION_TIMER) && !(pin & VMX_PIN_PREEMPTION_TIMER),
            "save preemption timer without the timer");
    return NULL;
}

/* Error 8: the host-state checks of 27.2.2-27.2.4. */
static const char *vmx_host_problem(char *buf, uint32_t size)
{
    uint32_t exit = (uint32_t)vmx_vmread(VMCS_EXIT_CONTROLS);
    PROBLEM(!fixed_ok(vmx_vmread(VMCS_HOST_CR0), vmx_caps.cr0_fixed0, vmx_caps.cr0_fixed1), "host CR0: fixed bits wrong");
    PROBLEM(!fixed_ok(vmx_vmread(VMCS_HOST_CR4), vmx_caps.cr4_fixed0, vmx_caps.cr4_fixed1), "host CR4: fixed bits wrong");
    PROBLEM(!vmx_vmread(VMCS_HOST_TR_SELECTOR), "host TR selector is 0 (load a TSS with LTR)");
    PROBLEM(!vmx_vmread(VMCS_HOST_CS_SELECTOR), "host CS selector is 0");
    PROBLEM(!(exit & VMX_EXIT_CTL_HOST_ADDR_SPACE_SIZE), "host address-space size clear for a 64-bit host");
    PROBLEM((exit & VMX_EXIT_CTL_LOAD_EFER) && !(vmx_vmread(VMCS_HOST_IA32_EFER) & EFER_LMA), "host IA32_EFER: LMA clear");
    return NULL;
}

#undef PROBLEM

static void vmx_entry_failed(struct exit_info *e, uint32_t error, const char *meaning, const char *detail)
{
    e->kind = EXIT_ENTRY_FAILED;
    e->error = error;
    if (detail)
        snprintk(e->what, sizeof(e->what), "%s: %s", meaning, detail);
    else
        snprintk(e->what, sizeof(e->what), "%s", meaning);
}

/* VMLAUNCH/VMRESUME did not enter: VMfailValid has an error number, VMfailInvalid none. */
static void vmx_decode_fail(uint32_t rc, struct exit_info *e)
{
    char detail[96];
    if (rc == ENTER_FAIL_INVALID) {
        vmx_entry_failed(e, 0, "VMLAUNCH/VMRESUME with no current VMCS (VMfailInvalid)", NULL);
        return;
    }
    uint32_t error = (uint32_t)vmx_vmread(VMCS_VM_INSTRUCTION_ERROR);
    const char *d = NULL;
    if (error == 7)
        d = vmx_control_problem(detail, sizeof(detail));
    else if (error == 8)
        d = vmx_host_problem(detail, sizeof(detail));
    vmx_entry_failed(e, error, vmx_error_text(error), d);
}

/* Exit reasons 33, 34, 41: the guest's state was loaded (or not) and the entry backed out. */
static void vmx_decode_entry_exit(uint32_t basic, uint64_t qual, struct exit_info *e)
{
    char detail[96];
    const char *d = NULL;
    switch (basic) {
    case VMX_EXIT_REASON_ENTRY_INVALID_GUEST_STATE:
        if (qual == 2)
            d = "loading the guest's PAE PDPTEs failed";
        else if (qual == 4)
            d = "VMCS link pointer";
        else
            d = vmx_exit_guest_state_problem(detail, sizeof(detail));
        vmx_entry_failed(e, basic, "invalid guest state (exit 33)", d ? d : "a field Taipan does not check");
        break;
    case VMX_EXIT_REASON_ENTRY_MSR_LOADING:
        snprintk(detail, sizeof(detail), "entry %llu of the VM-entry MSR-load area", (unsigned long long)qual);
        vmx_entry_failed(e, basic, "MSR loading failed (exit 34)", detail);
        break;
    default:
        vmx_entry_failed(e, basic, "machine check during entry (exit 41)", NULL);
        break;
    }
}

/*
 * An exit during event delivery through the guest's IDT (an EPT violation on
 * the IDT or stack, say) loses that event unless the next entry injects it
 * again: it becomes the vCPU's queued event.
 */
static void vmx_requeue_event(struct vcpu *v)
{
    uint32_t idt = (uint32_t)vmx_vmread(VMCS_IDT_VECTORING_INFO);
    if (!(idt & INTR_INFO_VALID))
        return;
    uint32_t type = INTR_TYPE(idt);
    v->event = (struct vcpu_event){
        .valid = true, .type = (uint8_t)type, .vector = (uint8_t)idt, .has_error = idt & INTR_INFO_HAS_ERROR,
        .error = (idt & INTR_INFO_HAS_ERROR) ? (uint32_t)vmx_vmread(VMCS_IDT_VECTORING_ERROR) : 0,
    };
    if (type == INTR_TYPE_SOFT_INT || type == INTR_TYPE_PRIV_SOFT_EXC || type == INTR_TYPE_SOFT_EXC)
        v->event.insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
}

/* The queued event into the VM-entry interruption-information fields (SDM vol. 3C, 24.8.3). */
static void vmx_inject_event(struct vcpu *v)
{
    struct vcpu_event *ev = &v->event;
    v->entered = *ev;
    if (!ev->valid) {
        vmx_vmwrite(VMCS_ENTRY_INTR_INFO, 0);
        return;
    }
    uint32_t info = INTR_INFO_VALID | (uint32_t)ev->type << 8 | ev->vector;
    /* No error code is pushed in real mode: entry refuses one there (26.2.1.3). */
    if (ev->has_error && (vmx_vmread(VMCS_GUEST_CR0) & CR0_PE)) {
        info |= INTR_INFO_HAS_ERROR;
        vmx_vmwrite(VMCS_ENTRY_EXCEPTION_ERROR, ev->error);
    }
    if (ev->type == INTR_TYPE_SOFT_INT || ev->type == INTR_TYPE_PRIV_SOFT_EXC || ev->type == INTR_TYPE_SOFT_EXC)
        vmx_vmwrite(VMCS_ENTRY_INSTRUCTION_LEN, ev->insn_len);
    vmx_vmwrite(VMCS_ENTRY_INTR_INFO, info);
    ev->valid = false;
}

/* A general register by its number in the exit qualification (0 RAX, 1 RCX, ... 4 RSP, ... 15 R15). */
static uint64_t vmx_gpr(const struct vcpu *v, unsigned n)
{
    const struct guest_regs *r = &v->regs;
    const uint64_t regs[16] = { r->rax, r->rcx, r->rdx, r->rbx, vmx_vmread(VMCS_GUEST_RSP), r->rbp, r->rsi, r->rdi,
                                r->r8, r->r9, r->r10, r->r11, r->r12, r->r13, r->r14, r->r15 };
    return regs[n & 15];
}

/* MOV to CR0/CR3/CR4/CR8 and LMSW: the value the guest writes; MOV from CR8 (the virtual APIC's TPR).
 * MOV from the other CRs and CLTS never exit (reads see the read shadows; TS is the guest's own). */
static void vmx_decode_cr(struct vcpu *v, uint64_t q, struct exit_info *e)
{
    e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
    if (CRQ_TYPE(q) == CRQ_MOV_TO_CR) {
        e->kind = EXIT_CR_WRITE;
        e->cr = (uint8_t)CRQ_CR(q);
        e->cr_value = vmx_gpr(v, CRQ_GPR(q));
    } else if (CRQ_TYPE(q) == CRQ_MOV_FROM_CR && CRQ_CR(q) == 8) {
        e->kind = EXIT_CR_READ;
        e->cr = 8;
        e->cr_gpr = (uint8_t)CRQ_GPR(q);
    } else if (CRQ_TYPE(q) == CRQ_LMSW) {
        /* LMSW writes PE, MP, EM, TS and can set PE but never clear it. */
        uint64_t old = vmcs_reg_get(v, VREG_CR0);
        uint64_t src = CRQ_LMSW_DATA(q) & 0xf;
        e->kind = EXIT_CR_WRITE;
        e->cr = 0;
        e->cr_value = (old & ~0xeull) | src | (old & CR0_PE);
    } else {
        e->kind = EXIT_OTHER;
    }
}

static void vmx_decode_exit(struct vcpu *v, struct exit_info *e)
{
    uint32_t reason = (uint32_t)vmx_vmread(VMCS_EXIT_REASON);
    uint32_t basic = reason & 0xffff;
    uint64_t q = vmx_vmread(VMCS_EXIT_QUALIFICATION);

    e->raw_reason = basic;
    e->qualification = q;
    e->rip = vmx_vmread(VMCS_GUEST_RIP);
    if (reason & VMX_EXIT_REASON_ENTRY_FAILED_BIT) {
        vmx_decode_entry_exit(basic, q, e);
        return;
    }
    /* The VMCS is launched: from now on only VMRESUME enters it. */
    v->launched = true;
    vmx_vmwrite(VMCS_ENTRY_INTR_INFO, 0);
    vmx_requeue_event(v);

    switch (basic) {
    case VMX_EXIT_REASON_CPUID:
        e->kind = EXIT_CPUID;
        e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
        break;
    case VMX_EXIT_REASON_HLT:
        e->kind = EXIT_HLT;
        e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
        break;
    case VMX_EXIT_REASON_VMCALL:
        e->kind = EXIT_HYPERCALL;
        e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
        break;
    case VMX_EXIT_REASON_IO_INSTRUCTION:
        e->kind = EXIT_IO;
        e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
        e->port = IO_PORT(q);
        e->size = IO_SIZE(q);
        e->in = q & IO_IN;
        e->string = q & IO_STRING;
        e->rep = q & IO_REP;
        if (e->string) {
            /* Instruction information (SDM vol. 3C, 28.2.5): address size 9:7, segment 17:15. */
            uint32_t info = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_INFO);
            uint32_t asz = (info >> 7) & 7;
            e->addr_size = asz == 0 ? 2 : asz == 1 ? 4 : asz == 2 ? 8 : 0;
            e->seg = (uint8_t)((info >> 15) & 7);
        }
        break;
    case VMX_EXIT_REASON_RDMSR:
    case VMX_EXIT_REASON_WRMSR:
        e->kind = basic == VMX_EXIT_REASON_RDMSR ? EXIT_MSR_READ : EXIT_MSR_WRITE;
        e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
        e->msr = (uint32_t)v->regs.rcx;
        break;
    case VMX_EXIT_REASON_CR_ACCESS:
        vmx_decode_cr(v, q, e);
        break;
    case VMX_EXIT_REASON_XSETBV:
        e->kind = EXIT_XSETBV;
        e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
        break;
    case VMX_EXIT_REASON_EPT_VIOLATION:
        e->kind = EXIT_PAGE_FAULT;
        e->gpa = vmx_vmread(VMCS_GUEST_PHYSICAL_ADDRESS);
        e->read = q & EPT_READ;
        e->write = q & EPT_WRITE;
        e->exec = q & EPT_EXEC;
        break;
    case VMX_EXIT_REASON_TRIPLE_FAULT:
        e->kind = EXIT_TRIPLE_FAULT;
        break;
    case VMX_EXIT_REASON_PREEMPTION_TIMER:
        e->kind = EXIT_PREEMPT;
        break;
    case VMX_EXIT_REASON_INTERRUPT_WINDOW:
        e->kind = EXIT_INTR_WINDOW;
        break;
    case VMX_EXIT_REASON_EXTERNAL_INTERRUPT:
        /* A host interrupt (the LAPIC timer, a scheduler IPI), acknowledged
         * on exit: the host handles it here as if delivered, and it ends the
         * slice early so the scheduler looks at what the IPI brought. */
        e->kind = EXIT_PREEMPT;
        e->qualification = vmx_vmread(VMCS_EXIT_INTR_INFO);
        irq_acked((uint8_t)e->qualification);
        break;
    case VMX_EXIT_REASON_VMCLEAR: case VMX_EXIT_REASON_VMLAUNCH: case VMX_EXIT_REASON_VMPTRLD:
    case VMX_EXIT_REASON_VMPTRST: case VMX_EXIT_REASON_VMREAD: case VMX_EXIT_REASON_VMRESUME:
    case VMX_EXIT_REASON_VMWRITE: case VMX_EXIT_REASON_VMXOFF: case VMX_EXIT_REASON_VMXON:
    case VMX_EXIT_REASON_INVEPT: case VMX_EXIT_REASON_INVVPID: case VMX_EXIT_REASON_VMFUNC:
        /* They exit whatever CR4.VMXE holds; with VMXE clear (the only value the vCPU takes) the CPU raises #UD. */
        e->kind = EXIT_INVALID_OPCODE;
        break;
    case VMX_EXIT_REASON_EPT_MISCONFIG:
        e->kind = EXIT_OTHER;
        e->gpa = vmx_vmread(VMCS_GUEST_PHYSICAL_ADDRESS);
        break;
    default:
        e->kind = EXIT_OTHER;
        e->insn_len = (uint32_t)vmx_vmread(VMCS_EXIT_INSTRUCTION_LEN);
        break;
    }
}

/*
 * A VM exit loads the host's GDTR and IDTR bases from the VMCS but sets both
 * limits to 0xFFFF (SDM vol. 3C, 28.5.2): a stray selector or vector would
 * then read past the tables. Each CPU's own registers, taken before its first
 * entry, are loaded back after every exit.
 */
struct __attribute__((packed)) vmx_dtr {
    uint16_t limit;
    uint64_t base;
};
static struct vmx_host_dtrs {
    struct vmx_dtr gdtr, idtr;
    bool taken;
} host_dtrs[CPUS_MAX];

void vmx_exit_run(struct vcpu *v, uint64_t deadline_tsc, struct exit_info *e)
{
    struct vmx_vcpu *x = v->arch;
    const vmx_enter_fn enter = (vmx_enter_fn)(uintptr_t)BOOT_SYM_VMX_ENTER;

    e->kind = EXIT_NONE;
    e->raw_reason = 0;
    e->insn_len = 0;
    e->qualification = 0;
    e->gpa = 0;
    e->read = e->write = e->exec = false;
    e->error = 0;
    e->what[0] = '\0';
    if (!x || !vmcs_load(x)) {
        vmx_entry_failed(e, 0, "the vCPU has no loadable VMCS", NULL);
        return;
    }

    /* The preemption timer counts down at TSC >> IA32_VMX_MISC[4:0] and exits
     * at zero, so it ends the slice at the deadline with no host interrupt. */
    uint64_t now = tsc_read();
    uint64_t ticks = deadline_tsc > now ? (deadline_tsc - now) >> vmx_caps.preempt_shift : 0;
    vmx_vmwrite(VMCS_PREEMPTION_TIMER_VALUE, ticks > PREEMPT_MAX ? PREEMPT_MAX : ticks);

    /*
     * The virtual APIC's interrupt or NMI when the guest can take it (IF
     * set, no STI or MOV SS blocking; for an NMI no NMI blocking either,
     * which an injected NMI sets until the guest's IRET). Otherwise the
     * interrupt-window control exits as soon as it can; an NMI waits for the
     * next exit.
     */
    bool window = false;
    if (vevent_interrupt_waiting(v)) {
        uint32_t block = (uint32_t)vmx_vmread(VMCS_GUEST_INTERRUPTIBILITY);
        bool open = (vmx_vmread(VMCS_GUEST_RFLAGS) & RFLAGS_IF) && !(block & (BLOCK_STI | BLOCK_MOV_SS));
        window = vevent_interrupt(v, open, !(block & (BLOCK_STI | BLOCK_MOV_SS | BLOCK_NMI)));
    }
    uint32_t proc = x->proc;
    if (window && (vmx_caps.proc >> 32) & VMX_PROC_INTR_WINDOW_EXITING)
        proc |= VMX_PROC_INTR_WINDOW_EXITING;
    if (proc != x->proc_now) {
        vmx_vmwrite(VMCS_PROC_BASED_CONTROLS, proc);
        x->proc_now = proc;
    }
    vmx_inject_event(v);
    struct vmx_host_dtrs *dtrs = &host_dtrs[cpu_current()->index];
    if (!dtrs->taken) {
        __asm__ volatile("sgdt %0; sidt %1" : "=m"(dtrs->gdtr), "=m"(dtrs->idtr));
        dtrs->taken = true;
    }
    uint32_t rc = enter(&v->regs, v->launched, &v->fpu);
    __asm__ volatile("lgdt %0; lidt %1" : : "m"(dtrs->gdtr), "m"(dtrs->idtr));
    if (rc != ENTER_EXITED) {
        e->rip = vmx_vmread(VMCS_GUEST_RIP);
        vmx_decode_fail(rc, e);
        return;
    }
    vmx_decode_exit(v, e);
}
