"""The system description's validation: each kind of mistake is named by file, key, value and rule."""
from __future__ import annotations

from pathlib import Path

import pytest

from toolchain import config, ptable

ROOT = Path(__file__).resolve().parent.parent
HELLO = '[[partitions]]\nname = "{name}"\nmemory = "{memory}"\nimage = "guest:hello"\n'


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "system.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert all(line.startswith(f"{path}: ") for line in caught.value.errors)
    assert config.check(path) == 2
    return caught.value.errors


def _hello(name: str = "a", memory: str = "16M", extra: str = "") -> str:
    return HELLO.format(name=name, memory=memory) + extra + "\n"


def test_every_shipped_config_is_valid_and_builds() -> None:
    paths = [ROOT / "configs" / "demo.toml", *sorted((ROOT / "configs" / "tests").glob("*.toml"))]
    assert len(paths) >= 7
    for path in paths:
        hooks = "[test]" in path.read_text()
        assert config.check(path, test_hooks=hooks) == 0
        ptable.build_table(config.load(path, test_hooks=hooks))
    demo = config.load(ROOT / "configs" / "demo.toml")
    assert [(p.name, p.memory, p.builtin, p.autostart) for p in demo.partitions] == [
        ("hello1", 16 << 20, "hello", True), ("hello2", 16 << 20, "hello", True)]


def test_unknown_key_suggests_the_closest_name(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, _hello(extra='autostrat = false'))
    assert "partitions[0].autostrat = false: unknown key; did you mean 'autostart'?" in error
    [error] = _errors(tmp_path, "partition = []\n" + _hello())
    assert "partition = []: unknown key; did you mean 'partitions'?" in error


def test_wrong_type_names_the_expected_type(tmp_path: Path) -> None:
    errors = _errors(tmp_path, _hello(extra='autostart = "yes"\nentry = true'))
    assert any('partitions[0].autostart = "yes": must be true or false, not a string' in e
               for e in errors)
    assert any("partitions[0].entry = true: must be an integer, not true or false" in e
               for e in errors)
    assert any("partitions = 3: must be an array of tables" in e
               for e in _errors(tmp_path, "partitions = 3\n"))


def test_bad_size_string(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, _hello(memory="16MB"))
    assert 'partitions[0].memory = "16MB": must be a size: digits then K, M or G' in error
    [error] = _errors(tmp_path, _hello(extra='console_size = "lots"'))
    assert 'partitions[0].console_size = "lots": must be a size' in error


def test_memory_too_small_or_unaligned(tmp_path: Path) -> None:
    for memory in ("1M", "3M", "2560K"):
        [error] = _errors(tmp_path, _hello(memory=memory))
        assert f'partitions[0].memory = "{memory}": must be at least 2M and a multiple of 2M' in error


def test_duplicate_name(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, _hello("twin") + _hello("twin"))
    assert 'partitions[1].name = "twin": duplicate name (also partitions[0].name)' in error


def test_bad_name(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, _hello("Big Name"))
    assert 'partitions[0].name = "Big Name": must be 1 to 31 of a-z, 0-9' in error


def test_missing_image_file(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, '[[partitions]]\nname = "r"\nmemory = "2M"\nimage = "nope.bin"\n'
                                'kind = "raw"\n')
    assert 'partitions[0].image = "nope.bin": no such file' in error
    assert str(tmp_path / "nope.bin") in error


def test_unknown_builtin_guest_suggests_one(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, _hello().replace("guest:hello", "guest:helo"))
    assert "partitions[0].image = \"guest:helo\": no such built-in guest; did you mean 'guest:hello'?" in error


def test_bad_kind(tmp_path: Path) -> None:
    (tmp_path / "k.bin").write_bytes(b"\xf4")
    [error] = _errors(tmp_path, '[[partitions]]\nname = "r"\nmemory = "2M"\nimage = "k.bin"\n'
                                'kind = "elf"\n')
    assert 'partitions[0].kind = "elf": must be one of raw, multiboot' in error
    [error] = _errors(tmp_path, '[[partitions]]\nname = "r"\nmemory = "2M"\nimage = "k.bin"\n')
    assert "partitions[0].kind = (missing): is required for a file image" in error


def test_multiboot_only_keys_on_a_raw_partition(tmp_path: Path) -> None:
    (tmp_path / "k.bin").write_bytes(b"\xf4")
    [error] = _errors(tmp_path, '[[partitions]]\nname = "r"\nmemory = "2M"\nimage = "k.bin"\n'
                                'kind = "raw"\ncmdline = "x"\n')
    assert 'partitions[0].cmdline = "x": applies to multiboot partitions only' in error


def test_too_many_partitions(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "".join(_hello(f"p{n}", "2M") for n in range(17)))
    assert any("partitions = \"17 partitions\": at most 16 partitions are supported" in e
               for e in errors)


def test_too_much_memory(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, _hello("a", "300G") + _hello("b", "300G"))
    assert ('partitions = "614400M in total": partitions\' memory must fit in 522176M (from '
            '0x4000000 up to 512 GiB, outside the PCI hole below 4 GiB)') in error


