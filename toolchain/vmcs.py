"""The one table of VMCS field encodings, VMX control bits and exit reasons Taipan uses, emitted as build/gen/vmcs_fields.h."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

GENERATOR = "toolchain/vmcs.py"
HEADER = "vmcs_fields.h"


class Width(enum.IntEnum):
    """Encoding bits 14:13 (Intel SDM vol. 3D, appendix B)."""

    W16 = 0
    W64 = 1
    W32 = 2
    NATURAL = 3


class Kind(enum.IntEnum):
    """Encoding bits 11:10: which area of the VMCS the field belongs to."""

    CONTROL = 0
    EXIT_INFO = 1   # "VM-exit information", read-only data
    GUEST = 2
    HOST = 3


@dataclass(frozen=True)
class Field:
    """One VMCS component: its SDM encoding as printed, and what that encoding claims."""

    name: str
    width: Width
    kind: Kind
    index: int
    encoding: int   # copied from the SDM; the tests recompute it from width, kind and index


W16, W64, W32, NAT = Width.W16, Width.W64, Width.W32, Width.NATURAL
C, X, G, H = Kind.CONTROL, Kind.EXIT_INFO, Kind.GUEST, Kind.HOST

# Only the fields Taipan reads or writes. 64-bit fields are accessed "full"
# (access type 0): in 64-bit mode one VMWRITE covers both halves.
FIELDS: list[Field] = [
    # 16-bit guest state
    Field("GUEST_ES_SELECTOR", W16, G, 0, 0x0800),
    Field("GUEST_CS_SELECTOR", W16, G, 1, 0x0802),
    Field("GUEST_SS_SELECTOR", W16, G, 2, 0x0804),
    Field("GUEST_DS_SELECTOR", W16, G, 3, 0x0806),
    Field("GUEST_FS_SELECTOR", W16, G, 4, 0x0808),
    Field("GUEST_GS_SELECTOR", W16, G, 5, 0x080A),
    Field("GUEST_LDTR_SELECTOR", W16, G, 6, 0x080C),
    Field("GUEST_TR_SELECTOR", W16, G, 7, 0x080E),
    # 16-bit host state
    Field("HOST_ES_SELECTOR", W16, H, 0, 0x0C00),
    Field("HOST_CS_SELECTOR", W16, H, 1, 0x0C02),
    Field("HOST_SS_SELECTOR", W16, H, 2, 0x0C04),
    Field("HOST_DS_SELECTOR", W16, H, 3, 0x0C06),
    Field("HOST_FS_SELECTOR", W16, H, 4, 0x0C08),
    Field("HOST_GS_SELECTOR", W16, H, 5, 0x0C0A),
    Field("HOST_TR_SELECTOR", W16, H, 6, 0x0C0C),
    # 64-bit controls
    Field("IO_BITMAP_A", W64, C, 0, 0x2000),
    Field("IO_BITMAP_B", W64, C, 1, 0x2002),
    Field("MSR_BITMAP", W64, C, 2, 0x2004),
    Field("VM_EXIT_MSR_STORE_ADDR", W64, C, 3, 0x2006),
    Field("VM_EXIT_MSR_LOAD_ADDR", W64, C, 4, 0x2008),
    Field("VM_ENTRY_MSR_LOAD_ADDR", W64, C, 5, 0x200A),
    Field("TSC_OFFSET", W64, C, 8, 0x2010),
    Field("EPT_POINTER", W64, C, 13, 0x201A),
    # 64-bit read-only data
    Field("GUEST_PHYSICAL_ADDRESS", W64, X, 0, 0x2400),
    # 64-bit guest state
    Field("VMCS_LINK_POINTER", W64, G, 0, 0x2800),
    Field("GUEST_IA32_DEBUGCTL", W64, G, 1, 0x2802),
    Field("GUEST_IA32_PAT", W64, G, 2, 0x2804),
    Field("GUEST_IA32_EFER", W64, G, 3, 0x2806),
    Field("GUEST_PDPTE0", W64, G, 5, 0x280A),
    Field("GUEST_PDPTE1", W64, G, 6, 0x280C),
    Field("GUEST_PDPTE2", W64, G, 7, 0x280E),
    Field("GUEST_PDPTE3", W64, G, 8, 0x2810),
    # 64-bit host state
    Field("HOST_IA32_PAT", W64, H, 0, 0x2C00),
    Field("HOST_IA32_EFER", W64, H, 1, 0x2C02),
    # 32-bit controls
    Field("PIN_BASED_CONTROLS", W32, C, 0, 0x4000),
    Field("PROC_BASED_CONTROLS", W32, C, 1, 0x4002),
    Field("EXCEPTION_BITMAP", W32, C, 2, 0x4004),
    Field("PAGE_FAULT_ERROR_MASK", W32, C, 3, 0x4006),
    Field("PAGE_FAULT_ERROR_MATCH", W32, C, 4, 0x4008),
    Field("CR3_TARGET_COUNT", W32, C, 5, 0x400A),
    Field("EXIT_CONTROLS", W32, C, 6, 0x400C),
    Field("EXIT_MSR_STORE_COUNT", W32, C, 7, 0x400E),
    Field("EXIT_MSR_LOAD_COUNT", W32, C, 8, 0x4010),
    Field("ENTRY_CONTROLS", W32, C, 9, 0x4012),
    Field("ENTRY_MSR_LOAD_COUNT", W32, C, 10, 0x4014),
    Field("ENTRY_INTR_INFO", W32, C, 11, 0x4016),
    Field("ENTRY_EXCEPTION_ERROR", W32, C, 12, 0x4018),
    Field("ENTRY_INSTRUCTION_LEN", W32, C, 13, 0x401A),
    Field("TPR_THRESHOLD", W32, C, 14, 0x401C),
    Field("PROC_BASED_CONTROLS2", W32, C, 15, 0x401E),
    # 32-bit read-only data
    Field("VM_INSTRUCTION_ERROR", W32, X, 0, 0x4400),
    Field("EXIT_REASON", W32, X, 1, 0x4402),
    Field("EXIT_INTR_INFO", W32, X, 2, 0x4404),
    Field("EXIT_INTR_ERROR", W32, X, 3, 0x4406),
    Field("IDT_VECTORING_INFO", W32, X, 4, 0x4408),
    Field("IDT_VECTORING_ERROR", W32, X, 5, 0x440A),
    Field("EXIT_INSTRUCTION_LEN", W32, X, 6, 0x440C),
    Field("EXIT_INSTRUCTION_INFO", W32, X, 7, 0x440E),
    # 32-bit guest state
    Field("GUEST_ES_LIMIT", W32, G, 0, 0x4800),
    Field("GUEST_CS_LIMIT", W32, G, 1, 0x4802),
    Field("GUEST_SS_LIMIT", W32, G, 2, 0x4804),
    Field("GUEST_DS_LIMIT", W32, G, 3, 0x4806),
    Field("GUEST_FS_LIMIT", W32, G, 4, 0x4808),
    Field("GUEST_GS_LIMIT", W32, G, 5, 0x480A),
    Field("GUEST_LDTR_LIMIT", W32, G, 6, 0x480C),
    Field("GUEST_TR_LIMIT", W32, G, 7, 0x480E),
    Field("GUEST_GDTR_LIMIT", W32, G, 8, 0x4810),
    Field("GUEST_IDTR_LIMIT", W32, G, 9, 0x4812),
    Field("GUEST_ES_ACCESS", W32, G, 10, 0x4814),
    Field("GUEST_CS_ACCESS", W32, G, 11, 0x4816),
    Field("GUEST_SS_ACCESS", W32, G, 12, 0x4818),
    Field("GUEST_DS_ACCESS", W32, G, 13, 0x481A),
    Field("GUEST_FS_ACCESS", W32, G, 14, 0x481C),
    Field("GUEST_GS_ACCESS", W32, G, 15, 0x481E),
    Field("GUEST_LDTR_ACCESS", W32, G, 16, 0x4820),
    Field("GUEST_TR_ACCESS", W32, G, 17, 0x4822),
    Field("GUEST_INTERRUPTIBILITY", W32, G, 18, 0x4824),
    Field("GUEST_ACTIVITY_STATE", W32, G, 19, 0x4826),
    Field("GUEST_SMBASE", W32, G, 20, 0x4828),
    Field("GUEST_SYSENTER_CS", W32, G, 21, 0x482A),
    Field("PREEMPTION_TIMER_VALUE", W32, G, 23, 0x482E),
    # 32-bit host state
    Field("HOST_SYSENTER_CS", W32, H, 0, 0x4C00),
    # natural-width controls
    Field("CR0_GUEST_HOST_MASK", NAT, C, 0, 0x6000),
    Field("CR4_GUEST_HOST_MASK", NAT, C, 1, 0x6002),
    Field("CR0_READ_SHADOW", NAT, C, 2, 0x6004),
    Field("CR4_READ_SHADOW", NAT, C, 3, 0x6006),
    # natural-width read-only data
    Field("EXIT_QUALIFICATION", NAT, X, 0, 0x6400),
    Field("GUEST_LINEAR_ADDRESS", NAT, X, 5, 0x640A),
    # natural-width guest state
    Field("GUEST_CR0", NAT, G, 0, 0x6800),
    Field("GUEST_CR3", NAT, G, 1, 0x6802),
    Field("GUEST_CR4", NAT, G, 2, 0x6804),
    Field("GUEST_ES_BASE", NAT, G, 3, 0x6806),
    Field("GUEST_CS_BASE", NAT, G, 4, 0x6808),
    Field("GUEST_SS_BASE", NAT, G, 5, 0x680A),
    Field("GUEST_DS_BASE", NAT, G, 6, 0x680C),
    Field("GUEST_FS_BASE", NAT, G, 7, 0x680E),
    Field("GUEST_GS_BASE", NAT, G, 8, 0x6810),
    Field("GUEST_LDTR_BASE", NAT, G, 9, 0x6812),
    Field("GUEST_TR_BASE", NAT, G, 10, 0x6814),
    Field("GUEST_GDTR_BASE", NAT, G, 11, 0x6816),
    Field("GUEST_IDTR_BASE", NAT, G, 12, 0x6818),
    Field("GUEST_DR7", NAT, G, 13, 0x681A),
    Field("GUEST_RSP", NAT, G, 14, 0x681C),
    Field("GUEST_RIP", NAT, G, 15, 0x681E),
    Field("GUEST_RFLAGS", NAT, G, 16, 0x6820),
    Field("GUEST_PENDING_DEBUG", NAT, G, 17, 0x6822),
    Field("GUEST_SYSENTER_ESP", NAT, G, 18, 0x6824),
    Field("GUEST_SYSENTER_EIP", NAT, G, 19, 0x6826),
    # natural-width host state
    Field("HOST_CR0", NAT, H, 0, 0x6C00),
    Field("HOST_CR3", NAT, H, 1, 0x6C02),
    Field("HOST_CR4", NAT, H, 2, 0x6C04),
    Field("HOST_FS_BASE", NAT, H, 3, 0x6C06),
    Field("HOST_GS_BASE", NAT, H, 4, 0x6C08),
    Field("HOST_TR_BASE", NAT, H, 5, 0x6C0A),
    Field("HOST_GDTR_BASE", NAT, H, 6, 0x6C0C),
    Field("HOST_IDTR_BASE", NAT, H, 7, 0x6C0E),
    Field("HOST_SYSENTER_ESP", NAT, H, 8, 0x6C10),
    Field("HOST_SYSENTER_EIP", NAT, H, 9, 0x6C12),
    Field("HOST_RSP", NAT, H, 10, 0x6C14),
    Field("HOST_RIP", NAT, H, 11, 0x6C16),
]

# Control bits, by control word (SDM vol. 3C, 25.6 and 25.7-25.8). Each group's
# "WANT" set is what Taipan asks for; capability MSRs then decide the rest.
CONTROL_BITS: dict[str, dict[str, int]] = {
    "PIN": {
        "EXTINT_EXITING": 0,       # host interrupts end the slice instead of reaching the guest's IDT
        "NMI_EXITING": 3,
        "VIRTUAL_NMIS": 5,
        "PREEMPTION_TIMER": 6,     # the slice's deadline
    },
    "PROC": {
        "INTR_WINDOW_EXITING": 2,
        "USE_TSC_OFFSETTING": 3,
        "HLT_EXITING": 7,
        "INVLPG_EXITING": 9,
        "MWAIT_EXITING": 10,
        "RDPMC_EXITING": 11,
        "RDTSC_EXITING": 12,
        "CR3_LOAD_EXITING": 15,    # default-1 without the TRUE MSRs; EPT makes it pointless
        "CR3_STORE_EXITING": 16,
        "CR8_LOAD_EXITING": 19,
        "CR8_STORE_EXITING": 20,
        "MOV_DR_EXITING": 23,
        "UNCOND_IO_EXITING": 24,
        "USE_IO_BITMAPS": 25,
        "MONITOR_TRAP_FLAG": 27,
        "USE_MSR_BITMAPS": 28,
        "MONITOR_EXITING": 29,
        "PAUSE_EXITING": 30,
        "ACTIVATE_SECONDARY": 31,
    },
    "PROC2": {
        "ENABLE_EPT": 1,
        "DESCRIPTOR_EXITING": 2,
        "ENABLE_RDTSCP": 3,
        "ENABLE_VPID": 5,
        "WBINVD_EXITING": 6,
        "UNRESTRICTED_GUEST": 7,
        "ENABLE_INVPCID": 12,
        "ENABLE_XSAVES": 20,
    },
    "EXIT_CTL": {
        "SAVE_DEBUG_CONTROLS": 2,
        "HOST_ADDR_SPACE_SIZE": 9,   # the host runs in 64-bit mode
        "ACK_INTR_ON_EXIT": 15,      # take the interrupt off the controller, or it stays pending forever with host IF=0
        "SAVE_PAT": 18,
        "LOAD_PAT": 19,
        "SAVE_EFER": 20,
        "LOAD_EFER": 21,
        "SAVE_PREEMPTION_TIMER": 22,
    },
    "ENTRY_CTL": {
        "LOAD_DEBUG_CONTROLS": 2,
        "IA32E_MODE_GUEST": 9,       # set per vCPU when the guest starts in long mode
        "LOAD_PAT": 14,
        "LOAD_EFER": 15,
    },
}

# What Taipan requests. REQUIRED bits must be allowed-1, or vcpu_create refuses
# and says which; OPTIONAL bits are taken where the CPU has them.
REQUIRED: dict[str, list[str]] = {
    "PIN": ["EXTINT_EXITING", "PREEMPTION_TIMER"],
    # TSC offsetting: each vCPU's IA32_TSC is the host's plus its own offset.
    # CR8 exiting: without a TPR shadow, MOV to/from CR8 would reach the host's own
    # APIC TPR; the exits give the guest its virtual APIC's (hv/vcr.c).
    "PROC": ["HLT_EXITING", "USE_TSC_OFFSETTING", "USE_IO_BITMAPS", "USE_MSR_BITMAPS", "ACTIVATE_SECONDARY",
             "CR8_LOAD_EXITING", "CR8_STORE_EXITING"],
    "PROC2": ["ENABLE_EPT"],
    "EXIT_CTL": ["HOST_ADDR_SPACE_SIZE", "ACK_INTR_ON_EXIT", "SAVE_EFER", "LOAD_EFER"],
    "ENTRY_CTL": ["LOAD_EFER"],
}
OPTIONAL: dict[str, list[str]] = {
    "PIN": [],
    "PROC": [],
    # Without these a guest's RDTSCP / INVPCID / XSAVES raise #UD; with
    # unrestricted guest, a guest may run with paging off.
    "PROC2": ["UNRESTRICTED_GUEST", "ENABLE_RDTSCP", "ENABLE_INVPCID", "ENABLE_XSAVES"],
    "EXIT_CTL": [],
    "ENTRY_CTL": [],
}

# Basic exit reasons (SDM vol. 3D, appendix C).
EXIT_REASONS: dict[str, int] = {
    "EXCEPTION_NMI": 0,
    "EXTERNAL_INTERRUPT": 1,
    "TRIPLE_FAULT": 2,
    "INIT": 3,
    "SIPI": 4,
    "INTERRUPT_WINDOW": 7,
    "NMI_WINDOW": 8,
    "TASK_SWITCH": 9,
    "CPUID": 10,
    "GETSEC": 11,
    "HLT": 12,
    "INVD": 13,
    "INVLPG": 14,
    "RDPMC": 15,
    "RDTSC": 16,
    "VMCALL": 18,
    "CR_ACCESS": 28,
    "DR_ACCESS": 29,
    "IO_INSTRUCTION": 30,
    "RDMSR": 31,
    "WRMSR": 32,
    "ENTRY_INVALID_GUEST_STATE": 33,
    "ENTRY_MSR_LOADING": 34,
    "MWAIT": 36,
    "MONITOR_TRAP_FLAG": 37,
    "MONITOR": 39,
    "PAUSE": 40,
    "ENTRY_MACHINE_CHECK": 41,
    "EPT_VIOLATION": 48,
    "EPT_MISCONFIG": 49,
    "INVEPT": 50,
    "RDTSCP": 51,
    "PREEMPTION_TIMER": 52,
    "WBINVD": 54,
    "XSETBV": 55,
}


def control_mask(group: str, names: list[str]) -> int:
    bits = CONTROL_BITS[group]
    mask = 0
    for name in names:
        mask |= 1 << bits[name]
    return mask


def header() -> str:
    """build/gen/vmcs_fields.h: field encodings, control bits and the requested sets, exit reasons."""
    lines = [f"/* Generated by {GENERATOR}; do not edit. */", "#pragma once", "",
             "/* VMCS field encodings (Intel SDM vol. 3D, appendix B). */"]
    lines += [f"#define VMCS_{f.name} 0x{f.encoding:04x}u" for f in FIELDS]
    lines += ["", "/* VM-execution, exit and entry control bits (SDM vol. 3C, 25.6-25.8). */"]
    for group, bits in CONTROL_BITS.items():
        lines += [f"#define VMX_{group}_{name} (1u << {bit})" for name, bit in bits.items()]
    lines += ["", "/* What Taipan requests: REQUIRED must be allowed-1, OPTIONAL is taken where offered. */"]
    for group in CONTROL_BITS:
        lines.append(f"#define VMX_{group}_REQUIRED 0x{control_mask(group, REQUIRED[group]):08x}u")
        lines.append(f"#define VMX_{group}_OPTIONAL 0x{control_mask(group, OPTIONAL[group]):08x}u")
    lines += ["", "/* Basic exit reasons, bits 15:0 of the exit-reason field (SDM vol. 3D, appendix C). */"]
    lines += [f"#define VMX_EXIT_REASON_{name} {number}u" for name, number in EXIT_REASONS.items()]
    lines.append("#define VMX_EXIT_REASON_ENTRY_FAILED_BIT (1u << 31)")
    return "\n".join(lines) + "\n"


def generate_headers(gen_dir: Path) -> None:
    """Write build/gen/vmcs_fields.h, leaving an unchanged file untouched so make rebuilds nothing."""
    text = header()
    path = gen_dir / HEADER
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
