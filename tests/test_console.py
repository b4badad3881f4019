"""The serial console of a booted Taipan under QEMU TCG: banner, shell commands, REPL, faults."""
from __future__ import annotations

import re

import pexpect
import pytest
from conftest import REPL_PROMPT, Console, check_enter_forms

pytestmark = pytest.mark.boot

UP_ARROW = "\x1b[A"
BACKSPACE = "\x7f"
CTRL_C = "\x03"
CTRL_D = "\x04"


def test_banner_shows_amd_v_npt_with_epyc(qemu):
    assert "Taipan 0.1.0" in qemu.banner
    assert "virtualization: AMD-V+NPT" in qemu.banner
    assert re.search(r"cpu: AuthenticAMD, AMD EPYC", qemu.banner)
    assert re.search(r"memory: 25\d(\.\d)? MiB usable RAM, MicroPython heap \d", qemu.banner)


def test_banner_says_there_is_no_usable_virtualization_with_qemu64(qemu_boot):
    # QEMU's qemu64 model has SVM but no NPT: Taipan cannot isolate partitions there.
    console = qemu_boot(cpu="qemu64", no_reboot=True)
    assert "virtualization: none (AMD-V without NPT: no usable hardware virtualization" in console.banner


def test_banner_says_there_is_no_hardware_virtualization_without_svm(qemu_boot):
    console = qemu_boot(cpu="qemu64,-svm", no_reboot=True)
    assert "virtualization: none (no VT-x or AMD-V in CPUID: hardware virtualization is not available)" \
        in console.banner


def test_help_lists_every_command(qemu):
    out = qemu.command("help")
    for name in ("help", "info", "mem", "py", "reboot"):
        assert re.search(rf"^  {name} +\S", out, re.MULTILINE), out


def test_info_reports_cpu_features_and_memory_map(qemu):
    out = qemu.command("info")
    assert "AMD EPYC" in out
    assert "virt:      AMD-V+NPT" in out
    assert re.search(r"features:  svm npt", out)
    assert "loader:    qemu (multiboot1)" in out
    # QEMU's map: low RAM, the BIOS hole, then RAM from 1 MiB up.
    assert re.search(r"0000000000100000-000000000ffdffff +254\.\d MiB +usable", out), out


def test_memory_option_changes_what_info_reports(qemu_boot):
    small = qemu_boot(cpu="EPYC", memory_mb=128, no_reboot=True).command("info")
    large = qemu_boot(cpu="EPYC", memory_mb=512, no_reboot=True).command("info")
    assert re.search(r"memory: +127\.\d MiB usable", small), small
    assert re.search(r"memory: +511\.\d MiB usable", large), large


def test_mem_shows_allocator_owners_and_heap(qemu):
    out = qemu.command("mem")
    pages = re.search(r"pages: +(\d+) total, (\d+) free .*, (\d+) reserved", out)
    assert pages, out
    total, free, reserved = map(int, pages.groups())
    assert total == free + reserved and 0 < free < total
    for owner in ("low memory", "image", "micropython heap"):
        assert re.search(rf"^  {owner} +[0-9a-f]{{16}} ", out, re.MULTILINE), out
    heap = re.search(r"heap: +([\d.]+) MiB total, ([\d.]+) KiB used", out)
    assert heap and float(heap.group(1)) > 8, out


def test_unknown_command_prints_one_error_line_and_the_prompt_returns(qemu):
    assert qemu.command("frobnicate now") == "error: unknown command 'frobnicate' (try 'help')\n"
    assert "memory map:" in qemu.command("info")


def test_cr_lf_and_crlf_each_end_exactly_one_line(qemu):
    check_enter_forms(qemu)


def test_repl_does_arithmetic_survives_an_exception_and_ctrl_d_returns(qemu):
    qemu.command("py", prompt=REPL_PROMPT)
    assert qemu.command("6 * 7", prompt=REPL_PROMPT).strip() == "42"
    out = qemu.command("1 / 0", prompt=REPL_PROMPT)
    assert "ZeroDivisionError" in out and "Traceback" in out
    assert qemu.command("2 ** 70", prompt=REPL_PROMPT).strip() == str(2**70)
    qemu.type("3 * 3\n")  # LF is Enter in the REPL too
    qemu.child.expect_exact(REPL_PROMPT)
    assert qemu.child.before.replace("\r", "").split("\n")[1:] == ["9", ""]
    qemu.type(CTRL_D)
    qemu.wait_prompt()
    assert "error: unknown command" in qemu.command("nope")


def test_ctrl_c_interrupts_a_running_loop(qemu):
    qemu.command("py", prompt=REPL_PROMPT)
    qemu.type("while True: pass\r\r")
    qemu.expect(re.escape("... "))
    qemu.type(CTRL_C)
    qemu.expect("KeyboardInterrupt")
    qemu.child.expect_exact(REPL_PROMPT)
    assert qemu.command("1 + 1", prompt=REPL_PROMPT).strip() == "2"


def test_line_editing_and_history(qemu):
    qemu.type("hlx" + BACKSPACE + BACKSPACE + "elp\r")
    out = qemu.wait_prompt()
    assert "reboot" in out
    qemu.type(UP_ARROW + "\r")
    assert "reboot" in qemu.wait_prompt()


def test_cpu_exception_prints_a_register_dump_and_halts_cleanly(qemu):
    qemu.command("py", prompt=REPL_PROMPT)
    qemu.command("import hv", prompt=REPL_PROMPT)
    qemu.type("hv.peek(0x7fff00000000)\r")
    qemu.expect(r"taipan: CPU exception 14 #PF \(page fault\) error=0x0")
    qemu.expect("taipan: this CPU is halted")
    dump = qemu.child.before
    assert re.search(r"CR2 +00007fff00000000", dump), dump
    for reg in ("RIP", "CS", "RFLAGS", "RSP", "SS", "CR0", "CR3", "CR4", "RAX", "RBX", "RCX", "RDX",
                "RSI", "RDI", "RBP", "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"):
        assert re.search(rf"\b{reg} +[0-9a-f]{{16}}\b", dump), reg
    # A clean halt, not a triple fault: QEMU (-no-reboot) would exit on a reset.
    assert qemu.child.isalive()


def test_reboot_restarts_the_machine(qemu_boot):
    console = qemu_boot(cpu="EPYC")
    console.child.send("reboot\r")
    console.expect("rebooting")
    console.expect("taipan: early boot", timeout=60)
    console.wait_prompt()
    assert "memory map:" in console.command("info")


def test_grub_boots_the_iso_by_multiboot2(taipan_iso):
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "EPYC", "-m", "256", "-cdrom", str(taipan_iso),
            "-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot"]
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=120)
    try:
        console = Console(child).boot()
        assert "taipan: early boot (multiboot2)" in console.banner
        assert "virtualization: AMD-V+NPT" in console.banner
        assert re.search(r"loader: +GRUB .*\(multiboot2\)", console.command("info"))
    finally:
        child.terminate(force=True)
