"""Layout arithmetic: where partitions' memory may go in host-physical memory, and how it is aligned."""
from __future__ import annotations

from toolchain import layout

# Partitions' host memory may lie anywhere in the RAM the hypervisor maps
# (up to 512 GiB); their guest-physical view always starts at 0, so a guest's
# own 4 GiB limits (32-bit multiboot addresses) are about its size, not here.
MEMORY_TOP = layout.HIGH_MEMORY_TOP
MEMORY_TOP_TEXT = "512 GiB"
# The 32-bit PCI window below 4 GiB: partitions placed by the toolchain skip it.
LOW_HOLE = (layout.LOW_MMIO_HOLE_BASE, layout.LOW_MMIO_HOLE_END)


def overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def room(top: int) -> int:
    """Bytes partitions may take from PARTITIONS_BASE up to `top`, the PCI hole below 4 GiB left out."""
    hole = max(0, min(top, LOW_HOLE[1]) - max(layout.PARTITIONS_BASE, LOW_HOLE[0]))
    return top - layout.PARTITIONS_BASE - hole


def alignment(size: int) -> int:
    """Where a partition of `size` bytes is placed: 1 GiB aligned from 1 GiB up (1 GiB pages), else 2 MiB."""
    return layout.PARTITION_ALIGN_1G if size >= layout.PARTITION_ALIGN_1G else layout.PARTITION_ALIGN


def place_ranges(requests: list[tuple[int, int, int | None]], top: int, where: str = MEMORY_TOP_TEXT
                 ) -> tuple[dict[int, int], list[tuple[int, str, str]]]:
    """Host bases for (index, size, fixed base or None) requests below `top`.

    Fixed ranges are taken first; the others go, in order, into the lowest gap
    from PARTITIONS_BASE up that holds them, outside the PCI hole below 4 GiB,
    each aligned by `alignment`. Returns the bases by index and the problems as
    (index, key, rule): the config names the key, so the person sees which
    partition and why.
    """
    bases: dict[int, int] = {}
    problems: list[tuple[int, str, str]] = []
    taken: list[tuple[int, int, int]] = []  # (start, end, index)
    for index, size, fixed in requests:
        if fixed is None:
            continue
        end = fixed + size
        if end > top:
            problems.append((index, "host_address", f"its memory would end at {end:#x}, "
                             f"above {where}"))
            continue
        clash = next((t for t in taken if overlap(fixed, end, t[0], t[1])), None)
        if clash is not None:
            problems.append((index, "host_address", f"[{fixed:#x}, {end:#x}) overlaps "
                             f"partitions[{clash[2]}] [{clash[0]:#x}, {clash[1]:#x})"))
            continue
        taken.append((fixed, end, index))
        bases[index] = fixed
    hole = (LOW_HOLE[0], LOW_HOLE[1], -1)
    for index, size, fixed in requests:
        if fixed is not None:
            continue
        align = alignment(size)
        base = _align_up(layout.PARTITIONS_BASE, align)
        for start, end, _ in sorted([*taken, hole]):
            if base + size <= start:
                break
            base = max(base, _align_up(end, align))
        if base + size > top:
            problems.append((index, "memory", f"no free range of this size below {where} "
                             "beside the other partitions (and outside the PCI hole at "
                             f"{LOW_HOLE[0]:#x}-{LOW_HOLE[1]:#x})"))
            continue
        taken.append((base, base + size, index))
        bases[index] = base
    return bases, problems
