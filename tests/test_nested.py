"""Taipan under another hypervisor: detected by CPUID 0x40000000 and described; --accel kvm refuses where KVM cannot nest."""
from __future__ import annotations

import re

import pytest

from toolchain import cli, emulator


def test_accel_kvm_refuses_here_with_the_reason_before_building(capsys: pytest.CaptureFixture[str]) -> None:
    ok, why = emulator.kvm_nested_available()
    if ok:
        pytest.skip(f"this host's KVM nests ({why}): tests/test_kvm.py boots Taipan under it")
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
