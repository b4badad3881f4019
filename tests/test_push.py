"""`taipan ctl TARGET push FILE --partition NAME`: a policy replaced while it runs on a --dev image, refused on
any other, through the raw REPL; and the signed dev flag that decides it."""
from __future__ import annotations

import ast
import hashlib
import os
import re
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import (
    BOCHS_CHAR_DELAY,
    BOOT_TIMEOUT,
    ROOT,
    VENDORS,
    config_cpus,
    config_image,
    config_path,
    taipan,
)
from toolchain import build, cli, config, emulator, iso, ptable, push, user_modules
from toolchain.client import Console, LineError

MSR_EXAMPLE = "examples/msr-policy"
# lab may now read MSR 0x34 too: the msrprobe guest prints what it read.
GRANTS_0X34 = '''\
import manager

GRANTED = {("lab", 0x35): (4 << 16) | 8, ("lab", 0x34): 0x1234}


def on_msr(name, exit):
    if exit["kind"] == "msr_read" and (name, exit["msr"]) in GRANTED:
        return ("emulate", GRANTED[(name, exit["msr"])])
    return ("deny",)
'''
RAISES_AT_LOAD = 'x = 1\nraise KeyError("not today")\n'
SYNTAX_ERROR = "def on_msr(name, exit):\n    return 1 +\n"


# --- host only: the flag, the metal's reader, the command line


def test_the_dev_flag_is_set_only_by_dev_and_signed() -> None:
    system = config.load(config_path("demo"))
    plain, dev = ptable.build_table(system), ptable.build_table(system, dev=True)
    assert plain.header["flags"] == 0 and dev.header["flags"] == ptable.HEADER_FLAG_DEV
    # Setting the flag in a plain image afterwards breaks its signature.
    blob = bytearray(plain.blob)
    blob[ptable.offsetof("pt_header", "flags")] |= ptable.HEADER_FLAG_DEV
    with pytest.raises(ptable.TableError, match="sha256 mismatch"):
        ptable.parse(bytes(blob))
    assert "#define PT_HEADER_DEV 1u" in ptable.c_header()


def test_the_metal_reads_the_flag_where_the_table_puts_it() -> None:
    source = (ROOT / "hv" / "py" / "usermods.py").read_text()

    def constant(name: str) -> int:
        return int(re.search(rf"^{name} = (\d+)", source, re.MULTILINE).group(1))

    assert constant("HEADER_FLAGS_AT") == ptable.offsetof("pt_header", "flags")
    assert constant("HEADER_FLAG_DEV") == ptable.HEADER_FLAG_DEV


def test_build_iso_and_run_take_dev_and_default_to_a_plain_image() -> None:
    for command in ("build", "iso", "run"):
        assert cli.parser().parse_args([command, "--dev"]).dev is True
        assert cli.parser().parse_args([command]).dev is False


def test_the_code_sent_carries_the_module_bytes_exactly() -> None:
    mpy = bytes(range(256)) + b"'\"\\\n"
    code = push.metal_code("lab", "dir/lab é.py", mpy)
    code.encode("ascii")  # the shell's line takes ASCII only
    call = ast.parse(code).body[1].value
    assert [ast.literal_eval(a) for a in call.args] == ["lab", "dir/lab é.py", mpy, hashlib.sha256(mpy).hexdigest()]
    assert push.refusal("Traceback (most recent call last):\n  File \"<stdin>\", line 2\nValueError: no way\n") \
        == "no way"


