/* A vCPU's VMCS: allocation, controls adjusted to the CPU, host state, guest boot state from the partition descriptor. */
#include "boot_symbols.h"
#include "cpu.h"
#include "cpus.h"
#include "libc.h"
#include "page_alloc.h"
#include "partition.h"
#include "printk.h"
#include "vcpu_state.h"
#include "vmx.h"

/* Guest segment access rights in the VMCS format (SDM vol. 3C, 25.4.1):
 * type 3:0, S 4, DPL 6:5, P 7, L 13, D/B 14, G 15, unusable 16. */
#define AR_TYPE_CODE_XR_ACCESSED 0xbu
#define AR_TYPE_DATA_RW_ACCESSED 0x3u
#define AR_TYPE_TSS_BUSY 0xbu
#define AR_S (1u << 4)
#define AR_P (1u << 7)
#define AR_L (1u << 13)
#define AR_DB (1u << 14)
#define AR_G (1u << 15)
#define AR_UNUSABLE (1u << 16)
#define AR_CODE64 (AR_TYPE_CODE_XR_ACCESSED | AR_S | AR_P | AR_L | AR_G)
#define AR_CODE32 (AR_TYPE_CODE_XR_ACCESSED | AR_S | AR_P | AR_DB | AR_G)
#define AR_DATA (AR_TYPE_DATA_RW_ACCESSED | AR_S | AR_P | AR_DB | AR_G)
#define AR_TSS (AR_TYPE_TSS_BUSY | AR_P)

#define FLAT_LIMIT 0xffffffffu
#define TSS_LIMIT 0x67u
#define RFLAGS_FIXED1 (1ull << 1)
#define DR7_INIT 0x400ull
#define INTERRUPTIBILITY_STI_MOVSS 0x3u

/* IA32_VMX_EPT_VPID_CAP bits (SDM vol. 3D, A.10) and the EPTP layout (25.6.11). */
#define EPT_CAP_WALK4 (1ull << 6)
#define EPT_CAP_UC (1ull << 8)
#define EPT_CAP_WB (1ull << 14)
#define EPTP_MEMTYPE(e) ((e) & 7)
#define EPTP_WALK(e) ((((e) >> 3) & 7) + 1)
#define EPT_MEMTYPE_UC 0
#define EPT_MEMTYPE_WB 6

/*
 * CR0 and CR4 bits the guest owns outright (writes need no exit). Every
 * other bit is the host's: a write that changes one exits and hv/vcr.c
 * checks it, while reads see the read shadow, i.e. the guest's own value.
 * That hides CR4.VMXE, lets a guest clear CR0.NE (VMX forces it to 1) and
 * see its own value, and makes CR0.PG with EFER.LME the switch into IA-32e
 * mode that the IA-32e-mode-guest entry control must follow.
 */
#define CR0_GUEST_OWNED (CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_WP | CR0_AM)
#define CR4_GUEST_OWNED CR4_PGE   /* Linux toggles it to flush the TLB: no exit needed */
#define EFER_NXE (1ull << 11)
#define CR4_PCIDE (1ull << 17)
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_CSTAR 0xc0000083u
#define MSR_SFMASK 0xc0000084u
#define MSR_KERNEL_GS_BASE 0xc0000102u
#define MSR_TSC_AUX 0xc0000103u
#define MSR_PAT 0x277u
#define EXT1_EDX_RDTSCP (1u << 27)

static const uint32_t msr_slot_index[VMX_MSR_SLOTS] = {
    [VMX_MSR_KERNEL_GS_BASE] = MSR_KERNEL_GS_BASE, [VMX_MSR_STAR] = MSR_STAR, [VMX_MSR_LSTAR] = MSR_LSTAR,
    [VMX_MSR_CSTAR] = MSR_CSTAR, [VMX_MSR_SFMASK] = MSR_SFMASK, [VMX_MSR_PAT] = MSR_PAT,
    [VMX_MSR_TSC_AUX] = MSR_TSC_AUX,
};

static struct vmx_vcpu pool[PARTITIONS_MAX];
/* The VMCS each CPU has current (VMPTRLD is per logical processor). */
static uint64_t current_vmcs[CPUS_MAX];
static uint32_t failed_field;   /* the first VMWRITE that failed while filling a VMCS, or ~0 */

