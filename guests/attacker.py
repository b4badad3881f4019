"""The `attacker` guest: maps memory it does not own into its own page tables and touches it."""

from __future__ import annotations

from guests.common import (
    PAGE,
    GuestImage,
    asciz,
    halt_forever,
    name_bytes,
    raw_image,
    scratch_base,
    uart_routines,
)

TARGETS = ("beyond", "hypervisor")
LAPIC_MMIO = 0xFEE00000
LARGE_PAGE = 0x200000
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000  # bits 12..51 of a paging entry
LARGE_MASK = 0x000F_FFFF_FFE0_0000    # bits 21..51 of a 2 MiB PDE
PTE_PRESENT_WRITABLE = 0x3
PTE_LARGE = 0x80
# Two targets can each need a new PDPT and PD: four tables at most.
SCRATCH_PAGES = 4


def _access(label: str, message: bytes, address: int, *, write: bool) -> tuple[str, str]:
    """Code that announces, maps and touches `address`, and its announcement string."""
    touch = "mov qword ptr [rbx], rax" if write else "mov rax, qword ptr [rbx]"
    code = f"""\
    mov esi, {label}
    call uart_puts
    mov rbx, {address:#x}
    call map_large
    {touch}
    mov esi, attacker_alive
    call uart_puts
"""
    return code, asciz(label, message)


def map_routines(next_scratch: str) -> str:
    """map_large (map the 2 MiB region holding RBX one-to-one) and its helper table_below;
    `next_scratch` labels a quadword holding the next free zeroed page for new tables."""
    return f"""\
# Map the 2 MiB region holding RBX one-to-one through the tables CR3 names,
# creating a PDPT or PD in a scratch page where one is missing. The loader
# mapped only the partition's memory; a guest owns its page tables, so only
# the second-level tables (EPT/NPT) may stop it.
map_large:
    push rax
    push rcx
    push rdi
    push r8
    mov r8, {ADDRESS_MASK:#x}
    mov rax, cr3
    and rax, r8
    mov rcx, rbx
    shr rcx, 39
    and ecx, 511
    lea rdi, [rax + rcx*8]
    call table_below
    mov rcx, rbx
    shr rcx, 30
    and ecx, 511
    lea rdi, [rax + rcx*8]
    # A present 1 GiB page already maps the target: nothing to add.
    mov rax, qword ptr [rdi]
    and eax, {PTE_LARGE | 1:#x}
    cmp eax, {PTE_LARGE | 1:#x}
    je .Lmap_large_done
    call table_below
    mov rcx, rbx
    shr rcx, 21
    and ecx, 511
    lea rdi, [rax + rcx*8]
    mov rax, {LARGE_MASK:#x}
    and rax, rbx
    or rax, {PTE_LARGE | PTE_PRESENT_WRITABLE:#x}
    mov qword ptr [rdi], rax
.Lmap_large_done:
    # The PDE may have replaced one the TLB or paging-structure caches hold:
    # drop them for the target so the access walks the new entry.
    invlpg [rbx]
    pop r8
    pop rdi
    pop rcx
    pop rax
    ret
# RDI = a paging entry, R8 = address mask: RAX = the table it points to,
# made from a zeroed scratch page if the entry is not present.
table_below:
    mov rax, qword ptr [rdi]
    test al, 1
    jnz .Ltable_below_present
    push rcx
    push rdi
    mov ecx, {next_scratch}
    mov rax, qword ptr [rcx]
    add qword ptr [rcx], {PAGE:#x}
    push rax
    mov rdi, rax
    mov ecx, {PAGE // 8}
    xor eax, eax
    rep stosq
    pop rax
    pop rdi
    pop rcx
    or rax, {PTE_PRESENT_WRITABLE:#x}
    mov qword ptr [rdi], rax
.Ltable_below_present:
    and rax, r8
    ret
"""

def build(*, name: str, memory: int, target: str = "beyond") -> GuestImage:
    """Map and touch guest-physical memory outside the partition; the first touch must fault it.

    beyond: read memory + 0x1000. hypervisor: read the local APIC page (0xFEE00000), then
    (only if that survived) write memory + 0x200000.
    """
    if target not in TARGETS:
        raise ValueError(f"attacker: target must be one of {', '.join(TARGETS)}, not {target!r}")
    who = name_bytes(name)
    if target == "beyond":
        steps = [("read", memory + PAGE, False)]
    else:
        steps = [("read", LAPIC_MMIO, False), ("write", memory + LARGE_PAGE, True)]
    codes, strings = [], []
    for number, (verb, address, write) in enumerate(steps):
        verb_ing = "reading" if verb == "read" else "writing"
        message = f"attacker {name}: {verb_ing} {address:#x}\n".encode()
        code, text = _access(f"attacker_step{number}", message, address, write=write)
        codes.append(code)
        strings.append(text)
    alive = b"attacker " + who + b": still alive\n"
    source = f"""\
attacker_start:
{"".join(codes)}
{halt_forever("attacker_halt")}
{map_routines("attacker_next_scratch")}
{uart_routines(64)}
{"".join(strings)}
{asciz("attacker_alive", alive)}
    .balign 8
attacker_next_scratch:
    .quad {scratch_base():#x}
"""
    return raw_image(source, memory=memory, name=name, reserve=SCRATCH_PAGES * PAGE)
