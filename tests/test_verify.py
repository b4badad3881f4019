"""The image verifier: a small well-formed image passes, and each broken rule is refused by name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from toolchain import layout
from toolchain.verify import VerifyError, format_report, main, verify

# A miniature Taipan image: a 32-bit stub with both multiboot headers, then
# 64-bit text, rodata, data and bss, each in a segment of its own.
GOOD = {
    "mb1_before": "",
    "mb1_checksum": "-(0x1BADB002 + 0x00010000)",
    "mb1_load_end": "_load_end",
    "entry_section": ".boot",
    "mb2_entry": "start",
    "data_extra": "",
    "bss_bytes": "64",
    "data_flags": "6",
    "text_at": "",
    "boot_align": "4096",
}

ASM = """\
.section .boot, "ax"
.code32
.align 8
mb2: .long 0xE85250D6, 0, mb2_end - mb2, -(0xE85250D6 + (mb2_end - mb2))
  .short 3, 0
  .long 12, {mb2_entry}, 0
  .short 0, 0
  .long 8
mb2_end:
{mb1_before}
.align 8
mb1: .long 0x1BADB002, 0x00010000, {mb1_checksum}
  .long mb1, 0x100000, {mb1_load_end}, _end, start
boot_code: hlt
.section {entry_section}, "ax"
.globl start
start: hlt
.text
.code64
kmain: ret
.section .rodata
.long 1
.data
.quad 2
{data_extra}
.bss
.skip {bss_bytes}
"""

LDS = """\
ENTRY(start)
PHDRS {{ boot PT_LOAD FLAGS(5); text PT_LOAD FLAGS(5); rodata PT_LOAD FLAGS(4);
        data PT_LOAD FLAGS({data_flags}); }}
SECTIONS {{
  . = 0x100000;
  .boot : {{ *(.boot) . = ALIGN({boot_align}); }} :boot
  {text_at}
  .text : {{ *(.text) . = ALIGN(4096); }} :text
  .rodata : {{ *(.rodata) . = ALIGN(4096); }} :rodata
  .data : {{ *(.data) }} :data
  _load_end = .;
  .bss (NOLOAD) : {{ *(.bss) }} :data
  _end = .;
  /DISCARD/ : {{ *(.note .note.*) }}
}}
"""


def build_image(tmp: Path, name: str = "good", ld_flags: tuple[str, ...] = ("-static",),
                **changes: str) -> Path:
    """Assemble and link the miniature image with `changes` applied to the good template."""
    values = {**GOOD, **changes}
    (tmp / f"{name}.S").write_text(ASM.format(**values))
    (tmp / f"{name}.ld").write_text(LDS.format(**values))
    obj, elf = tmp / f"{name}.o", tmp / f"{name}.elf"
    subprocess.run(["gcc", "-c", str(tmp / f"{name}.S"), "-o", str(obj)], check=True)
    subprocess.run(["ld", "-nostdlib", "-z", "max-page-size=0x1000",
                    "-z", "noexecstack", "--no-warn-rwx-segments", *ld_flags,
                    "-T", str(tmp / f"{name}.ld"), "-o", str(elf), str(obj)], check=True)
    return elf


def test_well_formed_image_passes_and_reports_sizes(tmp_path: Path) -> None:
    elf = build_image(tmp_path)
    report = verify(elf, parts={"everything": [str(tmp_path / "good.o")]})
    assert report.entry > layout.BOOT_TEXT
    assert report.memory_bytes == report.loaded_bytes + 64
    sizes = report.parts["everything"]
    assert (sizes["rodata"], sizes["data"], sizes["bss"]) == (4, 8, 64)
    assert sizes["text"] > 0x20 + 0x28  # both multiboot headers live in the stub's text
    text = format_report(report)
    assert "everything" in text and "in memory" in text


def test_cli_exits_zero_on_good_and_one_on_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(build_image(tmp_path))]) == 0
    bad = build_image(tmp_path, "bad", mb1_checksum="0")
    assert main([str(bad)]) == 1
    assert "checksum" in capsys.readouterr().err


BROKEN = {
    "bad_mb1_checksum": ({"mb1_checksum": "0"}, "multiboot1 checksum"),
    "mb1_beyond_8k": ({"mb1_before": ".skip 8192"}, "beyond the first 8192 bytes"),
    "wx_segment": ({"data_flags": "7"}, "writable and executable"),
    "entry_outside_stub": ({"entry_section": ".text", "boot_align": hex(layout.BOOT_TEXT_MAX)}, "outside the boot stub"),
    "undefined_symbol": ({"data_extra": ".quad missing_function"}, "undefined symbols: missing_function"),
    "over_budget": ({"bss_bytes": str(layout.IMAGE_BUDGET_BYTES)}, "over budget"),
    "mismatched_load_end": ({"mb1_load_end": "_load_end + 4"}, "load_end_addr"),
    "mb2_entry_differs": ({"mb2_entry": "boot_code"}, "multiboot2 entry tag"),
    "not_flat": ({"text_at": ". = 0x10C000;"}, "p_offset - p_vaddr differs"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_rule_is_refused_by_name(tmp_path: Path, case: str) -> None:
    changes, message = BROKEN[case]
    # ld refuses an undefined symbol unless told to ignore it, and then drops
    # it from .symtab unless relocations are kept, which still name it.
    flags = (("--unresolved-symbols=ignore-all", "--emit-relocs") if case == "undefined_symbol"
             else ("-static",))
    elf = build_image(tmp_path, case, flags, **changes)
    with pytest.raises(VerifyError, match=message) as caught:
        verify(elf)
    # Only the broken rule is reported: the others still hold.
    assert all(message in p for p in caught.value.problems), caught.value.problems


def test_elf32_is_refused(tmp_path: Path) -> None:
    from guests.trivial import write_kernel

    with pytest.raises(VerifyError, match="not an ELF64 x86-64"):
        verify(write_kernel(tmp_path / "t.elf"))
