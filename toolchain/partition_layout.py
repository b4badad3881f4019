"""Host-physical placement of partitions' memory and the build-time proof that it is isolated."""
from __future__ import annotations

from dataclasses import dataclass

from toolchain import layout
from toolchain.config import SystemConfig
from toolchain.placement import MEMORY_TOP, MEMORY_TOP_TEXT, overlap, place_ranges


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


def place(config: SystemConfig) -> list[Placement]:
    """Each partition where validation placed it: its host_address, else the lowest gap."""
    bases, problems = place_ranges(
        [(p.index, p.memory, p.host_address) for p in config.partitions], MEMORY_TOP)
    if problems:
        index, key, rule = problems[0]
        raise IsolationError(f"partitions[{index}].{key}: {rule}")
    return [Placement(p.name, bases[p.index], p.memory) for p in config.partitions]


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
            if overlap(part.host_base, part.host_end, start, end):
                raise IsolationError(
                    f"partition {part.name} [{part.host_base:#x}, {part.host_end:#x}) overlaps "
                    f"{what} [{start:#x}, {end:#x})")
        for other in placements[index + 1:]:
            if overlap(part.host_base, part.host_end, other.host_base, other.host_end):
                raise IsolationError(
                    f"partitions {part.name} [{part.host_base:#x}, {part.host_end:#x}) and "
                    f"{other.name} [{other.host_base:#x}, {other.host_end:#x}) overlap")
