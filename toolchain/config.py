"""The system description (TOML): loading, validation with errors that name the key, and `taipan check`."""
from __future__ import annotations

import copy
import difflib
import importlib.util
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from boot import multiboot
from toolchain import layout, placement, schema
from toolchain.schema import PARTITIONS, PLATFORM, SCHEDULE, SCHEDULER


def _load_plan() -> Any:
    """hv/py/plan.py, the plan rules MicroPython runs on the metal, as a CPython module."""
    path = Path(__file__).resolve().parent.parent / "hv" / "py" / "plan.py"
    spec = importlib.util.spec_from_file_location("taipan_plan", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# One module, two interpreters: what `sched set` checks on the metal is what
# `taipan check` checks here.
plan = _load_plan()

KINDS = schema.KINDS
BUILTIN_PREFIX = "guest:"
DEFAULT_ENTRY = PARTITIONS.key("entry").default
DEFAULT_CONSOLE = PARTITIONS.key("console_size").default
MIN_MEMORY = 2 << 20
# A console ring is indexed by masking, so its size is a power of two; the
# bounds keep a chatty guest from eating the hypervisor's heap.
CONSOLE_MIN = 1 << 10
CONSOLE_MAX = 1 << 20
# The multiboot command line lives in the guest's boot-information page.
CMDLINE_MAX = 1024
MEMORY_TOP = placement.MEMORY_TOP
PORT_MAX = 0xFFFF

_NAME = re.compile(r"[a-z0-9_-]{1,31}")
_SIZE = re.compile(r"([0-9]+)([KMG])", re.IGNORECASE)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_PORTS = re.compile(r"\s*(0x[0-9a-f]+|[0-9]+)\s*(?:-\s*(0x[0-9a-f]+|[0-9]+)\s*)?", re.IGNORECASE)
# ^H, ^I, ^J, ^M are editing and line-end keys; ^[ is Escape, the first byte
# of every arrow key, so none of them can end a console session.
_ESCAPE = re.compile(r"\^[A-Z\\\]^_]")
_ESCAPE_TAKEN = ("^H", "^I", "^J", "^M", "^[")

TOP_KEYS = (*(section.name for section in schema.SECTIONS), schema.TEST.name)
PARTITION_KEYS = PARTITIONS.names
WINDOW_KEYS = ("partition", "ms")


class ConfigError(Exception):
    """The system description is invalid; `errors` holds every problem, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class DeviceConfig:
    """One of a partition's `devices`: a Python model answering a port range or an MMIO range, maybe with an IOAPIC pin."""

    model: str        # as written
    path: Path        # resolved
    first: int        # its ports (0, 0 for an MMIO device)
    last: int
    irq: int | None = None
    mmio: tuple[int, int] | None = None   # first and last guest-physical byte

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if self.mmio:
            out["mmio"] = f"{self.mmio[0]:#x}-{self.mmio[1]:#x}"
        else:
            out["ports"] = f"{self.first:#x}" if self.first == self.last else f"{self.first:#x}-{self.last:#x}"
        if self.irq is not None:
            out["irq"] = self.irq
        return out


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
    # Test hooks, set from [test] (schema.TEST) by `--test-hooks` builds only.
    inject_entry_failure: bool = False
    cpuid_upcall: bool = False
    host_address: int | None = None   # as written; None: placed by the toolchain
    host_base: int | None = None      # where validation placed it
    vcpus: int = 1
    cpu: int | None = None            # a dedicated CPU, as written
    cpus: list[int] | None = None     # shared host CPUs, as written
    home_cpu: int = 0                 # where the plan runs it
    ports: list[tuple[int, int]] = field(default_factory=list)  # merged inclusive ranges
    trusted: str = ""                 # the key it is trusted under with platform ports; "": not
    restart: str = "never"
    restart_limit: int = 3
    slice_ms: int = SCHEDULER.key("slice_ms").default  # its own or the scheduler's
    module_names: list[str] = field(default_factory=list)  # as written
    policy: str | None = None         # the user's policy module, as written
    policy_path: Path | None = None   # that file, resolved
    python_failures: int = PARTITIONS.key("python_failures").default
    devices: list[DeviceConfig] = field(default_factory=list)
    kernel: str | None = None         # linux: the kernel and initrd as written
    initrd: str | None = None
    kernel_path: Path | None = None   # resolved
    initrd_path: Path | None = None

    def key(self, name: str) -> str:
        """The key path of one of this partition's keys, as errors spell it."""
        return f"partitions[{self.index}].{name}"

    def values(self, kind: str | None = None) -> dict[str, Any]:
        """Its keys as the schema names them, defaults filled in, for the canonical TOML.

        Keys that do not apply to its kind of image are None (left out), so
        the text validates again as the same system.
        """
        return {"name": self.name, "memory": self.memory,
                "host_address": self.host_base if self.host_base is not None else self.host_address,
                "vcpus": self.vcpus, "cpu": self.cpu,
                "cpus": [self.home_cpu] if self.cpu is None else None,
                "image": self.image if self.kind != "linux" else None, "kind": kind or self.kind,
                "kernel": self.kernel, "initrd": self.initrd,
                "entry": self.entry if self.kind == "raw" and self.builtin is None else None,
                "cmdline": self.cmdline if (kind or self.kind) in ("multiboot", "linux") else None,
                "modules": list(self.module_names) if (kind or self.kind) == "multiboot" else None,
                "ports": self.ports, "trusted": self.trusted or None,
                "console_size": self.console_size, "autostart": self.autostart,
                "restart": self.restart, "restart_limit": self.restart_limit,
                "slice_ms": self.slice_ms,
                "params": self.params if self.builtin is not None else None,
                "policy": self.policy,
                "devices": [d.values() for d in self.devices] or None,
                "python_failures": self.python_failures}


@dataclass
class PlatformConfig:
    memory: int | None = None   # None: not declared, not checked
    cpus: int = PLATFORM.key("cpus").default
    serial: str = PLATFORM.key("serial").default
    baud: int = PLATFORM.key("baud").default
    console_escape: str = PLATFORM.key("console_escape").default
    scheduler: str | None = None        # the user's scheduler module, as written
    scheduler_path: Path | None = None  # that file, resolved


@dataclass
class SchedulerConfig:
    slice_ms: int = SCHEDULER.key("slice_ms").default
    # None until the plan is derived: the default, raised as far as the
    # minimum share needs; then the slice the plan gives management.
    management_ms: int | None = None
    management_min_percent: int = SCHEDULER.key("management_min_percent").default
    upcall_timeout_ms: int = SCHEDULER.key("upcall_timeout_ms").default
    python_budget_ms: int = SCHEDULER.key("python_budget_ms").default


@dataclass
class ScheduleConfig:
    """One [[schedule]]: a cyclic CPU's major frame and its windows in order."""

    cpu: int
    major_frame_ms: int
    windows: list[dict[str, Any]]   # {"partition": NAME or "management", "ms": N}

    def values(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "major_frame_ms": self.major_frame_ms,
                "windows": [dict(w) for w in self.windows]}


@dataclass
class SystemConfig:
    path: Path
    partitions: list[PartitionConfig]
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    schedules: list[ScheduleConfig] = field(default_factory=list)
    # Per CPU, as hv/py/plan.py derives it: {"cpu", "kind", "frame_us", "windows"}.
    plans: list[dict[str, Any]] = field(default_factory=list)

    def plan_lines(self) -> list[str]:
        """The derived plan, one line per CPU, as `taipan check` prints it."""
        return plan.describe(self.plans, [p.name for p in self.partitions])

    def canonical_text(self, kinds: list[str] | None = None) -> str:
        """The whole configuration as canonical TOML; `kinds` fills in built-in guests' kinds."""
        kinds = kinds or [p.kind for p in self.partitions]
        return schema.render({
            "platform": {f.name: getattr(self.platform, f.name) for f in fields(self.platform)},
            "scheduler": {f.name: getattr(self.scheduler, f.name) for f in fields(self.scheduler)},
            "partitions": [p.values(kind) for p, kind in zip(self.partitions, kinds, strict=True)],
            "schedule": [s.values() for s in self.schedules],
            "test": self.test_hooks() or None,
        })

    def test_hooks(self) -> dict[str, list[str]]:
        """[test] as validated: each hook that is set, with the partitions it names."""
        hooks = {key.name: [p.name for p in self.partitions if getattr(p, key.name)]
                 for key in schema.TEST.keys}
        return {name: names for name, names in hooks.items() if names}


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


_PY_TYPES: dict[str, type] = {"string": str, "integer": int, "address": int, "bool": bool,
                              "size": str, "paths": list, "ports": list, "table": dict,
                              "cpus": list, "windows": list, "names": list, "devices": list}


class _Checker:
    """Collects every error of one file so the person fixes them in one pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[str] = []
        self.broken: set[str] = set()   # key paths with an error

    def error(self, key: str, value: Any, rule: str) -> None:
        self.errors.append(f"{self.path}: {key} = {_show(value)}: {rule}")
        self.broken.add(key)

    def unknown_keys(self, table: dict[str, Any], valid: tuple[str, ...], prefix: str) -> None:
        for key, value in table.items():
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.error(f"{prefix}{key}", value,
                           f"unknown key{hint} (valid: {', '.join(valid)})")

    def value(self, table: dict[str, Any], key: schema.Key, prefix: str) -> Any:
        """The key's value, parsed and checked against its schema entry; None after an error."""
        path = prefix + key.name
        if key.name not in table:
            if key.required:
                self.error(path, "(missing)", "is required" + key.required_hint)
                return None
            if key.type == "size" and key.default is not None:
                return parse_size(key.default)
            return copy.deepcopy(key.default)
        value = table[key.name]
        kind = _PY_TYPES[key.type]
        # bool is an int in Python but never a valid address or size here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(path, value, f"must be {_TYPE_WORDS[kind]}, not {_type_word(value)}")
            return None
        if key.type == "size":
            try:
                value = parse_size(value)
            except ValueError:
                self.error(path, value, "must be a size: digits then K, M or G, such as \"16M\"")
                return None
        if (key.choices and value not in key.choices
                or key.minimum is not None and value < key.minimum
                or key.maximum is not None and value > key.maximum):
            self.error(path, table[key.name], key.rule_text())
            return None
        return value

    def section(self, table: dict[str, Any], section: schema.Section, prefix: str
                ) -> dict[str, Any]:
        self.unknown_keys(table, section.names, prefix)
        return {key.name: self.value(table, key, prefix) for key in section.keys}


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


def _image_kind(check: _Checker, path: str, image: str, data: bytes, kind: str) -> None:
    """A file image must be what its `kind` says, so the mistake shows before the build."""
    elf = data[:4] == b"\x7fELF"
    if kind == "raw" and elf:
        check.error(path, image, "is an ELF file, not a raw image (kind = \"raw\"): set "
                    "kind = \"multiboot\" for a multiboot kernel, or flatten it with "
                    "objcopy -O binary")
    elif kind == "multiboot":
        found = multiboot.find_mb1(data)
        if found is None:
            check.error(path, image, "has no multiboot1 header in its first 8 KiB "
                        "(kind = \"multiboot\")")
        elif not found[1].flags & multiboot.MB1_FLAG_ADDRESS_FIELDS and not elf:
            check.error(path, image, "is not an ELF file and its multiboot1 header has no "
                        "a.out-kludge addresses (kind = \"multiboot\")")


def _port_span(check: _Checker, path: str, item: Any) -> tuple[int, int] | None:
    """One port or "0xA-0xB" range as (first, last), or None after saying what is wrong."""
    if isinstance(item, int) and not isinstance(item, bool):
        first = last = item
    elif isinstance(item, str) and (match := _PORTS.fullmatch(item)):
        first = int(match.group(1), 0)
        last = int(match.group(2), 0) if match.group(2) else first
    else:
        check.error(path, item, "must be a port number or a range string such as "
                    "\"0x60-0x64\"")
        return None
    if not 0 <= first <= last <= PORT_MAX:
        check.error(path, item, f"must lie in 0 to {PORT_MAX:#x}, the first port no higher "
                    "than the last")
        return None
    reserved = next(((lo, hi, what) for lo, hi, what in schema.RESERVED_PORTS
                     if first <= hi and lo <= last), None)
    if reserved is not None:
        lo, hi, what = reserved
        shown = f"{lo:#x}" if lo == hi else f"{lo:#x}-{hi:#x}"
        check.error(path, item, f"may not be given to a guest: {shown} is {what}")
        return None
    return first, last


_MMIO = re.compile(r"(0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)")
_DEVICE_SHAPE = "must be a table { model = \"FILE.py\", ports = \"0xA-0xB\" or mmio = \"0xA-0xB\", irq = N }"


def _mmio_span(check: _Checker, path: str, item: Any, memory: int | None) -> tuple[int, int] | None:
    """A device's "0xA-0xB" guest-physical range as (first, last), or None after saying what is wrong."""
    match = _MMIO.fullmatch(item) if isinstance(item, str) else None
    if match is None:
        check.error(path, item, "must be a range string such as \"0xfed10000-0xfed10fff\"")
        return None
    first, last = int(match.group(1), 16), int(match.group(2), 16)
    if first > last or first % schema.MMIO_PAGE or (last + 1) % schema.MMIO_PAGE:
        check.error(path, item, "must be whole 4 KiB pages: the first address page-aligned, the "
                    "last one byte before a page boundary")
        return None
    if last >= schema.MMIO_LIMIT:
        check.error(path, item, f"must lie below {schema.MMIO_LIMIT:#x} (64 GiB), where every "
                    "guest can address it")
        return None
    if memory is not None and first < memory:
        check.error(path, item, f"overlaps the partition's memory (0x0-{memory - 1:#x})")
        return None
    reserved = next((what for lo, hi, what in schema.RESERVED_MMIO if first <= hi and lo <= last), None)
    if reserved is not None:
        check.error(path, item, f"overlaps {reserved}")
        return None
    return first, last


def _irq(check: _Checker, path: str, item: Any, taken: dict[int, int]) -> int | None:
    """A device's IOAPIC pin, or None after saying what is wrong."""
    if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item < schema.IOAPIC_PINS:
        check.error(path, item, f"must be an IOAPIC pin, 0 to {schema.IOAPIC_PINS - 1}")
        return None
    if item == schema.UART_IRQ:
        check.error(path, item, f"is the pin of the partition's virtual UART (IRQ {schema.UART_IRQ})")
        return None
    if item in taken:
        check.error(path, item, f"is already devices[{taken[item]}]'s pin")
        return None
    return item


def _devices(check: _Checker, items: list[Any], prefix: str,
             passed: list[tuple[int, int]], memory: int | None) -> list[DeviceConfig]:
    """The partition's device models: each a .py file and a port or MMIO range no one else has, maybe a pin."""
    devices: list[DeviceConfig] = []
    numbers: list[int] = []   # each accepted device's place in `items`, as errors name it
    pins: dict[int, int] = {}
    for number, item in enumerate(items):
        path = f"{prefix}devices[{number}]"
        keys = set(item) if isinstance(item, dict) else set()
        if not keys or not keys <= {"model", "ports", "mmio", "irq"} or "model" not in keys \
                or len(keys & {"ports", "mmio"}) != 1 or not isinstance(item["model"], str):
            check.error(path, item, _DEVICE_SHAPE)
            continue
        model = _python_file(check, path + ".model", item["model"])
        irq = _irq(check, path + ".irq", item["irq"], pins) if "irq" in item else None
        if "mmio" in item:
            mmio = _mmio_span(check, path + ".mmio", item["mmio"], memory)
            clash = mmio and next((f"devices[{n}]" for n, d in zip(numbers, devices, strict=True)
                                   if d.mmio and mmio[0] <= d.mmio[1] and d.mmio[0] <= mmio[1]), None)
            if clash:
                check.error(path + ".mmio", item["mmio"], f"overlaps this partition's {clash}")
            if model is None or mmio is None or clash or ("irq" in item and irq is None):
                continue
            devices.append(DeviceConfig(item["model"], model, 0, 0, irq, mmio))
        else:
            span = _port_span(check, path + ".ports", item["ports"])
            if model is None or span is None or ("irq" in item and irq is None):
                continue
            first, last = span
            clash = next((f"ports {lo:#x}-{hi:#x}" for lo, hi in passed if first <= hi and lo <= last), None)
            clash = clash or next((f"devices[{n}]" for n, d in zip(numbers, devices, strict=True)
                                   if not d.mmio and first <= d.last and d.first <= last), None)
            if clash:
                check.error(path + ".ports", item["ports"], f"overlaps this partition's {clash}")
                continue
            devices.append(DeviceConfig(item["model"], model, first, last, irq))
        numbers.append(number)
        if irq is not None:
            pins[irq] = number
    return devices


def _ports(check: _Checker, items: list[Any], prefix: str,
           claims: list[tuple[int, str, Any, int, int]], index: int, trusted: str) -> list[tuple[int, int]]:
    """Parse and check `ports`; return the merged ranges and add each item to `claims`."""
    ranges: list[tuple[int, int]] = []
    mine: list[tuple[str, int, int]] = []
    for number, item in enumerate(items):
        path = f"{prefix}ports[{number}]"
        span = _port_span(check, path, item)
        if span is None:
            continue
        first, last = span
        platform = next(((lo, hi, what) for lo, hi, what in schema.PLATFORM_PORTS
                         if first <= hi and lo <= last), None)
        if platform is not None and not trusted:
            lo, hi, what = platform
            shown = f"{lo:#x}" if lo == hi else f"{lo:#x}-{hi:#x}"
            check.error(path, item, f"is a platform port ({shown}: {what}); only a partition "
                        "marked trusted = \"KEY NAME\" may own it")
            continue
        twice = next((other for other, lo, hi in mine if first <= hi and lo <= last), None)
        if twice is not None:
            check.error(path, item, f"listed twice (also {twice})")
            continue
        mine.append((path, first, last))
        claims.append((index, path, item, first, last))
        ranges.append((first, last))
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    if len(merged) > schema.PORT_RANGES_MAX:
        check.error(prefix + "ports", f"{len(merged)} ranges",
                    f"at most {schema.PORT_RANGES_MAX} ranges, after merging adjacent ports")
    return merged


def _cpu_list(check: _Checker, items: list[Any], prefix: str) -> list[int] | None:
    """`cpus`: a list of CPU numbers, or None after an error."""
    ok = True
    for number, item in enumerate(items):
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            check.error(f"{prefix}cpus[{number}]", item,
                        "must be a CPU number: an integer, 0 or more")
            ok = False
    return list(items) if ok else None


def _placement(check: _Checker, table: dict[str, Any], v: dict[str, Any], prefix: str,
               scheduler: SchedulerConfig) -> dict[str, Any] | None:
    """What the plan needs of one partition, or None when one of those keys is broken."""
    cpus = _cpu_list(check, v["cpus"], prefix) if v["cpus"] is not None else None
    broken = [key for key in ("cpu", "cpus", "slice_ms", "vcpus") if key in table
              and (v[key] is None or key == "cpus" and cpus is None)]
    if broken or not isinstance(v["name"], str):
        return None
    slice_ms = v["slice_ms"] if v["slice_ms"] is not None else scheduler.slice_ms
    return {"name": v["name"], "cpu": v["cpu"], "cpus": cpus, "slice_us": slice_ms * 1000}


def _partition(check: _Checker, index: int, table: dict[str, Any],
               builtins: dict[str, Callable[..., Any]], scheduler: SchedulerConfig,
               claims: list[tuple[int, str, Any, int, int]],
               placements: list[dict[str, Any] | None]) -> PartitionConfig | None:
    prefix = f"partitions[{index}]."
    before = len(check.errors)
    for hook in schema.TEST.names:
        if hook in table:
            check.error(prefix + hook, table[hook], f"is a test hook; it lives in [test] as "
                        f"{hook} = [\"NAME\", ...], which only taipan build --test-hooks takes")
    table = {k: v for k, v in table.items() if k not in schema.TEST.names}
    v = check.section(table, PARTITIONS, prefix)
    placement = _placement(check, table, v, prefix, scheduler)
    placements.append(placement)

    name = v["name"]
    if name is not None and not _NAME.fullmatch(name):
        check.error(prefix + "name", name, "must be 1 to 31 of a-z, 0-9, '_' and '-'")

    memory = v["memory"]
    if memory is not None and (memory < MIN_MEMORY or memory % layout.PARTITION_ALIGN):
        check.error(prefix + "memory", table["memory"],
                    "must be at least 2M and a multiple of 2M (nested paging maps 2 MiB pages)")
        memory = None  # so later rules do not repeat this mistake in other words

    host = v["host_address"]
    if host is not None and (host % layout.PARTITION_ALIGN or host < layout.PARTITIONS_BASE):
        check.error(prefix + "host_address", host,
                    f"must be a multiple of 2M ({layout.PARTITION_ALIGN:#x}) at or above "
                    f"{layout.PARTITIONS_BASE:#x}, where partitions' memory begins")

    console = v["console_size"]
    if console is not None and (console & (console - 1) or not CONSOLE_MIN <= console <= CONSOLE_MAX):
        check.error(prefix + "console_size", table["console_size"],
                    "must be a power of two from 1K to 1M")

    image, kind = v["image"], v["kind"]
    builtin = image_path = None
    if image is None and kind != "linux" and prefix + "image" not in check.broken:
        check.error(prefix + "image", "(missing)", "is required: \"guest:NAME\" or a file path "
                    "relative to the config file")
    if kind == "linux" and image is not None:
        check.error(prefix + "image", image, "a linux partition takes `kernel` (and `initrd`), "
                    "not `image`")
        image = None
    if image is not None and image.startswith(BUILTIN_PREFIX):
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
        elif kind is not None:
            _image_kind(check, prefix + "image", image, image_path.read_bytes(), kind)
        if "kind" not in table:
            check.error(prefix + "kind", "(missing)",
                        "is required for a file image: \"raw\", \"multiboot\" or \"linux\"")

    cmdline = v["cmdline"]
    if cmdline is not None and (len(cmdline) >= CMDLINE_MAX or "\0" in cmdline):
        check.error(prefix + "cmdline", cmdline,
                    f"must be shorter than {CMDLINE_MAX} characters, without NUL")
    modules: list[Path] = []
    for number, module in enumerate(v["modules"] or []):
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
    if kind == "linux" and "modules" in table:
        check.error(prefix + "modules", table["modules"], "applies to multiboot partitions only "
                    "(linux: `initrd`)")
    kernel_path, initrd_path = _linux_files(check, table, v, prefix, kind)

    entry = v["entry"]
    if "entry" in table and entry is not None:
        if kind in ("multiboot", "linux"):
            check.error(prefix + "entry", entry,
                        f"applies to raw images only ({kind}: the kernel's own entry)")
        elif memory is not None and not 0 <= entry < memory:
            check.error(prefix + "entry", entry,
                        f"must lie inside the partition's memory (< {memory:#x})")

    if "params" in table and v["params"] is not None and builtin is None:
        check.error(prefix + "params", v["params"],
                    "applies to built-in guests (\"guest:NAME\") only")

    trusted = v["trusted"] or ""
    ports = _ports(check, v["ports"], prefix, claims, index, trusted) if v["ports"] is not None else []

    policy = v["policy"]
    policy_path = _python_file(check, prefix + "policy", policy)
    devices = _devices(check, v["devices"], prefix, ports, memory) if v["devices"] else []

    if len(check.errors) != before:
        return None
    return PartitionConfig(
        index=index, name=name, memory=memory, image=image, kind=kind, builtin=builtin,
        image_path=image_path, autostart=v["autostart"], console_size=console, cmdline=cmdline,
        modules=modules, entry=entry, params=dict(v["params"]),
        host_address=host, vcpus=v["vcpus"], cpu=v["cpu"], cpus=placement["cpus"] if placement else None,
        ports=ports, trusted=trusted, restart=v["restart"],
        restart_limit=v["restart_limit"],
        slice_ms=v["slice_ms"] if v["slice_ms"] is not None else scheduler.slice_ms,
        module_names=list(table.get("modules", [])),
        policy=policy, policy_path=policy_path, python_failures=v["python_failures"],
        devices=devices, kernel=v["kernel"], initrd=v["initrd"],
        kernel_path=kernel_path, initrd_path=initrd_path)


def _linux_files(check: _Checker, table: dict[str, Any], v: dict[str, Any], prefix: str,
                 kind: str | None) -> tuple[Path | None, Path | None]:
    """`kernel` and `initrd`: resolved files for a linux partition, refused for any other."""
    if kind != "linux":
        for key in ("kernel", "initrd"):
            if key in table:
                check.error(prefix + key, table[key], "applies to linux partitions only "
                            "(kind = \"linux\")")
        return None, None
    if v["kernel"] is None:
        if "kernel" not in table:
            check.error(prefix + "kernel", "(missing)", "is required for kind = \"linux\": a "
                        "bzImage or a PVH vmlinux (`taipan images linux` fetches Debian's)")
        return None, None
    paths = []
    for key in ("kernel", "initrd"):
        if v[key] is None:
            paths.append(None)
            continue
        path = (check.path.parent / v[key]).resolve()
        if not path.is_file():
            hint = " (`taipan images linux` fetches Debian's)" if v[key].startswith("../build/") else ""
            check.error(prefix + key, v[key], f"no such file ({path}){hint}")
            path = None
        paths.append(path)
    return (paths[0], paths[1]) if paths[0] is not None else (None, None)



def _table(check: _Checker, data: dict[str, Any], section: schema.Section) -> dict[str, Any]:
    table = data.get(section.name, {})
    if not isinstance(table, dict):
        check.error(section.name, table, f"must be a table ({section.header})")
        table = {}
    return check.section(table, section, f"{section.name}.")


def _platform(check: _Checker, data: dict[str, Any]) -> PlatformConfig:
    v = _table(check, data, PLATFORM)
    memory = v["memory"]
    if memory is not None and memory < layout.PARTITIONS_BASE + MIN_MEMORY:
        check.error("platform.memory", data["platform"]["memory"],
                    f"must be more than {layout.PARTITIONS_BASE >> 20}M: partitions' memory "
                    f"begins at {layout.PARTITIONS_BASE:#x}")
        memory = None
    escape = v["console_escape"]
    if escape is not None and (not _ESCAPE.fullmatch(escape) or escape in _ESCAPE_TAKEN):
        check.error("platform.console_escape", escape,
                    "must be ^ then one of A-Z \\ ] ^ _ (Ctrl and that key), other than "
                    + " ".join(_ESCAPE_TAKEN) + " (editing, line-end and arrow keys)")
        escape = None
    defaults = PlatformConfig()
    scheduler = v["scheduler"]
    return PlatformConfig(memory=memory, cpus=v["cpus"] or defaults.cpus,
                          serial=v["serial"] or defaults.serial,
                          baud=v["baud"] or defaults.baud,
                          console_escape=escape or defaults.console_escape,
                          scheduler=scheduler,
                          scheduler_path=_python_file(check, "platform.scheduler", scheduler))


def _python_file(check: _Checker, key: str, value: str | None) -> Path | None:
    """A user module's file beside the TOML, resolved; an error unless it is a .py file that exists."""
    if value is None:
        return None
    path = (check.path.parent / value).resolve()
    if not value.endswith(".py"):
        check.error(key, value, "must be a Python file (.py)")
    elif not path.is_file():
        check.error(key, value, f"no such file ({path})")
    return path


def _place(check: _Checker, partitions: list[PartitionConfig], platform: PlatformConfig) -> None:
    """Give every partition a host address, or say which key keeps it from fitting."""
    top = MEMORY_TOP
    where = placement.MEMORY_TOP_TEXT
    if platform.memory is not None and platform.memory < top:
        top = platform.memory
        where = f"platform.memory ({schema.format_size(top)})"
    total = sum(p.memory for p in partitions)
    room = placement.room(top)
    if total > room:
        hole = ", outside the PCI hole below 4 GiB" if room < top - layout.PARTITIONS_BASE else ""
        check.error("partitions", f"{total >> 20}M in total",
                    f"partitions' memory must fit in {room >> 20}M "
                    f"(from {layout.PARTITIONS_BASE:#x} up to {where}{hole})")
        return
    requests = [(p.index, p.memory, p.host_address) for p in partitions]
    bases, problems = placement.place_ranges(requests, top, where)
    by_index = {p.index: p for p in partitions}
    for index, key, rule in problems:
        part = by_index[index]
        check.error(part.key(key), part.host_address if key == "host_address"
                    else schema.format_size(part.memory), rule)
    for part in partitions:
        part.host_base = bases.get(part.index)


def _windows(check: _Checker, items: list[Any], prefix: str) -> list[dict[str, Any]] | None:
    """A schedule's `windows`: inline tables of a partition name and a length in ms."""
    windows = []
    for number, item in enumerate(items):
        at = f"{prefix}windows[{number}]"
        if not isinstance(item, dict):
            check.error(at, item, "must be a table such as { partition = \"NAME\", ms = 10 }")
            continue
        check.unknown_keys(item, WINDOW_KEYS, at + ".")
        name, ms = item.get("partition"), item.get("ms")
        if name is None or ms is None:
            missing = "partition" if name is None else "ms"
            check.error(f"{at}.{missing}", "(missing)", "is required: a window is "
                        "{ partition = \"NAME\" or \"management\", ms = N }")
            continue
        if not isinstance(name, str):
            check.error(f"{at}.partition", name, f"must be a string, not {_type_word(name)}")
            continue
        if not isinstance(ms, int) or isinstance(ms, bool):
            check.error(f"{at}.ms", ms, f"must be an integer, not {_type_word(ms)}")
            continue
        windows.append({"partition": name, "ms": ms})
    return windows if len(windows) == len(items) else None


def _schedules(check: _Checker, data: dict[str, Any]) -> list[ScheduleConfig] | None:
    """The [[schedule]] tables; None when one of them is broken (the plan is not derived)."""
    tables = data.get(SCHEDULE.name, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        check.error(SCHEDULE.name, tables, f"must be an array of tables ({SCHEDULE.header})")
        return None
    schedules: list[ScheduleConfig] | None = []
    for number, table in enumerate(tables):
        prefix = f"{SCHEDULE.name}[{number}]."
        before = len(check.errors)
        v = check.section(table, SCHEDULE, prefix)
        windows = _windows(check, v["windows"], prefix) if v["windows"] is not None else None
        if len(check.errors) != before or windows is None:
            schedules = None
        elif schedules is not None:
            schedules.append(ScheduleConfig(v["cpu"], v["major_frame_ms"], windows))
    return schedules


def _plan(check: _Checker, platform: PlatformConfig, scheduler: SchedulerConfig,
          placements: list[dict[str, Any]], schedules: list[ScheduleConfig]
          ) -> list[dict[str, Any]]:
    """The per-CPU plan from hv/py/plan.py; its errors join the others."""
    plans, errors = plan.derive(
        platform.cpus, placements, [s.values() for s in schedules],
        {"management_ms": scheduler.management_ms,
         "management_min_percent": scheduler.management_min_percent})
    for key, value, rule in errors:
        check.error(key, value, rule)
    for window in plans[0]["windows"] if plans else []:
        if window[0] == plan.MANAGEMENT and plans[0]["kind"] == "round-robin":
            scheduler.management_ms = window[1] // 1000
    if scheduler.management_ms is None:
        scheduler.management_ms = plan.MANAGEMENT_MS_DEFAULT
    return plans


def _test_hooks(check: _Checker, data: dict[str, Any], allowed: bool,
                partitions: list[PartitionConfig | None]) -> None:
    """[test]: refused unless `allowed`; each hook names partitions, which it sets on them."""
    if "test" not in data:
        return
    if not allowed:
        check.errors.append(f"{check.path}: [test] holds test hooks ("
                            + ", ".join(schema.TEST.names) + ") for Taipan's own tests and "
                            "benchmarks; taipan build takes [test] only with --test-hooks")
        return
    v = _table(check, data, schema.TEST)
    by_name = {p.name: p for p in partitions if p is not None}
    for hook in schema.TEST.names:
        for number, name in enumerate(v[hook] or []):
            if not isinstance(name, str) or name not in by_name:
                check.error(f"test.{hook}[{number}]", name, "must name a partition")
            else:
                setattr(by_name[name], hook, True)


def validate(data: dict[str, Any], path: Path, test_hooks: bool = False) -> SystemConfig:
    """Check parsed TOML against the schema; ConfigError lists every problem.

    `test_hooks` lets a [test] table through (`taipan build --test-hooks`).
    """
    check = _Checker(path)
    check.unknown_keys(data, TOP_KEYS, "")
    platform = _platform(check, data)
    v = _table(check, data, SCHEDULER)
    defaults = SchedulerConfig()
    scheduler = SchedulerConfig(*(v[f.name] if v[f.name] is not None else getattr(defaults, f.name)
                                  for f in fields(SchedulerConfig)))
    schedules = _schedules(check, data)
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
    claims: list[tuple[int, str, Any, int, int]] = []
    placements: list[dict[str, Any] | None] = []
    partitions = [_partition(check, index, table, builtins, scheduler, claims, placements)
                  for index, table in enumerate(tables)]

    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        name = table.get("name")
        if isinstance(name, str) and name in seen:
            check.error(f"partitions[{index}].name", name,
                        f"duplicate name (also partitions[{seen[name]}].name)")
        elif isinstance(name, str):
            seen[name] = index

    for number, (index, key, item, first, last) in enumerate(claims):
        owner = next((c for c in claims[:number] if c[0] != index
                      and first <= c[4] and c[3] <= last), None)
        if owner is not None:
            check.error(key, item, f"already passed through to partitions[{owner[0]}] "
                        f"({owner[1]}); a port belongs to one partition at most")

    _test_hooks(check, data, test_hooks, partitions)
    valid = [p for p in partitions if p is not None]
    plans: list[dict[str, Any]] = []
    # The plan is derived when every key it reads is sound, even if other keys
    # are not, so its mistakes show in the same pass.
    if tables and schedules is not None and "platform.cpus" not in check.broken \
            and all(p is not None for p in placements):
        plans = _plan(check, platform, scheduler, [p for p in placements if p], schedules)
    for cpu_plan in plans:
        for owner, _us in cpu_plan["windows"]:
            if owner != plan.MANAGEMENT and partitions[owner] is not None:
                partitions[owner].home_cpu = cpu_plan["cpu"]

    if valid:
        _place(check, valid, platform)

    if check.errors:
        raise ConfigError(check.errors)
    return SystemConfig(path=path, partitions=valid, platform=platform, scheduler=scheduler,
                        schedules=schedules or [], plans=plans)


def load(path: Path | str, test_hooks: bool = False) -> SystemConfig:
    """Read and validate the system description at `path` ([test] only with `test_hooks`)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from error
    return validate(data, path, test_hooks)


def check(path: Path | str, test_hooks: bool = False) -> int:
    """`taipan check`: 0 if the description is valid, else print each error and return 2."""
    try:
        config = load(path, test_hooks)
    except ConfigError as error:
        for line in error.errors:
            print(line, file=sys.stderr)
        return 2
    print(f"{path}: {len(config.partitions)} partitions, valid")
    for line in config.plan_lines():
        print(f"  {line}")
    return 0
