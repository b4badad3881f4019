"""What every hostile kind runs on: an IDT that catches every vector, `check` blocks that
expect one, the failure count in R15 and the exit through port 0xf4."""

from __future__ import annotations

import itertools

from guests.common import COM1, DEBUG_EXIT_PORT, asciz, halt_forever

IDT_VECTORS = 256
STUB_BYTES = 16       # every vector's stub is padded to this, so its address is computed
IDT_GATE_INTR = 0x8E  # present, DPL 0, 64-bit interrupt gate
NO_VECTOR = 0xFF      # what `last_vector` holds when nothing was raised
VEC = {"UD": 6, "SS": 12, "GP": 13, "PF": 14}
# Kinds that build their own paging structures take pages from here: below the
# image, above the toolchain's GDT and page tables (guests/README.md).
SCRATCH = 0x20000
SCRATCH_PAGES = 16
IDT_BASE = SCRATCH + SCRATCH_PAGES * 0x1000  # 256 gates of 16 bytes: one page
# A kind whose action returned although it should not have exits with this code.
STILL_ALIVE = 0xEE
STRAY = 0xEF  # ... and this one after an exception outside every check

_labels = itertools.count()


def guarded(code: str) -> str:
    """`code` run under the IDT's recovery: a vector below 32 abandons it where it stood and
    resumes after it on the stack it began with, the vector left in `last_vector` (255: none).
    So `code` may clobber every register but R12..R15 and RSP."""
    n = next(_labels)
    return f"""\
    mov eax, .Lguarded_resume_{n}
    mov ebx, recover_rip
    mov qword ptr [rbx], rax
    mov qword ptr [rbx + 8], rsp
    mov byte ptr [rbx + 16], {NO_VECTOR}
{code}
.Lguarded_resume_{n}:
    mov eax, stray_exception
    mov ebx, recover_rip
    mov qword ptr [rbx], rax
"""


def check(what: str, code: str, expect: int | None = None) -> tuple[str, str]:
    """`code`, guarded, expecting exception vector `expect` (None: no exception); any other
    outcome prints `FAIL <what> vector=<n>` (255: none) and counts it in R15.
    Returns (code, data)."""
    n = next(_labels)
    want = NO_VECTOR if expect is None else expect
    text = f"""\
{guarded(code)}
    mov ebx, recover_rip
    movzx eax, byte ptr [rbx + 16]
    cmp eax, {want}
    je .Lcheck_ok_{n}
    mov esi, check_fail_{n}
    call report
    call uart_put_dec
    mov al, 10
    call uart_putc
    inc r15
.Lcheck_ok_{n}:
"""
    return text, asciz(f"check_fail_{n}", f"FAIL {what} vector=".encode())


def fail_unless(what: str, condition_jump: str) -> tuple[str, str]:
    """After a `cmp`/`test`: `condition_jump` (e.g. `je`) skips the failure; else
    `FAIL <what>` is printed and counted."""
    n = next(_labels)
    text = f"""\
    {condition_jump} .Lfail_unless_ok_{n}
    mov esi, fail_unless_{n}
    call report
    mov al, 10
    call uart_putc
    inc r15
.Lfail_unless_ok_{n}:
"""
    return text, asciz(f"fail_unless_{n}", f"FAIL {what}".encode())


