"""Guest memory at (re)start: raw guests' page tables and GDT, and multiboot's loader hand-off."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from boot import multiboot
from guests import mbtest, trivial
from guests.common import ELF32_PAYLOAD_OFFSET
from tests import pagewalk
from toolchain import guest_image
from toolchain.config import ConfigError, PartitionConfig

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "configs" / "tests" / "mbtest-module.txt"


def _part(memory: int, kind: str, **extra: object) -> PartitionConfig:
    return PartitionConfig(index=0, name="t", memory=memory, image="t.bin", kind=kind, **extra)


def _low_memory(loaded: guest_image.GuestLoad, size: int = 0x200000) -> bytearray:
    """The first `size` bytes of guest memory after the hypervisor zeroes it and copies chunks."""
    memory = bytearray(size)
    for chunk in loaded.chunks:
        if chunk.gpa < size:
            memory[chunk.gpa:chunk.end] = chunk.data[:size - chunk.gpa]
    return memory


@pytest.mark.parametrize("memory", [2 << 20, 16 << 20, (1 << 30) + (2 << 20), 4 << 30])
def test_raw_identity_map_covers_exactly_guest_memory(memory: int) -> None:
    loaded = guest_image.load_raw(_part(memory, "raw"), b"\xf4", 0x100000, None)
    walker = pagewalk.Memory(bytes(_low_memory(loaded)), 0)
    boot = loaded.boot
    for virtual in (0, 0x1000, 0x100000, 0x1FFFFF, memory // 2 + 0x123, memory - 1):
        found = pagewalk.translate(walker, boot.cr3, virtual)
        assert found is not None and found.physical == virtual and found.writable
        assert found.page_size == 2 << 20
    for virtual in (memory, memory + 0x1000, 1 << 39):
        assert pagewalk.translate(walker, boot.cr3, virtual) is None


def test_raw_boot_state_and_gdt() -> None:
    loaded = guest_image.load_raw(_part(16 << 20, "raw"), b"\x90\xf4", 0x100000, None)
    boot, memory = loaded.boot, _low_memory(loaded)
    assert (boot.mode, boot.rip, boot.rsp, boot.rflags) == (64, 0x100000, (16 << 20) - 16, 2)
    assert (boot.cr0, boot.cr4, boot.efer) == (0x80010033, 0x620, 0x500)
    assert (boot.cs, boot.ds, boot.gdt_limit) == (0x08, 0x10, 23)
    null, code, data = struct.unpack_from("<3Q", memory, boot.gdt_base)
    assert null == 0
    assert code >> 53 & 1 and not code >> 54 & 1 and code >> 47 & 1  # L=1, D=0, present
    assert data >> 47 & 1 and (data >> 40) & 0x1A == 0x12                # present, writable data
    assert memory[0x100000:0x100002] == b"\x90\xf4"
    assert len(loaded.chunks) <= guest_image.MAX_CHUNKS


def test_raw_image_over_the_page_tables_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"partitions\[0\]\.entry .* overlaps"):
        guest_image.load_raw(_part(16 << 20, "raw"), bytes(0x100), 0x2000, None)
    with pytest.raises(ConfigError, match=r"partitions\[0\]\.image .* does not fit"):
        guest_image.load_raw(_part(2 << 20, "raw"), bytes(0x200000), 0x100000, None)


def test_inject_entry_failure_asks_for_long_mode_without_pae(tmp_path: Path) -> None:
    image = tmp_path / "t.bin"
    image.write_bytes(b"\xf4")
    part = _part(16 << 20, "raw", image_path=image, inject_entry_failure=True)
    boot = guest_image.load(part).boot
    assert boot.cr0 & guest_image.CR0_PG and boot.efer & guest_image.EFER_LME
    assert not boot.cr4 & guest_image.CR4_PAE


def _multiboot_info(loaded: guest_image.GuestLoad) -> tuple[bytearray, dict[str, int]]:
    memory = _low_memory(loaded, 0x400000)
    base = loaded.boot.rbx
    fields = dict(zip(("flags", "mem_lower", "mem_upper", "boot_device", "cmdline", "mods_count",
                       "mods_addr"), struct.unpack_from("<7I", memory, base), strict=True))
    fields["mmap_length"], fields["mmap_addr"] = struct.unpack_from("<2I", memory, base + 44)
    fields["boot_loader_name"] = struct.unpack_from("<I", memory, base + 64)[0]
    return memory, fields


def _cstring(memory: bytearray, address: int) -> bytes:
    return bytes(memory[address:memory.index(0, address)])


def test_multiboot_info_decodes_to_cmdline_module_and_mmap() -> None:
    part = _part(16 << 20, "multiboot", cmdline="mbtest cmdline-ok", modules=[MODULE])
    loaded = guest_image.load_multiboot(part, mbtest.kernel_bytes())
    boot = loaded.boot
    assert (boot.mode, boot.rax, boot.rsp, boot.rflags) == (32, 0x2BADB002, 0, 2)
    assert (boot.cr0, boot.cr3, boot.cr4, boot.efer) == (0x31, 0, 0, 0)
    memory, info = _multiboot_info(loaded)
    assert info["flags"] & 0x4D == 0x4D  # mem, cmdline, mods, mmap
    assert (info["mem_lower"], info["mem_upper"]) == (639, (16 << 20) // 1024 - 1024)
    assert _cstring(memory, info["cmdline"]) == b"mbtest cmdline-ok"
    assert _cstring(memory, info["boot_loader_name"]) == b"taipan"
    assert info["mods_count"] == 1
    start, end, string, _ = struct.unpack_from("<4I", memory, info["mods_addr"])
    assert start % 0x1000 == 0 and start >= 0x100000
    assert bytes(memory[start:end]) == MODULE.read_bytes()
    assert _cstring(memory, string) == b"mbtest-module.txt"
    entries, at = [], info["mmap_addr"]
    while at < info["mmap_addr"] + info["mmap_length"]:
        size, base, length, kind = struct.unpack_from("<IQQI", memory, at)
        entries.append((base, length, kind))
        at += size + 4
    assert entries == [(0, 0x9FC00, 1), (0x100000, (16 << 20) - 0x100000, 1)]
    code = struct.unpack_from("<Q", memory, boot.gdt_base + 8)[0]
    assert code >> 54 & 1 and not code >> 53 & 1  # D=1: 32-bit code


def test_multiboot_elf_segments_load_at_physical_addresses() -> None:
    kernel = mbtest.kernel_bytes()
    loaded = guest_image.load_multiboot(_part(16 << 20, "multiboot"), kernel)
    memory = _low_memory(loaded, 0x200000)
    # mbtest: one PT_LOAD with file offset 0x1000 at 0x100000 (see guests/mbtest.py).
    payload = kernel[ELF32_PAYLOAD_OFFSET:]
    assert bytes(memory[0x100000:0x100000 + len(payload)]) == payload
    assert loaded.boot.rip == struct.unpack_from("<I", kernel, 24)[0]


def test_multiboot_aout_kludge_loads_by_header_addresses() -> None:
    kernel = trivial.kernel_bytes()  # ELF32 whose header carries the a.out-kludge fields
    loaded = guest_image.load_multiboot(_part(16 << 20, "multiboot"), kernel)
    memory = _low_memory(loaded, 0x200000)
    payload = kernel[ELF32_PAYLOAD_OFFSET:]
    assert bytes(memory[0x100000:0x100000 + len(payload)]) == payload
    # An ELF64 kernel is fine too when the header gives the addresses.
    elf64 = bytearray(0x3000)
    elf64[:5] = b"\x7fELF\x02"
    flags = multiboot.MB1_FLAG_ADDRESS_FIELDS
    struct.pack_into("<8I", elf64, 0x1000, 0x1BADB002, flags, -(0x1BADB002 + flags) & 0xFFFFFFFF,
                     0x101000, 0x100000, 0x103000, 0x104000, 0x101020)
    loaded = guest_image.load_multiboot(_part(16 << 20, "multiboot"), bytes(elf64))
    assert loaded.boot.rip == 0x101020
    assert [(c.gpa, c.data) for c in loaded.chunks if c.gpa >= 0x100000] == [(0x100000, bytes(elf64))]


def test_elf64_without_aout_kludge_is_refused() -> None:
    elf64 = bytearray(0x2000)
    elf64[:5] = b"\x7fELF\x02"
    struct.pack_into("<3I", elf64, 0x100, 0x1BADB002, 0, -0x1BADB002 & 0xFFFFFFFF)
    with pytest.raises(ConfigError, match="a.out-kludge"):
        guest_image.load_multiboot(_part(16 << 20, "multiboot"), bytes(elf64))
    with pytest.raises(ConfigError, match="no multiboot1 header"):
        guest_image.load_multiboot(_part(16 << 20, "multiboot"), bytes(0x4000))


def test_merge_keeps_contents_at_their_addresses_within_the_chunk_limit() -> None:
    pieces = [guest_image.Chunk(0x10000 * n + (n % 3) * 0x100, bytes([n + 1]) * 0x10)
              for n in range(12)]
    merged = guest_image.merge_chunks(pieces)
    assert len(merged) <= guest_image.MAX_CHUNKS
    for piece in pieces:
        owner = next(c for c in merged if c.gpa <= piece.gpa < c.end)
        assert owner.data[piece.gpa - owner.gpa:piece.end - owner.gpa] == piece.data
    touching = guest_image.merge_chunks([guest_image.Chunk(0, b"a"), guest_image.Chunk(1, b"b")])
    assert [(c.gpa, c.data) for c in touching] == [(0, b"ab")]
    with pytest.raises(ValueError, match="overlap"):
        guest_image.merge_chunks([guest_image.Chunk(0, b"ab"), guest_image.Chunk(1, b"b")])
