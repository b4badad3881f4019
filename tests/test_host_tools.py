"""taipan ctl and taipan console against a QEMU-run Taipan on a unix socket, a fake console line, and bad targets."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import HOST_ENV, ROOT, TAIPAN, closed_port, config_cpus, config_image, taipan, wait_raw

from toolchain import client, ctl, emulator, host_console

# --- a QEMU-run Taipan reachable as unix:PATH, as `taipan run --serial unix:PATH` starts it

@pytest.fixture(scope="module")
def qemu_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("line") / "taipan.sock"
    argv = emulator.qemu_argv(config_image("demo"), serial=f"unix:{path}", memory_mb=256,
                              smp=config_cpus("demo"), no_reboot=True)
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not path.exists():
        assert qemu.poll() is None and time.monotonic() < deadline, "QEMU made no serial socket"
        time.sleep(0.05)
    yield f"unix:{path}"
    qemu.terminate()
    qemu.wait(timeout=10)


@pytest.mark.boot
def test_ctl_ps_prints_the_partitions_and_exits_0(qemu_socket):
    # The first exchange may meet Taipan still booting: ctl presses Enter and waits for the prompt.
    run = taipan("ctl", "--timeout", "60", qemu_socket, "ps")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "STATE"], run.stdout
    assert {line.split()[0] for line in lines[1:] if line[:1].strip()} == {"hello1", "hello2"}
    assert run.stderr == ""


@pytest.mark.boot
def test_ctl_unknown_command_exits_1_with_the_console_error_on_stderr(qemu_socket):
    run = taipan("ctl", qemu_socket, "nosuchcommand")
    assert run.returncode == 1
    assert run.stderr == "error: unknown command 'nosuchcommand' (try 'help')\n"
    assert run.stdout == ""
    run = taipan("ctl", qemu_socket, "start", "nosuch")
    assert (run.returncode, run.stderr) == (1, "error: no partition named 'nosuch' (see 'ps')\n")


@pytest.mark.boot
def test_ctl_json_parses_ps_json_from_the_shell(qemu_socket):
    run = taipan("ctl", "--json", qemu_socket, "ps")
    assert run.returncode == 0, run.stderr
    parts = {p["name"]: p for p in json.loads(run.stdout)["partitions"]}
    assert set(parts) == {"hello1", "hello2"}
    assert {p["state"] for p in parts.values()} == {"running"}
    run = taipan("ctl", qemu_socket, "ps", "--json")  # the shell's one line, passed through
    assert run.returncode == 0 and run.stdout.count("\n") == 1
    assert {p["name"] for p in json.loads(run.stdout)["partitions"]} == {"hello1", "hello2"}


@pytest.mark.boot
def test_qemu_serves_one_client_at_a_time_and_the_next_after_it_leaves(qemu_socket):
    holder = socket.socket(socket.AF_UNIX)
    holder.connect(qemu_socket[len("unix:"):])
    try:
        run = taipan("ctl", "--timeout", "2", qemu_socket, "ps")
        assert run.returncode == ctl.EXIT_LINE
        assert "one at a time" in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr
    finally:
        holder.close()
    for _ in range(3):
        assert taipan("ctl", qemu_socket, "ps").returncode == 0


@pytest.mark.boot
def test_ctl_takes_the_line_back_from_a_partition_console_left_attached(qemu_socket):
    person = socket.socket(socket.AF_UNIX)
    person.connect(qemu_socket[len("unix:"):])
    person.settimeout(20)
    person.sendall(b"\r")
    seen = b""
    while b"taipan> " not in seen:
        seen += person.recv(4096)
    person.sendall(b"console hello1\r")
    while b"Ctrl-]" not in seen:  # the note that the line is the partition's now
        seen += person.recv(4096)
    person.close()  # gone without the escape: the line stays with hello1
    run = taipan("ctl", qemu_socket, "ps")
    assert run.returncode == 0, run.stderr
    assert "hello1" in run.stdout


@pytest.mark.boot
def test_console_attaches_shows_help_and_ctrl_bracket_leaves_with_the_terminal_restored(qemu_socket):
    script = (f"stty -g; {' '.join(TAIPAN)} console {qemu_socket}; echo rc=$?; stty -g")
    child = pexpect.spawn("sh", ["-c", script], env=HOST_ENV, cwd=str(ROOT), encoding="utf-8", timeout=30)
    try:
        child.expect(r"(\S+)\r\n")
        before = child.match.group(1)
        child.expect_exact("Ctrl-] leaves")
        wait_raw(child)
        child.send("help\r")
        child.expect_exact("list the commands")
        child.expect_exact("taipan> ")
        child.send("\x1d")
        child.expect(r"rc=(\d+)\r\n(\S+)\r\n")
        assert child.match.group(1) == "0"
        assert child.match.group(2) == before  # stty -g after leaving: the mode it had before
    finally:
        child.close(force=True)


@pytest.mark.boot
def test_console_restores_the_terminal_when_killed(qemu_socket):
    script = (f"stty -g; {' '.join(TAIPAN)} console {qemu_socket}; echo rc=$?; stty -g")
    child = pexpect.spawn("sh", ["-c", script], env=HOST_ENV, cwd=str(ROOT), encoding="utf-8", timeout=30)
    try:
        child.expect(r"(\S+)\r\n")
        before = child.match.group(1)
        child.expect_exact("Ctrl-] leaves")
        wait_raw(child)  # so that the kill meets the raw terminal, not a process still starting
        console_pid = int(Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()[0])
        os.kill(console_pid, 15)
        child.expect(r"rc=(\d+)\r\n(\S+)\r\n")
        assert child.match.group(1) == "143"  # 128 + SIGTERM, as a shell reports a signal
        assert child.match.group(2) == before
    finally:
        child.close(force=True)


# --- a fake console line: the shell's echo, prompt, announcements and --json, exactly as scripted

class FakeConsole:
    """A unix socket that answers like Taipan's shell, with announcements where they can arrive."""

    ANNOUNCE = b"\r\ntaipan: hello1 faulted: #GP; restarted (on-fault, 1 of 3)\r\n"
    DOCUMENT = {"partitions": [{"name": "hello1", "state": "running"}, {"name": "evil", "state": "faulted"}]}

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, line: str) -> bytes:
        if line == "ps --json":
            return json.dumps(self.DOCUMENT).encode() + b"\r\n"
        if line == "ps":
            return b"NAME STATE\r\ntaipan: is a word a guest may print\r\n"
        if line == "" or line.startswith("ps"):
            return b""
        return b"error: unknown command '" + line.split()[0].encode() + b"' (try 'help')\r\n"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                line = b""
                while data := conn.recv(64):
                    for byte in data:
                        if byte == 0x0D:
                            conn.sendall(b"\r\n" + self._answer(line.decode()) + b"taipan> " + self.ANNOUNCE)
                            line = b""
                            continue
                        if 32 <= byte < 127:
                            line += bytes([byte])
                            conn.sendall(bytes([byte]))
                        if line == b"p":  # mid-echo: the shell ran a guest between two keys
                            conn.sendall(self.ANNOUNCE)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_line(tmp_path: Path) -> Iterator[str]:
    fake = FakeConsole(tmp_path / "fake.sock")
    yield f"unix:{tmp_path / 'fake.sock'}"
    fake.close()


