"""The virtual CPU's tables and its gcc-built test kernel, checked on the host: the MSR table and its docs, the ELF32 image."""
from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, Cs
from elftools.elf.elffile import ELFFile

from boot.multiboot import find_mb1
from guests import build_guest, c_kernel
from toolchain import cpuid, msrs, vmcb, vmcs

REPO = Path(__file__).resolve().parent.parent


def test_msr_table_is_sorted_unique_and_names_a_register_for_each_reg_kind() -> None:
    indices = [m.index for m in msrs.MSRS]
    assert len(indices) == len(set(indices))
    text = msrs.header()
    rows = [line for line in text.splitlines() if line.startswith("    { 0x")]
    assert [int(r.split()[1].rstrip("u,"), 16) for r in rows] == sorted(indices)
    assert f"#define VMSR_COUNT {len(indices)}u" in text
    for m in msrs.MSRS:
        assert (m.kind == "REG") == bool(m.reg), m.name


def test_msr_table_holds_what_the_manuals_and_linux_need() -> None:
    by_name = {m.name: m for m in msrs.MSRS}
    assert by_name["IA32_PAT"].reset == 0x0007040600070406
    assert by_name["IA32_APIC_BASE"].reset == 0xFEE00900
    assert by_name["IA32_EFER"].index == 0xC0000080 and by_name["IA32_EFER"].per_vcpu
    # The other vendor's virtualization MSRs do not exist (#GP), and neither do VMX's capability MSRs.
    assert by_name["VM_CR"].vendors == by_name["VM_HSAVE_PA"].vendors == "amd"
    assert by_name["IA32_FEATURE_CONTROL"].vendors == "intel"
    assert not any(0x480 <= m.index <= 0x491 for m in msrs.MSRS)


def test_docs_vcpu_md_holds_the_generated_msr_table() -> None:
    page = (REPO / "docs" / "vcpu.md").read_text()
    assert msrs.markdown_table() in page, "regenerate docs/vcpu.md's MSR table from toolchain/msrs.py"


def test_msr_header_compiles_and_its_table_is_what_python_says(tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    msrs.generate_headers(gen)
    vmcs.generate_headers(gen)
    vmcb.generate_headers(gen)
    source = tmp_path / "t.c"
    source.write_text('#include <stdio.h>\n#include "vmsr_table.h"\nint main(void) {\n'
                      '    for (unsigned i = 0; i < VMSR_COUNT; i++)\n'
                      '        printf("%x %s %llx\\n", vmsr_table[i].index, vmsr_table[i].name,'
                      ' (unsigned long long)vmsr_table[i].reset);\n    return 0;\n}\n')
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Werror", f"-I{gen}", f"-I{REPO / 'hv'}", str(source),
                    "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    want = [f"{m.index:x} {m.name} {m.reset:x}" for m in sorted(msrs.MSRS, key=lambda m: m.index)]
    assert out[:-1] == want


def test_longmode_kernel_is_an_elf32_multiboot_image_built_by_gcc() -> None:
    image = build_guest("longmode", name="lm", memory=16 << 20)
    assert image.kind == "multiboot"
    elf = ELFFile(io.BytesIO(image.data))
    assert elf.elfclass == 32 and elf["e_machine"] == "EM_386"
    found = find_mb1(image.data)
    assert found is not None and found[1].flags == 0x2
    assert struct.unpack_from("<I", image.data, found[0])[0] == 0x1BADB002
    # Its entry is 32-bit code that turns on PAE, writes EFER and then CR0.PG, in that order.
    text = next(s for s in elf.iter_sections() if s.name == ".text")
    entry = elf["e_entry"]
    code = text.data()[entry - text["sh_addr"]:][:160]
    insns = [f"{i.mnemonic} {i.op_str}".strip() for i in Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, entry)]
    order = [insns.index(x) for x in ("mov cr4, eax", "mov cr3, eax", "wrmsr", "mov cr0, eax")]
    assert order == sorted(order)
    assert "or eax, 0x100" in insns and "or eax, 0x80000000" in insns
    # Built into build/, never committed.
    built = list(c_kernel.BUILD.glob("longmode-*/longmode.elf"))
    assert built and all(REPO / "build" in p.parents for p in built)


def test_c_kernel_build_errors_name_the_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(c_kernel, "CC", "no-such-gcc")
    monkeypatch.setattr(c_kernel, "BUILD", tmp_path)
    with pytest.raises(ValueError, match="no-such-gcc is not installed"):
        build_guest("longmode", name="lm", memory=16 << 20)


def test_docs_vcpu_md_holds_the_generated_cpuid_table() -> None:
    page = (REPO / "docs" / "vcpu.md").read_text()
    assert cpuid.markdown_table() in page, "regenerate docs/vcpu.md's CPUID table from toolchain/cpuid.py"


def test_hidden_cpuid_bits_cover_nesting_and_what_has_no_msrs() -> None:
    hidden = {(h.leaf, h.reg): 0 for h in cpuid.HIDDEN}
    for h in cpuid.HIDDEN:
        hidden[(h.leaf, h.reg)] |= h.bits
    assert hidden[(1, "ecx")] & (1 << 5)            # VMX
    assert hidden[(0x80000001, "ecx")] & (1 << 2)   # SVM
    assert hidden[(7, "edx")] & (1 << 29)           # ARCH_CAPABILITIES: no such MSR in the table
    assert not any(m.index == 0x10A for m in msrs.MSRS)
    # What the longmode guest and Linux rely on stays: APIC, XSAVE, AVX, RDTSCP, NX.
    assert not hidden[(1, "edx")] & (1 << 9)
    assert not hidden[(1, "ecx")] & ((1 << 26) | (1 << 28))
    assert not hidden.get((0x80000001, "edx"), 0) & ((1 << 27) | (1 << 20))
    text = cpuid.header()
    assert f"#define VCPUID_HIDDEN_COUNT {len(cpuid.HIDDEN)}u" in text
