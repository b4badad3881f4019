"""taipan ctl, console and fleet and the Python client through a real console server: ser2net on
loopback in front of QEMU-run Taipans' serial lines (a pty each), by raw TCP and by RFC 2217."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
from conftest import HOST_ENV, ROOT, TAIPAN, closed_port, config_cpus, config_image, taipan, wait_raw

from toolchain import ctl, emulator
from toolchain.client import CommandError, Console

pytestmark = pytest.mark.boot

BOOT_S = 60  # the first exchange waits for the shell: QEMU boots Taipan in a few seconds, slower when busy


@dataclass
class Served:
    """One Taipan behind ser2net: its raw TCP and RFC 2217 targets, and ser2net's process and pty."""
    raw: str
    rfc2217: str
    server: subprocess.Popen
    pty: str

    def settle(self) -> None:
        """Wait until ser2net has ended every session: until then the port of a session that just
        closed answers the next client "Port's device already in use". A session shows in ser2net's
        open files as an accepted socket beside the two listening ones, and the pty while it is open;
        idle for a moment means no client is still waiting to be accepted."""
        idle_since = [None]

        def idle() -> bool:
            if _sessions(self.server.pid, self.pty):
                idle_since[0] = None
                return False
            idle_since[0] = idle_since[0] or time.monotonic()
            return time.monotonic() - idle_since[0] > 0.5

        _wait_for("ser2net kept a session open", idle, 30, lambda: self.server.poll() is None)


def _sessions(pid: int, pty: str) -> bool:
    """Whether ser2net (process pid, its two accepters listening) holds a client or the pty."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(str(fd.readlink()))
        except FileNotFoundError:  # closed while we looked
            pass
    return pty in links or sum(link.startswith("socket:") for link in links) > 2


def _listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:port, read from /proc/net/tcp: a probe by connecting
    would itself be a session of ser2net's."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[1] == f"0100007F:{port:04X}" and row.split()[3] == "0A" for row in rows)


def _wait_for(what: str, done, patience: float, alive) -> None:
    deadline = time.monotonic() + patience
    while not done():
        assert alive() and time.monotonic() < deadline, what
        time.sleep(0.05)


@contextmanager
def served(config: str, workdir: Path) -> Iterator[Served]:
    """QEMU boots `config` with COM1 on a pty; ser2net exports the pty on two loopback ports."""
    if shutil.which("ser2net") is None:
        pytest.fail("ser2net is missing: scripts/bootstrap installs it")  # a broken set-up, not a skip
    workdir.mkdir(parents=True, exist_ok=True)
    argv = emulator.qemu_argv(config_image(config), serial="pty", memory_mb=256, smp=config_cpus(config),
                              no_reboot=True)
    qemu_log = workdir / "qemu.log"
    with qemu_log.open("w") as log:
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = None
    try:
        pty: list[str] = []

        def pty_named() -> bool:
            pty.extend(re.findall(r"char device redirected to (/dev/pts/\d+)", qemu_log.read_text()))
            return bool(pty)

        _wait_for("QEMU named no pty", pty_named, 10, lambda: qemu.poll() is None)
        raw, rfc = closed_port(), closed_port()
        # Two ways into one line, as a console server exports a port: raw TCP and telnet with
        # RFC 2217. ser2net opens the pty only while a client is connected. -u: no UUCP lock
        # files, which a pty needs no more than the test needs left behind.
        conf = workdir / "ser2net.yaml"
        conf.write_text("%YAML 1.1\n---\n" + "".join(
            f"connection: &{name}\n  accepter: {accepter},127.0.0.1,{port}\n"
            f"  connector: serialdev,{pty[0]},115200n81,local\n"
            for name, accepter, port in (("raw", "tcp", raw), ("rfc", "telnet(rfc2217),tcp", rfc))))
        server = subprocess.Popen(["ser2net", "-n", "-u", "-c", str(conf), "-P", str(workdir / "ser2net.pid")],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        _wait_for("ser2net did not listen", lambda: _listening(raw) and _listening(rfc), 10,
                  lambda: server.poll() is None)
        yield Served(f"tcp:127.0.0.1:{raw}", f"rfc2217://127.0.0.1:{rfc}", server, pty[0])
    finally:
        for proc in (server, qemu):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def demo_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served("demo", tmp_path_factory.mktemp("demo")) as machine:
        yield machine


@pytest.fixture
def demo(demo_machine: Served) -> Served:
    """The module's demo machine, with the sessions of the test before closed."""
    demo_machine.settle()
    return demo_machine


def partition_names(ps_output: str) -> set[str]:
    return {line.split()[0] for line in ps_output.splitlines()[1:] if line[:1].strip()}


