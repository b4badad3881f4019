"""The SVM entry stub, as keystone assembled it, read back with capstone."""
from __future__ import annotations

from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from arch.x86_64.svm import entry as svm_entry
from boot.stub import BootStub, c_header, generate
from toolchain import layout
from toolchain.asm_offsets import compile_and_read

REPO = Path(__file__).resolve().parent.parent
GUEST_GPRS = ["rbx", "rcx", "rdx", "rsi", "rdi", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
CALLEE_SAVED = ["rbx", "rbp", "r12", "r13", "r14", "r15"]


@pytest.fixture(scope="module")
def offsets(tmp_path_factory) -> dict[str, int]:
    out = tmp_path_factory.mktemp("offsets") / "asm_offsets.o"
    return compile_and_read("gcc", ["-ffreestanding", "-O2", f"-I{REPO / 'hv'}"],
                            REPO / "arch/x86_64/common/asm_offsets.c", out)


@pytest.fixture(scope="module")
def stub(offsets) -> BootStub:
    return generate(offsets)


def chunk(stub: BootStub, name: str) -> list:
    """Instructions of one chunk, up to its RET or IRETQ."""
    start = stub.symbols[name]
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    out = []
    for insn in md.disasm(stub.text[start - layout.BOOT_TEXT:], start):
        out.append(insn)
        if insn.mnemonic in ("ret", "iretq"):
            return out
    raise AssertionError(f"{name} has no ret/iretq")


def index_of(insns, text: str, start: int = 0) -> int:
    for i in range(start, len(insns)):
        if f"{insns[i].mnemonic} {insns[i].op_str}".strip() == text:
            return i
    raise AssertionError(f"{text!r} not found")


def disp(value: int) -> str:
    """A displacement as capstone prints it: decimal below 10, hex from there."""
    return str(value) if value < 10 else f"{value:#x}"


def test_chunks_are_exported_to_c(stub):
    header = c_header(stub)
    for name, _ in svm_entry.CHUNKS:
        assert f"#define BOOT_SYM_{name.upper()} " in header


def test_svm_run_enters_once_between_clgi_and_stgi(stub):
    insns = chunk(stub, "svm_run")
    mnemonics = [i.mnemonic for i in insns]
    assert mnemonics.count("vmrun") == 1
    clgi, sti, vmrun = mnemonics.index("clgi"), mnemonics.index("sti"), mnemonics.index("vmrun")
    cli, stgi = mnemonics.index("cli"), mnemonics.index("stgi")
    # GIF=0 covers the window in which the host's IF is 1; IF is 0 again before GIF=1.
    assert clgi < sti < vmrun < cli < stgi
    assert insns[vmrun].op_str == "rax" and insns[vmrun].bytes == b"\x0f\x01\xd8"


def test_host_vmload_state_is_saved_before_and_restored_after(stub):
    insns = chunk(stub, "svm_run")
    vmrun = index_of(insns, "vmrun rax")
    # Host FS/GS/TR/LDTR: VMSAVE to the host area (rdx), then VMLOAD the guest (rsi).
    assert index_of(insns, "mov rax, rdx") < index_of(insns, "vmsave rax") \
        < index_of(insns, "mov rax, rsi") < index_of(insns, "vmload rax") < vmrun
    after = [f"{i.mnemonic} {i.op_str}".strip() for i in insns[vmrun:]]
    assert after.index("vmsave rax") < after.index("vmload rax") < after.index("stgi")


def test_guest_registers_round_trip_through_struct_guest_regs(stub, offsets):
    insns = chunk(stub, "svm_run")
    vmrun = index_of(insns, "vmrun rax")
    before = [f"{i.mnemonic} {i.op_str}" for i in insns[:vmrun]]
    after = [f"{i.mnemonic} {i.op_str}" for i in insns[vmrun:]]
    for reg in GUEST_GPRS:
        at = offsets[f"gregs_{reg}"]
        assert f"mov {reg}, qword ptr [rdi + {disp(at)}]" in before, reg
        assert f"mov qword ptr [rax + {disp(at)}], {reg}" in after, reg
    # RDI holds the struct pointer: it must be the last register loaded.
    assert before[-1] == f"mov rdi, qword ptr [rdi + {disp(offsets['gregs_rdi'])}]"
    # Guest RAX travels in the VMCB, not through the stub: nothing reads or writes its slot.
    rax_slot = f"[rdi + {disp(offsets['gregs_rax'])}]" if offsets["gregs_rax"] else "[rdi]"
    assert not any(rax_slot in line for line in before)


def test_callee_saved_registers_and_stack_are_balanced(stub):
    insns = chunk(stub, "svm_run")
    pushes = [i.op_str for i in insns if i.mnemonic == "push"]
    pops = [i.op_str for i in insns if i.mnemonic == "pop"]
    assert pushes[:len(CALLEE_SAVED)] == CALLEE_SAVED
    assert pops[-len(CALLEE_SAVED):] == list(reversed(CALLEE_SAVED))
    # Three extra pushes (fpu, regs, host VMCB) dropped with one add; one push/pop of rax around the saves.
    assert "add rsp, 0x18" in [f"{i.mnemonic} {i.op_str}" for i in insns]
    assert insns[-1].mnemonic == "ret"


def test_guest_fpu_state_and_xcr0_surround_vmrun(stub, offsets):
    text = [f"{i.mnemonic} {i.op_str}".strip() for i in chunk(stub, "svm_run")]
    vmrun = text.index("vmrun rax")
    before, after = text[:vmrun], text[vmrun:]
    assert before.index("fxrstor64 ptr [r9]") < before.index("xsetbv") < before.index("xrstor64 ptr [r9]")
    order = [after.index(x) for x in ("fxsave64 ptr [r9]", "xgetbv", "xsave64 ptr [r9]", "xsetbv", "fninit")]
    assert order == sorted(order)
    assert any(line.startswith("ldmxcsr dword ptr [r8") for line in after)
    # All of it before GIF=1, so no interrupt runs host code on the guest's FPU state.
    assert max(order) < after.index("stgi")
