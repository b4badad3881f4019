"""The Linux loader: setup-header rules, the zero page, e820, initrd and cmdline placement, PVH start info, config errors."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from toolchain import acpi_tables, config, guest_image, linux_boot, linux_images

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def bzimage(version: int = 0x20F, xlf: int = 1, init_size: int = 64 * MIB, code: bytes = b"\x90" * 4096,
            setup_sects: int = 1) -> bytes:
    """A bzImage-shaped file: a setup header with the given fields, then protected-mode code."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[linux_boot.SETUP_SECTS] = setup_sects
    struct.pack_into("<H", setup, linux_boot.BOOT_FLAG_AT, linux_boot.BOOT_FLAG)
    setup[0x200:0x202] = b"\xeb\x66"   # jmp over the header, as real kernels start
    setup[linux_boot.HEADER_AT:linux_boot.HEADER_AT + 4] = linux_boot.HDRS_MAGIC
    struct.pack_into("<H", setup, linux_boot.VERSION_AT, version)
    setup[linux_boot.LOADFLAGS] = linux_boot.LOADED_HIGH
    struct.pack_into("<I", setup, linux_boot.INITRD_ADDR_MAX, 0x7FFFFFFF)
    struct.pack_into("<I", setup, linux_boot.KERNEL_ALIGNMENT, 2 * MIB)
    setup[linux_boot.RELOCATABLE] = 1
    struct.pack_into("<H", setup, linux_boot.XLOADFLAGS, xlf)
    struct.pack_into("<I", setup, linux_boot.CMDLINE_SIZE, 2047)
    struct.pack_into("<Q", setup, linux_boot.PREF_ADDRESS, 16 * MIB)
    struct.pack_into("<I", setup, linux_boot.INIT_SIZE, init_size)
    return bytes(setup) + code


def piece_at(load: linux_boot.LinuxLoad, gpa: int) -> bytes:
    return next(p.data for p in load.pieces if p.gpa == gpa)


def test_bzimage_is_entered_at_its_64_bit_entry_with_the_zero_page_in_rsi() -> None:
    load = linux_boot.load(bzimage(), b"initrd!" * 100, "console=ttyS0", 256 * MIB)
    assert load.boot.rip == 16 * MIB + 0x200 and load.boot.rsi == linux_boot.ZERO_PAGE
    assert load.boot.mode == guest_image.MODE_LONG64 and load.boot.efer & guest_image.EFER_LMA
    assert (load.boot.cs, load.boot.ds) == (0x10, 0x18)   # __BOOT_CS, __BOOT_DS
    zero = piece_at(load, linux_boot.ZERO_PAGE)
    assert zero[linux_boot.TYPE_OF_LOADER] == 0xFF
    assert zero[linux_boot.HEADER_AT:linux_boot.HEADER_AT + 4] == b"HdrS"
    image, size = struct.unpack_from("<II", zero, linux_boot.RAMDISK_IMAGE)
    assert size == 700 and image % 4096 == 0 and image + size <= 256 * MIB
    assert image >= load.kernel_end
    assert piece_at(load, image) == b"initrd!" * 100
    cmdline = struct.unpack_from("<I", zero, linux_boot.CMD_LINE_PTR)[0]
    text = piece_at(load, cmdline)
    assert text.startswith(b"console=ttyS0 tsc_early_khz=") and text.endswith(b"\0")
    assert load.tsc_khz_gpa == cmdline + len(b"console=ttyS0 tsc_early_khz=")
    assert struct.unpack_from("<Q", zero, linux_boot.ACPI_RSDP_ADDR)[0] == acpi_tables.TABLES_BASE
    entries = [struct.unpack_from("<QQI", zero, linux_boot.E820_TABLE + 20 * n)
               for n in range(zero[linux_boot.E820_ENTRIES])]
    assert entries[-1] == (MIB, 255 * MIB, linux_boot.E820_RAM)
    assert (acpi_tables.TABLES_BASE, 0x20000, linux_boot.E820_ACPI) in entries


