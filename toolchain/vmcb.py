"""VMCB offsets, intercept bits, exit codes and exit-info bits Taipan uses, as build/gen/vmcb_layout.h."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Source: AMD64 Architecture Programmer's Manual, Volume 2 (publication 24593),
# Appendix B "Layout of VMCB": Table B-1 (control area, offsets from the VMCB
# start) and Table B-2 (state save area, offsets listed there from 0x400,
# written here as absolute offsets into the 4 KiB VMCB page).
GENERATOR = "toolchain/vmcb.py"
HEADER_NAME = "vmcb_layout.h"

CONTROL_START, CONTROL_END = 0x000, 0x400   # control area: 0x000-0x3FF
SAVE_START, SAVE_END = 0x400, 0x1000        # state save area: from 0x400 to the page end
VMCB_SIZE = 0x1000
SEGMENT_BYTES = 16                          # selector, attrib, limit, base


@dataclass(frozen=True)
class Field:
    name: str
    offset: int   # from the VMCB start
    width: int    # bytes
    note: str

    @property
    def area(self) -> str:
        return "control" if self.offset < CONTROL_END else "save"


def _seg(name: str, save_offset: int) -> Field:
    return Field(name, SAVE_START + save_offset, SEGMENT_BYTES,
                 f"{name} segment: selector +0, attrib +2, limit +4, base +8")


def _save(name: str, save_offset: int, width: int, note: str) -> Field:
    return Field(name, SAVE_START + save_offset, width, note)


FIELDS: list[Field] = [
    # ---- Table B-1: control area ----
    Field("INTERCEPT_CR", 0x000, 4, "CR reads in bits 15:0, CR writes in bits 31:16"),
    Field("INTERCEPT_DR", 0x004, 4, "DR reads in bits 15:0, DR writes in bits 31:16"),
    Field("INTERCEPT_EXCEPTIONS", 0x008, 4, "one bit per exception vector"),
    Field("INTERCEPT_MISC1", 0x00C, 4, "intercept vector 3: INTR ... SHUTDOWN"),
    Field("INTERCEPT_MISC2", 0x010, 4, "intercept vector 4: VMRUN ... "),
    Field("PAUSE_FILTER_THRESHOLD", 0x03C, 2, "PAUSE filter threshold"),
    Field("PAUSE_FILTER_COUNT", 0x03E, 2, "PAUSE filter count"),
    Field("IOPM_BASE_PA", 0x040, 8, "physical address of the 12 KiB I/O permission map"),
    Field("MSRPM_BASE_PA", 0x048, 8, "physical address of the 8 KiB MSR permission map"),
    Field("TSC_OFFSET", 0x050, 8, "added to the TSC the guest reads"),
    Field("GUEST_ASID", 0x058, 4, "the guest's ASID; 0 is the host's and VMRUN refuses it"),
    Field("TLB_CONTROL", 0x05C, 1, "TLB flush request for this VMRUN"),
    Field("V_INTR", 0x060, 8, "V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR"),
    Field("INTERRUPT_SHADOW", 0x068, 8, "bit 0: guest in an interrupt shadow"),
    Field("EXITCODE", 0x070, 8, "why the guest exited"),
    Field("EXITINFO1", 0x078, 8, "exit-specific information 1"),
    Field("EXITINFO2", 0x080, 8, "exit-specific information 2"),
    Field("EXITINTINFO", 0x088, 8, "an event whose delivery the exit interrupted"),
    Field("NP_CONTROL", 0x090, 8, "bit 0 NP_ENABLE (nested paging)"),
    Field("EVENTINJ", 0x0A8, 8, "event to inject on the next VMRUN"),
    Field("N_CR3", 0x0B0, 8, "nested page table root (host-physical)"),
    Field("LBR_VIRT", 0x0B8, 8, "bit 0 LBR virtualization, bit 1 virtual VMLOAD/VMSAVE"),
    Field("CLEAN_BITS", 0x0C0, 4, "VMCB clean bits (QEMU TCG ignores them; Taipan keeps 0)"),
    Field("NRIP", 0x0C8, 8, "next RIP (0 under QEMU TCG: no nrip-save)"),
    Field("INSN_FETCHED", 0x0D0, 1, "number of guest instruction bytes fetched (decode assists)"),
    Field("INSN_BYTES", 0x0D1, 15, "guest instruction bytes (decode assists)"),
    # ---- Table B-2: state save area (offset in the table + 0x400) ----
    _seg("ES", 0x000),
    _seg("CS", 0x010),
    _seg("SS", 0x020),
    _seg("DS", 0x030),
    _seg("FS", 0x040),
    _seg("GS", 0x050),
    _seg("GDTR", 0x060),
    _seg("LDTR", 0x070),
    _seg("IDTR", 0x080),
    _seg("TR", 0x090),
    _save("CPL", 0x0CB, 1, "current privilege level; VMRUN takes it from here, not from CS"),
    _save("EFER", 0x0D0, 8, "guest EFER; SVME must be set"),
    _save("CR4", 0x148, 8, "guest CR4"),
    _save("CR3", 0x150, 8, "guest CR3 (guest-physical with nested paging)"),
    _save("CR0", 0x158, 8, "guest CR0"),
    _save("DR7", 0x160, 8, "guest DR7"),
    _save("DR6", 0x168, 8, "guest DR6"),
    _save("RFLAGS", 0x170, 8, "guest RFLAGS"),
    _save("RIP", 0x178, 8, "guest RIP"),
    _save("RSP", 0x1D8, 8, "guest RSP"),
    _save("RAX", 0x1F8, 8, "guest RAX: VMRUN loads it, #VMEXIT stores it"),
    _save("STAR", 0x200, 8, "guest STAR (VMLOAD/VMSAVE)"),
    _save("LSTAR", 0x208, 8, "guest LSTAR (VMLOAD/VMSAVE)"),
    _save("CSTAR", 0x210, 8, "guest CSTAR (VMLOAD/VMSAVE)"),
    _save("SFMASK", 0x218, 8, "guest SFMASK (VMLOAD/VMSAVE)"),
    _save("KERNEL_GS_BASE", 0x220, 8, "guest KernelGsBase (VMLOAD/VMSAVE)"),
    _save("SYSENTER_CS", 0x228, 8, "guest SYSENTER_CS (VMLOAD/VMSAVE)"),
    _save("SYSENTER_ESP", 0x230, 8, "guest SYSENTER_ESP (VMLOAD/VMSAVE)"),
    _save("SYSENTER_EIP", 0x238, 8, "guest SYSENTER_EIP (VMLOAD/VMSAVE)"),
    _save("CR2", 0x240, 8, "guest CR2"),
    _save("G_PAT", 0x268, 8, "guest PAT, used by nested paging"),
]

# Offsets inside one 16-byte segment field (Table B-2's per-segment layout).
SEGMENT_PARTS = {"SEL": (0, 2), "ATTRIB": (2, 2), "LIMIT": (4, 4), "BASE": (8, 8)}

# Intercept bits (APM vol. 2, Table B-1), as (word field, bit).
INTERCEPTS: dict[str, tuple[str, int]] = {
    "CR0_WRITE": ("INTERCEPT_CR", 16),
    "CR4_WRITE": ("INTERCEPT_CR", 20),
    "CR8_WRITE": ("INTERCEPT_CR", 24),
    "INTR": ("INTERCEPT_MISC1", 0),
    "NMI": ("INTERCEPT_MISC1", 1),
    "SMI": ("INTERCEPT_MISC1", 2),
    "INIT": ("INTERCEPT_MISC1", 3),
    "VINTR": ("INTERCEPT_MISC1", 4),
    "RDTSC": ("INTERCEPT_MISC1", 14),
    "CPUID": ("INTERCEPT_MISC1", 18),
    "INVD": ("INTERCEPT_MISC1", 22),
    "IRET": ("INTERCEPT_MISC1", 20),
    "HLT": ("INTERCEPT_MISC1", 24),
    "INVLPGA": ("INTERCEPT_MISC1", 26),
    "IOIO_PROT": ("INTERCEPT_MISC1", 27),
    "MSR_PROT": ("INTERCEPT_MISC1", 28),
    "SHUTDOWN": ("INTERCEPT_MISC1", 31),
    "VMRUN": ("INTERCEPT_MISC2", 0),
    "VMMCALL": ("INTERCEPT_MISC2", 1),
    "VMLOAD": ("INTERCEPT_MISC2", 2),
    "VMSAVE": ("INTERCEPT_MISC2", 3),
    "STGI": ("INTERCEPT_MISC2", 4),
    "CLGI": ("INTERCEPT_MISC2", 5),
    "SKINIT": ("INTERCEPT_MISC2", 6),
    "XSETBV": ("INTERCEPT_MISC2", 13),
}

# #VMEXIT codes (APM vol. 2, Appendix C, Table C-1).
EXIT_CODES: dict[str, int] = {
    "WRITE_CR0": 0x10,
    "WRITE_CR4": 0x14,
    "WRITE_CR8": 0x18,
    "INTR": 0x60,
    "NMI": 0x61,
    "SMI": 0x62,
    "INIT": 0x63,
    "VINTR": 0x64,
    "RDTSC": 0x6E,
    "CPUID": 0x72,
    "IRET": 0x74,
    "INVD": 0x76,
    "HLT": 0x78,
    "INVLPGA": 0x7A,
    "IOIO": 0x7B,
    "MSR": 0x7C,
    "SHUTDOWN": 0x7F,
    "VMRUN": 0x80,
    "VMMCALL": 0x81,
    "VMLOAD": 0x82,
    "VMSAVE": 0x83,
    "STGI": 0x84,
    "CLGI": 0x85,
    "SKINIT": 0x86,
    "XSETBV": 0x8D,
    "NPF": 0x400,
    "INVALID": 0xFFFFFFFF,   # VMEXIT_INVALID (-1): the low 32 bits of the 64-bit EXITCODE
}

# Bits inside control fields and exit information (APM vol. 2, sections 15.10.2,
# 15.15, 15.21, 15.25.6 and Table B-1), named FIELD_BIT.
BITS: dict[str, int] = {
    "V_IRQ": 8,                # V_INTR: a virtual interrupt is pending (with the VINTR intercept: the window)
    "V_INTR_PRIO_SHIFT": 16,   # V_INTR: its priority in bits 19:16
    "V_IGN_TPR": 20,           # V_INTR: taken whatever V_TPR says
    "V_INTR_MASKING": 24,      # V_INTR: host RFLAGS.IF, not the guest's, masks physical interrupts
    "NP_ENABLE": 0,            # NP_CONTROL
    "EXITINTINFO_VALID": 31,   # EXITINTINFO / EVENTINJ: V
    "EVENT_TYPE_SHIFT": 8,     # EXITINTINFO / EVENTINJ: TYPE in bits 10:8 (0 INTR, 2 NMI, 3 exception, 4 INTn)
    "EVENT_EV": 11,            # EXITINTINFO / EVENTINJ: an error code is pushed (ERRORCODE in bits 63:32)
    "IOIO_IN": 0,              # EXITINFO1 of IOIO: TYPE, 1 = IN
    "IOIO_STR": 2,             # string instruction
    "IOIO_REP": 3,             # REP prefix
    "IOIO_SZ8": 4,             # operand size 1
    "IOIO_SZ16": 5,            # operand size 2
    "IOIO_SZ32": 6,            # operand size 4
    "IOIO_PORT_SHIFT": 16,     # port in bits 31:16
    "NPF_PRESENT": 0,          # EXITINFO1 of NPF: the nested page was present
    "NPF_WRITE": 1,            # the access was a write
    "NPF_USER": 2,             # the access was a user-mode access
    "NPF_RSVD": 3,             # a reserved bit was set in a nested entry
    "NPF_EXEC": 4,             # the access was an instruction fetch
}

# TLB_CONTROL values (Table B-1).
TLB_CONTROL = {"DO_NOTHING": 0, "FLUSH_ALL": 1, "FLUSH_GUEST": 3, "FLUSH_GUEST_NONGLOBAL": 7}

# Segment attributes in the VMCB's packed form: bits 7:0 are the descriptor's
# access byte (type, S, DPL, P), bits 11:8 its AVL, L, D/B, G (Table B-2 note).
ATTRIB_BITS = {"TYPE_SHIFT": 0, "S": 4, "DPL_SHIFT": 5, "P": 7, "AVL": 8, "L": 9, "DB": 10, "G": 11}


def field(name: str) -> Field:
    """The field called `name`; KeyError names it when absent."""
    for f in FIELDS:
        if f.name == name:
            return f
    raise KeyError(name)


def header() -> str:
    """build/gen/vmcb_layout.h: every table above as #defines for the C backend."""
    lines = [f"/* Generated by {GENERATOR} from AMD APM vol. 2 appendices B and C; do not edit. */",
             "#pragma once", "", f"#define VMCB_SIZE 0x{VMCB_SIZE:x}u", "",
             "/* Field offsets from the VMCB start and their widths in bytes. */"]
    for f in FIELDS:
        lines.append(f"#define VMCB_{f.name} 0x{f.offset:03x}u   /* {f.width} B: {f.note} */")
        lines.append(f"#define VMCB_{f.name}_WIDTH {f.width}u")
    lines += ["", "/* Parts of a 16-byte segment field. */"]
    for part, (offset, width) in SEGMENT_PARTS.items():
        lines.append(f"#define VMCB_SEG_{part} 0x{offset:x}u   /* {width} B */")
    lines += ["", "/* Intercept bits: VMCB_INTERCEPT_<NAME> is a mask in the word VMCB_INTERCEPT_<NAME>_WORD. */"]
    for name, (word, bit) in INTERCEPTS.items():
        lines.append(f"#define VMCB_INTERCEPT_{name} (1u << {bit})")
        lines.append(f"#define VMCB_INTERCEPT_{name}_WORD VMCB_{word}")
    lines += ["", "/* #VMEXIT codes (low 32 bits of EXITCODE). */"]
    for name, code in EXIT_CODES.items():
        lines.append(f"#define VMCB_EXIT_{name} 0x{code:x}u")
    lines += ["", "/* Bit positions in control fields and exit information. */"]
    for name, bit in BITS.items():
        lines.append(f"#define VMCB_BIT_{name} {bit}u")
    lines += ["", "/* TLB_CONTROL values. */"]
    for name, value in TLB_CONTROL.items():
        lines.append(f"#define VMCB_TLB_{name} {value}u")
    lines += ["", "/* Packed segment attribute bits. */"]
    for name, bit in ATTRIB_BITS.items():
        lines.append(f"#define VMCB_ATTR_{name} {bit}u")
    return "\n".join(lines) + "\n"


def generate_headers(gen_dir: Path) -> None:
    """Write build/gen/vmcb_layout.h, leaving it untouched when unchanged (make sees no change)."""
    path = Path(gen_dir) / HEADER_NAME
    text = header()
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
