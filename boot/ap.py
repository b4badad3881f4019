"""The AP trampoline: real mode to long mode for the CPUs the BSP starts by INIT-SIPI-SIPI, as bytes for C to copy below 1 MiB."""

from __future__ import annotations

import struct

from boot import entry
from boot.gdt import GDTR_BYTES
from toolchain import layout
from toolchain.keystone_asm import AsmJob, assemble_many

# The page is laid out at fixed offsets, so each mode's code is assembled at
# its own known address and no layout passes are needed.
REAL_OFFSET = 0x000      # CS:IP = (AP_TRAMPOLINE >> 4):0 after the SIPI
PROTECTED_OFFSET = 0x080
LONG_OFFSET = 0x100
GDTR_OFFSET = 0x1F0      # a copy of the boot GDT's pseudo-descriptor, reachable from real mode
ARGS_OFFSET = layout.AP_TRAMPOLINE_ARGS - layout.AP_TRAMPOLINE
# struct ap_args in arch/x86_64/common/smp.c: entry, stack top, argument, and
# the flag the AP sets once it runs 64-bit code (written here, read by the BSP).
ARGS_FIELDS = ("entry", "stack", "arg", "alive")
ARGS_BYTES = 8 * len(ARGS_FIELDS)
TRAMPOLINE_BYTES = ARGS_OFFSET + ARGS_BYTES

# Bytes keystone cannot be trusted with in 16-bit mode: LGDT with a 32-bit
# operand (0x66 prefix, so the whole 32-bit base loads) and far jumps.
OPERAND32 = 0x66
LGDT_DISP16 = (0x0F, 0x01, 0x16)   # 0F 01 /2, ModRM mod=00 rm=110: [disp16]
FAR_JMP = 0xEA


def _arg(name: str) -> int:
    return layout.AP_TRAMPOLINE_ARGS + 8 * ARGS_FIELDS.index(name)


def _bytes(values: bytes) -> str:
    return "    .byte " + ", ".join(f"{b:#x}" for b in values)


def real_source() -> str:
    """16-bit: load the boot GDT, set CR0.PE, far-jump to the 32-bit part."""
    far = bytes([OPERAND32, FAR_JMP]) + struct.pack("<IH", layout.AP_TRAMPOLINE + PROTECTED_OFFSET,
                                                    layout.SEL_CODE32)
    return "\n".join([
        "ap_real:",
        "    cli",
        "    cld",
        # CS is the trampoline's segment: DS follows it so [GDTR_OFFSET] is ours.
        "    mov ax, cs",
        "    mov ds, ax",
        _bytes(bytes([OPERAND32, *LGDT_DISP16]) + struct.pack("<H", GDTR_OFFSET)) + "   # lgdt dword [gdtr]",
        "    mov eax, cr0",
        "    or eax, 1",
        "    mov cr0, eax",
        _bytes(far) + f"   # jmp dword {layout.SEL_CODE32:#x}:ap_protected",
    ]) + "\n"


def protected_source() -> str:
    """32-bit: the same switch to long mode as the BSP's entry, through the boot page tables."""
    far = bytes([FAR_JMP]) + struct.pack("<IH", layout.AP_TRAMPOLINE + LONG_OFFSET, layout.SEL_CODE64)
    cr4 = entry.CR4_PAE | entry.CR4_OSFXSR | entry.CR4_OSXMMEXCPT
    return f"""\
ap_protected:
    mov ax, {layout.SEL_DATA:#x}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, {cr4:#x}
    mov cr4, eax
    mov eax, {layout.BOOT_PML4:#x}
    mov cr3, eax
    mov ecx, {entry.MSR_EFER:#x}
    rdmsr
    or eax, {entry.EFER_LME:#x}
    wrmsr
    mov eax, cr0
    and eax, {0xFFFFFFFF & ~entry.CR0_EM:#x}
    or eax, {entry.CR0_PG | entry.CR0_MP | entry.CR0_PE:#x}
    mov cr0, eax
{_bytes(far)}   # jmp {layout.SEL_CODE64:#x}:ap_long
"""


def long_source() -> str:
    """64-bit: the stack and argument the BSP left, then C's AP entry; it never returns."""
    return f"""\
ap_long:
    mov ax, {layout.SEL_DATA:#x}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov ebx, {layout.AP_TRAMPOLINE_ARGS:#x}
    mov rsp, qword ptr [rbx + {_arg("stack") - layout.AP_TRAMPOLINE_ARGS:#x}]
    mov rdi, qword ptr [rbx + {_arg("arg") - layout.AP_TRAMPOLINE_ARGS:#x}]
    mov qword ptr [rbx + {_arg("alive") - layout.AP_TRAMPOLINE_ARGS:#x}], 1
    fninit
    call qword ptr [rbx + {_arg("entry") - layout.AP_TRAMPOLINE_ARGS:#x}]
.Lap_halt:
    cli
    hlt
    jmp .Lap_halt
"""


def trampoline(gdtr: bytes) -> bytes:
    """The page's bytes up to and including the (zeroed) arguments, with the boot GDT's pseudo-descriptor copied in."""
    if len(gdtr) != GDTR_BYTES:
        raise ValueError(f"GDTR is {len(gdtr)} bytes, expected {GDTR_BYTES}")
    base = layout.AP_TRAMPOLINE
    parts = [(REAL_OFFSET, 16, real_source()), (PROTECTED_OFFSET, 32, protected_source()),
             (LONG_OFFSET, 64, long_source())]
    # Real-mode code addresses its own page from offset 0 of its segment.
    blobs = assemble_many([AsmJob(src, mode, base + off if mode != 16 else off, f"ap_{mode}")
                           for off, mode, src in parts])
    page = bytearray(b"\xcc" * TRAMPOLINE_BYTES)
    ends = [off for off, _, _ in parts[1:]] + [GDTR_OFFSET]
    for (off, mode, _), blob, end in zip(parts, blobs, ends, strict=True):
        if off + len(blob) > end:
            raise ValueError(f"the {mode}-bit part of the AP trampoline is {len(blob)} bytes, "
                             f"it has {end - off}")
        page[off:off + len(blob)] = blob
    # A 32-bit LGDT reads a 16-bit limit and a 32-bit base: the first 6 bytes.
    page[GDTR_OFFSET:GDTR_OFFSET + 6] = gdtr[:6]
    page[ARGS_OFFSET:ARGS_OFFSET + ARGS_BYTES] = bytes(ARGS_BYTES)
    return bytes(page)
