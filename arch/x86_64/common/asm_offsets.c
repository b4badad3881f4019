/* C structure offsets that generated assembly needs, read from this object by toolchain/asm_offsets.py. */
#include <stddef.h>
#include <stdint.h>
#include "boot_links.h"
#include "exc_frame.h"
#include "vcpu.h"

/* Each becomes a symbol asm_offset_NAME in .rodata.asm_offsets holding the value. */
#define OFFSET(name, type, member) \
    const uint64_t asm_offset_##name __attribute__((used, section(".rodata.asm_offsets"))) = offsetof(type, member)
#define SIZE(name, type) \
    const uint64_t asm_offset_##name __attribute__((used, section(".rodata.asm_offsets"))) = sizeof(type)

OFFSET(links_main, struct boot_links, main);
OFFSET(links_exception, struct boot_links, exception);
OFFSET(links_irq, struct boot_links, irq);
OFFSET(links_stack_top, struct boot_links, stack_top);
OFFSET(links_bss_start, struct boot_links, bss_start);
OFFSET(links_bss_end, struct boot_links, bss_end);

OFFSET(frame_rax, struct exc_frame, rax);
OFFSET(frame_rbx, struct exc_frame, rbx);
OFFSET(frame_rcx, struct exc_frame, rcx);
OFFSET(frame_rdx, struct exc_frame, rdx);
OFFSET(frame_rsi, struct exc_frame, rsi);
OFFSET(frame_rdi, struct exc_frame, rdi);
OFFSET(frame_rbp, struct exc_frame, rbp);
OFFSET(frame_r8, struct exc_frame, r8);
OFFSET(frame_r9, struct exc_frame, r9);
OFFSET(frame_r10, struct exc_frame, r10);
OFFSET(frame_r11, struct exc_frame, r11);
OFFSET(frame_r12, struct exc_frame, r12);
OFFSET(frame_r13, struct exc_frame, r13);
OFFSET(frame_r14, struct exc_frame, r14);
OFFSET(frame_r15, struct exc_frame, r15);
OFFSET(frame_vector, struct exc_frame, vector);
OFFSET(frame_error, struct exc_frame, error);
OFFSET(frame_rip, struct exc_frame, rip);
SIZE(frame_size, struct exc_frame);

OFFSET(gregs_rax, struct guest_regs, rax);
OFFSET(gregs_rbx, struct guest_regs, rbx);
OFFSET(gregs_rcx, struct guest_regs, rcx);
OFFSET(gregs_rdx, struct guest_regs, rdx);
OFFSET(gregs_rsi, struct guest_regs, rsi);
OFFSET(gregs_rdi, struct guest_regs, rdi);
OFFSET(gregs_rbp, struct guest_regs, rbp);
OFFSET(gregs_r8, struct guest_regs, r8);
OFFSET(gregs_r9, struct guest_regs, r9);
OFFSET(gregs_r10, struct guest_regs, r10);
OFFSET(gregs_r11, struct guest_regs, r11);
OFFSET(gregs_r12, struct guest_regs, r12);
OFFSET(gregs_r13, struct guest_regs, r13);
OFFSET(gregs_r14, struct guest_regs, r14);
OFFSET(gregs_r15, struct guest_regs, r15);
SIZE(gregs_size, struct guest_regs);

OFFSET(fpu_area, struct vcpu_fpu, area);
OFFSET(fpu_xcr0, struct vcpu_fpu, xcr0);
OFFSET(fpu_host_xcr0, struct vcpu_fpu, host_xcr0);
OFFSET(fpu_host_mxcsr, struct vcpu_fpu, host_mxcsr);
OFFSET(fpu_use_xsave, struct vcpu_fpu, use_xsave);
