"""Taipan under QEMU with KVM, for hosts whose KVM offers nested VT-x or AMD-V."""
from __future__ import annotations

import time

import pexpect
import pytest
from conftest import Console, config_image

from toolchain import emulator

NESTED, WHY = emulator.kvm_nested_available()

pytestmark = [pytest.mark.boot,
              pytest.mark.skipif(not NESTED, reason=f"no nested virtualization under KVM here: {WHY}")]


def test_demo_partitions_run_under_nested_kvm():
    argv = emulator.qemu_argv(config_image("demo"), accel="kvm", memory_mb=256, no_reboot=True)
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=60)
    try:
        console = Console(child).boot()
        assert "virtualization: VT-x+EPT" in console.banner or "virtualization: AMD-V+NPT" in console.banner
        assert "partitions: hello1 (running), hello2 (running)" in console.banner
        deadline = time.monotonic() + 30
        log = ""
        while not ("[hello1] hello from hello1" in log and "[hello2] hello from hello2" in log):
            assert time.monotonic() < deadline, log
            time.sleep(0.5)
            log = console.command("log -n 20")
    finally:
        child.terminate(force=True)