def test_every_error_at_once_and_printed_one_per_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "system.toml"
    path.write_text(_hello("a", "1M", 'colour = "red"') + _hello("a"))
    assert config.check(path) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert [line.split(": ")[1].split(" = ")[0] for line in lines] == [
        "partitions[0].colour", "partitions[0].memory", "partitions[1].name"]


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, "[[partitions]\nname = 1\n")
    assert "not valid TOML" in error


def test_missing_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.toml")
    assert config.check(tmp_path / "absent.toml") == 2


def test_guest_refusing_its_params_names_the_params_key(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(_hello(extra="params = { colour = 1 }"))
    with pytest.raises(config.ConfigError) as caught:
        ptable.build_table(config.load(path))
    [error] = caught.value.errors
    assert error.startswith(f"{path}: partitions[0].params = ")
    assert "guest:hello refused to build" in error


def test_sizes_parse() -> None:
    assert config.parse_size("512K") == 512 << 10
    assert config.parse_size("16M") == 16 << 20
    assert config.parse_size("1G") == 1 << 30
    with pytest.raises(ValueError):
        config.parse_size("1.5G")


def test_test_hooks_live_in_a_test_table_that_needs_test_hooks(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    hooks = '[test]\ncpuid_upcall = ["b"]\ninject_entry_failure = ["a"]\n'
    path.write_text(_hello() + _hello(name="b") + hooks)
    system = config.load(path, test_hooks=True)
    assert [(p.cpuid_upcall, p.inject_entry_failure) for p in system.partitions] == [
        (False, True), (True, False)]
    assert system.test_hooks() == {"inject_entry_failure": ["a"], "cpuid_upcall": ["b"]}
    # The canonical text keeps them, so the table's copy builds the same system.
    assert '[test]\ninject_entry_failure = ["a"]\ncpuid_upcall = ["b"]\n' in system.canonical_text()
    # A normal build says why it refuses, and writes nothing.
    [error] = _errors(tmp_path, _hello() + _hello(name="b") + hooks)
    assert error.endswith(": [test] holds test hooks (inject_entry_failure, cpuid_upcall) "
                          "for Taipan's own tests and benchmarks; taipan build takes [test] only "
                          "with --test-hooks")
    # The old per-partition keys name where they went, with or without the flag.
    [error] = _errors(tmp_path, _hello(extra="cpuid_upcall = true"))
    assert error.endswith('partitions[0].cpuid_upcall = true: is a test hook; it lives in [test] as '
                          'cpuid_upcall = ["NAME", ...], which only taipan build --test-hooks takes')
    path.write_text(_hello() + '[test]\ncpuid_upcall = ["nosuch", 3]\nnosuch_hook = []\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, test_hooks=True)
    assert [e.split(": ", 1)[1] for e in caught.value.errors] == [
        "test.nosuch_hook = []: unknown key (valid: inject_entry_failure, cpuid_upcall)",
        'test.cpuid_upcall[0] = "nosuch": must name a partition',
        "test.cpuid_upcall[1] = 3: must name a partition"]


# -- one case per error class of the issue: message, exit status 2, nothing written --------

ELF = b"\x7fELF" + bytes(60)
ERROR_CASES: dict[str, tuple[str, str]] = {
    "unknown key": (_hello(extra="restrat = \"always\""),
                    "partitions[0].restrat = \"always\": unknown key; did you mean 'restart'?"),
    "unknown section key": ("[platform]\nmemroy = \"1G\"\n" + _hello(),
                            "platform.memroy = \"1G\": unknown key; did you mean 'memory'?"),
    "wrong type": (_hello(extra="restart_limit = \"3\""),
                   "partitions[0].restart_limit = \"3\": must be an integer, not a string"),
    "bad size": ("[platform]\nmemory = \"1 gig\"\n" + _hello(),
                 "platform.memory = \"1 gig\": must be a size: digits then K, M or G"),
    "overlapping memory": (_hello("a", extra="host_address = 0x8000000")
                           + _hello("b", extra="host_address = 0x8200000"),
                           "partitions[1].host_address = 0x8200000: [0x8200000, 0x9200000) "
                           "overlaps partitions[0] [0x8000000, 0x9000000)"),
    "unaligned host address": (_hello(extra="host_address = 0x8100000"),
                               "partitions[0].host_address = 0x8100000: must be a multiple of 2M"),
    "beyond platform memory": ("[platform]\nmemory = \"128M\"\n" + _hello("a", "64M")
                               + _hello("b", "16M"),
                               "partitions = \"80M in total\": partitions' memory must fit in 64M "
                               "(from 0x4000000 up to platform.memory (128M))"),
    "fixed address beyond platform memory": (
        "[platform]\nmemory = \"256M\"\n" + _hello(extra="host_address = 0xf200000"),
        "partitions[0].host_address = 0xf200000: its memory would end at 0x10200000, "
        "above platform.memory (256M)"),
    "duplicate names": (_hello("x") + _hello("x"),
                        "partitions[1].name = \"x\": duplicate name (also partitions[0].name)"),
    "missing image": ('[[partitions]]\nname = "r"\nmemory = "2M"\nimage = "gone.bin"\nkind = "raw"\n',
                      "partitions[0].image = \"gone.bin\": no such file"),
    "ELF as raw": ('[[partitions]]\nname = "r"\nmemory = "2M"\nimage = "k.elf"\nkind = "raw"\n',
                   "partitions[0].image = \"k.elf\": is an ELF file, not a raw image"),
    "no multiboot header": ('[[partitions]]\nname = "m"\nmemory = "2M"\nimage = "k.elf"\n'
                            'kind = "multiboot"\n',
                            "partitions[0].image = \"k.elf\": has no multiboot1 header in its "
                            "first 8 KiB"),
    "more than one vCPU": (_hello(extra="vcpus = 2"),
                           "partitions[0].vcpus = 2: must be 1: Taipan runs one vCPU per "
                           "partition today"),
    "port claimed twice": (_hello("a", extra="ports = [0x80, \"0x300-0x301\"]")
                           + _hello("b", extra="ports = [\"0x301-0x302\"]"),
                           "partitions[1].ports[0] = \"0x301-0x302\": already passed through to "
                           "partitions[0] (partitions[0].ports[1])"),
    "PCI configuration space untrusted": (
        _hello(extra="ports = [\"0xcf8-0xcff\"]"),
        "partitions[0].ports[0] = \"0xcf8-0xcff\": is a platform port (0xcf8-0xcff: PCI configuration "
        "space (0xcf9 resets the machine; with no IOMMU it gives bus-master DMA over the hypervisor)); "
        "only a partition marked trusted = \"KEY NAME\" may own it"),
    "reset port untrusted": (
        _hello(extra="ports = [0x92]"),
        "partitions[0].ports[0] = 0x92: is a platform port (0x92: system control port A: bit 0 "
        "resets the machine)"),
    "reserved port": (_hello(extra="ports = [\"0x3f0-0x3f8\"]"),
                      "partitions[0].ports[0] = \"0x3f0-0x3f8\": may not be given to a guest: "
                      "0x3f8-0x3ff is the hypervisor's UART"),
    "bad port": (_hello(extra="ports = [\"sixty\"]"),
                 "partitions[0].ports[0] = \"sixty\": must be a port number or a range string"),
    "baud": ("[platform]\nbaud = 9600\n" + _hello(),
             "platform.baud = 0x2580: must be 115200: the hypervisor's UART is fixed at 115200"),
    "serial": ("[platform]\nserial = \"com2\"\n" + _hello(),
               "platform.serial = \"com2\": must be \"com1\""),
    "console escape": ("[platform]\nconsole_escape = \"^M\"\n" + _hello(),
                       "platform.console_escape = \"^M\": must be ^ then one of A-Z"),
    "restart policy": (_hello(extra="restart = \"sometimes\""),
                       "partitions[0].restart = \"sometimes\": must be one of never, on-fault, "
                       "always"),
    "slice out of range": ("[scheduler]\nslice_ms = 0\n" + _hello(),
                           "scheduler.slice_ms = 0: must be from 1 to 1000"),
}



def _cpus(n: int) -> str:
    return f"[platform]\ncpus = {n}\n"


def _schedule(cpu: int, frame: int, *windows: tuple[str, int]) -> str:
    items = ", ".join(f'{{ partition = "{name}", ms = {ms} }}' for name, ms in windows)
    return f"[[schedule]]\ncpu = {cpu}\nmajor_frame_ms = {frame}\nwindows = [{items}]\n"


# The plan's rules (hv/py/plan.py), one case each.
ERROR_CASES.update({
    "CPU beyond the platform": (_cpus(2) + _hello(extra="cpu = 2"),
                                "partitions[0].cpu = 2: CPU beyond the platform: platform.cpus = 2 "
                                "gives CPUs 0 to 1"),
    "shared CPU beyond the platform": (_hello(extra="cpus = [1]"),
                                       "partitions[0].cpus[0] = 1: CPU beyond the platform: "
                                       "platform.cpus = 1 gives CPUs 0 to 0"),
    "schedule beyond the platform": (_cpus(2) + _hello() + _schedule(5, 20, ("a", 5)),
                                     "schedule[0].cpu = 5: CPU beyond the platform"),
    "platform cpus out of range": (_cpus(0) + _hello(),
                                   "platform.cpus = 0: must be from 1 to 16"),
    "dedicated CPU claimed twice": (_cpus(3) + _hello("a", extra="cpu = 1")
                                    + _hello("b", extra="cpu = 1"),
                                    'partitions[1].cpu = 1: CPU 1 is already dedicated to '
                                    'partitions[0] ("a"); a dedicated CPU runs one partition'),
    "dedicated CPU also shared": (_cpus(3) + _hello("a", extra="cpu = 1")
                                  + _hello("b", extra="cpus = [1]"),
                                  'partitions[1].cpus[0] = 1: CPU 1 is dedicated to partitions[0] '
                                  '("a"); a dedicated CPU runs one partition'),
    "dedicated CPU also scheduled": (_cpus(2) + _hello("a", extra="cpu = 1") + _hello("b")
                                     + _schedule(1, 20, ("b", 5)),
                                     "partitions[0].cpu = 1: CPU 1 has a schedule (schedule[0]); a "
                                     "dedicated CPU runs one partition, in no window"),
    "dedicated partition in a window": (_cpus(3) + _hello("a", extra="cpu = 1") + _hello("b")
                                        + _schedule(2, 20, ("a", 5), ("b", 5)),
                                        'schedule[0].windows[0].partition = "a": "a" has a '
                                        "dedicated CPU (partitions[0].cpu = 1); it runs there, "
                                        "in no window"),
    "CPU 0 dedicated": (_hello(extra="cpu = 0"),
                        "partitions[0].cpu = 0: CPU 0 runs management (the console) and cannot be "
                        "dedicated; share it with cpus = [0]"),
    "cpu and cpus both": (_cpus(2) + _hello(extra="cpu = 1\ncpus = [1]"),
                          "partitions[0].cpu = 1: give cpu (a dedicated CPU) or cpus (shared "
                          "CPUs), not both"),
    "one CPU per vCPU": (_cpus(2) + _hello(extra="cpus = [0, 1]"),
                         "partitions[0].cpus = [0, 1]: one host CPU per vCPU: the partition has 1 "
                         "vCPU (vcpus = 1), so exactly one entry, such as [0]"),
    "not a CPU number": (_hello(extra='cpus = ["zero"]'),
                         'partitions[0].cpus[0] = "zero": must be a CPU number: an integer, 0 or '
                         "more"),
    "windows do not fit the frame": (_hello() + _schedule(0, 20, ("a", 15), ("management", 10)),
                                     'schedule[0].windows = "25 ms in total": the windows do not '
                                     "fit major_frame_ms = 20: they run one after another in the "
                                     "frame"),
    "unknown window partition": (_hello() + _schedule(0, 20, ("nobody", 5), ("management", 5)),
                                 'schedule[0].windows[0].partition = "nobody": no partition named '
                                 '"nobody" (partitions: a; or "management")'),
    "window of 0 ms": (_hello() + _schedule(0, 20, ("a", 0), ("management", 5)),
                       "schedule[0].windows[0].ms = 0: a window lasts at least 1 ms"),
    "window not an integer": (_hello() + _schedule(0, 20, ("management", 5)).replace(
                                  "ms = 5", 'ms = "5"'),
                              'schedule[0].windows[0].ms = "5": must be an integer, not a string'),
    "window with an unknown key": (_hello() + _schedule(0, 20, ("management", 5)).replace(
                                       "ms = 5", "ms = 5, msec = 5"),
                                   "schedule[0].windows[0].msec = 5: unknown key; did you mean "
                                   "'ms'?"),
    "schedule for a CPU twice": (_hello() + _schedule(0, 20, ("a", 5), ("management", 5))
                                 + _schedule(0, 20, ("management", 5)),
                                 "schedule[1].cpu = 0: CPU 0 already has a schedule (schedule[0]); "
                                 "one schedule per CPU"),
    "frame of 0 ms": (_hello() + _schedule(0, 0, ("management", 5)),
                      "schedule[0].major_frame_ms = 0: must be from 1 to 10000"),
    "management off CPU 0": (_cpus(2) + _hello() + _schedule(1, 20, ("a", 5), ("management", 5)),
                             'schedule[0].windows[1].partition = "management": management runs on '
                             "CPU 0 only (this schedule is for CPU 1)"),
    "windows on two CPUs": (_cpus(3) + _hello() + _schedule(1, 20, ("a", 5))
                            + _schedule(2, 20, ("a", 5)),
                            'schedule[1].windows[0].partition = "a": "a" already has a window on '
                            "CPU 1 (schedule[0].windows[0]); its one vCPU runs on one CPU"),
    "window on another CPU than cpus": (_cpus(2) + _hello(extra="cpus = [0]")
                                        + _schedule(1, 20, ("a", 5)),
                                        'partitions[0].cpus[0] = 0: "a" has a window on CPU 1 '
                                        "(schedule[0].windows[0]), so cpus must be [1] or absent"),
    "partition with no time": (_cpus(2) + _hello("a", extra="cpus = [1]") + _hello("b")
                               + _schedule(1, 20, ("b", 5)),
                               'partitions[0].cpus[0] = 1: CPU 1 runs a cyclic schedule '
                               '(schedule[0]) with no window for "a": it would never run'),
    "partition with no time by default": (_hello("a") + _hello("b")
                                          + _schedule(0, 20, ("a", 5), ("management", 5)),
                                          'partitions[1].cpus = (missing): defaults to [0], but '
                                          "CPU 0 runs a cyclic schedule (schedule[0]) with no "
                                          'window for "b": it would never run'),
    "no management window on a cyclic CPU 0": (_hello() + _schedule(0, 20, ("a", 5)),
                                               'schedule[0].windows = "no management window": '
                                               "CPU 0's schedule needs a window of \"management\": "
                                               "the console would never run"),
    "management share too small (cyclic)": (_hello() + _schedule(0, 100, ("a", 50),
                                                                 ("management", 5)),
                                            'schedule[0].windows = "5 ms of management": '
                                            "management gets 5% of CPU 0 (5 of 100 ms), below "
                                            "scheduler.management_min_percent = 10"),
    "management share too small (round robin)": (
        "[scheduler]\nmanagement_ms = 1\n" + _hello(extra="slice_ms = 20"),
        "scheduler.management_ms = 1: management gets 4% of CPU 0 (1 ms in each 21 ms round), "
        "below scheduler.management_min_percent = 10; raise management_ms or shorten the slices "
        "on CPU 0"),
})


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_each_error_class_is_named_exits_2_and_writes_nothing(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from toolchain import build, cli

    text, message = ERROR_CASES[case]
    (tmp_path / "k.elf").write_bytes(ELF)
    path = tmp_path / "system.toml"
    path.write_text(text)
    assert message in "\n".join(_errors(tmp_path, text))
    capsys.readouterr()
    assert cli.main(["check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{path}: ") and message in line for line in lines)
    out = tmp_path / "build"
    with pytest.raises(config.ConfigError):
        build.build(build_dir=out, quiet=True, config_path=path)
    assert not out.exists()


def test_cli_build_exits_2_on_a_bad_description(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from toolchain import cli

    path = tmp_path / "system.toml"
    path.write_text(_hello(memory="16MB"))
    assert cli.main(["build", "--config", str(path)]) == 2
    assert f'{path}: partitions[0].memory = "16MB": must be a size' in capsys.readouterr().err


def test_defaults_fill_in_and_the_scheduler_slice_is_inherited(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text("[scheduler]\nslice_ms = 20\n" + _hello("a") + _hello("b", extra="slice_ms = 5"))
    system = config.load(path)
    a, b = system.partitions
    assert (a.slice_ms, b.slice_ms) == (20, 5)
    assert (a.restart, a.restart_limit, a.vcpus, a.cpu, a.cpus, a.home_cpu, a.ports) == (
        "never", 3, 1, None, None, 0, [])
    assert (system.platform.cpus, system.scheduler.management_ms,
            system.scheduler.management_min_percent) == (1, 10, 10)
    assert system.platform.baud == 115200 and system.platform.console_escape == "^]"


def test_ports_merge_into_ranges_and_reach_the_bitmaps(tmp_path: Path) -> None:
    from toolchain import bitmaps

    path = tmp_path / "system.toml"
    # Platform ports (the keyboard controller, the RTC) only for a partition trusted by name.
    path.write_text(_hello(extra='ports = [0x60, 0x61, "0x70-0x71", 0x64]\ntrusted = "lab-bench"'))
    [part] = config.load(path).partitions
    assert part.ports == [(0x60, 0x61), (0x64, 0x64), (0x70, 0x71)]
    table = ptable.build_table(config.load(path))
    assert table.ports(0) == part.ports
    policy = bitmaps.AccessPolicy.passing(part.ports)
    iopm = bitmaps.svm_iopm(policy)
    assert not iopm[0x60 // 8] & (1 << (0x60 % 8)) and iopm[0x62 // 8] & (1 << (0x62 % 8))


def test_fixed_host_address_is_honoured_and_others_fill_the_gaps(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(_hello("a", extra="host_address = 0x4000000") + _hello("b", "2M")
                    + _hello("c", extra="host_address = 0x5200000"))
    bases = [p.host_base for p in config.load(path).partitions]
    assert bases == [0x4000000, 0x5000000, 0x5200000]
    table = ptable.build_table(config.load(path))
    assert [p["mem_host_base"] for p in table.partitions] == bases


def test_table_carries_restart_slice_cpus_and_the_canonical_text(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(_hello("a", extra='restart = "on-fault"\nrestart_limit = 7\nslice_ms = 4'))
    table = ptable.build_table(config.load(path))
    [part] = table.partitions
    assert (part["restart"], part["restart_limit"], part["slice_us"], part["vcpus"], part["cpu"]) == (
        ptable.RESTARTS["on-fault"], 7, 4000, 1, 0)
    text = table.config_text()
    assert 'restart = "on-fault"' in text and 'kind = "raw"' in text
    assert "host_address = 0x4000000" in text and 'baud = 115200' in text
    # The canonical text is itself a valid description of the same system.
    again = tmp_path / "again.toml"
    again.write_text(text)
    assert config.load(again).canonical_text() == text


def test_tampered_config_size_is_refused(tmp_path: Path) -> None:
    import struct

    table = ptable.build_table(config.load(ROOT / "configs" / "demo.toml"))
    blob = bytearray(table.blob)
    at = ptable.offsetof("pt_header", "config_size")
    struct.pack_into("<Q", blob, at, table.header["config_size"] - 1)
    # The signature covers the header now; re-signed, the signed length still disagrees.
    with pytest.raises(ptable.TableError, match="sha256"):
        ptable.parse(bytes(blob))
    blob[ptable.SIGNATURE_AT:ptable.SIGNATURE_AT + 32] = ptable.signature(bytes(blob))
    with pytest.raises(ptable.TableError, match="config"):
        ptable.parse(bytes(blob))


# -- the plan: what `taipan check` derives and prints, and the run-time check -----------

def test_check_prints_the_plan_it_derived(capsys: pytest.CaptureFixture[str]) -> None:
    assert config.check(ROOT / "configs" / "smp.toml") == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  cpu 0: round-robin, round 20 ms: management 10 ms, shared 10 ms; management 50% of CPU 0",
        "  cpu 1: dedicated: hello1", "  cpu 2: dedicated: hello2", "  cpu 3: dedicated: hello3"]
    assert config.check(ROOT / "configs" / "cyclic.toml") == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  cpu 0: cyclic, frame 50 ms: hello1 10 ms, hello2 20 ms, management 10 ms, idle 10 ms; "
        "management 20% of CPU 0"]


def test_plan_kinds_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    # b's windows put it on CPU 2 without a cpus key; d shares CPU 3 alone; CPU 4 idles.
    path.write_text(_cpus(5) + "[scheduler]\nmanagement_ms = 5\n" + _hello("a", extra="cpu = 1")
                    + _hello("b") + _hello("c") + _hello("d", extra="cpus = [3]\nslice_ms = 7")
                    + _schedule(2, 30, ("b", 10), ("b", 5)))
    system = config.load(path)
    assert system.plans == [
        {"cpu": 0, "kind": "round-robin", "frame_us": 15000,
         "windows": [("management", 5000), (2, 10000)]},
        {"cpu": 1, "kind": "dedicated", "frame_us": 0, "windows": [(0, 0)]},
        {"cpu": 2, "kind": "cyclic", "frame_us": 30000, "windows": [(1, 10000), (1, 5000)]},
        {"cpu": 3, "kind": "round-robin", "frame_us": 7000, "windows": [(3, 7000)]},
        {"cpu": 4, "kind": "idle", "frame_us": 0, "windows": []}]
    assert [p.home_cpu for p in system.partitions] == [1, 2, 0, 3]
    # The canonical text writes where each shared partition runs, and means the same system.
    text = system.canonical_text()
    assert "cpu = 1\n" in text and "cpus = [2]" in text and "cpus = [0]" in text
    assert 'windows = [{ partition = "b", ms = 10 }, { partition = "b", ms = 5 }]' in text
    again = tmp_path / "again.toml"
    again.write_text(text)
    assert config.load(again).plans == system.plans


def test_every_plan_error_is_reported_at_once(tmp_path: Path) -> None:
    errors = _errors(tmp_path, _cpus(2) + _hello("a", extra="cpu = 0") + _hello("b", "1M")
                     + _hello("c", extra="cpu = 3") + _schedule(0, 10, ("c", 20)))
    keys = [e.split(": ")[1].split(" = ")[0] for e in errors]
    assert keys == ["partitions[1].memory", "schedule[0].windows[0].partition",
                    "schedule[0].windows", "partitions[0].cpu", "partitions[2].cpu",
                    "partitions[1].cpus", "schedule[0].windows"]


def test_sixteen_partitions_share_cpu_0_with_management(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text("[scheduler]\nslice_ms = 1\nmanagement_ms = 2\n"
                    + "".join(_hello(f"p{n}", "2M") for n in range(16)))
    [cpu0] = config.load(path).plans
    assert len(cpu0["windows"]) == 17 == config.plan.WINDOWS_MAX
    table = ptable.build_table(config.load(path))
    assert table.header["plans"][0]["window_count"] == 17


RUN_TIME = [  # a plan as `sched set` would write it, and the rule it breaks
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 20000,
       "windows": [("management", 1000), (0, 19000)]}],
     ("plan[0].windows", "1 ms of management",
      "management gets 5% of CPU 0 (1 ms of 20 ms), below the minimum of 10%")),
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 20000,
       "windows": [("management", 10000), (0, 5000)]}],
     ("plan[0].frame_us", 20000, "a round-robin frame is its windows summed (15000 us)")),
    ([{"cpu": 0, "kind": "cyclic", "frame_us": 10000,
       "windows": [("management", 5000), (0, 6000)]}],
     ("plan[0].windows", "11 ms in total", "the windows do not fit the 10 ms frame")),
    ([{"cpu": 0, "kind": "cyclic", "frame_us": 10000, "windows": [(0, 5000)]}],
     ("plan[0].windows", "no management window",
      "CPU 0 needs a window of management: the console would never run")),
    ([{"cpu": 0, "kind": "dedicated", "frame_us": 0, "windows": [(0, 0)]}],
     ("plan[0].kind", "dedicated", "CPU 0 runs management (the console) and cannot be dedicated")),
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 10000, "windows": [("management", 10000)]},
      {"cpu": 1, "kind": "round-robin", "frame_us": 5000, "windows": [(0, 0), (0, 5000)]}],
     ("plan[1].windows[0]", 0, "a window lasts at least 1 us")),
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 15000,
       "windows": [("management", 10000), (0, 5000)]},
      {"cpu": 1, "kind": "dedicated", "frame_us": 0, "windows": [(0, 0)]}],
     ("plan[1].windows[0]", "a", "already has time on CPU 0; its one vCPU runs on one CPU")),
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 10000, "windows": [("management", 10000)]},
      {"cpu": 1, "kind": "round-robin", "frame_us": 5000,
       "windows": [("management", 5000)]}],
     ("plan[1].windows[0]", "management", "management runs on CPU 0 only")),
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 10000, "windows": [("management", 10000)]},
      {"cpu": 1, "kind": "round-robin", "frame_us": 5000, "windows": [(7, 5000)]}],
     ("plan[1].windows[0]", 7, "no such partition")),
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 10000, "windows": [("management", 10000)]},
      {"cpu": 1, "kind": "idle", "frame_us": 0, "windows": []}],
     ("plan", '"a"', "has no window on any CPU: it would never run")),
    ([{"cpu": 0, "kind": "round-robin", "frame_us": 15000,
       "windows": [("management", 10000), (0, 5000)]}],
     ("plan", "1 CPUs", "one plan per CPU: the machine has 2")),
]