def test_push_usage_errors_exit_2_before_the_line_is_opened(tmp_path: Path) -> None:
    # Nobody listens at this target: exit 2, not 3, shows nothing was sent.
    target = f"unix:{tmp_path}/nobody.sock"
    good = tmp_path / "lab.py"
    good.write_text(GRANTS_0X34)
    bad = tmp_path / "bad.py"
    bad.write_text(SYNTAX_ERROR)
    (tmp_path / "lab.txt").write_text("")
    run = taipan("ctl", target, "push", str(bad), "--partition", "lab")
    assert (run.returncode, run.stderr.strip()) == (2, f"taipan ctl push: {bad}:2: SyntaxError: invalid syntax")
    run = taipan("ctl", target, "push", str(good))
    assert run.returncode == 2 and "the following arguments are required: --partition" in run.stderr
    run = taipan("ctl", target, "push", "--partition", "lab")
    assert run.returncode == 2 and "the following arguments are required: file" in run.stderr
    run = taipan("ctl", target, "push", str(tmp_path / "nosuch.py"), "--partition", "lab")
    assert (run.returncode, run.stderr.strip()) == (2, f"taipan ctl push: {tmp_path}/nosuch.py: no such file")
    run = taipan("ctl", target, "push", str(tmp_path / "lab.txt"), "--partition", "lab")
    assert run.returncode == 2 and "must be a Python file (.py)" in run.stderr
    # A good file reaches the line, which fails: the line's status.
    run = taipan("ctl", target, "push", str(good), "--partition", "lab")
    assert run.returncode == 3, run.stderr


