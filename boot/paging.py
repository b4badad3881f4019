"""The boot page tables: 4-level x86_64 entries, tables built from them, and the 4 GiB identity map."""

from __future__ import annotations

from collections.abc import Mapping

from toolchain import layout

PAGE_SIZE = 4096
ENTRIES_PER_TABLE = 512
ENTRY_BYTES = 8
LARGE_PAGE_2M = 2 << 20
GIB = 1 << 30

PTE_PRESENT = 1 << 0
PTE_WRITABLE = 1 << 1
PTE_USER = 1 << 2
PTE_LARGE = 1 << 7  # PS: in a PD entry maps 2 MiB, in a PDPT entry 1 GiB
# The boot stub does not set EFER.NXE, so bit 63 would be a reserved bit and
# fault; it is offered only for tables used after NXE is on.
PTE_NO_EXECUTE = 1 << 63

_ADDRESS_BITS = 52


def encode_entry(address: int, flags: int, *, align: int = PAGE_SIZE) -> int:
    """One 64-bit paging-structure entry: a physical `address` aligned to `align`, OR `flags`."""
    if address % align:
        raise ValueError(f"address {address:#x} is not aligned to {align:#x}")
    if not 0 <= address < 1 << _ADDRESS_BITS:
        raise ValueError(f"address {address:#x} exceeds {_ADDRESS_BITS} physical address bits")
    allowed = (PAGE_SIZE - 1) | (((1 << 64) - 1) & ~((1 << _ADDRESS_BITS) - 1))
    if align > PAGE_SIZE:
        allowed |= PAGE_SIZE  # bit 12 is PAT in a large-page entry
    if flags & ~allowed:
        raise ValueError(f"flags {flags:#x} overlap the address field")
    return address | flags


def encode_table(entries: Mapping[int, int]) -> bytes:
    """A 4 KiB table from {index: entry}; absent indexes are zero (not present)."""
    table = bytearray(PAGE_SIZE)
    for index, entry in entries.items():
        if not 0 <= index < ENTRIES_PER_TABLE:
            raise ValueError(f"table index {index} out of range")
        table[index * ENTRY_BYTES:(index + 1) * ENTRY_BYTES] = entry.to_bytes(ENTRY_BYTES, "little")
    return bytes(table)


def place_tables(tables: Mapping[int, bytes], start: int) -> bytes:
    """Lay out tables given by physical address into one contiguous image beginning at `start`."""
    end = max(address + len(table) for address, table in tables.items())
    image = bytearray(end - start)
    taken: list[tuple[int, int]] = []
    for address, table in sorted(tables.items()):
        if address < start or address % PAGE_SIZE:
            raise ValueError(f"table at {address:#x} is unaligned or below {start:#x}")
        if taken and address < taken[-1][1]:
            raise ValueError(f"table at {address:#x} overlaps the one at {taken[-1][0]:#x}")
        taken.append((address, address + len(table)))
        image[address - start:address - start + len(table)] = table
    return bytes(image)


def identity_tables(base_pml4: int = layout.BOOT_PML4, base_pdpt: int = layout.BOOT_PDPT,
                    base_pd: int = layout.BOOT_PD,
                    map_bytes: int = layout.IDENTITY_MAP_BYTES) -> bytes:
    """PML4, PDPT and consecutive PDs identity-mapping [0, map_bytes) with 2 MiB pages.

    Returned as the bytes from base_pml4 to the end of the last PD.
    """
    if map_bytes <= 0 or map_bytes % LARGE_PAGE_2M or map_bytes > ENTRIES_PER_TABLE * GIB:
        raise ValueError(f"map_bytes {map_bytes:#x} must be a positive multiple of 2 MiB, <= 512 GiB")
    directories = -(-map_bytes // GIB)
    # Upper levels grant everything: the leaf decides. Writes through the
    # identity map are how the stub and C reach MMIO and their own data.
    table_flags = PTE_PRESENT | PTE_WRITABLE
    leaf_flags = PTE_PRESENT | PTE_WRITABLE | PTE_LARGE

    pml4 = encode_table({0: encode_entry(base_pdpt, table_flags)})
    pdpt = encode_table({i: encode_entry(base_pd + i * PAGE_SIZE, table_flags)
                         for i in range(directories)})
    tables = {base_pml4: pml4, base_pdpt: pdpt}
    for d in range(directories):
        first = d * ENTRIES_PER_TABLE
        count = min(ENTRIES_PER_TABLE, map_bytes // LARGE_PAGE_2M - first)
        tables[base_pd + d * PAGE_SIZE] = encode_table(
            {i: encode_entry((first + i) * LARGE_PAGE_2M, leaf_flags, align=LARGE_PAGE_2M)
             for i in range(count)})
    return place_tables(tables, base_pml4)
