"""Assembly text of the boot entry path: 32-bit entry, long-mode entry, exception stubs and handler."""

from __future__ import annotations

from collections.abc import Mapping

from boot.gdt import GDTR_ADDRESS
from toolchain import layout

# Keystone 0.9.2 defects this text works around (cross-checked by capstone in
# tests/test_boot_stub.py):
# - `lgdt [abs]` in 32-bit mode gets a 0x66 prefix, which would load only a
#   24-bit base: LGDT is written as bytes.
# - `mov r64, [abs]` in 64-bit mode is encoded RIP-relative with the absolute
#   address as displacement: 64-bit code addresses memory through a register.
# - `~` in expressions and far `jmp sel:off` are refused: masks are computed
#   here and the far jump is written as bytes.
# - `;` separates statements; comments use `#`.

ISR_STUB_BYTES = 16  # fixed slots, so stub N is at isr_stubs + 16*N without a symbol table
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
LONG_MODE_MESSAGE = "taipan: this CPU has no 64-bit long mode"

COM1 = 0x3F8
COM1_LSR = COM1 + 5
LSR_THR_EMPTY = 1 << 5
CPUID_EXT_MAX = 0x80000000
CPUID_EXT_FEATURES = 0x80000001
CPUID_EDX_LONG_MODE = 1 << 29
CR0_PE, CR0_MP, CR0_EM, CR0_PG = 1 << 0, 1 << 1, 1 << 2, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 9, 1 << 10
MSR_EFER = 0xC0000080
EFER_LME = 1 << 8
_U32 = 0xFFFFFFFF
OPCODE_FAR_JMP = 0xEA
LGDT_DISP32 = (0x0F, 0x01, 0x15)  # 0F 01 /2 with ModRM mod=00 rm=101: [disp32]


class FrameLayoutError(ValueError):
    """struct exc_frame does not end the way the CPU and the stubs lay it down."""


def check_frame_layout(offsets: Mapping[str, int]) -> None:
    """Refuse an exc_frame whose vector/error/CPU-pushed part disagrees with the hardware."""
    vector, error, rip = offsets["frame_vector"], offsets["frame_error"], offsets["frame_rip"]
    # The stub pushes error then vector; the CPU pushed rip, cs, rflags, rsp,
    # ss just above them.
    facts = {
        "frame_error == frame_vector + 8": error == vector + 8,
        "frame_rip == frame_error + 8": rip == error + 8,
        "frame_size == frame_rip + 40": offsets["frame_size"] == rip + 40,
    }
    for gpr in GPRS:
        at = offsets[f"frame_{gpr}"]
        facts[f"frame_{gpr} lies below frame_vector"] = 0 <= at and at + 8 <= vector
    broken = [name for name, holds in facts.items() if not holds]
    if broken:
        raise FrameLayoutError("struct exc_frame breaks: " + ", ".join(broken))


def _hex(value: int) -> str:
    return f"{value:#x}"


