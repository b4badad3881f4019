"""Host-physical placement of partitions' memory and the build-time proof that it is isolated."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolchain import layout

if TYPE_CHECKING:
    from toolchain.config import SystemConfig

# Partitions' host memory may lie anywhere in the RAM the hypervisor maps
# (up to 512 GiB); their guest-physical view always starts at 0, so a guest's
# own 4 GiB limits (32-bit multiboot addresses) are about its size, not here.
MEMORY_TOP = layout.HIGH_MEMORY_TOP
MEMORY_TOP_TEXT = "512 GiB"
# The 32-bit PCI window below 4 GiB: partitions placed by the toolchain skip it.
LOW_HOLE = (layout.LOW_MMIO_HOLE_BASE, layout.LOW_MMIO_HOLE_END)


class IsolationError(Exception):
    """Two partitions share host memory, or one reaches the hypervisor's own memory."""


@dataclass(frozen=True)
class Placement:
    name: str
    host_base: int
    size: int

    @property
    def host_end(self) -> int:
        return self.host_base + self.size


# The hypervisor's own memory, as half-open host-physical ranges. Its heap and
# stacks are not listed: the C core allocates them at run time only from RAM
# outside partitions' memory and the tables region, so keeping partitions away
# from these two ranges is all the build can and must prove.
HYPERVISOR_RANGES: tuple[tuple[str, int, int], ...] = (
    ("low memory and the hypervisor image", 0, layout.LOAD_BASE + layout.IMAGE_BUDGET_BYTES),
    ("the nested-paging tables region", layout.HV_TABLES_BASE,
     layout.HV_TABLES_BASE + layout.HV_TABLES_MAX),
)


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
        clash = next((t for t in taken if _overlap(fixed, end, t[0], t[1])), None)
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


def place(config: SystemConfig) -> list[Placement]:
    """Each partition where validation placed it: its host_address, else the lowest gap."""
    bases, problems = place_ranges(
        [(p.index, p.memory, p.host_address) for p in config.partitions], MEMORY_TOP)
    if problems:
        index, key, rule = problems[0]
        raise IsolationError(f"partitions[{index}].{key}: {rule}")
    return [Placement(p.name, bases[p.index], p.memory) for p in config.partitions]


def _overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def prove_isolation(placements: list[Placement]) -> None:
    """Raise IsolationError unless partitions are pairwise disjoint and clear of the hypervisor."""
    if len(placements) > layout.PARTITIONS_MAX:
        raise IsolationError(f"{len(placements)} partitions; at most {layout.PARTITIONS_MAX}")
    for index, part in enumerate(placements):
        if part.size <= 0 or part.host_base % layout.PARTITION_ALIGN:
            raise IsolationError(f"partition {part.name}: base {part.host_base:#x} size "
                                 f"{part.size:#x} is empty or not {layout.PARTITION_ALIGN:#x} aligned")
        if part.host_end > MEMORY_TOP:
            raise IsolationError(f"partition {part.name} ends at {part.host_end:#x}, above "
                                 f"{MEMORY_TOP_TEXT} (the most the hypervisor maps)")
        for what, start, end in HYPERVISOR_RANGES:
            if _overlap(part.host_base, part.host_end, start, end):
                raise IsolationError(
                    f"partition {part.name} [{part.host_base:#x}, {part.host_end:#x}) overlaps "
                    f"{what} [{start:#x}, {end:#x})")
        for other in placements[index + 1:]:
            if _overlap(part.host_base, part.host_end, other.host_base, other.host_end):
                raise IsolationError(
                    f"partitions {part.name} [{part.host_base:#x}, {part.host_end:#x}) and "
                    f"{other.name} [{other.host_base:#x}, {other.host_end:#x}) overlap")
