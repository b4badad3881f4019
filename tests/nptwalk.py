"""An independent EPT and NPT walker, written from the SDM (29.3) and APM (15.25) entry formats."""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

# Deliberately shares nothing with toolchain/nested_paging.py: it is the second opinion.
ADDR_MASK = ((1 << 52) - 1) & ~0xFFF
LEVEL_SHIFTS = (39, 30, 21, 12)
ENTRIES = 512


@dataclass(frozen=True)
class Leaf:
    gpa: int          # first guest-physical address the leaf maps
    hpa: int          # host-physical address it maps to
    size: int         # 4 KiB, 2 MiB or 1 GiB
    read: bool
    write: bool
    execute: bool     # EPT: X; NPT: always (no NX bit set)
    user: bool        # NPT: U at every level; EPT: True
    memtype: int      # EPT: leaf bits 5:3; NPT: -1


class TableMemory:
    """Host-physical memory that holds only the tables region; reads elsewhere fail the walk."""

    def __init__(self, blob: bytes, base: int) -> None:
        self.blob = blob
        self.base = base
        self.pages_read: set[int] = set()

    def u64(self, address: int) -> int:
        offset = address - self.base
        if offset < 0 or offset + 8 > len(self.blob) or address % 8:
            raise LookupError(f"table walk read {address:#x}, outside the tables region")
        self.pages_read.add(address & ~0xFFF)
        return struct.unpack_from("<Q", self.blob, offset)[0]


def _ept_entry(entry: int, level: int) -> tuple[bool, bool]:
    """(present, leaf) for an EPT entry at `level` (0 = PML4), raising on a misconfiguration."""
    rwx = entry & 7
    if rwx == 0:
        return False, False
    if rwx & 2 and not rwx & 1:
        raise ValueError(f"EPT misconfiguration: write without read in {entry:#x}")
    large = bool(entry >> 7 & 1)
    if level == 0 and large:
        raise ValueError(f"EPT misconfiguration: bit 7 set in a PML4E {entry:#x}")
    leaf = level == 3 or large
    if not leaf and entry >> 3 & 0xF:
        raise ValueError(f"EPT misconfiguration: reserved bits 6:3 set in non-leaf {entry:#x}")
    if leaf and (entry >> 3 & 7) in (2, 3, 7):
        raise ValueError(f"EPT misconfiguration: reserved memory type in {entry:#x}")
    return True, leaf


def check_eptp(eptp: int) -> int:
    """The EPT root after checking EPTP's memory type (WB) and walk length (4)."""
    if eptp & 7 != 6:
        raise ValueError(f"EPTP {eptp:#x}: paging-structure memory type is not WB (6)")
    if eptp >> 3 & 7 != 3:
        raise ValueError(f"EPTP {eptp:#x}: page-walk length is not 4")
    return eptp & ADDR_MASK


def ept_translate(memory: TableMemory, eptp: int, gpa: int) -> Leaf | None:
    table = check_eptp(eptp)
    for level, shift in enumerate(LEVEL_SHIFTS):
        entry = memory.u64(table + ((gpa >> shift) & 0x1FF) * 8)
        present, leaf = _ept_entry(entry, level)
        if not present:
            return None
        if leaf:
            size = 1 << shift
            base = entry & ADDR_MASK & ~(size - 1)
            return Leaf(gpa & ~(size - 1), base, size, bool(entry & 1), bool(entry & 2),
                        bool(entry & 4), True, entry >> 3 & 7)
        table = entry & ADDR_MASK
    raise AssertionError("unreachable")


def npt_translate(memory: TableMemory, ncr3: int, gpa: int) -> Leaf | None:
    table = ncr3 & ADDR_MASK
    write = user = True
    for level, shift in enumerate(LEVEL_SHIFTS):
        entry = memory.u64(table + ((gpa >> shift) & 0x1FF) * 8)
        if not entry & 1:
            return None
        write &= bool(entry & 2)
        user &= bool(entry & 4)
        if entry >> 63:
            raise ValueError(f"NPT entry {entry:#x} sets NX: guest code could not run")
        large = bool(entry >> 7 & 1)
        if level == 0 and large:
            raise ValueError(f"NPT: PS set in a PML4E {entry:#x} (reserved)")
        if level == 3 or large:
            size = 1 << shift
            base = entry & ADDR_MASK & ~(size - 1)
            return Leaf(gpa & ~(size - 1), base, size, True, write, True, user, -1)
        table = entry & ADDR_MASK
    raise AssertionError("unreachable")


def _enumerate(memory: TableMemory, root: int,
               present_leaf: Callable[[int, int], tuple[bool, bool]],
               make: Callable[[int, int, int, tuple[bool, bool]], Leaf]) -> list[Leaf]:
    leaves: list[Leaf] = []

    def visit(table: int, level: int, gpa_base: int, inherited: tuple[bool, bool]) -> None:
        shift = LEVEL_SHIFTS[level]
        for index in range(ENTRIES):
            entry = memory.u64(table + index * 8)
            present, leaf = present_leaf(entry, level)
            if not present:
                continue
            gpa = gpa_base | index << shift
            flags = (inherited[0] and bool(entry & 2), inherited[1] and bool(entry & 4))
            if leaf:
                leaves.append(make(entry, gpa, 1 << shift, flags))
            else:
                visit(entry & ADDR_MASK, level + 1, gpa, flags)

    visit(root, 0, 0, (True, True))
    return leaves


def ept_leaves(memory: TableMemory, eptp: int) -> list[Leaf]:
    """Every leaf reachable from the EPTP, found by visiting every entry of every table."""
    def make(entry: int, gpa: int, size: int, _flags: tuple[bool, bool]) -> Leaf:
        return Leaf(gpa, entry & ADDR_MASK & ~(size - 1), size, bool(entry & 1),
                    bool(entry & 2), bool(entry & 4), True, entry >> 3 & 7)

    return _enumerate(memory, check_eptp(eptp), _ept_entry, make)


def npt_leaves(memory: TableMemory, ncr3: int) -> list[Leaf]:
    def present_leaf(entry: int, level: int) -> tuple[bool, bool]:
        if not entry & 1:
            return False, False
        return True, level == 3 or bool(level and entry >> 7 & 1)

    def make(entry: int, gpa: int, size: int, flags: tuple[bool, bool]) -> Leaf:
        return Leaf(gpa, entry & ADDR_MASK & ~(size - 1), size, True, flags[0], True, flags[1], -1)

    return _enumerate(memory, ncr3 & ADDR_MASK, present_leaf, make)
