"""Hostile kinds on the CPU itself: control registers, XSETBV, every VMX and SVM instruction,
CPUID (prefixed, and swept for leaks), and instructions that touch shared state."""

from __future__ import annotations

from guests.hostile.runtime import VEC, check, fail_unless, guarded

GP, UD = VEC["GP"], VEC["UD"]
CR4_VMXE = 13
CR4_OSXSAVE = 18


def _join(parts):
    return "".join(c for c, _ in parts), "".join(d for _, d in parts)


def _cr_set(cr: int, op: str) -> str:
    return f"    mov rax, cr{cr}\n    {op}\n    mov cr{cr}, rax\n"


def cr_bad() -> tuple[str, str]:
    """Invalid CR0 and CR4 values raise #GP (SDM vol. 3A, 2.5; MOV to CR), VMXE included
    since the partition's CPUID has no VMX. (CR3 is not intercepted with nested paging: the
    CPU checks it itself. QEMU's TCG does not, and then VMRUN refuses the guest, which ends
    it `faulted` alone: docs/security.md.)"""
    parts = [
        check("CR4.VMXE", _cr_set(4, f"bts rax, {CR4_VMXE}"), GP),
        check("CR4 bit 15", _cr_set(4, "bts rax, 15"), GP),
        check("CR4 bit 40", _cr_set(4, "bts rax, 40"), GP),
        check("CR4.PAE cleared in long mode", _cr_set(4, "btr rax, 5"), GP),
        check("CR0 bit 32", _cr_set(0, "bts rax, 32"), GP),
        check("CR0.PE cleared with PG", _cr_set(0, "btr rax, 0"), GP),
        check("CR0.NW without CD", _cr_set(0, "bts rax, 29\n    btr rax, 30"), GP),
        check("CR0.PG cleared in long mode", _cr_set(0, "btr rax, 31"), GP),
        check("CR0 written back", _cr_set(0, "nop")),
        check("CR4 written back", _cr_set(4, "nop")),
    ]
    return _join(parts)


def _xsetbv(value: int, index: int = 0) -> str:
    return f"""\
    mov ecx, {index}
    mov eax, {value & 0xffffffff:#x}
    mov edx, {value >> 32:#x}
    xsetbv
"""


def xsetbv_bad() -> tuple[str, str]:
    """With CR4.OSXSAVE set (when CPUID has XSAVE): XCR0 without x87, AVX without SSE, an
    undefined bit and an undefined XCR raise #GP; XCR0 = x87|SSE does not."""
    parts = [check("XSETBV 0", _xsetbv(0), GP), check("XSETBV AVX without SSE", _xsetbv(5), GP),
             check("XSETBV bit 63", _xsetbv(3 | 1 << 63), GP), check("XSETBV XCR5", _xsetbv(3, 5), GP),
             check("XSETBV x87|SSE", _xsetbv(3))]
    code, data = _join(parts)
    return f"""\
    mov eax, 1
    cpuid
    bt ecx, 26
    jnc .Lxsetbv_bad_skip
    mov rax, cr4
    bts rax, {CR4_OSXSAVE}
    mov cr4, rax
{code}
.Lxsetbv_bad_skip:
""", data


# Each raises #UD: VMX needs CR4.VMXE (which #GPs here), SVM needs EFER.SVME (likewise).
VMX_INSNS = {
    "vmxon": "vmxon qword ptr [rsp]", "vmxoff": "vmxoff", "vmclear": "vmclear qword ptr [rsp]",
    "vmptrld": "vmptrld qword ptr [rsp]", "vmptrst": "vmptrst qword ptr [rsp]",
    "vmread": "vmread rax, rbx", "vmwrite": "vmwrite rbx, rax", "vmlaunch": "vmlaunch",
    "vmresume": "vmresume", "invept": "invept rax, xmmword ptr [rsp]",
    "invvpid": "invvpid rax, xmmword ptr [rsp]", "vmfunc": ".byte 0x0f, 0x01, 0xd4",
}
SVM_INSNS = {
    "vmrun": "vmrun rax", "vmload": "vmload rax", "vmsave": "vmsave rax", "stgi": "stgi",
    "clgi": "clgi", "skinit": ".byte 0x0f, 0x01, 0xde", "invlpga": ".byte 0x0f, 0x01, 0xdf",
}


def _insns(table: dict[str, str]) -> tuple[str, str]:
    return _join([check(name, f"    xor eax, eax\n    xor ebx, ebx\n    {text}\n", UD)
                  for name, text in table.items()])


