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
