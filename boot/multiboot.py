"""Multiboot1 and multiboot2 headers: their fields, bytes, link-time patching, parsing and finding."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from toolchain import layout

# A header field: (name, width in bytes, value). Kept as fields, not only
# bytes, so the stub's assembly can show each one by name.
Field = tuple[str, int, int]

MB1_MAGIC = 0x1BADB002
MB1_BOOTLOADER_MAGIC = 0x2BADB002
MB1_FLAG_PAGE_ALIGN_MODULES = 1 << 0
MB1_FLAG_MEMORY_INFO = 1 << 1
# QEMU's -kernel refuses an ELF64 but loads any image through these "a.out
# kludge" address fields, ignoring the ELF headers.
MB1_FLAG_ADDRESS_FIELDS = 1 << 16
MB1_FLAGS = MB1_FLAG_PAGE_ALIGN_MODULES | MB1_FLAG_MEMORY_INFO | MB1_FLAG_ADDRESS_FIELDS
MB1_SEARCH_BYTES = 8192
MB1_ALIGN = 4
MB1_HEADER_BYTES = 32
MB1_LOAD_END_OFFSET = 20
MB1_BSS_END_OFFSET = 24

MB2_MAGIC = 0xE85250D6
MB2_BOOTLOADER_MAGIC = 0x36D76289
MB2_ARCH_I386 = 0
MB2_SEARCH_BYTES = 32768
MB2_ALIGN = 8
MB2_TAG_END = 0
MB2_TAG_INFO_REQUEST = 1
MB2_TAG_ENTRY_ADDRESS = 3
MB2_TAG_CONSOLE_FLAGS = 4
MB2_TAG_MODULE_ALIGN = 6
MB2_CONSOLE_EGA_TEXT = 1 << 1
MB2_INFO_BASIC_MEMINFO = 4
MB2_INFO_MEMORY_MAP = 6

_U32 = 0xFFFFFFFF


def encode_fields(fields: list[Field]) -> bytes:
    """Little-endian bytes of a field list."""
    formats = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
    return b"".join(struct.pack(formats[width], value) for _, width, value in fields)


def _checksum(*words: int) -> int:
    return -sum(words) & _U32


def mb1_fields(*, header_addr: int, entry_addr: int, load_addr: int = layout.LOAD_BASE) -> list[Field]:
    """The multiboot1 header; load_end_addr and bss_end_addr are 0 until the link patches them."""
    return [
        ("magic", 4, MB1_MAGIC),
        ("flags", 4, MB1_FLAGS),
        ("checksum", 4, _checksum(MB1_MAGIC, MB1_FLAGS)),
        ("header_addr", 4, header_addr),
        ("load_addr", 4, load_addr),
        ("load_end_addr (patched at link)", 4, 0),
        ("bss_end_addr (patched at link)", 4, 0),
        ("entry_addr", 4, entry_addr),
    ]


def mb1_header(*, header_addr: int, entry_addr: int, load_addr: int = layout.LOAD_BASE) -> bytes:
    return encode_fields(mb1_fields(header_addr=header_addr, entry_addr=entry_addr,
                                    load_addr=load_addr))


def _tag(kind: int, flags: int, payload: list[Field], name: str) -> list[Field]:
    size = 8 + sum(width for _, width, _ in payload)
    fields = [(f"{name}: type", 2, kind), (f"{name}: flags", 2, flags),
              (f"{name}: size", 4, size), *payload]
    # Every tag starts 8-byte aligned; the padding is not part of its size.
    if size % MB2_ALIGN:
        fields.append((f"{name}: padding", 4, 0))
    return fields


def mb2_fields(*, entry_addr: int) -> list[Field]:
    """The multiboot2 header. No address tag: GRUB loads the ELF64 by its program headers."""
    tags = [
        *_tag(MB2_TAG_INFO_REQUEST, 0, [("request basic meminfo", 4, MB2_INFO_BASIC_MEMINFO),
                                        ("request memory map", 4, MB2_INFO_MEMORY_MAP)],
              "information request"),
        # The ELF's own entry point is 64-bit code; the loader must enter the
        # 32-bit entry instead.
        *_tag(MB2_TAG_ENTRY_ADDRESS, 0, [("entry_addr", 4, entry_addr)], "entry address"),
        *_tag(MB2_TAG_MODULE_ALIGN, 0, [], "module alignment"),
        # The banner that says where the console is goes on whatever screen
        # the loader set up: EGA text under BIOS, the linear framebuffer UEFI
        # firmware set up (GRUB passes both in its framebuffer tag). No
        # framebuffer request tag: with one, GRUB on BIOS switches to a VBE
        # graphics mode, which Bochs's term display cannot show.
        *_tag(MB2_TAG_CONSOLE_FLAGS, 0, [("console flags: EGA text supported", 4,
                                          MB2_CONSOLE_EGA_TEXT)], "console flags"),
        *_tag(MB2_TAG_END, 0, [], "end"),
    ]
    length = 16 + sum(width for _, width, _ in tags)
    return [
        ("magic", 4, MB2_MAGIC),
        ("architecture", 4, MB2_ARCH_I386),
        ("header_length", 4, length),
        ("checksum", 4, _checksum(MB2_MAGIC, MB2_ARCH_I386, length)),
        *tags,
    ]


def mb2_header(*, entry_addr: int) -> bytes:
    return encode_fields(mb2_fields(entry_addr=entry_addr))


def patch_mb1_addresses(image: bytearray, header_file_offset: int, load_end: int,
                        bss_end: int) -> None:
    """Fill the multiboot1 header's load_end_addr and bss_end_addr once the link has fixed them."""
    header = parse_mb1(image, header_file_offset)
    if not header.load_addr <= load_end <= bss_end:
        raise ValueError(f"need load_addr {header.load_addr:#x} <= load_end {load_end:#x}"
                         f" <= bss_end {bss_end:#x}")
    struct.pack_into("<I", image, header_file_offset + MB1_LOAD_END_OFFSET, load_end)
    struct.pack_into("<I", image, header_file_offset + MB1_BSS_END_OFFSET, bss_end)


