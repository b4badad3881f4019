"""An independent x86_64 4-level page walker over a memory image, written from the SDM's entry formats."""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Deliberately shares nothing with boot/paging.py: it is the second opinion.
_PRESENT = 1
_RW = 1 << 1
_US = 1 << 2
_PS = 1 << 7
_XD = 1 << 63
_ADDR_MASK = ((1 << 52) - 1) & ~0xFFF


@dataclass(frozen=True)
class Translation:
    physical: int
    writable: bool
    user: bool
    executable: bool
    page_size: int


class Memory:
    """Physical memory holding only `blob` at `base`; reads elsewhere are a walker-visible bug."""

    def __init__(self, blob: bytes, base: int) -> None:
        self.blob = blob
        self.base = base

    def u64(self, address: int) -> int:
        offset = address - self.base
        if offset < 0 or offset + 8 > len(self.blob) or address % 8:
            raise LookupError(f"page walk read {address:#x}, outside the table image")
        return struct.unpack_from("<Q", self.blob, offset)[0]


def translate(memory: Memory, cr3: int, virtual: int, *, nxe: bool = False) -> Translation | None:
    """Translate `virtual` through the tables at `cr3`; None when a level is not present."""
    if virtual >> 47 not in (0, (1 << 17) - 1):
        raise ValueError(f"{virtual:#x} is not canonical")
    virtual &= (1 << 48) - 1
    table = cr3 & _ADDR_MASK
    writable = user = True
    no_execute = False
    # (shift of this level's index, page size if PS may end the walk here)
    for level, (shift, large_size) in enumerate(((39, None), (30, 1 << 30), (21, 1 << 21),
                                                 (12, 1 << 12))):
        index = (virtual >> shift) & 0x1FF
        entry = memory.u64(table + index * 8)
        if not entry & _PRESENT:
            return None
        writable &= bool(entry & _RW)
        user &= bool(entry & _US)
        if entry & _XD:
            if not nxe:
                raise ValueError(f"XD set at level {level} with EFER.NXE clear: reserved-bit fault")
            no_execute = True
        is_leaf = shift == 12 or (entry & _PS and large_size is not None)
        if entry & _PS and large_size is None:
            raise ValueError(f"PS set in a PML4 entry: reserved-bit fault at {virtual:#x}")
        if is_leaf:
            size = large_size if shift != 12 else 1 << 12
            frame = entry & _ADDR_MASK & ~(size - 1)
            if shift != 12 and entry & _ADDR_MASK & (size - 1) & ~0x1FFF:
                raise ValueError(f"reserved address bits set in a large-page entry {entry:#x}")
            return Translation(frame | (virtual & (size - 1)), writable, user, not no_execute,
                               size)
        table = entry & _ADDR_MASK
    raise AssertionError("unreachable: level 1 always ends the walk")
