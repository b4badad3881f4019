"""The partition table: round trip, signature and version checks, and the C header's agreement."""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from toolchain import config, layout, ptable

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo() -> ptable.PartitionTable:
    return ptable.build_table(config.load(ROOT / "configs" / "demo.toml"))


def test_layout_matches_the_documented_sizes() -> None:
    # The sizes and offsets the issue fixes; the C side asserts the same numbers.
    # Version 3 put the CPU count, management's share and 16 plan records of
    # 8 + 17 x 8 bytes after the first 128 bytes, which kept their offsets.
    assert ptable.sizeof("pt_window") == 8
    assert ptable.sizeof("pt_cpu_plan") == 144
    assert ptable.offsetof("pt_cpu_plan", "frame_us") == 4
    assert ptable.offsetof("pt_cpu_plan", "windows") == 8
    assert ptable.offsetof("pt_header", "cpu_count") == 104
    assert ptable.offsetof("pt_header", "management_min_percent") == 108
    assert ptable.offsetof("pt_header", "plans") == 128
    # Version 6 appended the header's flags and a reserved word after the plans.
    assert ptable.offsetof("pt_header", "flags") == 128 + 16 * 144
    assert ptable.sizeof("pt_header") == ptable.HEADER_SIZE == 128 + 16 * 144 + 8
    assert ptable.sizeof("pt_chunk") == 24
    assert ptable.sizeof("pt_boot") == 104
    # Version 2 appended restart, restart_limit, slice_us, cpus (3: vcpus) and eight port
    # ranges; 3 made a reserved word the home cpu byte; 4 appended tsc_khz_gpa.
    assert ptable.sizeof("pt_partition") == 480
    assert ptable.offsetof("pt_partition", "tsc_khz_gpa") == 472
    assert ptable.offsetof("pt_partition", "restart") == 416
    assert ptable.offsetof("pt_partition", "vcpus") == 428
    assert ptable.offsetof("pt_partition", "cpu") == 436
    assert ptable.offsetof("pt_header", "config_offset") == 88
    assert ptable.offsetof("pt_header", "sha256") == 56
    assert ptable.offsetof("pt_partition", "boot") == 120
    assert ptable.offsetof("pt_partition", "chunks") == 224
    assert ptable.offsetof("pt_boot", "cs") == 96


def test_round_trip_keeps_every_partition(demo: ptable.PartitionTable) -> None:
    again = ptable.parse(demo.blob)
    assert again.header == demo.header and again.partitions == demo.partitions
    assert [again.name(i) for i in range(len(again.partitions))] == ["hello1", "hello2"]
    header = again.header
    assert header["magic"] == b"TAIPANPT" and header["version"] == ptable.VERSION
    assert header["blob_size"] == len(demo.blob)
    assert header["tables_offset"] % 0x1000 == 0 and header["tables_size"] % 0x1000 == 0
    assert header["tables_size"] <= layout.HV_TABLES_MAX
    # Every byte but the digest's own: the header's plans are signed too.
    assert header["sha256"] == hashlib.sha256(demo.blob[:56] + bytes(32) + demo.blob[88:]).digest()
    for index, part in enumerate(again.partitions):
        assert part["flags"] == ptable.FLAG_AUTOSTART and part["kind"] == ptable.KINDS["raw"]
        assert part["console_size"] == 16 << 10 and part["mem_size"] == 16 << 20
        assert part["boot"]["mode"] == ptable.MODE_LONG64 and part["boot"]["cs"] == 0x08
        assert 1 <= part["chunk_count"] <= ptable.MAX_CHUNKS
        for chunk in part["chunks"][:part["chunk_count"]]:
            assert chunk["blob_offset"] % ptable.CHUNK_ALIGN == 0
            assert chunk["gpa"] + chunk["size"] <= part["mem_size"]
        assert any(gpa == 0x100000 for gpa, _ in again.chunks(index))


