"""Emulator drivers: QEMU argv flags, the KVM probe, and the trivial kernel booted in QEMU and Bochs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from guests.trivial import write_kernel
from toolchain.emulator import (
    BochsRun,
    bochs_argv,
    bochs_files,
    bochs_missing,
    kvm_nested_available,
    qemu_argv,
)
from toolchain.iso import make_iso


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_qemu_argv_defaults_follow_the_measured_tcg_svm_command() -> None:
    argv = qemu_argv(Path("k.elf"))
    assert argv[0] == "qemu-system-x86_64"
    assert (_flag(argv, "-accel"), _flag(argv, "-cpu"), _flag(argv, "-m")) == ("tcg", "EPYC", "128")
    assert _flag(argv, "-kernel") == "k.elf"
    # stdio: the terminal is the console; Ctrl-C goes to Taipan and QEMU's escape is Ctrl-T.
    assert _flag(argv, "-chardev") == "stdio,id=console,mux=on,signal=off"
    assert _flag(argv, "-serial") == "chardev:console" and _flag(argv, "-echr") == "0x14"
    assert _flag(argv, "-display") == "none"
    assert _flag(argv, "-device") == "isa-debug-exit,iobase=0xf4,iosize=0x04"
    assert "-no-reboot" not in argv and "-append" not in argv


def test_qemu_argv_options_map_to_flags() -> None:
    argv = qemu_argv(Path("k"), accel="kvm", smp=2, memory_mb=256, serial="unix:/tmp/s",
                     append="a=1", no_reboot=True, extra=["-S"])
    assert (_flag(argv, "-accel"), _flag(argv, "-cpu")) == ("kvm", "host")
    assert (_flag(argv, "-smp"), _flag(argv, "-m")) == ("2", "256")
    assert _flag(argv, "-serial") == "unix:/tmp/s,server=on,wait=off"
    assert _flag(argv, "-append") == "a=1"
    assert "-no-reboot" in argv and argv[-1] == "-S"
    assert _flag(qemu_argv(Path("k"), serial="pty"), "-serial") == "pty"
    with pytest.raises(ValueError, match="serial"):
        qemu_argv(Path("k"), serial="tcp:1")
    clocked = qemu_argv(Path("k"), instruction_clock=True, tcg_single_thread=True)
    assert (_flag(clocked, "-icount"), _flag(clocked, "-accel")) == ("shift=2,sleep=off", "tcg,thread=single")
    assert "-icount" not in argv
    with pytest.raises(ValueError, match="TCG options"):
        qemu_argv(Path("k"), accel="kvm", instruction_clock=True)


def test_kvm_probe_names_its_reason(tmp_path: Path) -> None:
    ok, reason = kvm_nested_available()
    assert isinstance(ok, bool) and reason
    assert kvm_nested_available(tmp_path) == (False, "/dev/kvm does not exist")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kvm").write_text("")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("flags\t: fpu sse2 hypervisor\n")
    ok, reason = kvm_nested_available(tmp_path)
    assert not ok and "neither vmx nor svm" in reason
    (tmp_path / "proc/cpuinfo").write_text("flags\t: fpu svm\n")
    nested = tmp_path / "sys/module/kvm_amd/parameters/nested"
    nested.parent.mkdir(parents=True)
    nested.write_text("0\n")
    assert kvm_nested_available(tmp_path)[0] is False
    nested.write_text("1\n")
    assert kvm_nested_available(tmp_path)[0] is True


def test_bochs_files_hold_the_iso_cpu_and_serial(tmp_path: Path) -> None:
    rc, cmds = bochs_files(tmp_path / "x.iso", tmp_path, cpu_model="ryzen", memory_mb=64)
    text = rc.read_text()
    assert "model=ryzen" in text and "megs: 64" in text
    assert f"path={tmp_path / 'x.iso'}" in text
    assert f"com1: enabled=1, mode=file, dev={tmp_path / 'serial.txt'}" in text
    assert cmds.read_text() == "c\nquit\n"
    assert bochs_argv(rc, cmds)[:2] == ["script", "-qfec"]


@pytest.mark.boot
def test_trivial_kernel_prints_ok_under_qemu_tcg_epyc(tmp_path: Path) -> None:
    kernel = write_kernel(tmp_path / "trivial.elf")
    proc = subprocess.run(qemu_argv(kernel), capture_output=True, timeout=60, check=False)
    assert proc.stdout == b"ok\n"
    assert proc.returncode == 1  # isa-debug-exit: 0*2+1


@pytest.mark.boot
def test_trivial_kernel_boots_from_grub_iso_under_qemu(tmp_path: Path) -> None:
    iso = make_iso(write_kernel(tmp_path / "trivial.elf"), tmp_path / "trivial.iso")
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "128", "-cdrom", str(iso),
            "-serial", "stdio", "-display", "none", "-monitor", "none",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    assert proc.stdout.endswith(b"ok\n"), proc.stdout[-200:]


@pytest.mark.boot
@pytest.mark.bochs
def test_trivial_kernel_boots_under_bochs_and_reads_console_input(tmp_path: Path) -> None:
    assert bochs_missing() is None, bochs_missing()
    iso = make_iso(write_kernel(tmp_path / "echo.elf", echo=True), tmp_path / "echo.iso")
    with BochsRun(iso, tmp_path / "bochs") as run:
        run.follow(rb"ok\n", timeout=60)
        run.send("typed")
        run.follow(rb"typed", timeout=30)
    assert b"ok\ntyped" in run.serial_path.read_bytes()


def test_bochs_above_its_2_gib_host_limit_gets_guest_memory_backed_by_2_gib(tmp_path: Path) -> None:
    rc, _ = bochs_files(Path("t.iso"), tmp_path, memory_mb=6144)
    assert "memory: guest=6144, host=2048\n" in rc.read_text() and "megs:" not in rc.read_text()
    rc, _ = bochs_files(Path("t.iso"), tmp_path, memory_mb=2048)
    assert "megs: 2048\n" in rc.read_text()
