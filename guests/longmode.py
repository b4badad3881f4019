"""The `longmode` guest: a gcc-built multiboot kernel that enters IA-32e mode itself and checks the CPU it finds."""
from __future__ import annotations

from guests import c_kernel
from guests.common import GuestImage

# Its page tables and stack live in its bss below 2 MiB; the identity map covers 1 GiB.
MIN_MEMORY = 4 * 1024 * 1024


def build(*, name: str, memory: int) -> GuestImage:
    """guests/c/longmode built with gcc (build/guests/longmode-*/longmode.elf)."""
    del name
    if memory < MIN_MEMORY:
        raise ValueError(f"longmode needs at least {MIN_MEMORY // (1024 * 1024)} MiB, not {memory} bytes")
    try:
        data = c_kernel.build("longmode")
    except c_kernel.KernelBuildError as error:
        raise ValueError(str(error)) from error
    return GuestImage(data=data, kind="multiboot")