def test_pack_unpack_round_trip_of_one_descriptor() -> None:
    values = {"name": b"x", "mem_host_base": 0x4000000, "mem_size": 2 << 20, "eptp": 0x200001E,
              "flags": 1, "kind": 1, "console_size": 4096, "chunk_count": 1,
              "boot": {"rip": 0x100000, "cs": 8, "ds": 16, "mode": 32, "gdt_limit": 23},
              "chunks": [{"blob_offset": 4096, "size": 10, "gpa": 0x1000}]}
    decoded = ptable.unpack("pt_partition", ptable.pack("pt_partition", values))
    assert decoded["name"].rstrip(b"\0") == b"x" and decoded["eptp"] == 0x200001E
    assert decoded["boot"]["cs"] == 8 and decoded["boot"]["mode"] == 32
    assert decoded["chunks"][0] == {"blob_offset": 4096, "size": 10, "gpa": 0x1000}
    assert decoded["chunks"][1] == {"blob_offset": 0, "size": 0, "gpa": 0}


def test_tampered_byte_is_detected(demo: ptable.PartitionTable) -> None:
    plan_bytes = ptable.offsetof("pt_header", "plans") + ptable.offsetof("pt_cpu_plan", "windows") + 4
    for offset in (plan_bytes, ptable.offsetof("pt_header", "management_min_percent"),
                   ptable.HEADER_SIZE, demo.header["tables_offset"] + 8, len(demo.blob) - 1):
        tampered = bytearray(demo.blob)
        tampered[offset] ^= 0x01
        with pytest.raises(ptable.TableError, match="sha256"):
            ptable.parse(bytes(tampered))


def test_version_mismatch_is_refused(demo: ptable.PartitionTable) -> None:
    other = bytearray(demo.blob)
    struct.pack_into("<I", other, ptable.offsetof("pt_header", "version"), ptable.VERSION + 1)
    with pytest.raises(ptable.TableError, match="version"):
        ptable.parse(bytes(other))


def test_bad_magic_and_truncation_are_refused(demo: ptable.PartitionTable) -> None:
    with pytest.raises(ptable.TableError, match="magic"):
        ptable.parse(b"NOTTAIPN" + demo.blob[8:])
    with pytest.raises(ptable.TableError, match="sizes"):
        ptable.parse(demo.blob[:-1])
    with pytest.raises(ptable.TableError, match="shorter"):
        ptable.parse(demo.blob[:64])


def test_c_header_names_and_banner() -> None:
    text = ptable.c_header()
    assert text.splitlines()[0] == "/* generated by toolchain/ptable.py; do not edit */"
    for define in ('#define PT_MAGIC "TAIPANPT"', "#define PT_VERSION 6", "#define PT_MAX_CHUNKS 8",
                   "#define PT_FLAG_AUTOSTART 1u", "#define PT_KIND_RAW 0u",
                   "#define PT_KIND_MULTIBOOT 1u", "#define PT_MODE_LONG64 64u",
                   "#define PT_MODE_PROT32 32u", "#define PT_CPUS_MAX 16",
                   "#define PT_WINDOWS_MAX 17", "#define PT_OWNER_MANAGEMENT 0xffu",
                   "#define PT_PLAN_IDLE 0u", "#define PT_PLAN_DEDICATED 1u",
                   "#define PT_PLAN_ROUND_ROBIN 2u", "#define PT_PLAN_CYCLIC 3u"):
        assert define in text
    assert "struct pt_cpu_plan plans[16];" in text and "struct pt_window windows[17];" in text
    for struct_name in ("pt_header", "pt_chunk", "pt_boot", "pt_partition", "pt_cpu_plan",
                        "pt_window"):
        assert f"struct {struct_name} {{" in text


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_c_header_compiles_and_agrees_with_python(tmp_path: Path) -> None:
    (tmp_path / "ptable.h").write_text(ptable.c_header())
    prints = []
    for name, fields in ptable.STRUCTS.items():
        prints.append(f'printf("{name} %zu\\n", sizeof(struct {name}));')
        prints += [f'printf("{name}.{f.name} %zu\\n", offsetof(struct {name}, {f.name}));'
                   for f in fields]
    source = ('#include <stddef.h>\n#include <stdio.h>\n#include "ptable.h"\n'
              "int main(void) {\n    " + "\n    ".join(prints) + "\n    return 0;\n}\n")
    (tmp_path / "probe.c").write_text(source)
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / "probe"),
                    str(tmp_path / "probe.c")], check=True, capture_output=True, text=True)
    output = subprocess.run([str(tmp_path / "probe")], check=True, capture_output=True,
                            text=True).stdout
    got = dict(line.rsplit(" ", 1) for line in output.splitlines())
    for name, fields in ptable.STRUCTS.items():
        assert int(got[name]) == ptable.sizeof(name)
        for f in fields:
            assert int(got[f"{name}.{f.name}"]) == ptable.offsetof(name, f.name), f"{name}.{f.name}"


