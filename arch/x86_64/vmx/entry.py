"""The VMX backend's VM entry and exit stubs, emitted as assembly for boot/stub.py to place and assemble."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from arch.x86_64 import fpu_switch
from toolchain.vmcs import FIELDS

# C calls vmx_enter(struct guest_regs *regs, uint64_t resume, struct vcpu_fpu *fpu)
# through a function pointer built from BOOT_SYM_VMX_ENTER (System V: RDI, RSI,
# RDX). The stub switches the FPU/SSE/AVX state and XCR0 around the guest. It returns
# ENTER_EXITED after a VM exit, or the VMfail kind when VMLAUNCH/VMRESUME
# itself failed. HOST_RIP is BOOT_SYM_VMX_EXIT, written once by vcpu_create.
ENTER_EXITED = 0
ENTER_FAIL_VALID = 1     # ZF=1: the VMCS holds a VM-instruction error number
ENTER_FAIL_INVALID = 2   # CF=1: no current VMCS

# Callee-saved in the System V ABI: VM exit loads none of them (only RSP and
# RIP come from the host-state area), so the stub keeps them on its stack.
CALLEE_SAVED = ("rbp", "rbx", "r12", "r13", "r14", "r15")
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

# Keystone 0.9.2 assembles vmwrite/vmlaunch/vmresume (FACTS.md); memory is
# addressed only through registers (its `mov r64, [abs]` is mis-encoded).
_HOST_RSP = next(f.encoding for f in FIELDS if f.name == "HOST_RSP")


def _hex(value: int) -> str:
    return f"{value:#x}"


def _check(offsets: Mapping[str, int]) -> None:
    for gpr in GPRS:
        at = offsets[f"gregs_{gpr}"]
        if not 0 <= at <= offsets["gregs_size"] - 8:
            raise ValueError(f"gregs_{gpr} = {at:#x} lies outside struct guest_regs")


def enter_source(offsets: Mapping[str, int], addresses: Mapping[str, int]) -> str:
    """Save the host's callee-saved registers, load the guest's FPU state, record HOST_RSP, load guest GPRs,
    VMLAUNCH or VMRESUME."""
    _check(offsets)
    fpu_in = fpu_switch.guest_in(offsets, "r8", ".Lvmx_enter_fpu_in")
    fpu_back = fpu_switch.host_restore(offsets, "r8", ".Lvmx_enter_fpu_back")
    pushes = "\n".join(f"    push {r}" for r in CALLEE_SAVED)
    pops = "\n".join(f"    pop {r}" for r in reversed(CALLEE_SAVED))
    loads = "\n".join(f"    mov {r}, qword ptr [rdi + {_hex(offsets['gregs_' + r])}]"
                      for r in GPRS if r != "rdi")
    return f"""\
vmx_enter:
{pushes}
    # The exit stub finds the guest_regs pointer at the top of the host
    # stack and the vcpu_fpu pointer below it.
    push rdx
    push rdi
    mov r8, rdx
{fpu_in}    # VM exit loads RSP from HOST_RSP: this frame's stack pointer, written
    # on every entry because the caller's stack depth may differ.
    mov rax, {_hex(_HOST_RSP)}
    vmwrite rax, rsp
    jbe .Lvmx_enter_fail
    # Flags from this test survive the MOVs below; RSI is reloaded with the
    # guest's value, so the choice must be made now.
    test rsi, rsi
{loads}
    mov rdi, qword ptr [rdi + {_hex(offsets['gregs_rdi'])}]
    jnz .Lvmx_enter_resume
    vmlaunch
    jmp .Lvmx_enter_fail
.Lvmx_enter_resume:
    vmresume
.Lvmx_enter_fail:
    # Still in the host with the guest's registers loaded: VMfailInvalid sets
    # CF, VMfailValid sets ZF (SDM vol. 3C, 31.2). MOV keeps the flags.
    mov eax, {ENTER_FAIL_INVALID}
    jc .Lvmx_enter_out
    mov eax, {ENTER_FAIL_VALID}
.Lvmx_enter_out:
    # No guest ran: its FPU state is unchanged, the host's comes back.
    mov r10d, eax
    mov r8, qword ptr [rsp + 8]
{fpu_back}    mov eax, r10d
    add rsp, 16
{pops}
    ret
"""


def exit_source(offsets: Mapping[str, int], addresses: Mapping[str, int]) -> str:
    """HOST_RIP: store guest GPRs into the struct, save the guest's FPU state and give the host its own,
    restore host registers, return ENTER_EXITED to C."""
    _check(offsets)
    stores = "\n".join(f"    mov qword ptr [rdi + {_hex(offsets['gregs_' + r])}], {r}"
                       for r in GPRS if r != "rdi")
    pops = "\n".join(f"    pop {r}" for r in reversed(CALLEE_SAVED))
    fpu_out = fpu_switch.guest_out(offsets, "r8", ".Lvmx_exit_fpu_out")
    return f"""\
vmx_exit:
    # RSP is HOST_RSP, pointing at the guest_regs pointer vmx_enter pushed.
    # VM exit leaves every GPR but RSP as the guest had it, and RFLAGS = 2
    # (interrupts off, DF clear, as C expects).
    push rdi
    mov rdi, qword ptr [rsp + 8]
{stores}
    pop rax
    mov qword ptr [rdi + {_hex(offsets['gregs_rdi'])}], rax
    mov r8, qword ptr [rsp + 8]
{fpu_out}    add rsp, 16
{pops}
    mov eax, {ENTER_EXITED}
    ret
"""


# (chunk name, source(offsets, addresses) -> 64-bit assembly text): each chunk's
# address becomes BOOT_SYM_<NAME> in build/gen/boot_symbols.h.
CHUNKS: list[tuple[str, Callable[[Mapping[str, int], Mapping[str, int]], str]]] = [
    ("vmx_enter", enter_source),
    ("vmx_exit", exit_source),
]
