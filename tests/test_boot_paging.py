"""The boot page tables, checked by walking them with the independent walker in tests/pagewalk.py."""

import pytest
from pagewalk import Memory, translate

from boot import paging
from toolchain import layout

GIB = 1 << 30
MIB2 = 2 << 20


@pytest.fixture(scope="module")
def memory() -> Memory:
    blob = paging.identity_tables(layout.BOOT_PML4, layout.BOOT_PDPT, layout.BOOT_PD,
                                  layout.IDENTITY_MAP_BYTES)
    return Memory(blob, layout.BOOT_PML4)


def test_tables_span_pml4_through_the_fourth_pd():
    blob = paging.identity_tables(layout.BOOT_PML4, layout.BOOT_PDPT, layout.BOOT_PD,
                                  layout.IDENTITY_MAP_BYTES)
    assert len(blob) == layout.BOOT_PD + 4 * 4096 - layout.BOOT_PML4


def test_every_2mib_page_below_4gib_maps_to_itself_writable_large(memory):
    for page in range(0, 4 * GIB, MIB2):
        t = translate(memory, layout.BOOT_PML4, page)
        assert t is not None, hex(page)
        assert (t.physical, t.writable, t.page_size) == (page, True, MIB2), hex(page)
        assert not t.user


@pytest.mark.parametrize("virtual", [0x1, 0xB8000, 0x100123, 0x1FFFFF, 0x3FE00ABC,
                                     0x40000000 + 0x12345, 0xFEE00300, 0xFFFFFFFF])
def test_offsets_within_pages_are_kept(memory, virtual):
    assert translate(memory, layout.BOOT_PML4, virtual).physical == virtual


@pytest.mark.parametrize("virtual", [4 * GIB, 4 * GIB + 0x1000, 5 * GIB, 511 * GIB,
                                     512 * GIB, 0x7FFF_FFFF_F000, 0xFFFF_8000_0000_0000])
def test_nothing_at_or_above_4gib_is_mapped(memory, virtual):
    assert translate(memory, layout.BOOT_PML4, virtual) is None


def test_a_smaller_map_stops_at_its_end():
    blob = paging.identity_tables(0x200000, 0x201000, 0x202000, 3 * MIB2)
    mem = Memory(blob, 0x200000)
    assert translate(mem, 0x200000, 2 * MIB2 + 5).physical == 2 * MIB2 + 5
    assert translate(mem, 0x200000, 3 * MIB2) is None


def test_entry_encoding_refuses_misaligned_or_overlapping_input():
    with pytest.raises(ValueError):
        paging.encode_entry(0x1234, paging.PTE_PRESENT)
    with pytest.raises(ValueError):
        paging.encode_entry(0x200000, 1 << 20, align=paging.LARGE_PAGE_2M)
    with pytest.raises(ValueError):
        paging.identity_tables(map_bytes=MIB2 + 4096)
