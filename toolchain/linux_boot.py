"""The Linux boot protocols as a loader: bzImage (zero page, 64-bit entry) and PVH ELF (hvm_start_info)."""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from toolchain import acpi_tables
from toolchain.config import PartitionConfig
from toolchain.guest_image import (
    CR0_ET,
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    GDT_CODE32,
    GDT_CODE64,
    GDT_DATA,
    HIGH_MEMORY,
    LOW_MEMORY_END,
    MODE_LONG64,
    MODE_PROT32,
    PAGE,
    RAW_GDT,
    BootState,
    Chunk,
    GuestLoad,
    identity_map,
    merge_chunks,
)
from toolchain.guest_image import _fail as config_error

# The x86 boot protocol (Documentation/arch/x86/boot.rst). Offsets in the
# setup header and in struct boot_params, the "zero page".
HDRS_MAGIC = b"HdrS"
BOOT_FLAG = 0xAA55
SETUP_SECTS, BOOT_FLAG_AT, HEADER_AT, VERSION_AT = 0x1F1, 0x1FE, 0x202, 0x206
TYPE_OF_LOADER, LOADFLAGS = 0x210, 0x211
RAMDISK_IMAGE, RAMDISK_SIZE, CMD_LINE_PTR, INITRD_ADDR_MAX = 0x218, 0x21C, 0x228, 0x22C
KERNEL_ALIGNMENT, RELOCATABLE, XLOADFLAGS, CMDLINE_SIZE = 0x230, 0x234, 0x236, 0x238
PREF_ADDRESS, INIT_SIZE = 0x258, 0x260
ACPI_RSDP_ADDR, EXT_RAMDISK_IMAGE, EXT_RAMDISK_SIZE, EXT_CMD_LINE_PTR = 0x070, 0x0C0, 0x0C4, 0x0C8
E820_ENTRIES, E820_TABLE, E820_MAX = 0x1E8, 0x2D0, 128
LOADED_HIGH = 1 << 0
XLF_KERNEL_64 = 1 << 0
MIN_VERSION_64 = 0x20C     # xloadflags (and so XLF_KERNEL_64) came with protocol 2.12
LOADER_UNDEFINED = 0xFF    # "a boot loader with no assigned ID"
ENTRY_64_OFFSET = 0x200    # the 64-bit entry, from the start of the protected-mode code

# Where the toolchain puts the loader's own structures, all below 1 MiB:
# the GDT and identity tables from guest_image, then the zero page (or the PVH
# start info with its memory map) and the command line.
ZERO_PAGE = 0x10000
CMDLINE = 0x11000
CMDLINE_LIMIT = 0x1000
BOOT_STACK = 0x20000      # the PVH entry has none of its own at first; bzImage sets up its own
# The boot protocol's selectors: __BOOT_CS and __BOOT_DS in a GDT the kernel replaces.
BOOT_CS, BOOT_DS = 0x10, 0x18

# Linux on AMD has no CPUID leaf it trusts for the TSC's rate, and calibrating
# against a PIT read through VM exits fails its own error bound. So, unless
# the command line sets it, the toolchain ends the command line with
# "tsc_early_khz=" and room for the digits, and the hypervisor writes its own
# measured rate there each time it loads the partition (pt_partition.tsc_khz_gpa).
TSC_PARAM = "tsc_early_khz="
TSC_DIGITS = 10

# e820 / PVH memory types.
E820_RAM, E820_RESERVED, E820_ACPI = 1, 2, 3

# PVH (Xen's hvm_start_info, xen/include/public/arch-x86/hvm/start_info.h).
XEN_ELFNOTE_PHYS32_ENTRY = 18
PVH_MAGIC = 0x336EC578
PVH_VERSION = 1
START_INFO_SIZE = 56
MEMMAP_ENTRY = struct.Struct("<QQII")
MODLIST_ENTRY = struct.Struct("<QQQQ")


class LinuxImageError(Exception):
    """A kernel the loader cannot boot, or a partition too small for it; the text says why."""


