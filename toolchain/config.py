"""The system description (TOML): loading, validation with errors that name the key, and `taipan check`."""
from __future__ import annotations

import difflib
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain import layout

KINDS = ("raw", "multiboot")
BUILTIN_PREFIX = "guest:"
DEFAULT_ENTRY = 0x100000
DEFAULT_CONSOLE = "16K"
MIN_MEMORY = 2 << 20
# A console ring is indexed by masking, so its size is a power of two; the
# bounds keep a chatty guest from eating the hypervisor's heap.
CONSOLE_MIN = 1 << 10
CONSOLE_MAX = 1 << 20
# The multiboot command line lives in the guest's boot-information page.
CMDLINE_MAX = 1024
# Partitions sit below 4 GiB: the raw guests' identity map and multiboot's
# 32-bit addresses both stop there.
MEMORY_TOP = 4 << 30

_NAME = re.compile(r"[a-z0-9_-]{1,31}")
_SIZE = re.compile(r"([0-9]+)([KMG])", re.IGNORECASE)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

TOP_KEYS = ("partitions",)
PARTITION_KEYS = ("name", "memory", "image", "kind", "autostart", "console_size", "cmdline",
                  "modules", "entry", "params", "inject_entry_failure", "cpuid_upcall")


class ConfigError(Exception):
    """The system description is invalid; `errors` holds every problem, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class PartitionConfig:
    index: int
    name: str
    memory: int
    image: str                      # as written: "guest:NAME" or a path
    kind: str | None                # None: a built-in guest that names its own kind
    builtin: str | None = None      # the built-in guest's name, if image is "guest:NAME"
    image_path: Path | None = None  # the resolved file, if image is a path
    autostart: bool = True
    console_size: int = 16 << 10
    cmdline: str = ""
    modules: list[Path] = field(default_factory=list)
    entry: int = DEFAULT_ENTRY
    params: dict[str, Any] = field(default_factory=dict)
    inject_entry_failure: bool = False
    # Bench/test knob only: hand every CPUID exit up to MicroPython policy
    # instead of answering it on the C fast path, so scripts/bench can time
    # both paths over the same guest.
    cpuid_upcall: bool = False

    def key(self, name: str) -> str:
        """The key path of one of this partition's keys, as errors spell it."""
        return f"partitions[{self.index}].{name}"


@dataclass
class SystemConfig:
    path: Path
    partitions: list[PartitionConfig]


def parse_size(text: str) -> int:
    """'512K', '16M', '1G' -> bytes; ValueError if `text` is not such a string."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(text)
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def builtin_guests() -> dict[str, Callable[..., Any]]:
    """The built-in test guests by name; empty until `guests` provides them."""
    import guests

    return dict(getattr(guests, "BUILTIN", {}))


class _Checker:
    """Collects every error of one file so the person fixes them in one pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[str] = []

    def error(self, key: str, value: Any, rule: str) -> None:
        self.errors.append(f"{self.path}: {key} = {_show(value)}: {rule}")

    def unknown_keys(self, table: dict[str, Any], valid: tuple[str, ...], prefix: str) -> None:
        for key, value in table.items():
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.error(f"{prefix}{key}", value,
                           f"unknown key{hint} (valid: {', '.join(valid)})")

    def typed(self, table: dict[str, Any], key: str, path: str, kind: type, default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        # bool is an int in Python but never a valid address or size here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(path, value, f"must be {_TYPE_WORDS[kind]}, not {_type_word(value)}")
            return default
        return value

    def size(self, table: dict[str, Any], key: str, path: str, default: str | None) -> int | None:
        text = self.typed(table, key, path, str, None)
        if text is None:
            if key in table:
                return None
            if default is None:
                self.error(path, "(missing)", "is required, a size such as \"16M\"")
                return None
            text = default
        try:
            return parse_size(text)
        except ValueError:
            self.error(path, text, "must be a size: digits then K, M or G, such as \"16M\"")
            return None


_TYPE_WORDS: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false",
                                list: "an array", dict: "a table"}