def test_ctl_json_prints_the_parsed_document(fake_line):
    run = taipan("ctl", "--json", fake_line, "ps")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == FakeConsole.DOCUMENT
    assert run.stdout.startswith("{\n  ")  # indented for people; still one document for scripts
    run = taipan("ctl", fake_line, "ps", "--json")
    assert json.loads(run.stdout) == FakeConsole.DOCUMENT and run.stdout.count("\n") == 1


def test_ctl_json_of_a_command_without_json_output_fails(fake_line):
    run = taipan("ctl", "--json", fake_line, "psx")
    assert run.returncode == 1 and "printed no JSON document" in run.stderr


def test_ctl_drops_announcements_around_the_command_and_keeps_its_output(fake_line):
    run = taipan("ctl", fake_line, "ps")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "NAME STATE\ntaipan: is a word a guest may print\n"
    run = taipan("ctl", fake_line, "nosuch")
    assert (run.returncode, run.stdout, run.stderr) == (1, "", "error: unknown command 'nosuch' (try 'help')\n")


# --- the pieces of the exchange, without a line

def test_output_after_echo_skips_announcements_only_before_the_line_is_entered():
    announce = "\ntaipan: hello1 restarted\n"
    text = announce + "p" + announce + "s\nNAME\ntaipan: guest text\ntaipan> " + announce
    assert client.output_after_echo(text, "ps") == "NAME\ntaipan: guest text\n"
    assert client.output_after_echo("ps\ntaipan> ", "ps") == ""
    assert client.output_after_echo("\ntaipan> ps\nerror: x\ntaipan> ", "ps") == "error: x\n"
    assert client.output_after_echo("p" + announce[:12], "ps") is None  # an announcement half-arrived
    assert client.output_after_echo("ps\nNAME\n", "ps") is None  # no prompt yet


def test_prompt_shown_allows_announcements_after_it():
    assert client.prompt_shown("taipan> ")
    assert client.prompt_shown("boot\ntaipan> \ntaipan: hello2 started\n")
    assert not client.prompt_shown("boot\ntaipan> \ntaipan: hello2 sta")
    assert not client.prompt_shown("taipan> \nstill booting")
    assert not client.prompt_shown("not a taipan> ")


