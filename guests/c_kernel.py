"""Multiboot kernels written in C and assembly under guests/c/NAME/, built with gcc and binutils into build/guests/."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "guests" / "c"
BUILD = ROOT / "build" / "guests"

CC = os.environ.get("CC", "gcc")
LD = os.environ.get("LD", "ld")
OBJCOPY = os.environ.get("OBJCOPY", "objcopy")
# A kernel that starts itself: no libc, no red zone (its exceptions push onto
# the interrupted stack), and no SSE from the compiler (the kernel turns
# CR4.OSFXSR on itself, late, and uses XMM registers only where it says so).
CFLAGS = ["-m64", "-std=gnu11", "-ffreestanding", "-fno-pic", "-fno-pie", "-mno-red-zone",
          "-mgeneral-regs-only", "-mcmodel=small", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
          "-O2", "-Wall", "-Wextra", "-Werror"]


class KernelBuildError(ValueError):
    """gcc, ld or objcopy refused; the message holds the command and its output."""


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise KernelBuildError(f"{command[0]} is not installed (the C test kernels are built with it)")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelBuildError(f"{' '.join(command)} failed:\n{(proc.stdout + proc.stderr).strip()}")


def build(name: str) -> bytes:
    """guests/c/NAME: every .c and .S compiled (its .h files count for the rebuild), linked by NAME.ld at its addresses, turned into the ELF32
    file a multiboot1 loader takes (objcopy -O elf32-i386). Rebuilt when a source changes."""
    folder = SOURCES / name
    sources = sorted(p for p in folder.iterdir() if p.suffix in (".c", ".S"))
    headers = sorted(p for p in folder.iterdir() if p.suffix == ".h")
    script = folder / f"{name}.ld"
    digest = hashlib.sha256()
    for path in [*sources, *headers, script]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(" ".join([CC, *CFLAGS]).encode())
    out = BUILD / f"{name}-{digest.hexdigest()[:16]}"
    image = out / f"{name}.elf"
    if image.exists():
        return image.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    objects = []
    for source in sources:
        obj = out / (source.stem + source.suffix.replace(".", "_") + ".o")
        _run([CC, *CFLAGS, "-c", str(source), "-o", str(obj)])
        objects.append(str(obj))
    linked = out / f"{name}64.elf"
    _run([LD, "-m", "elf_x86_64", "-nostdlib", "-z", "max-page-size=0x1000", "-T", str(script),
          "-o", str(linked), *objects])
    _run([OBJCOPY, "-O", "elf32-i386", str(linked), str(image)])
    return image.read_bytes()
