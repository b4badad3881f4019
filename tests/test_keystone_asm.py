"""The keystone wrapper: correct bytes for our instructions, clear errors, crashes that stay contained."""

import stat

import pytest
from capstone import CS_ARCH_X86, CS_MODE_16, Cs

from toolchain.keystone_asm import AsmJob, AssemblyError, assemble, assemble_many


def test_vmx_and_svm_instructions_assemble_in_64_bit_mode():
    code = assemble("vmxon qword ptr [rax]\nvmlaunch\nvmresume\nvmrun rax\nvmload rax\n"
                    "vmsave rax\nstgi\nclgi\n", mode=64, base=0x100000)
    assert code == bytes.fromhex("f30fc730" "0f01c2" "0f01c3" "0f01d8" "0f01da" "0f01db"
                                 "0f01dc" "0f01dd")


def test_labels_resolve_against_the_absolute_base():
    code = assemble("here:\n    jmp here\n.quad here\n", mode=64, base=0x123450)
    assert code == bytes.fromhex("ebfe") + (0x123450).to_bytes(8, "little")


def test_32_bit_mode_uses_32_bit_operands():
    assert assemble("mov eax, 1\ninc eax\n", mode=32, base=0) == bytes.fromhex("b80100000040")


def test_an_unknown_mnemonic_names_the_line_and_keystones_reason():
    with pytest.raises(AssemblyError) as caught:
        assemble("nop\nmov eax, 1\nfrobnicate rax\nnop\n", mode=64, base=0)
    assert caught.value.line_number == 3
    assert caught.value.line == "frobnicate rax"
    assert "MNEMONIC" in str(caught.value) and "frobnicate rax" in str(caught.value)


def test_a_missing_symbol_is_found_despite_forward_references():
    with pytest.raises(AssemblyError) as caught:
        assemble("jmp later\nnop\nlater:\njmp nowhere\n", mode=64, base=0)
    assert caught.value.line_number == 4
    assert "SYMBOL_MISSING" in caught.value.keystone_message


def test_plain_vmrun_without_operand_is_refused():
    with pytest.raises(AssemblyError):
        assemble("vmrun\n", mode=64, base=0)


def _fake_python(tmp_path, script: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_child_crash_is_reported_not_fatal(tmp_path):
    python = _fake_python(tmp_path, 'echo "LLVM ERROR: expected absolute expression" >&2\n'
                                    "kill -ABRT $$\n")
    with pytest.raises(AssemblyError) as caught:
        assemble_many([AsmJob("nop\n", 64, 0, "piece")], python=python)
    message = str(caught.value)
    assert "crashed" in message and "SIGABRT" in message
    assert "LLVM ERROR: expected absolute expression" in message and "piece" in message


def test_a_crash_is_blamed_on_the_job_that_was_running(tmp_path):
    python = _fake_python(tmp_path, "cat >/dev/null\necho '{\"ok\": \"90\"}'\nexit 134\n")
    with pytest.raises(AssemblyError) as caught:
        assemble_many([AsmJob("nop\n", 64, 0, "first"), AsmJob("nop\n", 64, 0, "second")],
                      python=python)
    assert caught.value.job == "second"


def test_empty_output_from_real_statements_is_an_error(tmp_path):
    python = _fake_python(tmp_path, "cat >/dev/null\necho '{\"ok\": \"\"}'\n")
    with pytest.raises(AssemblyError, match="no bytes"):
        assemble_many([AsmJob("nop\n", 64, 0)], python=python)


def test_a_bad_mode_is_refused_before_spawning():
    with pytest.raises(ValueError):
        assemble("nop", mode=8, base=0)


def test_16_bit_mode_assembles_real_mode_code():
    # The AP trampoline's first part: capstone reads back what keystone made.
    code = assemble("cli\nmov ax, cs\nmov ds, ax\nmov eax, cr0\n", mode=16, base=0)
    ops = [(i.mnemonic, i.op_str) for i in Cs(CS_ARCH_X86, CS_MODE_16).disasm(code, 0)]
    assert ops == [("cli", ""), ("mov", "ax, cs"), ("mov", "ds, ax"), ("mov", "eax, cr0")]
