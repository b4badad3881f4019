"""The schema is the one source of truth: docs/config.md is rendered from it, and every example system in configs/ is listed and builds."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import guests
from toolchain import build, config, linux_images, schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))


@pytest.fixture(scope="module", autouse=True)
def example_images() -> None:
    """What `make images` writes: the file images the file and linux examples boot."""
    images = ROOT / "build" / "images"
    images.mkdir(parents=True, exist_ok=True)
    (images / "hello.bin").write_bytes(guests.build_guest("hello", name="rawfile", memory=16 << 20).data)
    (images / "mbtest.elf").write_bytes(guests.build_guest("mbtest", name="mbfile", memory=16 << 20).data)
    linux_images.build(ROOT / "build")


def test_docs_config_md_is_rendered_from_the_schema() -> None:
    current = (ROOT / "docs" / "config.md").read_text()
    assert current == schema.markdown(), (
        "docs/config.md is stale: run `python -m toolchain.schema > docs/config.md`")


def test_every_schema_key_is_documented_and_has_a_doc_line() -> None:
    text = schema.markdown()
    for section in schema.SECTIONS:
        assert f"## `{section.header}`" in text
        for key in section.keys:
            assert key.doc and "\n" not in key.doc
            assert key.type in schema.TYPES
            assert re.search(rf"^\| `{key.name}` \|", text, re.MULTILINE)


def test_the_reference_leaves_the_test_hooks_out() -> None:
    text = schema.markdown()
    assert schema.TEST not in schema.SECTIONS and "[test]" not in text
    for key in schema.TEST.keys:
        assert key.hook and key.name not in text


def test_the_validator_knows_exactly_the_schema_keys() -> None:
    assert config.TOP_KEYS == ("platform", "scheduler", "partitions", "schedule", "test")
    assert config.PARTITION_KEYS == schema.PARTITIONS.names
    assert set(config.PartitionConfig.__dataclass_fields__) >= set(schema.PARTITIONS.names) - {"image"}


def test_every_example_is_listed_in_the_readme() -> None:
    readme = (ROOT / "configs" / "README.md").read_text()
    for path in [*EXAMPLES, *sorted((ROOT / "configs" / "tests").glob("*.toml"))]:
        assert f"`{path.relative_to(ROOT / 'configs')}`" in readme, f"{path.name} not in README"


def test_examples_cover_every_guest_kind() -> None:
    kinds = set()
    for path in EXAMPLES:
        for part in config.load(path).partitions:
            kinds.add("builtin" if part.builtin else part.kind)
    assert kinds == {"builtin", "raw", "multiboot", "linux"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_builds(path: Path) -> None:
    elf = build.build(quiet=True, config_path=path, image=f"example-{path.stem}")
    assert elf.is_file()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_canonical_text_is_valid_toml_in_schema_order(path: Path, tmp_path: Path) -> None:
    system = config.load(path)
    text = system.canonical_text()
    data = tomllib.loads(text)
    # [[schedule]] follows when the system has one; the rest always appear.
    expected = ["platform", "scheduler", "partitions"] + (["schedule"] if system.schedules else [])
    assert list(data) == expected
    for table in data["partitions"]:
        order = [name for name in schema.PARTITIONS.names if name in table]
        assert list(table) == order
    for table in data.get("schedule", []):
        assert list(table) == list(schema.SCHEDULE.names)
    # Relative image paths resolve against the file's folder: the copy sits beside it.
    copy = path.parent / f".canonical-{path.name}"
    try:
        copy.write_text(text)
        assert config.load(copy).canonical_text() == text
    finally:
        copy.unlink()


def test_docs_scheduling_example_is_configs_scheduling_toml_and_checks_as_shown(capsys) -> None:
    doc = (ROOT / "docs" / "scheduling.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.DOTALL).group(1)
    shown = re.search(r"`taipan check` prints the plan it derived from it:\n\n```\n(.*?)```", doc,
                      re.DOTALL).group(1)
    path = ROOT / "configs" / "scheduling.toml"
    assert example in path.read_text()
    assert config.check(path) == 0
    printed = [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]
    assert printed == shown.strip().splitlines()