def test_split_error_takes_the_closing_error_line_and_debugs_traceback():
    assert client.split_error("a\nerror: nope\n") == client.Result("a\n", "error: nope")
    assert client.split_error("error: nope\n") == client.Result("", "error: nope")
    assert client.split_error("ok\n") == client.Result("ok\n", None)
    assert client.split_error("") == client.Result("", None)
    # A guest's line in `log` that happens to start with "error:" is output, not a failure.
    assert client.split_error("error: from a guest\nok\n") == client.Result("error: from a guest\nok\n", None)
    debug = "error: KeyError: x (in 'ps')\nTraceback (most recent call last):\n  File \"shell.py\"\nKeyError: x\n"
    assert client.split_error(debug) == client.Result("", debug.rstrip("\n"))


def test_ctl_refuses_interactive_and_unprintable_commands_before_connecting():
    for words in (["console", "hello1"], ["tail"], ["py"], ["ps\x03"], []):
        run = taipan("ctl", "/dev/ttyNOPE", *words)
        assert run.returncode == ctl.EXIT_USAGE, words
        assert len(run.stderr.splitlines()) == 1 and "ttyNOPE" not in run.stderr


def test_escape_keys_are_written_as_control_keys():
    assert host_console.parse_escape("^]") == 0x1D
    assert host_console.parse_escape("Ctrl-A") == 0x01
    assert host_console.parse_escape("c-t") == 0x14
    assert host_console.key_name(0x1D) == "Ctrl-]"
    with pytest.raises(Exception, match="not a control key"):
        host_console.parse_escape("q")


# --- targets that are not there: one line, non-zero, for both tools

@pytest.mark.parametrize("tool", ["ctl", "console"])
def test_missing_targets_fail_in_one_line(tool, tmp_path):
    cases = {"/dev/ttyNOPE": "no such serial device",
             f"tcp:127.0.0.1:{closed_port()}": "connection refused",
             f"rfc2217://127.0.0.1:{closed_port()}": "connection refused",
             f"unix:{tmp_path / 'none.sock'}": "no such socket"}
    for target, why in cases.items():
        run = taipan(tool, target, *(["ps"] if tool == "ctl" else []))
        assert run.returncode == ctl.EXIT_LINE, (target, run.stderr)
        assert run.stderr.count("\n") == 1 and why in run.stderr and target in run.stderr, run.stderr


# --- taipan fleet: the file, the rows, the document and the exit status, against fake lines

def test_fleet_runs_on_every_machine_and_an_unreachable_one_makes_a_row_and_exit_3(fake_line, tmp_path):
    listed = tmp_path / "fleet.txt"
    gone = f"tcp:127.0.0.1:{closed_port()}"
    listed.write_text(f"# a rack\nfake {fake_line}\n\n{gone}   # named by its target\n")
    run = taipan("fleet", str(listed), "ps")
    assert run.returncode == ctl.EXIT_LINE, run.stderr
    rows = run.stdout.splitlines()
    assert rows[0].split() == ["MACHINE", "STATUS", "OUTPUT"]
    assert rows[1].split() == ["fake", "ok", "NAME", "STATE"]
    at = rows[1].index("NAME")
    assert rows[2] == " " * at + "taipan: is a word a guest may print"  # a second line stays in its column
    assert rows[3].split()[:2] == [gone, "unreachable"] and "connection refused" in rows[3]
    run = taipan("fleet", "--json", str(listed), "ps", "--json")
    doc = json.loads(run.stdout)
    assert doc["command"] == "ps --json"
    fake, down = doc["machines"]
    assert (fake["name"], fake["status"], fake["document"]) == ("fake", "ok", FakeConsole.DOCUMENT)
    assert (down["target"], down["status"], down["document"]) == (gone, "unreachable", None)
    assert "connection refused" in down["error"]


def test_fleet_exit_status_is_1_when_a_command_fails_and_0_when_all_ran(fake_line, tmp_path):
    listed = tmp_path / "fleet.txt"
    listed.write_text(f"one {fake_line}\n")
    run = taipan("fleet", str(listed), "nosuch")
    assert run.returncode == ctl.EXIT_FAILED
    assert run.stdout.splitlines()[1].split(None, 2) == ["one", "failed", "error: unknown command 'nosuch' (try 'help')"]
    assert taipan("fleet", str(listed), "ps").returncode == 0


@pytest.mark.parametrize("text, why", [
    ("a tcp:h:1 extra\n", ":1: expected NAME TARGET or TARGET, got 3 words"),
    ("a tcp:h:1\n# ok\na tcp:h:2\n", ":3: a second machine named 'a'"),
    ("# nothing\n\n", "lists no machines"),
])
def test_fleet_files_with_mistakes_are_refused_with_the_line_and_exit_2(tmp_path, text, why):
    listed = tmp_path / "fleet.txt"
    listed.write_text(text)
    run = taipan("fleet", str(listed), "ps")
    assert run.returncode == ctl.EXIT_USAGE and run.stdout == ""
    assert run.stderr.startswith("taipan fleet: ") and why in run.stderr and len(run.stderr.splitlines()) == 1
    run = taipan("fleet", str(tmp_path / "none.txt"), "ps")
    assert run.returncode == ctl.EXIT_USAGE and "No such file" in run.stderr
