"""Checks of the linked image (ELF, segments, multiboot headers, symbols, budget) and its size report."""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS, SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from boot import multiboot as mb
from toolchain import layout

KINDS = ("text", "rodata", "data", "bss")


class VerifyError(Exception):
    """The image breaks one or more rules; `problems` lists each, the message joins them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Report:
    path: str
    file_bytes: int  # size of the ELF file
    loaded_bytes: int  # file-backed bytes a loader copies (LOAD_BASE .. load_end)
    memory_bytes: int  # LOAD_BASE .. end of bss
    entry: int
    mb1_offset: int
    mb2_offset: int
    sections: dict[str, int] = field(default_factory=dict)  # "boot stub" and KINDS, from the image
    parts: dict[str, dict[str, int]] = field(default_factory=dict)  # part -> KINDS, from objects


@dataclass(frozen=True)
class _Segment:
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    def name(self) -> str:
        perms = "".join(c if self.flags & bit else "-" for c, bit in
                        (("R", P_FLAGS.PF_R), ("W", P_FLAGS.PF_W), ("X", P_FLAGS.PF_X)))
        return f"segment {self.vaddr:#x}..{self.end:#x} ({perms})"


def _kind(flags: int, nobits: bool) -> str | None:
    if not flags & SH_FLAGS.SHF_ALLOC:
        return None
    if flags & SH_FLAGS.SHF_EXECINSTR:
        return "text"
    if nobits:
        return "bss"
    return "data" if flags & SH_FLAGS.SHF_WRITE else "rodata"


def _section_sizes(elf: ELFFile, *, below: int | None = None, at_or_above: int | None = None,
                   use_addresses: bool = True) -> dict[str, int]:
    sizes = dict.fromkeys(KINDS, 0)
    for section in elf.iter_sections():
        kind = _kind(section["sh_flags"], section["sh_type"] == "SHT_NOBITS")
        if kind is None:
            continue
        addr = section["sh_addr"]
        if use_addresses and ((below is not None and addr >= below)
                              or (at_or_above is not None and addr < at_or_above)):
            continue
        sizes[kind] += section["sh_size"]
    return sizes


def object_sizes(objects: Sequence[str]) -> dict[str, int]:
    """Sum text/rodata/data/bss over relocatable objects' allocated sections."""
    total = dict.fromkeys(KINDS, 0)
    for name in objects:
        with open(name, "rb") as f:
            for kind, size in _section_sizes(ELFFile(f), use_addresses=False).items():
                total[kind] += size
    return total


def _check_segments(segments: list[_Segment], problems: list[str]) -> None:
    if not segments:
        problems.append("no PT_LOAD segments")
        return
    if segments[0].vaddr != layout.LOAD_BASE:
        problems.append(f"first segment starts at {segments[0].vaddr:#x}, "
                        f"not LOAD_BASE {layout.LOAD_BASE:#x}")
    # A flat copy of the file to LOAD_BASE (the multiboot1 a.out kludge) is
    # right only if every segment sits at the same file-to-memory distance.
    delta = segments[0].offset - segments[0].vaddr
    for i, seg in enumerate(segments):
        if seg.vaddr != seg.paddr:
            problems.append(f"{seg.name()}: p_vaddr {seg.vaddr:#x} != p_paddr {seg.paddr:#x}")
        if seg.offset - seg.vaddr != delta:
            problems.append(f"{seg.name()}: p_offset - p_vaddr differs from the first segment's"
                            " (a flat load of the file would misplace it)")
        if seg.vaddr < layout.LOAD_BASE:
            problems.append(f"{seg.name()} lies below LOAD_BASE {layout.LOAD_BASE:#x}")
        if seg.flags & P_FLAGS.PF_W and seg.flags & P_FLAGS.PF_X:
            problems.append(f"{seg.name()} is both writable and executable (W+X)")
        if i + 1 < len(segments):
            after = segments[i + 1]
            if after.vaddr < seg.end:
                problems.append(f"{seg.name()} overlaps {after.name()}")
            elif seg.memsz > seg.filesz:
                # A flat load fills this zero-fill tail with whatever file
                # bytes lie there instead of zeros.
                problems.append(f"{seg.name()} has zero-fill (bss) but is not the last segment")


