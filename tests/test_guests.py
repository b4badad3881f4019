"""Tests of the builtin test guests: registry, encodings checked by capstone, mbtest booted in QEMU."""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs, CsInsn
from elftools.elf.elffile import ELFFile

from boot.multiboot import (
    MB1_FLAG_ADDRESS_FIELDS,
    MB1_FLAG_MEMORY_INFO,
    MB1_FLAG_PAGE_ALIGN_MODULES,
    find_mb1,
)
from guests import BUILTIN, GuestImage, build_guest
from guests.common import VMCALL, VMMCALL

MEMORY = 16 << 20
NAME = "part-7"
# Exits a raw guest's busy loops must never contain.
EXITING = {"in", "out", "outsb", "insb", "hlt", "cpuid", "vmcall", "vmmcall", "rdmsr", "wrmsr",
           "invlpg", "int", "int3", "ud2", "syscall", "sysenter", "xsetbv", "rdpmc", "mwait",
           "monitor", "wbinvd", "invd", "lgdt", "lidt", "cli", "sti"}


def disasm(image: GuestImage, *, mode: int = CS_MODE_64) -> list[CsInsn]:
    """Linear sweep from the entry; the code comes first and capstone stops at data it can't decode."""
    return list(Cs(CS_ARCH_X86, mode).disasm(image.data, image.entry))


def text(insns: list[CsInsn]) -> list[str]:
    return [f"{i.mnemonic} {i.op_str}".strip() for i in insns]


def follows(lines: list[str], first: str, then: str) -> bool:
    """`then` appears right after `first` somewhere in `lines`."""
    return any(a == first and b == then for a, b in itertools.pairwise(lines))


def backward_loop(insns: list[CsInsn], start: int) -> list[CsInsn]:
    """The instructions of the first unconditional jmp-back loop at or after address `start`."""
    for insn in insns:
        if insn.address >= start and insn.mnemonic == "jmp" and insn.op_str.startswith("0x"):
            target = int(insn.op_str, 16)
            if target <= insn.address:
                return [i for i in insns if target <= i.address <= insn.address]
    raise AssertionError("no backward jmp loop found")


def build(guest: str, **params: object) -> GuestImage:
    return build_guest(guest, name=NAME, memory=MEMORY, **params)


def test_registry_holds_every_guest_and_each_builds_with_defaults() -> None:
    assert {"hello", "spin", "attacker", "exit", "hypercall", "mbtest", "trivial"} <= set(BUILTIN)
    for guest, builder in BUILTIN.items():
        image = builder(name=NAME, memory=MEMORY)
        assert isinstance(image, GuestImage)
        assert image.kind == ("multiboot" if guest in ("mbtest", "trivial", "bench", "longmode") else "raw")
        assert image.entry == 0x100000


@pytest.mark.parametrize("guest", ["hello", "spin", "attacker", "exit", "hypercall"])
def test_raw_guests_carry_the_partition_name(guest: str) -> None:
    assert NAME.encode() in build(guest).data
    assert b"other-name" in build_guest(guest, name="other-name", memory=MEMORY).data


def test_bad_guest_names_and_params_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown guest"):
        build("nosuch")
    with pytest.raises(ValueError, match="period_ms"):
        build("hello", period_ms=0)
    with pytest.raises(ValueError, match="unexpected keyword"):
        build("spin", period_ms=5)
    with pytest.raises(ValueError, match="target"):
        build("attacker", target="kernel")
    with pytest.raises(ValueError, match="code"):
        build("exit", code=256)
    with pytest.raises(ValueError, match="NUL"):
        build_guest("hello", name="a\0b", memory=MEMORY)
    with pytest.raises(ValueError, match="memory"):
        build_guest("hello", name=NAME, memory=0x100000)


def test_uart_writes_poll_the_line_status_register_first() -> None:
    lines = text(disasm(build("hello")))
    assert follows(lines, "mov dx, 0x3fd", "in al, dx")
    assert follows(lines, "in al, dx", "test al, 0x20")
    assert follows(lines, "mov dx, 0x3f8", "out dx, al")
    assert lines.index("mov dx, 0x3fd") < lines.index("out dx, al")


def test_hello_asks_tsc_khz_once_and_waits_with_pause_and_no_exits() -> None:
    image = build("hello", period_ms=250)
    insns = disasm(image)
    lines = text(insns)
    assert lines[lines.index("mov eax, 3") + 1].startswith("call ")  # tsc_khz hypercall
    assert "imul r12, rax, 0xfa" in lines
    assert lines.count("mov eax, 3") == 1
    wait = next(i for i in insns if i.mnemonic == "pause")
    loop_end = next(i for i in insns if i.address > wait.address and i.mnemonic == "jb")
    assert int(loop_end.op_str, 16) == wait.address
    body = [i.mnemonic for i in insns if wait.address <= i.address <= loop_end.address]
    assert "rdtsc" in body and not EXITING & set(body)
    assert b"hello from part-7 \0" in image.data


def test_spin_loop_only_computes() -> None:
    image = build("spin")
    insns = disasm(image)
    assert b"spin part-7 starting\n\0" in image.data
    loop = backward_loop(insns, image.entry)
    mnemonics = {i.mnemonic for i in loop}
    assert mnemonics <= {"add", "xor", "inc", "sub", "imul", "jmp"}, mnemonics
    assert not EXITING & mnemonics


def test_exit_writes_its_code_to_port_0xf4() -> None:
    image = build("exit", code=42)
    lines = text(disasm(image))
    assert follows(lines, "mov eax, 0x2a", "out 0xf4, al")
    assert b"exit part-7 code 42\n\0" in image.data
    assert b"exit part-7 code 3\n" in build("exit").data


