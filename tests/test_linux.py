"""A stock Debian kernel in a partition, booted to its busybox shell through Taipan's virtual platform."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import VENDORS_BOCHS_SLOW, ps_json, wait_ps

from toolchain import linux_images

pytestmark = pytest.mark.boot

ROOT = Path(__file__).resolve().parent.parent
# Wall time to the shell: about 50 s under QEMU TCG on this shared host.
PATIENCE = {"amd": 400, "intel": 3600}
SHELL = "/ # "
CTRL_RBRACKET = "\x1d"
# Port exits beyond the UART's (at most three a byte written: LSR, THR, IIR)
# that a boot and this session may cost: probing is answered in C, and must not
# take the 100,000 exits a PIT that reads as absent would (docs/linux.md).
PROBE_EXITS_MAX = 15000


@pytest.fixture(scope="module", autouse=True)
def linux_images_fetched() -> None:
    linux_images.build(ROOT / "build")


def attach(console, vendor: str) -> None:
    """`console linux`, at its shell prompt."""
    # A person's typing pace: each byte is one receive interrupt for the guest's 8250 driver.
    console.char_delay = max(console.char_delay, 0.05)
    console.type("console linux\r")
    console.expect(r"console linux: the line is the partition's now")
    console.expect(re.escape(SHELL), timeout=PATIENCE[vendor])


def shell(console, line: str, vendor: str, timeout: float | None = None) -> str:
    """One command typed at the guest's shell; what it printed before the next prompt."""
    console.type(line + "\r")
    console.expect(re.escape(line) + r"\r*\n", timeout=timeout or PATIENCE[vendor])
    console.expect(re.escape(SHELL), timeout=timeout or PATIENCE[vendor])
    return console.child.before.replace("\r", "")


def local_timer(text: str) -> int:
    match = re.search(r"^\s*LOC:\s+(\d+)", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


@pytest.mark.parametrize("vendor", VENDORS_BOCHS_SLOW)
def test_debian_kernel_reaches_its_shell_keeps_time_and_powers_off(boot_config, vendor):
    started = time.monotonic()
    console = boot_config(vendor, "linux", memory_mb=512)
    attach(console, vendor)
    print(f"{vendor}: shell after {time.monotonic() - started:.0f} s")
    console.type("\r")
    console.expect(re.escape(SHELL))
    assert linux_images.KERNEL_ABI in shell(console, "uname -r", vendor)

    # Timed from Enter to the next prompt, less what the same command takes with no
    # time to sleep: a busy host makes fork and exec under TCG take a good part of a
    # second, and the echo and prompt reach the console late; the sleep it does not.
    def timed(command: str) -> float:
        console.type(command)
        console.expect(re.escape(command), timeout=PATIENCE[vendor])
        begin = time.monotonic()
        console.type("\r")
        console.expect(r"\r*\n" + re.escape(SHELL), timeout=PATIENCE[vendor])
        return time.monotonic() - begin

    overhead = timed("sleep 0")
    slept = timed("sleep 1") - overhead
    print(f"{vendor}: sleep 1 took {slept:.2f} s of wall time beyond sleep 0's {overhead:.2f} s")
    assert 0.5 <= slept <= 2, (slept, overhead)

    first = local_timer(shell(console, "cat /proc/interrupts", vendor))
    second = local_timer(shell(console, "cat /proc/interrupts", vendor))
    assert second > first

    dmesg = shell(console, "dmesg", vendor)
    assert re.search(r"tsc: Detected [\d.]+ MHz processor", dmesg), dmesg
    assert "APIC timer disabled" not in dmesg
    # Linux's quick PIT calibration cannot meet its 500 ppm bound when each PIT
    # read is a VM exit, and says so; the rate then comes from tsc_early_khz,
    # which the hypervisor filled in (docs/linux.md). Any other failure counts.
    failed = [line for line in dmesg.splitlines() if "calibration failed" in line.lower()
              and "Fast TSC calibration failed" not in line]
    assert not failed, failed

    console.type("poweroff -f\r")
    console.type(CTRL_RBRACKET)
    console.expect("back at taipan>")
    console.wait_prompt()
    parts = wait_ps(console, lambda p: p["linux"]["state"] == "exited", PATIENCE[vendor] / 4,
                    "linux to power off")
    assert parts["linux"]["exit_code"] == 0 and "power off" in parts["linux"]["reason"], parts
    assert parts["hello"]["state"] == "running"
    before = parts["hello"]["console_bytes"]
    wait_ps(console, lambda p: p["hello"]["console_bytes"] > before, 60, "hello to go on printing")
    io, written = parts["linux"]["exits"].get("io", 0), parts["linux"]["console_bytes"]
    print(f"{vendor}: exits during the boot and session: {parts['linux']['exits']}, "
          f"{written} bytes written to the UART")
    assert io - 3 * written < PROBE_EXITS_MAX, (io, written)


@pytest.mark.slow   # a known failure waits out its whole timeout: out of the default run
@pytest.mark.xfail(strict=True, reason="reboot -f stops after 'reboot: machine restart' (in "
                   "native_machine_shutdown, before any write to the reset register: no port exit "
                   "follows); the reset port itself is not reached yet")
def test_guest_reboot_restarts_the_partition_by_its_policy(boot_config):
    console = boot_config("amd", "linux", memory_mb=512)
    attach(console, "amd")
    console.type("reboot -f\r")
    console.type(CTRL_RBRACKET)
    console.expect("back at taipan>")
    console.wait_prompt()
    wait_ps(console, lambda p: p["linux"]["starts"] >= 2, 120, "linux to start again")
    assert "reset itself" in console.command("events")
    attach(console, "amd")
    assert ps_json(console)["linux"]["state"] == "running"


def test_two_linux_partitions_each_get_their_own_shell(boot_config):
    console = boot_config("amd", "linux-pair", memory_mb=768)
    for name in ("linux1", "linux2"):
        console.char_delay = max(console.char_delay, 0.05)
        console.type(f"console {name}\r")
        console.expect(rf"console {name}: the line is the partition's now")
        console.expect(re.escape(SHELL), timeout=PATIENCE["amd"])
        console.type("\r")
        console.expect(re.escape(SHELL))
        # Each writes its own name where the other could see it if memory were shared.
        shell(console, f"echo {name} > /tmp/who; hostname {name}", "amd")
        assert name in shell(console, "cat /tmp/who; hostname", "amd")
        console.type(CTRL_RBRACKET)
        console.expect("back at taipan>")
        console.wait_prompt()
    parts = ps_json(console)
    assert parts["linux1"]["state"] == parts["linux2"]["state"] == "running", parts
