"""The `hypercall` guest: drives console_write, yield and shutdown through VMCALL or VMMCALL."""

from __future__ import annotations

from guests.common import (
    HC_CONSOLE_WRITE,
    HC_SHUTDOWN,
    HC_YIELD,
    GuestImage,
    asciz,
    halt_forever,
    hypercall_data,
    hypercall_routines,
    name_bytes,
    raw_image,
    uart_routines,
)


def build(*, name: str, memory: int, code: int = 7) -> GuestImage:
    """console_write `hypercall <name> console ok`, yield, UART `hypercall <name> yielded`,
    then shutdown(code). If console_write reports a short write the UART says so."""
    if not isinstance(code, int) or not 0 <= code <= 0xFF:
        raise ValueError(f"hypercall: code must be an integer in 0..255, not {code!r}")
    who = name_bytes(name)
    console = b"hypercall " + who + b" console ok\n"
    short = b"hypercall " + who + b" console short\n"
    yielded = b"hypercall " + who + b" yielded\n"
    survived = b"hypercall " + who + b" shutdown returned\n"
    source = f"""\
hypercall_start:
    call detect_vendor
    mov eax, {HC_CONSOLE_WRITE}
    # Identity mapped, so the buffer's address is its guest-physical address.
    mov ebx, hypercall_console
    mov ecx, {len(console)}
    call hypercall
    cmp rax, {len(console)}
    je .Lhypercall_written
    mov esi, hypercall_short
    call uart_puts
.Lhypercall_written:
    mov eax, {HC_YIELD}
    call hypercall
    mov esi, hypercall_yielded
    call uart_puts
    mov eax, {HC_SHUTDOWN}
    mov ebx, {code}
    call hypercall
    mov esi, hypercall_survived
    call uart_puts
{halt_forever("hypercall_halt")}
{uart_routines(64)}
{hypercall_routines()}
{asciz("hypercall_console", console)}
{asciz("hypercall_short", short)}
{asciz("hypercall_yielded", yielded)}
{asciz("hypercall_survived", survived)}
{hypercall_data()}
"""
    return raw_image(source, memory=memory, name=name)
