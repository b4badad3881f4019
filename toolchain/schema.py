"""The system description's schema: every key's type, default, allowed values and meaning, and what is rendered from it (docs/config.md, canonical TOML)."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from toolchain import acpi_tables, layout

# A key's `type`, as the docs and the type-check errors spell it.
TYPES = {
    "string": "string", "integer": "integer", "bool": "bool", "size": "size",
    "address": "integer", "paths": "array of strings", "ports": "array of ports",
    "table": "table", "cpus": "array of integers", "windows": "array of tables",
    "names": "array of partition names", "devices": "array of tables",
}


@dataclass(frozen=True)
class Key:
    name: str
    type: str                  # a key of TYPES
    doc: str                   # one line
    default: Any = None        # the value when absent (sizes as strings); None: required or unset
    required: bool = False
    required_hint: str = ""    # appended to "is required" when it is missing
    choices: tuple[Any, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    rule: str = ""             # the error's words when choices/minimum/maximum are broken
    default_doc: str = ""      # the docs' default column when `default` is not a literal
    hook: bool = False         # a test or bench hook, not for production systems

    def rule_text(self) -> str:
        if self.rule:
            return self.rule
        if self.choices:
            return "must be one of " + ", ".join(str(c) for c in self.choices)
        if self.maximum is None:
            return f"must be at least {self.minimum}"
        return f"must be from {self.minimum} to {self.maximum}"


@dataclass(frozen=True)
class Section:
    name: str          # the TOML key: "platform", "scheduler", "partitions"
    array: bool        # [[partitions]]: an array of tables
    doc: str
    keys: tuple[Key, ...]

    @property
    def header(self) -> str:
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)

    def key(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)


SERIAL_PORTS = {"com1": 0x3F8}
# The C core programs its UART for this rate and no other (hv/uart16550.c).
UART_BAUD = 115200
RESTARTS = ("never", "on-fault", "always")
KINDS = ("raw", "multiboot", "linux")
SLICE_MS_MAX = 1000
# The partition table holds this many passed-through port ranges per partition.
PORT_RANGES_MAX = 8
# Never passed through: the hypervisor's own UART (also where each guest's
# virtual UART sits), and 0xf4, where a guest writes its exit code for the
# hypervisor; passed through, it would end the whole emulated machine.
RESERVED_PORTS = ((0x3F8, 0x3FF, "the hypervisor's UART (COM1), each guest's virtual UART"),
                  (0xF4, 0xF4, "the port a guest ends itself through (its exit code)"))
# Passed through only to a partition marked `trusted`: each reaches the whole machine.
# With no IOMMU, PCI configuration space gives bus-master DMA over the hypervisor; the
# others reset the machine or take the host's timer and interrupts (issue 10, finding 4).
PLATFORM_PORTS = ((0x20, 0x21, "the master PIC: unmasking IRQ0 sends the timer into the host"),
                  (0x40, 0x43, "the PIT, the timer the host calibrates against"),
                  (0x60, 0x64, "the keyboard controller: 0xfe to port 0x64 resets the machine"),
                  (0x70, 0x71, "the RTC and CMOS, the host's wall clock"),
                  (0x92, 0x92, "system control port A: bit 0 resets the machine"),
                  (0xA0, 0xA1, "the slave PIC"),
                  (0xCF8, 0xCFF, "PCI configuration space (0xcf9 resets the machine; with no "
                                 "IOMMU it gives bus-master DMA over the hypervisor)"))
# A device model's `irq`: a pin of the partition's virtual IOAPIC (hv/vioapic.c), but
# never the pin its virtual UART drives.
IOAPIC_PINS = acpi_tables.IOAPIC_PINS
UART_IRQ = 4
# A device model's `mmio`: whole 4 KiB pages (an access traps by page) below 64 GiB,
# 2^36, the narrowest physical address width of a 64-bit x86 CPU, so any guest's page
# tables reach it; never its RAM or the pages its virtual APIC and IOAPIC answer.
MMIO_PAGE = 0x1000
MMIO_LIMIT = 1 << 36
RESERVED_MMIO = ((acpi_tables.LAPIC_BASE, acpi_tables.LAPIC_BASE + MMIO_PAGE - 1, "the virtual local APIC's page"),
                 (acpi_tables.IOAPIC_BASE, acpi_tables.IOAPIC_BASE + MMIO_PAGE - 1, "the virtual IOAPIC's page"))
RESTART_LIMIT_MAX = 1000
# The machine's CPUs the table holds a plan for (PT_CPUS_MAX).
CPUS_MAX = 16
MAJOR_FRAME_MS_MAX = 10000

PLATFORM = Section("platform", False, (
    "The machine Taipan runs on. Optional: a key left out is not checked (memory) or "
    "takes its default. The hypervisor also checks RAM at boot: a partition "
    "whose memory the firmware does not report as usable RAM is marked unusable."), (
    Key("memory", "size", "RAM the machine has; every partition must end below it",
        default_doc="not checked (512 GiB, the most Taipan maps, is the limit)"),
    Key("cpus", "integer", "CPUs the machine has, numbered 0 to cpus - 1; CPU 0 runs "
        "management (the console) and is shared", default=1, minimum=1, maximum=CPUS_MAX),
    Key("serial", "string", "the serial port the hypervisor owns for its shell and every "
        "console: `com1` (I/O 0x3f8-0x3ff) only today", default="com1",
        choices=tuple(SERIAL_PORTS),
        rule="must be \"com1\": the hypervisor drives COM1 (I/O 0x3f8) only today"),
    Key("baud", "integer", "the serial line's speed in bits per second; the C core's UART "
        "runs at 115200 only today", default=UART_BAUD, choices=(UART_BAUD,),
        rule=f"must be {UART_BAUD}: the hypervisor's UART is fixed at {UART_BAUD} baud today"),
    Key("console_escape", "string", "the key that ends `console NAME` and returns to "
        "`taipan> `, as a caret form: `^]` is Ctrl-]", default="^]"),
    Key("scheduler", "string", "a Python file (beside the TOML) whose `on_tick(now_ms)` may change "
        "the CPUs' plans while they run, by the rules `sched set` obeys (docs/python-api.md)",
        default_doc="none"),
))

SCHEDULER = Section("scheduler", False, (
    "How partitions share a CPU that has no `[[schedule]]` (round robin): each runnable "
    "partition in turn for its slice, and on CPU 0 management first for its own."), (
    Key("slice_ms", "integer", "the time slice of a partition that sets none, in "
        "milliseconds", default=10, minimum=1, maximum=SLICE_MS_MAX),
    Key("management_ms", "integer", "management's slice (console, manager, policy) in "
        "each round on a round-robin CPU 0, in milliseconds", minimum=1,
        maximum=SLICE_MS_MAX, default_doc="`10`, or as much more as `management_min_percent` "
        "needs beside the slices on CPU 0"),
    Key("management_min_percent", "integer", "the share of CPU 0 management is "
        "guaranteed: a round-robin CPU 0 gives it `management_ms` of every round, a cyclic "
        "one its `\"management\"` windows of every frame", default=10, minimum=0,
        maximum=100),
    Key("upcall_timeout_ms", "integer", "how long a partition's exit may wait for policy's "
        "answer (an up-call to MicroPython on CPU 0) before its CPU stops it with the reason",
        default=2000, minimum=10, maximum=60000),
    Key("python_budget_ms", "integer", "how long one call into a user's Python module "
        "(`policy`) may run before it is stopped and counted as a failure",
        default=100, minimum=1, maximum=10000),
))

PARTITIONS = Section("partitions", True, (
    "One table per partition, at least one and at most "
    f"{layout.PARTITIONS_MAX}. Relative paths (images, modules) are relative to the "
    "configuration file."), (
    Key("name", "string", "`[a-z0-9_-]{1,31}`, unique; the name the console commands take",
        required=True),
    Key("memory", "size", "its RAM, e.g. `\"16M\"`; at least 2M, a multiple of 2M (nested "
        "paging maps 2 MiB pages)", required=True, required_hint=", a size such as \"16M\""),
    Key("host_address", "address", "a fixed host-physical address for its memory: 2 MiB "
        f"aligned, at or above {layout.PARTITIONS_BASE:#x}, overlapping no other partition",
        default_doc=f"placed from {layout.PARTITIONS_BASE:#x} up, in file order"),
    Key("vcpus", "integer", "its vCPUs; Taipan runs one vCPU per partition today",
        default=1, minimum=1, maximum=1,
        rule="must be 1: Taipan runs one vCPU per partition today"),
    Key("cpu", "integer", "a dedicated CPU: it runs this partition alone, with no time "
        "slicing and no management; never CPU 0", minimum=0,
        default_doc="none (shared: see `cpus`)"),
    Key("cpus", "cpus", "the host CPUs it shares, one per vCPU (so one entry today), e.g. "
        "`[0]`: round robin there, or the windows of that CPU's `[[schedule]]`",
        default_doc="`[0]`, or the CPU whose `[[schedule]]` names it"),
    Key("image", "string", "`\"guest:NAME\"` (a built-in guest, see guests/README.md) or a "
        "file path; every kind but `linux` (which takes `kernel`)",
        default_doc="required, except for `kind = \"linux\"`"),
    Key("kind", "string", "`\"raw\"` (bytes copied to `entry`, started in 64-bit mode), "
        "`\"multiboot\"` (a multiboot1 ELF or a.out-kludge kernel) or `\"linux\"` (a Linux "
        "kernel booted by its own protocol, docs/linux.md); required for file images",
        choices=KINDS, default_doc="the built-in guest's"),
    Key("kernel", "string", "linux only: a bzImage (64-bit boot protocol, 2.12 or later) or an "
        "ELF `vmlinux` with a PVH entry, relative to the config file",
        default_doc="required for `kind = \"linux\"`"),
    Key("initrd", "string", "linux only: the initial RAM disk, loaded at the top of its memory",
        default_doc="none"),
    Key("entry", "address", "raw file images only: the guest-physical load and entry "
        "address", default=0x100000),
    Key("cmdline", "string", "multiboot and linux: the kernel's command line (under 1024 bytes)",
        default=""),
    Key("modules", "paths", "multiboot only: module files, loaded page-aligned after the "
        "kernel", default=[]),
    Key("ports", "ports", "I/O ports passed through (no VM exit): integers or `\"0xA-0xB\"` "
        "ranges; never 0x3f8-0x3ff (the UART) or 0xf4 (the exit port), never another "
        "partition's port", default=[]),
    Key("trusted", "string", "the name of the key under which this partition is trusted with "
        "the platform's own ports (PCI configuration space, reset ports, PIC, PIT, RTC); without "
        "it `ports` may not name them", default=""),
    Key("console_size", "size", "its console ring (output kept while nobody is attached); a "
        "power of two, 1K to 1M", default="16K"),
    Key("autostart", "bool", "start at boot", default=True),
    Key("restart", "string", "what the manager does when it stops by itself: `never`, "
        "`on-fault` (after a fault) or `always` (after a fault or an exit)",
        default="never", choices=RESTARTS),
    Key("restart_limit", "integer", "restarts the policy may make before the partition "
        "stays stopped", default=3, minimum=0, maximum=RESTART_LIMIT_MAX),
    Key("slice_ms", "integer", "its time slice in milliseconds", minimum=1,
        maximum=SLICE_MS_MAX, default_doc="`[scheduler] slice_ms`"),
    Key("params", "table", "built-in guests only: keyword parameters of the guest's builder",
        default={}),
    Key("policy", "string", "a Python file (beside the TOML) that answers the exits the C fast "
        "path hands up: its `on_io`, `on_msr`, `on_cpuid`... (docs/python-api.md); compiled "
        "by mpy-cross and signed into the table with its sha256", default_doc="none"),
    Key("devices", "devices", "Python device models (docs/python-api.md), each `{ model = "
        "\"devices/watchdog.py\", ports = \"0x510-0x51f\" }`: the guest's IN and OUT there go "
        "to the model's `Device`; ports as for `ports`, never also passed through. Instead of "
        "`ports`, `mmio = \"0xfed10000-0xfed10fff\"`: the guest's loads and stores there go to "
        "it; whole 4 KiB pages below 64 GiB, outside the partition's memory and the APIC "
        "(0xfee00000) and IOAPIC (0xfec00000) pages, no two devices' overlapping. `irq = 5`: "
        "the IOAPIC pin (0-23, not the UART's 4, one device each) the model raises "
        "(docs/interrupts.md)", default=[]),
    Key("python_failures", "integer", "failures of its `policy` (an exception, MemoryError, "
        "a run past `[scheduler] python_budget_ms`) before the partition is stopped with "
        "the reason", default=3, minimum=1, maximum=1000),
))

SCHEDULE = Section("schedule", True, (
    "Optional, one table per cyclic CPU: a major frame of fixed windows that repeats, "
    "in the style of ARINC 653. Windows run one after another from the frame's start, "
    "so they never overlap; the rest of the frame idles. A partition named in a window "
    "runs on that CPU (its `cpus` absent or `[cpu]`). CPU 0's schedule must give "
    "`\"management\"` at least `[scheduler] management_min_percent` of the frame."), (
    Key("cpu", "integer", "the CPU this schedule is for; one schedule per CPU, never a "
        "dedicated one", required=True, minimum=0),
    Key("major_frame_ms", "integer", "the frame's length in milliseconds; the windows "
        "summed must fit in it", required=True, minimum=1, maximum=MAJOR_FRAME_MS_MAX),
    Key("windows", "windows", "the windows in order, each `{ partition = \"NAME\", ms = N }`; "
        "`partition = \"management\"` is the console's window (CPU 0 only); `ms` at least 1",
        required=True),
))

SECTIONS: tuple[Section, ...] = (PLATFORM, SCHEDULER, PARTITIONS, SCHEDULE)

# Hooks for Taipan's own tests and benchmarks, kept out of the user's way: the
# toolchain takes [test] only from `taipan build --test-hooks`, and
# docs/config.md, rendered from SECTIONS, leaves it out.
TEST = Section("test", False, (
    "Test hooks, accepted only with `--test-hooks`; each names the partitions it "
    "applies to."), (
    Key("inject_entry_failure", "names", "boot in long mode without CR4.PAE, which VM "
        "entry refuses (a failed entry must stop only that partition)", default=[], hook=True),
    Key("cpuid_upcall", "names", "every CPUID exit goes up to MicroPython policy instead "
        "of the C fast path (scripts/bench times both paths)", default=[], hook=True),
))


# -- canonical TOML ----------------------------------------------------------

def format_size(size: int) -> str:
    """The shortest size string for `size`: 16M, 1G, 512K."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size // 1024}K"