bool vmcs_load(struct vmx_vcpu *x)
{
    uint32_t me = cpu_current()->index;
    if (current_vmcs[me] == x->vmcs)
        return true;
    if (!vmx_vmptrld(x->vmcs))
        return false;
    current_vmcs[me] = x->vmcs;
    return true;
}

static void vmcs_write(uint32_t field, uint64_t value)
{
    if (!vmx_vmwrite(field, value) && failed_field == ~0u)
        failed_field = field;
}

/*
 * A control word is legal when every allowed-0 bit (low half of the
 * capability MSR) is set and no bit outside allowed-1 (high half) is.
 * Returns false, naming the missing bits, if a required one is not allowed.
 */
static bool vmcs_adjust(const char *what, uint64_t cap, uint32_t required, uint32_t optional, uint32_t *out)
{
    uint32_t allowed0 = (uint32_t)cap, allowed1 = (uint32_t)(cap >> 32);
    if (required & ~allowed1) {
        printk("vmx: %s controls %#x are not supported by this CPU (allowed %#x)\n", what,
               required & ~allowed1, allowed1);
        return false;
    }
    *out = (allowed0 | required | (optional & allowed1)) & allowed1;
    return true;
}

static bool vmcs_check_desc(const struct pt_partition *d)
{
    uint64_t cap = vmx_caps.ept_vpid;
    uint64_t type = EPTP_MEMTYPE(d->eptp);
    if (EPTP_WALK(d->eptp) != 4 || !(cap & EPT_CAP_WALK4)) {
        printk("vmx: %s: EPTP %#llx asks for a %llu-level walk; this CPU does %s\n", d->name,
               (unsigned long long)d->eptp, (unsigned long long)EPTP_WALK(d->eptp),
               cap & EPT_CAP_WALK4 ? "4" : "none Taipan builds");
        return false;
    }
    if (!((type == EPT_MEMTYPE_WB && (cap & EPT_CAP_WB)) || (type == EPT_MEMTYPE_UC && (cap & EPT_CAP_UC)))) {
        printk("vmx: %s: EPTP %#llx memory type %llu is not supported (EPT cap %#llx)\n", d->name,
               (unsigned long long)d->eptp, (unsigned long long)type, (unsigned long long)cap);
        return false;
    }
    /* Bitmaps are whole pages at page-aligned host-physical addresses. */
    uint64_t pages[3] = { d->vmx_io_bitmap_a, d->vmx_io_bitmap_b, d->vmx_msr_bitmap };
    for (int i = 0; i < 3; i++) {
        if (!pages[i] || (pages[i] & (PAGE_SIZE - 1))) {
            printk("vmx: %s: bitmap %d at %#llx is not a page\n", d->name, i, (unsigned long long)pages[i]);
            return false;
        }
    }
    return true;
}

static bool vmcs_controls(struct vmx_vcpu *x, const struct pt_partition *d)
{
    uint32_t entry_required = VMX_ENTRY_CTL_REQUIRED;
    if (d->boot.mode == PT_MODE_LONG64)
        entry_required |= VMX_ENTRY_CTL_IA32E_MODE_GUEST;
    if (!vmcs_adjust("pin-based", vmx_caps.pin, VMX_PIN_REQUIRED, VMX_PIN_OPTIONAL, &x->pin) ||
        !vmcs_adjust("processor-based", vmx_caps.proc, VMX_PROC_REQUIRED, VMX_PROC_OPTIONAL, &x->proc) ||
        !vmcs_adjust("secondary", vmx_caps.proc2, VMX_PROC2_REQUIRED, VMX_PROC2_OPTIONAL, &x->proc2) ||
        !vmcs_adjust("VM-exit", vmx_caps.exit, VMX_EXIT_CTL_REQUIRED, VMX_EXIT_CTL_OPTIONAL, &x->exit) ||
        !vmcs_adjust("VM-entry", vmx_caps.entry, entry_required, VMX_ENTRY_CTL_OPTIONAL, &x->entry))
        return false;
    /* IA-32e mode guest may be allowed-1 but must follow the guest's mode. */
    if (d->boot.mode != PT_MODE_LONG64)
        x->entry &= ~VMX_ENTRY_CTL_IA32E_MODE_GUEST;
    if (d->boot.mode == PT_MODE_PROT32 && !(x->proc2 & VMX_PROC2_UNRESTRICTED_GUEST)) {
        printk("vmx: %s starts with paging off, which needs unrestricted guest\n", d->name);
        return false;
    }
    return true;
}

