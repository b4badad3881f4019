"""User Python next to the TOML: compiled and signed by the toolchain, run on the metal under a guard, contained when it fails."""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest
from conftest import VENDORS, VENDORS_BOCHS_SLOW

from tests.conftest import config_path, ps_json, wait_ps
from toolchain import build, cli, config, micropython, ptable, user_modules

ROOT = Path(__file__).resolve().parent.parent
MSR_EXAMPLE = "examples/msr-policy"
LOAD_EXAMPLE = "examples/load-scheduler"
WATCHDOG_EXAMPLE = "examples/watchdog"
HELLO = '[[partitions]]\nname = "a"\nmemory = "4M"\nimage = "guest:hello"\n'


def _mpy_cross() -> Path:
    return micropython.mpy_cross(micropython.source_tree(build.ROOT / "build"), 2)


def _modules(path: Path) -> list[user_modules.UserModule]:
    return user_modules.compile_all(config.load(path), _mpy_cross)


def test_a_syntax_error_fails_the_build_with_file_and_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bad.py").write_text("x = 1\n\ndef on_io(name, exit):\n    return 1 +\n")
    path = tmp_path / "system.toml"
    path.write_text(HELLO + 'policy = "policies/bad.py"\n')
    assert cli.main(["build", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f'{path}: partitions[0].policy = "policies/bad.py": policies/bad.py:4: SyntaxError: invalid syntax')


def test_a_missing_or_misnamed_module_is_a_config_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "system.toml"
    path.write_text(HELLO + 'policy = "nosuch.py"\n')
    assert config.check(path) == 2
    assert f'{path}: partitions[0].policy = "nosuch.py": no such file ({tmp_path}/nosuch.py)' \
        in capsys.readouterr().err
    (tmp_path / "lab.txt").write_text("")
    path.write_text(HELLO + 'policy = "lab.txt"\n')
    assert config.check(path) == 2
    assert 'partitions[0].policy = "lab.txt": must be a Python file (.py)' in capsys.readouterr().err


def test_the_table_signs_each_module_with_its_hash_and_flags_its_partition() -> None:
    path = config_path(MSR_EXAMPLE)
    system = config.load(path)
    modules = _modules(path)
    table = ptable.build_table(system, modules=modules)
    listed = table.modules()
    assert [(m["kind"], m["owner"], m["path"]) for m in listed] == [
        ("policy", 0, "policies/lab.py"), ("policy", 1, "policies/lab.py")]
    for record in listed:
        assert record["sha256"] == hashlib.sha256(record["mpy"]).hexdigest()
        assert record["mpy"][:1] == b"M"   # an .mpy file: MicroPython's magic byte
        assert (record["failure_limit"], record["budget_ms"]) == (3, 100)
    assert all(p["flags"] & ptable.FLAG_MSR_UPCALL for p in table.partitions)
    # A changed byte in a module is a changed table: the signature covers it.
    blob = bytearray(table.blob)
    blob[table.header["modules_offset"] - 1] ^= 1
    with pytest.raises(ptable.TableError, match="sha256 mismatch"):
        ptable.parse(bytes(blob))
    # Without a policy, the flag stays clear: MSRs the vCPU lacks raise #GP in C.
    plain = ptable.build_table(config.load(ROOT / "configs" / "demo.toml"))
    assert plain.modules() == [] and not any(p["flags"] & ptable.FLAG_MSR_UPCALL for p in plain.partitions)


def test_device_models_take_a_port_range_no_one_else_has(tmp_path: Path, capsys) -> None:
    (tmp_path / "wd.py").write_text("class Device:\n    pass\n")
    path = tmp_path / "system.toml"
    path.write_text(HELLO + 'ports = ["0x510-0x511"]\n'
                    'devices = [{ model = "wd.py", ports = "0x511-0x512" }, { model = "wd.py", ports = "0x3f8" },'
                    ' { model = "wd.py" }, { model = "wd.py", ports = "0x520" }, { model = "wd.py", ports = 0x520 }]\n')
    assert config.check(path) == 2
    errors = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert errors == [
        'partitions[0].devices[0].ports = "0x511-0x512": overlaps this partition\'s ports 0x510-0x511',
        'partitions[0].devices[1].ports = "0x3f8": may not be given to a guest: 0x3f8-0x3ff is '
        "the hypervisor's UART (COM1), each guest's virtual UART",
        "partitions[0].devices[2] = {'model': 'wd.py'}: must be a table "
        '{ model = "FILE.py", ports = "0xA-0xB" or mmio = "0xA-0xB", irq = N }',
        "partitions[0].devices[4].ports = 0x520: overlaps this partition's devices[3]"]
    table = ptable.build_table(config.load(config_path(WATCHDOG_EXAMPLE)),
                               modules=_modules(config_path(WATCHDOG_EXAMPLE)))
    assert [(m["kind"], m["owner"], m["ports"]) for m in table.modules()] == [
        ("device", 0, (0x510, 0x510)), ("device", 1, (0x510, 0x510))]
    assert 'devices = [{ model = "devices/watchdog.py", ports = "0x510" }]' in table.config_text()


def test_a_scheduler_module_belongs_to_the_platform() -> None:
    path = config_path(LOAD_EXAMPLE)
    table = ptable.build_table(config.load(path), modules=_modules(path))
    [record] = table.modules()
    assert (record["kind"], record["owner"], record["path"]) == (
        "scheduler", user_modules.OWNER_PLATFORM, "sched/load.py")
    assert 'scheduler = "sched/load.py"' in table.config_text()


def test_the_metal_reader_uses_the_table_layout() -> None:
    source = (ROOT / "hv" / "py" / "usermods.py").read_text()

    def constant(name: str) -> int:
        return int(re.search(rf"^{name} = (\d+)$", source, re.MULTILINE).group(1))

    assert constant("MODULE_COUNT_AT") == ptable.offsetof("pt_header", "module_count")
    assert constant("MODULES_OFFSET_AT") == ptable.offsetof("pt_header", "modules_offset")
    assert constant("MODULE_SIZE") == ptable.sizeof("pt_module")
    assert constant("MODULE_PATH_AT") == ptable.offsetof("pt_module", "path")
    assert constant("MODULE_PATH_SIZE") == next(f.count for f in ptable.STRUCTS["pt_module"] if f.name == "path")
    # The fields it reads by hand, at the offsets it reads them.
    assert [ptable.offsetof("pt_module", f) for f in ("kind", "owner", "failure_limit", "budget_ms",
                                                      "blob_offset", "size", "sha256")] == [0, 1, 2, 4, 16, 24, 32]


def _log_until(console, needles: list[str], patience: float) -> str:
    deadline = time.monotonic() + patience
    while True:
        out = console.command("log -n 40")
        if all(n in out for n in needles):
            return out
        assert time.monotonic() < deadline, f"never saw {needles} in: {out}"
        time.sleep(1)


def _json_line(out: str) -> dict:
    return json.loads(out[out.index("{"):out.rindex("}") + 1])


@pytest.mark.boot
@pytest.mark.parametrize("vendor", VENDORS)
def test_msr_policy_grants_one_partition_its_msr_and_denies_the_rest(boot_config, vendor) -> None:
    console = boot_config(vendor, MSR_EXAMPLE)
    _log_until(console, [f"[lab] lab rdmsr 53 = {(4 << 16) | 8}", "[lab] lab rdmsr 52 #GP",
                         "[other] other rdmsr 53 #GP", "[other] other rdmsr 52 #GP",
                         "[lab] lab done", "[other] other done"], 120)
    events = console.command("events")
    assert re.search(r"lab\.py: other msr_read 0x35 at RIP 0x[0-9a-f]+ denied", events)
    assert re.search(r"lab\.py: lab msr_read 0x34 at RIP 0x[0-9a-f]+ denied", events)
    assert not re.search(r"lab\.py: lab msr_read 0x35", events)
    # What runs is what was built: the hashes the metal shows are the build's.
    built = {m.sha256 for m in _modules(config_path(MSR_EXAMPLE))}
    shown = _json_line(console.command("devices --json"))["modules"]
    assert [(m["partition"], m["path"], m["loaded"], m["failures"]) for m in shown] == [
        ("lab", "policies/lab.py", True, 0), ("other", "policies/lab.py", True, 0)]
    assert {m["sha256"] for m in shown} == built
    assert "policies/lab.py" in console.command("devices")
    stats = _json_line(console.command("stats --json"))
    assert [p["python_runs"] for p in stats["partitions"]] == [2, 2]
    assert "python    2 calls into its own modules, 0 failed" in console.command("stats lab")
    # A reload makes a fresh module from the same signed bytes.
    out = console.command("policy lab reload")
    assert f"lab: policies/lab.py reloaded (sha256 {shown[0]['sha256'][:12]})" in out
    assert console.command("policy lab restart").startswith("error: usage: policy NAME reload")


@pytest.mark.boot
@pytest.mark.parametrize("vendor", VENDORS_BOCHS_SLOW)
def test_failing_user_python_is_contained(boot_config, vendor) -> None:
    console = boot_config(vendor, "bad-policy")
    failing = ("raiser", "looper", "hog", "leaker")
    for name in failing:
        assert f"{name} started" in console.command(f"start {name}", timeout=120)
    parts = wait_ps(console, lambda p: all(p[n]["state"] == "stopped" for n in failing),
                    240, "the failing policies' partitions to be stopped")
    events = console.command("events")
    for name, path in (("raiser", "policies/raises.py"), ("looper", "policies/loops.py"),
                       ("hog", "policies/hogs.py"), ("leaker", "policies/leaks.py")):
        # The last failed exit is answered "stop": the C side says where it stopped.
        assert parts[name]["reason"].startswith("stopped by policy at exit ")
        assert f"{name} stopped: its policy {path} failed 2 times (last: on_msr raised " in events
    assert parts["hello"]["state"] == "running"
    assert re.search(r"raiser: policies/raises\.py on_msr raised KeyError: 53 at policies/raises\.py "
                     r"line 3 \(failure 1 of 2; answered deny\)", events)
    assert re.search(r"looper: policies/loops\.py on_msr raised RuntimeError: ran past its 3000 ms "
                     r"budget at policies/loops\.py line \d \(failure 1 of 2", events)
    assert re.search(r"hog: policies/hogs\.py on_msr raised MemoryError: .* at policies/hogs\.py "
                     r"line \d \(failure 1 of 2", events)
    # A module whose globals hold the heap is loaded afresh as its MemoryError is answered, so
    # the heap is free again (for the console first of all).
    assert re.search(r"leaker: policies/leaks\.py on_msr raised MemoryError: .* \(failure 1 of 2; answered "
                     r"deny; reloaded to free the heap\)", events)
    assert _heap_used_mib(console) < 4
    # Each exit its policy failed on was denied: the guest saw #GP and went on to the next MSR.
    for name in failing:
        assert f"{name} rdmsr 53 #GP" in console.command(f"log {name}")
    # The rest goes on: hello keeps printing and the console answers.
    before = ps_json(console)["hello"]["console_bytes"]
    time.sleep(2)
    assert ps_json(console)["hello"]["console_bytes"] > before
    assert "hog" in console.command("devices")


def _heap_used_mib(console) -> float:
    number, unit = re.search(r"heap: .* total, ([\d.]+) (B|KiB|MiB) used", console.command("mem")).groups()
    return float(number) / {"B": 1 << 20, "KiB": 1024, "MiB": 1}[unit]


def _slices(console) -> dict[str, int]:
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^  (\w+)\s+(\d+) ms", console.command("sched"), re.MULTILINE)}


@pytest.mark.boot
@pytest.mark.parametrize("vendor", VENDORS_BOCHS_SLOW)
def test_load_scheduler_moves_slices_to_the_busy_partition(boot_config, vendor) -> None:
    console = boot_config(vendor, LOAD_EXAMPLE)
    # Nobody types: the idle console still wakes for the module's ticks (hv.wake_at).
    time.sleep(10)
    assert "load.py: CPU 0 slices" in console.command("events")
    deadline = time.monotonic() + 120
    while True:
        slices = _slices(console)
        # As configured, both had 10 ms; by load, busy gets most of the 20 ms and quiet its minimum.
        if slices.get("busy", 0) >= 15 and slices.get("quiet") == 2:
            break
        assert time.monotonic() < deadline, f"slices never followed the load: {slices}"
        time.sleep(2)
    assert slices["management"] == 10
    assert re.search(r"load\.py: CPU 0 slices management 10 ms, busy \d+ ms, quiet 2 ms", console.command("events"))
    [module] = _json_line(console.command("devices --json"))["modules"]
    assert (module["partition"], module["kind"], module["loaded"], module["failures"]) == (
        "platform", "scheduler", True, 0)
    assert module["runs"] >= 2


@pytest.mark.boot
@pytest.mark.parametrize("vendor", VENDORS)
def test_watchdog_restarts_the_guest_that_stops_kicking_and_not_the_one_that_kicks(boot_config, vendor) -> None:
    console = boot_config(vendor, WATCHDOG_EXAMPLE)
    parts = wait_ps(console, lambda p: p["stops"]["starts"] >= 3, 180, "the watchdog to restart 'stops' twice")
    assert parts["keeps"]["starts"] == 1 and parts["keeps"]["state"] == "running"
    assert parts["keeps"]["python_runs"] > 0 and parts["keeps"]["python_failures"] == 0
    events = console.command("events")
    assert "stops: devices/watchdog.py asks for a restart" in events
    assert "stops stopped: restarted by its device devices/watchdog.py" in events
    assert "keeps: devices/watchdog.py" not in events
    assert "stops stops kicking" in console.command("log stops")
    shown = _json_line(console.command("devices --json"))["modules"]
    assert [(m["partition"], m["kind"], m["loaded"]) for m in shown] == [
        ("stops", "device", True), ("keeps", "device", True)]
