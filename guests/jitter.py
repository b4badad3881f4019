"""The `jitter` guest: notes the TSC each time its window begins (a gap in its own TSC reads), then prints them for scripts/bench."""

from __future__ import annotations

from guests.common import (
    DEBUG_EXIT_PORT,
    HC_TSC_KHZ,
    GuestImage,
    asciz,
    hypercall_data,
    hypercall_routines,
    name_bytes,
    raw_image,
    scratch_base,
    uart_routines,
)

SAMPLES_MAX = 4096


def build(*, name: str, memory: int, samples: int = 1000, gap_us: int = 500) -> GuestImage:
    """Spin reading the TSC; a jump of more than gap_us between two reads means the CPU was
    away, so the read after it is a window's start as the guest sees it. After `samples`
    starts it prints `jitter <name> start <n> <TSC ticks since the first>` for each,
    `jitter <name> tsc_khz=<rate>`, and ends with exit code 0 on port 0xf4."""
    if not isinstance(samples, int) or not 2 <= samples <= SAMPLES_MAX:
        raise ValueError(f"jitter: samples must be an integer in 2..{SAMPLES_MAX}, not {samples!r}")
    if not isinstance(gap_us, int) or not 1 <= gap_us <= 1_000_000:
        raise ValueError(f"jitter: gap_us must be an integer in 1..1000000, not {gap_us!r}")
    table = scratch_base()
    source = f"""\
jitter_start:
    call detect_vendor
    mov eax, {HC_TSC_KHZ}
    call hypercall
    mov r15, rax
    # kHz is ticks per millisecond: r12 = ticks in gap_us.
    imul r12, rax, {gap_us}
    mov rax, r12
    xor edx, edx
    mov ecx, 1000
    div rcx
    mov r12, rax
    xor ebx, ebx
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r13, rax
.Ljitter_spin:
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rcx, rax
    sub rcx, r13
    mov r13, rax
    cmp rcx, r12
    jb .Ljitter_spin
    mov rdi, {table:#x}
    mov qword ptr [rdi + rbx*8], rax
    inc ebx
    cmp ebx, {samples}
    jb .Ljitter_spin
    # Done measuring: print every start against the first.
    xor ebx, ebx
.Ljitter_print:
    mov esi, jitter_prefix
    call uart_puts
    mov rax, rbx
    call uart_put_dec
    mov al, 32
    call uart_putc
    mov rdi, {table:#x}
    mov rax, qword ptr [rdi + rbx*8]
    sub rax, qword ptr [rdi]
    call uart_put_dec
    mov al, 10
    call uart_putc
    inc ebx
    cmp ebx, {samples}
    jb .Ljitter_print
    mov esi, jitter_rate
    call uart_puts
    mov rax, r15
    call uart_put_dec
    mov al, 10
    call uart_putc
    xor eax, eax
    out {DEBUG_EXIT_PORT:#x}, al
.Ljitter_halt:
    cli
    hlt
    jmp .Ljitter_halt
{uart_routines(64)}
{hypercall_routines()}
{asciz("jitter_prefix", b"jitter " + name_bytes(name) + b" start ")}
{asciz("jitter_rate", b"jitter " + name_bytes(name) + b" tsc_khz=")}
{hypercall_data()}
"""
    return raw_image(source, memory=memory, name=name, reserve=samples * 8)