def test_a_cmdline_that_sets_the_tsc_rate_keeps_it() -> None:
    load = linux_boot.load(bzimage(), b"", "tsc_early_khz=2000000", 256 * MIB)
    assert load.tsc_khz_gpa == 0 and piece_at(load, linux_boot.CMDLINE) == b"tsc_early_khz=2000000\0"


def test_identity_tables_map_the_kernel_and_the_zero_page() -> None:
    load = linux_boot.load(bzimage(), b"", "", 256 * MIB)
    pd = piece_at(load, guest_image.RAW_PD)
    for gpa in (linux_boot.ZERO_PAGE, 16 * MIB + 0x200, 255 * MIB):
        entry = struct.unpack_from("<Q", pd, (gpa >> 21) * 8)[0]
        assert entry & guest_image.PT_P and entry & guest_image.PT_PS and entry >> 21 == gpa >> 21


@pytest.mark.parametrize("image, memory, initrd, rule", [
    (bzimage(version=0x206), 256 * MIB, b"", "bzImage protocol 2.06 has no 64-bit entry"),
    (bzimage(xlf=0), 256 * MIB, b"", "bzImage protocol 2.15 has no 64-bit entry"),
    (b"MZ" + bytes(1024), 256 * MIB, b"", "not a bzImage"),
    (bzimage(), 32 * MIB, b"x", "partition memory 32M is less than the kernel's init_size 64M "
     "(loaded at 16M) plus the initrd"),
    (bzimage(), 80 * MIB, b"x" * MIB, "partition memory 80M is less than the kernel's init_size 64M "
     "(loaded at 16M) plus the initrd 1M"),
])
def test_bzimage_rules_name_what_is_wrong(image: bytes, memory: int, initrd: bytes, rule: str) -> None:
    with pytest.raises(linux_boot.LinuxImageError) as error:
        linux_boot.load(image, initrd, "", memory)
    assert str(error.value).startswith(rule), str(error.value)


def test_config_names_the_kernel_file_and_the_rule(tmp_path: Path) -> None:
    (tmp_path / "old.bzImage").write_bytes(bzimage(version=0x206))
    (tmp_path / "sys.toml").write_text('[[partitions]]\nname = "l"\nmemory = "256M"\nkind = "linux"\n'
                                       'kernel = "old.bzImage"\n')
    part = config.load(tmp_path / "sys.toml").partitions[0]
    with pytest.raises(config.ConfigError) as error:
        linux_boot.load_partition(part)   # as the build loads it
    assert error.value.errors == ["partitions[0].kernel = \"old.bzImage\": "
                                  "bzImage protocol 2.06 has no 64-bit entry (XLF_KERNEL_64 needs "
                                  "protocol 2.12 or later with that flag set)"]


@pytest.mark.parametrize("table, key, rule", [
    ('kind = "linux"\n', "kernel", "is required for kind = \"linux\""),
    ('kind = "linux"\nkernel = "k"\nimage = "guest:hello"\n', "image", "a linux partition takes `kernel`"),
    ('image = "guest:hello"\nkernel = "k"\n', "kernel", "applies to linux partitions only"),
    ('kind = "linux"\nkernel = "nosuch"\n', "kernel", "no such file"),
    ('kind = "linux"\nkernel = "k"\nmodules = ["k"]\n', "modules", "applies to multiboot partitions only"),
])
def test_linux_keys_are_checked(tmp_path: Path, table: str, key: str, rule: str) -> None:
    (tmp_path / "k").write_bytes(bzimage())
    (tmp_path / "sys.toml").write_text(f'[[partitions]]\nname = "l"\nmemory = "256M"\n{table}')
    with pytest.raises(config.ConfigError) as error:
        config.load(tmp_path / "sys.toml")
    assert any(f"partitions[0].{key} = " in line and rule in line for line in error.value.errors), \
        error.value.errors


