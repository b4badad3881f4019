"""The `msrprobe` guest: reads a list of MSRs once and says what each gave, a value or #GP, as a real CPU would show it."""

from __future__ import annotations

from guests.common import (
    GuestImage,
    asciz,
    halt_forever,
    name_bytes,
    raw_image,
    scratch_base,
    uart_routines,
)

IDT_VECTORS = 32
GP_VECTOR = 13
MAX_MSRS = 16


def build(*, name: str, memory: int, msrs: list[int] | None = None) -> GuestImage:
    """For each MSR print `<name> rdmsr <index> = <value>` or `<name> rdmsr <index> #GP`, then `<name> done`.

    A #GP handler (the only IDT entry) steps past the 2-byte RDMSR and flags
    the fault in r15, so every MSR of the list is tried in turn.
    """
    msrs = [0x35] if msrs is None else msrs
    if not isinstance(msrs, list) or not 0 < len(msrs) <= MAX_MSRS or not all(
            isinstance(m, int) and 0 <= m <= 0xFFFFFFFF for m in msrs):
        raise ValueError(f"msrprobe: msrs must be a list of 1 to {MAX_MSRS} MSR indexes, not {msrs!r}")
    idt = scratch_base()
    idtr = idt + IDT_VECTORS * 16
    probes = "".join(f"""\
    mov ecx, {m:#x}
    call probe
""" for m in msrs)
    texts = "\n".join([
        asciz("prefix_text", name_bytes(name) + b" rdmsr "), asciz("equals_text", b" = "),
        asciz("gp_text", b" #GP\n"), asciz("done_text", name_bytes(name) + b" done\n")])
    source = f"""\
msrprobe_start:
    # One 64-bit interrupt gate, vector 13 -> gp_handler, code selector 0x08.
    mov edi, {idt + GP_VECTOR * 16:#x}
    mov eax, gp_handler
    mov word ptr [rdi], ax
    mov word ptr [rdi + 2], 0x08
    mov word ptr [rdi + 4], 0x8e00
    shr eax, 16
    mov word ptr [rdi + 6], ax
    mov dword ptr [rdi + 8], 0
    mov edi, {idtr:#x}
    mov word ptr [rdi], {IDT_VECTORS * 16 - 1}
    mov qword ptr [rdi + 2], {idt:#x}
    lidt [rdi]
{probes}    mov esi, done_text
    call uart_puts
{halt_forever("msrprobe_halt")}
probe:
    mov esi, prefix_text
    call uart_puts
    mov eax, ecx
    call uart_put_dec
    xor r15d, r15d
    rdmsr
    test r15, r15
    jnz .Lprobe_fault
    shl rdx, 32
    or rax, rdx
    mov esi, equals_text
    call uart_puts
    call uart_put_dec
    mov al, 10
    call uart_putc
    ret
.Lprobe_fault:
    mov esi, gp_text
    call uart_puts
    ret
gp_handler:
    add rsp, 8
    add qword ptr [rsp], 2
    mov r15d, 1
    iretq
{uart_routines(64)}
{texts}
"""
    return raw_image(source, memory=memory, name=name, reserve=4096)
