"""Python device models that interrupt their guest through its own IOAPIC and answer MMIO: the config's `irq` and `mmio`, checked on the host and run on both vendors."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import config_path, ps_json
from tests.test_user_python import VENDORS, _json_line, _modules
from toolchain import config, ptable, user_modules

HELLO = '[[partitions]]\nname = "a"\nmemory = "16M"\nimage = "guest:hello"\n'
PATIENCE = {"amd": 90, "intel": 400}
CHECKS = [
    "edge pulse from a port write taken on vector 0x45, once", "edge pin: TMR clear",
    "held level taken on vector 0x45, once (lowered before the EOI)", "level pin: TMR set",
    "level pin: remote IRR until the EOI", "edge on a masked pin not delivered",
    "edge from the model's tick wakes HLT on vector 0x45",
]
MMIO = [
    ("load32 of the ID", "0xfed10000", "0x7a1a9a11"),
    ("load8", "0xfed10021", "0x20"),
    ("load16", "0xfed10042", "0x4240"),
    ("load64", "0xfed10088", "0x8888888888888880"),
    ("store64 reads back", "0xfed10100", "0x1122334455667788"),
    ("load32 of the stored 64", "0xfed10100", "0x55667788"),
    ("store32 of an immediate reads back", "0xfed10200", "0x12345678"),
    ("store8 at the page's last byte reads back", "0xfed10fff", "0xa5"),
]


def _errors(tmp_path: Path, capsys, devices: str) -> list[str]:
    (tmp_path / "d.py").write_text("class Device:\n    pass\n")
    path = tmp_path / "system.toml"
    path.write_text(HELLO + f"devices = [{devices}]\n")
    assert config.check(path) == 2
    return [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]


def test_irq_names_a_pin_of_its_own_ioapic_not_the_uarts_and_one_device_each(tmp_path: Path, capsys) -> None:
    assert _errors(tmp_path, capsys, '{ model = "d.py", ports = "0x510", irq = 24 }, '
                   '{ model = "d.py", ports = "0x511", irq = 4 }, '
                   '{ model = "d.py", ports = "0x512", irq = "5" }, '
                   '{ model = "d.py", ports = "0x513", irq = 5 }, '
                   '{ model = "d.py", ports = "0x514", irq = 5 }') == [
        "partitions[0].devices[0].irq = 0x18: must be an IOAPIC pin, 0 to 23",
        "partitions[0].devices[1].irq = 4: is the pin of the partition's virtual UART (IRQ 4)",
        'partitions[0].devices[2].irq = "5": must be an IOAPIC pin, 0 to 23',
        "partitions[0].devices[4].irq = 5: is already devices[3]'s pin"]


def test_mmio_takes_whole_pages_outside_memory_and_the_apic_pages(tmp_path: Path, capsys) -> None:
    assert _errors(tmp_path, capsys, '{ model = "d.py", mmio = "0xfed10000-0xfed10ffe" }, '
                   '{ model = "d.py", mmio = "0xfed10800-0xfed10fff" }, '
                   '{ model = "d.py", mmio = "0x800000-0x800fff" }, '
                   '{ model = "d.py", mmio = "0xfee00000-0xfee00fff" }, '
                   '{ model = "d.py", mmio = "0xfebff000-0xfec00fff" }, '
                   '{ model = "d.py", mmio = "0x1000000000-0x1000000fff" }, '
                   '{ model = "d.py", mmio = 4096 }, '
                   '{ model = "d.py", mmio = "0xfed10000-0xfed11fff" }, '
                   '{ model = "d.py", mmio = "0xfed11000-0xfed11fff" }, '
                   '{ model = "d.py", mmio = "0xfed20000-0xfed20fff", ports = "0x510" }') == [
        'partitions[0].devices[0].mmio = "0xfed10000-0xfed10ffe": must be whole 4 KiB pages: the first '
        "address page-aligned, the last one byte before a page boundary",
        'partitions[0].devices[1].mmio = "0xfed10800-0xfed10fff": must be whole 4 KiB pages: the first '
        "address page-aligned, the last one byte before a page boundary",
        'partitions[0].devices[2].mmio = "0x800000-0x800fff": overlaps the partition\'s memory (0x0-0xffffff)',
        'partitions[0].devices[3].mmio = "0xfee00000-0xfee00fff": overlaps the virtual local APIC\'s page',
        'partitions[0].devices[4].mmio = "0xfebff000-0xfec00fff": overlaps the virtual IOAPIC\'s page',
        'partitions[0].devices[5].mmio = "0x1000000000-0x1000000fff": must lie below 0x1000000000 (64 GiB), '
        "where every guest can address it",
        'partitions[0].devices[6].mmio = 0x1000: must be a range string such as "0xfed10000-0xfed10fff"',
        'partitions[0].devices[8].mmio = "0xfed11000-0xfed11fff": overlaps this partition\'s devices[7]',
        "partitions[0].devices[9] = {'model': 'd.py', 'mmio': '0xfed20000-0xfed20fff', 'ports': '0x510'}: "
        'must be a table { model = "FILE.py", ports = "0xA-0xB" or mmio = "0xA-0xB", irq = N }']


def test_the_table_carries_each_devices_pin_and_mmio_range() -> None:
    path = config_path("devirq")
    table = ptable.build_table(config.load(path), modules=_modules(path))
    assert [(m["kind"], m["owner"], m["ports"], m["irq"], m["mmio"]) for m in table.modules()] == [
        ("device", 0, (0x510, 0x510), 5, (0, 0)),
        ("device", 0, (0, 0), user_modules.NO_IRQ, (0xFED10000, 0xFED10FFF))]
    assert ('devices = [{ model = "devices/irqdev.py", ports = "0x510", irq = 5 }, '
            '{ model = "devices/regs.py", mmio = "0xfed10000-0xfed10fff" }]') in table.config_text()


def test_the_metal_reader_finds_pin_and_mmio_where_the_table_puts_them() -> None:
    source = (Path(__file__).resolve().parent.parent / "hv" / "py" / "usermods.py").read_text()

    def constant(name: str) -> int:
        return int(re.search(rf"^{name} = (\w+)$", source, re.MULTILINE).group(1), 0)

    assert constant("MODULE_IRQ_AT") == ptable.offsetof("pt_module", "irq")
    assert constant("MODULE_MMIO_AT") == ptable.offsetof("pt_module", "first_mmio")
    assert constant("MODULE_MMIO_AT") + 8 == ptable.offsetof("pt_module", "last_mmio")
    assert constant("NO_IRQ") == user_modules.NO_IRQ


def _log_until(console, pattern: str, vendor: str) -> str:
    deadline = time.monotonic() + PATIENCE[vendor]
    while True:
        log = console.command("log devirq -n 60", timeout=120)
        if re.search(pattern, log):
            return log
        assert time.monotonic() < deadline, f"devirq never printed {pattern!r}:\n{log}"
        time.sleep(1)


@pytest.mark.boot
@pytest.mark.parametrize("vendor", VENDORS)
def test_device_models_interrupt_their_own_guest_and_answer_its_mmio(boot_config, vendor) -> None:
    console = boot_config(vendor, "devirq")
    log = _log_until(console, r"devirq: \d+ of \d+ checks passed", vendor)
    for name in CHECKS:
        assert re.search(rf"devirq: check {re.escape(name)}: .* ok", log), (name, log)
    for what, addr, value in MMIO:
        assert f"devirq: mmio {what} at {addr} = {value} ok" in log, (what, log)
    assert "FAIL" not in log, log
    passed = re.search(r"devirq: (\d+) of (\d+) checks passed", log)
    assert passed and passed.group(1) == passed.group(2), log
    rows = ps_json(console)
    # It ended itself with code 0; the pin and the page were its own: hello took no interrupt.
    assert rows["devirq"]["state"] == "exited", rows["devirq"]
    # One exit per access: every load above and the three stores, each counted as "mmio".
    assert rows["devirq"]["exits"].get("mmio", 0) == len(MMIO) + 3, rows["devirq"]["exits"]
    assert rows["hello"]["interrupts"] == 0 and rows["hello"]["state"] == "running", rows["hello"]
    listed = _json_line(console.command("devices --json"))["modules"]
    assert [(m["path"], m["ports"], m["mmio"], m["irq"], m["loaded"], m["failures"]) for m in listed] == [
        ("devices/irqdev.py", [0x510, 0x510], None, 5, True, 0),
        ("devices/regs.py", None, [0xFED10000, 0xFED10FFF], None, True, 0)]


def test_the_line_levels_python_passes_are_the_ones_c_takes() -> None:
    root = Path(__file__).resolve().parent.parent
    enum = re.search(r"enum vioapic_drive \{([^}]*)\}", (root / "hv" / "vlapic.h").read_text()).group(1)
    names = [n.strip() for n in enum.split(",")]
    source = (root / "hv" / "py" / "irqline.py").read_text()
    assert re.search(r"^LOW, HIGH, PULSE = 0, 1, 2", source, re.MULTILINE)
    assert names == ["VIOAPIC_LOW", "VIOAPIC_HIGH", "VIOAPIC_PULSE"]