struct host_tables {
    uint64_t gdt_base, idt_base;
    uint16_t tr;
};

static struct host_tables vmcs_host_tables(void)
{
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } gdtr, idtr;
    struct host_tables t;
    __asm__ volatile("sgdt %0" : "=m"(gdtr));
    __asm__ volatile("sidt %0" : "=m"(idtr));
    __asm__ volatile("str %0" : "=r"(t.tr));
    t.gdt_base = gdtr.base;
    t.idt_base = idtr.base;
    return t;
}

/* The base of a 16-byte long-mode system descriptor (SDM vol. 3A, 8.2.3). */
static uint64_t vmcs_tss_base(uint64_t gdt_base, uint16_t selector)
{
    const uint32_t *desc = (const uint32_t *)(uintptr_t)(gdt_base + (selector & ~7u));
    return (desc[0] >> 16) | (uint64_t)(desc[1] & 0xff) << 16 | (uint64_t)(desc[1] >> 24) << 24
         | (uint64_t)desc[2] << 32;
}

#define READ_SEG(reg) ({ uint16_t s; __asm__ volatile("mov %%" #reg ", %0" : "=r"(s)); s; })

/* The state VM exit loads: the hypervisor as it runs now. RSP is written by the stub on every entry. */
static void vmcs_host_state(void)
{
    struct host_tables t = vmcs_host_tables();

    vmcs_write(VMCS_HOST_CR0, read_cr0());
    vmcs_write(VMCS_HOST_CR3, read_cr3());
    vmcs_write(VMCS_HOST_CR4, read_cr4());
    /* Selectors must have RPL 0 and TI 0; CS and TR must not be null. */
    vmcs_write(VMCS_HOST_CS_SELECTOR, READ_SEG(cs) & ~7u);
    vmcs_write(VMCS_HOST_SS_SELECTOR, READ_SEG(ss) & ~7u);
    vmcs_write(VMCS_HOST_DS_SELECTOR, READ_SEG(ds) & ~7u);
    vmcs_write(VMCS_HOST_ES_SELECTOR, READ_SEG(es) & ~7u);
    vmcs_write(VMCS_HOST_FS_SELECTOR, READ_SEG(fs) & ~7u);
    vmcs_write(VMCS_HOST_GS_SELECTOR, READ_SEG(gs) & ~7u);
    vmcs_write(VMCS_HOST_TR_SELECTOR, t.tr & ~7u);
    vmcs_write(VMCS_HOST_FS_BASE, rdmsr(MSR_IA32_FS_BASE));
    vmcs_write(VMCS_HOST_GS_BASE, rdmsr(MSR_IA32_GS_BASE));
    vmcs_write(VMCS_HOST_TR_BASE, vmcs_tss_base(t.gdt_base, t.tr));
    vmcs_write(VMCS_HOST_GDTR_BASE, t.gdt_base);
    vmcs_write(VMCS_HOST_IDTR_BASE, t.idt_base);
    vmcs_write(VMCS_HOST_SYSENTER_CS, 0);
    vmcs_write(VMCS_HOST_SYSENTER_ESP, 0);
    vmcs_write(VMCS_HOST_SYSENTER_EIP, 0);
    vmcs_write(VMCS_HOST_IA32_EFER, rdmsr(MSR_IA32_EFER));
    vmcs_write(VMCS_HOST_RIP, BOOT_SYM_VMX_EXIT);
}

