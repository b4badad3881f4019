"""A linux partition's ACPI tables, read back by an independent parser: acpica-tools' `iasl -d`."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from toolchain import acpi_tables


def disassemble(tmp_path: Path, tables: acpi_tables.Tables, name: str) -> str:
    """iasl's text for one table, with its own verdict on the checksum."""
    at = tables.addresses[name] - tables.base
    length = 36 if name == "RSDP" else struct.unpack_from("<I", tables.data, at + 4)[0]
    raw = tmp_path / f"{name.lower()}.dat"
    raw.write_bytes(tables.data[at:at + length])
    if shutil.which("iasl") is None:
        pytest.fail("iasl is missing: scripts/bootstrap installs acpica-tools")
    result = subprocess.run(["iasl", "-d", str(raw)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = raw.with_suffix(".dsl").read_text()
    assert not re.search(r"incorrect|invalid|error", result.stdout + result.stderr + text, re.I), text
    return text


@pytest.mark.parametrize("vcpus", [1, 2])
def test_madt_has_a_lapic_per_vcpu_the_ioapic_and_the_irq0_override(tmp_path: Path, vcpus: int) -> None:
    text = disassemble(tmp_path, acpi_tables.build(vcpus), "APIC")
    assert re.search(r"Local Apic Address : FEE00000", text)
    ids = re.findall(r"Local Apic ID : ([0-9A-F]{2})", text)
    assert ids == [f"{n:02X}" for n in range(vcpus)]
    assert re.search(r"Subtable Type : 01 \[I/O APIC\].*?Address : FEC00000", text, re.S)
    assert re.search(r"Interrupt Source Override\].*?Source : 00.*?Interrupt : 00000002", text, re.S)


def test_fadt_is_hardware_reduced_with_reset_and_sleep_ports(tmp_path: Path) -> None:
    text = disassemble(tmp_path, acpi_tables.build(1), "FACP")
    assert re.search(r"Hardware Reduced \(V5\) : 1", text)
    assert re.search(r"Reset Register Supported \(V2\) : 1", text)
    reset = text[text.index("Reset Register :"):]
    assert re.search(r"Space ID : 01 \[SystemIO\].*?Address : 0000000000000CF9", reset, re.S)
    assert re.search(r"Value to cause reset : 06", text)
    control = text[text.index("Sleep Control Register"):]
    assert re.search(rf"Address : {acpi_tables.SLEEP_CONTROL_PORT:016X}", control)
    status = text[text.index("Sleep Status Register"):]
    assert re.search(rf"Address : {acpi_tables.SLEEP_STATUS_PORT:016X}", status)


def test_dsdt_declares_com1_and_s5(tmp_path: Path) -> None:
    text = disassemble(tmp_path, acpi_tables.build(1), "DSDT")
    assert 'EisaId ("PNP0501")' in text
    io = re.sub(r"//[^\n]*", "", text[text.index("IO (Decode16"):])
    assert re.match(r"IO \(Decode16,\s*0x03F8,\s*0x03F8,\s*0x01,\s*0x08,", io), io
    assert re.search(r"IRQNoFlags \(\)\s*\{4\}", text)
    assert re.search(r"Name \(\\_S5, Package \(0x02\)", text)


def test_rsdp_and_xsdt_point_at_the_tables(tmp_path: Path) -> None:
    tables = acpi_tables.build(1)
    # iasl cannot read a lone RSDP: its two checksums and fields by the spec's layout (5.2.5.3).
    rsdp = tables.data[:36]
    assert rsdp[:8] == b"RSD PTR " and sum(rsdp[:20]) % 256 == 0 and sum(rsdp) % 256 == 0
    revision, length, xsdt_at = rsdp[15], *struct.unpack_from("<IQ", rsdp, 20)
    assert (revision, length, xsdt_at) == (2, 36, tables.addresses["XSDT"])
    assert tables.rsdp == tables.base and tables.base % 16 == 0
    xsdt = disassemble(tmp_path, tables, "XSDT")
    pointers = re.findall(r"ACPI Table Address\s+\d+ : ([0-9A-F]{16})", xsdt)
    assert [int(p, 16) for p in pointers] == [tables.addresses["FACP"], tables.addresses["APIC"]]


def test_a_flipped_byte_is_caught_by_the_parser(tmp_path: Path) -> None:
    tables = acpi_tables.build(1)
    at = tables.addresses["APIC"] - tables.base
    broken = bytearray(tables.data)
    broken[at + 40] ^= 0x01
    with pytest.raises(AssertionError, match="(?i)checksum"):
        disassemble(tmp_path, acpi_tables.Tables(tables.base, bytes(broken), tables.rsdp,
                                                 tables.addresses), "APIC")


def test_aml_package_lengths_encode_as_the_spec_says() -> None:
    assert acpi_tables.pkg_length(10) == bytes([11])
    assert acpi_tables.pkg_length(0x3E) == bytes([0x3F])
    # Two bytes: 0x40 + 2 = 0x42 in total -> low nibble 2, then 0x04.
    assert acpi_tables.pkg_length(0x40) == bytes([0x42, 0x04])
    assert acpi_tables.eisa_id("PNP0501") == 0x0105D041
