"""Managing Taipan over one serial line: multiplexed consoles, lifecycle, JSON, restart policy, a robust shell."""
from __future__ import annotations

import json
import os
import random
import re
import select
import time

import pexpect
import pytest
from conftest import PROMPT, REPL_PROMPT, VENDORS_BOCHS_SLOW, ps_json, wait_ps

pytestmark = pytest.mark.boot

PATIENCE = {"amd": 60, "intel": 240}
CTRL_RBRACKET = "\x1d"
CTRL_Y = "\x19"
CTRL_C = "\x03"
CTRL_D = "\x04"
QEMU_ESCAPE = b"\x14"


def wait_json(console, predicate, vendor: str, what: str) -> dict[str, dict]:
    return wait_ps(console, predicate, PATIENCE[vendor], what)


def attach(console, name: str, lines: int, vendor: str, escape: str = CTRL_RBRACKET) -> tuple[str, str]:
    """`console NAME` until it printed 1 + `lines` lines, then the escape: (what the partition
    wrote, the note on return). Counted in lines, not seconds: Bochs's time is its own."""
    console.type(f"console {name}\r")
    console.expect(rf"console {name}: the line is the partition's now; \S+ returns to the shell\r*\n")
    seen = ""
    for _ in range(1 + lines):
        console.expect(rf"hello from {name} \d+\r*\n", timeout=PATIENCE[vendor])
        seen += console.child.before + console.child.after
    console.type(escape)
    console.expect(r"\nback at taipan>: [^\n]*\n")
    seen += console.child.before
    note = console.child.after.strip()
    console.wait_prompt()
    return seen.replace("\r", ""), note


def counters(text: str, name: str) -> list[int]:
    return [int(n) for n in re.findall(rf"hello from {name} (\d+)\n", text)]


@pytest.mark.parametrize("vendor", VENDORS_BOCHS_SLOW)
def test_background_console_is_intact_after_detach_and_reattach(boot_config, vendor):
    console = boot_config(vendor, "demo")
    first, note = attach(console, "hello2", 5, vendor)
    assert re.fullmatch(r"back at taipan>: [12] partitions? wrote \d+ bytes while attached \(0 dropped\)", note), note
    # hello2 goes on writing into its ring while the shell has the line.
    before = ps_json(console)["hello2"]["console_bytes"]
    wait_json(console, lambda p: p["hello2"]["console_bytes"] > before + 40, vendor, "hello2 to write meanwhile")
    second, _ = attach(console, "hello2", 0, vendor)
    # The first attach ends where the escape was read; the second begins with
    # the rest, however the line was cut: together they hold every counter once.
    seen = counters(first + second, "hello2")
    assert seen[0] == 0 and seen == list(range(seen[-1] + 1)), seen
    assert seen[-1] > max(counters(first, "hello2")) + 1
    assert ps_json(console)["hello2"]["console_dropped"] == 0


def test_small_ring_counts_dropped_bytes_and_the_configured_escape_returns(boot_config):
    console = boot_config("amd", "smallring")
    parts = wait_json(console, lambda p: p["chatty"]["console_dropped"] > 1000, "amd", "chatty to overflow its ring")
    chatty = parts["chatty"]
    # What is neither dropped nor read is what the ring holds: at most its size (1K, in whole pages).
    assert 1024 <= chatty["console_bytes"] - chatty["console_dropped"] <= 4096, chatty
    assert parts["hello"]["console_dropped"] == 0
    row = next(line for line in console.command("ps").splitlines() if line.startswith("chatty"))
    assert int(row.split()[8]) >= chatty["console_dropped"], row
    assert re.search(r"console +\d+ bytes written, [1-9]\d* dropped", console.command("stats chatty"))
    # Ctrl-Y, from [platform] console_escape, takes the line back; Ctrl-] goes to the guest.
    console.type("console hello\r")
    console.expect(r"Ctrl-Y returns to the shell")
    console.expect(r"hello from hello \d+")
    console.type(CTRL_RBRACKET)
    time.sleep(0.5)
    console.type(CTRL_Y)
    console.expect(r"back at taipan>: 1 partition wrote \d+ bytes while attached \([1-9]\d* dropped\)")
    console.wait_prompt()


