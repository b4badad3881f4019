"""The one table of the MSRs a Taipan vCPU has, emitted as build/gen/vmsr_table.h and docs/vcpu.md's MSR table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GENERATOR = "toolchain/msrs.py"
HEADER = "vmsr_table.h"

# How hv/vmsr.c answers an MSR (its kind):
KINDS = {
    "REG": "state the backend holds (VMCS/VMCB field or switched MSR), per vCPU; checked as the CPU checks it",
    "TSC": "the vCPU's TSC: host TSC + the vCPU's TSC offset; a write sets the offset",
    "TSC_ADJUST": "per vCPU; a write moves the TSC by the difference, as IA32_TSC_ADJUST does",
    "APIC_BASE": "per vCPU: the virtual APIC's page and mode (hv/vlapic.c): EN, EXTD, base; mode changes as in SDM 11.12.5",
    "MTRR_DEF_TYPE": "per vCPU: E and the default type; no fixed or variable ranges exist",
    "CONST": "read-only: reads the value, every write raises #GP",
    "ZERO_WRITABLE": "reads 0; writes are accepted and dropped (a loader's handshake register)",
    "ZERO_ONLY": "reads 0; writing 0 is accepted, anything else raises #GP (no such feature offered)",
    "PLATFORM_INFO": "read-only: the maximum non-turbo ratio (bits 15:8) from the TSC rate at 100 MHz, writes #GP",
}
VENDORS = {"both": 3, "intel": 1, "amd": 2}


@dataclass(frozen=True)
class Msr:
    index: int
    name: str
    vendors: str     # "both", "intel" or "amd": on the other vendor's CPUs the MSR does not exist (#GP)
    kind: str
    reset: int       # the value after vCPU reset (for REG: what vcpu_reset writes)
    reg: str = ""    # REG: the enum vcpu_reg it lives in
    note: str = ""

    @property
    def per_vcpu(self) -> bool:
        return self.kind not in ("CONST", "ZERO_WRITABLE", "ZERO_ONLY", "PLATFORM_INFO")


PAT_RESET = 0x0007040600070406   # WB, WT, UC-, UC, repeated: the PAT after RESET
APIC_BASE_RESET = 0xFEE00900     # base 0xfee00000, EN, BSP
# E (bit 11) set with write-back as the default type: what firmware leaves on a machine whose
# RAM is all write-back and which offers no fixed or variable ranges (MTRRcap below).
MTRR_DEF_TYPE_RESET = 0x806
# Write-combining supported (bit 10), no fixed ranges (bit 8 clear), no variable ranges (VCNT 0).
MTRRCAP = 0x400
# Fast strings on (bit 0); branch trace storage and PEBS unavailable (bits 11, 12).
MISC_ENABLE = 0x1801
# Locked (bit 0), VMX off inside and outside SMX: the guest's CPUID offers no VMX.
FEATURE_CONTROL = 0x1
# SVM disabled (SVMDIS, bit 4) and locked (bit 3): the guest's CPUID offers no SVM.
VM_CR = 0x18
# TscFreqSel (bit 24): the TSC counts at the P0 frequency, as Linux checks on family 10h and later.
HWCR = 0x01000000

MSRS: list[Msr] = [
    Msr(0x10, "IA32_TSC", "both", "TSC", 0, note="reset: the host's TSC (offset 0)"),
    Msr(0x17, "IA32_PLATFORM_ID", "intel", "CONST", 0),
    Msr(0x1B, "IA32_APIC_BASE", "both", "APIC_BASE", APIC_BASE_RESET),
    Msr(0x3A, "IA32_FEATURE_CONTROL", "intel", "CONST", FEATURE_CONTROL),
    Msr(0x3B, "IA32_TSC_ADJUST", "both", "TSC_ADJUST", 0),
    Msr(0x8B, "IA32_BIOS_SIGN_ID", "both", "ZERO_WRITABLE", 0,
        note="microcode revision 0 (AMD: PATCH_LEVEL)"),
    Msr(0xCE, "MSR_PLATFORM_INFO", "intel", "PLATFORM_INFO", 0),
    Msr(0xFE, "IA32_MTRRCAP", "both", "CONST", MTRRCAP),
    Msr(0x140, "MSR_MISC_FEATURES_ENABLES", "intel", "ZERO_ONLY", 0, note="no CPUID faulting"),
    Msr(0x174, "IA32_SYSENTER_CS", "both", "REG", 0, "VREG_SYSENTER_CS"),
    Msr(0x175, "IA32_SYSENTER_ESP", "both", "REG", 0, "VREG_SYSENTER_ESP"),
    Msr(0x176, "IA32_SYSENTER_EIP", "both", "REG", 0, "VREG_SYSENTER_EIP"),
    Msr(0x179, "IA32_MCG_CAP", "both", "CONST", 0, note="no machine-check banks"),
    Msr(0x17A, "IA32_MCG_STATUS", "both", "ZERO_ONLY", 0),
    Msr(0x1A0, "IA32_MISC_ENABLE", "intel", "CONST", MISC_ENABLE),
    Msr(0x1D9, "IA32_DEBUGCTL", "both", "ZERO_ONLY", 0, note="no LBR or BTF"),
    Msr(0x277, "IA32_PAT", "both", "REG", PAT_RESET, "VREG_PAT", note="each entry a defined type"),
    Msr(0x2FF, "IA32_MTRR_DEF_TYPE", "both", "MTRR_DEF_TYPE", MTRR_DEF_TYPE_RESET),
    Msr(0xC0000080, "IA32_EFER", "both", "REG", 0, "VREG_EFER",
        note="SCE, LME, NXE (if CPUID has NX); LMA read-only; SVME never"),
    Msr(0xC0000081, "STAR", "both", "REG", 0, "VREG_STAR"),
    Msr(0xC0000082, "LSTAR", "both", "REG", 0, "VREG_LSTAR", note="canonical"),
    Msr(0xC0000083, "CSTAR", "both", "REG", 0, "VREG_CSTAR", note="canonical"),
    Msr(0xC0000084, "SFMASK", "both", "REG", 0, "VREG_SFMASK", note="bits 63:32 reserved"),
    Msr(0xC0000100, "FS_BASE", "both", "REG", 0, "VREG_FS_BASE", note="canonical"),
    Msr(0xC0000101, "GS_BASE", "both", "REG", 0, "VREG_GS_BASE", note="canonical"),
    Msr(0xC0000102, "KERNEL_GS_BASE", "both", "REG", 0, "VREG_KERNEL_GS_BASE", note="canonical"),
    Msr(0xC0000103, "TSC_AUX", "both", "REG", 0, "VREG_TSC_AUX",
        note="bits 63:32 reserved; RDTSCP reads it"),
    Msr(0xC0010010, "SYSCFG", "amd", "CONST", 0),
    Msr(0xC0010015, "HWCR", "amd", "CONST", HWCR),
    Msr(0xC0010114, "VM_CR", "amd", "CONST", VM_CR),
    Msr(0xC0010117, "VM_HSAVE_PA", "amd", "CONST", 0),
]


def _check() -> None:
    seen: set[int] = set()
    for m in MSRS:
        if m.index in seen:
            raise ValueError(f"MSR {m.index:#x} listed twice")
        seen.add(m.index)
        if m.kind not in KINDS or m.vendors not in VENDORS:
            raise ValueError(f"MSR {m.name}: kind {m.kind!r} or vendors {m.vendors!r} unknown")
        if (m.kind == "REG") != bool(m.reg):
            raise ValueError(f"MSR {m.name}: a REG MSR names its vcpu_reg, no other does")


def header() -> str:
    """build/gen/vmsr_table.h: the kinds and the table, sorted by index."""
    _check()
    lines = [f"/* Generated by {GENERATOR}; do not edit. */", "#pragma once", "#include <stdint.h>",
             '#include "vcpu.h"', "", "enum vmsr_kind {"]
    lines += [f"    VMSR_{kind},   /* {text} */" for kind, text in KINDS.items()]
    lines += ["};", "", "/* Which vendors' CPUs have the MSR. */"]
    lines += [f"#define VMSR_VENDOR_{name.upper()} {bit}u" for name, bit in VENDORS.items()]
    lines += ["", "struct vmsr_desc {", "    uint32_t index;", "    uint8_t kind;", "    uint8_t vendors;",
              "    uint8_t reg;", "    uint64_t reset;", "    const char *name;", "};", "",
              "static const struct vmsr_desc vmsr_table[] = {"]
    for m in sorted(MSRS, key=lambda m: m.index):
        reg = m.reg or "0"
        lines.append(f"    {{ 0x{m.index:08x}u, VMSR_{m.kind}, VMSR_VENDOR_{m.vendors.upper()}, {reg}, "
                     f"0x{m.reset:x}ull, \"{m.name}\" }},")
    lines += ["};", f"#define VMSR_COUNT {len(MSRS)}u"]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The MSR table of docs/vcpu.md (tests/test_msrs.py checks that the page holds it)."""
    _check()
    rows = ["| MSR | name | vendors | per vCPU | reset | behaviour |", "|---|---|---|---|---|---|"]
    for m in sorted(MSRS, key=lambda m: m.index):
        text = KINDS[m.kind] + (f"; {m.note}" if m.note else "")
        rows.append(f"| `{m.index:#x}` | {m.name} | {m.vendors} | {'yes' if m.per_vcpu else 'no'} | "
                    f"`{m.reset:#x}` | {text} |")
    return "\n".join(rows) + "\n"


def generate_headers(gen_dir: Path) -> None:
    """Write build/gen/vmsr_table.h, leaving an unchanged file untouched so make rebuilds nothing."""
    text = header()
    path = gen_dir / HEADER
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