@dataclass(frozen=True)
class Mb1Header:
    flags: int
    checksum: int
    header_addr: int | None = None
    load_addr: int | None = None
    load_end_addr: int | None = None
    bss_end_addr: int | None = None
    entry_addr: int | None = None


@dataclass(frozen=True)
class Mb2Tag:
    type: int
    flags: int
    size: int
    payload: bytes


@dataclass(frozen=True)
class Mb2Header:
    architecture: int
    header_length: int
    checksum: int
    tags: tuple[Mb2Tag, ...]

    def tag(self, kind: int) -> Mb2Tag | None:
        return next((t for t in self.tags if t.type == kind), None)


def parse_mb1(blob: bytes | bytearray, offset: int) -> Mb1Header:
    """Parse a multiboot1 header at `offset`; ValueError if the magic or checksum is wrong."""
    if offset + 12 > len(blob):
        raise ValueError(f"no room for a multiboot1 header at {offset:#x}")
    magic, flags, checksum = struct.unpack_from("<III", blob, offset)
    if magic != MB1_MAGIC:
        raise ValueError(f"multiboot1 magic at {offset:#x} is {magic:#x}")
    if (magic + flags + checksum) & _U32:
        raise ValueError(f"multiboot1 checksum at {offset:#x} does not sum to 0")
    if not flags & MB1_FLAG_ADDRESS_FIELDS:
        return Mb1Header(flags, checksum)
    if offset + MB1_HEADER_BYTES > len(blob):
        raise ValueError(f"multiboot1 address fields at {offset:#x} are cut off")
    return Mb1Header(flags, checksum, *struct.unpack_from("<5I", blob, offset + 12))


def parse_mb2(blob: bytes | bytearray, offset: int) -> Mb2Header:
    """Parse a multiboot2 header and its tags; ValueError on bad magic, checksum or tag layout."""
    if offset + 16 > len(blob):
        raise ValueError(f"no room for a multiboot2 header at {offset:#x}")
    magic, arch, length, checksum = struct.unpack_from("<IIII", blob, offset)
    if magic != MB2_MAGIC:
        raise ValueError(f"multiboot2 magic at {offset:#x} is {magic:#x}")
    if (magic + arch + length + checksum) & _U32:
        raise ValueError(f"multiboot2 checksum at {offset:#x} does not sum to 0")
    end = offset + length
    if length < 24 or end > len(blob):
        raise ValueError(f"multiboot2 header_length {length} at {offset:#x} is impossible")
    tags = []
    at = offset + 16
    while True:
        if at + 8 > end:
            raise ValueError(f"multiboot2 tags at {offset:#x} run past header_length")
        kind, flags, size = struct.unpack_from("<HHI", blob, at)
        if size < 8 or at + size > end:
            raise ValueError(f"multiboot2 tag type {kind} at {at:#x} has bad size {size}")
        tags.append(Mb2Tag(kind, flags, size, bytes(blob[at + 8:at + size])))
        if kind == MB2_TAG_END:
            break
        at += -(-size // MB2_ALIGN) * MB2_ALIGN
    return Mb2Header(arch, length, checksum, tuple(tags))


def find_mb1(data: bytes | bytearray) -> tuple[int, Mb1Header] | None:
    """The first valid multiboot1 header in the first 8 KiB at 4-byte alignment, as the loader sees it."""
    for offset in range(0, min(len(data), MB1_SEARCH_BYTES) - 11, MB1_ALIGN):
        if struct.unpack_from("<I", data, offset)[0] != MB1_MAGIC:
            continue
        try:
            header = parse_mb1(data, offset)
        except ValueError:
            continue
        size = MB1_HEADER_BYTES if header.flags & MB1_FLAG_ADDRESS_FIELDS else 12
        if offset + size <= MB1_SEARCH_BYTES:
            return offset, header
    return None


def find_mb2(data: bytes | bytearray) -> tuple[int, Mb2Header] | None:
    """The first valid multiboot2 header in the first 32 KiB at 8-byte alignment."""
    for offset in range(0, min(len(data), MB2_SEARCH_BYTES) - 15, MB2_ALIGN):
        if struct.unpack_from("<I", data, offset)[0] != MB2_MAGIC:
            continue
        try:
            header = parse_mb2(data, offset)
        except ValueError:
            continue
        if offset + header.header_length <= MB2_SEARCH_BYTES:
            return offset, header
    return None
