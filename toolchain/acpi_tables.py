"""A Linux partition's firmware tables: RSDP, XSDT, MADT, a hardware-reduced FADT and a DSDT (ACPI 6.x)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

# Where the tables sit in guest memory: the BIOS read-only area from 0xE0000,
# where an OS that is given no RSDP address scans for "RSD PTR " (ACPI 6.4,
# 5.2.5.1). The e820 map marks the range ACPI-reclaimable.
TABLES_BASE = 0xE0000
TABLES_END = 0x100000

LAPIC_BASE = 0xFEE00000
IOAPIC_BASE = 0xFEC00000
IOAPIC_ID = 0   # the vCPUs' APIC IDs are 0..n-1; the IOAPIC's ID space is its own
IOAPIC_PINS = 24
COM1_BASE, COM1_IRQ = 0x3F8, 4

# The ports the FADT names and the hypervisor answers (hv/vplatform.c, through
# build/gen/ptable.h). The reset register is the PC's reset control port
# 0xCF9: writing 0x06 there (full reset, CPU reset) is what hardware does too.
SLEEP_CONTROL_PORT = 0x600
SLEEP_STATUS_PORT = 0x601
RESET_PORT = 0xCF9
RESET_VALUE = 0x06
# Sleep control register (ACPI 6.4, 4.8.3.7): SLP_TYPx in bits 4:2, SLP_EN bit 5.
SLP_EN = 1 << 5
SLP_TYP_SHIFT = 2
SLP_TYP_MASK = 0x7
S5_SLP_TYP = 5  # what \_S5 says; the hypervisor reads any SLP_EN as "off"

OEM_ID = b"TAIPAN"
OEM_TABLE_ID = b"TAIPANVM"
CREATOR_ID = b"TPAN"

# FADT flags (ACPI 6.4, table 5.10).
FADT_PWR_BUTTON = 1 << 4       # no fixed-feature power button
FADT_SLP_BUTTON = 1 << 5       # no fixed-feature sleep button
FADT_RESET_REG_SUP = 1 << 10
FADT_HW_REDUCED_ACPI = 1 << 20
FADT_REVISION, FADT_MINOR = 6, 3
FADT_LENGTH = 276
GAS_SYSTEM_IO = 1
GAS_ACCESS_BYTE = 1

MADT_LAPIC, MADT_IOAPIC, MADT_ISO, MADT_LAPIC_NMI = 0, 1, 2, 4
ISO_POLARITY_CONFORMS = 0


def checksum(data: bytes) -> int:
    """The byte that makes `data` (with a zero in its place) sum to 0 mod 256."""
    return -sum(data) & 0xFF


def _with_checksum(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] = 0
    out[at] = checksum(bytes(out))
    return bytes(out)


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: the 36-byte header (ACPI 6.4, 5.2.6) and `body`, checksummed."""
    header = struct.pack("<4sIBB6s8sI4sI", signature, 36 + len(body), revision, 0, OEM_ID,
                         OEM_TABLE_ID, 1, CREATOR_ID, 1)
    return _with_checksum(header + body, 9)


def gas(port: int, width_bits: int = 8) -> bytes:
    """A Generic Address Structure for an I/O port, byte access."""
    return struct.pack("<BBBBQ", GAS_SYSTEM_IO, width_bits, 0, GAS_ACCESS_BYTE, port)


def madt(vcpus: int) -> bytes:
    """One enabled local APIC per vCPU, the IOAPIC, ISA IRQ 0 on GSI 2, LINT1 as NMI."""
    body = struct.pack("<II", LAPIC_BASE, 0)   # flags 0: no 8259 to mask (it reads as masked anyway)
    for number in range(vcpus):
        body += struct.pack("<BBBBI", MADT_LAPIC, 8, number, number, 1)
    body += struct.pack("<BBBBII", MADT_IOAPIC, 12, IOAPIC_ID, 0, IOAPIC_BASE, 0)
    # The PC's one standard override: the PIT's IRQ 0 arrives on pin 2.
    body += struct.pack("<BBBBIH", MADT_ISO, 10, 0, 0, 2, ISO_POLARITY_CONFORMS)
    body += struct.pack("<BBBHB", MADT_LAPIC_NMI, 6, 0xFF, 0, 1)
    return sdt(b"APIC", 5, body)