@pytest.mark.parametrize("vendor", VENDORS_BOCHS_SLOW)
def test_ps_and_stats_json_parse_and_hold_the_states(boot_config, vendor):
    console = boot_config(vendor, "exit")
    parts = wait_json(console, lambda p: p["exit"]["state"] == "exited", vendor, "exit to end")
    assert parts["exit"]["exit_code"] == 3 and parts["exit"]["restart_policy"] == "never"
    assert parts["hello"]["state"] == "running" and parts["hello"]["exit_code"] is None
    assert parts["hello"]["exits"]["io"] > 0 and parts["hello"]["cpu_us"] > 0
    out = console.command("stats hello --json")
    doc = json.loads(out.strip().splitlines()[-1])
    (hello,) = doc["partitions"]
    assert set(hello) >= {"name", "state", "exit_code", "reason", "memory", "cpu_us", "uptime_us", "starts",
                          "restarts", "restart_policy", "restart_limit", "slice_us", "console_bytes",
                          "console_dropped", "exits", "cpu", "upcalls", "halts", "interrupts"}
    assert hello["name"] == "hello" and hello["uptime_us"] >= hello["cpu_us"] and hello["starts"] == 1
    assert hello["memory"] == 16 << 20
    assert console.command("stop hello") == "hello stopped\n"
    assert ps_json(console)["hello"]["state"] == "stopped"
    info = json.loads(console.command("info --json").strip().splitlines()[-1])
    assert info["partitions"] == ["exit", "hello"] and info["backend"] in ("AMD-V+NPT", "VT-x+EPT")


@pytest.mark.parametrize("vendor", VENDORS_BOCHS_SLOW)
def test_on_fault_restarts_the_attacker_up_to_its_limit_then_leaves_it_faulted(boot_config, vendor):
    console = boot_config(vendor, "restart")
    parts = wait_json(console, lambda p: p["attacker"]["restarts"] == 2 and p["attacker"]["state"] == "faulted",
                      vendor, "the attacker's restarts to run out")
    attacker = parts["attacker"]
    assert attacker["starts"] == 3 and attacker["restart_limit"] == 2
    assert attacker["restart_policy"] == "on-fault"
    assert parts["hello"]["state"] == "running"
    row = next(line for line in console.command("ps").splitlines() if line.startswith("attacker"))
    assert re.match(r"attacker +faulted +0 +16 MiB +\S+ +2/2 on-fault ", row), row
    events = console.command("events")
    # Back-off between restarts: 100 ms, then twice that (hv/py/manager.py).
    assert "attacker restarted (on-fault, 1 of 2) after 100 ms" in events
    assert "attacker restarted (on-fault, 2 of 2) after 200 ms" in events
    assert "attacker stays faulted: its restart limit (2) is reached" in events
    # An operator's restart starts counting again: two more restarts by the policy.
    assert console.command("restart attacker") == "attacker restarted\n"
    wait_json(console, lambda p: p["attacker"]["starts"] == 6 and p["attacker"]["state"] == "faulted",
              vendor, "the attacker's second round of restarts")


def test_help_command_errors_and_tab_completion(boot_config):
    console = boot_config("amd", "demo")
    help_ps = console.command("help ps")
    assert help_ps.startswith("usage: ps [NAME] [--json]\n") and "RESTARTS" in help_ps
    for line, error in [
        ("frobnicate", "error: unknown command 'frobnicate' (try 'help')"),
        ("help nosuch", "error: no command 'nosuch' (try 'help')"),
        ("stop nosuch", "error: no partition named 'nosuch' (see 'ps')"),
        ("log hello1 -n zero", "error: usage: log [NAME] [-n LINES]"),
        ("ps --bogus", "error: usage: ps [NAME] [--json] (unknown option '--bogus')"),
        ("start", "error: usage: start NAME"),
    ]:
        assert console.command(line) == error + "\n", line
    # TAB: commands for the first word, partition names and 'json' after it.
    console.type("he\t\r")
    assert "'help COMMAND' explains one" in console.wait_prompt()
    console.type("stop hel\t1\r")
    assert console.wait_prompt().endswith("stop hello1\nhello1 stopped\n")
    console.type("ps hello1 --js\t\r")
    assert '"state": "stopped"' in console.wait_prompt()
    assert "[[partitions]]" in console.command("config") and 'name = "hello2"' in console.command("config")


def test_an_exception_in_a_command_is_one_error_line_and_debug_keeps_the_traceback(qemu):
    qemu.command("py", prompt=REPL_PROMPT)
    qemu.command("import shell; shell.COMMANDS['boom'] = (lambda args: {}['missing'], 'boom', 'raises', ())",
                 prompt=REPL_PROMPT)
    qemu.type(CTRL_D)
    qemu.wait_prompt()
    out = qemu.command("boom")
    assert re.fullmatch(r"error: KeyError: \S+ \(in 'boom'; 'debug' shows the traceback\)\n", out), out
    trace = qemu.command("debug")
    assert "Traceback (most recent call last):" in trace and "KeyError" in trace
    qemu.command("debug on")
    assert "Traceback (most recent call last):" in qemu.command("boom")
    assert "boom" in qemu.command("help")  # the shell goes on, the command still listed