/* The MSR areas: the host's values as they are now, the guest's at their reset values (vmsr_reset fills them). */
static void vmcs_msr_areas(struct vmx_vcpu *x)
{
    uint32_t a, b, c, d;
    cpuid(0x80000001u, 0, &a, &b, &c, &d);
    x->msr_count = (d & EXT1_EDX_RDTSCP) ? VMX_MSR_SLOTS : VMX_MSR_TSC_AUX;
    for (uint32_t i = 0; i < x->msr_count; i++) {
        x->guest_msrs[i] = (struct vmx_msr_entry){ .index = msr_slot_index[i] };
        x->host_msrs[i] = (struct vmx_msr_entry){ .index = msr_slot_index[i], .value = rdmsr(msr_slot_index[i]) };
    }
}

static void vmcs_control_state(const struct vmx_vcpu *x, const struct pt_partition *d)
{
    vmcs_write(VMCS_PIN_BASED_CONTROLS, x->pin);
    vmcs_write(VMCS_PROC_BASED_CONTROLS, x->proc);
    vmcs_write(VMCS_PROC_BASED_CONTROLS2, x->proc2);
    vmcs_write(VMCS_EXIT_CONTROLS, x->exit);
    vmcs_write(VMCS_ENTRY_CONTROLS, x->entry);
    vmcs_write(VMCS_EXCEPTION_BITMAP, 0);
    vmcs_write(VMCS_PAGE_FAULT_ERROR_MASK, 0);
    vmcs_write(VMCS_PAGE_FAULT_ERROR_MATCH, 0);
    vmcs_write(VMCS_CR3_TARGET_COUNT, 0);
    /* The guest area is both loaded at entry and stored at exit; see struct vmx_vcpu. */
    vmcs_write(VMCS_VM_ENTRY_MSR_LOAD_ADDR, (uint64_t)(uintptr_t)x->guest_msrs);
    vmcs_write(VMCS_VM_EXIT_MSR_STORE_ADDR, (uint64_t)(uintptr_t)x->guest_msrs);
    vmcs_write(VMCS_VM_EXIT_MSR_LOAD_ADDR, (uint64_t)(uintptr_t)x->host_msrs);
    vmcs_write(VMCS_EXIT_MSR_STORE_COUNT, x->msr_count);
    vmcs_write(VMCS_EXIT_MSR_LOAD_COUNT, x->msr_count);
    vmcs_write(VMCS_ENTRY_MSR_LOAD_COUNT, x->msr_count);
    vmcs_write(VMCS_ENTRY_INTR_INFO, 0);
    vmcs_write(VMCS_TSC_OFFSET, 0);
    vmcs_write(VMCS_IO_BITMAP_A, d->vmx_io_bitmap_a);
    vmcs_write(VMCS_IO_BITMAP_B, d->vmx_io_bitmap_b);
    vmcs_write(VMCS_MSR_BITMAP, d->vmx_msr_bitmap);
    vmcs_write(VMCS_EPT_POINTER, d->eptp);
    /* Without unrestricted guest PE is fixed to 1: then the host owns it too. */
    vmcs_write(VMCS_CR0_GUEST_HOST_MASK, ~CR0_GUEST_OWNED | (vmx_caps.unrestricted ? 0 : CR0_PE));
    vmcs_write(VMCS_CR0_READ_SHADOW, d->boot.cr0 | CR0_ET);
    vmcs_write(VMCS_CR4_GUEST_HOST_MASK, ~CR4_GUEST_OWNED);
    vmcs_write(VMCS_CR4_READ_SHADOW, d->boot.cr4 & ~CR4_VMXE);
}

_Static_assert(VMCS_GUEST_TR_SELECTOR - VMCS_GUEST_ES_SELECTOR == VMCS_GUEST_TR_LIMIT - VMCS_GUEST_ES_LIMIT &&
               VMCS_GUEST_TR_SELECTOR - VMCS_GUEST_ES_SELECTOR == VMCS_GUEST_TR_ACCESS - VMCS_GUEST_ES_ACCESS &&
               VMCS_GUEST_TR_SELECTOR - VMCS_GUEST_ES_SELECTOR == VMCS_GUEST_TR_BASE - VMCS_GUEST_ES_BASE,
               "segment fields keep one order (ES CS SS DS FS GS LDTR TR) in every width group");

