/* The vendor-neutral virtual CPU: MSR file, control registers, XCR0, FPU state, CPUID and event injection. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "vcpu.h"

/* Exception vectors the core raises. */
#define VEC_NMI 2
#define VEC_UD 6
#define VEC_DF 8
#define VEC_GP 13

/* hv/vevent.c: queue a hardware exception for the next entry. Folds it with
 * an event already queued as the CPU does (#DF); false when that makes a
 * triple fault, which the caller turns into the partition's fault. */
bool vevent_exception(struct vcpu *v, uint8_t vector, bool has_error, uint32_t error);
static inline bool vevent_gp(struct vcpu *v) { return vevent_exception(v, VEC_GP, true, 0); }

/* hv/vfpu.c: on every CPU, before any VMCS/VMCB records the host's CR4 or a
 * guest runs there: turns on CR4.OSXSAVE where the CPU has XSAVE. */
void vfpu_host_init(void);
/* The vCPU's FPU/SSE/AVX state to its RESET values, XCR0 = x87. */
void vfpu_reset(struct vcpu *v);
/* The XCR0 bits a guest may set (what the CPU has, bounded by the area size). */
uint64_t vfpu_xcr0_allowed(void);
/* Bytes of a standard-form XSAVE area holding the components in xcr0 (CPUID 0xD.0 EBX). */
uint32_t vfpu_area_size(uint64_t xcr0);
/* Bytes of a compacted XSAVE area holding the components in xcr0 (CPUID 0xD.1 EBX). */
uint32_t vfpu_compacted_size(uint64_t xcr0);

/* hv/vmsr.c: the vCPU's MSRs to their reset values (backend state included). */
void vmsr_reset(struct vcpu *v);
/* RDMSR / WRMSR: true with the value read (or written), false when the CPU would raise #GP. */
bool vmsr_read(struct vcpu *v, uint32_t msr, uint64_t *value);
bool vmsr_write(struct vcpu *v, uint32_t msr, uint64_t value);

/* hv/vcr.c: MOV to CR0/CR3/CR4 and XSETBV as the manuals define them; false: #GP. */
bool vcr_write(struct vcpu *v, unsigned cr, uint64_t value);
bool vcr_xsetbv(struct vcpu *v, uint32_t index, uint64_t value);
/* MOV from a CR that exits: CR8, the virtual APIC's TPR[7:4]. */
uint64_t vcr_read(const struct vcpu *v, unsigned cr);
/* CR4 bits the partition's CPUID offers (VMXE and SMXE never). */
uint64_t vcr_cr4_supported(void);

/* hv/vmem.c: a guest linear address to guest-physical through the guest's page
 * tables (paging off, 32-bit, PAE, 4-level); false at a not-present entry. */
bool vmem_translate(struct vcpu *v, uint64_t linear, uint64_t *gpa);
/* Up to len bytes at guest linear address `linear`; how many could be read. */
uint32_t vmem_fetch(struct vcpu *v, uint64_t linear, uint8_t *buf, uint32_t len);

/* hv/vcpuid.c: CPUID as the partition sees it, with the bits that follow the vCPU's state. */
void vcpuid_emulate(struct vcpu *v);
/* The host's CPUID with Taipan's static filtering, for checks against what the guest is offered. */
void vcpuid_query(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d);
bool vcpuid_vendor_amd(void);

/* A general register by its x86 number (0 RAX, 1 RCX, 2 RDX, 3 RBX, 5 RBP, ... 15 R15); NULL for 4,
 * RSP, which the backend holds (VREG_RSP). */
uint64_t *vcpu_gpr(struct vcpu *v, unsigned n);

/* The exits this file set handles, for hv/vcpu_run.c's switch: emulate the
 * instruction and step past it, or inject #GP. False: the guest triple-faulted. */
bool vcpu_state_exit(struct vcpu *v, const struct exit_info *e);
