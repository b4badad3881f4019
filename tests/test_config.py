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
        assert config.check(path) == 0
        ptable.build_table(config.load(path))
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
    [error] = _errors(tmp_path, _hello("a", "2G") + _hello("b", "2G"))
    assert 'partitions = "4096M in total": partitions\' memory must fit in 4032M' in error


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


def test_cpuid_upcall_bench_knob_defaults_off_and_must_be_a_bool(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(_hello() + _hello(name="b", extra="cpuid_upcall = true"))
    assert [p.cpuid_upcall for p in config.load(path).partitions] == [False, True]
    [error] = _errors(tmp_path, _hello(extra='cpuid_upcall = "yes"'))
    assert error.endswith('partitions[0].cpuid_upcall = "yes": must be true or false, not a string')


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
    "more CPUs than the platform": ("[platform]\ncpus = 1\n" + _hello("a") + _hello("b"),
                                    "partitions = \"2 vCPUs in total\": more CPUs than "
                                    "platform.cpus = 1"),
    "more than one vCPU": (_hello(extra="cpus = 2"),
                           "partitions[0].cpus = 2: must be 1: Taipan runs one vCPU per "
                           "partition, on the boot CPU, today"),
    "port claimed twice": (_hello("a", extra="ports = [0x60, \"0x70-0x71\"]")
                           + _hello("b", extra="ports = [\"0x71-0x72\"]"),
                           "partitions[1].ports[0] = \"0x71-0x72\": already passed through to "
                           "partitions[0] (partitions[0].ports[1])"),
    "reserved port": (_hello(extra="ports = [\"0x3f0-0x3f8\"]"),
                      "partitions[0].ports[0] = \"0x3f0-0x3f8\": may not be passed through: "
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
    assert (a.restart, a.restart_limit, a.cpus, a.ports) == ("never", 3, 1, [])
    assert system.platform.baud == 115200 and system.platform.console_escape == "^]"


def test_ports_merge_into_ranges_and_reach_the_bitmaps(tmp_path: Path) -> None:
    from toolchain import bitmaps

    path = tmp_path / "system.toml"
    path.write_text(_hello(extra='ports = [0x60, 0x61, "0x70-0x71", 0x64]'))
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
    assert (part["restart"], part["restart_limit"], part["slice_us"], part["cpus"]) == (
        ptable.RESTARTS["on-fault"], 7, 4000, 1)
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
    with pytest.raises(ptable.TableError, match="config"):
        ptable.parse(bytes(blob))
