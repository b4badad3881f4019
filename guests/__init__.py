"""Test guests the toolchain builds: the GuestImage type and the registry of builtin guest builders."""

from __future__ import annotations

from collections.abc import Callable

from guests import (
    attacker,
    bench,
    exit,
    hammer,
    hello,
    hostile,
    hypercall,
    jitter,
    kicker,
    longmode,
    mbtest,
    msrprobe,
    spin,
    ticker,
    trivial,
)
from guests.common import GuestImage

__all__ = ["BUILTIN", "GuestImage", "build_guest"]


def _trivial(*, name: str, memory: int, echo: bool = False) -> GuestImage:
    """The benchmark's trivial multiboot kernel (prints `ok`, exits 0), as a partition guest."""
    del name, memory  # one image for every partition
    return GuestImage(data=trivial.kernel_bytes(echo=echo), kind="multiboot")


# Every builder takes keyword `name` (partition name) and `memory` (bytes)
# plus its own documented parameters; guests/README.md lists them.
BUILTIN: dict[str, Callable[..., GuestImage]] = {
    "hello": hello.build,
    "spin": spin.build,
    "ticker": ticker.build,
    "hammer": hammer.build,
    "jitter": jitter.build,
    "attacker": attacker.build,
    "hostile": hostile.build,
    "exit": exit.build,
    "hypercall": hypercall.build,
    "mbtest": mbtest.build,
    "trivial": _trivial,
    "bench": bench.build,
    "longmode": longmode.build,
    "msrprobe": msrprobe.build,
    "kicker": kicker.build,
}


def build_guest(guest: str, *, name: str, memory: int, **params: object) -> GuestImage:
    """Build builtin `guest` for partition `name`; ValueError for an unknown guest or parameter."""
    builder = BUILTIN.get(guest)
    if builder is None:
        raise ValueError(f"unknown guest {guest!r}; builtin guests: {', '.join(sorted(BUILTIN))}")
    try:
        return builder(name=name, memory=memory, **params)
    except TypeError as error:
        raise ValueError(f"guest {guest!r}: {error}") from error
