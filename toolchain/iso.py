"""Bootable hybrid GRUB ISOs (BIOS and UEFI, CD and USB stick): stage the image and run grub-mkrescue."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# GRUB talks on COM1 so that the whole boot, menu included, is on the one
# console the tests read; timeout 0 skips the menu. The same grub.cfg serves
# both platforms: GRUB's EFI build also has the serial module (OVMF and most
# PC firmware keep a 16550 at 0x3f8 behind the UEFI serial protocol). Under
# BIOS the screen stays in EGA text mode, where the banner needs no font; UEFI
# has no text mode, so GRUB hands over the firmware's graphics mode, for which
# it needs its video drivers (all_video: GOP and UGA on UEFI).
GRUB_CFG = """\
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
insmod all_video
menuentry "taipan" {
    multiboot2 /boot/taipan.elf
    boot
}
"""

# One GRUB module folder per firmware the ISO boots on, and the Debian package
# that installs it. grub-mkrescue puts the BIOS El Torito image, an EFI system
# partition image (efi.img, with BOOTX64.EFI) and an MBR/GPT hybrid table on
# the ISO, so the same file boots from a CD and when written to a USB stick.
PLATFORMS = {
    "bios": (Path("/usr/lib/grub/i386-pc"), "grub-pc-bin"),
    "uefi": (Path("/usr/lib/grub/x86_64-efi"), "grub-efi-amd64-bin"),
}
_PACKAGES = "grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools"


class IsoError(Exception):
    """grub-mkrescue is missing or failed."""


def missing_platforms() -> list[str]:
    """The firmware platforms whose GRUB modules are not installed, as 'name (package)'."""
    return [f"{name} ({package})" for name, (folder, package) in PLATFORMS.items()
            if not folder.is_dir()]


def make_iso(elf: Path, out: Path, *, timeout_s: float = 0, tree: Path | None = None) -> Path:
    """Build a hybrid BIOS + UEFI ISO at `out` that boots `elf` through GRUB's multiboot2.

    `tree` is the staging folder (default: `out.parent / "iso"`); `timeout_s`
    > 0 bounds grub-mkrescue.
    """
    tool = shutil.which("grub-mkrescue")
    if tool is None:
        raise IsoError(f"grub-mkrescue not found: install the Debian packages {_PACKAGES}")
    missing = missing_platforms()
    if missing:
        raise IsoError("GRUB modules missing for " + ", ".join(missing)
                       + f": the ISO boots by BIOS and by UEFI, install {_PACKAGES}")
    tree = tree or out.parent / "iso"
    if tree.exists():
        shutil.rmtree(tree)
    (tree / "boot" / "grub").mkdir(parents=True)
    shutil.copyfile(elf, tree / "boot" / "taipan.elf")
    (tree / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    out.parent.mkdir(parents=True, exist_ok=True)
    # No -d: given several module folders, grub-mkrescue takes every platform
    # installed under /usr/lib/grub; --modules names none, so it uses all.
    argv = [tool, "-o", str(out), str(tree)]
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


def boot_catalog(iso: Path) -> list[str]:
    """The El Torito platforms the ISO boots on ("BIOS", "UEFI"), read back by xorriso."""
    proc = subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"],
                          capture_output=True, text=True, check=False)
    platforms = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("El Torito boot img :"):
            fields = line.split(":", 1)[1].split()
            platforms.append(fields[1])
    return platforms