def test_write_emits_header_and_blob(tmp_path: Path) -> None:
    table = ptable.write(config.load(ROOT / "configs" / "demo.toml"), tmp_path)
    assert (tmp_path / "ptable.bin").read_bytes() == table.blob
    assert (tmp_path / "ptable.h").read_text() == ptable.c_header()


def test_cpuid_upcall_sets_its_flag_beside_autostart(tmp_path: Path) -> None:
    hello = '[[partitions]]\nname = "{}"\nmemory = "16M"\nimage = "guest:hello"\n{}\n'
    path = tmp_path / "system.toml"
    path.write_text(hello.format("plain", "") + hello.format("up", "")
                    + hello.format("idle", "autostart = false")
                    + '[test]\ncpuid_upcall = ["up", "idle"]\n')
    parsed = ptable.parse(ptable.build_table(config.load(path, test_hooks=True)).blob)
    assert [p["flags"] for p in parsed.partitions] == [
        ptable.FLAG_AUTOSTART, ptable.FLAG_AUTOSTART | ptable.FLAG_CPUID_UPCALL,
        ptable.FLAG_CPUID_UPCALL]
    assert "#define PT_FLAG_CPUID_UPCALL 2u" in ptable.c_header()


def _resigned(blob: bytearray) -> bytes:
    blob[ptable.SIGNATURE_AT:ptable.SIGNATURE_AT + 32] = ptable.signature(bytes(blob))
    return bytes(blob)


def test_plans_and_home_cpus_reach_the_table(tmp_path: Path) -> None:
    system = config.load(ROOT / "configs" / "smp.toml")
    table = ptable.parse(ptable.build_table(system).blob)
    header = table.header
    assert (header["cpu_count"], header["management_min_percent"]) == (4, 10)
    assert table.plans() == system.plans
    # Read back with the record layout itself, not through plans().
    records = header["plans"]
    assert [r["kind"] for r in records[:4]] == [ptable.PLAN_KINDS["round-robin"]] + [
        ptable.PLAN_KINDS["dedicated"]] * 3
    assert all(r == records[4] and r["kind"] == 0 and r["window_count"] == 0 for r in records[4:])
    cpu0 = records[0]
    assert cpu0["window_count"] == 2 and cpu0["frame_us"] == 20000
    assert [(w["owner"], w["us"]) for w in cpu0["windows"][:2]] == [(0xFF, 10000), (3, 10000)]
    assert [(w["owner"], w["us"]) for w in records[2]["windows"][:1]] == [(1, 0)]
    assert [p["cpu"] for p in table.partitions] == [1, 2, 3, 0]
    assert [p["vcpus"] for p in table.partitions] == [1, 1, 1, 1]
    names = [table.name(i) for i in range(len(table.partitions))]
    assert config.plan.check(table.plans(), 4, 10, names) == []


def test_a_plan_out_of_range_is_refused_even_when_signed(demo: ptable.PartitionTable) -> None:
    plans = ptable.offsetof("pt_header", "plans")
    owner = plans + ptable.offsetof("pt_cpu_plan", "windows")   # CPU 0's one window: management
    for at, value, match in ((plans, 4, "plans\\[0\\]"), (owner, 2, "plans\\[0\\]"),
                             (plans + 3 * ptable.sizeof("pt_cpu_plan"), 2, "plans\\[3\\]"),
                             (ptable.offsetof("pt_header", "cpu_count"), 17, "cpu_count")):
        blob = bytearray(demo.blob)
        blob[at] = value
        with pytest.raises(ptable.TableError, match=match):
            ptable.parse(_resigned(blob))
    blob = bytearray(demo.blob)
    blob[ptable.HEADER_SIZE + ptable.offsetof("pt_partition", "cpu")] = 3   # the demo plans 3 CPUs
    with pytest.raises(ptable.TableError, match="beyond cpu_count 3"):
        ptable.parse(_resigned(blob))
