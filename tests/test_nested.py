"""Taipan under another hypervisor: detected by CPUID 0x40000000 and described; --accel kvm refuses where KVM cannot nest."""
from __future__ import annotations

import re

import pytest

from toolchain import cli, emulator


def test_accel_kvm_refuses_without_nesting_with_the_reason_before_building(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # A host like this one, as files: /dev/kvm present, no vmx or svm in /proc/cpuinfo.
    # The fixture root makes the refusal testable on a host whose KVM does nest too.
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kvm").write_text("")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu pae lm hypervisor\n")
    real = emulator.kvm_nested_available
    monkeypatch.setattr(emulator, "kvm_nested_available", lambda root=tmp_path: real(root))
    ok, why = emulator.kvm_nested_available()
    assert not ok and "neither vmx nor svm" in why
    assert cli.main(["run", "--accel", "kvm"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"taipan: --accel kvm needs nested virtualization: {why} "
                           "(docs/nested.md says how to enable it)")
    assert "taipan: qemu-system-x86_64" not in err   # nothing was started


def test_accel_kvm_is_no_bochs_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--emulator", "bochs", "--accel", "kvm"]) == 2
    assert "Bochs has no KVM" in capsys.readouterr().err


@pytest.mark.boot
def test_qemu_tcg_is_named_as_the_hypervisor_below_with_what_it_offers(qemu) -> None:
    note = "QEMU TCG offers nested AMD-V: NPT yes, next-RIP save no, 1 GiB nested pages yes"
    assert f"nested: running under QEMU TCG - {note}" in qemu.banner
    out = qemu.command("info")
    assert 'hypervisor: QEMU TCG (CPUID 0x40000000 "TCGTCGTCGTCG")' in out, out
    assert re.search(rf"nested: +{re.escape(note)}", out), out
    assert re.search(r"features:  svm npt hypervisor", out)