def test_ctl_runs_commands_through_ser2net_by_raw_tcp_and_rfc2217(demo):
    for target in (demo.raw, demo.rfc2217):
        run = taipan("ctl", "--timeout", str(BOOT_S), target, "ps")
        assert run.returncode == 0, (target, run.stderr)
        assert partition_names(run.stdout) == {"hello1", "hello2"}, run.stdout
        run = taipan("ctl", "--json", target, "ps")
        assert run.returncode == 0, (target, run.stderr)
        assert {p["name"] for p in json.loads(run.stdout)["partitions"]} == {"hello1", "hello2"}
        run = taipan("ctl", target, "start", "nosuch")
        assert (run.returncode, run.stderr) == (1, "error: no partition named 'nosuch' (see 'ps')\n"), target


def test_targets_of_the_other_protocol_are_named_in_one_line(demo):
    run = taipan("ctl", demo.rfc2217.replace("rfc2217://", "tcp:"), "ps")
    assert run.returncode == ctl.EXIT_LINE and "telnet option negotiation" in run.stderr, run.stderr
    run = taipan("ctl", demo.raw.replace("tcp:", "rfc2217://"), "ps")
    assert run.returncode == ctl.EXIT_LINE and "does not speak RFC 2217" in run.stderr, run.stderr
    assert len(run.stderr.splitlines()) == 1


def test_ser2net_refuses_a_second_client_and_ctl_says_what_it_said(demo):
    host, port = demo.raw.split(":")[1:]
    with socket.create_connection((host, int(port))):  # a first client holds the port
        time.sleep(0.5)
        run = taipan("ctl", demo.raw, "ps")
    assert run.returncode == ctl.EXIT_LINE
    assert run.stderr.endswith("the other end closed the connection (it said 'Port already in use')\n"), run.stderr


def test_client_returns_documents_and_raises_for_error_lines(demo):
    doc = Console(demo.rfc2217, timeout=BOOT_S).run("ps --json")
    assert {p["name"] for p in doc["partitions"]} == {"hello1", "hello2"}
    with Console(demo.raw, timeout=BOOT_S) as machine:  # one connection, several commands
        assert machine.run("info --json")["cpu"]["vendor"] == "AuthenticAMD"
        with pytest.raises(CommandError) as failed:
            machine.run("stop nosuch")
        assert failed.value.message == "error: no partition named 'nosuch' (see 'ps')"
        assert "usage: ps" in machine.run("help ps")


@pytest.mark.parametrize("protocol", ["raw", "rfc2217"])
def test_console_through_ser2net_runs_a_command_and_ctrl_bracket_leaves(demo, protocol):
    target = getattr(demo, protocol)
    child = pexpect.spawn(TAIPAN[0], TAIPAN[1:] + ["console", target], env=HOST_ENV, cwd=str(ROOT),
                          encoding="utf-8", timeout=BOOT_S)
    try:
        child.expect_exact("Ctrl-] leaves")
        wait_raw(child)
        child.send("help\n")  # LF, as a script types it, is Enter too
        child.expect_exact("list the commands")
        child.expect_exact("taipan> ")
        child.send("\x1d")
        child.expect_exact(f"left {target}")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_fleet_runs_one_command_on_two_machines_and_reports_the_unreachable(demo, tmp_path):
    with served("hypercall", tmp_path / "second") as second:
        listed = tmp_path / "rack.txt"
        listed.write_text(f"# two Taipans behind ser2net, one port nobody serves\n"
                          f"demo {demo.raw}\nsecond {second.rfc2217}\n")
        run = taipan("fleet", "--timeout", str(BOOT_S), str(listed), "ps")
        assert run.returncode == 0, run.stdout + run.stderr
        rows = run.stdout.splitlines()
        assert rows[0].split() == ["MACHINE", "STATUS", "OUTPUT"]
        machine_rows = [row.split()[:3] for row in rows[1:] if row[:1].strip()]
        assert machine_rows == [["demo", "ok", "NAME"], ["second", "ok", "NAME"]], run.stdout
        assert "hypercall" in run.stdout and "hello2" in run.stdout
        closed = closed_port()
        listed.write_text(listed.read_text() + f"gone tcp:127.0.0.1:{closed}\n")
        run = taipan("fleet", "--json", str(listed), "ps", "--json")
        assert run.returncode == ctl.EXIT_LINE, run.stdout + run.stderr
        doc = json.loads(run.stdout)
        machines = {m["name"]: m for m in doc["machines"]}
        assert [m["name"] for m in doc["machines"]] == ["demo", "second", "gone"]
        assert {p["name"] for p in machines["demo"]["document"]["partitions"]} == {"hello1", "hello2"}
        assert [p["name"] for p in machines["second"]["document"]["partitions"]] == ["hypercall"]
        assert machines["gone"]["status"] == "unreachable" and "connection refused" in machines["gone"]["error"]
        run = taipan("fleet", str(listed), "stop", "hello1")
        assert run.returncode == ctl.EXIT_LINE
        status = {row.split()[0]: row.split()[1] for row in run.stdout.splitlines()[1:] if row[:1].strip()}
        assert status == {"demo": "ok", "second": "failed", "gone": "unreachable"}, run.stdout
        assert "error: no partition named 'hello1'" in run.stdout
