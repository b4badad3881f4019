"""Hostile kinds that reach for memory the partition does not own: each must end `faulted`
at the guest-physical address it names."""

from __future__ import annotations

from guests.hostile.runtime import SCRATCH, check
from toolchain import layout

GIB = 1 << 30
LARGE_PAGE = 0x200000
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
# Platform MMIO a PC has and a partition must not reach (no device is passed through).
LAPIC = 0xFEE00000
IOAPIC = 0xFEC00000
HPET = 0xFED00000
FLASH = 0xFFFF0000   # the top of 4 GiB, where the firmware flash is mapped
PT512G_TARGET = 300 * GIB
# 1 GiB pages mapping guest-physical [0, 512 GiB) at linear 512 GiB (PML4 slot 1).
PT512G_PDPT = SCRATCH + 0xF000
PT512G_LINEAR = 1 << 39


def _touch(address: int, *, write: bool = False) -> str:
    access = "mov qword ptr [rbx], rax" if write else "mov rax, qword ptr [rbx]"
    return f"""\
    mov rbx, {address:#x}
    call map_large
    {access}
"""


def touch_fault(address: int, *, write: bool = False) -> str:
    """Map and touch one address: the access must fault the partition."""
    return _touch(address, write=write) + "    jmp still_alive\n"


def sweep(memory: int, start: int = 0, end: int = 8 * GIB) -> str:
    """Read every 2 MiB from `start` up to `end`: all of its own memory answers, the first
    address beyond it faults (at `memory`, or at `start` if that is beyond)."""
    return f"""\
    mov rbx, {start:#x}
.Lsweep_next:
    call map_large
    mov rax, qword ptr [rbx]
    add rbx, {LARGE_PAGE:#x}
    mov rax, {end:#x}
    cmp rbx, rax
    jb .Lsweep_next
    jmp still_alive
"""


def pt512g() -> str:
    """Its own page tables map 512 GiB with 1 GiB pages; a read at 300 GiB must fault."""
    return f"""\
    mov edi, {PT512G_PDPT:#x}
    xor ecx, ecx
    mov rax, 0x83
.Lpt512g_fill:
    mov qword ptr [rdi + rcx*8], rax
    mov rdx, {GIB:#x}
    add rax, rdx
    inc ecx
    cmp ecx, 512
    jb .Lpt512g_fill
    mov rax, cr3
    mov rdx, {ADDRESS_MASK:#x}
    and rax, rdx
    mov qword ptr [rax + 8], {PT512G_PDPT | 3:#x}
    mov rax, cr3
    mov cr3, rax
    mov rbx, {PT512G_LINEAR + PT512G_TARGET:#x}
    mov rax, qword ptr [rbx]
    jmp still_alive
"""


def answered_read(what: str, address: int) -> tuple[str, str]:
    """A 32-bit read of a page the partition's virtual device answers (hv/vlapic.c, hv/vioapic.c):
    no exception, no fault."""
    return check(what, f"""\
    mov rbx, {address:#x}
    call map_large
    mov eax, dword ptr [rbx]
""")


def fault_kinds(memory: int) -> dict[str, tuple[str, str]]:
    """kind -> (code, the guest-physical address the fault must name)."""
    return {
        "read_beyond": (touch_fault(memory + 0x1000), f"read of guest-physical {memory + 0x1000:#x}"),
        "write_beyond": (touch_fault(memory + LARGE_PAGE, write=True),
                         f"write of guest-physical {memory + LARGE_PAGE:#x}"),
        "sweep": (sweep(memory), f"read of guest-physical {memory:#x}"),
        "sweep_high": (sweep(memory, start=4 * GIB, end=16 * GIB), f"read of guest-physical {4 * GIB:#x}"),
        "pt512g": (pt512g(), f"read of guest-physical {PT512G_TARGET:#x}"),
        "hv_tables": (touch_fault(layout.HV_TABLES_BASE, write=True),
                      f"write of guest-physical {layout.HV_TABLES_BASE:#x}"),
        "neighbour": (touch_fault(layout.PARTITIONS_BASE, write=True),
                      f"write of guest-physical {layout.PARTITIONS_BASE:#x}"),
        "hpet": (touch_fault(HPET), f"read of guest-physical {HPET:#x}"),
        "flash": (touch_fault(FLASH), f"read of guest-physical {FLASH:#x}"),
    }
