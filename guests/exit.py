"""The `exit` guest: announces an exit code, then ends its partition through port 0xf4."""

from __future__ import annotations

from guests.common import (
    DEBUG_EXIT_PORT,
    GuestImage,
    asciz,
    halt_forever,
    name_bytes,
    raw_image,
    uart_routines,
)


def build(*, name: str, memory: int, code: int = 3) -> GuestImage:
    """Print `exit <name> code <code>`, then `out 0xf4, al` with the code (0..255)."""
    if not isinstance(code, int) or not 0 <= code <= 0xFF:
        raise ValueError(f"exit: code must be an integer in 0..255, not {code!r}")
    message = b"exit " + name_bytes(name) + f" code {code}\n".encode()
    source = f"""\
exit_start:
    mov esi, exit_message
    call uart_puts
    mov eax, {code}
    out {DEBUG_EXIT_PORT:#x}, al
    # Only reached if the port did not end the partition.
{halt_forever("exit_halt")}
{uart_routines(64)}
{asciz("exit_message", message)}
"""
    return raw_image(source, memory=memory, name=name)