def test_hypercall_guest_picks_vmcall_or_vmmcall_by_vendor() -> None:
    image = build("hypercall", code=9)
    lines = text(disasm(image))
    assert VMCALL in image.data and VMMCALL in image.data
    assert "vmcall" in lines and "vmmcall" in lines
    assert "cpuid" in lines
    # CPUID leaf 0 compared against "Genu", "ineI", "ntel".
    for word in (b"Genu", b"ineI", b"ntel"):
        assert any(line.endswith(hex(int.from_bytes(word, "little"))) for line in lines)
    # The CPUID report comes first (leaves 0x40000000, 1, 0x80000001), then the three hypercalls.
    for leaf in ("mov eax, 0x40000000", "mov eax, 1", "mov eax, 0x80000001"):
        assert leaf in lines, leaf
    first_call = lines.index("mov eax, 0")
    calls = [line for line in lines[first_call:] if line in ("mov eax, 0", "mov eax, 1", "mov eax, 2")]
    assert calls[:3] == ["mov eax, 0", "mov eax, 1", "mov eax, 2"]
    assert "mov ebx, 9" in lines
    console = b"hypercall part-7 console ok\n"
    address = 0x100000 + image.data.index(console)
    assert f"mov ebx, {address:#x}" in lines and f"mov ecx, {len(console):#x}" in lines
    assert b"hypercall part-7 yielded\n\0" in image.data


def test_attacker_maps_the_page_beyond_its_memory_then_reads_it() -> None:
    image = build("attacker")
    lines = text(disasm(image))
    target = MEMORY + 0x1000
    assert f"attacker part-7: reading {target:#x}\n".encode() in image.data
    assert b"attacker part-7: still alive\n" in image.data
    at = lines.index(f"mov rbx, {target:#x}")
    assert lines[at + 1].startswith("call ") and lines[at + 2] == "mov rax, qword ptr [rbx]"
    for needed in ("mov rax, cr3", "invlpg byte ptr [rbx]", "or rax, 0x83", "rep stosq qword ptr [rdi], rax"):
        assert needed in lines, needed
    # Its scratch page-table pages lie inside its own image, page aligned.
    assert len(image.data) % 0x1000 == 0 and len(image.data) >= 0x2000


def test_attacker_hypervisor_target_reads_the_apic_then_writes_beyond() -> None:
    image = build("attacker", target="hypervisor")
    lines = text(disasm(image))
    apic = lines.index("movabs rbx, 0xfee00000")
    assert lines[apic + 2] == "mov rax, qword ptr [rbx]"
    write = lines.index(f"mov rbx, {MEMORY + 0x200000:#x}")
    assert write > apic and lines[write + 2] == "mov qword ptr [rbx], rax"
    assert b"attacker part-7: reading 0xfee00000\n" in image.data
    assert f"attacker part-7: writing {MEMORY + 0x200000:#x}\n".encode() in image.data


def test_mbtest_is_a_multiboot1_elf32_linked_at_1mib() -> None:
    image = build("mbtest")
    elf = ELFFile(io.BytesIO(image.data))
    assert elf.elfclass == 32 and elf["e_machine"] == "EM_386" and elf["e_type"] == "ET_EXEC"
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    assert len(loads) == 1 and loads[0]["p_paddr"] == loads[0]["p_vaddr"] == 0x100000
    assert loads[0]["p_memsz"] > loads[0]["p_filesz"]  # the stack is bss
    found = find_mb1(image.data)
    assert found is not None
    offset, header = found
    assert offset + 12 <= 8192
    want = MB1_FLAG_PAGE_ALIGN_MODULES | MB1_FLAG_MEMORY_INFO
    assert header.flags & want == want and not header.flags & MB1_FLAG_ADDRESS_FIELDS
    entry = elf["e_entry"]
    assert loads[0]["p_vaddr"] <= entry < loads[0]["p_vaddr"] + loads[0]["p_filesz"]
    code = image.data[loads[0]["p_offset"] + entry - 0x100000:]
    lines = text(list(Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, entry)))
    assert "cmp eax, 0x2badb002" in lines
    assert "out 0xf4, al" in lines and follows(lines, "mov dx, 0x3f8", "out dx, al")


@pytest.mark.boot
@pytest.mark.parametrize("with_module", [True, False])
def test_mbtest_under_qemu_reports_cmdline_module_and_memory(tmp_path: Path, with_module: bool) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.fail("qemu-system-x86_64 is missing: bootstrap installs it")
    kernel = tmp_path / "mbtest.elf"
    kernel.write_bytes(build("mbtest").data)
    argv = [qemu, "-accel", "tcg", "-m", "128", "-kernel", str(kernel),
            "-append", "mbtest cmdline-ok", "-serial", "stdio", "-display", "none",
            "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    if with_module:
        module = tmp_path / "module.txt"
        module.write_text("first line of module zero\nsecond line\n")
        argv += ["-initrd", str(module)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    lines = proc.stdout.replace("\r", "").splitlines()
    assert lines[0].startswith("mbtest: cmdline=") and lines[0].endswith("mbtest cmdline-ok")
    assert lines[1] == f"mbtest: modules={int(with_module)}"
    if with_module:
        assert lines[2] == "mbtest: module0=first line of module zero"
    mem_upper = lines[-1].removeprefix("mbtest: mem_upper=")
    assert lines[-1].startswith("mbtest: mem_upper=") and 100_000 < int(mem_upper) < 131_072
    # isa-debug-exit: QEMU's status is code*2+1; mbtest exits 0 when sane, 1 without a module.
    assert proc.returncode == (1 if with_module else 3), proc.stderr