def _type_word(value: Any) -> str:
    for kind, word in ((bool, "true or false"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return word
    return type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, str) and value != "(missing)":
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and value > 9:
        return hex(value)
    return str(value)


def _partition(check: _Checker, index: int, table: dict[str, Any],
               builtins: dict[str, Callable[..., Any]]) -> PartitionConfig | None:
    prefix = f"partitions[{index}]."
    check.unknown_keys(table, PARTITION_KEYS, prefix)
    before = len(check.errors)

    name = check.typed(table, "name", prefix + "name", str, None)
    if name is None and "name" not in table:
        check.error(prefix + "name", "(missing)", "is required")
    elif name is not None and not _NAME.fullmatch(name):
        check.error(prefix + "name", name, "must be 1 to 31 of a-z, 0-9, '_' and '-'")

    memory = check.size(table, "memory", prefix + "memory", None)
    if memory is not None and (memory < MIN_MEMORY or memory % layout.PARTITION_ALIGN):
        check.error(prefix + "memory", table["memory"],
                    "must be at least 2M and a multiple of 2M (nested paging maps 2 MiB pages)")
        memory = None  # so later rules do not repeat this mistake in other words

    console = check.size(table, "console_size", prefix + "console_size", DEFAULT_CONSOLE)
    if console is not None and (console & (console - 1) or not CONSOLE_MIN <= console <= CONSOLE_MAX):
        check.error(prefix + "console_size", table["console_size"],
                    "must be a power of two from 1K to 1M")

    image = check.typed(table, "image", prefix + "image", str, None)
    builtin = image_path = None
    if image is None and "image" not in table:
        check.error(prefix + "image", "(missing)",
                    "is required: \"guest:NAME\" or a file path relative to the config file")
    elif image is not None and image.startswith(BUILTIN_PREFIX):
        builtin = image[len(BUILTIN_PREFIX):]
        if builtin not in builtins:
            close = difflib.get_close_matches(builtin, list(builtins), n=1)
            hint = f"; did you mean 'guest:{close[0]}'?" if close else ""
            known = ", ".join(sorted(builtins)) or "none yet"
            check.error(prefix + "image", image, f"no such built-in guest{hint} (known: {known})")
    elif image is not None:
        image_path = (check.path.parent / image).resolve()
        if not image_path.is_file():
            check.error(prefix + "image", image, f"no such file ({image_path})")

    kind = check.typed(table, "kind", prefix + "kind", str, None)
    if kind is not None and kind not in KINDS:
        check.error(prefix + "kind", kind, f"must be one of {', '.join(KINDS)}")
        kind = None
    elif "kind" not in table and image is not None and builtin is None:
        check.error(prefix + "kind", "(missing)",
                    "is required for a file image: \"raw\" or \"multiboot\"")

    cmdline = check.typed(table, "cmdline", prefix + "cmdline", str, "")
    if len(cmdline) >= CMDLINE_MAX or "\0" in cmdline:
        check.error(prefix + "cmdline", cmdline,
                    f"must be shorter than {CMDLINE_MAX} characters, without NUL")
    modules: list[Path] = []
    for number, module in enumerate(check.typed(table, "modules", prefix + "modules", list, [])):
        key = f"{prefix}modules[{number}]"
        if not isinstance(module, str):
            check.error(key, module, f"must be a string (a file path), not {_type_word(module)}")
            continue
        module_path = (check.path.parent / module).resolve()
        if not module_path.is_file():
            check.error(key, module, f"no such file ({module_path})")
        modules.append(module_path)
    if kind == "raw":
        for key in ("cmdline", "modules"):
            if key in table:
                check.error(prefix + key, table[key], "applies to multiboot partitions only")

    entry = check.typed(table, "entry", prefix + "entry", int, DEFAULT_ENTRY)
    if "entry" in table and kind == "multiboot":
        check.error(prefix + "entry", entry, "applies to raw images only (multiboot: ELF entry)")
    if memory is not None and not 0 <= entry < memory:
        check.error(prefix + "entry", entry, f"must lie inside the partition's memory (< {memory:#x})")

    params = check.typed(table, "params", prefix + "params", dict, {})
    if "params" in table and builtin is None:
        check.error(prefix + "params", params, "applies to built-in guests (\"guest:NAME\") only")

    autostart = check.typed(table, "autostart", prefix + "autostart", bool, True)
    inject = check.typed(table, "inject_entry_failure", prefix + "inject_entry_failure", bool, False)
    cpuid_upcall = check.typed(table, "cpuid_upcall", prefix + "cpuid_upcall", bool, False)

    if len(check.errors) != before:
        return None
    return PartitionConfig(index=index, name=name, memory=memory, image=image, kind=kind,
                           builtin=builtin, image_path=image_path, autostart=autostart,
                           console_size=console, cmdline=cmdline, modules=modules, entry=entry,
                           params=dict(params), inject_entry_failure=inject,
                           cpuid_upcall=cpuid_upcall)


def validate(data: dict[str, Any], path: Path) -> SystemConfig:
    """Check parsed TOML against the schema; ConfigError lists every problem."""
    check = _Checker(path)
    check.unknown_keys(data, TOP_KEYS, "")
    tables = data.get("partitions")
    if tables is None:
        check.error("partitions", "(missing)", "is required: at least one [[partitions]] table")
        tables = []
    elif not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        check.error("partitions", tables, "must be an array of tables ([[partitions]])")
        tables = []
    elif not tables:
        check.error("partitions", "[]", "needs at least one partition")
    if len(tables) > layout.PARTITIONS_MAX:
        check.error("partitions", f"{len(tables)} partitions",
                    f"at most {layout.PARTITIONS_MAX} partitions are supported")

    builtins = builtin_guests()
    partitions = [_partition(check, index, table, builtins) for index, table in enumerate(tables)]

    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        name = table.get("name")
        if isinstance(name, str) and name in seen:
            check.error(f"partitions[{index}].name", name,
                        f"duplicate name (also partitions[{seen[name]}].name)")
        elif isinstance(name, str):
            seen[name] = index

    sizes = [p.memory for p in partitions if p is not None]
    total = sum(-(-size // layout.PARTITION_ALIGN) * layout.PARTITION_ALIGN for size in sizes)
    room = MEMORY_TOP - layout.PARTITIONS_BASE
    if total > room:
        check.error("partitions", f"{total >> 20}M in total",
                    f"partitions' memory must fit in {room >> 20}M "
                    f"(from {layout.PARTITIONS_BASE:#x} up to 4 GiB)")

    if check.errors:
        raise ConfigError(check.errors)
    return SystemConfig(path=path, partitions=[p for p in partitions if p is not None])


def load(path: Path | str) -> SystemConfig:
    """Read and validate the system description at `path`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from error
    return validate(data, path)


def check(path: Path | str) -> int:
    """`taipan check`: 0 if the description is valid, else print each error and return 2."""
    try:
        config = load(path)
    except ConfigError as error:
        for line in error.errors:
            print(line, file=sys.stderr)
        return 2
    print(f"{path}: {len(config.partitions)} partitions, valid")
    return 0
