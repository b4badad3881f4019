/* The register frame the exception entry stubs build on the stack before calling C. */
#pragma once
#include <stdint.h>

/*
 * The stubs store the general registers at offsets generated from this
 * struct (asm_offsets.c). vector and error are pushed by the stub (error is 0
 * for vectors without a hardware error code); rip..ss are pushed by the CPU,
 * so they must stay last and in this order.
 */
struct exc_frame {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};
