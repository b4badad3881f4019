"""The `kicker` guest: kicks a watchdog port every period_ms, and after `kicks` kicks (0: never) stops kicking and keeps running."""

from __future__ import annotations

from guests.common import (
    HC_TSC_KHZ,
    GuestImage,
    asciz,
    hypercall_data,
    hypercall_routines,
    name_bytes,
    print_count,
    raw_image,
    uart_routines,
)

FALLBACK_TSC_KHZ = 1_000_000  # as hello: pace at a wrong rate rather than not at all
MAX_PERIOD_MS = 60_000


def build(*, name: str, memory: int, port: int = 0x510, period_ms: int = 200, kicks: int = 0) -> GuestImage:
    """Print `kick <name> <n>` and write n to `port` every period_ms; after `kicks` kicks
    (0: kick forever) print `<name> stops kicking` and spin with PAUSE, exiting no more."""
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"kicker: port must be an I/O port (0..0xffff), not {port!r}")
    if not isinstance(period_ms, int) or not 0 < period_ms <= MAX_PERIOD_MS:
        raise ValueError(f"kicker: period_ms must be an integer in 1..{MAX_PERIOD_MS}, not {period_ms!r}")
    if not isinstance(kicks, int) or kicks < 0:
        raise ValueError(f"kicker: kicks must be an integer >= 0, not {kicks!r}")
    texts = "\n".join([asciz("kick_prefix", b"kick " + name_bytes(name) + b" "),
                       asciz("kick_stop", name_bytes(name) + b" stops kicking\n")])
    source = f"""\
kicker_start:
    call detect_vendor
    mov eax, {HC_TSC_KHZ}
    call hypercall
    test rax, rax
    jg .Lkick_rate_known
    mov eax, {FALLBACK_TSC_KHZ}
.Lkick_rate_known:
    imul r12, rax, {period_ms}
    xor r13d, r13d
.Lkick_loop:
    cmp r13, {kicks}
    jne .Lkick_once
    cmp r13, 0
    jne .Lkick_stopped
.Lkick_once:
    inc r13
{print_count("kick_prefix")}    mov eax, r13d
    mov dx, {port:#x}
    out dx, al
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r14, rax
.Lkick_wait:
    pause
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r14
    cmp rax, r12
    jb .Lkick_wait
    jmp .Lkick_loop
.Lkick_stopped:
    mov esi, kick_stop
    call uart_puts
.Lkick_idle:
    pause
    jmp .Lkick_idle
{uart_routines(64)}
{hypercall_routines()}
{texts}
{hypercall_data()}
"""
    return raw_image(source, memory=memory, name=name)
