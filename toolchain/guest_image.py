"""What a partition's memory holds at (re)start: its image, boot structures and register state."""
from __future__ import annotations

import io
import itertools
import struct
from dataclasses import dataclass
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from boot.multiboot import (
    MB1_BOOTLOADER_MAGIC,
    MB1_FLAG_ADDRESS_FIELDS,
    MB1_FLAG_MEMORY_INFO,
    MB1_FLAG_PAGE_ALIGN_MODULES,
    find_mb1,
)
from toolchain.config import ConfigError, PartitionConfig, builtin_guests

MAX_CHUNKS = 8
PAGE = 0x1000

MODE_LONG64 = 64
MODE_PROT32 = 32
SEL_CODE = 0x08
SEL_DATA = 0x10
RFLAGS_RESERVED = 0x2  # bit 1 always reads as one

CR0_PE, CR0_MP, CR0_ET, CR0_NE = 1 << 0, 1 << 1, 1 << 4, 1 << 5
CR0_WP, CR0_PG = 1 << 16, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 9, 1 << 10
EFER_LME, EFER_LMA = 1 << 8, 1 << 10

# Flat descriptors: base 0, limit 4 GiB, present, ring 0.
GDT_CODE64 = 0x00AF9A000000FFFF  # L=1, D=0: 64-bit code
GDT_CODE32 = 0x00CF9A000000FFFF  # D=1: 32-bit code
GDT_DATA = 0x00CF92000000FFFF
GDT_LIMIT = 3 * 8 - 1

# Low guest pages the toolchain fills for a raw guest: its GDT, then the
# identity-map PML4, PDPT and one PD per GiB. All below 1 MiB, the usual place
# for a raw image, and the image is checked not to overlap them.
RAW_GDT = 0x1000
RAW_PML4 = 0x2000
RAW_PDPT = 0x3000
RAW_PD = 0x4000
PT_P, PT_RW, PT_PS = 1 << 0, 1 << 1, 1 << 7

# Multiboot 1 (the Multiboot Specification 0.6.96): a video mode is asked for
# by flag bit 2; this loader has no screen to give and ignores the request.
MB1_VIDEO_MODE = 1 << 2
MBI_MEM, MBI_CMDLINE, MBI_MODS, MBI_MMAP, MBI_LOADER_NAME = 1, 1 << 2, 1 << 3, 1 << 6, 1 << 9
MBI_SIZE = 116
MMAP_USABLE = 1
LOW_MEMORY_END = 0x9FC00  # the conventional top of usable low memory, below the EBDA
HIGH_MEMORY = 0x100000
# The multiboot boot-information area: GDT, info, memory map, module list, strings.
MB_AREA = 0x1000
MB_AREA_END = 0x8000
LOADER_NAME = b"taipan\0"


@dataclass
class BootState:
    """The guest's registers at (re)start; field names match struct pt_boot."""

    rip: int
    rsp: int
    cr0: int
    cr3: int
    cr4: int
    efer: int
    gdt_base: int
    mode: int
    rflags: int = RFLAGS_RESERVED
    rax: int = 0
    rbx: int = 0
    rsi: int = 0
    gdt_limit: int = GDT_LIMIT
    cs: int = SEL_CODE
    ds: int = SEL_DATA


@dataclass
class Chunk:
    gpa: int
    data: bytes

    @property
    def end(self) -> int:
        return self.gpa + len(self.data)


@dataclass
class GuestLoad:
    kind: str
    chunks: list[Chunk]
    boot: BootState
    tsc_khz_gpa: int = 0   # linux: where the hypervisor writes its TSC rate into the cmdline


def _fail(part: PartitionConfig, key: str, value: Any, rule: str) -> ConfigError:
    shown = f'"{value}"' if isinstance(value, str) else hex(value) if isinstance(value, int) else value
    return ConfigError([f"{part.key(key)} = {shown}: {rule}"])


def merge_chunks(pieces: list[Chunk], limit: int = MAX_CHUNKS) -> list[Chunk]:
    """Sort, join touching pieces, then close the smallest gaps (with zeros) until `limit` remain."""
    ordered = sorted((p for p in pieces if p.data), key=lambda p: p.gpa)
    for before, after in itertools.pairwise(ordered):
        if before.end > after.gpa:
            raise ValueError(f"guest pieces overlap at {after.gpa:#x}")
    merged: list[Chunk] = []
    for piece in ordered:
        if merged and merged[-1].end == piece.gpa:
            merged[-1] = Chunk(merged[-1].gpa, merged[-1].data + piece.data)
        else:
            merged.append(piece)
    while len(merged) > limit:
        gap, index = min((b.gpa - a.end, i) for i, (a, b) in enumerate(itertools.pairwise(merged)))
        a, b = merged[index], merged[index + 1]
        merged[index:index + 2] = [Chunk(a.gpa, a.data + bytes(gap) + b.data)]
    return merged


