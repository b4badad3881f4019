"""The FPU/SSE/AVX and XCR0 switch both backends' entry stubs place around the guest (struct vcpu_fpu)."""
from __future__ import annotations

from collections.abc import Mapping

# x87 and SSE state move with FXSAVE64/FXRSTOR64, which ignore XCR0: a guest
# whose XCR0 is x87 alone still has XMM registers and MXCSR of its own. The
# components above them move with XSAVE64/XRSTOR64 under the guest's XCR0 (the
# requested-feature bitmap is XCR0 & EDX:EAX), so XCR0 is the guest's from
# before XRSTOR until after XSAVE. The host gets back its XCR0, an empty x87
# stack with FNINIT's control word and its MXCSR: all the System V ABI keeps
# across a call (XMM registers are caller-saved), so a guest's MXCSR = 0
# never unmasks SIMD exceptions in the hypervisor.
_EXTENDED_ONLY = 0xFFFFFFFC   # clears the x87 and SSE bits of the bitmap's low half


def _hex(value: int) -> str:
    return f"{value:#x}"


def guest_in(offsets: Mapping[str, int], fpu: str, label: str) -> str:
    """Load the guest's state; `fpu` holds the struct vcpu_fpu pointer. Clobbers RAX, RCX, RDX, R9, flags."""
    o = {k: _hex(offsets[f"fpu_{k}"]) for k in ("area", "xcr0", "use_xsave")}
    return f"""\
    mov r9, qword ptr [{fpu} + {o['area']}]
    fxrstor64 [r9]
    cmp dword ptr [{fpu} + {o['use_xsave']}], 0
    je {label}
    mov eax, dword ptr [{fpu} + {o['xcr0']}]
    mov edx, dword ptr [{fpu} + {o['xcr0']} + 4]
    xor ecx, ecx
    xsetbv
    and eax, {_hex(_EXTENDED_ONLY)}
    xrstor64 [r9]
{label}:
"""


def guest_out(offsets: Mapping[str, int], fpu: str, label: str) -> str:
    """Save the guest's state and give the host its own back. Clobbers RAX, RCX, RDX, R9, flags.

    XCR0 is read back from the CPU first: an XSETBV the hypervisor did not see
    (QEMU TCG does not honour SVM's XSETBV intercept) still stays the vCPU's own."""
    o = {k: _hex(offsets[f"fpu_{k}"]) for k in ("area", "xcr0", "use_xsave")}
    return f"""\
    mov r9, qword ptr [{fpu} + {o['area']}]
    fxsave64 [r9]
    cmp dword ptr [{fpu} + {o['use_xsave']}], 0
    je {label}
    xor ecx, ecx
    xgetbv
    mov dword ptr [{fpu} + {o['xcr0']}], eax
    mov dword ptr [{fpu} + {o['xcr0']} + 4], edx
    and eax, {_hex(_EXTENDED_ONLY)}
    xsave64 [r9]
{host_in(offsets, fpu, label + "_host")}{label}:
    fninit
    ldmxcsr dword ptr [{fpu} + {_hex(offsets['fpu_host_mxcsr'])}]
"""


def host_in(offsets: Mapping[str, int], fpu: str, label: str) -> str:
    """XCR0 back to the host's value (only where XSAVE is in use: the caller tests it)."""
    o = _hex(offsets["fpu_host_xcr0"])
    del label
    return f"""\
    mov eax, dword ptr [{fpu} + {o}]
    mov edx, dword ptr [{fpu} + {o} + 4]
    xor ecx, ecx
    xsetbv
"""


def host_restore(offsets: Mapping[str, int], fpu: str, label: str) -> str:
    """After a failed entry: the guest's state is loaded but never ran, so only the host's comes back."""
    return f"""\
    cmp dword ptr [{fpu} + {_hex(offsets['fpu_use_xsave'])}], 0
    je {label}
{host_in(offsets, fpu, label)}{label}:
    fninit
    ldmxcsr dword ptr [{fpu} + {_hex(offsets['fpu_host_mxcsr'])}]
"""