static void vmcs_guest_segment(uint32_t selector_field, uint16_t selector, uint64_t base, uint32_t limit,
                               uint32_t access)
{
    /* Each segment's selector, limit, access and base fields sit at the
     * same index in their width groups: derive the others from the selector's. */
    uint32_t index = selector_field - VMCS_GUEST_ES_SELECTOR;
    vmcs_write(selector_field, selector);
    vmcs_write(VMCS_GUEST_ES_LIMIT + index, limit);
    vmcs_write(VMCS_GUEST_ES_ACCESS + index, access);
    vmcs_write(VMCS_GUEST_ES_BASE + index, base);
}

/* The guest's first instruction's state, from the generated boot description. */
static void vmcs_guest_state(const struct pt_partition *d)
{
    const struct pt_boot *b = &d->boot;
    bool long_mode = b->mode == PT_MODE_LONG64;
    uint64_t fixed0 = vmx_caps.cr0_fixed0;
    /* With unrestricted guest, PE and PG may be clear (SDM vol. 3C, 26.3.1.1). */
    if (vmx_caps.unrestricted)
        fixed0 &= ~(CR0_PE | CR0_PG);
    uint64_t efer = b->efer;
    efer = long_mode ? efer | EFER_LME | EFER_LMA : efer & ~(EFER_LME | EFER_LMA);

    /* Bits VMX pins to 1 (NE, VMXE) are forced on; bits it forbids are left
     * as described, so a bad descriptor fails its entry and says why. */
    vmcs_write(VMCS_GUEST_CR0, b->cr0 | fixed0);
    vmcs_write(VMCS_GUEST_CR3, b->cr3);
    vmcs_write(VMCS_GUEST_CR4, b->cr4 | vmx_caps.cr4_fixed0);
    vmcs_write(VMCS_GUEST_IA32_EFER, efer);
    vmcs_write(VMCS_GUEST_DR7, DR7_INIT);
    vmcs_write(VMCS_GUEST_RSP, b->rsp);
    vmcs_write(VMCS_GUEST_RIP, b->rip);
    vmcs_write(VMCS_GUEST_RFLAGS, b->rflags | RFLAGS_FIXED1);

    vmcs_guest_segment(VMCS_GUEST_CS_SELECTOR, b->cs, 0, FLAT_LIMIT, long_mode ? AR_CODE64 : AR_CODE32);
    vmcs_guest_segment(VMCS_GUEST_DS_SELECTOR, b->ds, 0, FLAT_LIMIT, AR_DATA);
    vmcs_guest_segment(VMCS_GUEST_ES_SELECTOR, b->ds, 0, FLAT_LIMIT, AR_DATA);
    vmcs_guest_segment(VMCS_GUEST_SS_SELECTOR, b->ds, 0, FLAT_LIMIT, AR_DATA);
    vmcs_guest_segment(VMCS_GUEST_FS_SELECTOR, b->ds, 0, FLAT_LIMIT, AR_DATA);
    vmcs_guest_segment(VMCS_GUEST_GS_SELECTOR, b->ds, 0, FLAT_LIMIT, AR_DATA);
    /* VM entry wants a usable TR (a busy TSS) even if the guest never switches tasks. */
    vmcs_guest_segment(VMCS_GUEST_TR_SELECTOR, 0, 0, TSS_LIMIT, AR_TSS);
    vmcs_guest_segment(VMCS_GUEST_LDTR_SELECTOR, 0, 0, 0, AR_UNUSABLE);
    vmcs_write(VMCS_GUEST_GDTR_BASE, b->gdt_base);
    vmcs_write(VMCS_GUEST_GDTR_LIMIT, b->gdt_limit);
    vmcs_write(VMCS_GUEST_IDTR_BASE, 0);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, 0);

    vmcs_write(VMCS_GUEST_IA32_DEBUGCTL, 0);
    vmcs_write(VMCS_GUEST_SYSENTER_CS, 0);
    vmcs_write(VMCS_GUEST_SYSENTER_ESP, 0);
    vmcs_write(VMCS_GUEST_SYSENTER_EIP, 0);
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, 0);
    vmcs_write(VMCS_GUEST_PENDING_DEBUG, 0);
    /* No shadow VMCS: the link pointer must be all ones or entry fails (exit 33). */
    vmcs_write(VMCS_VMCS_LINK_POINTER, ~0ull);
    vmcs_write(VMCS_PREEMPTION_TIMER_VALUE, 0);
}

