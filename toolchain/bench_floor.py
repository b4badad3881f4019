"""The bench's floor: a minimal hypervisor image (AMD-V+NPT or VT-x+EPT) that runs the bench guest and answers only its CPUID exits."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from boot import entry as boot_entry
from boot import gdt, multiboot, paging
from guests import bench as bench_guest
from guests.common import DEBUG_EXIT_PORT, asciz, elf32_kernel, halt_forever, uart_routines
from toolchain import layout, vmcb, vmcs
from toolchain.guest_image import GDT_CODE32, GDT_DATA, GDT_LIMIT
from toolchain.keystone_asm import AsmJob, assemble_many

# What this is for: scripts/bench's "exit cost against the floor" divides the
# CPUID exit Taipan's C fast path costs by what the same guest loop costs under
# this image, in the same emulator. So the floor does only what any correct
# hypervisor must do for that loop and nothing else: one VMRUN (or VMRESUME)
# per exit, the host CPUID on the guest's EAX/ECX, RIP += the instruction's
# length, and back in. No timer, no slices, no VMSAVE/VMLOAD around each run
# (the floor's own code never uses FS, GS, TR or the syscall MSRs after its
# one VMLOAD, and it never sets GIF or IF, so no interrupt or NMI reaches it),
# no MicroPython. The guest is guests/bench.py's kernel, byte for byte: the
# same ELF the bare runs boot and Taipan runs as a partition.
#
# It is a bench baseline, never shipped: `build()` writes it under build/bench/.
#
# The guest owns the machine's devices (no I/O intercept but port 0xf4), so it
# times its loop with the TSC it calibrates against the PIT itself, as the bare
# run does, and prints its own `bench cpuid ...` line on COM1. Its write to
# port 0xf4 (QEMU's isa-debug-exit) is the end of the run: the floor prints
#     floor: <backend> cpuid_exits=<n>
# and passes the guest's exit code on to port 0xf4 (then halts, under Bochs).

GENERATOR = "toolchain/bench_floor.py"
FLOOR_LINE = rb"floor: (AMD-V\+NPT|VT-x\+EPT) cpuid_exits=(\d+)\r*\n"
FLOOR_ERROR = rb"floor: (?!AMD-V\+NPT cpuid|VT-x\+EPT cpuid)[^\r\n]*\r*\n"

# ---- memory (host-physical = virtual, identity-mapped by the boot tables) ----
# The first 44 KiB follow Taipan's own boot layout (toolchain/layout.py), so
# the 32-bit entry, page tables, GDT and TSS are Taipan's boot stub's very
# text and bytes (boot/entry.py, boot/paging.py, boot/gdt.py).
MB1_AT, MB2_AT = 0, 16
CODE_AT = 48
FLOOR_DATA = layout.BOOT_LINKS          # where Taipan's C image begins, the floor keeps its pages
PAGE = 0x1000
VMCB_PAGE = FLOOR_DATA + 0x0000          # the guest's VMCB
HSAVE_PAGE = FLOOR_DATA + 0x1000         # VM_HSAVE_PA: VMRUN's host save area
VMXON_PAGE = FLOOR_DATA + 0x2000
VMCS_PAGE = FLOOR_DATA + 0x3000
IO_BITMAP = FLOOR_DATA + 0x4000          # 12 KiB: SVM's IOPM; its first 8 KiB are VMX's bitmaps A and B
NPT_PML4 = FLOOR_DATA + 0x7000           # nested tables: PML4, PDPT, PD
EPT_PML4 = FLOOR_DATA + 0xA000           # EPT: PML4, PDPT, PD
POINTERS = FLOOR_DATA + 0xD000           # VMXON and VMCS physical addresses, for their [m64] operands
STACK_TOP = FLOOR_DATA + 0xF000
GUEST_BLOB = STACK_TOP                   # the guest's load pieces, copied into its memory at start
IO_BITMAP_BYTES = 0x3000

# The guest's memory: guest-physical [0, 2 MiB) is host [GUEST_BASE, +2 MiB),
# one large page in either nested format.
GUEST_BASE = 0x400000
GUEST_BYTES = 2 << 20
GUEST_GDT = 0x1000                       # a flat GDT for the 32-bit guest, as Taipan's loader gives it

# ---- architectural numbers the floor's code uses ----
MSR_EFER = 0xC0000080
EFER_SVME = 1 << 12
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
MSR_VM_HSAVE_PA = 0xC0010117
MSR_FEATURE_CONTROL = 0x3A
FC_LOCKED, FC_VMX_OUTSIDE_SMX = 1 << 0, 1 << 2
MSR_VMX_BASIC = 0x480
VMX_BASIC_TRUE_CTLS_HIGH = 1 << (55 - 32)
MSR_VMX_CR0_FIXED0, MSR_VMX_CR0_FIXED1 = 0x486, 0x487
MSR_VMX_CR4_FIXED0, MSR_VMX_CR4_FIXED1 = 0x488, 0x489
# (group, default-settings MSR, TRUE MSR) for each control word.
VMX_CONTROL_MSRS = {"PIN": (0x481, 0x48D), "PROC": (0x482, 0x48E), "EXIT_CTL": (0x483, 0x48F),
                    "ENTRY_CTL": (0x484, 0x490), "PROC2": (0x48B, 0x48B)}
CR4_VMXE = 1 << 13
CPUID_SVM_LEAF, CPUID_SVM_ECX = 0x80000001, 1 << 2
CPUID_SVM_FEATURES, CPUID_NPT_EDX = 0x8000000A, 1 << 0
CPUID_VMX_ECX = 1 << 5
CR0_PE, CR0_ET, CR0_NE = 1 << 0, 1 << 4, 1 << 5
GUEST_CR0 = CR0_PE | CR0_ET | CR0_NE     # the multiboot state: protected mode, paging off
RFLAGS_FIXED = 1 << 1
DR6_INIT, DR7_INIT = 0xFFFF0FF0, 0x400
PAT_DEFAULT = 0x0007040600070406
LEN_CPUID = 2                            # 0F A2: TCG gives no next RIP (FACTS.md)
IOIO_PORT_SHIFT = vmcb.BITS["IOIO_PORT_SHIFT"]
VMX_IO_PORT_SHIFT = 16                   # exit qualification of an I/O exit: port in 31:16

# What the floor asks of each VMX control word; the capability MSRs add the
# default-1 bits (with the TRUE MSRs, CR3 exiting and friends drop out).
VMX_WANT = {
    "PIN": [],
    "PROC": ["USE_IO_BITMAPS", "ACTIVATE_SECONDARY"],
    "PROC2": ["ENABLE_EPT", "UNRESTRICTED_GUEST"],   # a 32-bit guest with paging off
    "EXIT_CTL": ["HOST_ADDR_SPACE_SIZE", "LOAD_EFER"],
    "ENTRY_CTL": ["LOAD_EFER"],                      # the guest's EFER is 0, the host's LME|LMA
}


@dataclass(frozen=True)
class Floor:
    """The built image and what went into it."""

    elf: bytes
    guest_entry: int
    cpuid_count: int


def _u(value: int, width: int) -> bytes:
    return value.to_bytes(width, "little")


def _vmcs(name: str) -> int:
    for f in vmcs.FIELDS:
        if f.name == name:
            return f.encoding
    raise KeyError(name)


def guest_pieces(kernel: bytes) -> tuple[list[tuple[int, bytes]], int, int]:
    """(guest-physical address, bytes) pieces of a multiboot ELF32 kernel, its entry and end."""
    elf = ELFFile(io.BytesIO(kernel))
    pieces: list[tuple[int, bytes]] = []
    end = 0
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_LOAD" and segment["p_memsz"]:
            # The bss needs no bytes: the floor zeroes the guest's memory first.
            pieces.append((segment["p_paddr"], segment.data()))
            end = max(end, segment["p_paddr"] + segment["p_memsz"])
    pieces.append((GUEST_GDT, struct.pack("<3Q", 0, GDT_CODE32, GDT_DATA)))
    for gpa, data in pieces:
        if gpa + len(data) > GUEST_BYTES:
            raise ValueError(f"floor: guest piece at {gpa:#x} ({len(data)} bytes) overruns its "
                             f"{GUEST_BYTES >> 20} MiB")
    return pieces, elf.header["e_entry"], end


def _nested_tables(base: int, table_flags: int, leaf: int) -> bytes:
    """PML4, PDPT and PD at base mapping guest-physical [0, 2 MiB) by the one leaf entry."""
    pml4 = paging.encode_table({0: paging.encode_entry(base + PAGE, table_flags)})
    pdpt = paging.encode_table({0: paging.encode_entry(base + 2 * PAGE, table_flags)})
    pd = paging.encode_table({0: leaf})
    return pml4 + pdpt + pd


def npt_tables() -> bytes:
    # Nested page entries need the U bit (FACTS.md): NPT walks are user accesses.
    flags = paging.PTE_PRESENT | paging.PTE_WRITABLE | paging.PTE_USER
    leaf = paging.encode_entry(GUEST_BASE, flags | paging.PTE_LARGE, align=paging.LARGE_PAGE_2M)
    return _nested_tables(NPT_PML4, flags, leaf)


EPT_RWX = 0x7
EPT_MEMTYPE_WB = 6 << 3
EPT_LARGE = 1 << 7
EPTP_WB_4LEVEL = 6 | (3 << 3)


def ept_tables() -> bytes:
    leaf = paging.encode_entry(GUEST_BASE, EPT_RWX | EPT_MEMTYPE_WB | EPT_LARGE,
                               align=paging.LARGE_PAGE_2M)
    return _nested_tables(EPT_PML4, EPT_RWX, leaf)


def io_bitmap() -> bytes:
    """Every port passes through but the debug-exit port: the end of the run."""
    bitmap = bytearray(IO_BITMAP_BYTES)
    bitmap[DEBUG_EXIT_PORT // 8] |= 1 << (DEBUG_EXIT_PORT % 8)
    return bytes(bitmap)


def _attrib(type_: int, s: int, db: int, g: int) -> int:
    a = vmcb.ATTRIB_BITS
    return (type_ << a["TYPE_SHIFT"] | s << a["S"] | 1 << a["P"] | db << a["DB"] | g << a["G"])


def vmcb_page(entry: int) -> bytes:
    """The guest's VMCB, complete before the first VMRUN: intercepts, NPT, the multiboot state."""
    page = bytearray(vmcb.VMCB_SIZE)

    def put(name: str, value: int, part: str | None = None) -> None:
        f = vmcb.field(name)
        if part is None:
            page[f.offset:f.offset + f.width] = _u(value, f.width)
        else:
            at, width = vmcb.SEGMENT_PARTS[part]
            page[f.offset + at:f.offset + at + width] = _u(value, width)

    def seg(name: str, sel: int, attrib: int, limit: int, base: int = 0) -> None:
        put(name, sel, "SEL")
        put(name, attrib, "ATTRIB")
        put(name, limit, "LIMIT")
        put(name, base, "BASE")

    words: dict[str, int] = {}
    # CPUID is the measured exit; IOIO (through the IOPM: port 0xf4 only) ends
    # the run; SHUTDOWN turns a guest triple fault into a message; VMRUN must be
    # intercepted or VMRUN refuses the guest.
    for name in ("CPUID", "IOIO_PROT", "SHUTDOWN", "VMRUN"):
        word, bit = vmcb.INTERCEPTS[name]
        words[word] = words.get(word, 0) | 1 << bit
    for word, value in words.items():
        put(word, value)
    put("IOPM_BASE_PA", IO_BITMAP)
    put("GUEST_ASID", 1)
    put("TLB_CONTROL", vmcb.TLB_CONTROL["FLUSH_ALL"])   # the first VMRUN; the loop clears it
    put("NP_CONTROL", 1 << vmcb.BITS["NP_ENABLE"])
    put("N_CR3", NPT_PML4)
    code = _attrib(0xB, 1, 1, 1)     # execute/read accessed, 32-bit, 4 KiB granular
    data = _attrib(0x3, 1, 1, 1)     # read/write accessed
    seg("CS", 0x08, code, 0xFFFFFFFF)
    for name in ("DS", "ES", "SS", "FS", "GS"):
        seg(name, 0x10, data, 0xFFFFFFFF)
    seg("TR", 0, 0x8B, 0x67)         # a present busy TSS, never used by a CPL-0 guest with IF=0
    seg("LDTR", 0, 0, 0)
    seg("GDTR", 0, 0, GDT_LIMIT, GUEST_GDT)
    seg("IDTR", 0, 0, 0)
    put("EFER", EFER_SVME)           # VMRUN refuses a guest with EFER.SVME clear
    put("CR0", GUEST_CR0)
    put("DR6", DR6_INIT)
    put("DR7", DR7_INIT)
    put("RFLAGS", RFLAGS_FIXED)
    put("RIP", entry)
    put("RAX", multiboot.MB1_BOOTLOADER_MAGIC)
    put("G_PAT", PAT_DEFAULT)
    return bytes(page)


