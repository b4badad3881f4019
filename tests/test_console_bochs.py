"""Taipan booted by GRUB under Bochs with a VT-x + EPT CPU: the Intel side of the console."""
from __future__ import annotations

import re

import pytest
from conftest import check_enter_forms

pytestmark = [pytest.mark.boot, pytest.mark.bochs]


def test_bochs_banner_shows_vt_x_with_ept_and_the_prompt_answers(bochs):
    assert "taipan: early boot (multiboot2)" in bochs.banner
    assert "virtualization: VT-x+EPT" in bochs.banner
    assert "GenuineIntel" in bochs.banner
    out = bochs.command("info", timeout=120)
    assert re.search(r"features:  vmx ept unrestricted", out), out
    assert re.search(r"IA32_FEATURE_CONTROL: 0x[0-9a-f]+ \((unlocked|locked by firmware with VMX enabled)", out), out
    assert re.search(r"loader: +GRUB .*\(multiboot2\)", out), out
    assert "error: unknown command 'xyzzy'" in bochs.command("xyzzy", timeout=120)


@pytest.mark.slow  # the line discipline is the same code on both vendors: test_console covers it under QEMU
def test_bochs_takes_cr_lf_and_crlf_each_as_one_enter(bochs):
    check_enter_forms(bochs, timeout=120)
