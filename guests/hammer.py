"""The `hammer` guest: writes across all its memory, one cache line at a time, forever: the neighbour that loads the memory system."""

from __future__ import annotations

from guests.common import GuestImage, asciz, name_bytes, raw_image, uart_routines

# The image, its stack and page tables live in the partition's first and last
# megabytes (guests/common.py's raw layout): the sweep stays between them.
SWEEP_FROM = 0x200000
SWEEP_GUARD = 0x200000
LINE = 64


def build(*, name: str, memory: int) -> GuestImage:
    """Print `hammer <name> starting`, then store to every 64-byte line of its middle memory in a loop."""
    if memory < SWEEP_FROM + SWEEP_GUARD + 0x200000:
        raise ValueError(f"hammer: needs at least {(SWEEP_FROM + SWEEP_GUARD) // 0x100000 + 2} MiB")
    end = memory - SWEEP_GUARD
    message = b"hammer " + name_bytes(name) + b" starting\n"
    source = f"""\
hammer_start:
    mov esi, hammer_message
    call uart_puts
    xor eax, eax
.Lhammer_sweep:
    mov rdi, {SWEEP_FROM:#x}
.Lhammer_line:
    mov qword ptr [rdi], rax
    add rdi, {LINE}
    cmp rdi, {end:#x}
    jb .Lhammer_line
    inc rax
    jmp .Lhammer_sweep
{uart_routines(64)}
{asciz("hammer_message", message)}
"""
    return raw_image(source, memory=memory, name=name)
