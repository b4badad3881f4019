"""C structure offsets for generated assembly, read from the object compiled from asm_offsets.c."""

from __future__ import annotations

import subprocess
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

PREFIX = "asm_offset_"
_VALUE_BYTES = 8


class AsmOffsetsError(Exception):
    """The offsets object could not be built or does not hold plain constant offsets."""


def read_offsets(object_path: str | Path) -> dict[str, int]:
    """Map each `asm_offset_X` symbol of an ELF relocatable to X -> its 8-byte little-endian value."""
    with open(object_path, "rb") as stream:
        elf = ELFFile(stream)
        # A relocated value would read as 0 here and be silently wrong in the
        # stub; the offsets must be link-time constants.
        for section in elf.iter_sections():
            if isinstance(section, RelocationSection):
                target = elf.get_section(section["sh_info"])
                if target.name.startswith(".rodata.asm_offsets"):
                    raise AsmOffsetsError(f"{object_path}: {target.name} has relocations")
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise AsmOffsetsError(f"{object_path}: no symbol table")
        offsets: dict[str, int] = {}
        for symbol in symtab.iter_symbols():
            if not symbol.name.startswith(PREFIX):
                continue
            name = symbol.name[len(PREFIX):]
            shndx = symbol["st_shndx"]
            if not isinstance(shndx, int):
                raise AsmOffsetsError(f"{object_path}: {symbol.name} is not defined ({shndx})")
            if symbol["st_size"] != _VALUE_BYTES:
                raise AsmOffsetsError(
                    f"{object_path}: {symbol.name} is {symbol['st_size']} bytes, not 8")
            section = elf.get_section(shndx)
            start = symbol["st_value"]
            if section["sh_type"] == "SHT_NOBITS":
                offsets[name] = 0
                continue
            raw = section.data()[start:start + _VALUE_BYTES]
            if len(raw) != _VALUE_BYTES:
                raise AsmOffsetsError(f"{object_path}: {symbol.name} lies outside {section.name}")
            offsets[name] = int.from_bytes(raw, "little")
    if not offsets:
        raise AsmOffsetsError(f"{object_path}: no {PREFIX}* symbols")
    return offsets


def compile_and_read(cc: str, cflags: list[str], source: str | Path,
                     out_obj: str | Path) -> dict[str, int]:
    """Compile `source` with `cc -c` into `out_obj` and read its offsets."""
    Path(out_obj).parent.mkdir(parents=True, exist_ok=True)
    command = [cc, *cflags, "-c", str(source), "-o", str(out_obj)]
    proc = subprocess.run(command, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AsmOffsetsError(f"{' '.join(command)} failed:\n{proc.stderr.strip()}")
    return read_offsets(out_obj)
