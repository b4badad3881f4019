"""Bootable GRUB ISOs: stage the image with a serial-console grub.cfg and run grub-mkrescue."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# GRUB talks on COM1 so that the whole boot, menu included, is on the one
# console the tests read; timeout 0 skips the menu.
GRUB_CFG = """\
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry "taipan" {
    multiboot2 /boot/taipan.elf
    boot
}
"""

_PACKAGES = "grub-pc-bin grub-common xorriso mtools"


class IsoError(Exception):
    """grub-mkrescue is missing or failed."""


def make_iso(elf: Path, out: Path, *, timeout_s: float = 0, tree: Path | None = None) -> Path:
    """Build a BIOS-bootable ISO at `out` that boots `elf` through GRUB's multiboot2.

    `tree` is the staging folder (default: build/iso beside `out`'s build
    folder, i.e. `out.parent / "iso"`); `timeout_s` > 0 bounds grub-mkrescue.
    """
    tool = shutil.which("grub-mkrescue")
    if tool is None:
        raise IsoError(f"grub-mkrescue not found: install the Debian packages {_PACKAGES}")
    if not Path("/usr/lib/grub/i386-pc").is_dir():
        raise IsoError(f"GRUB's i386-pc modules are missing: install grub-pc-bin ({_PACKAGES})")
    tree = tree or out.parent / "iso"
    if tree.exists():
        shutil.rmtree(tree)
    (tree / "boot" / "grub").mkdir(parents=True)
    shutil.copyfile(elf, tree / "boot" / "taipan.elf")
    (tree / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Only the BIOS platform: the emulators here boot BIOS, and an EFI image
    # would need grub-efi packages we do not require.
    argv = [tool, "-d", "/usr/lib/grub/i386-pc", "-o", str(out), str(tree)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=timeout_s if timeout_s > 0 else None)
    except subprocess.TimeoutExpired as error:
        raise IsoError(f"grub-mkrescue timed out after {timeout_s}s") from error
    if proc.returncode != 0 or not out.is_file():
        hint = ""
        if "xorriso" in proc.stderr or "mformat" in proc.stderr:
            hint = f" (needs {_PACKAGES})"
        raise IsoError(f"grub-mkrescue failed with status {proc.returncode}{hint}: "
                       f"{proc.stderr.strip()[-1500:]}")
    return out