def vmcs_writes(entry: int) -> list[tuple[int, int]]:
    """(encoding, value) for every VMCS field whose value the build knows; the rest are set at run time."""
    code_ar, data_ar, tr_ar, unusable = 0xC09B, 0xC093, 0x8B, 1 << 16
    fields: list[tuple[str, int]] = [("GUEST_CS_SELECTOR", 0x08), ("GUEST_CS_ACCESS", code_ar),
                                     ("GUEST_CS_LIMIT", 0xFFFFFFFF), ("GUEST_CS_BASE", 0)]
    for seg in ("ES", "SS", "DS", "FS", "GS"):
        fields += [(f"GUEST_{seg}_SELECTOR", 0x10), (f"GUEST_{seg}_ACCESS", data_ar),
                   (f"GUEST_{seg}_LIMIT", 0xFFFFFFFF), (f"GUEST_{seg}_BASE", 0)]
    fields += [
        ("GUEST_TR_SELECTOR", 0), ("GUEST_TR_ACCESS", tr_ar), ("GUEST_TR_LIMIT", 0x67), ("GUEST_TR_BASE", 0),
        ("GUEST_LDTR_SELECTOR", 0), ("GUEST_LDTR_ACCESS", unusable), ("GUEST_LDTR_LIMIT", 0),
        ("GUEST_LDTR_BASE", 0),
        ("GUEST_GDTR_BASE", GUEST_GDT), ("GUEST_GDTR_LIMIT", GDT_LIMIT),
        ("GUEST_IDTR_BASE", 0), ("GUEST_IDTR_LIMIT", 0),
        ("GUEST_CR0", GUEST_CR0), ("GUEST_CR3", 0),
        # CR4.VMXE is fixed to 1 in VMX operation, guest included; the mask and
        # shadow show the guest the 0 it expects.
        ("GUEST_CR4", CR4_VMXE), ("CR4_GUEST_HOST_MASK", CR4_VMXE), ("CR4_READ_SHADOW", 0),
        ("CR0_GUEST_HOST_MASK", 0), ("CR0_READ_SHADOW", 0),
        ("GUEST_DR7", DR7_INIT), ("GUEST_RSP", 0), ("GUEST_RIP", entry), ("GUEST_RFLAGS", RFLAGS_FIXED),
        ("GUEST_PENDING_DEBUG", 0), ("GUEST_INTERRUPTIBILITY", 0), ("GUEST_ACTIVITY_STATE", 0),
        ("GUEST_SYSENTER_CS", 0), ("GUEST_SYSENTER_ESP", 0), ("GUEST_SYSENTER_EIP", 0),
        ("GUEST_IA32_DEBUGCTL", 0), ("GUEST_IA32_EFER", 0), ("VMCS_LINK_POINTER", (1 << 64) - 1),
        ("HOST_CS_SELECTOR", layout.SEL_CODE64), ("HOST_TR_SELECTOR", layout.SEL_TSS),
        *[(f"HOST_{seg}_SELECTOR", layout.SEL_DATA) for seg in ("ES", "SS", "DS", "FS", "GS")],
        ("HOST_FS_BASE", 0), ("HOST_GS_BASE", 0), ("HOST_TR_BASE", layout.BOOT_TSS),
        ("HOST_GDTR_BASE", layout.BOOT_GDT), ("HOST_IDTR_BASE", 0),
        ("HOST_SYSENTER_CS", 0), ("HOST_SYSENTER_ESP", 0), ("HOST_SYSENTER_EIP", 0),
        ("HOST_IA32_EFER", EFER_LME | EFER_LMA),
        ("EXCEPTION_BITMAP", 0), ("PAGE_FAULT_ERROR_MASK", 0), ("PAGE_FAULT_ERROR_MATCH", 0),
        ("CR3_TARGET_COUNT", 0), ("EXIT_MSR_STORE_COUNT", 0), ("EXIT_MSR_LOAD_COUNT", 0),
        ("ENTRY_MSR_LOAD_COUNT", 0), ("ENTRY_INTR_INFO", 0),
        ("IO_BITMAP_A", IO_BITMAP), ("IO_BITMAP_B", IO_BITMAP + PAGE),
        ("EPT_POINTER", EPT_PML4 | EPTP_WB_4LEVEL),
    ]
    return [(_vmcs(name), value) for name, value in fields]