def _string(text: str) -> str:
    # json's escapes are TOML's basic-string escapes; ensure_ascii keeps the
    # text ASCII so MicroPython's str takes it as is.
    return json.dumps(text, ensure_ascii=True)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_bare(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _bare(key: str) -> str:
    ok = key and all(c.isalnum() and c.isascii() or c in "_-" for c in key)
    return key if ok else _string(key)


def _render_value(key: Key, value: Any) -> str:
    if key.type == "size":
        return _string(format_size(value))
    if key.type == "address":
        return f"{value:#x}"
    if key.type == "ports":
        items = [f"{lo:#x}" if lo == hi else _string(f"{lo:#x}-{hi:#x}") for lo, hi in value]
        return "[" + ", ".join(items) + "]"
    return toml_value(value)


def render(values: dict[str, Any]) -> str:
    """Canonical TOML: sections and keys in schema order, one `key = value` a line.

    `values` maps section names to a dict (or, for [[partitions]], a list of
    dicts) of validated values; a None value is left out (unset). One key a
    line keeps the text searchable by the shell without a TOML parser.
    """
    lines = ["# The active configuration, as validated and filled in by the toolchain."]
    for section in (*SECTIONS, TEST):
        tables = values.get(section.name)
        if tables is None:
            continue
        for table in tables if section.array else [tables]:
            lines += ["", section.header]
            for key in section.keys:
                value = table.get(key.name)
                if value is not None:
                    lines.append(f"{key.name} = {_render_value(key, value)}")
    return "\n".join(lines) + "\n"


# -- docs/config.md ------------------------------------------------------------

_INTRO = """\
# The system description (configuration reference)

<!-- generated by `python -m toolchain.schema` from toolchain/schema.py; do not edit.
     tests/test_schema.py fails when this file and the schema disagree. -->

A Taipan system is one TOML file: the machine (`[platform]`), the scheduler
(`[scheduler]`), the partitions (`[[partitions]]`) and, optionally, cyclic
schedules (`[[schedule]]`). The toolchain validates it,
lays out and proves the partitions' memory, and turns it into the signed
partition table linked into the hypervisor image; nothing is decided at run time.

    taipan check FILE            # validate only
    taipan build --config FILE   # validate, then build build/taipan.elf

Every mistake is reported at once, one line each, naming the file, the key path,
the bad value and the rule, and the exit status is 2 with nothing written:

    configs/my.toml: partitions[1].memory = "16MB": must be a size: digits then K, M or G, such as "16M"
    configs/my.toml: partitions[0].autostrat = false: unknown key; did you mean 'autostart'? (valid: ...)

Sizes are strings of digits and a unit: `"512K"`, `"16M"`, `"1G"`. Integers may be
written in hex (`0x8000000`).

The hypervisor keeps the configuration it was built from: the console's `config`
command prints it as canonical TOML (every key in the order below, defaults filled
in, each partition's `kind` and placed `host_address` written out, one `key = value`
a line), and the Python side reads it with `hv.config_text()`. Per partition,
`hv.part_info(i)` gives the run-time keys from the table: `restart` (str),
`restart_limit`, `slice_us` (`slice_ms` x 1000), `vcpus` and `cpu` (its home CPU)
(ints), `cpus` (a list of host CPUs, `[cpu]` today), and `ports`, a list holding an
int for each single port and a `(first, last)` tuple for each range.
"""

_NOTES = """\
## Rules across keys

- Names are unique.
- Partitions' memory lies between {base} and 512 GiB, and below `[platform] memory`
  when that is given; fixed `host_address` ranges may not overlap, and the other
  partitions are placed in file order into the gaps, each 2 MiB aligned (1 GiB
  aligned from 1 GiB up, so nested paging maps them with 1 GiB pages), never in
  the PCI hole from 2 GiB to 4 GiB. At boot the hypervisor checks each range
  against the firmware's memory map and marks a partition whose memory is not
  usable RAM there unusable.
- A port is passed through to one partition at most; at most {ranges} ranges per
  partition after adjacent ports merge. The hypervisor's UART (0x3f8-0x3ff, where
  each guest finds its virtual UART) and port 0xf4 (a guest writes its exit code
  there) always stay intercepted.
- `kind = "raw"` refuses an ELF file (convert it with `objcopy -O binary`, or use
  `kind = "multiboot"`); `kind = "multiboot"` needs a multiboot1 header in the
  first 8 KiB and, without the header's a.out-kludge addresses, an ELF32 file.
- `cmdline` and `modules` apply to multiboot partitions, `entry` to raw file
  images, `params` to built-in guests.
- `console_escape` is `^` and one of `A`-`Z`, `\\`, `]`, `^`, `_`, except the keys
  a terminal already uses for editing and line ends (`^H`, `^I`, `^J`, `^M`) and
  `^[` (Escape, which starts every arrow key's sequence).

## Where partitions run: the plan

Each CPU gets a plan, derived by `hv/py/plan.py`. The same module, frozen into
the image, checks a plan changed at run time by the console's `sched set`
(`plan.check_change`): the rules below that apply to a plan, and on top of them a
dedicated CPU stays dedicated to its partition, a shared CPU stays shared, and no
partition moves to another CPU; slices, windows, frames and round-robin or cyclic
may change. The kinds:

- **dedicated**: a partition with `cpu = K` runs alone on CPU K, with no time
  slicing;
- **cyclic**: a CPU with a `[[schedule]]` runs its windows in order from the start
  of each major frame and idles for the rest of it;
- **round-robin**: any other CPU runs the partitions whose `cpus` name it, each for
  its `slice_ms`, in file order; on CPU 0 management comes first, for
  `[scheduler] management_ms`;
- **idle**: a CPU nothing runs on halts.

A partition that sets neither `cpu` nor `cpus` shares CPU 0 (or the CPU whose
`[[schedule]]` names it), so a configuration from before CPUs were planned keeps
its meaning. The rules, each reported with its key:

- every CPU named (`cpu`, `cpus`, `[[schedule]] cpu`) is below `[platform] cpus`;
- a dedicated CPU is claimed once: by no other partition's `cpu` or `cpus`, and
  has no `[[schedule]]`; CPU 0 is never dedicated (management runs there);
- a partition gives `cpu` or `cpus`, not both, and `cpus` has one entry per vCPU;
- one `[[schedule]]` per CPU; its windows last at least 1 ms each, name known
  partitions (or `"management"`, on CPU 0 only), and summed fit in
  `major_frame_ms`; a partition's windows are all on one CPU, where its `cpus`
  (absent or `[cpu]`) puts it;
- every partition has time somewhere: `cpus = [k]` on a cyclic CPU k needs a
  window there;
- management has time on CPU 0: a cyclic CPU 0 has a `"management"` window, and
  management's share of CPU 0 is at least `management_min_percent`: on a
  round-robin CPU 0 that is `management_ms / (management_ms + the slices on CPU
  0)`, on a cyclic one its windows over the frame.

`taipan check FILE` prints the plan it derived, one line per CPU, e.g.:

    configs/smp.toml: 4 partitions, valid
      cpu 0: round-robin, round 20 ms: management 10 ms, shared 10 ms; management 50% of CPU 0
      cpu 1: dedicated: hello1

## Restart policy

When a partition stops by itself, the manager looks at its `restart`: `never`
leaves it stopped (`faulted` or `exited`); `on-fault` restarts it after a fault;
`always` after a fault or an exit. After `restart_limit` such restarts it stays
stopped. Each restart waits first: 100 ms, doubled with each restart in a row, at most
5 s (`restart` or `start` from the console starts it at once and the count again), so a
guest that dies at once costs one full-memory clear a back-off, not a storm of them.

## Examples

[configs/README.md](../configs/README.md) lists the example systems, one per
guest kind; every one of them is built by tests/test_schema.py.
"""


def _default_text(key: Key) -> str:
    if key.required:
        return "required"
    if key.default_doc:
        return key.default_doc
    if key.type == "address":
        return f"`{key.default:#x}`"
    return f"`{toml_value(key.default)}`"


def _allowed_text(key: Key) -> str:
    if key.choices:
        return ", ".join(f"`{toml_value(c)}`" for c in key.choices)
    if key.minimum is not None and key.minimum == key.maximum:
        return f"`{key.minimum}` (today)"
    if key.minimum is not None:
        return f"{key.minimum} to {key.maximum}" if key.maximum is not None else f">= {key.minimum}"
    return ""


def markdown() -> str:
    """docs/config.md, rendered from SECTIONS."""
    out = [_INTRO]
    for section in SECTIONS:
        out += [f"## `{section.header}`", "", section.doc, "",
                "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key in section.keys:
            meaning = key.doc.replace("|", "\\|")
            out.append(f"| `{key.name}` | {TYPES[key.type]} | {_default_text(key)} | "
                       f"{_allowed_text(key)} | {meaning} |")
        out.append("")
    out.append(_NOTES.format(base=f"{layout.PARTITIONS_BASE:#x}", ranges=PORT_RANGES_MAX))
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown())
