"""Per-partition nested page tables: EPT (Intel) and NPT (AMD), 4-level, guest [0, size) to host, 1 GiB leaves where aligned."""
from __future__ import annotations

from dataclasses import dataclass

from toolchain.tables_region import PAGE, TablesRegion

ENTRIES = 512

# EPT entries (Intel SDM vol. 3, 29.3.2): permissions in bits 0-2, the leaf's
# memory type in bits 5:3, bit 7 ends the walk at a PDPTE or PDE.
EPT_R, EPT_W, EPT_X = 1 << 0, 1 << 1, 1 << 2
EPT_MEMTYPE_WB = 6 << 3
EPT_LARGE = 1 << 7
# EPTP: root, page-walk length minus one in bits 5:3, paging-structure memory type WB.
EPTP_WALK_4 = (4 - 1) << 3
EPTP_WB = 6

# NPT entries are ordinary long-mode entries (AMD APM vol. 2, 15.25.5). The
# nested walk is a user access, so every level needs U (QEMU enforces it).
NPT_P, NPT_RW, NPT_U, NPT_PS = 1 << 0, 1 << 1, 1 << 2, 1 << 7


@dataclass(frozen=True)
class EntryFormat:
    name: str
    table: int   # bits of an entry that points to the next level
    leaf: int    # bits of an entry that maps a page
    large: int   # the extra bit a 2 MiB or 1 GiB leaf carries


EPT = EntryFormat("EPT", table=EPT_R | EPT_W | EPT_X,
                  leaf=EPT_R | EPT_W | EPT_X | EPT_MEMTYPE_WB, large=EPT_LARGE)
NPT = EntryFormat("NPT", table=NPT_P | NPT_RW | NPT_U, leaf=NPT_P | NPT_RW | NPT_U, large=NPT_PS)

# Shift of the address bits each level's index covers: PML4, PDPT, PD, PT.
_SHIFTS = (39, 30, 21, 12)
# Leaves are 1 GiB, 2 MiB or 4 KiB, the largest that alignment allows: a
# GiB-aligned partition of whole GiBs (the placer aligns those of 1 GiB or
# more) costs one PDPT instead of a page directory per GiB. 1 GiB EPT pages
# are an optional VMX capability (IA32_VMX_EPT_VPID_CAP bit 17) and 1 GiB NPT
# pages need the CPU's 1 GiB pages; the hypervisor checks that at boot and
# marks a partition whose tables use them unusable on a CPU without.
_LEAF_SHIFTS = frozenset({30, 21, 12})


def _fill(region: TablesRegion, fmt: EntryFormat, table: int, shift: int,
          start: int, end: int, host_delta: int) -> None:
    span = 1 << shift
    gpa = start
    while gpa < end:
        slot = gpa & ~(span - 1)
        piece_end = min(end, slot + span)
        index = (slot >> shift) & (ENTRIES - 1)
        host = slot + host_delta
        whole = gpa == slot and piece_end == slot + span
        if shift in _LEAF_SHIFTS and whole and host % span == 0:
            large = fmt.large if shift != 12 else 0
            region.put_u64(table + index * 8, host | fmt.leaf | large)
        else:
            if shift == 12:
                raise ValueError(f"{fmt.name}: {gpa:#x} is not 4 KiB aligned")
            child = region.alloc(PAGE)
            region.put_u64(table + index * 8, child | fmt.table)
            _fill(region, fmt, child, shift - 9, gpa, piece_end, host_delta)
        gpa = piece_end


def build(region: TablesRegion, fmt: EntryFormat, host_base: int, size: int) -> int:
    """Map guest-physical [0, size) to [host_base, host_base + size); return the root's address."""
    if size <= 0 or size % PAGE or host_base % PAGE:
        raise ValueError(f"{fmt.name}: base {host_base:#x} size {size:#x} not whole pages")
    root = region.alloc(PAGE)
    _fill(region, fmt, root, _SHIFTS[0], 0, size, host_base)
    return root


def build_ept(region: TablesRegion, host_base: int, size: int) -> int:
    """The partition's EPT; returns the full EPTP value the VMCS takes."""
    return build(region, EPT, host_base, size) | EPTP_WALK_4 | EPTP_WB


def build_npt(region: TablesRegion, host_base: int, size: int) -> int:
    """The partition's NPT; returns its root, the VMCB's nested CR3."""
    return build(region, NPT, host_base, size)
