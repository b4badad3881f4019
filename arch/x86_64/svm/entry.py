"""The SVM backend's VM entry and exit stubs, emitted as assembly for boot/stub.py to place and assemble."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from arch.x86_64 import fpu_switch

# Registers the stub moves between the CPU and struct guest_regs. RAX is not
# among them: VMRUN loads guest RAX from the VMCB and #VMEXIT stores it there
# (the C side copies it), and RSP likewise lives in the VMCB.
GUEST_GPRS = ("rbx", "rcx", "rdx", "rsi", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi")
# The System V ABI's callee-saved registers: the C caller expects them back.
HOST_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")

def _hex(value: int) -> str:
    return f"{value:#x}"


def run_source(offsets: Mapping[str, int], addresses: Mapping[str, int]) -> str:
    """svm_run(struct guest_regs *regs, u64 guest_vmcb_pa, u64 host_vmcb_pa, struct vcpu_fpu *fpu):
    one VMRUN, one #VMEXIT, with the guest's FPU/SSE/AVX state and XCR0 around it."""
    del addresses
    fpu_in = fpu_switch.guest_in(offsets, "r8", ".Lsvm_run_fpu_in")
    fpu_out = fpu_switch.guest_out(offsets, "r8", ".Lsvm_run_fpu_out")
    loads = "\n".join(f"    mov {r}, qword ptr [rdi + {_hex(offsets['gregs_' + r])}]"
                      for r in GUEST_GPRS)
    saves = "\n".join(f"    mov qword ptr [rax + {_hex(offsets['gregs_' + r])}], {r}"
                      for r in GUEST_GPRS)
    pushes = "\n".join(f"    push {r}" for r in HOST_SAVED)
    pops = "\n".join(f"    pop {r}" for r in reversed(HOST_SAVED))
    return f"""\
svm_run:
{pushes}
    push rcx                       # [rsp+16]: struct vcpu_fpu *
    push rdx                       # [rsp+8]: host VMCB (VMLOAD/VMSAVE state)
    push rdi                       # [rsp]: struct guest_regs *
    mov r8, rcx
{fpu_in}    mov rdx, qword ptr [rsp + 8]
    # GIF=0 holds every interrupt pending from here to STGI, so the host never
    # takes one between the STI below and VMRUN, nor right after #VMEXIT.
    clgi
    # VMRUN saves and restores only part of the host (segments CS/SS/DS/ES,
    # GDTR/IDTR, CRs, EFER, RFLAGS, RSP, RAX); FS, GS, TR (with the IST
    # stacks), LDTR and the SYSCALL/SYSENTER MSRs move with VMSAVE/VMLOAD.
    mov rax, rdx
    vmsave rax
    mov rax, rsi
    vmload rax
    # With V_INTR_MASKING the host's RFLAGS.IF at VMRUN decides whether a
    # physical interrupt (the slice timer) interrupts the guest: set it.
    sti
{loads}
    vmrun rax
    # #VMEXIT: GIF=0, host RSP/RFLAGS restored, RAX = the guest VMCB again;
    # every other GPR still holds the guest's value.
    push rax
    mov rax, qword ptr [rsp + 8]
{saves}
    pop rax
    vmsave rax
    mov rax, qword ptr [rsp + 8]
    vmload rax
    mov r8, qword ptr [rsp + 16]
{fpu_out}    # Back to the host's IF=0 before GIF=1: a pending host interrupt (the
    # slice timer, an IPI) stays pending until the C side takes it.
    cli
    stgi
    add rsp, 24
{pops}
    ret
"""


# (chunk name, source(offsets, addresses) -> 64-bit assembly text): each chunk's
# address becomes BOOT_SYM_<NAME> in build/gen/boot_symbols.h.
CHUNKS: list[tuple[str, Callable[[Mapping[str, int], Mapping[str, int]], str]]] = [
    ("svm_run", run_source),
]
