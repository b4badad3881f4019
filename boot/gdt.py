"""The boot GDT, its GDTR pseudo-descriptor and the boot TSS, as bytes placed in the boot data region."""

from __future__ import annotations

import struct

from toolchain import layout

# Access byte bits (Intel SDM vol. 3, 3.4.5).
ACCESS_PRESENT = 0x80
ACCESS_SEGMENT = 0x10  # S: code/data rather than a system descriptor
ACCESS_CODE = 0x08
ACCESS_READ_WRITE = 0x02  # readable code / writable data
# Pre-set so the CPU never writes the descriptor to mark it accessed.
ACCESS_ACCESSED = 0x01
TYPE_TSS64_AVAILABLE = 0x9

# Flags nibble (descriptor bits 52..55).
FLAG_GRANULARITY_4K = 0x8
FLAG_SIZE_32 = 0x4  # D/B; must be 0 when L is set
FLAG_LONG = 0x2

FLAT_LIMIT = 0xFFFFF
GDTR_ADDRESS = layout.BOOT_GDT + layout.GDT_ENTRIES * 8
GDTR_BYTES = 10
TSS_IOMAP_BASE_OFFSET = 0x66


def segment_descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    """An 8-byte code or data (or low half of a system) descriptor."""
    if not 0 <= limit <= FLAT_LIMIT or not 0 <= base < 1 << 32:
        raise ValueError(f"base {base:#x} / limit {limit:#x} out of range")
    low = (limit & 0xFFFF) | (base & 0xFFFF) << 16
    high = ((base >> 16) & 0xFF) | access << 8 | ((limit >> 16) & 0xF) << 16 \
        | (flags & 0xF) << 20 | ((base >> 24) & 0xFF) << 24
    return struct.pack("<II", low, high)


def tss_descriptor(base: int, limit: int) -> bytes:
    """The 16-byte long-mode descriptor of an available 64-bit TSS."""
    low = segment_descriptor(base & 0xFFFFFFFF, limit, ACCESS_PRESENT | TYPE_TSS64_AVAILABLE, 0)
    return low + struct.pack("<II", base >> 32, 0)


def gdt_bytes(tss_base: int = layout.BOOT_TSS) -> bytes:
    """The boot GDT, indexed by the selectors in toolchain/layout.py."""
    code = ACCESS_PRESENT | ACCESS_SEGMENT | ACCESS_CODE | ACCESS_READ_WRITE | ACCESS_ACCESSED
    data = ACCESS_PRESENT | ACCESS_SEGMENT | ACCESS_READ_WRITE | ACCESS_ACCESSED
    entries = {
        0x00: bytes(8),
        layout.SEL_CODE64: segment_descriptor(0, FLAT_LIMIT, code,
                                              FLAG_GRANULARITY_4K | FLAG_LONG),
        layout.SEL_DATA: segment_descriptor(0, FLAT_LIMIT, data,
                                            FLAG_GRANULARITY_4K | FLAG_SIZE_32),
        layout.SEL_CODE32: segment_descriptor(0, FLAT_LIMIT, code,
                                              FLAG_GRANULARITY_4K | FLAG_SIZE_32),
        layout.SEL_TSS: tss_descriptor(tss_base, layout.TSS_SIZE - 1),
    }
    table = bytearray(layout.GDT_ENTRIES * 8)
    for selector, descriptor in entries.items():
        table[selector:selector + len(descriptor)] = descriptor
    return bytes(table)


def gdtr_bytes(base: int = layout.BOOT_GDT, size: int = layout.GDT_ENTRIES * 8) -> bytes:
    """The 10-byte operand of LGDT (limit, 64-bit base); 32-bit LGDT reads its first 6 bytes."""
    return struct.pack("<HQ", size - 1, base)


def tss_bytes() -> bytes:
    """A zeroed 64-bit TSS: C fills RSP0 and the IST pointers once it owns stacks."""
    tss = bytearray(layout.TSS_SIZE)
    # An I/O-map base at or beyond the limit means "no I/O bitmap": every
    # port access from a lower privilege level faults.
    struct.pack_into("<H", tss, TSS_IOMAP_BASE_OFFSET, layout.TSS_SIZE)
    return bytes(tss)