def entry32_source(*, long_entry: int) -> str:
    """The loader's 32-bit protected-mode entry: check for long mode, enable it, jump to 64-bit."""
    cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
    message = ", ".join(str(b) for b in LONG_MODE_MESSAGE.encode("ascii") + b"\r\n\0")
    return f"""\
entry32:
    cli
    cld
    # Both loaders pass magic in EAX and their info pointer in EBX; CPUID
    # clobbers both, and EDI/ESI are where C's first two arguments go.
    mov edi, eax
    mov esi, ebx
    mov eax, {_hex(CPUID_EXT_MAX)}
    cpuid
    cmp eax, {_hex(CPUID_EXT_FEATURES)}
    jb .Lentry32_no_long_mode
    mov eax, {_hex(CPUID_EXT_FEATURES)}
    cpuid
    test edx, {_hex(CPUID_EDX_LONG_MODE)}
    jz .Lentry32_no_long_mode
    .byte {", ".join(_hex(b) for b in LGDT_DISP32)}   # lgdt [gdtr]
    .long {_hex(GDTR_ADDRESS)}
    mov ax, {_hex(layout.SEL_DATA)}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    # PAE for 4-level paging; OSFXSR/OSXMMEXCPT so compiled C may use SSE.
    mov eax, cr4
    or eax, {_hex(cr4)}
    mov cr4, eax
    mov eax, {_hex(layout.BOOT_PML4)}
    mov cr3, eax
    mov ecx, {_hex(MSR_EFER)}
    rdmsr
    or eax, {_hex(EFER_LME)}
    wrmsr
    # Paging on with LME set activates long mode; EM off and MP on so x87/SSE
    # instructions execute instead of raising #NM/#UD.
    mov eax, cr0
    and eax, {_hex(_U32 & ~CR0_EM)}
    or eax, {_hex(CR0_PG | CR0_MP | CR0_PE)}
    mov cr0, eax
    .byte {_hex(OPCODE_FAR_JMP)}   # jmp {_hex(layout.SEL_CODE64)}:long_entry
    .long {_hex(long_entry)}
    .short {_hex(layout.SEL_CODE64)}
.Lentry32_no_long_mode:
    # No stack and no C yet: poll the UART by hand, then stop for good.
    mov ebx, .Lentry32_message
.Lentry32_next:
    mov cl, byte ptr [ebx]
    test cl, cl
    jz .Lentry32_halt
.Lentry32_wait:
    mov dx, {_hex(COM1_LSR)}
    in al, dx
    test al, {_hex(LSR_THR_EMPTY)}
    jz .Lentry32_wait
    mov al, cl
    mov dx, {_hex(COM1)}
    out dx, al
    inc ebx
    jmp .Lentry32_next
.Lentry32_halt:
    cli
    hlt
    jmp .Lentry32_halt
.Lentry32_message:
    .byte {message}
"""


def long_entry_source(offsets: Mapping[str, int]) -> str:
    """64-bit entry: segments, TR, zeroed bss, stack, then C's main through the boot links."""
    return f"""\
long_entry:
    mov ax, {_hex(layout.SEL_DATA)}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    # VM entry requires a usable host TR, and IST stacks live in the TSS.
    mov ax, {_hex(layout.SEL_TSS)}
    ltr ax
    # The upper halves of registers are undefined after the mode switch;
    # writing the 32-bit halves zero-extends magic and info.
    mov r12d, edi
    mov r13d, esi
    mov ebx, {_hex(layout.BOOT_LINKS)}
    # The stack is in bss: nothing may be pushed until bss is zeroed.
    mov rdi, qword ptr [rbx + {_hex(offsets["links_bss_start"])}]
    mov rcx, qword ptr [rbx + {_hex(offsets["links_bss_end"])}]
    sub rcx, rdi
    jb .Llong_entry_bss_done
    xor eax, eax
    rep stosb
.Llong_entry_bss_done:
    mov rsp, qword ptr [rbx + {_hex(offsets["links_stack_top"])}]
    fninit
    mov edi, r12d
    mov esi, r13d
    call qword ptr [rbx + {_hex(offsets["links_main"])}]
.Llong_entry_halt:
    cli
    hlt
    jmp .Llong_entry_halt
"""


def isr_stubs_source(*, exception_common: int) -> str:
    """One fixed-size stub per exception vector, each making the frame uniform before the handler."""
    lines = []
    for vector in range(layout.EXCEPTION_VECTORS):
        lines.append(f"isr_stub_{vector}:")
        if vector not in layout.EXCEPTIONS_WITH_ERROR_CODE:
            lines.append("    push 0    # the CPU pushes no error code for this vector")
        lines.append(f"    push {vector}")
        lines.append(f"    jmp {_hex(exception_common)}    # exception_common")
        lines.append(f"    .balign {ISR_STUB_BYTES}")
    return "\n".join(lines) + "\n"