@pytest.mark.parametrize("plans, error", RUN_TIME, ids=[e[0] + ": " + e[2] for _p, e in RUN_TIME])
def test_run_time_plan_check_names_the_broken_rule(plans: list, error: tuple) -> None:
    # One plan per CPU, except in the case that proves a missing plan is caught.
    cpus = 2 if error[1] == "1 CPUs" else len(plans)
    errors = config.plan.check(plans, cpus, 10, ["a"])
    assert error in errors


def test_run_time_check_accepts_what_derive_makes() -> None:
    system = config.load(ROOT / "configs" / "smp.toml")
    names = [p.name for p in system.partitions]
    assert config.plan.check(system.plans, 4, 10, names) == []
    edited = [dict(p) for p in system.plans]
    edited[0] = {"cpu": 0, "kind": "cyclic", "frame_us": 40000,
                 "windows": [(3, 20000), ("management", 10000)]}
    assert config.plan.check(edited, 4, 10, names) == []
    assert config.plan.describe(edited, names)[0] == (
        "cpu 0: cyclic, frame 40 ms: shared 20 ms, management 10 ms, idle 10 ms; "
        "management 25% of CPU 0")


def test_a_run_time_change_keeps_dedicated_cpus_and_homes() -> None:
    system = config.load(ROOT / "configs" / "smp.toml")
    names = [p.name for p in system.partitions]
    current = system.plans
    cyclic0 = {"cpu": 0, "kind": "cyclic", "frame_us": 40000,
               "windows": [(3, 20000), ("management", 10000)]}
    assert config.plan.check_change(current, [cyclic0, *current[1:]], 10, names) == []
    undedicated = {"cpu": 1, "kind": "round-robin", "frame_us": 5000, "windows": [(0, 5000)]}
    assert config.plan.check_change(current, [current[0], undedicated, *current[2:]], 10, names) == [
        ("plan[1].kind", "round-robin", "CPU 1 is dedicated to hello1: only a shared CPU's "
         "slices or windows change at run time")]
    # "shared" moved from CPU 0 onto hello3's dedicated CPU 3: two rules broken.
    alone = {"cpu": 0, "kind": "round-robin", "frame_us": 10000, "windows": [("management", 10000)]}
    moved = {"cpu": 3, "kind": "round-robin", "frame_us": 5000, "windows": [(3, 5000)]}
    errors = config.plan.check_change(current, [alone, *current[1:3], moved], 10, names)
    assert ("plan[3]", "shared", "runs on CPU 0: a partition stays on its CPU at run time") in errors
    assert ("plan[3].kind", "round-robin", "CPU 3 is dedicated to hello3: only a shared CPU's "
            "slices or windows change at run time") in errors


