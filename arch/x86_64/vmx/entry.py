"""The VMX backend's VM entry and exit stubs, emitted as assembly for boot/stub.py to place and assemble."""
from __future__ import annotations

from collections.abc import Callable, Mapping

# (chunk name, source(offsets, addresses) -> 64-bit assembly text): each chunk's
# address becomes BOOT_SYM_<NAME> in build/gen/boot_symbols.h.
CHUNKS: list[tuple[str, Callable[[Mapping[str, int], Mapping[str, int]], str]]] = []