# FXSAVE's area: 512 bytes, 16-byte aligned.
FXSAVE_BYTES = 512


def _frame_common_source(label: str, link: str, offsets: Mapping[str, int], *,
                         keep_fpu: bool = False) -> str:
    """Save every GPR into struct exc_frame, call C through boot_links.<link>, restore, IRETQ.

    keep_fpu: also FXSAVE the interrupted FPU/SSE state below the frame and
    FXRSTOR it after C returns, for a path that may switch to another context
    (which runs guests and C that use the FPU) before it returns.
    """
    fpu_save = (f"    sub rsp, {_hex(FXSAVE_BYTES)}\n    fxsave64 [rsp]\n" if keep_fpu else "")
    fpu_load = "    fxrstor64 [rsp]\n" if keep_fpu else ""
    saves = "\n".join(f"    mov qword ptr [rsp + {_hex(offsets['frame_' + r])}], {r}" for r in GPRS)
    loads = "\n".join(f"    mov {r}, qword ptr [rsp + {_hex(offsets['frame_' + r])}]" for r in GPRS)
    return f"""\
{label}:
    sub rsp, {_hex(offsets["frame_vector"])}
{saves}
    # The interrupted code may have left DF set; C's ABI requires it clear.
    # IRETQ restores the interrupted RFLAGS.
    cld
    mov rdi, rsp
    # RBX is callee-saved, so it carries the frame across the call while RSP
    # is aligned to 16 as the ABI demands at a call.
    mov rbx, rsp
    and rsp, -16
{fpu_save}    mov eax, {_hex(layout.BOOT_LINKS)}
    call qword ptr [rax + {_hex(offsets["links_" + link])}]
{fpu_load}    mov rsp, rbx
    # C may have changed the frame (for example to skip an instruction).
{loads}
    add rsp, {_hex(offsets["frame_rip"])}
    iretq
"""


def exception_common_source(offsets: Mapping[str, int]) -> str:
    """The exceptions' common path: the frame to exception_dispatch."""
    return _frame_common_source("exception_common", "exception", offsets)


def irq_common_source(offsets: Mapping[str, int]) -> str:
    """The device interrupts' common path: the frame to irq_dispatch, which may switch contexts."""
    return _frame_common_source("irq_common", "irq", offsets, keep_fpu=True)


# Device vectors with a stub of their own (arch/x86_64/common/irq.h numbers them).
IRQ_VECTORS = {"timer": 0x40, "ipi": 0x50}


def irq_stub_source(name: str, *, irq_common: int) -> str:
    """One device vector: the same frame as an exception's (error 0), then irq_common."""
    return f"""\
irq_stub_{name}:
    push 0
    push {_hex(IRQ_VECTORS[name])}
    jmp {_hex(irq_common)}    # irq_common
"""


def irq_spurious_source() -> str:
    """The APIC's spurious vector: nothing to acknowledge, nothing to do."""
    return "irq_spurious:\n    iretq\n"


# The registers a context switch keeps: the System V ABI's callee-saved ones;
# the caller of ctx_switch has already saved everything else it needs.
CTX_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")


def ctx_switch_source() -> str:
    """ctx_switch(u64 *save_rsp, u64 next_rsp): park this context's stack, resume another's."""
    pushes = "\n".join(f"    push {r}" for r in CTX_SAVED)
    pops = "\n".join(f"    pop {r}" for r in reversed(CTX_SAVED))
    return f"""\
ctx_switch:
{pushes}
    mov qword ptr [rdi], rsp
    mov rsp, rsi
{pops}
    ret
"""


def isr_table_source(*, isr_stubs: int) -> str:
    """The stubs' addresses, indexed by vector, from which C builds the IDT."""
    lines = ["isr_table:"]
    for vector in range(layout.EXCEPTION_VECTORS):
        lines.append(f"    .quad {_hex(isr_stubs + vector * ISR_STUB_BYTES)}    # isr_stub_{vector}")
    return "\n".join(lines) + "\n"