def _gdt(code: int) -> bytes:
    return struct.pack("<3Q", 0, code, GDT_DATA)


def identity_map(memory: int) -> list[Chunk]:
    """4-level tables at RAW_PML4 identity-mapping guest [0, memory) with 2 MiB pages."""
    pds = -(-memory // (1 << 30))
    pml4 = struct.pack("<Q", RAW_PDPT | PT_P | PT_RW).ljust(PAGE, b"\0")
    pdpt = b"".join(struct.pack("<Q", (RAW_PD + i * PAGE) | PT_P | PT_RW) for i in range(pds))
    pd = bytearray(pds * PAGE)
    for number in range(memory >> 21):
        struct.pack_into("<Q", pd, number * 8, (number << 21) | PT_P | PT_RW | PT_PS)
    return [Chunk(RAW_PML4, pml4), Chunk(RAW_PDPT, pdpt.ljust(PAGE, b"\0")), Chunk(RAW_PD, bytes(pd))]


def _check_inside(part: PartitionConfig, what: str, start: int, end: int) -> None:
    if start < 0 or end > part.memory:
        raise _fail(part, "image", part.image,
                    f"{what} [{start:#x}, {end:#x}) does not fit in {part.memory:#x} bytes of memory")


def load_raw(part: PartitionConfig, data: bytes, entry: int, stack: int | None) -> GuestLoad:
    """A flat binary entered in 64-bit mode at `entry`, with a GDT and identity-mapped memory."""
    tables = identity_map(part.memory)
    area_end = tables[-1].end
    _check_inside(part, "the image", entry, entry + len(data))
    if entry < area_end and entry + len(data) > RAW_GDT:
        raise _fail(part, "entry", entry, f"the image overlaps the toolchain's GDT and page "
                    f"tables at [{RAW_GDT:#x}, {area_end:#x}); load it at or above {area_end:#x}")
    cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    boot = BootState(rip=entry, rsp=stack if stack is not None else part.memory - 16,
                     cr0=cr0, cr3=RAW_PML4, cr4=CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
                     efer=EFER_LME | EFER_LMA, gdt_base=RAW_GDT, mode=MODE_LONG64)
    pieces = [Chunk(RAW_GDT, _gdt(GDT_CODE64)), *tables, Chunk(entry, data)]
    return GuestLoad("raw", merge_chunks(pieces), boot)


def kernel_pieces(part: PartitionConfig, data: bytes) -> tuple[list[Chunk], int, int]:
    """(pieces, entry, end of the kernel's memory including bss) as a multiboot loader loads them."""
    found = find_mb1(data)
    if found is None:
        raise _fail(part, "image", part.image, "no multiboot1 header in the first 8 KiB")
    offset, header = found
    unknown = header.flags & 0xFFFF & ~(MB1_FLAG_PAGE_ALIGN_MODULES | MB1_FLAG_MEMORY_INFO
                                         | MB1_VIDEO_MODE)
    if unknown:
        raise _fail(part, "image", part.image,
                    f"multiboot header requires features {unknown:#x} this loader lacks")
    if header.flags & MB1_FLAG_ADDRESS_FIELDS:
        # The header's address fields say where the file's bytes go, ELF or not.
        start = offset - (header.header_addr - header.load_addr)
        length = (header.load_end_addr - header.load_addr if header.load_end_addr
                  else len(data) - start)
        if start < 0 or length < 0 or start + length > len(data):
            raise _fail(part, "image", part.image, "multiboot a.out-kludge addresses lie "
                        "outside the file")
        end = max(header.load_addr + length, header.bss_end_addr)
        return [Chunk(header.load_addr, data[start:start + length])], header.entry_addr, end
    # Multiboot1 loads ELF32 only; an ELF64 kernel must say where to load itself.
    if data[:4] == b"\x7fELF" and data[4:5] != b"\x01":
        raise _fail(part, "image", part.image, "an ELF64 multiboot kernel needs the a.out-kludge "
                    "address fields (flag bit 16) in its multiboot header")
    try:
        elf = ELFFile(io.BytesIO(data))
    except ELFError as error:
        raise _fail(part, "image", part.image, f"not an ELF file: {error}") from error
    pieces, end = [], 0
    for segment in elf.iter_segments():
        if segment["p_type"] != "PT_LOAD" or not segment["p_memsz"]:
            continue
        pieces.append(Chunk(segment["p_paddr"], segment.data()))
        end = max(end, segment["p_paddr"] + segment["p_memsz"])
    return pieces, elf.header["e_entry"], end


class _Area:
    """The multiboot boot-information area, filled front to back."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.data = bytearray()

    def put(self, blob: bytes, align: int = 8) -> int:
        self.data += bytes(-len(self.data) % align)
        address = self.base + len(self.data)
        self.data += blob
        return address


def load_multiboot(part: PartitionConfig, data: bytes) -> GuestLoad:
    """Load as a multiboot1 loader would: kernel, page-aligned modules, info, mmap, cmdline."""
    pieces, entry, kernel_end = kernel_pieces(part, data)
    for piece in pieces:
        _check_inside(part, "a kernel segment", piece.gpa, piece.end)
    _check_inside(part, "the kernel", 0, kernel_end)

    area = _Area(MB_AREA)
    gdt = area.put(_gdt(GDT_CODE32))
    info = area.put(bytes(MBI_SIZE))
    cmdline = area.put(part.cmdline.encode() + b"\0", 1)
    loader_name = area.put(LOADER_NAME, 1)

    module_entries = b""
    module_pieces = []
    address = -(-kernel_end // PAGE) * PAGE
    for path in part.modules:
        content = path.read_bytes()
        string = area.put(path.name.encode() + b"\0", 1)
        _check_inside(part, f"module {path.name}", address, address + len(content))
        module_pieces.append(Chunk(address, content))
        module_entries += struct.pack("<4I", address, address + len(content), string, 0)
        address = -(-(address + len(content)) // PAGE) * PAGE
    mods = area.put(module_entries) if module_entries else 0

    # Each entry's size field counts the bytes after itself (20).
    mmap_blob = b"".join(struct.pack("<IQQI", 20, base, length, MMAP_USABLE)
                         for base, length in ((0, LOW_MEMORY_END),
                                              (HIGH_MEMORY, part.memory - HIGH_MEMORY)))
    mmap = area.put(mmap_blob)

    struct.pack_into("<7I", area.data, info - MB_AREA, MBI_MEM | MBI_CMDLINE | MBI_MODS | MBI_MMAP
                     | MBI_LOADER_NAME, LOW_MEMORY_END // 1024,
                     (part.memory - HIGH_MEMORY) // 1024, 0, cmdline, len(part.modules), mods)
    struct.pack_into("<2I", area.data, info - MB_AREA + 44, len(mmap_blob), mmap)
    struct.pack_into("<I", area.data, info - MB_AREA + 64, loader_name)
    if MB_AREA + len(area.data) > MB_AREA_END:
        raise _fail(part, "cmdline", part.cmdline, "the boot information outgrew "
                    f"[{MB_AREA:#x}, {MB_AREA_END:#x}); shorten the command line or module names")
    for piece in pieces:
        if piece.gpa < MB_AREA + len(area.data) and piece.end > MB_AREA:
            raise _fail(part, "image", part.image, f"a kernel segment at {piece.gpa:#x} overlaps "
                        f"the boot information at [{MB_AREA:#x}, {MB_AREA + len(area.data):#x})")

    boot = BootState(rip=entry, rsp=0, cr0=CR0_PE | CR0_ET | CR0_NE, cr3=0, cr4=0, efer=0,
                     gdt_base=gdt, mode=MODE_PROT32, rax=MB1_BOOTLOADER_MAGIC, rbx=info)
    try:
        chunks = merge_chunks([Chunk(MB_AREA, bytes(area.data)), *pieces, *module_pieces])
    except ValueError as error:
        raise _fail(part, "image", part.image, str(error)) from error
    return GuestLoad("multiboot", chunks, boot)


def load(part: PartitionConfig) -> GuestLoad:
    """Build or read the partition's image and lay out its memory; ConfigError names the key."""
    stack = None
    if part.builtin is not None:
        builder = builtin_guests()[part.builtin]
        try:
            image = builder(name=part.name, memory=part.memory, **part.params)
        except (TypeError, ValueError) as error:
            # A builder refuses unknown parameters (TypeError) and bad values or too little
            # memory (ValueError); either is the config's fault, so name its key.
            raise _fail(part, "params", str(part.params), f"guest:{part.builtin} refused to "
                        f"build: {error}") from error
        kind, data, entry = image.kind, image.data, getattr(image, "entry", part.entry)
        stack = getattr(image, "stack", None)
        if part.kind is not None and part.kind != kind:
            raise _fail(part, "kind", part.kind, f"guest:{part.builtin} is a {kind} guest")
    else:
        assert part.image_path is not None and part.kind is not None
        kind, data, entry = part.kind, part.image_path.read_bytes(), part.entry
    if kind == "raw":
        loaded = load_raw(part, data, entry, stack)
    else:
        loaded = load_multiboot(part, data)
    if part.inject_entry_failure:
        # Test hook: long mode (EFER.LME with CR0.PG) without CR4.PAE is a guest
        # state that both VT-x's VM-entry checks and AMD's VMRUN consistency
        # checks refuse in hardware, so the failed-entry path gets exercised.
        loaded.boot.cr0 |= CR0_PG | CR0_PE
        loaded.boot.efer |= EFER_LME
        loaded.boot.cr4 &= ~CR4_PAE
    return loaded
