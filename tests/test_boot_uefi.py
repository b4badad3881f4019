"""The hybrid ISO: its boot records, and Taipan booted from it by UEFI (OVMF) and by BIOS (SeaBIOS) under QEMU."""
from __future__ import annotations

import re
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import Console, config_cpus, config_image
from qmp import Qmp, read_ppm

from toolchain import cli, emulator, fb_font, iso

# The EFI system partition's GPT type (UEFI spec 5.3.3).
ESP_TYPE = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
BANNER_0 = "Taipan 0.1.0 - static-partitioning hypervisor"
BANNER_1 = "console: serial port COM1 (I/O 0x3f8), 115200 baud 8N1"


@pytest.fixture(scope="module")
def demo_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hybrid")
    return iso.make_iso(config_image("demo"), out / "taipan.iso", tree=out / "tree")


def test_hybrid_iso_boots_by_bios_and_uefi_from_cd_and_usb_stick(demo_iso: Path) -> None:
    # A CD: El Torito entries for both firmwares.
    assert iso.boot_catalog(demo_iso) == ["BIOS", "UEFI"]
    head = demo_iso.read_bytes()[:34 * 512]
    # A USB stick: an MBR with boot code (BIOS) and a GPT holding an EFI system partition (UEFI).
    assert head[510:512] == b"\x55\xaa" and any(head[:440])
    assert head[512:520] == b"EFI PART"
    entries_lba, count, size = struct.unpack_from("<QII", head, 512 + 72)
    types = {uuid.UUID(bytes_le=head[entries_lba * 512 + n * size:][:16]) for n in range(count)
             if entries_lba * 512 + (n + 1) * size <= len(head)}
    assert ESP_TYPE in types


@pytest.fixture
def qemu_iso(tmp_path: Path) -> Iterator:
    """boot(iso, firmware) -> (Console, Qmp): QEMU booting the ISO, QMP on a socket beside it."""
    children: list[tuple[pexpect.spawn, Qmp | None]] = []

    def boot(image: Path, firmware: str, **options: object) -> tuple[Console, Qmp]:
        sock = tmp_path / "qmp.sock"
        vars_file = emulator.ovmf_vars(tmp_path / "ovmf") if firmware == "uefi" else None
        argv = emulator.qemu_argv(Path("unused"), cdrom=image, firmware=firmware, vars_file=vars_file,
                                  memory_mb=256, smp=config_cpus("demo"), no_reboot=True,
                                  extra=["-qmp", f"unix:{sock},server=on,wait=off"], **options)
        child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=60)
        children.append((child, None))
        console = Console(child).boot()
        qmp = Qmp(sock)
        children[-1] = (child, qmp)
        return console, qmp

    yield boot
    for child, qmp in children:
        if qmp is not None:
            qmp.close()
        child.terminate(force=True)


def _wait_for_hellos(console: Console) -> None:
    deadline = time.monotonic() + 60
    log = ""
    while not ("[hello1] hello from hello1" in log and "[hello2] hello from hello2" in log):
        assert time.monotonic() < deadline, log
        time.sleep(0.5)
        log = console.command("log -n 20")


def _glyph_cells(pixels: bytes, width: int, col: int, row: int, text: str) -> list[str]:
    """The screen's pixels in the text cells at (col, row), as '#' (lit) and '.' rows."""
    x0, y0 = col * fb_font.CELL_W, row * fb_font.CELL_H
    out = []
    for y in range(y0, y0 + fb_font.CELL_H):
        out.append("".join("#" if max(pixels[(y * width + x) * 3:(y * width + x) * 3 + 3]) > 128
                           else "." for x in range(x0, x0 + fb_font.CELL_W * len(text))))
    return out


@pytest.mark.boot
def test_uefi_boot_under_ovmf_runs_partitions_and_reads_the_efi_tags(demo_iso: Path, qemu_iso,
                                                                     tmp_path: Path) -> None:
    missing = emulator.ovmf_missing()
    if missing:
        pytest.fail(missing)   # bootstrap installs ovmf: its absence is a broken set-up
    console, qmp = qemu_iso(demo_iso, "uefi")
    assert "partitions: hello1 (running), hello2 (running)" in console.banner
    out = console.command("info")
    assert re.search(r"firmware:  UEFI, 64-bit system table at 0x[0-9a-f]+, boot services exited", out), out
    assert re.search(r"memory map: EFI memory map \(multiboot2 tag 17\), \d+ entries", out), out
    assert "acpi:      RSDP from multiboot2 ACPI 2.0 tag" in out, out
    assert re.search(r"screen:    rgb framebuffer \d+x\d+ at 0x[0-9a-f]+, banner shown", out), out
    # ACPI NVS and reserved ranges come through from the EFI map, not just usable RAM.
    assert "ACPI NVS" in out and "reserved" in out
    _wait_for_hellos(console)
    # The banner on the screen, read back by QEMU and compared with the font's own rendering.
    qmp.execute("screendump", filename=str(tmp_path / "screen.ppm"))
    width, _, pixels = read_ppm(tmp_path / "screen.ppm")
    assert _glyph_cells(pixels, width, 1, 1, BANNER_0) == fb_font.render(BANNER_0)
    assert _glyph_cells(pixels, width, 1, 2, BANNER_1) == fb_font.render(BANNER_1)


