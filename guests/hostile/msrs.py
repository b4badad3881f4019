"""Hostile kinds on MSRs: the VMX and SVM control MSRs, EFER's reserved bits, the APIC base,
and a read-then-write-back sweep; each answered as the CPU would (#GP), never a stop."""

from __future__ import annotations

from guests.hostile.runtime import VEC, check, guarded

GP = VEC["GP"]
EFER = 0xC0000080
APIC_BASE = 0x1B
VMX_MSRS = range(0x480, 0x492)          # IA32_VMX_BASIC .. IA32_VMX_VMFUNC
SVM_MSRS = (0xC0010114, 0xC0010117)     # VM_CR, VM_HSAVE_PA
SWEEP_RANGES = ((0, 0x2000), (0xC0000000, 0xC0002000), (0xC0010000, 0xC0012000))


def _join(parts):
    return "".join(c for c, _ in parts), "".join(d for _, d in parts)


def _rdmsr(msr: int) -> str:
    return f"    mov ecx, {msr:#x}\n    rdmsr\n"


def _wrmsr(msr: int, value: int) -> str:
    return f"    mov ecx, {msr:#x}\n    mov eax, {value & 0xffffffff:#x}\n    mov edx, {value >> 32:#x}\n    wrmsr\n"


def msr_vmx_svm() -> tuple[str, str]:
    """The partition's CPUID says neither VMX nor SVM: the VMX MSRs raise #GP, and so do writes
    of the SVM ones, on either vendor."""
    # VM_CR reads as SVM-disabled-and-locked on AMD (docs/vcpu.md): only its writes #GP on both.
    parts = [check(f"rdmsr {m:#x}", _rdmsr(m), GP) for m in VMX_MSRS]
    parts += [check(f"wrmsr {m:#x}", _wrmsr(m, 0), GP) for m in SVM_MSRS]
    return _join(parts)


def _efer_or(bit: int) -> str:
    return f"""\
    mov ecx, {EFER:#x}
    rdmsr
    bts rax, {bit}
    wrmsr
"""


def msr_efer() -> tuple[str, str]:
    """EFER with a reserved bit or SVME set raises #GP; writing back what it read does not."""
    parts = [check(f"EFER bit {b}", _efer_or(b), GP) for b in (1, 7, 9, 12, 16, 31)]
    parts.append(check("EFER bit 63", f"""\
    mov ecx, {EFER:#x}
    rdmsr
    bts edx, 31
    wrmsr
""", GP))
    parts.append(check("EFER written back", f"    mov ecx, {EFER:#x}\n    rdmsr\n    wrmsr\n"))
    return _join(parts)


def msr_apic() -> tuple[str, str]:
    """The APIC base: reads, its reserved bits and a base beyond the physical address width
    raise #GP on write; an x2APIC register in xAPIC mode raises #GP."""
    parts = [check("rdmsr APIC base", _rdmsr(APIC_BASE))]
    for what, op in (("bit 0", "bts eax, 0"), ("bit 9", "bts eax, 9"), ("bit 63", "bts edx, 31")):
        parts.append(check(f"APIC base {what}", f"""\
    mov ecx, {APIC_BASE:#x}
    rdmsr
    {op}
    wrmsr
""", GP))
    parts.append(check("rdmsr x2APIC ID in xAPIC mode", _rdmsr(0x802), GP))
    return _join(parts)


def msr_sweep() -> tuple[str, str]:
    """RDMSR of every MSR in the architectural, AMD64 and AMD ranges, and WRMSR of the value
    read back to each that answered: #GP or an answer each time, never a stop."""
    loops = []
    for i, (lo, hi) in enumerate(SWEEP_RANGES):
        body = guarded("    mov ecx, r13d\n    rdmsr\n    mov ecx, r13d\n    wrmsr\n")
        loops.append(f"""\
    mov r13d, {lo:#x}
.Lmsr_sweep_{i}:
{body}
    inc r13d
    cmp r13d, {hi:#x}
    jb .Lmsr_sweep_{i}
""")
    return "".join(loops), ""
