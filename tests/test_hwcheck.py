"""taipan hwcheck against fixture machines (fake /proc, /sys and /dev/cpu trees) and once for real."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from toolchain import cli, hwcheck

SECURE_BOOT = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def _write(root: Path, name: str, data: str | bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


def _msr_file(root: Path, values: dict[int, int]) -> None:
    # The msr driver is read at offset = MSR number; a sparse file answers the same way.
    path = root / "dev/cpu/0/msr"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    for index, value in values.items():
        os.pwrite(fd, struct.pack("<Q", value), index)
    os.close(fd)


def _madt(enabled: int, disabled: int = 0, x2apic: int = 0) -> bytes:
    """An MADT as the ACPI spec lays it out: header, LAPIC address, flags, then entries."""
    entries = b"".join(struct.pack("<BBBBI", 0, 8, n, n, 1) for n in range(enabled))
    entries += b"".join(struct.pack("<BBBBI", 0, 8, 100 + n, 100 + n, 0) for n in range(disabled))
    entries += b"".join(struct.pack("<BBHIII", 9, 16, 0, 200 + n, 1, 200 + n) for n in range(x2apic))
    entries += struct.pack("<BBBBIH", 1, 12, 0, 0, 0xFEC00000, 0)   # an IOAPIC: not a CPU
    length = 44 + len(entries)
    header = b"APIC" + struct.pack("<IBB6s8sI4sI", length, 5, 0, b"TAIPAN", b"FIXTURE ", 1,
                                   b"TEST", 1)
    return header + struct.pack("<II", 0xFEE00000, 1) + entries


def _cpuinfo(vendor: str, model: str, flags: str, vmx_flags: str = "", cpus: int = 4) -> str:
    block = (f"vendor_id\t: {vendor}\nmodel name\t: {model}\nflags\t\t: {flags}\n"
             + (f"vmx flags\t: {vmx_flags}\n" if vmx_flags else ""))
    return "".join(f"processor\t: {n}\n{block}\n" for n in range(cpus))


def _common(root: Path, *, ram_kib: int = 16 << 20) -> None:
    _write(root, "proc/meminfo", f"MemTotal:       {ram_kib} kB\nMemFree:        1000 kB\n")
    _write(root, "sys/firmware/acpi/tables/APIC", _madt(enabled=4, disabled=2))


@pytest.fixture
def intel(tmp_path: Path) -> Path:
    """A UEFI Intel desktop, Secure Boot off, VT-x locked on by firmware, COM1 present."""
    root = tmp_path / "intel"
    _common(root)
    _write(root, "proc/cpuinfo", _cpuinfo(
        "GenuineIntel", "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "fpu sse2 lm vmx pdpe1gb",
        "vnmi preemption_timer invvpid ept_x_only ept_ad ept_1gb flexpriority tsc_offset "
        "ept vpid unrestricted_guest"))
    _msr_file(root, {hwcheck.MSR_FEATURE_CONTROL: 0x5})
    _write(root, SECURE_BOOT, b"\x06\x00\x00\x00\x00")
    _write(root, "proc/tty/driver/serial", "serinfo:1.0 driver revision:\n"
           "0: uart:16550A port:000003F8 irq:4 tx:0 rx:0\n1: uart:unknown port:000002F8 irq:3\n")
    return root


@pytest.fixture
def amd(tmp_path: Path) -> Path:
    """A BIOS AMD server: SVM with NPT and next-RIP save, VM_CR open, ttyS0 at 0x3f8."""
    root = tmp_path / "amd"
    _common(root, ram_kib=64 << 20)
    _write(root, "proc/cpuinfo", _cpuinfo(
        "AuthenticAMD", "AMD EPYC 7302 16-Core Processor", "fpu sse2 lm svm pdpe1gb npt nrip_save"))
    _msr_file(root, {hwcheck.MSR_VM_CR: 0x0})
    _write(root, "sys/class/tty/ttyS0/port", "0x3F8\n")
    _write(root, "sys/class/tty/ttyS0/type", "4\n")
    return root


@pytest.fixture
def novirt(tmp_path: Path) -> Path:
    """A cloud VM like this build machine: Intel without VMX, under a hypervisor, no UART."""
    root = tmp_path / "novirt"
    _common(root, ram_kib=2 << 20)
    _write(root, "proc/cpuinfo", _cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Processor",
                                              "fpu sse2 lm hypervisor pdpe1gb", cpus=2))
    _write(root, "sys/class/tty/ttyS0/port", "0x3F8\n")
    _write(root, "sys/class/tty/ttyS0/type", "0\n")
    return root


def _by_item(report: hwcheck.Report) -> dict[str, hwcheck.Check]:
    return {c.item: c for c in report.checks}


def test_intel_uefi_desktop_can_run_taipan(intel: Path) -> None:
    report = hwcheck.check(intel)
    checks = _by_item(report)
    assert report.can_run and report.verdict.startswith("yes")
    assert {c.status for c in report.checks} == {hwcheck.OK}
    assert checks["feature control"].have == "0x5: locked, VMX on"
    assert checks["CPUs (MADT)"].have == "4"   # the two disabled entries and the IOAPIC don't count
    assert checks["firmware"].have == "UEFI, Secure Boot off"
    assert checks["serial"].have == "16550A at 0x3f8"
    assert checks["EPT"].have == checks["unrestricted guest"].have == "yes"


def test_amd_bios_server_can_run_taipan(amd: Path) -> None:
    report = hwcheck.check(amd)
    checks = _by_item(report)
    assert report.can_run, hwcheck.format_report(report)
    assert [checks[i].status for i in ("AMD-V", "NPT", "next-RIP save", "feature control")] == ["ok"] * 4
    assert checks["firmware"].have == "BIOS (legacy boot)"
    assert checks["serial"].have == "ttyS0 at 0x3f8, type 4"
    assert checks["RAM"].have == "64.0 GiB"


def test_machine_without_virtualization_gets_no_and_each_fix(novirt: Path) -> None:
    report = hwcheck.check(novirt)
    checks = _by_item(report)
    assert not report.can_run and report.verdict.startswith("no")
    assert checks["VT-x"].status == "fail" and "firmware setup" in checks["VT-x"].fix
    assert checks["hypervisor below"].status == "warn"
    assert "no nested virtualization" in checks["hypervisor below"].have
    assert checks["serial"].status == "fail" and "0x3f8" in checks["serial"].fix
    text = hwcheck.format_report(report)
    assert "verdict: no" in text and "  VT-x: " in text and "  serial: " in text


def test_vtx_locked_off_by_firmware_says_enable_it_in_the_setup(intel: Path) -> None:
    cpuinfo = (intel / "proc/cpuinfo").read_text().replace(" vmx", "")
    _write(intel, "proc/cpuinfo", "\n".join(line for line in cpuinfo.splitlines()
                                            if not line.startswith("vmx flags")) + "\n")
    _msr_file(intel, {hwcheck.MSR_FEATURE_CONTROL: 0x1})   # locked, VMX outside SMX off
    check = _by_item(hwcheck.check(intel))["VT-x"]
    assert (check.status, check.have) == ("fail", "disabled by firmware")
    assert check.fix == ("VT-x is disabled in firmware: enable Intel Virtualization Technology in "
                         "the firmware setup")


def test_vmx_without_ept_fails_and_secure_boot_on_fails(intel: Path) -> None:
    text = (intel / "proc/cpuinfo").read_text().replace(" ept vpid", " vpid")
    _write(intel, "proc/cpuinfo", text)
    _write(intel, SECURE_BOOT, b"\x06\x00\x00\x00\x01")
    checks = _by_item(hwcheck.check(intel))
    assert checks["EPT"].status == "fail" and "EPT" in checks["EPT"].fix
    assert checks["firmware"].status == "fail" and "docs/boot.md" in checks["firmware"].fix


def test_unreadable_msrs_are_unknown_with_how_to_read_them(intel: Path) -> None:
    (intel / "dev/cpu/0/msr").unlink()
    report = hwcheck.check(intel)
    check = _by_item(report)["feature control"]
    assert check.status == "unknown" and "modprobe msr" in check.fix
    assert report.can_run and report.verdict.startswith("probably")


def test_older_kernel_without_vmx_flags_reads_the_capability_msrs(intel: Path) -> None:
    text = "\n".join(line for line in (intel / "proc/cpuinfo").read_text().splitlines()
                     if not line.startswith("vmx flags"))
    _write(intel, "proc/cpuinfo", text + "\n")
    allowed1 = lambda *bits: sum(1 << (32 + b) for b in bits)  # noqa: E731
    _msr_file(intel, {hwcheck.MSR_FEATURE_CONTROL: 0x5, hwcheck.MSR_VMX_PROCBASED: allowed1(31),
                      hwcheck.MSR_VMX_PROCBASED2: allowed1(1), hwcheck.MSR_VMX_PINBASED: allowed1(6)})
    checks = _by_item(hwcheck.check(intel))
    assert checks["EPT"].status == "ok" and checks["preemption timer"].status == "ok"
    assert checks["unrestricted guest"].status == "fail"


def test_madt_counts_enabled_local_apics_and_x2apics() -> None:
    assert hwcheck.madt_cpus(_madt(enabled=3, disabled=5, x2apic=2)) == 5
    with pytest.raises(ValueError, match="not an MADT"):
        hwcheck.madt_cpus(b"FACP" + bytes(60))


def test_cli_json_and_exit_status(intel: Path, novirt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["hwcheck", "--root", str(intel), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["can_run"] is True and doc["verdict"].startswith("yes")
    assert {c["item"] for c in doc["checks"]} >= {"VT-x", "EPT", "CPUs (MADT)", "RAM", "firmware",
                                                  "serial", "feature control", "preemption timer"}
    assert cli.main(["hwcheck", "--root", str(novirt)]) == 1
    assert "verdict: no" in capsys.readouterr().out
    assert cli.main(["hwcheck", "--root", str(intel / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_this_machine_for_real_agrees_with_its_cpuinfo() -> None:
    """Run once on the real machine: the verdict follows what /proc/cpuinfo offers."""
    report = hwcheck.check(Path("/"))
    flags = hwcheck.parse_cpuinfo(Path("/proc/cpuinfo").read_text()).flags
    virt = _by_item(report).get("VT-x") or _by_item(report)["AMD-V"]
    assert (virt.status == "ok") == bool(flags & {"vmx", "svm"})
    if not flags & {"vmx", "svm"}:
        assert not report.can_run and report.verdict.startswith("no")
    madt = Path("/sys/firmware/acpi/tables/APIC")
    if os.access(madt, os.R_OK):
        assert _by_item(report)["CPUs (MADT)"].have == str(os.cpu_count())