static void vmcs_boot_regs(struct vcpu *v)
{
    const struct pt_boot *b = &v->part->desc->boot;
    v->regs = (struct guest_regs){ .rax = b->rax, .rbx = b->rbx, .rsi = b->rsi };
}

/* VMCLEAR (launch state "clear", so the next entry is VMLAUNCH), VMPTRLD, then every field. */
static int vmcs_fill(struct vcpu *v)
{
    struct vmx_vcpu *x = v->arch;
    const struct pt_partition *d = v->part->desc;

    if (!vmx_vmclear(x->vmcs)) {
        printk("vmx: %s: VMCLEAR of %#llx failed\n", d->name, (unsigned long long)x->vmcs);
        return -1;
    }
    if (current_vmcs[cpu_current()->index] == x->vmcs)
        current_vmcs[cpu_current()->index] = 0;
    if (!vmcs_load(x)) {
        printk("vmx: %s: VMPTRLD of %#llx failed\n", d->name, (unsigned long long)x->vmcs);
        return -1;
    }
    failed_field = ~0u;
    vfpu_host_init();   /* before HOST_CR4 is recorded: it may turn on CR4.OSXSAVE */
    /* A reset starts in the boot mode, whatever mode the last run left. */
    if (d->boot.mode == PT_MODE_LONG64)
        x->entry |= VMX_ENTRY_CTL_IA32E_MODE_GUEST;
    else
        x->entry &= ~VMX_ENTRY_CTL_IA32E_MODE_GUEST;
    vmcs_msr_areas(x);
    vmcs_control_state(x, d);
    x->proc_now = x->proc;   /* no interrupt window asked for yet */
    vmcs_host_state();
    vmcs_guest_state(d);
    if (failed_field != ~0u) {
        printk("vmx: %s: VMWRITE to field %#x failed (VM-instruction error %llu)\n", d->name,
               failed_field, (unsigned long long)vmx_vmread(VMCS_VM_INSTRUCTION_ERROR));
        return -1;
    }
    vmcs_boot_regs(v);
    v->launched = false;
    v->event = (struct vcpu_event){ 0 };
    vfpu_reset(v);
    vmsr_reset(v);
    return 0;
}

int vmcs_create(struct vcpu *v)
{
    const struct pt_partition *d = v->part->desc;
    struct vmx_vcpu *x = NULL;

    for (int i = 0; i < PARTITIONS_MAX && !x; i++)
        if (!pool[i].in_use)
            x = &pool[i];
    if (!x) {
        printk("vmx: %s: all %d vCPU slots are taken\n", d->name, PARTITIONS_MAX);
        return -1;
    }
    if (!vmcs_check_desc(d))
        return -1;
    *x = (struct vmx_vcpu){ 0 };
    if (!vmcs_controls(x, d))
        return -1;
    x->vmcs = page_alloc_named("vmx vmcs", 1);
    if (!x->vmcs) {
        printk("vmx: %s: no page for the VMCS\n", d->name);
        return -1;
    }
    /* A VMCS region starts with the revision identifier (bit 31 clear: not a shadow VMCS). */
    memset((void *)(uintptr_t)x->vmcs, 0, PAGE_SIZE);
    *(volatile uint32_t *)(uintptr_t)x->vmcs = vmx_caps.revision;
    x->in_use = true;
    v->arch = x;
    if (vmcs_fill(v) != 0) {
        vmcs_destroy(v);
        return -1;
    }
    return 0;
}

void vmcs_reset(struct vcpu *v)
{
    /* A fresh VMCLEAR'd VMCS, so a vCPU that faulted mid-launch starts clean. */
    if (vmcs_fill(v) != 0)
        printk("vmx: %s: reset failed; its next entry will fail and say why\n", v->part->desc->name);
}

void vmcs_destroy(struct vcpu *v)
{
    struct vmx_vcpu *x = v->arch;
    if (!x)
        return;
    /* VMCLEAR writes back any cached VMCS data before the page is reused. */
    vmx_vmclear(x->vmcs);
    if (current_vmcs[cpu_current()->index] == x->vmcs)
        current_vmcs[cpu_current()->index] = 0;
    page_free(x->vmcs, 1);
    *x = (struct vmx_vcpu){ 0 };
    v->arch = NULL;
    v->launched = false;
}