def _hex(value: int) -> str:
    return f"{value:#x}"


def _vmx_controls_source() -> str:
    """Each control word: (wanted | allowed-0) & allowed-1, refusing a wanted bit the CPU lacks."""
    lines = [
        "    mov ecx, " + _hex(MSR_VMX_BASIC),
        "    rdmsr",
        "    mov r12d, edx                  # bit 23 of the high half: the TRUE control MSRs exist",
    ]
    for group, (msr, true_msr) in VMX_CONTROL_MSRS.items():
        want = vmcs.control_mask(group, VMX_WANT[group])
        field = {"PIN": "PIN_BASED_CONTROLS", "PROC": "PROC_BASED_CONTROLS",
                 "PROC2": "PROC_BASED_CONTROLS2", "EXIT_CTL": "EXIT_CONTROLS",
                 "ENTRY_CTL": "ENTRY_CONTROLS"}[group]
        lines += [
            f"    mov ecx, {_hex(msr)}",
            f"    test r12d, {_hex(VMX_BASIC_TRUE_CTLS_HIGH)}",
            f"    jz .Lfloor_ctl_{group}",
            f"    mov ecx, {_hex(true_msr)}",
            f".Lfloor_ctl_{group}:",
            "    rdmsr",
            f"    mov ebx, {_hex(want)}",
            "    or eax, ebx",
            "    and eax, edx",
            "    and ebx, eax",
            f"    cmp ebx, {_hex(want)}",
            "    jne .Lfloor_vmx_control_missing",
            f"    mov edx, {_hex(_vmcs(field))}",
            "    vmwrite rdx, rax",
        ]
    return "\n".join(lines)

