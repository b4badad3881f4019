"""Hostile kinds that misuse the CPU's event machinery and its time: a triple fault, a stack
at a non-canonical address, IPIs and NMIs aimed outside, spins and HLT with interrupts off,
a serial flood, an interrupt storm, and hypercalls with random registers."""

from __future__ import annotations

from guests.common import HC_CONSOLE_WRITE, HC_SHUTDOWN
from guests.hostile.memory import LAPIC
from guests.hostile.runtime import VEC, check, fail_unless, guarded

X2APIC_ICR = 0x830
ICR_NMI_ALL_BUT_SELF = 0x000C0400   # delivery mode NMI, shorthand all excluding self
XAPIC_ICR = LAPIC + 0x300
# console_write's longest answer in one call (hv/vcpu_run.c): the rest is the guest's to resend.
CONSOLE_WRITE_MAX = 4096
HYPERCALLS = 2000
# console_write's buffer for the long call: printable lines, so the console shows text.
LONG_WRITE_AT = 0x200000


def triple_fault() -> str:
    """An IDT of limit 0, then INT3: #GP, #DF, shutdown. It must end `faulted`."""
    return """\
    mov eax, null_idt
    lidt [rax]
    int3
    jmp still_alive
"""


def stack_noncanonical() -> str:
    """RSP at a non-canonical address: the push raises #SS, whose delivery on the same stack
    faults again, then #DF likewise: shutdown, so it ends `faulted`."""
    return """\
    mov rsp, 0x8000000000000000
    push rax
    jmp still_alive
"""


def ipi_nmi() -> tuple[str, str]:
    """An NMI to every other CPU through the x2APIC ICR (#GP: no x2APIC mode), then through
    the xAPIC ICR, which the partition's virtual APIC answers: it has no other CPU, so the
    NMI reaches nobody (the neighbour's rate shows it)."""
    code, data = check("x2APIC ICR NMI", f"""\
    mov ecx, {X2APIC_ICR:#x}
    mov eax, {ICR_NMI_ALL_BUT_SELF:#x}
    mov edx, 0xff000000
    wrmsr
""", VEC["GP"])
    icr, icr_data = check("xAPIC ICR NMI", f"""\
    mov rbx, {XAPIC_ICR:#x}
    call map_large
    mov dword ptr [rbx], {ICR_NMI_ALL_BUT_SELF:#x}
""")
    return code + icr, data + icr_data


def cli_spin() -> str:
    return "    cli\n.Lcli_spin:\n    jmp .Lcli_spin\n"


def cli_hlt() -> str:
    return "    cli\n.Lcli_hlt:\n    hlt\n    jmp .Lcli_hlt\n"


def serial_flood() -> str:
    """Bytes into the UART's data port as fast as the CPU goes, never waiting for room."""
    return """\
.Lserial_flood_line:
    mov ecx, 72
.Lserial_flood_byte:
    mov al, 0x23
    call uart_raw
    dec ecx
    jnz .Lserial_flood_byte
    mov al, 10
    call uart_raw
    jmp .Lserial_flood_line
"""


def interrupt_storm() -> str:
    """Software interrupts on every vector from 32 up, round and round: the guest's own IDT
    takes them, nothing leaves the partition."""
    stubs = "".join(f"    int {v}\n" for v in range(32, 256, 7))
    return f".Linterrupt_storm:\n{stubs}    jmp .Linterrupt_storm\n"


def fake_console() -> tuple[str, str]:
    """Lines that would pass for the hypervisor's own (`taipan: `, `error: `), an escape
    sequence that clears the screen, and a CR that would overwrite a line: the console must
    show them escaped (docs/console.md), never as they came."""
    text = (b"\x1b[2J\x1b[Hfake screen\n" b"taipan: hello faulted: fake\n" b"error: fake error\n"
            b"overwritten\rfake\n")
    values = ", ".join(str(b) for b in text) + ", 0"
    return "    mov esi, fake_console_text\n    call uart_puts\n", f"fake_console_text:\n    .byte {values}\n"


def hypercall_random(memory: int) -> tuple[str, str]:
    """Hypercalls with registers from a seeded generator (never shutdown): each returns.
    Then console_write of its memory from 2 MiB up (lines of dots): the answer is a partial
    count, at most
    CONSOLE_WRITE_MAX, so one call cannot hold the CPU for seconds."""
    loop = guarded(f"""\
    mov rax, r13
    imul rax, rax, 0x5851f42d
    add rax, 0x14057b7f
    mov r13, rax
    mov rbx, rax
    rol rbx, 17
    mov rcx, rax
    rol rcx, 41
    test r13, 0x100
    jz .Lhypercall_random_wide
    and eax, 7
    and ecx, 0xfff
.Lhypercall_random_wide:
    cmp rax, {HC_SHUTDOWN}
    jne .Lhypercall_random_call
    inc eax
.Lhypercall_random_call:
    call hypercall
""")
    big, big_data = fail_unless(f"console_write of 2 MiB answered more than {CONSOLE_WRITE_MAX}", "jbe")
    code = f"""\
    call detect_vendor
    mov r13, 0x2545f491
    mov r12d, {HYPERCALLS}
.Lhypercall_random_next:
{loop}
    dec r12d
    jnz .Lhypercall_random_next
    mov edi, {LONG_WRITE_AT:#x}
    mov ecx, {CONSOLE_WRITE_MAX * 2 // 64}
.Lhypercall_random_fill:
    push rcx
    mov ecx, 63
    mov al, 0x2e
    rep stosb
    mov byte ptr [rdi], 10
    inc rdi
    pop rcx
    dec ecx
    jnz .Lhypercall_random_fill
    mov eax, {HC_CONSOLE_WRITE}
    mov ebx, {LONG_WRITE_AT:#x}
    mov rcx, {memory - LONG_WRITE_AT:#x}
    call hypercall
    cmp rax, {CONSOLE_WRITE_MAX}
{big}
"""
    return code, big_data
