"""The `hello` guest: greets on the UART every period_ms, pacing itself by the TSC without exiting."""

from __future__ import annotations

from guests.common import (
    HC_TSC_KHZ,
    GuestImage,
    asciz,
    halt_forever,
    hypercall_data,
    hypercall_routines,
    name_bytes,
    print_count,
    raw_image,
    uart_routines,
)

# If the hypervisor cannot say its TSC rate (0 or -1), assume 1 GHz: the
# guest then still paces itself, only at a wrong period.
FALLBACK_TSC_KHZ = 1_000_000
MAX_PERIOD_MS = 3_600_000


def build(*, name: str, memory: int, period_ms: int = 200) -> GuestImage:
    """Print `hello from <name> <n>` (n = 0, 1, ...) then busy-wait period_ms with PAUSE, forever."""
    if not isinstance(period_ms, int) or not 0 < period_ms <= MAX_PERIOD_MS:
        raise ValueError(f"hello: period_ms must be an integer in 1..{MAX_PERIOD_MS}, "
                         f"not {period_ms!r}")
    source = f"""\
hello_start:
    call detect_vendor
    mov eax, {HC_TSC_KHZ}
    call hypercall
    test rax, rax
    jg .Lhello_rate_known
    mov eax, {FALLBACK_TSC_KHZ}
.Lhello_rate_known:
    # kHz is ticks per millisecond: r12 = ticks per period.
    imul r12, rax, {period_ms}
    xor r13d, r13d
.Lhello_loop:
{print_count("hello_prefix")}    inc r13
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r14, rax
    # No exit while waiting: only the scheduler's preemption timer can take
    # the CPU away, which is what this guest is there to prove.
.Lhello_wait:
    pause
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r14
    cmp rax, r12
    jb .Lhello_wait
    jmp .Lhello_loop
{halt_forever("hello_halt")}
{uart_routines(64)}
{hypercall_routines()}
{asciz("hello_prefix", b"hello from " + name_bytes(name) + b" ")}
{hypercall_data()}
"""
    return raw_image(source, memory=memory, name=name)
