"""I/O and MSR permission bitmaps for VMX and SVM, generated from a partition's pass-through policy."""
from __future__ import annotations

from dataclasses import dataclass, field

from toolchain.tables_region import TablesRegion

PORTS = 0x10000
# VMX (Intel SDM vol. 3, 25.6.4 and 25.6.9): I/O bitmap A covers ports
# 0-0x7fff, B 0x8000-0xffff; the MSR bitmap is four 1 KiB quarters: read low,
# read high, write low, write high. A set bit makes the access exit.
VMX_IO_BITMAP_SIZE = 0x1000
VMX_MSR_BITMAP_SIZE = 0x1000
# SVM (AMD APM vol. 2, 15.10 and 15.11): the IOPM is 12 KiB, a bit per port
# plus the bits a multi-byte access past 0xffff checks; the MSRPM is 8 KiB,
# two bits per MSR (read, then write) in three 2 KiB ranges.
SVM_IOPM_SIZE = 0x3000
SVM_MSRPM_SIZE = 0x2000

# (first MSR, byte offset of its read bit quarter) for VMX's two MSR ranges.
_VMX_MSR_RANGES = ((0x00000000, 0x000), (0xC0000000, 0x400))
_VMX_WRITE_OFFSET = 0x800
# (first MSR, byte offset) for SVM's three MSRPM ranges.
_SVM_MSR_RANGES = ((0x00000000, 0x000), (0xC0000000, 0x800), (0xC0010000, 0x1000))
_MSR_RANGE_LEN = 0x2000


@dataclass(frozen=True)
class AccessPolicy:
    """What a partition may touch without a VM exit. Empty: every port and MSR is intercepted."""

    ports: frozenset[int] = field(default_factory=frozenset)
    msrs: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def passing(cls, ranges: list[tuple[int, int]]) -> AccessPolicy:
        """The policy that passes through the inclusive port `ranges` and nothing else."""
        return cls(ports=frozenset(p for first, last in ranges for p in range(first, last + 1)))

    def __post_init__(self) -> None:
        for port in self.ports:
            if not 0 <= port < PORTS:
                raise ValueError(f"port {port:#x} is not an x86 I/O port")
        for msr in self.msrs:
            if not any(first <= msr < first + _MSR_RANGE_LEN for first, _ in _SVM_MSR_RANGES):
                raise ValueError(f"MSR {msr:#x} lies outside every MSR bitmap range")


def _clear_bit(bitmap: bytearray, bit: int) -> None:
    bitmap[bit // 8] &= ~(1 << (bit % 8)) & 0xFF


def vmx_io_bitmaps(policy: AccessPolicy) -> tuple[bytes, bytes]:
    """Bitmaps A and B."""
    both = bytearray(b"\xff" * 2 * VMX_IO_BITMAP_SIZE)
    for port in policy.ports:
        _clear_bit(both, port)
    return bytes(both[:VMX_IO_BITMAP_SIZE]), bytes(both[VMX_IO_BITMAP_SIZE:])


def vmx_msr_bitmap(policy: AccessPolicy) -> bytes:
    bitmap = bytearray(b"\xff" * VMX_MSR_BITMAP_SIZE)
    for msr in policy.msrs:
        for first, offset in _VMX_MSR_RANGES:
            if first <= msr < first + _MSR_RANGE_LEN:
                bit = offset * 8 + msr - first
                _clear_bit(bitmap, bit)
                _clear_bit(bitmap, bit + _VMX_WRITE_OFFSET * 8)
        # AMD's 0xc0010000 range has no VMX bitmap: such MSRs always exit on Intel.
    return bytes(bitmap)


def svm_iopm(policy: AccessPolicy) -> bytes:
    bitmap = bytearray(b"\xff" * SVM_IOPM_SIZE)
    for port in policy.ports:
        _clear_bit(bitmap, port)
    return bytes(bitmap)


def svm_msrpm(policy: AccessPolicy) -> bytes:
    bitmap = bytearray(b"\xff" * SVM_MSRPM_SIZE)
    for msr in policy.msrs:
        for first, offset in _SVM_MSR_RANGES:
            if first <= msr < first + _MSR_RANGE_LEN:
                bit = offset * 8 + (msr - first) * 2
                _clear_bit(bitmap, bit)      # read
                _clear_bit(bitmap, bit + 1)  # write
    return bytes(bitmap)


@dataclass(frozen=True)
class BitmapAddresses:
    vmx_io_bitmap_a: int
    vmx_io_bitmap_b: int
    vmx_msr_bitmap: int
    svm_iopm: int
    svm_msrpm: int


def place_bitmaps(region: TablesRegion, policy: AccessPolicy) -> BitmapAddresses:
    """Generate all five bitmaps into the tables region; each starts on a 4 KiB page as both
    vendors require, and SVM's multi-page maps are contiguous."""
    placed = {}
    io_a, io_b = vmx_io_bitmaps(policy)
    for name, data in (("vmx_io_bitmap_a", io_a), ("vmx_io_bitmap_b", io_b),
                       ("vmx_msr_bitmap", vmx_msr_bitmap(policy)),
                       ("svm_iopm", svm_iopm(policy)), ("svm_msrpm", svm_msrpm(policy))):
        address = region.alloc(len(data))
        region.write(address, data)
        placed[name] = address
    return BitmapAddresses(**placed)
