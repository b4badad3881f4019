"""Interrupts on both vendors: a gcc-built kernel takes APIC timer (one-shot, periodic, TSC-deadline), IPI, NMI and UART interrupts in xAPIC and x2APIC mode, waits for them with HLT, and a halted vCPU costs nothing."""
from __future__ import annotations

import re
import time

import pytest
from conftest import ps_json, wait_ps
from test_partitions import PATIENCE, VENDORS, counters

pytestmark = pytest.mark.boot

CHECKS = [
    "xAPIC ID 0", "xAPIC version 0x14 with 6 LVT entries", "xAPIC timer counts down",
    "xAPIC one-shot fires after its count", "xAPIC one-shot current count 0 after firing", "xAPIC one-shot fires once",
    "xAPIC periodic timer keeps its period", "xAPIC self-IPI waits while IF=0", "xAPIC IRR holds the self-IPI",
    "xAPIC self-IPI delivered after STI", "xAPIC ISR clear after EOI", "xAPIC PPR follows TPR",
    "xAPIC TPR holds the IPI back", "xAPIC IPI taken once TPR drops", "xAPIC self-NMI delivered with IF=0",
    "CPUID offers x2APIC", "CPUID offers the TSC-deadline timer", "x2APIC ID 0", "x2APIC LDR derived from the ID",
    "x2APIC one-shot fires after its count", "x2APIC periodic timer keeps its period", "x2APIC self-IPI waits while IF=0",
    "x2APIC self-IPI delivered after STI", "x2APIC TPR holds the IPI back", "TSC-deadline timer fires at the deadline",
    "TSC_DEADLINE reads 0 after firing", "xAPIC SVR at its reset value after re-enabling",
    "CR8 writes TPR[7:4]", "CR8 reads TPR[7:4]", "CR8 0 clears TPR", "IOAPIC version 0x11 with 24 pins", "UART THR-empty interrupt when enabled", "UART IIR clear after reporting THR empty",
    "IOAPIC level pin: one interrupt, TMR set", "IOAPIC level pin: remote IRR until the EOI",
]
GP = [
    "rdmsr x2APIC ID in xAPIC mode", "wrmsr x2APIC ID (read-only)", "rdmsr x2APIC EOI (write-only)",
    "wrmsr x2APIC EOI with a nonzero value", "rdmsr x2APIC 0x831 (no ICR high in x2APIC)",
    "wrmsr x2APIC TPR with bits 63:32", "wrmsr APIC_BASE x2APIC to xAPIC directly", "mov cr8 with reserved bit 4",
]


def _log(console, name: str) -> str:
    return console.command(f"log {name} -n 300", timeout=120)


def _wait_log(console, name: str, pattern: str, vendor: str) -> str:
    deadline = time.monotonic() + PATIENCE[vendor]
    while True:
        log = _log(console, name)
        if re.search(pattern, log):
            return log
        row = ps_json(console)[name]
        assert row["state"] == "running", (row, log)
        assert time.monotonic() < deadline, f"{name} never printed {pattern!r}:\n{log}"
        time.sleep(1)


@pytest.mark.parametrize("vendor", VENDORS)
def test_gcc_kernel_takes_timer_ipi_nmi_and_uart_interrupts_and_a_halted_vcpu_costs_nothing(boot_config, vendor):
    console = boot_config(vendor, "virq")
    log = _wait_log(console, "virq", r"virq: \d+ of \d+ checks passed", vendor)
    for name in CHECKS:
        assert re.search(rf"virq: check {re.escape(name)}: .* ok", log), (name, log)
    for name in GP:
        assert f"virq: check {name}: vector=13 ok" in log, (name, log)
    assert "FAIL" not in log, log
    passed = re.search(r"virq: (\d+) of (\d+) checks passed", log)
    assert passed and passed.group(1) == passed.group(2), log

    # The receive interrupt, from a byte typed on the partition's console.
    _wait_log(console, "virq", r"virq: waiting for a byte", vendor)
    console.type("console virq\r")
    console.expect(r"console virq: the line is the partition's now")
    console.type("x")
    console.expect(r"virq: uart rx interrupt: byte=0x78 iir=0xc4 ok", timeout=PATIENCE[vendor])
    console.type("\x1d")
    console.expect("back at taipan>")
    console.wait_prompt()
    _wait_log(console, "virq", r"virq: halting with interrupts on and no source left", vendor)

    # Blocked in HLT with nothing to wake it: no CPU time, while the IF=0 spinner and hello run on.
    time.sleep(2)
    first = ps_json(console)
    hello = max(counters(console, "hello"))
    time.sleep(5)
    later = ps_json(console)
    assert later["virq"]["state"] == "running", later["virq"]
    assert later["virq"]["cpu_us"] - first["virq"]["cpu_us"] < 2000, (first["virq"], later["virq"])
    assert later["spin"]["cpu_us"] > first["spin"]["cpu_us"], (first["spin"], later["spin"])
    assert later["spin"]["state"] == "running", later["spin"]
    assert max(counters(console, "hello")) > hello, "hello stopped printing beside virq"
    assert int(later["virq"]["halts"]) > 0, later["virq"]
    # 2 x (1 one-shot + 20 periodic + 2 IPIs) + TSC-deadline + THR empty + receive, at least (NMIs are not counted).
    assert later["virq"]["interrupts"] >= 2 * 23 + 3, later["virq"]
    assert later["spin"]["interrupts"] == 0 and later["hello"]["interrupts"] == 0, later
    # The windows: an interrupt raised with IF=0 was taken at the window STI opened.
    assert int(later["virq"]["exits"].get("intr_window", 0)) >= 1, later["virq"]["exits"]
    assert wait_ps(console, lambda r: r["virq"]["state"] == "running", PATIENCE[vendor], "virq to stay running")