void vmcs_advance_rip(struct vcpu *v, uint32_t len)
{
    if (!vmcs_load(v->arch))
        return;
    vmx_vmwrite(VMCS_GUEST_RIP, vmx_vmread(VMCS_GUEST_RIP) + len);
    /* The skipped instruction ends any STI / MOV SS interrupt shadow it sat in. */
    uint64_t intr = vmx_vmread(VMCS_GUEST_INTERRUPTIBILITY);
    if (intr & INTERRUPTIBILITY_STI_MOVSS)
        vmx_vmwrite(VMCS_GUEST_INTERRUPTIBILITY, intr & ~(uint64_t)INTERRUPTIBILITY_STI_MOVSS);
}

uint64_t vmcs_guest_rip(struct vcpu *v)
{
    if (!v->arch || !vmcs_load(v->arch))
        return 0;
    return vmx_vmread(VMCS_GUEST_RIP);
}

static int vmcs_msr_slot(enum vcpu_reg r)
{
    switch (r) {
    case VREG_KERNEL_GS_BASE: return VMX_MSR_KERNEL_GS_BASE;
    case VREG_STAR: return VMX_MSR_STAR;
    case VREG_LSTAR: return VMX_MSR_LSTAR;
    case VREG_CSTAR: return VMX_MSR_CSTAR;
    case VREG_SFMASK: return VMX_MSR_SFMASK;
    case VREG_PAT: return VMX_MSR_PAT;
    case VREG_TSC_AUX: return VMX_MSR_TSC_AUX;
    default: return -1;
    }
}

/* The guest's view of a register the VMCS splits between guest value, mask and read shadow. */
static uint64_t vmcs_shadowed(uint32_t value_field, uint32_t mask_field, uint32_t shadow_field)
{
    uint64_t mask = vmx_vmread(mask_field);
    return (vmx_vmread(value_field) & ~mask) | (vmx_vmread(shadow_field) & mask);
}

uint64_t vmcs_reg_get(struct vcpu *v, enum vcpu_reg r)
{
    struct vmx_vcpu *x = v->arch;
    if (!vmcs_load(x))
        return 0;
    int slot = vmcs_msr_slot(r);
    if (slot >= 0)
        return (uint32_t)slot < x->msr_count ? x->guest_msrs[slot].value : 0;
    switch (r) {
    case VREG_CR0: return vmcs_shadowed(VMCS_GUEST_CR0, VMCS_CR0_GUEST_HOST_MASK, VMCS_CR0_READ_SHADOW);
    case VREG_CR3: return vmx_vmread(VMCS_GUEST_CR3);
    case VREG_CR4: return vmcs_shadowed(VMCS_GUEST_CR4, VMCS_CR4_GUEST_HOST_MASK, VMCS_CR4_READ_SHADOW);
    case VREG_EFER: return vmx_vmread(VMCS_GUEST_IA32_EFER);
    case VREG_FS_BASE: return vmx_vmread(VMCS_GUEST_FS_BASE);
    case VREG_GS_BASE: return vmx_vmread(VMCS_GUEST_GS_BASE);
    case VREG_SYSENTER_CS: return vmx_vmread(VMCS_GUEST_SYSENTER_CS);
    case VREG_SYSENTER_ESP: return vmx_vmread(VMCS_GUEST_SYSENTER_ESP);
    case VREG_SYSENTER_EIP: return vmx_vmread(VMCS_GUEST_SYSENTER_EIP);
    case VREG_TSC_OFFSET: return vmx_vmread(VMCS_TSC_OFFSET);
    case VREG_CPL: return (vmx_vmread(VMCS_GUEST_SS_ACCESS) >> 5) & 3;   /* SS.DPL is the CPL (26.3.1.5) */
    case VREG_RFLAGS: return vmx_vmread(VMCS_GUEST_RFLAGS);
    case VREG_RSP: return vmx_vmread(VMCS_GUEST_RSP);
    default: return 0;
    }
}

