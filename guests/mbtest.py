"""The `mbtest` guest: a multiboot1 ELF32 kernel that reports what its loader handed it."""

from __future__ import annotations

import struct

from boot.multiboot import (
    MB1_BOOTLOADER_MAGIC,
    MB1_FLAG_MEMORY_INFO,
    MB1_FLAG_PAGE_ALIGN_MODULES,
    MB1_MAGIC,
)
from guests.common import (
    DEBUG_EXIT_PORT,
    ELF32_LOAD_ADDR,
    GuestImage,
    asciz,
    check_memory,
    elf32_kernel,
    halt_forever,
    name_bytes,
    uart_routines,
)
from toolchain.keystone_asm import assemble

LOAD_ADDR = ELF32_LOAD_ADDR
MB1_FLAGS = MB1_FLAG_PAGE_ALIGN_MODULES | MB1_FLAG_MEMORY_INFO
MB1_HEADER_BYTES = 12  # magic, flags, checksum: no address fields, the ELF says where to load
# The stack lives in the segment's bss, which the loader zeroes; the image's
# code and data must end below it.
IMAGE_SPAN = 0x10000
STACK_BYTES = 0x2000

# Multiboot1 information structure: flag bits and field offsets.
INFO_MEM = 1 << 0
INFO_CMDLINE = 1 << 2
INFO_MODS = 1 << 3
INFO_MEM_UPPER = 8
INFO_CMDLINE_ADDR = 16
INFO_MODS_COUNT = 20
INFO_MODS_ADDR = 24
MOD_START, MOD_END = 0, 4

EXIT_SANE, EXIT_INSANE = 0, 1
BAD_MAGIC_MESSAGE = b"mbtest: bad multiboot magic\n"



def _source() -> str:
    stack_top = LOAD_ADDR + IMAGE_SPAN
    return f"""\
mbtest_start:
    cli
    cld
    mov esp, {stack_top:#x}
    cmp eax, {MB1_BOOTLOADER_MAGIC:#x}
    jne .Lmbtest_bad_magic
    # EBP keeps the info pointer and EBX the module count: the UART
    # routines preserve both.
    mov ebp, ebx
    mov esi, mbtest_cmdline
    call uart_puts
    test dword ptr [ebp], {INFO_CMDLINE}
    jz .Lmbtest_cmdline_done
    mov esi, dword ptr [ebp + {INFO_CMDLINE_ADDR}]
    call uart_puts
.Lmbtest_cmdline_done:
    mov al, 10
    call uart_putc
    mov esi, mbtest_modules
    call uart_puts
    xor ebx, ebx
    test dword ptr [ebp], {INFO_MODS}
    jz .Lmbtest_count_known
    mov ebx, dword ptr [ebp + {INFO_MODS_COUNT}]
.Lmbtest_count_known:
    mov eax, ebx
    call uart_put_dec
    mov al, 10
    call uart_putc
    test ebx, ebx
    jz .Lmbtest_module_done
    mov esi, mbtest_module0
    call uart_puts
    mov edx, dword ptr [ebp + {INFO_MODS_ADDR}]
    mov esi, dword ptr [edx + {MOD_START}]
    mov ecx, dword ptr [edx + {MOD_END}]
.Lmbtest_module_next:
    cmp esi, ecx
    jae .Lmbtest_module_line
    mov al, byte ptr [esi]
    cmp al, 10
    je .Lmbtest_module_line
    cmp al, 13
    je .Lmbtest_module_line
    call uart_putc
    inc esi
    jmp .Lmbtest_module_next
.Lmbtest_module_line:
    mov al, 10
    call uart_putc
.Lmbtest_module_done:
    mov esi, mbtest_mem_upper
    call uart_puts
    xor eax, eax
    test dword ptr [ebp], {INFO_MEM}
    jz .Lmbtest_mem_known
    mov eax, dword ptr [ebp + {INFO_MEM_UPPER}]
.Lmbtest_mem_known:
    call uart_put_dec
    mov al, 10
    call uart_putc
    mov eax, {EXIT_SANE}
    test ebx, ebx
    jnz .Lmbtest_exit
    mov eax, {EXIT_INSANE}
    jmp .Lmbtest_exit
.Lmbtest_bad_magic:
    mov esi, mbtest_bad_magic
    call uart_puts
    mov eax, {EXIT_INSANE}
.Lmbtest_exit:
    out {DEBUG_EXIT_PORT:#x}, al
{halt_forever("mbtest_halt")}
{uart_routines(32)}
{asciz("mbtest_cmdline", b"mbtest: cmdline=")}
{asciz("mbtest_modules", b"mbtest: modules=")}
{asciz("mbtest_module0", b"mbtest: module0=")}
{asciz("mbtest_mem_upper", b"mbtest: mem_upper=")}
{asciz("mbtest_bad_magic", BAD_MAGIC_MESSAGE)}
"""


def _mb1_header() -> bytes:
    return struct.pack("<3I", MB1_MAGIC, MB1_FLAGS, -(MB1_MAGIC + MB1_FLAGS) & 0xFFFFFFFF)


def kernel_bytes() -> bytes:
    """The mbtest kernel as ELF32 bytes: multiboot1 header, then 32-bit code and strings."""
    entry = LOAD_ADDR + MB1_HEADER_BYTES
    code = assemble(_source(), mode=32, base=entry)
    payload = _mb1_header() + code
    if len(payload) > IMAGE_SPAN - STACK_BYTES:
        raise ValueError(f"mbtest: {len(payload)} bytes of image leave no room for its stack")
    return elf32_kernel(payload, entry=entry, memsz=IMAGE_SPAN)


def build(*, name: str, memory: int) -> GuestImage:
    """The mbtest kernel; it prints no partition name (a multiboot kernel learns only its cmdline)."""
    # Same image for every partition; the loader passes what differs.
    name_bytes(name)
    check_memory(memory, name=name, image_bytes=IMAGE_SPAN)
    return GuestImage(data=kernel_bytes(), kind="multiboot")

