/* The VMX backend's private interface: VMX instructions, capability MSRs and per-vCPU state shared by its files. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "vcpu.h"
#include "vmcs_fields.h"

/* Capability and control MSRs (Intel SDM vol. 3D, appendix A). */
#define MSR_IA32_FEATURE_CONTROL     0x3a
#define MSR_IA32_DEBUGCTL            0x1d9
#define MSR_IA32_VMX_BASIC           0x480
#define MSR_IA32_VMX_PINBASED        0x481
#define MSR_IA32_VMX_PROCBASED       0x482
#define MSR_IA32_VMX_EXIT            0x483
#define MSR_IA32_VMX_ENTRY           0x484
#define MSR_IA32_VMX_MISC            0x485
#define MSR_IA32_VMX_CR0_FIXED0      0x486
#define MSR_IA32_VMX_CR0_FIXED1      0x487
#define MSR_IA32_VMX_CR4_FIXED0      0x488
#define MSR_IA32_VMX_CR4_FIXED1      0x489
#define MSR_IA32_VMX_PROCBASED2      0x48b
#define MSR_IA32_VMX_EPT_VPID_CAP    0x48c
#define MSR_IA32_VMX_TRUE_PINBASED   0x48d
#define MSR_IA32_VMX_TRUE_PROCBASED  0x48e
#define MSR_IA32_VMX_TRUE_EXIT       0x48f
#define MSR_IA32_VMX_TRUE_ENTRY      0x490
#define MSR_IA32_EFER                0xc0000080
#define MSR_IA32_FS_BASE             0xc0000100
#define MSR_IA32_GS_BASE             0xc0000101

#define VMX_BASIC_TRUE_CTLS (1ull << 55)

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR0_ET (1ull << 4)
#define CR0_WP (1ull << 16)
#define CR0_AM (1ull << 18)
#define CR0_NE (1ull << 5)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define CR4_PGE (1ull << 7)
#define CR4_VMXE (1ull << 13)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

/* What cpu_enable learned from the capability MSRs; vcpu_create builds on it. */
struct vmx_caps {
    uint32_t revision;                   /* IA32_VMX_BASIC[30:0]: first word of VMXON region and every VMCS */
    uint64_t pin, proc, proc2, exit, entry;  /* allowed-0 (low half) / allowed-1 (high half) */
    uint64_t cr0_fixed0, cr0_fixed1, cr4_fixed0, cr4_fixed1;
    uint64_t ept_vpid;
    uint32_t preempt_shift;              /* the preemption timer counts every 2^shift TSC ticks */
    bool unrestricted;
};

/* One entry of a VM-entry/VM-exit MSR area (SDM vol. 3C, 25.7.2). */
struct vmx_msr_entry {
    uint32_t index;
    uint32_t reserved;
    uint64_t value;
};

/*
 * The guest MSRs the VMCS has no field for. VM entry loads them from the
 * guest area, VM exit stores them back into it (so SWAPGS and the like are
 * kept) and loads the host's from the host area: the host's values are never
 * the guest's, and the guest's survive every exit.
 */
enum vmx_msr_slot { VMX_MSR_KERNEL_GS_BASE, VMX_MSR_STAR, VMX_MSR_LSTAR, VMX_MSR_CSTAR, VMX_MSR_SFMASK,
                    VMX_MSR_PAT, VMX_MSR_TSC_AUX, VMX_MSR_SLOTS };

/* Per-vCPU backend state, behind struct vcpu's arch pointer. */
struct vmx_vcpu {
    uint64_t vmcs;                       /* physical (= virtual) address of the 4 KiB VMCS */
    uint32_t pin, proc, proc2, exit, entry;  /* the controls as computed */
    uint32_t proc_now;                   /* the processor-based controls in the VMCS: proc, or proc with the interrupt window */
    bool in_use;
    uint32_t msr_count;                  /* slots in use: TSC_AUX only where the CPU has it */
    struct vmx_msr_entry guest_msrs[VMX_MSR_SLOTS] __attribute__((aligned(16)));
    struct vmx_msr_entry host_msrs[VMX_MSR_SLOTS] __attribute__((aligned(16)));
};

extern struct vmx_caps vmx_caps;

/* VMX instructions report failure in RFLAGS: CF (VMfailInvalid) or ZF (VMfailValid). */
static inline bool vmx_vmwrite(uint32_t field, uint64_t value)
{
    bool fail;
    __asm__ volatile("vmwrite %2, %1" : "=@ccbe"(fail) : "r"((uint64_t)field), "rm"(value) : "cc", "memory");
    return !fail;
}

static inline uint64_t vmx_vmread(uint32_t field)
{
    uint64_t value = 0;
    __asm__ volatile("vmread %1, %0" : "=rm"(value) : "r"((uint64_t)field) : "cc");
    return value;
}

static inline bool vmx_vmclear(uint64_t pa)
{
    bool fail;
    __asm__ volatile("vmclear %1" : "=@ccbe"(fail) : "m"(pa) : "cc", "memory");
    return !fail;
}

static inline bool vmx_vmptrld(uint64_t pa)
{
    bool fail;
    __asm__ volatile("vmptrld %1" : "=@ccbe"(fail) : "m"(pa) : "cc", "memory");
    return !fail;
}

/* vmcs.c: make this vCPU's VMCS current, so VMREAD/VMWRITE reach it. */
bool vmcs_load(struct vmx_vcpu *x);
/* vmcs.c: hooks over the VMCS. */
int vmcs_create(struct vcpu *v);
void vmcs_reset(struct vcpu *v);
void vmcs_destroy(struct vcpu *v);
void vmcs_advance_rip(struct vcpu *v, uint32_t len);
uint64_t vmcs_guest_rip(struct vcpu *v);
uint64_t vmcs_reg_get(struct vcpu *v, enum vcpu_reg r);
void vmcs_reg_set(struct vcpu *v, enum vcpu_reg r, uint64_t value);
/* vmx_exit.c: one entry into the guest and the decoded exit. */
void vmx_exit_run(struct vcpu *v, uint64_t deadline_tsc, struct exit_info *exit);