# -- the same rules on the metal: hv/py/plan.py frozen into the image, under MicroPython -------

METAL_CASES = [
    # smp.toml's shape: three dedicated CPUs and a shared CPU 0.
    (4, [{"name": "h1", "cpu": 1, "cpus": None, "slice_us": 10000},
         {"name": "h2", "cpu": 2, "cpus": None, "slice_us": 10000},
         {"name": "sh", "cpu": None, "cpus": [0], "slice_us": 5000}],
     [], {"management_ms": 10, "management_min_percent": 10}),
    # A cyclic CPU 0 with an idle tail and a partition whose windows place it.
    (2, [{"name": "a", "cpu": None, "cpus": None, "slice_us": 10000},
         {"name": "b", "cpu": None, "cpus": [1], "slice_us": 3000}],
     [{"cpu": 0, "major_frame_ms": 50,
       "windows": [{"partition": "a", "ms": 10}, {"partition": "management", "ms": 10}]}],
     {"management_ms": 10, "management_min_percent": 10}),
    # Several rules broken at once.
    (2, [{"name": "a", "cpu": 0, "cpus": None, "slice_us": 10000},
         {"name": "b", "cpu": 5, "cpus": None, "slice_us": 10000},
         {"name": "c", "cpu": None, "cpus": [0, 1], "slice_us": 10000}],
     [{"cpu": 0, "major_frame_ms": 5,
       "windows": [{"partition": "zed", "ms": 0}, {"partition": "a", "ms": 9}]}],
     {"management_ms": 10, "management_min_percent": 10}),
]
# Prints a derive() result in a form both interpreters spell alike (dict order is
# not kept by MicroPython's dict, so no dict is printed whole).
METAL_SHOW = ('print("|".join(["%d %s %d %r" % (p["cpu"], p["kind"], p["frame_us"], p["windows"]) '
              'for p in r[0]] + ["%s = %s: %s" % e for e in r[1]] + plan.describe(r[0], n)))')