def pvh_vmlinux(entry: int = 0x1000040) -> bytes:
    """An ELF64 with one PT_LOAD at 16 MiB and a PT_NOTE holding Xen's PHYS32_ENTRY note."""
    note = struct.pack("<III", 4, 4, linux_boot.XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + struct.pack("<I", entry)
    code = b"\xf4" * 256
    ehdr_size, phdr_size = 64, 56
    note_at = ehdr_size + 2 * phdr_size
    code_at = note_at + len(note)
    ehdr = (b"\x7fELF\x02\x01\x01" + bytes(9)
            + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0xFFFFFFFF81000000, ehdr_size, 0, 0,
                          ehdr_size, phdr_size, 2, 64, 0, 0))
    load = struct.pack("<IIQQQQQQ", 1, 5, code_at, 0xFFFFFFFF81000000, 16 * MIB, len(code), 2 * MIB, 0x1000)
    pnote = struct.pack("<IIQQQQQQ", 4, 4, note_at, 0, 0, len(note), len(note), 4)
    return ehdr + load + pnote + note + code


def test_pvh_vmlinux_is_entered_in_32_bit_mode_with_the_start_info_in_ebx() -> None:
    load = linux_boot.load(pvh_vmlinux(), b"ramdisk", "console=ttyS0", 64 * MIB)
    assert load.protocol == "pvh" and load.boot.rip == 0x1000040
    assert load.boot.mode == guest_image.MODE_PROT32 and load.boot.rbx == linux_boot.ZERO_PAGE
    info = piece_at(load, linux_boot.ZERO_PAGE)
    magic, version, _, modules, modlist, cmdline, rsdp, memmap, count = struct.unpack_from("<IIIIQQQQI", info)
    assert (magic, version, modules, rsdp) == (linux_boot.PVH_MAGIC, 1, 1, acpi_tables.TABLES_BASE)
    assert piece_at(load, cmdline).startswith(b"console=ttyS0 tsc_early_khz=")
    initrd, size = struct.unpack_from("<QQ", info, modlist - linux_boot.ZERO_PAGE)
    assert piece_at(load, initrd) == b"ramdisk" and size == 7
    last = struct.unpack_from("<QQI", info, memmap - linux_boot.ZERO_PAGE + 24 * (count - 1))
    assert last == (MIB, 63 * MIB, linux_boot.E820_RAM)


def test_an_elf_without_a_pvh_note_is_refused() -> None:
    image = bytearray(pvh_vmlinux())
    image[image.index(b"Xen\0") - 4] = 17   # another note type
    with pytest.raises(linux_boot.LinuxImageError, match="without a PVH entry"):
        linux_boot.load(bytes(image), b"", "", 64 * MIB)


def test_initramfs_is_a_newc_cpio_with_init_and_busybox() -> None:
    import gzip

    archive = gzip.decompress(linux_images.initramfs(b"\x7fELF busybox"))
    names = []
    at = 0
    while True:
        assert archive[at:at + 6] == b"070701"
        fields = [int(archive[at + 6 + 8 * n:at + 14 + 8 * n], 16) for n in range(13)]
        size, namesize = fields[6], fields[11]
        name = archive[at + 110:at + 110 + namesize - 1].decode()
        at += 110 + namesize
        at += -at % 4
        data = archive[at:at + size]
        at += size + -size % 4
        if name == "TRAILER!!!":
            break
        names.append(name)
        if name == "init":
            assert data.startswith(b"#!/bin/sh") and b"mount -t proc" in data and fields[1] & 0o111
        if name == "bin/busybox":
            assert data == b"\x7fELF busybox"
    assert {"init", "bin/busybox", "proc", "sys", "dev", "dev/console"} <= set(names)


def test_the_debian_kernel_loads_by_its_64_bit_entry() -> None:
    linux_images.build(ROOT / "build")   # the pinned package, fetched once like the boot tests'
    kernel = ROOT / "build" / "images" / "linux" / "vmlinuz"
    load = linux_boot.load(kernel.read_bytes(), b"", "", 256 * MIB)
    assert load.version == "2.15" and load.kernel_base == 16 * MIB