@dataclass
class LinuxLoad:
    protocol: str              # "bzImage" or "pvh"
    pieces: list[Chunk]
    boot: BootState
    kernel_base: int
    kernel_end: int            # where its memory ends (init_size, or the ELF's last segment)
    initrd_base: int
    version: str               # e.g. "2.15" for a bzImage, "pvh" otherwise
    tsc_khz_gpa: int = 0       # where the hypervisor writes the TSC's kHz, 0: the cmdline sets it


def mib(size: int) -> str:
    return f"{size >> 20}M" if size % (1 << 20) == 0 else f"{size / (1 << 20):.1f}M"


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def e820_map(memory: int) -> list[tuple[int, int, int]]:
    """(base, length, type): low RAM, the BIOS area with the ACPI tables, RAM from 1 MiB."""
    return [(0, LOW_MEMORY_END, E820_RAM),
            (LOW_MEMORY_END, acpi_tables.TABLES_BASE - LOW_MEMORY_END, E820_RESERVED),
            (acpi_tables.TABLES_BASE, acpi_tables.TABLES_END - acpi_tables.TABLES_BASE, E820_ACPI),
            (HIGH_MEMORY, memory - HIGH_MEMORY, E820_RAM)]


def _gdt() -> bytes:
    # Null, null, then __BOOT_CS (64-bit code) and __BOOT_DS: the protocol's selectors.
    return struct.pack("<4Q", 0, 0, GDT_CODE64, GDT_DATA)


def _initrd_place(what: str, memory: int, kernel_end: int, initrd: bytes, top: int) -> int:
    """The initrd's address: page aligned, as high as it may go, above the kernel."""
    if not initrd:
        return 0
    base = (min(memory, top + 1) - len(initrd)) // PAGE * PAGE
    if base < kernel_end:
        raise LinuxImageError(
            f"partition memory {mib(memory)} is less than the kernel's {what} plus the "
            f"initrd {mib(_align_up(len(initrd), 1 << 20))}")
    return base


def _cmdline_bytes(cmdline: str, limit: int) -> tuple[bytes, int]:
    """The command line as loaded, and where the TSC rate's digits go (0: none)."""
    data, at = cmdline.encode(), 0
    if TSC_PARAM not in cmdline:
        data += (b" " if data else b"") + TSC_PARAM.encode()
        at = CMDLINE + len(data)
        data += bytes(TSC_DIGITS)
    data += b"\0"
    if len(data) > min(limit, CMDLINE_LIMIT):
        raise LinuxImageError(f"the command line is {len(data) - 1} bytes with the "
                              f"{TSC_PARAM} the hypervisor fills in; this kernel takes at most "
                              f"{min(limit, CMDLINE_LIMIT) - 1}")
    return data, at


