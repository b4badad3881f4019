"""The trivial multiboot kernel: prints `ok` on COM1 and exits, the emulators' boot-time baseline."""

from __future__ import annotations

import struct
from pathlib import Path

from guests.common import ELF32_LOAD_ADDR, PF_RX, elf32_kernel
from toolchain.keystone_asm import assemble

LOAD_ADDR = ELF32_LOAD_ADDR

MB1_MAGIC = 0x1BADB002
MB1_AOUT_KLUDGE = 1 << 16  # load by the header's address fields, not the ELF
MB2_MAGIC = 0xE85250D6
MB2_TAG_ENTRY = 3
COM1 = 0x3F8
DEBUG_EXIT_PORT = 0xF4

_HEADERS_SIZE = 0x48  # mb1 (32) + mb2 (16 + entry tag 16 incl. pad + end tag 8)


def _code(echo: bool) -> str:
    lines = [f"mov dx, {COM1}"]
    for byte in b"ok\n":
        lines += [f"mov al, {byte}", "out dx, al"]
    if echo:
        # Proves console input reaches the guest: copy every received byte
        # back until a `q`, polling the line status register's data-ready bit.
        lines += [
            "poll:", f"mov dx, {COM1 + 5}", "in al, dx", "test al, 1", "jz poll",
            f"mov dx, {COM1}", "in al, dx", "cmp al, 0x71", "je done",
            "out dx, al", "jmp poll", "done:",
        ]
    # isa-debug-exit makes QEMU exit with status 0*2+1; elsewhere it is ignored.
    lines += [f"mov dx, {DEBUG_EXIT_PORT}", "xor eax, eax", "out dx, al",
              "halt:", "cli", "hlt", "jmp halt"]
    return "\n".join(lines) + "\n"


def _headers(load_end: int, entry: int) -> bytes:
    mb1 = struct.pack("<3I5I", MB1_MAGIC, MB1_AOUT_KLUDGE,
                      (-(MB1_MAGIC + MB1_AOUT_KLUDGE)) & 0xFFFFFFFF,
                      LOAD_ADDR, LOAD_ADDR, load_end, load_end, entry)
    tags = struct.pack("<HHII", MB2_TAG_ENTRY, 0, 12, entry) + bytes(4)  # tags are 8-aligned
    tags += struct.pack("<HHI", 0, 0, 8)
    length = 16 + len(tags)
    mb2 = struct.pack("<4I", MB2_MAGIC, 0, length,
                      (-(MB2_MAGIC + length)) & 0xFFFFFFFF) + tags
    headers = mb1 + mb2
    assert len(headers) == _HEADERS_SIZE
    return headers


def kernel_bytes(*, echo: bool = False) -> bytes:
    """The kernel as an ELF32 image: both multiboot headers, then 32-bit code."""
    entry = LOAD_ADDR + _HEADERS_SIZE
    code = assemble(_code(echo), mode=32, base=entry)
    load_end = entry + len(code)
    return elf32_kernel(_headers(load_end, entry) + code, entry=entry, flags=PF_RX)


def write_kernel(out: Path, *, echo: bool = False) -> Path:
    """Write the trivial kernel to `out` and return it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(kernel_bytes(echo=echo))
    return out


if __name__ == "__main__":
    import sys

    print(write_kernel(Path(sys.argv[1] if len(sys.argv) > 1 else "build/trivial.elf")))