def vmx_insns() -> tuple[str, str]:
    return _insns(VMX_INSNS)


def svm_insns() -> tuple[str, str]:
    return _insns(SVM_INSNS)


def _cpuid_bit(leaf: int, reg: str, bit: int, want: int, what: str) -> tuple[str, str]:
    tail, data = fail_unless(what, "jc" if want else "jnc")
    return f"    mov eax, {leaf:#x}\n    xor ecx, ecx\n    cpuid\n    bt {reg}, {bit}\n" + tail, data


def cpuid_sweep() -> tuple[str, str]:
    """Every basic, hypervisor and extended leaf with subleaves 0..3 answers without a stop,
    and none shows the host's virtualization: no VMX, no SVM, no SVM leaf, the hypervisor bit
    set and Taipan's signature at 0x40000000."""
    sweep = """\
    xor r13d, r13d
.Lcpuid_sweep_leaf:
    xor r12d, r12d
.Lcpuid_sweep_sub:
    mov eax, r13d
    mov ecx, r12d
    cpuid
    inc r12d
    cmp r12d, 4
    jb .Lcpuid_sweep_sub
    inc r13d
    mov eax, r13d
    and eax, 0xff
    cmp eax, 0x40
    jb .Lcpuid_sweep_leaf
    and r13d, 0xffffff00
    add r13d, 0x40000000
    cmp r13d, 0xc0000000
    jb .Lcpuid_sweep_leaf
"""
    parts = [
        (sweep, ""),
        _cpuid_bit(1, "ecx", 5, 0, "CPUID shows VMX"),
        _cpuid_bit(0x80000001, "ecx", 2, 0, "CPUID shows SVM"),
        _cpuid_bit(1, "ecx", 31, 1, "CPUID hides the hypervisor bit"),
    ]
    svm_leaf = fail_unless("CPUID leaf 0x8000000a shows SVM features", "je")
    parts.append(("    mov eax, 0x8000000a\n    xor ecx, ecx\n    cpuid\n    or eax, ebx\n"
                  "    or eax, edx\n    test eax, eax\n" + svm_leaf[0], svm_leaf[1]))
    signature = fail_unless("CPUID 0x40000000 is not TaipanTaipan", "je")
    sig = int.from_bytes(b"Taip", "little")
    parts.append((f"    mov eax, 0x40000000\n    cpuid\n    cmp ebx, {sig:#x}\n" + signature[0], signature[1]))
    return _join(parts)


def prefixed_cpuid() -> tuple[str, str]:
    """CPUID behind legacy prefixes is one instruction: execution resumes after all of it."""
    parts = []
    for i, prefix in enumerate(("0x66", "0xf3", "0x2e, 0x3e", "0x66, 0x66, 0x66, 0x66")):
        code, data = check(f"CPUID with prefix {prefix}", f"""\
    xor r8d, r8d
    xor eax, eax
    .byte {prefix}, 0x0f, 0xa2
    mov r8d, 0x1234
""")
        ok = fail_unless(f"CPUID with prefix {prefix} resumed mid-instruction", "je")
        parts.append((code + "    cmp r8d, 0x1234\n" + ok[0], data + ok[1]))
        del i
    return _join(parts)


def shared_state() -> tuple[str, str]:
    """Instructions that reach state the CPU shares with the host (finding 5): each is
    answered (executed, or an exception the architecture allows) and nothing stops."""
    parts = []
    for what, text in (
        ("wbinvd", "wbinvd"),
        ("swapgs twice", "swapgs\n    swapgs"),
        ("debug registers", "mov rax, 0x1000\n    mov dr0, rax\n    mov dr1, rax\n    mov dr2, rax\n"
                            "    mov dr3, rax\n    mov rax, 0x400\n    mov dr7, rax"),
        ("CR8", "mov eax, 15\n    mov cr8, rax\n    xor eax, eax\n    mov cr8, rax"),
    ):
        parts.append(check(what, f"    {text}\n"))
    code, data = _join(parts)
    # MONITOR/MWAIT and RDPMC: the CPUID the partition sees decides; any answer is allowed,
    # so only a stop or a reset fails this part.
    return code + guarded("""\
    mov eax, 1
    cpuid
    bt ecx, 3
    jnc .Lshared_state_no_monitor
    mov eax, 0x100000
    xor ecx, ecx
    xor edx, edx
    monitor
.Lshared_state_no_monitor:
""") + guarded("    xor ecx, ecx\n    rdpmc\n"), data