# The floor's console lines: the end-of-run report (FLOOR_LINE) and each failure.
MESSAGES = {
    "floor_msg_svm": b"floor: AMD-V+NPT cpuid_exits=",
    "floor_msg_vmx": b"floor: VT-x+EPT cpuid_exits=",
    "floor_msg_none": b"floor: this CPU has neither AMD-V nor VT-x\n",
    "floor_msg_no_npt": b"floor: this CPU has AMD-V without nested paging\n",
    "floor_msg_fc": b"floor: IA32_FEATURE_CONTROL is locked with VMX off\n",
    "floor_msg_vmxon": b"floor: VMXON, VMCLEAR or VMPTRLD failed\n",
    "floor_msg_control": b"floor: a VMX control the floor needs is not allowed-1\n",
    "floor_msg_entry": b"floor: VM entry failed, VM-instruction error ",
    "floor_msg_unexpected": b"floor: unexpected exit ",
}


def _messages() -> str:
    return "".join(asciz(label, text) for label, text in MESSAGES.items())


def _source(entry: int, blob_pieces: list[tuple[int, int, int]], writes_at: int, writes: int) -> str:
    """The 64-bit floor: set-up, the SVM and VMX run loops, the end-of-run report."""
    copies = "\n".join(
        f"    mov esi, {_hex(src)}\n    mov edi, {_hex(GUEST_BASE + gpa)}\n"
        f"    mov ecx, {_hex(length)}\n    rep movsb"
        for src, gpa, length in blob_pieces)
    v = vmcb.field
    return f"""\
floor_long:
    mov ax, {_hex(layout.SEL_DATA)}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    # VM exit on VMX loads TR from the host state: it must name a real TSS.
    mov ax, {_hex(layout.SEL_TSS)}
    ltr ax
    mov esp, {_hex(STACK_TOP)}
    cld
    # The guest's memory: zeroed, then its pieces, as a multiboot loader leaves it.
    mov edi, {_hex(GUEST_BASE)}
    mov ecx, {_hex(GUEST_BYTES)}
    xor eax, eax
    rep stosb
{copies}
    mov eax, {_hex(CPUID_SVM_LEAF)}
    cpuid
    test ecx, {_hex(CPUID_SVM_ECX)}
    jnz floor_svm
    mov eax, 1
    cpuid
    test ecx, {_hex(CPUID_VMX_ECX)}
    jnz floor_vmx
    mov esi, floor_msg_none
    jmp floor_fail

# ---------------- AMD-V ----------------
floor_svm:
    # Without nested paging the guest would run on host-physical memory: the floor's own.
    mov eax, {_hex(CPUID_SVM_FEATURES)}
    cpuid
    test edx, {_hex(CPUID_NPT_EDX)}
    mov esi, floor_msg_no_npt
    jz floor_fail
    mov ecx, {_hex(MSR_EFER)}
    rdmsr
    or eax, {_hex(EFER_SVME)}
    wrmsr
    mov ecx, {_hex(MSR_VM_HSAVE_PA)}
    mov eax, {_hex(HSAVE_PAGE)}
    xor edx, edx
    wrmsr
    push 0                         # [rsp]: CPUID exits answered
    mov eax, {_hex(VMCB_PAGE)}
    # The guest's FS, GS, TR, LDTR and syscall MSRs, once: VMRUN and #VMEXIT
    # leave them alone and the floor never uses them, so they stay the guest's.
    vmload rax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
.Lfloor_svm_run:
    vmrun rax
    # #VMEXIT: GIF=0, RAX = the VMCB again, RSP the host's; every other GPR
    # holds the guest's value.
    mov byte ptr [rax + {_hex(v("TLB_CONTROL").offset)}], {vmcb.TLB_CONTROL["DO_NOTHING"]}
    cmp dword ptr [rax + {_hex(v("EXITCODE").offset)}], {_hex(vmcb.EXIT_CODES["CPUID"])}
    jne .Lfloor_svm_other
    push rax
    mov eax, dword ptr [rax + {_hex(v("RAX").offset)}]
    cpuid                          # the guest's leaf and subleaf; EBX, ECX, EDX are its answer
    xchg rax, qword ptr [rsp]
    pop qword ptr [rax + {_hex(v("RAX").offset)}]
    add qword ptr [rax + {_hex(v("RIP").offset)}], {LEN_CPUID}
    inc qword ptr [rsp]
    jmp .Lfloor_svm_run
.Lfloor_svm_other:
    mov ebx, dword ptr [rax + {_hex(v("EXITCODE").offset)}]
    cmp ebx, {_hex(vmcb.EXIT_CODES["IOIO"])}
    jne floor_unexpected
    mov ecx, dword ptr [rax + {_hex(v("EXITINFO1").offset)}]
    shr ecx, {IOIO_PORT_SHIFT}
    cmp ecx, {_hex(DEBUG_EXIT_PORT)}
    jne floor_unexpected
    mov ebx, dword ptr [rax + {_hex(v("RAX").offset)}]   # the guest's exit code, in AL
    mov esi, floor_msg_svm
    jmp floor_done

# ---------------- VT-x ----------------
floor_vmx:
    # Firmware may leave IA32_FEATURE_CONTROL unlocked: then lock it with VMX on.
    mov ecx, {_hex(MSR_FEATURE_CONTROL)}
    rdmsr
    test eax, {_hex(FC_LOCKED)}
    jnz .Lfloor_fc_locked
    or eax, {_hex(FC_LOCKED | FC_VMX_OUTSIDE_SMX)}
    wrmsr
    jmp .Lfloor_fc_ok
.Lfloor_fc_locked:
    test eax, {_hex(FC_VMX_OUTSIDE_SMX)}
    mov esi, floor_msg_fc
    jz floor_fail
.Lfloor_fc_ok:
    # CR0 and CR4 must hold every bit the fixed MSRs pin (CR4.VMXE among them).
    mov ecx, {_hex(MSR_VMX_CR0_FIXED0)}
    call floor_rdmsr64
    mov rbx, cr0
    or rbx, rax
    mov ecx, {_hex(MSR_VMX_CR0_FIXED1)}
    call floor_rdmsr64
    and rbx, rax
    mov cr0, rbx
    mov ecx, {_hex(MSR_VMX_CR4_FIXED0)}
    call floor_rdmsr64
    mov rbx, cr4
    or rbx, rax
    or rbx, {_hex(CR4_VMXE)}
    mov ecx, {_hex(MSR_VMX_CR4_FIXED1)}
    call floor_rdmsr64
    and rbx, rax
    mov cr4, rbx
    # The VMXON region and the VMCS start with the revision identifier.
    mov ecx, {_hex(MSR_VMX_BASIC)}
    rdmsr
    and eax, 0x7fffffff
    mov ebx, {_hex(VMXON_PAGE)}
    mov dword ptr [rbx], eax
    mov ebx, {_hex(VMCS_PAGE)}
    mov dword ptr [rbx], eax
    mov ebx, {_hex(POINTERS)}
    vmxon qword ptr [rbx]
    mov esi, floor_msg_vmxon
    jbe floor_fail
    vmclear qword ptr [rbx + 8]
    jbe floor_fail
    vmptrld qword ptr [rbx + 8]
    jbe floor_fail
{_vmx_controls_source()}
    # The fields the build knows, from its (encoding, value) table.
    mov esi, {_hex(writes_at)}
    mov ecx, {writes}
.Lfloor_vmx_write:
    mov rdx, qword ptr [rsi]
    mov rax, qword ptr [rsi + 8]
    vmwrite rdx, rax
    add rsi, 16
    dec ecx
    jnz .Lfloor_vmx_write
    mov edx, {_hex(_vmcs("HOST_CR0"))}
    mov rax, cr0
    vmwrite rdx, rax
    mov edx, {_hex(_vmcs("HOST_CR3"))}
    mov rax, cr3
    vmwrite rdx, rax
    mov edx, {_hex(_vmcs("HOST_CR4"))}
    mov rax, cr4
    vmwrite rdx, rax
    mov edx, {_hex(_vmcs("HOST_RIP"))}
    mov eax, floor_vmx_exit
    vmwrite rdx, rax
    push 0                         # [rsp]: CPUID exits answered; HOST_RSP points here
    mov edx, {_hex(_vmcs("HOST_RSP"))}
    vmwrite rdx, rsp
    mov eax, {_hex(multiboot.MB1_BOOTLOADER_MAGIC)}
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    vmlaunch
    jmp floor_vmx_failed

floor_vmx_exit:
    # Every GPR but RSP is the guest's: keep the two the exit needs.
    push rdx
    push rax
    mov edx, {_hex(_vmcs("EXIT_REASON"))}
    vmread rax, rdx
    cmp eax, {vmcs.EXIT_REASONS["CPUID"]}
    jne .Lfloor_vmx_other
    pop rax
    add rsp, 8
    cpuid                          # the guest's leaf and subleaf; EAX..EDX are its answer
    push rdx
    push rax
    push rcx
    mov ecx, {_hex(_vmcs("EXIT_INSTRUCTION_LEN"))}
    vmread rax, rcx
    mov ecx, {_hex(_vmcs("GUEST_RIP"))}
    vmread rdx, rcx
    add rdx, rax
    vmwrite rcx, rdx
    pop rcx
    pop rax
    pop rdx
    inc qword ptr [rsp]
    vmresume
    jmp floor_vmx_failed
.Lfloor_vmx_other:
    mov ebx, eax
    cmp ebx, {vmcs.EXIT_REASONS["IO_INSTRUCTION"]}
    jne floor_unexpected
    mov edx, {_hex(_vmcs("EXIT_QUALIFICATION"))}
    vmread rax, rdx
    shr eax, {VMX_IO_PORT_SHIFT}
    cmp eax, {_hex(DEBUG_EXIT_PORT)}
    jne floor_unexpected
    mov ebx, dword ptr [rsp]       # the guest's RAX, pushed on exit: its exit code in AL
    add rsp, 16
    mov esi, floor_msg_vmx
    jmp floor_done

.Lfloor_vmx_control_missing:
    mov esi, floor_msg_control
    jmp floor_fail

floor_vmx_failed:
    mov esi, floor_msg_entry
    call uart_puts
    mov edx, {_hex(_vmcs("VM_INSTRUCTION_ERROR"))}
    vmread rax, rdx
    call uart_put_dec
    mov al, 10
    call uart_putc
    jmp floor_halt

# ---------------- endings ----------------
floor_rdmsr64:
    rdmsr
    shl rdx, 32
    or rax, rdx
    ret

floor_unexpected:
    # EBX: the exit code (SVM) or basic exit reason (VMX).
    mov esi, floor_msg_unexpected
    call uart_puts
    mov eax, ebx
    call uart_put_dec
    mov al, 10
    call uart_putc
    jmp floor_halt

floor_done:
    # ESI: "floor: <backend> cpuid_exits=", [rsp]: the count, BL: the guest's exit code.
    call uart_puts
    mov rax, qword ptr [rsp]
    call uart_put_dec
    mov al, 10
    call uart_putc
    mov al, bl
    out {_hex(DEBUG_EXIT_PORT)}, al  # QEMU ends here; Bochs has no such device and halts below
    jmp floor_halt

floor_fail:
    call uart_puts
{halt_forever("floor_halt")}
{uart_routines(64)}
{_messages()}
"""