def _drain(console) -> str:
    got = []
    while True:
        try:
            got.append(console.child.read_nonblocking(65536, timeout=0.05))
        except pexpect.TIMEOUT:
            return "".join(got)


def _send_raw(console, data: bytes, drain: bool = True) -> None:
    """Bytes as they come, a few at a time, reading the echo meanwhile so neither side blocks."""
    fd = console.child.child_fd
    sent = 0
    deadline = time.monotonic() + 300 + len(data) / 2000  # the shell takes a few KB a second
    while sent < len(data):
        assert time.monotonic() < deadline, f"the console took only {sent} of {len(data)} bytes"
        readable, writable, _ = select.select([fd], [fd], [], 1)
        if readable and drain:
            _drain(console)
        if writable:
            sent += os.write(fd, data[sent:sent + 64])


def _recover(console) -> None:
    """Whatever state garbage left (a half line, the raw REPL), come back to the prompt and prove it.

    The noise may still be in flight (each of its CRs and LFs runs a line), so
    the way back ends with a line of its own: once its answer comes, all the
    noise before it has been read."""
    console.type(CTRL_C + "\x02" + CTRL_C + "\r" + "recovered\r")
    console.expect(re.escape("error: unknown command 'recovered'"), timeout=120)
    console.wait_prompt()
    out = console.command("help")
    assert re.search(r"^  ps +\S", out, re.MULTILINE), out


# Control sequences a terminal, a script or line noise sends: Ctrl-C, Ctrl-D on an empty line,
# Ctrl-E (paste mode in MicroPython's REPL), Ctrl-Z, cursor keys, a lone and a broken escape,
# TABs, a NUL, DEL, and Ctrl-A on an empty line (the raw REPL) with junk, left with Ctrl-B.
CONTROL = (b"\x03\x04\x05\x1a\x1b[A\x1b[B\x1b[C\x1b[D\x1b\x1b[99;99H\x1b[\x00\x7f\t\t\t\r"
           b"\x01print('raw junk' +)\x04\x02\r\x01\x03\x02\r")
# What readline's history (16 lines of at most 4096 bytes) and the shell's own tables may keep.
HEAP_SLACK = 160 * 1024
TOO_LONG = "error: a line holds at most 4096 bytes; this one was longer and nothing of it ran\n"


def _heap_used(console) -> int:
    """Bytes of the MicroPython heap in use after a collection, as `mem` shows them."""
    number, unit = re.search(r"heap: .* total, ([\d.]+) (B|KiB|MiB) used", console.command("mem")).groups()
    return int(float(number) * {"B": 1, "KiB": 1024, "MiB": 1 << 20}[unit])


def _both_running(console) -> None:
    parts = ps_json(console)
    assert parts["hello1"]["state"] == parts["hello2"]["state"] == "running", parts
    assert "faulted" not in console.command("events")


def test_shell_survives_a_megabyte_of_random_bytes_and_control_sequences_with_a_flat_heap(boot_config):
    console = boot_config("amd", "demo")
    before = _heap_used(console)
    # Ctrl-T is the escape of QEMU's own stdio multiplexer (Ctrl-T x quits QEMU):
    # the emulator's, not Taipan's, so the noise leaves it out.
    noise = random.Random(4).randbytes(1 << 20).replace(QEMU_ESCAPE, b"")
    for part in range(4):  # control sequences after each quarter of the noise
        _send_raw(console, noise[part << 18:(part + 1) << 18] + CONTROL)
        _recover(console)
        _both_running(console)
    assert _heap_used(console) <= before + HEAP_SLACK
    assert PROMPT not in console.command("log -n 5")


def test_a_line_over_4096_bytes_is_refused_whole_and_the_heap_stays_flat(boot_config):
    console = boot_config("amd", "demo")
    before = _heap_used(console)
    for line in (b"x" * 100_000, b"stop " + b"hello1" * 20_000):
        _send_raw(console, line, drain=False)
        console.type("\r")
        out = console.wait_prompt()
        assert out.endswith(TOO_LONG), out[-200:]
        assert len(out) < 4096 + 200  # what was dropped was not echoed either
    _both_running(console)  # the stop of the second line did not run
    long_args = "ps " + " ".join(["hello1"] * 580)  # 4063 bytes: a line, and the usage error
    assert console.command(long_args) == "error: usage: ps [NAME] [--json]\n"
    assert _heap_used(console) <= before + HEAP_SLACK
