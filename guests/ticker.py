"""The `ticker` guest: prints a tick every fixed amount of work, so its tick rate measures the CPU time it gets."""

from __future__ import annotations

from guests.common import GuestImage, asciz, name_bytes, print_count, raw_image, uart_routines

MAX_WORK = 1 << 31


def build(*, name: str, memory: int, work: int = 1_000_000) -> GuestImage:
    """Print `tick <name> <n>` after every `work` iterations of a register-only loop, forever.

    Unlike `hello`, which paces itself by the TSC and so prints on time with
    any share of the CPU, the ticker's rate is proportional to the time it is
    given: the scheduling tests compare it with a window's share of the frame.
    """
    if not isinstance(work, int) or not 0 < work <= MAX_WORK:
        raise ValueError(f"ticker: work must be an integer in 1..{MAX_WORK}, not {work!r}")
    source = f"""\
ticker_start:
    xor r13d, r13d
.Lticker_loop:
    mov ecx, {work}
    # Registers only: the loop exits to nobody, so only preemption stops it.
.Lticker_work:
    dec ecx
    jnz .Lticker_work
{print_count("ticker_prefix")}    inc r13
    jmp .Lticker_loop
{uart_routines(64)}
{asciz("ticker_prefix", b"tick " + name_bytes(name) + b" ")}
"""
    return raw_image(source, memory=memory, name=name)
