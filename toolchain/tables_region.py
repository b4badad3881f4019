"""The tables region: 4 KiB pages at HV_TABLES_BASE that hold every generated EPT/NPT/bitmap page."""
from __future__ import annotations

from toolchain import layout

PAGE = 0x1000


class TablesRegionFull(Exception):
    """The generated tables outgrew HV_TABLES_MAX."""


class TablesRegion:
    """A bump allocator of host-physical pages: the hypervisor copies its bytes to `base` at boot."""

    def __init__(self, base: int = layout.HV_TABLES_BASE, limit: int = layout.HV_TABLES_MAX) -> None:
        self.base = base
        self.limit = limit
        self._data = bytearray()

    def alloc(self, size: int, fill: int = 0) -> int:
        """`size` bytes rounded up to whole pages, page aligned; returns the host-physical address."""
        pages = -(-size // PAGE)
        if len(self._data) + pages * PAGE > self.limit:
            raise TablesRegionFull(f"generated tables need more than {self.limit:#x} bytes "
                                   "(HV_TABLES_MAX)")
        address = self.base + len(self._data)
        self._data += bytes([fill]) * (pages * PAGE)
        return address

    def write(self, address: int, data: bytes) -> None:
        offset = address - self.base
        if offset < 0 or offset + len(data) > len(self._data):
            raise ValueError(f"write of {len(data)} bytes at {address:#x} outside allocated tables")
        self._data[offset:offset + len(data)] = data

    def put_u64(self, address: int, value: int) -> None:
        self.write(address, value.to_bytes(8, "little"))

    def contents(self) -> bytes:
        return bytes(self._data)

    @property
    def size(self) -> int:
        return len(self._data)