def _shown(case: tuple) -> str:
    plans, errors = config.plan.derive(*case)
    names = [p["name"] for p in case[1]]
    return "|".join([f"{p['cpu']} {p['kind']} {p['frame_us']} {p['windows']!r}" for p in plans]
                    + [f"{key} = {value}: {rule}" for key, value, rule in errors]
                    + config.plan.describe(plans, names))


@pytest.mark.boot
def test_the_metal_runs_the_same_plan_rules_and_reads_the_new_table(qemu) -> None:
    from conftest import REPL_PROMPT

    qemu.command("py", prompt=REPL_PROMPT)
    assert qemu.command("import plan, hv, manager", prompt=REPL_PROMPT).strip() == ""
    for case in METAL_CASES:
        cpus, partitions, schedules, scheduler = case
        qemu.command(f"r = plan.derive({cpus!r}, {partitions!r}, {schedules!r}, {scheduler!r})",
                     prompt=REPL_PROMPT)
        qemu.command(f"n = {[p['name'] for p in partitions]!r}", prompt=REPL_PROMPT)
        assert qemu.command(METAL_SHOW, prompt=REPL_PROMPT).strip() == _shown(case)
    # The run-time check, as `sched set` calls it, on every RUN_TIME case at once.
    for plans, _error in RUN_TIME:
        cpus = 2 if _error[1] == "1 CPUs" else len(plans)
        expected = "|".join(f"{key} = {value}: {rule}"
                            for key, value, rule in config.plan.check(plans, cpus, 10, ["a"]))
        assert expected
        line = (f'print("|".join(["%s = %s: %s" % e for e in plan.check({plans!r}, {cpus}, 10, '
                '["a"])]))')
        assert qemu.command(line, prompt=REPL_PROMPT).strip() == expected
    # check_change, as `sched set` calls it: one partition moved, one dedicated CPU undone.
    current = [{"cpu": 0, "kind": "round-robin", "frame_us": 15000,
                "windows": [("management", 10000), (0, 5000)]},
               {"cpu": 1, "kind": "dedicated", "frame_us": 0, "windows": [(1, 0)]}]
    proposed = [{"cpu": 0, "kind": "round-robin", "frame_us": 10000,
                 "windows": [("management", 10000)]},
                {"cpu": 1, "kind": "round-robin", "frame_us": 10000, "windows": [(1, 5000), (0, 5000)]}]
    expected = "|".join(f"{key} = {value}: {rule}" for key, value, rule
                        in config.plan.check_change(current, proposed, 10, ["a", "b"]))
    assert expected.count("|") >= 1
    qemu.command(f"c, p = {current!r}, {proposed!r}", prompt=REPL_PROMPT)
    line = 'print("|".join(["%s = %s: %s" % e for e in plan.check_change(c, p, 10, ["a", "b"])]))'
    assert qemu.command(line, prompt=REPL_PROMPT).strip() == expected
    # The version 3 table: signed over its plans too, with vcpus, cpu and cpus per partition.
    assert qemu.command("manager.table_problem()", prompt=REPL_PROMPT).strip() == ""
    info = 'i = hv.part_info(0); print(i["vcpus"], i["cpu"], i["cpus"], i["slice_us"])'
    assert qemu.command(info, prompt=REPL_PROMPT).strip() == "1 1 [1] 10000"  # demo: hello1 on CPU 1