/*
 * PAE paging outside IA-32e mode with EPT: VM entry takes the four PDPTEs
 * from the VMCS, not from memory (SDM vol. 3C, 26.3.2.4), so an emulated
 * write that turns such paging on must load them as MOV to CR would.
 */
static void vmcs_load_pdptes(struct vcpu *v)
{
    uint64_t cr0 = vmcs_reg_get(v, VREG_CR0), cr4 = vmcs_reg_get(v, VREG_CR4);
    if (!(cr0 & CR0_PG) || !(cr4 & CR4_PAE) || (vmx_vmread(VMCS_GUEST_IA32_EFER) & EFER_LMA))
        return;
    const struct pt_partition *d = v->part->desc;
    uint64_t gpa = vmx_vmread(VMCS_GUEST_CR3) & 0xffffffe0ull;
    uint64_t pdpte[4] = { 0 };
    if (gpa + sizeof(pdpte) <= d->mem_size)
        memcpy(pdpte, (const void *)(uintptr_t)(d->mem_host_base + gpa), sizeof(pdpte));
    vmx_vmwrite(VMCS_GUEST_PDPTE0, pdpte[0]);
    vmx_vmwrite(VMCS_GUEST_PDPTE1, pdpte[1]);
    vmx_vmwrite(VMCS_GUEST_PDPTE2, pdpte[2]);
    vmx_vmwrite(VMCS_GUEST_PDPTE3, pdpte[3]);
}

void vmcs_reg_set(struct vcpu *v, enum vcpu_reg r, uint64_t value)
{
    struct vmx_vcpu *x = v->arch;
    if (!vmcs_load(x))
        return;
    int slot = vmcs_msr_slot(r);
    if (slot >= 0) {
        if ((uint32_t)slot < x->msr_count)
            x->guest_msrs[slot].value = value;
        return;
    }
    switch (r) {
    case VREG_CR0: {
        /* The CPU runs with the bits VMX forces (NE; PE and PG too without
         * unrestricted guest); the guest reads its own value. */
        uint64_t fixed0 = vmx_caps.cr0_fixed0;
        if (vmx_caps.unrestricted)
            fixed0 &= ~(CR0_PE | CR0_PG);
        vmx_vmwrite(VMCS_GUEST_CR0, (value | fixed0) & vmx_caps.cr0_fixed1);
        vmx_vmwrite(VMCS_CR0_READ_SHADOW, value);
        vmcs_load_pdptes(v);
        break;
    }
    case VREG_CR3:
        vmx_vmwrite(VMCS_GUEST_CR3, value);
        vmcs_load_pdptes(v);
        break;
    case VREG_CR4:
        vmx_vmwrite(VMCS_GUEST_CR4, (value | vmx_caps.cr4_fixed0) & vmx_caps.cr4_fixed1);
        vmx_vmwrite(VMCS_CR4_READ_SHADOW, value);
        vmcs_load_pdptes(v);
        break;
    case VREG_EFER:
        /* VM entry requires IA-32e mode guest = EFER.LMA (26.3.1.1). */
        vmx_vmwrite(VMCS_GUEST_IA32_EFER, value);
        if (value & EFER_LMA)
            x->entry |= VMX_ENTRY_CTL_IA32E_MODE_GUEST;
        else
            x->entry &= ~VMX_ENTRY_CTL_IA32E_MODE_GUEST;
        vmx_vmwrite(VMCS_ENTRY_CONTROLS, x->entry);
        break;
    case VREG_FS_BASE: vmx_vmwrite(VMCS_GUEST_FS_BASE, value); break;
    case VREG_GS_BASE: vmx_vmwrite(VMCS_GUEST_GS_BASE, value); break;
    case VREG_SYSENTER_CS: vmx_vmwrite(VMCS_GUEST_SYSENTER_CS, value); break;
    case VREG_SYSENTER_ESP: vmx_vmwrite(VMCS_GUEST_SYSENTER_ESP, value); break;
    case VREG_SYSENTER_EIP: vmx_vmwrite(VMCS_GUEST_SYSENTER_EIP, value); break;
    case VREG_TSC_OFFSET: vmx_vmwrite(VMCS_TSC_OFFSET, value); break;
    case VREG_RSP: vmx_vmwrite(VMCS_GUEST_RSP, value); break;
    default: break;
    }
}