def load_bzimage(data: bytes, initrd: bytes, cmdline: str, memory: int, vcpus: int) -> LinuxLoad:
    """Load a bzImage for its 64-bit entry: zero page, e820, cmdline, initrd, identity tables."""
    if len(data) < 0x270 or data[HEADER_AT:HEADER_AT + 4] != HDRS_MAGIC:
        raise LinuxImageError("not a bzImage: no \"HdrS\" setup header at 0x202")
    version = struct.unpack_from("<H", data, VERSION_AT)[0]
    shown = f"{version >> 8}.{version & 0xFF:02d}"
    if version < MIN_VERSION_64 or not struct.unpack_from("<H", data, XLOADFLAGS)[0] & XLF_KERNEL_64:
        raise LinuxImageError(f"bzImage protocol {shown} has no 64-bit entry (XLF_KERNEL_64 "
                              "needs protocol 2.12 or later with that flag set)")
    if not data[LOADFLAGS] & LOADED_HIGH:
        raise LinuxImageError(f"bzImage protocol {shown}: a zImage (loaded low), not a bzImage")
    setup_sects = data[SETUP_SECTS] or 4
    code = data[(setup_sects + 1) * 512:]
    align = struct.unpack_from("<I", data, KERNEL_ALIGNMENT)[0]
    if align == 0 or align & (align - 1):
        raise LinuxImageError(f"bzImage kernel_alignment {align:#x} is not a power of two")
    pref = struct.unpack_from("<Q", data, PREF_ADDRESS)[0]
    relocatable = data[RELOCATABLE]
    base = _align_up(pref, align) if relocatable else pref
    if pref % align and not relocatable:
        raise LinuxImageError(f"bzImage pref_address {pref:#x} is not {align:#x} aligned and the "
                              "kernel is not relocatable")
    init_size = struct.unpack_from("<I", data, INIT_SIZE)[0]
    kernel_end = base + max(init_size, len(code))
    what = f"init_size {mib(init_size)} (loaded at {mib(base)})"
    if kernel_end > memory:
        raise LinuxImageError(f"partition memory {mib(memory)} is less than the kernel's "
                              f"{what}" + (" plus the initrd" if initrd else ""))
    initrd_max = struct.unpack_from("<I", data, INITRD_ADDR_MAX)[0] or 0x37FFFFFF
    initrd_base = _initrd_place(what, memory, kernel_end, initrd, initrd_max)
    cmdline_size = struct.unpack_from("<I", data, CMDLINE_SIZE)[0] + 1 if version >= 0x206 else 256
    command, tsc_at = _cmdline_bytes(cmdline, cmdline_size)

    zero = bytearray(PAGE)
    header_end = HEADER_AT + data[0x201]   # the header's length: the jump at 0x200 skips it
    zero[SETUP_SECTS:header_end] = data[SETUP_SECTS:header_end]
    zero[TYPE_OF_LOADER] = LOADER_UNDEFINED
    struct.pack_into("<III", zero, RAMDISK_IMAGE, initrd_base & 0xFFFFFFFF, len(initrd), 0)
    struct.pack_into("<I", zero, CMD_LINE_PTR, CMDLINE)
    struct.pack_into("<III", zero, EXT_RAMDISK_IMAGE, initrd_base >> 32, 0, 0)
    tables = acpi_tables.build(vcpus)
    struct.pack_into("<Q", zero, ACPI_RSDP_ADDR, tables.rsdp)
    entries = e820_map(memory)
    zero[E820_ENTRIES] = len(entries)
    for number, entry in enumerate(entries):
        struct.pack_into("<QQI", zero, E820_TABLE + 20 * number, *entry)

    cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    boot = BootState(rip=base + ENTRY_64_OFFSET, rsp=0, cr0=cr0, cr3=identity_map(memory)[0].gpa,
                     cr4=CR4_PAE, efer=EFER_LME | EFER_LMA, gdt_base=RAW_GDT,
                     mode=MODE_LONG64, rsi=ZERO_PAGE, gdt_limit=4 * 8 - 1, cs=BOOT_CS, ds=BOOT_DS)
    pieces = [Chunk(RAW_GDT, _gdt()), *identity_map(memory), Chunk(ZERO_PAGE, bytes(zero)),
              Chunk(CMDLINE, command), Chunk(tables.base, tables.data), Chunk(base, code)]
    if initrd:
        pieces.append(Chunk(initrd_base, initrd))
    return LinuxLoad("bzImage", pieces, boot, base, kernel_end, initrd_base, shown, tsc_at)