def _headers() -> bytes:
    """Multiboot1 (QEMU's -kernel) and multiboot2 (GRUB, for Bochs) headers, both loading the ELF."""
    flags = 0  # the ELF's program header says where it loads; no boot information is read
    mb1 = struct.pack("<3I", multiboot.MB1_MAGIC, flags, -(multiboot.MB1_MAGIC + flags) & 0xFFFFFFFF)
    length = 24
    mb2 = struct.pack("<4I", multiboot.MB2_MAGIC, multiboot.MB2_ARCH_I386, length,
                      -(multiboot.MB2_MAGIC + multiboot.MB2_ARCH_I386 + length) & 0xFFFFFFFF)
    mb2 += struct.pack("<HHI", multiboot.MB2_TAG_END, 0, 8)
    return mb1.ljust(MB2_AT, b"\0") + mb2


def image(*, count: int | None = None) -> Floor:
    """The floor as an ELF32 multiboot kernel running the bench guest's CPUID loop of `count`."""
    count = bench_guest.check_params("cpuid", count)
    pieces, entry, _ = guest_pieces(bench_guest.kernel_bytes(mode="cpuid", count=count))

    # Floor data: its pages, then the guest's pieces and the VMCS table after the stack.
    blob = bytearray()
    blob_pieces: list[tuple[int, int, int]] = []
    for gpa, data in pieces:
        blob_pieces.append((GUEST_BLOB + len(blob), gpa, len(data)))
        blob += data
        blob += bytes(-len(blob) % 16)
    writes = vmcs_writes(entry)
    writes_at = GUEST_BLOB + len(blob)
    for encoding, value in writes:
        blob += struct.pack("<QQ", encoding, value)

    code_base = layout.LOAD_BASE + CODE_AT
    # entry32's size does not depend on where the 64-bit code goes (its far
    # jump is an absolute .long), so one sizing pass places everything.
    probe = assemble_many([AsmJob(boot_entry.entry32_source(long_entry=0), 32, code_base, "entry32")])[0]
    long_base = code_base + len(probe) + (-len(probe) % 16)
    code32, code64 = assemble_many([
        AsmJob(boot_entry.entry32_source(long_entry=long_base), 32, code_base, "entry32"),
        AsmJob(_source(entry, blob_pieces, writes_at, len(writes)), 64, long_base, "floor"),
    ])
    text = bytearray(_headers().ljust(CODE_AT, b"\0") + code32)
    text += b"\xcc" * (long_base - code_base - len(code32)) + code64
    if layout.LOAD_BASE + len(text) > layout.BOOT_DATA:
        raise ValueError(f"floor: {len(text)} bytes of code overrun the boot data at {layout.BOOT_DATA:#x}")

    mem = bytearray(GUEST_BLOB - layout.LOAD_BASE + len(blob))

    def place(address: int, data: bytes) -> None:
        mem[address - layout.LOAD_BASE:address - layout.LOAD_BASE + len(data)] = data

    place(layout.LOAD_BASE, bytes(text))
    # Taipan's boot data, from the same generators its boot stub uses.
    place(layout.BOOT_PML4, paging.identity_tables(layout.BOOT_PML4, layout.BOOT_PDPT,
                                                   layout.BOOT_PD, layout.IDENTITY_MAP_BYTES))
    place(layout.BOOT_GDT, gdt.gdt_bytes(layout.BOOT_TSS))
    place(gdt.GDTR_ADDRESS, gdt.gdtr_bytes(layout.BOOT_GDT))
    place(layout.BOOT_TSS, gdt.tss_bytes())
    place(VMCB_PAGE, vmcb_page(entry))
    place(IO_BITMAP, io_bitmap())
    place(NPT_PML4, npt_tables())
    place(EPT_PML4, ept_tables())
    place(POINTERS, struct.pack("<QQ", VMXON_PAGE, VMCS_PAGE))
    place(GUEST_BLOB, bytes(blob))
    elf = elf32_kernel(bytes(mem), entry=code_base)
    return Floor(elf=elf, guest_entry=entry, cpuid_count=count)


def build(out: Path, *, count: int | None = None) -> Path:
    """Write the floor image to `out` (scripts/bench puts it under build/bench/)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(image(count=count).elf)
    return out

