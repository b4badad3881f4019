"""What every test guest shares: the image type, the ports and hypercall ABI, and assembly snippets."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from toolchain.keystone_asm import assemble

RAW_ENTRY = 0x100000
PAGE = 0x1000

COM1 = 0x3F8
COM1_LSR = COM1 + 5
LSR_THR_EMPTY = 1 << 5
DEBUG_EXIT_PORT = 0xF4

HC_CONSOLE_WRITE = 0
HC_YIELD = 1
HC_SHUTDOWN = 2
HC_TSC_KHZ = 3

# CPUID leaf 0 spells "GenuineIntel" as EBX, EDX, ECX.
INTEL_EBX = int.from_bytes(b"Genu", "little")
INTEL_EDX = int.from_bytes(b"ineI", "little")
INTEL_ECX = int.from_bytes(b"ntel", "little")
VMCALL = bytes((0x0F, 0x01, 0xC1))
VMMCALL = bytes((0x0F, 0x01, 0xD9))

# Below the image and its stack a raw guest needs nothing, but the loader
# also places the guest's page tables and stack in partition memory.
RAW_HEADROOM = 0x10000


@dataclass(frozen=True)
class GuestImage:
    """A built guest. raw: flat binary loaded and entered (long mode) at `entry`;
    multiboot: the bytes of an ELF32 multiboot1 kernel, `entry` unused."""

    data: bytes
    kind: str
    entry: int = RAW_ENTRY

    def __post_init__(self) -> None:
        if self.kind not in ("raw", "multiboot"):
            raise ValueError(f"guest image kind must be 'raw' or 'multiboot', not {self.kind!r}")


def _regs(bits: int) -> dict[str, str]:
    """Register names for `bits` (32 or 64), so one routine text serves both modes."""
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, not {bits}")
    prefix = "r" if bits == 64 else "e"
    return {r: prefix + r for r in ("ax", "bx", "cx", "dx", "si", "di")}


def name_bytes(name: str) -> bytes:
    """The partition name as the guest prints it; NUL would end the string early."""
    if not isinstance(name, str) or not name:
        raise ValueError("a guest needs a non-empty partition name")
    data = name.encode("utf-8")
    if b"\0" in data:
        raise ValueError(f"partition name {name!r} holds a NUL byte")
    return data


def asciz(label: str, text: bytes) -> str:
    """A NUL-terminated string as `.byte` data (keystone's string directives are not relied on)."""
    values = ", ".join(str(b) for b in text + bytes(1))
    return f"{label}:\n    .byte {values}\n"


def uart_routines(bits: int) -> str:
    """uart_putc (AL), uart_puts (NUL-terminated string at xSI), uart_put_dec (unsigned xAX).

    All three preserve every register but flags, so callers keep state in any register.
    """
    r = _regs(bits)
    return f"""\
uart_putc:
    push {r['dx']}
    push {r['ax']}
    mov dx, {COM1_LSR:#x}
    # A 16550 drops bytes written while its holding register is full; the
    # emulated one says the same through LSR, so poll as on hardware.
.Luart_putc_wait:
    in al, dx
    test al, {LSR_THR_EMPTY:#x}
    jz .Luart_putc_wait
    pop {r['ax']}
    mov dx, {COM1:#x}
    out dx, al
    pop {r['dx']}
    ret
uart_puts:
    push {r['si']}
    push {r['ax']}
.Luart_puts_next:
    mov al, byte ptr [{r['si']}]
    test al, al
    jz .Luart_puts_done
    call uart_putc
    inc {r['si']}
    jmp .Luart_puts_next
.Luart_puts_done:
    pop {r['ax']}
    pop {r['si']}
    ret
uart_put_dec:
    push {r['ax']}
    push {r['cx']}
    push {r['dx']}
    push {r['di']}
    mov ecx, 10
    xor edi, edi
    # Digits come out least significant first: stack them, then print.
.Luart_put_dec_split:
    xor edx, edx
    div {r['cx']}
    push {r['dx']}
    inc edi
    test {r['ax']}, {r['ax']}
    jnz .Luart_put_dec_split
.Luart_put_dec_emit:
    pop {r['ax']}
    add al, 0x30
    call uart_putc
    dec edi
    jnz .Luart_put_dec_emit
    pop {r['di']}
    pop {r['dx']}
    pop {r['cx']}
    pop {r['ax']}
    ret
"""


def hypercall_routines() -> str:
    """detect_vendor (call once first) and hypercall (RAX = number, RBX/RCX = arguments, RAX = result).

    64-bit only: raw guests are the ones the hypervisor offers hypercalls to.
    """
    return f"""\
detect_vendor:
    push rax
    push rbx
    push rcx
    push rdx
    xor eax, eax
    cpuid
    xor eax, eax
    cmp ebx, {INTEL_EBX:#x}
    jne .Ldetect_vendor_store
    cmp edx, {INTEL_EDX:#x}
    jne .Ldetect_vendor_store
    cmp ecx, {INTEL_ECX:#x}
    jne .Ldetect_vendor_store
    mov eax, 1
.Ldetect_vendor_store:
    mov ebx, vendor_is_intel
    mov byte ptr [rbx], al
    pop rdx
    pop rcx
    pop rbx
    pop rax
    ret
hypercall:
    # VMCALL raises #UD on AMD and VMMCALL on Intel unless the hypervisor
    # intercepts them, so the guest must pick the one its CPU has.
    push rdx
    mov edx, vendor_is_intel
    cmp byte ptr [rdx], 0
    pop rdx
    je .Lhypercall_amd
    vmcall
    ret
.Lhypercall_amd:
    vmmcall
    ret
"""


def hypercall_data() -> str:
    """The flag detect_vendor fills in, kept with the guest's other data."""
    return "vendor_is_intel:\n    .byte 0\n"


def print_count(prefix_label: str, register: str = "r13") -> str:
    """Assembly that prints the string at prefix_label, the number in `register`, and a newline."""
    return f"""\
    mov esi, {prefix_label}
    call uart_puts
    mov rax, {register}
    call uart_put_dec
    mov al, 10
    call uart_putc
"""


def halt_forever(label: str) -> str:
    """Stop for good: HLT with interrupts off, looping in case something wakes the CPU."""
    return f"{label}:\n    cli\n    hlt\n    jmp {label}\n"


def raw_image(source: str, *, memory: int, name: str, reserve: int = 0) -> GuestImage:
    """Assemble 64-bit `source` to run at RAW_ENTRY; `reserve` bytes of zeroed pages follow
    the code at the next page boundary (the code may address them at `scratch_base(...)`)."""
    code = assemble(source, mode=64, base=RAW_ENTRY)
    if reserve:
        if len(code) > PAGE:
            raise ValueError(f"guest {name!r}: code ({len(code)} bytes) overruns its scratch pages")
        code = code.ljust(PAGE, b"\0") + bytes(reserve)
    check_memory(memory, name=name, image_bytes=len(code))
    return GuestImage(data=code, kind="raw", entry=RAW_ENTRY)


def scratch_base() -> int:
    """Where raw_image puts reserved pages: one page after the entry (code must fit in a page)."""
    return RAW_ENTRY + PAGE


def check_memory(memory: int, *, name: str, image_bytes: int) -> None:
    """Refuse a partition too small to hold the image above RAW_ENTRY with room for stack and tables."""
    if memory % PAGE:
        raise ValueError(f"partition {name!r}: memory {memory:#x} is not a multiple of 4 KiB")
    need = RAW_ENTRY + image_bytes + RAW_HEADROOM
    if memory < need:
        raise ValueError(f"partition {name!r}: memory {memory:#x} is below the {need:#x} "
                         "this guest needs")


# Multiboot kernels here are loaded at 1 MiB from one ELF32 segment whose file
# bytes start a page after the headers, so the two never share a page.
ELF32_LOAD_ADDR = 0x100000
ELF32_PAYLOAD_OFFSET = 0x1000
PF_RX, PF_RWX = 5, 7


def elf32_kernel(payload: bytes, *, entry: int, memsz: int | None = None, flags: int = PF_RWX) -> bytes:
    """An i386 ELF32 executable with one PT_LOAD of `payload` at 1 MiB, zeroed up to
    `memsz`: what QEMU's -kernel and GRUB's multiboot loaders both take."""
    ident = b"\x7fELF" + bytes((1, 1, 1)) + bytes(9)  # 32-bit, little-endian, version 1
    et_exec, em_386, pt_load, ehdr_size, phdr_size = 2, 3, 1, 52, 32
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", ident, et_exec, em_386, 1, entry,
                       ehdr_size, 0, 0, ehdr_size, phdr_size, 1, 0, 0, 0)
    phdr = struct.pack("<8I", pt_load, ELF32_PAYLOAD_OFFSET, ELF32_LOAD_ADDR, ELF32_LOAD_ADDR,
                       len(payload), memsz or len(payload), flags, ELF32_PAYLOAD_OFFSET)
    return (ehdr + phdr).ljust(ELF32_PAYLOAD_OFFSET, b"\0") + payload