def pvh_entry(elf: ELFFile) -> int | None:
    """XEN_ELFNOTE_PHYS32_ENTRY from the kernel's notes, or None when it has no PVH entry."""
    for segment in elf.iter_segments():
        if segment["p_type"] != "PT_NOTE":
            continue
        for note in segment.iter_notes():
            if note["n_name"] == "Xen" and note["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                desc = note["n_desc"]
                raw = desc if isinstance(desc, bytes) else bytes.fromhex(desc)
                return struct.unpack_from("<I", raw.ljust(4, b"\0"))[0]
    return None


def load_pvh(data: bytes, initrd: bytes, cmdline: str, memory: int, vcpus: int) -> LinuxLoad:
    """Load an ELF vmlinux at its physical addresses and enter its PVH entry, EBX = start info."""
    try:
        elf = ELFFile(io.BytesIO(data))
        entry = pvh_entry(elf)
    except ELFError as error:
        raise LinuxImageError(f"not an ELF vmlinux: {error}") from error
    if entry is None:
        raise LinuxImageError("an ELF vmlinux without a PVH entry (no XEN_ELFNOTE_PHYS32_ENTRY "
                              "note): give the bzImage instead")
    pieces, start, end = [], None, 0
    for segment in elf.iter_segments():
        if segment["p_type"] != "PT_LOAD" or not segment["p_memsz"]:
            continue
        pieces.append(Chunk(segment["p_paddr"], segment.data()))
        start = segment["p_paddr"] if start is None else min(start, segment["p_paddr"])
        end = max(end, segment["p_paddr"] + segment["p_memsz"])
    if start is None:
        raise LinuxImageError("an ELF vmlinux with nothing to load")
    what = f"image end {mib(_align_up(end, 1 << 20))}"
    if end > memory:
        raise LinuxImageError(f"partition memory {mib(memory)} is less than the kernel's {what}"
                              + (" plus the initrd" if initrd else ""))
    initrd_base = _initrd_place(what, memory, _align_up(end, PAGE), initrd, memory - 1)
    command, tsc_at = _cmdline_bytes(cmdline, CMDLINE_LIMIT)
    tables = acpi_tables.build(vcpus)

    info = bytearray(PAGE)
    entries = e820_map(memory)
    memmap = START_INFO_SIZE + MODLIST_ENTRY.size
    modules = 1 if initrd else 0
    struct.pack_into("<IIIIQQQQII", info, 0, PVH_MAGIC, PVH_VERSION, 0, modules,
                     ZERO_PAGE + START_INFO_SIZE if initrd else 0, CMDLINE, tables.rsdp,
                     ZERO_PAGE + memmap, len(entries), 0)
    if initrd:
        MODLIST_ENTRY.pack_into(info, START_INFO_SIZE, initrd_base, len(initrd), 0, 0)
    for number, (base, length, kind) in enumerate(entries):
        MEMMAP_ENTRY.pack_into(info, memmap + number * MEMMAP_ENTRY.size, base, length, kind, 0)

    boot = BootState(rip=entry, rsp=BOOT_STACK, cr0=CR0_PE | CR0_ET | CR0_NE, cr3=0, cr4=0, efer=0,
                     gdt_base=RAW_GDT, mode=MODE_PROT32, rbx=ZERO_PAGE)
    gdt = struct.pack("<3Q", 0, GDT_CODE32, GDT_DATA)
    pieces = [Chunk(RAW_GDT, gdt), Chunk(ZERO_PAGE, bytes(info)), Chunk(CMDLINE, command),
              Chunk(tables.base, tables.data), *pieces]
    if initrd:
        pieces.append(Chunk(initrd_base, initrd))
    return LinuxLoad("pvh", pieces, boot, start, end, initrd_base, "pvh", tsc_at)


def load(kernel: bytes, initrd: bytes, cmdline: str, memory: int, vcpus: int = 1) -> LinuxLoad:
    """A bzImage or a PVH ELF vmlinux, by its first bytes."""
    if kernel[:4] == b"\x7fELF":
        return load_pvh(kernel, initrd, cmdline, memory, vcpus)
    return load_bzimage(kernel, initrd, cmdline, memory, vcpus)


def load_files(kernel: Path, initrd: Path | None, cmdline: str, memory: int, vcpus: int = 1
               ) -> LinuxLoad:
    return load(kernel.read_bytes(), initrd.read_bytes() if initrd else b"", cmdline, memory, vcpus)


def load_partition(part: PartitionConfig) -> GuestLoad:
    """A linux partition's kernel and initrd laid out in its memory; ConfigError names the key."""
    assert part.kernel_path is not None
    try:
        loaded = load_files(part.kernel_path, part.initrd_path, part.cmdline, part.memory, part.vcpus)
        chunks = merge_chunks(loaded.pieces)
    except (LinuxImageError, ValueError) as error:
        raise config_error(part, "kernel", part.kernel, str(error)) from error
    return GuestLoad("linux", chunks, loaded.boot, loaded.tsc_khz_gpa)