def program(prefix: bytes, bodies: list[tuple[str, str, str]], extra: str) -> str:
    """The whole guest: IDT set-up, then each (kind, code, data) in turn announced as
    `<prefix> <kind>: start` and ended as `<prefix> <kind>: done failures=<n>`, then
    port 0xf4 with the failure count. `extra` holds routines the kinds share."""
    runs, data = [], []
    for number, (kind, code, kind_data) in enumerate(bodies):
        runs.append(f"""\
    mov esi, kind_name_{number}
    mov ebx, current_kind
    mov qword ptr [rbx], rsi
    mov esi, msg_start
    call report
    mov al, 10
    call uart_putc
    mov r14, r15
{code}
    mov esi, msg_done
    call report
    mov rax, r15
    sub rax, r14
    call uart_put_dec
    mov al, 10
    call uart_putc
""")
        data.append(asciz(f"kind_name_{number}", kind.encode()))
        data.append(kind_data)
    stubs = "".join(f"    .balign {STUB_BYTES}\n    push {v}\n    jmp vector_common\n"
                    for v in range(IDT_VECTORS))
    return f"""\
hostile_start:
    cli
    xor r15d, r15d
    mov eax, stray_exception
    mov ebx, recover_rip
    mov qword ptr [rbx], rax
    mov qword ptr [rbx + 8], rsp
    call idt_install
{"".join(runs)}
    mov eax, r15d
    out {DEBUG_EXIT_PORT:#x}, al
{halt_forever("hostile_halt")}
# The IDT: 256 interrupt gates, vector v at vector_stubs + v * {STUB_BYTES}.
idt_install:
    mov edi, {IDT_BASE:#x}
    mov esi, vector_stubs
    xor ecx, ecx
.Lidt_install_next:
    mov eax, esi
    mov word ptr [rdi], ax
    mov word ptr [rdi + 2], 0x08
    mov word ptr [rdi + 4], {IDT_GATE_INTR << 8:#x}
    shr eax, 16
    mov word ptr [rdi + 6], ax
    mov dword ptr [rdi + 8], 0
    mov dword ptr [rdi + 12], 0
    add edi, 16
    add esi, {STUB_BYTES}
    inc ecx
    cmp ecx, {IDT_VECTORS}
    jb .Lidt_install_next
    mov edi, idt_pointer
    lidt [rdi]
    ret
# Exceptions (below 32) resume the running check; the rest are interrupts the
# guest raised itself, counted and returned from.
vector_common:
    cmp qword ptr [rsp], 32
    jae .Lvector_interrupt
    pop rax
    mov ebx, recover_rip
    mov byte ptr [rbx + 16], al
    mov rsp, qword ptr [rbx + 8]
    jmp qword ptr [rbx]
.Lvector_interrupt:
    push rbx
    mov ebx, interrupts_taken
    inc qword ptr [rbx]
    pop rbx
    add rsp, 8
    iretq
# An exception outside any check: say so and end, rather than resume a check long done.
stray_exception:
    mov esi, msg_stray
    call report
    mov ebx, recover_rip
    movzx eax, byte ptr [rbx + 16]
    call uart_put_dec
    mov al, 10
    call uart_putc
    mov al, {STRAY:#x}
    out {DEBUG_EXIT_PORT:#x}, al
    jmp hostile_halt
# `<prefix> <kind>: ` then the NUL-terminated string at RSI.
report:
    push rsi
    mov esi, msg_prefix
    call uart_puts
    mov esi, current_kind
    mov rsi, qword ptr [rsi]
    call uart_puts
    mov esi, msg_colon
    call uart_puts
    pop rsi
    call uart_puts
    ret
# Bytes straight to the UART's data port, without waiting for room: what a flood does.
uart_raw:
    mov dx, {COM1:#x}
    out dx, al
    ret
still_alive:
    mov esi, msg_alive
    call report
    mov al, 10
    call uart_putc
    mov al, {STILL_ALIVE:#x}
    out {DEBUG_EXIT_PORT:#x}, al
    jmp hostile_halt
{extra}
    .balign {STUB_BYTES}
vector_stubs:
{"".join(stubs)}
    .balign 8
idt_pointer:
    .word {IDT_VECTORS * 16 - 1}
    .quad {IDT_BASE:#x}
null_idt:
    .word 0
    .quad 0
    .balign 8
recover_rip:
    .quad 0
recover_rsp:
    .quad 0
last_vector:
    .byte {NO_VECTOR}
    .balign 8
current_kind:
    .quad 0
interrupts_taken:
    .quad 0
{asciz("msg_prefix", prefix + b" ")}
{asciz("msg_colon", b": ")}
{asciz("msg_start", b"start")}
{asciz("msg_done", b"done failures=")}
{asciz("msg_alive", b"FAIL still alive")}
{asciz("msg_stray", b"FAIL stray exception vector=")}
{"".join(data)}
"""
