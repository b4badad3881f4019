"""Every generated EPT and NPT, walked independently: each partition maps exactly its own memory."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests import nptwalk
from toolchain import bitmaps, config, layout, partition_layout, placement, ptable

ROOT = Path(__file__).resolve().parent.parent
# Host ranges no partition may map, from the fixed layout (not from the generator).
HYPERVISOR = [(0, layout.LOAD_BASE + layout.IMAGE_BUDGET_BYTES),
              (layout.HV_TABLES_BASE, layout.HV_TABLES_BASE + layout.HV_TABLES_MAX)]
MANY_SIZES_M = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 32, 64, 128, 256, 1026, 2048]


def _many_config(directory: Path) -> Path:
    (directory / "tiny.bin").write_bytes(b"\xf4\xeb\xfd")  # hlt; jmp $-1
    text = "".join(f'[[partitions]]\nname = "p{n}"\nmemory = "{size}M"\nimage = "tiny.bin"\n'
                   f'kind = "raw"\n\n' for n, size in enumerate(MANY_SIZES_M))
    path = directory / "many.toml"
    path.write_text(text)
    return path


# big: an 8 GiB partition (1 GiB pages, above 4 GiB) and one fixed at 12 GiB; high: fixed
# above 4 GiB and small; many: sizes that fill the low RAM and spill above the PCI hole.
@pytest.fixture(scope="module", params=["demo", "many", "big", "high"])
def table(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> ptable.PartitionTable:
    if request.param == "demo":
        path = ROOT / "configs" / "demo.toml"
    elif request.param == "many":
        path = _many_config(tmp_path_factory.mktemp("many"))
    else:
        path = ROOT / "configs" / "tests" / f"{request.param}.toml"
    return ptable.build_table(config.load(path))


def _memory(table: ptable.PartitionTable) -> nptwalk.TableMemory:
    return nptwalk.TableMemory(table.tables_region(), table.header["tables_host_base"])


def _coverage(leaves: list[nptwalk.Leaf]) -> list[tuple[int, int, int]]:
    """(gpa, hpa, size) runs, adjacent leaves merged when both addresses continue."""
    runs: list[list[int]] = []
    for leaf in sorted(leaves, key=lambda leaf: leaf.gpa):
        if runs and runs[-1][0] + runs[-1][2] == leaf.gpa and runs[-1][1] + runs[-1][2] == leaf.hpa:
            runs[-1][2] += leaf.size
        else:
            runs.append([leaf.gpa, leaf.hpa, leaf.size])
    return [tuple(run) for run in runs]


def test_each_ept_maps_exactly_its_partition_rwx_write_back(table: ptable.PartitionTable) -> None:
    memory = _memory(table)
    for part in table.partitions:
        leaves = nptwalk.ept_leaves(memory, part["eptp"])
        assert _coverage(leaves) == [(0, part["mem_host_base"], part["mem_size"])]
        assert all(leaf.read and leaf.write and leaf.execute and leaf.memtype == 6
                   for leaf in leaves)


def test_each_npt_maps_exactly_its_partition_rw_user(table: ptable.PartitionTable) -> None:
    memory = _memory(table)
    for part in table.partitions:
        leaves = nptwalk.npt_leaves(memory, part["npt_cr3"])
        assert _coverage(leaves) == [(0, part["mem_host_base"], part["mem_size"])]
        assert all(leaf.write and leaf.user for leaf in leaves)


def _largest_leaves(gpa_end: int, host_base: int) -> list[int]:
    """The leaf sizes a minimal map of guest [0, gpa_end) at host_base has, worked out directly."""
    sizes, gpa = [], 0
    while gpa < gpa_end:
        size = next(s for s in (1 << 30, 2 << 20, 4 << 10)
                    if gpa % s == 0 and (host_base + gpa) % s == 0 and gpa + s <= gpa_end)
        sizes.append(size)
        gpa += size
    return sizes


def test_largest_pages_wherever_aligned(table: ptable.PartitionTable) -> None:
    # Partitions are 2 MiB aligned and sized, so no 4 KiB page table is needed; those of
    # 1 GiB or more are placed 1 GiB aligned and take 1 GiB pages.
    memory = _memory(table)
    for part in table.partitions:
        expected = _largest_leaves(part["mem_size"], part["mem_host_base"])
        assert 4 << 10 not in expected
        for leaves in (nptwalk.ept_leaves(memory, part["eptp"]),
                       nptwalk.npt_leaves(memory, part["npt_cr3"])):
            assert [leaf.size for leaf in sorted(leaves, key=lambda leaf: leaf.gpa)] == expected


def test_big_partitions_live_above_4_gib_outside_the_pci_hole(table: ptable.PartitionTable) -> None:
    for part in table.partitions:
        base, end = part["mem_host_base"], part["mem_host_base"] + part["mem_size"]
        assert end <= layout.LOW_MMIO_HOLE_BASE or base >= layout.LOW_MMIO_HOLE_END
        assert end <= layout.HIGH_MEMORY_TOP
        if part["mem_size"] >= 1 << 30:
            assert base % (1 << 30) == 0
    names = {table.name(i): p for i, p in enumerate(table.partitions)}
    if "big" in names:
        assert (names["big"]["mem_host_base"], names["big"]["mem_size"]) == (4 << 30, 8 << 30)
        assert names["attacker"]["mem_host_base"] == 12 << 30


def test_point_walks_agree_and_stop_at_the_partition_end(table: ptable.PartitionTable) -> None:
    memory = _memory(table)
    rng = random.Random(1)
    for part in table.partitions:
        size, base = part["mem_size"], part["mem_host_base"]
        inside = [0, 0xFFF, 0x1000, size - 1, size - 0x1000] + [rng.randrange(size)
                                                                 for _ in range(64)]
        for gpa in inside:
            for leaf in (nptwalk.ept_translate(memory, part["eptp"], gpa),
                         nptwalk.npt_translate(memory, part["npt_cr3"], gpa)):
                assert leaf is not None and leaf.hpa + (gpa - leaf.gpa) == base + gpa
        outside = [size, size + 0x1000, size + (2 << 20), 1 << 30, (1 << 32) - 1, 1 << 32,
                   (1 << 39) + 5, (1 << 48) - 1]
        for gpa in (g for g in outside if g >= size):
            assert nptwalk.ept_translate(memory, part["eptp"], gpa) is None
            assert nptwalk.npt_translate(memory, part["npt_cr3"], gpa) is None


def _host_ranges(table: ptable.PartitionTable) -> list[tuple[str, int, int]]:
    """Every host range any partition's EPT or NPT reaches, from the walker's leaves."""
    memory = _memory(table)
    ranges = []
    for index, part in enumerate(table.partitions):
        for leaves in (nptwalk.ept_leaves(memory, part["eptp"]),
                       nptwalk.npt_leaves(memory, part["npt_cr3"])):
            ranges += [(table.name(index), hpa, hpa + size) for _, hpa, size in _coverage(leaves)]
    return ranges


def test_partitions_pairwise_disjoint_in_host_memory(table: ptable.PartitionTable) -> None:
    ranges = _host_ranges(table)
    for name, start, end in ranges:
        for other, other_start, other_end in ranges:
            if other != name:
                assert end <= other_start or other_end <= start, (
                    f"{name} [{start:#x}, {end:#x}) overlaps {other} [{other_start:#x}, "
                    f"{other_end:#x})")


def test_no_partition_maps_the_hypervisor(table: ptable.PartitionTable) -> None:
    for name, start, end in _host_ranges(table):
        for low, high in HYPERVISOR:
            assert end <= low or start >= high, f"{name} maps [{start:#x}, {end:#x})"


def test_tables_and_bitmaps_lie_in_the_tables_region(table: ptable.PartitionTable) -> None:
    memory = _memory(table)
    low, high = layout.HV_TABLES_BASE, layout.HV_TABLES_BASE + table.header["tables_size"]
    assert table.header["tables_host_base"] == layout.HV_TABLES_BASE
    for part in table.partitions:
        nptwalk.ept_leaves(memory, part["eptp"])
        nptwalk.npt_leaves(memory, part["npt_cr3"])
        sizes = {"vmx_io_bitmap_a": 0x1000, "vmx_io_bitmap_b": 0x1000, "vmx_msr_bitmap": 0x1000,
                 "svm_iopm": 0x3000, "svm_msrpm": 0x2000}
        for key, size in sizes.items():
            assert part[key] % 0x1000 == 0 and low <= part[key] and part[key] + size <= high
            region = table.tables_region()
            start = part[key] - low
            assert region[start:start + size] == b"\xff" * size, f"{key} not all-intercept"
    assert memory.pages_read and all(low <= page < high for page in memory.pages_read)


def test_prove_isolation_refuses_overlap_and_hypervisor_ranges() -> None:
    place = partition_layout.Placement
    ok = [place("a", layout.PARTITIONS_BASE, 2 << 20), place("b", layout.PARTITIONS_BASE + (2 << 20), 2 << 20)]
    partition_layout.prove_isolation(ok)
    with pytest.raises(partition_layout.IsolationError, match="a .* and b .* overlap"):
        partition_layout.prove_isolation([ok[0], place("b", layout.PARTITIONS_BASE, 4 << 20)])
    with pytest.raises(partition_layout.IsolationError, match="tables region"):
        partition_layout.prove_isolation([place("t", layout.HV_TABLES_BASE, 2 << 20)])
    with pytest.raises(partition_layout.IsolationError, match="hypervisor image"):
        partition_layout.prove_isolation([place("i", 4 << 20, 2 << 20)])
    high = [place("h", 5 << 30, 1 << 30), place("g", 6 << 30, 1 << 30)]
    partition_layout.prove_isolation(high)
    with pytest.raises(partition_layout.IsolationError, match="h .* and g .* overlap"):
        partition_layout.prove_isolation([high[0], place("g", (5 << 30) + (2 << 20), 2 << 20)])
    with pytest.raises(partition_layout.IsolationError, match="above 512 GiB"):
        partition_layout.prove_isolation([place("top", (512 << 30) - (2 << 20), 4 << 20)])


def test_placement_skips_the_pci_hole_and_aligns_big_partitions() -> None:
    gib = 1 << 30
    bases, problems = placement.place_ranges(
        [(0, 1536 << 20, None), (1, 1 * gib, None), (2, 64 << 20, None), (3, 2 * gib, 6 * gib)],
        placement.MEMORY_TOP)
    assert problems == []
    assert bases[3] == 6 * gib                    # fixed ranges first
    assert bases[0] == 4 * gib                    # at 1 GiB it would reach into the hole at 2 GiB
    assert bases[1] == 1 * gib                    # [1 GiB, 2 GiB) just fits below the hole
    assert bases[2] == layout.PARTITIONS_BASE     # small ones fill the bottom, 2 MiB aligned
    assert placement.room(4 * gib) == 2 * gib - layout.PARTITIONS_BASE


def test_bitmap_policy_passes_through_only_what_it_names() -> None:
    policy = bitmaps.AccessPolicy(ports=frozenset({0x80, 0x8001}),
                                  msrs=frozenset({0x10, 0xC0000080, 0xC0010015}))
    io_a, io_b = bitmaps.vmx_io_bitmaps(policy)
    assert io_a[0x80 // 8] == 0xFF & ~1 and io_b[1 // 8] == 0xFF & ~2
    assert sum(bin(b).count("0") - 1 for b in io_a + io_b) == 2
    msr = bitmaps.vmx_msr_bitmap(policy)
    # read-low bit 0x10, write-low at +2 KiB; read-high bit 0x80 at 1 KiB, write-high at 3 KiB.
    assert msr[0x10 // 8] == 0xFE and msr[0x800 + 0x10 // 8] == 0xFE
    assert msr[0x400 + 0x80 // 8] == 0xFE and msr[0xC00 + 0x80 // 8] == 0xFE
    iopm = bitmaps.svm_iopm(policy)
    assert len(iopm) == 0x3000 and iopm[0x80 // 8] == 0xFE and iopm[0x8001 // 8] == 0xFD
    msrpm = bitmaps.svm_msrpm(policy)
    # Two bits per MSR: 0x10 -> bits 0x20, 0x21; 0xc0010015 -> range 2 at 0x1000, bits 0x2a, 0x2b.
    assert msrpm[0x20 // 8] == 0xFC and msrpm[0x1000 + 0x2A // 8] == 0xF3
    assert msrpm[0x800 + 0x100 // 8] == 0xFC
    with pytest.raises(ValueError):
        bitmaps.AccessPolicy(msrs=frozenset({0x40000000}))