def test_compile_errors_name_file_and_line_for_build_and_push_alike(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(SYNTAX_ERROR)
    with pytest.raises(user_modules.CompileError, match=r"^shown\.py:2: SyntaxError: invalid syntax$"):
        user_modules.compile_source(_mpy_cross(), bad, "shown.py")


def _mpy_cross() -> Path:
    from toolchain import micropython

    return micropython.mpy_cross(micropython.source_tree(build.ROOT / "build"), 2)


# --- on the metal, through the real command


@contextmanager
def _bridge(fd: int, path: Path) -> Iterator[str]:
    """A unix: target for a pty master: one client at a time, its bytes to the UART at a typist's pace.

    Bochs feeds COM1 faster than its FIFO drains while a guest runs, so the
    bytes go at conftest's BOCHS_CHAR_DELAY apart, as its Console types them;
    what arrives with no client connected is dropped, as on a line.
    """
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    stop = threading.Event()

    def pump() -> None:
        client = None
        while not stop.is_set():
            ready, _, _ = select.select([fd, client or listener], [], [], 0.2)
            if fd in ready:
                data = os.read(fd, 4096)
                if client is not None:
                    client.sendall(data)
            if listener in ready and client is None:
                client, _ = listener.accept()
            elif client is not None and client in ready:
                data = client.recv(4096)
                if not data:
                    client.close()
                    client = None
                for byte in data:
                    os.write(fd, bytes([byte]))
                    time.sleep(BOCHS_CHAR_DELAY)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield f"unix:{path}"
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextmanager
def _machine(vendor: str, elf: Path, name: str, workdir: Path) -> Iterator[str]:
    """Boot `elf` on `vendor` with its COM1 reachable as a unix: target; yield the target at the prompt."""
    sock = workdir / "com1.sock"
    cpus = config_cpus(name)
    if vendor == "amd":
        argv = emulator.qemu_argv(elf, cpu="EPYC", memory_mb=256, smp=cpus, serial=f"unix:{sock}", no_reboot=True)
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not sock.exists():
                assert qemu.poll() is None and time.monotonic() < deadline, "QEMU made no socket"
                time.sleep(0.05)
            yield _at_prompt(f"unix:{sock}")
        finally:
            qemu.terminate()
            qemu.wait()
        return
    missing = emulator.bochs_missing()
    if missing:
        pytest.fail(missing)
    image = iso.make_iso(elf, workdir / "taipan.iso")
    with emulator.BochsRun(image, workdir, cpu_model="corei7_skylake_x", memory_mb=256, cpus=cpus) as run, \
            _bridge(run.fileno(), sock) as target:
        yield _at_prompt(target)


def _at_prompt(target: str) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        try:
            Console(target, timeout=30).run("ps")
            return target
        except LineError:
            assert time.monotonic() < deadline, f"{target}: no shell after {BOOT_TIMEOUT} s"
            time.sleep(1)


def _log_until(target: str, runs: int, patience: float = 120) -> str:
    """lab's console output once it has finished `runs` runs of the msrprobe guest."""
    deadline = time.monotonic() + patience
    while True:
        out = Console(target, timeout=60).run("log lab")
        if out.count("lab done") >= runs:
            return out
        assert time.monotonic() < deadline, f"lab never finished {runs} runs: {out}"
        time.sleep(1)


def _modules(target: str) -> list[dict]:
    return Console(target, timeout=60).run("devices --json")["modules"]


def _push(target: str, path: Path, partition: str = "lab") -> subprocess.CompletedProcess[str]:
    return taipan("ctl", "--timeout", "120", target, "push", str(path), "--partition", partition, timeout=300)


@pytest.mark.boot
@pytest.mark.parametrize("vendor", VENDORS)
def test_push_replaces_a_policy_between_exits_and_a_failing_one_leaves_it(vendor, tmp_path: Path) -> None:
    lab2 = tmp_path / "lab2.py"
    lab2.write_text(GRANTS_0X34)
    raises = tmp_path / "raises.py"
    raises.write_text(RAISES_AT_LOAD)
    with _machine(vendor, config_image(MSR_EXAMPLE, dev=True), MSR_EXAMPLE, tmp_path) as target:
        assert "development image" in Console(target, timeout=60).run("info")
        assert "lab rdmsr 52 #GP" in _log_until(target, 1)
        signed = _modules(target)

        run = _push(target, lab2)
        digest = hashlib.sha256(user_modules.compile_source(_mpy_cross(), lab2, str(lab2))).hexdigest()
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"lab: policy replaced by {lab2} (sha256 {digest})"
        # The guest sees the new answer once it asks again.
        console = Console(target, timeout=60)
        assert "lab restarted" in console.run("restart lab")
        assert _log_until(target, 2).split("lab done")[1].count("lab rdmsr 52 = 4660") == 1
        assert f"lab: policy replaced by push of {lab2} sha256 {digest}" in console.run("events")
        shown = _modules(target)
        assert [(m["partition"], m["path"], m["sha256"], m["loaded"], m["pushed"]) for m in shown] == [
            ("lab", str(lab2), digest, True, True),
            ("other", "policies/lab.py", signed[1]["sha256"], True, False)]
        assert re.search(rf"^lab +policy +{re.escape(str(lab2))} +{digest[:12]} pushed", console.run("devices"),
                         re.MULTILINE)
        assert f"reloaded as pushed (sha256 {digest[:12]})" in console.run("policy lab reload")

        # A module that raises as it loads is reported with its line; the pushed one goes on answering.
        run = _push(target, raises)
        assert run.returncode == 1
        assert run.stderr.strip() == (f"taipan ctl push: lab: push of {raises} refused: loading raised KeyError: "
                                      f"not today at {raises} line 2; {lab2} stays")
        assert f"lab: push of {raises} refused" in console.run("events")
        assert [(m["path"], m["sha256"]) for m in _modules(target)][0] == (str(lab2), digest)
        console.run("restart lab")
        assert _log_until(target, 3).count("lab rdmsr 52 = 4660") == 2

        # A partition with no policy, or none at all, is refused by name.
        run = _push(target, lab2, partition="nosuch")
        assert (run.returncode, run.stderr.strip()) == (1, "taipan ctl push: no partition named 'nosuch' (see 'ps')")


@pytest.mark.boot
def test_an_image_built_without_dev_refuses_a_push_and_keeps_its_policy(tmp_path: Path) -> None:
    lab2 = tmp_path / "lab2.py"
    lab2.write_text(GRANTS_0X34)
    with _machine("amd", config_image(MSR_EXAMPLE), MSR_EXAMPLE, tmp_path) as target:
        console = Console(target, timeout=60)
        assert "development image" not in console.run("info")
        assert console.run("info --json")["development"] is False
        before = _modules(target)
        run = _push(target, lab2)
        assert run.returncode == 1
        assert run.stderr.strip() == (
            "taipan ctl push: this image was built without --dev: replacing a policy at run time is refused "
            "(build it with 'taipan build --dev' or 'taipan run --dev')")
        assert _modules(target) == before and not any(m["pushed"] for m in before)
        assert "replaced by push" not in console.run("events")
        _log_until(target, 1)
        console.run("restart lab")
        assert _log_until(target, 2).count("lab rdmsr 52 #GP") == 2