@pytest.mark.boot
def test_bios_boot_of_the_same_iso_uses_the_bios_map_and_ega_text(demo_iso: Path, qemu_iso,
                                                                  tmp_path: Path) -> None:
    console, qmp = qemu_iso(demo_iso, "bios")
    assert "partitions: hello1 (running), hello2 (running)" in console.banner
    out = console.command("info")
    assert "firmware:  BIOS (no EFI system table tag)" in out, out
    assert re.search(r"memory map: BIOS memory map \(multiboot2 tag 6\)", out), out
    assert "screen:    ega-text framebuffer 80x25 at 0xb8000, banner shown" in out, out
    _wait_for_hellos(console)
    # EGA text memory holds (character, attribute) pairs, 80 to a row.
    qmp.execute("pmemsave", val=0xB8000, size=80 * 25 * 2, filename=str(tmp_path / "ega.bin"))
    cells = (tmp_path / "ega.bin").read_bytes()
    rows = ["".join(chr(cells[(r * 80 + c) * 2]) for c in range(80)) for r in range(25)]
    assert rows[1][1:].startswith(BANNER_0) and rows[2][1:].startswith(BANNER_1)
    assert cells[(2 * 80 + 1) * 2 + 1] == 0x0E   # the console line in yellow


def test_run_firmware_uefi_refuses_bochs_before_building(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--emulator", "bochs", "--firmware", "uefi"]) == 2
    assert "Bochs has no UEFI firmware" in capsys.readouterr().err


def test_qemu_argv_for_uefi_boots_the_iso_with_ovmf_and_a_vars_copy(tmp_path: Path) -> None:
    vars_file = emulator.ovmf_vars(tmp_path)
    assert vars_file.read_bytes() == emulator.OVMF_VARS.read_bytes()
    argv = emulator.qemu_argv(Path("k.elf"), cdrom=Path("t.iso"), firmware="uefi", vars_file=vars_file)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives == [f"if=pflash,format=raw,readonly=on,file={emulator.OVMF_CODE}",
                      f"if=pflash,format=raw,file={vars_file}"]
    assert "-kernel" not in argv and argv[argv.index("-cdrom") + 1] == "t.iso"
    with pytest.raises(ValueError, match="firmware uefi boots an ISO"):
        emulator.qemu_argv(Path("k.elf"), firmware="uefi")
    with pytest.raises(ValueError, match="bios or uefi"):
        emulator.qemu_argv(Path("k.elf"), firmware="coreboot")


@pytest.mark.boot
def test_without_a_uart_the_uefi_screen_says_there_is_no_console(demo_iso: Path, tmp_path: Path) -> None:
    """QEMU with no serial port: 0x3f8 answers nothing, and only the screen can tell a person."""
    sock = tmp_path / "qmp.sock"
    argv = emulator.qemu_argv(Path("unused"), cdrom=demo_iso, firmware="uefi",
                              vars_file=emulator.ovmf_vars(tmp_path / "ovmf"), memory_mb=256,
                              smp=config_cpus("demo"), serial="none", no_reboot=True,
                              extra=["-qmp", f"unix:{sock},server=on,wait=off"])
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=60)
    lines = ["no console: no 16550 UART answers at I/O 0x3f8 (COM1)",
             "Taipan's console is COM1 only: fit a serial port there"]
    try:
        qmp = Qmp(sock)
        deadline = time.monotonic() + 120
        while True:
            qmp.execute("screendump", filename=str(tmp_path / "screen.ppm"))
            width, _, pixels = read_ppm(tmp_path / "screen.ppm")
            if _glyph_cells(pixels, width, 1, 2, lines[0]) == fb_font.render(lines[0]):
                break
            assert time.monotonic() < deadline, "no 'no console' banner on the screen"
            time.sleep(2)
        assert _glyph_cells(pixels, width, 1, 1, BANNER_0) == fb_font.render(BANNER_0)
        assert _glyph_cells(pixels, width, 1, 3, lines[1]) == fb_font.render(lines[1])
        qmp.close()
    finally:
        child.terminate(force=True)