def fadt(dsdt_address: int) -> bytes:
    """A hardware-reduced FADT: no PM timer, no SCI, no fixed registers but reset and sleep."""
    body = bytearray(FADT_LENGTH - 36)

    def put(offset: int, fmt: str, *values: int | bytes) -> None:
        struct.pack_into(fmt, body, offset - 36, *values)

    put(40, "<I", dsdt_address if dsdt_address < 1 << 32 else 0)
    put(112, "<I", FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_RESET_REG_SUP | FADT_HW_REDUCED_ACPI)
    body[116 - 36:128 - 36] = gas(RESET_PORT)
    put(128, "<B", RESET_VALUE)
    put(131, "<B", FADT_MINOR)
    put(140, "<Q", dsdt_address)
    body[244 - 36:256 - 36] = gas(SLEEP_CONTROL_PORT)
    body[256 - 36:268 - 36] = gas(SLEEP_STATUS_PORT)
    body[268 - 36:276 - 36] = b"TAIPANVM"   # hypervisor vendor identity
    return sdt(b"FACP", FADT_REVISION, bytes(body))


# -- AML (ACPI 6.4, chapter 20) -------------------------------------------------

def pkg_length(payload: int) -> bytes:
    """PkgLength for `payload` bytes that follow it; the encoding counts its own bytes."""
    for extra in range(4):
        total = payload + 1 + extra
        if extra == 0 and total < 0x40:
            return bytes([total])
        if extra and total < 1 << (4 + 8 * extra):
            return bytes([(extra << 6) | (total & 0xF)]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {payload} bytes is too long")


def _package(op: bytes, body: bytes) -> bytes:
    return op + pkg_length(len(body)) + body


def _integer(value: int) -> bytes:
    if value in (0, 1):
        return bytes([value])   # ZeroOp, OneOp
    if value < 0x100:
        return b"\x0A" + bytes([value])
    if value < 0x10000:
        return b"\x0B" + struct.pack("<H", value)
    return b"\x0C" + struct.pack("<I", value)


def _name(seg: bytes, value: bytes) -> bytes:
    return b"\x08" + seg + value


def eisa_id(text: str) -> int:
    """A compressed EISA ID such as PNP0501, as the 32-bit integer AML's EisaId() gives."""
    letters = [ord(c) - 0x40 for c in text[:3]]
    high = (letters[0] << 10) | (letters[1] << 5) | letters[2]
    product = int(text[3:], 16)
    return struct.unpack("<I", bytes([high >> 8, high & 0xFF, product >> 8, product & 0xFF]))[0]


def _serial_resources() -> bytes:
    io = struct.pack("<BBHHBB", 0x47, 0x01, COM1_BASE, COM1_BASE, 0x01, 8)   # IO(Decode16, ...)
    irq = struct.pack("<BH", 0x22, 1 << COM1_IRQ)                           # IRQNoFlags() {4}
    template = io + irq + b"\x79\x00"                                      # EndTag
    return _package(b"\x11", _integer(len(template)) + template)            # Buffer


def dsdt() -> bytes:
    """\\_SB.COM1 (a 16550 at 0x3F8, IRQ 4) and \\_S5, the one sleep state: off."""
    com1 = _package(b"\x5B\x82", b"COM1"
                    + _name(b"_HID", _integer(eisa_id("PNP0501")))
                    + _name(b"_UID", _integer(1))
                    + _name(b"_CRS", _serial_resources()))
    system_bus = _package(b"\x10", b"\\_SB_" + com1)
    s5 = _name(b"\\_S5_", _package(b"\x12", b"\x02" + _integer(S5_SLP_TYP) + _integer(S5_SLP_TYP)))
    return sdt(b"DSDT", 2, system_bus + s5)


@dataclass
class Tables:
    """The tables placed at `base`: their bytes and the RSDP's guest-physical address."""

    base: int
    data: bytes
    rsdp: int
    addresses: dict[str, int]


def build(vcpus: int, base: int = TABLES_BASE) -> Tables:
    """All tables laid out from `base`, RSDP first (16-byte aligned, as the scan requires)."""
    blob = bytearray()
    addresses: dict[str, int] = {}

    def place(name: str, table: bytes) -> int:
        blob.extend(bytes(-len(blob) % 16))
        addresses[name] = base + len(blob)
        blob.extend(table)
        return addresses[name]

    rsdp_at = place("RSDP", bytes(36))
    dsdt_at = place("DSDT", dsdt())
    fadt_at = place("FACP", fadt(dsdt_at))
    madt_at = place("APIC", madt(vcpus))
    xsdt_at = place("XSDT", sdt(b"XSDT", 1, struct.pack("<2Q", fadt_at, madt_at)))
    rsdp = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, OEM_ID, 2, 0, 36, xsdt_at, 0))
    rsdp[8] = checksum(bytes(rsdp[:20]))
    rsdp[32] = checksum(bytes(rsdp))
    blob[0:36] = rsdp
    if base + len(blob) > TABLES_END and base == TABLES_BASE:
        raise ValueError(f"ACPI tables of {len(blob)} bytes outgrow [{TABLES_BASE:#x}, {TABLES_END:#x})")
    return Tables(base, bytes(blob), rsdp_at, addresses)