def _file_offset(segments: list[_Segment], addr: int) -> int | None:
    for seg in segments:
        if seg.vaddr <= addr < seg.vaddr + seg.filesz:
            return seg.offset + addr - seg.vaddr
    return None


def _diagnose_missing(data: bytes, magic: int, align: int, limit: int, which: str) -> str:
    """Why find_mb1/find_mb2 found nothing: a bad header inside the window, one past it, or none."""
    needle = struct.pack("<I", magic)
    at = data.find(needle)
    while at != -1 and at % align:
        at = data.find(needle, at + 1)
    if at == -1:
        return f"no {which} header (magic {magic:#x}) in the file"
    if at >= limit:
        return f"{which} header at file offset {at:#x} is beyond the first {limit} bytes"
    try:
        (mb.parse_mb1 if which == "multiboot1" else mb.parse_mb2)(data, at)
    except ValueError as error:
        return f"invalid {which} header: {error}"
    return f"{which} header at file offset {at:#x} does not end within the first {limit} bytes"


def _check_mb1(data: bytes, elf: ELFFile, segments: list[_Segment], problems: list[str]) -> int:
    found = mb.find_mb1(data)
    if found is None:
        problems.append(_diagnose_missing(data, mb.MB1_MAGIC, mb.MB1_ALIGN,
                                          mb.MB1_SEARCH_BYTES, "multiboot1"))
        return -1
    offset, hdr = found
    if not hdr.flags & mb.MB1_FLAG_ADDRESS_FIELDS:
        problems.append("multiboot1 header lacks the address fields (flags bit 16), "
                        "which QEMU needs to load an ELF64")
        return offset
    assert hdr.header_addr is not None and hdr.load_addr is not None
    load_end = max(s.vaddr + s.filesz for s in segments) if segments else 0
    bss_end = max(s.end for s in segments) if segments else 0
    if hdr.load_addr != layout.LOAD_BASE:
        problems.append(f"multiboot1 load_addr {hdr.load_addr:#x} != LOAD_BASE {layout.LOAD_BASE:#x}")
    load_offset = _file_offset(segments, hdr.load_addr)
    if load_offset is None or hdr.header_addr - hdr.load_addr != offset - load_offset:
        problems.append(f"multiboot1 header_addr {hdr.header_addr:#x} does not match the header's"
                        f" file offset {offset:#x} relative to load_addr {hdr.load_addr:#x}")
    if hdr.load_end_addr != load_end:
        problems.append(f"multiboot1 load_end_addr {hdr.load_end_addr:#x} != end of file-backed"
                        f" segments {load_end:#x}")
    if hdr.bss_end_addr != bss_end:
        problems.append(f"multiboot1 bss_end_addr {hdr.bss_end_addr:#x} != end of the last"
                        f" segment in memory {bss_end:#x}")
    if hdr.entry_addr != elf["e_entry"]:
        problems.append(f"multiboot1 entry_addr {hdr.entry_addr:#x} != ELF entry {elf['e_entry']:#x}")
    return offset


def _check_mb2(data: bytes, entry: int, problems: list[str]) -> int:
    found = mb.find_mb2(data)
    if found is None:
        problems.append(_diagnose_missing(data, mb.MB2_MAGIC, mb.MB2_ALIGN,
                                          mb.MB2_SEARCH_BYTES, "multiboot2"))
        return -1
    offset, hdr = found
    tag = hdr.tag(mb.MB2_TAG_ENTRY_ADDRESS)
    if tag is not None:
        tag_entry = struct.unpack_from("<I", tag.payload)[0]
        if tag_entry != entry:
            problems.append(f"multiboot2 entry tag {tag_entry:#x} != ELF entry {entry:#x}")
    return offset


def _undefined_symbols(elf: ELFFile) -> list[str]:
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        return []
    return [sym.name or f"#{i}" for i, sym in enumerate(symtab.iter_symbols())
            if i > 0 and sym["st_shndx"] == "SHN_UNDEF"]


