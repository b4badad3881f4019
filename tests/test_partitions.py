"""Partitions on both vendors: AMD-V+NPT under QEMU TCG, VT-x+EPT under Bochs, driven from the console."""
from __future__ import annotations

import json
import re
import time

import pytest
from conftest import VENDORS, VENDORS_BOCHS_SLOW, logged_counts

pytestmark = pytest.mark.boot

# Guests run while the console waits, and Bochs runs them about 30 times slower than QEMU.
PATIENCE = {"amd": 60, "intel": 240}


def ps(console) -> dict[str, dict]:
    """`ps` parsed: name -> {state, cpu, memory, exits} (and the reason line, if any)."""
    rows: dict[str, dict] = {}
    last = None
    lines = console.command("ps").splitlines()
    # Announcements of partitions that ended may come before the table's header.
    header = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    for line in lines[header + 1:]:
        fields = line.split()
        if line.startswith(" ") and last:
            rows[last]["reason"] = line.strip()
        elif len(fields) >= 6:
            last = fields[0]
            rows[last] = {"state": fields[1], "cpu": int(fields[2]), "memory": " ".join(fields[3:5]),
                          "exits": dict(f.split("=") for f in fields[6:] if "=" in f)}
    return rows


def wait_for(console, predicate, vendor: str, what: str):
    """Ask the console again until predicate(ps rows) holds; guests run between commands."""
    deadline = time.monotonic() + PATIENCE[vendor]
    while True:
        rows = ps(console)
        if predicate(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; ps: {json.dumps(rows)}")
        time.sleep(0.5)


def counters(console, name: str) -> list[int]:
    return logged_counts(console, name, lines=50)


@pytest.mark.parametrize("vendor", VENDORS)
def test_two_hello_partitions_print_interleaved_and_ps_shows_both_running(boot_config, vendor):
    console = boot_config(vendor, "demo")
    rows = wait_for(console, lambda r: all(int(r[n]["exits"].get("io", 0)) > 200 for n in ("hello1", "hello2")),
                    vendor, "both hello partitions to print")
    assert rows["hello1"]["state"] == rows["hello2"]["state"] == "running"
    merged = console.command("log -n 40")
    names = re.findall(r"^\[(hello[12])\] hello from \1 \d+$", merged, re.MULTILINE)
    assert {"hello1", "hello2"} <= set(names), merged
    # Interleaved: the merged journal switches between the two, not one block after the other.
    switches = sum(1 for a, b in zip(names, names[1:], strict=False) if a != b)
    assert switches >= 2, merged
    seen = counters(console, "hello1")
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen


@pytest.mark.parametrize("vendor", VENDORS)
def test_stop_and_start_and_output_resumes(boot_config, vendor):
    console = boot_config(vendor, "demo")
    wait_for(console, lambda r: int(r["hello1"]["exits"].get("io", 0)) > 100, vendor, "hello1 output")
    assert console.command("stop hello1") == "hello1 stopped\n"
    assert ps(console)["hello1"]["state"] == "stopped"
    before = len(console.command("log hello1 -n 1000").splitlines())
    time.sleep(1)
    assert len(console.command("log hello1 -n 1000").splitlines()) == before
    assert console.command("start hello1") == "hello1 started\n"
    wait_for(console, lambda r: r["hello1"]["state"] == "running", vendor, "hello1 running")
    deadline = time.monotonic() + PATIENCE[vendor]
    while "hello from hello1 0" not in console.command("log hello1 -n 3"):
        assert time.monotonic() < deadline, "hello1 printed nothing after its restart"
        time.sleep(0.5)
    assert "error: unknown command" not in console.command("start hello1")
    assert console.command("start nosuch") == "error: no partition named 'nosuch' (see 'ps')\n"


@pytest.mark.parametrize("vendor", VENDORS_BOCHS_SLOW)
def test_console_attaches_to_a_partition_and_ctrl_bracket_detaches(boot_config, vendor):
    console = boot_config(vendor, "demo")
    console.type("console hello2\r")
    console.expect(r"console hello2: the line is the partition's now")
    console.expect(r"hello from hello2 \d+", timeout=PATIENCE[vendor])
    console.type("\x1d")
    console.expect("back at taipan>")
    console.wait_prompt()
    assert "hello1" in console.command("ps")


@pytest.mark.parametrize("vendor", VENDORS)
def test_attacker_faults_with_the_address_while_hello_keeps_printing(boot_config, vendor):
    console = boot_config(vendor, "attacker")
    rows = wait_for(console, lambda r: r["attacker"]["state"] == "faulted", vendor, "the attacker to fault")
    # 16 MiB of memory: the first access beyond it is at 0x1001000.
    assert re.search(r"read of guest-physical 0x1001000 at RIP 0x[0-9a-f]+: outside its memory",
                     rows["attacker"]["reason"]), rows
    assert "still alive" not in console.command("log attacker")
    before = max(counters(console, "hello"))
    deadline = time.monotonic() + PATIENCE[vendor]
    while max(counters(console, "hello")) <= before:
        assert time.monotonic() < deadline, "hello stopped printing after the attacker faulted"
        time.sleep(0.5)
    assert ps(console)["hello"]["state"] == "running"


@pytest.mark.parametrize("vendor", VENDORS)
def test_spin_without_exits_does_not_starve_hello(boot_config, vendor):
    console = boot_config(vendor, "spin")
    rows = wait_for(console, lambda r: int(r["hello"]["exits"].get("io", 0)) > 200
                    and int(r["spin"]["exits"].get("preempt", 0)) > 5, vendor, "hello to print beside spin")
    assert rows["spin"]["state"] == "running"
    assert "spin spin starting" in console.command("log spin")


@pytest.mark.parametrize("vendor", VENDORS)
def test_exit_guest_ends_exited_with_its_code(boot_config, vendor):
    console = boot_config(vendor, "exit")
    rows = wait_for(console, lambda r: r["exit"]["state"].startswith("exited"), vendor, "exit to end")
    assert rows["exit"]["state"] == "exited(3)"
    assert rows["hello"]["state"] == "running"
    assert "exit exit code 3" in console.command("log exit")


@pytest.mark.parametrize("vendor", VENDORS)
def test_hypercalls_write_the_console_yield_and_shut_down(boot_config, vendor):
    console = boot_config(vendor, "hypercall")
    rows = wait_for(console, lambda r: r["hypercall"]["state"].startswith("exited"), vendor, "shutdown")
    assert rows["hypercall"]["state"] == "exited(7)"
    log = console.command("log hypercall")
    # The guest sees Taipan's CPUID leaf and no VMX or SVM of its own.
    assert "hypercall hypercall cpuid TaipanTaipan vmx=0 svm=0" in log, log
    assert "hypercall hypercall console ok" in log and "hypercall hypercall yielded" in log
    assert int(rows["hypercall"]["exits"]["hypercall"]) >= 3


@pytest.mark.parametrize("vendor", VENDORS)
def test_multiboot_kernel_boots_with_its_command_line_and_module(boot_config, vendor):
    console = boot_config(vendor, "multiboot")
    rows = wait_for(console, lambda r: r["mbtest"]["state"].startswith("exited"), vendor, "mbtest to end")
    log = console.command("log mbtest")
    assert "mbtest: cmdline=mbtest cmdline-ok" in log
    assert "mbtest: modules=1" in log
    assert re.search(r"mbtest: module0=\S", log), log
    assert rows["mbtest"]["state"] == "exited(0)", log


@pytest.mark.parametrize("vendor", VENDORS)
def test_failed_vm_entry_is_reported_in_words_and_stops_only_that_partition(boot_config, vendor):
    console = boot_config(vendor, "bad-entry")
    rows = wait_for(console, lambda r: r["bad"]["state"] == "faulted"
                    and int(r["hello"]["exits"].get("io", 0)) > 50, vendor, "bad to fail and hello to print")
    assert re.search(r"VM entry failed: .*PAE", rows["bad"]["reason"]), rows["bad"]
    assert rows["hello"]["state"] == "running"
    assert "VM entry failed" in console.command("events")
