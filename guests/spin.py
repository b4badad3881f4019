"""The `spin` guest: announces itself once, then computes forever without a single VM exit."""

from __future__ import annotations

from guests.common import GuestImage, asciz, name_bytes, raw_image, uart_routines


def build(*, name: str, memory: int) -> GuestImage:
    """Print `spin <name> starting`, then loop on register arithmetic only (no I/O, no traps)."""
    message = b"spin " + name_bytes(name) + b" starting\n"
    source = f"""\
spin_start:
    mov esi, spin_message
    call uart_puts
    # Interrupts off as well: nothing the guest does can give the CPU back.
    cli
    xor eax, eax
    mov ecx, 1
    # Registers only: nothing here can exit, so only preemption stops it.
.Lspin_loop:
    add rax, rcx
    xor rcx, rax
    jmp .Lspin_loop
{uart_routines(64)}
{asciz("spin_message", message)}
"""
    return raw_image(source, memory=memory, name=name)