def verify(path: Path | str, *, parts: dict[str, list[str]] | None = None,
           budget: int = layout.IMAGE_BUDGET_BYTES) -> Report:
    """Check the image at `path`; return its size report or raise VerifyError naming each problem."""
    data = Path(path).read_bytes()
    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
        except ELFError as error:
            raise VerifyError([f"not an ELF file: {error}"]) from error
        if elf.elfclass != 64 or elf["e_machine"] != "EM_X86_64":
            raise VerifyError([(f"not an ELF64 x86-64 image (class {elf.elfclass},"
                                f" machine {elf['e_machine']})")])
        problems: list[str] = []
        if elf["e_type"] != "ET_EXEC":
            problems.append(f"ELF type is {elf['e_type']}, not an executable (ET_EXEC)")
        segments = sorted((_Segment(s["p_offset"], s["p_vaddr"], s["p_paddr"], s["p_filesz"],
                                    s["p_memsz"], s["p_flags"])
                           for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"),
                          key=lambda s: s.vaddr)
        entry = elf["e_entry"]
        _check_segments(segments, problems)
        if not layout.BOOT_TEXT <= entry < layout.BOOT_TEXT + layout.BOOT_TEXT_MAX:
            problems.append(f"entry point {entry:#x} is outside the boot stub "
                            f"[{layout.BOOT_TEXT:#x}, {layout.BOOT_TEXT + layout.BOOT_TEXT_MAX:#x})")
        mb1_offset = _check_mb1(data, elf, segments, problems)
        mb2_offset = _check_mb2(data, entry, problems)
        undefined = _undefined_symbols(elf)
        if undefined:
            problems.append(f"undefined symbols: {', '.join(sorted(undefined)[:10])}")
        load_end = max((s.vaddr + s.filesz for s in segments), default=layout.LOAD_BASE)
        mem_end = max((s.end for s in segments), default=layout.LOAD_BASE)
        if mem_end - layout.LOAD_BASE > budget:
            problems.append(f"image is over budget: {mem_end - layout.LOAD_BASE} bytes in memory"
                            f" > IMAGE_BUDGET_BYTES {budget}")
        if problems:
            raise VerifyError(problems)
        sections = {"boot stub": sum(_section_sizes(elf, below=layout.KERNEL_BASE).values()),
                    **_section_sizes(elf, at_or_above=layout.KERNEL_BASE)}
    return Report(str(path), len(data), load_end - layout.LOAD_BASE,
                  mem_end - layout.LOAD_BASE, entry, mb1_offset, mb2_offset, sections,
                  {name: object_sizes(objs) for name, objs in (parts or {}).items()})


def format_report(report: Report) -> str:
    """A readable table of the image's sizes."""
    def kib(n: int) -> str:
        return f"{n:>10,} B {n / 1024:>8.1f} KiB"

    lines = [(f"{report.path}: OK (entry {report.entry:#x}, multiboot1 at file offset"
              f" {report.mb1_offset:#x}, multiboot2 at {report.mb2_offset:#x})"),
             f"  {'file':<12}{kib(report.file_bytes)}",
             f"  {'loaded':<12}{kib(report.loaded_bytes)}",
             f"  {'in memory':<12}{kib(report.memory_bytes)}",
             "  image sections:"]
    lines += [f"    {name:<10}{kib(size)}" for name, size in report.sections.items()]
    if report.parts:
        lines.append(f"  {'part':<14}" + "".join(f"{k:>10}" for k in (*KINDS, "total")))
        for name, sizes in report.parts.items():
            lines.append(f"  {name:<14}" + "".join(f"{sizes[k]:>10,}" for k in KINDS)
                         + f"{sum(sizes.values()):>10,}")
    return "\n".join(lines)


def _part(text: str) -> tuple[str, list[str]]:
    name, _, objects = text.partition("=")
    return name, [o for o in objects.split(",") if o]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m toolchain.verify IMAGE [--part NAME=a.o,b.o ...]`: 0 if the image passes."""
    parser = argparse.ArgumentParser(prog="python -m toolchain.verify", description=__doc__)
    parser.add_argument("image", type=Path)
    parser.add_argument("--part", action="append", type=_part, default=[],
                        help="NAME=OBJ,OBJ...: report this part's size from its object files")
    args = parser.parse_args(argv)
    try:
        report = verify(args.image, parts=dict(args.part))
    except (VerifyError, OSError) as error:
        print(f"verify: {args.image}: {error}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
