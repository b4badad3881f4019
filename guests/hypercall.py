"""The `hypercall` guest: reports what CPUID shows it, then drives console_write, yield and shutdown."""

from __future__ import annotations

from guests.common import (
    HC_CONSOLE_WRITE,
    HC_SHUTDOWN,
    HC_YIELD,
    GuestImage,
    asciz,
    halt_forever,
    hypercall_data,
    hypercall_routines,
    name_bytes,
    raw_image,
    uart_routines,
)


def build(*, name: str, memory: int, code: int = 7) -> GuestImage:
    """UART `hypercall <name> cpuid <leaf 0x40000000 signature> vmx=<0|1> svm=<0|1>`, then
    console_write `hypercall <name> console ok`, yield, UART `hypercall <name> yielded`,
    then shutdown(code). If console_write reports a short write the UART says so."""
    if not isinstance(code, int) or not 0 <= code <= 0xFF:
        raise ValueError(f"hypercall: code must be an integer in 0..255, not {code!r}")
    who = name_bytes(name)
    console = b"hypercall " + who + b" console ok\n"
    short = b"hypercall " + who + b" console short\n"
    yielded = b"hypercall " + who + b" yielded\n"
    survived = b"hypercall " + who + b" shutdown returned\n"
    cpuid_label = b"hypercall " + who + b" cpuid "
    source = f"""\
hypercall_start:
    call detect_vendor
    # What the guest sees of the CPU: the hypervisor leaf's signature and
    # whether VMX (leaf 1 ECX bit 5) or SVM (leaf 0x80000001 ECX bit 2) show.
    mov esi, hypercall_cpuid_label
    call uart_puts
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    mov r8d, ecx
    mov r9d, edx
    mov eax, ebx
    call hypercall_put4
    mov eax, r8d
    call hypercall_put4
    mov eax, r9d
    call hypercall_put4
    mov esi, hypercall_vmx_label
    call uart_puts
    mov eax, 1
    xor ecx, ecx
    cpuid
    mov eax, ecx
    shr eax, 5
    and eax, 1
    call uart_put_dec
    mov esi, hypercall_svm_label
    call uart_puts
    mov eax, 0x80000001
    xor ecx, ecx
    cpuid
    mov eax, ecx
    shr eax, 2
    and eax, 1
    call uart_put_dec
    mov al, 10
    call uart_putc
    mov eax, {HC_CONSOLE_WRITE}
    # Identity mapped, so the buffer's address is its guest-physical address.
    mov ebx, hypercall_console
    mov ecx, {len(console)}
    call hypercall
    cmp rax, {len(console)}
    je .Lhypercall_written
    mov esi, hypercall_short
    call uart_puts
.Lhypercall_written:
    mov eax, {HC_YIELD}
    call hypercall
    mov esi, hypercall_yielded
    call uart_puts
    mov eax, {HC_SHUTDOWN}
    mov ebx, {code}
    call hypercall
    mov esi, hypercall_survived
    call uart_puts
{halt_forever("hypercall_halt")}
hypercall_put4:
    # The four bytes of EAX, lowest first: how CPUID packs a signature.
    push rcx
    mov ecx, 4
.Lhypercall_put4_next:
    call uart_putc
    shr eax, 8
    dec ecx
    jnz .Lhypercall_put4_next
    pop rcx
    ret
{uart_routines(64)}
{hypercall_routines()}
{asciz("hypercall_cpuid_label", cpuid_label)}
{asciz("hypercall_vmx_label", b" vmx=")}
{asciz("hypercall_svm_label", b" svm=")}
{asciz("hypercall_console", console)}
{asciz("hypercall_short", short)}
{asciz("hypercall_yielded", yielded)}
{asciz("hypercall_survived", survived)}
{hypercall_data()}
"""
    return raw_image(source, memory=memory, name=name)