def test_default_management_slice_grows_to_keep_its_share(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text("".join(_hello(f"p{n}", "2M") for n in range(16)))
    system = config.load(path)
    # 16 slices of 10 ms: 18 ms is the least with 18 / 178 >= 10%.
    assert system.plans[0]["windows"][0] == ("management", 18000)
    assert system.scheduler.management_ms == 18
    assert "management_ms = 18\n" in system.canonical_text()
    assert config.plan.percent(system.plans[0]) == 10
    # Written out, the same value is the person's choice, and still too small one lower.
    [error] = _errors(tmp_path, "[scheduler]\nmanagement_ms = 17\n"
                      + "".join(_hello(f"p{n}", "2M") for n in range(16)))
    assert "scheduler.management_ms = 0x11: management gets 9% of CPU 0" in error


@pytest.mark.boot
def test_the_metal_reads_each_partitions_home_cpu_from_smp_toml() -> None:
    import pexpect
    from conftest import REPL_PROMPT, Console

    from toolchain import build, emulator

    elf = build.build(quiet=True, config_path=ROOT / "configs" / "smp.toml", image="example-smp")
    argv = emulator.qemu_argv(elf, serial="stdio", cpu="EPYC", memory_mb=256, smp=4, no_reboot=True)
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=60)
    try:
        console = Console(child).boot()
        console.command("py", prompt=REPL_PROMPT)
        line = ('import hv; print([(hv.part_info(i)["name"], hv.part_info(i)["cpu"], '
                'hv.part_info(i)["cpus"], hv.part_info(i)["vcpus"]) for i in range(hv.part_count())])')
        assert console.command(line, prompt=REPL_PROMPT).strip() == repr(
            [("hello1", 1, [1], 1), ("hello2", 2, [2], 1), ("hello3", 3, [3], 1), ("shared", 0, [0], 1)])
    finally:
        child.terminate(force=True)
