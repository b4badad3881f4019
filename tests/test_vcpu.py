"""A CPU that behaves as the manuals say, on both vendors: a gcc-built kernel enters IA-32e mode itself, bad CR/MSR/XCR0 writes get #GP, FPU state stays per vCPU."""
from __future__ import annotations

import re
import time

import pytest
from conftest import ps_json, wait_ps
from test_partitions import PATIENCE, VENDORS, counters

pytestmark = pytest.mark.boot


def wait_for(console, predicate, vendor: str, what: str) -> dict[str, dict]:
    return wait_ps(console, predicate, PATIENCE[vendor], what)


def ended(row: dict) -> bool:
    return row["state"] not in ("running", "created")


def _log(console, name: str) -> str:
    return console.command(f"log {name} -n 200", timeout=120)


@pytest.mark.parametrize("vendor", VENDORS)
def test_gcc_kernel_enters_long_mode_itself_and_reads_efer_lma(boot_config, vendor):
    console = boot_config(vendor, "longmode")
    rows = wait_for(console, lambda r: ended(r["longmode"]), vendor, "longmode to end")
    log = _log(console, "longmode")
    assert re.search(r"longmode: in 64-bit mode, EFER=0x5\d\d LMA=1", log), log
    assert "FAIL" not in log, log
    passed = re.search(r"longmode: (\d+) of (\d+) checks passed", log)
    assert passed and passed.group(1) == passed.group(2) and int(passed.group(2)) >= 60, log
    assert (rows["longmode"]["state"], rows["longmode"]["exit_code"]) == ("exited", 0), log
    # The guest's own trip out of IA-32e mode and back.
    assert "EFER with paging off outside IA-32e mode: LME set, LMA clear: efer=0x100 ok" in log
    assert "EFER.LMA again after re-entering IA-32e mode" in log
    # Its CR0/CR4 writes were emulated (VT-x: masks and shadows; SVM: intercepts), none stopped it.
    assert int(rows["longmode"]["exits"].get("cr_write", 0)) >= 5, rows
    if vendor == "intel":
        assert int(rows["longmode"]["exits"].get("xsetbv", 0)) >= 5, rows
    before = max(counters(console, "hello"))
    deadline = time.monotonic() + PATIENCE[vendor]
    while max(counters(console, "hello")) <= before:
        assert time.monotonic() < deadline, "hello stopped printing beside longmode"
        time.sleep(0.5)


@pytest.mark.parametrize("vendor", VENDORS)
def test_reserved_cr_msr_and_xcr0_writes_and_unknown_msrs_give_the_guest_gp(boot_config, vendor):
    console = boot_config(vendor, "longmode")
    wait_for(console, lambda r: ended(r["longmode"]), vendor, "longmode to end")
    log = _log(console, "longmode")
    gp = [
        "rdmsr of an MSR that does not exist (0x2)", "wrmsr of an MSR that does not exist (0xc0001234)",
        "rdmsr IA32_VMX_BASIC (no VMX offered)", "wrmsr EFER with reserved bit 2", "wrmsr EFER.SVME",
        "mov cr4 with reserved bit 28", "mov cr4 setting VMXE", "mov cr0 with bit 32", "mov cr0 with NW but not CD",
        "xsetbv 0 (x87 clear)", "xsetbv 0x5 (AVX without SSE)", "xsetbv bit 63", "xsetbv XCR1",
    ]
    gp += (["rdmsr IA32_FEATURE_CONTROL on AMD", "wrmsr VM_HSAVE_PA on AMD (no SVM offered)"] if vendor == "amd"
           else ["rdmsr VM_CR on Intel", "rdmsr VM_HSAVE_PA on Intel"])
    for name in gp:
        assert f"longmode: check {name}: vector=13 ok" in log, (name, log)
    assert "longmode: check mov cr0 clearing NE: vector=-1 ok" in log
    assert "longmode: check CR0.NE reads as the guest wrote it" in log
    assert "CPUID.1:ECX.OSXSAVE follows CR4.OSXSAVE: bit=0x1 ok" in log
    assert "CPUID.1:EDX.APIC follows APIC_BASE.EN: bit=0x0 ok" in log


@pytest.mark.parametrize("system", ["fpu", "fpu-smp"])
@pytest.mark.parametrize("vendor", VENDORS)
def test_fpu_state_and_xcr0_stay_per_vcpu_and_the_host_keeps_its_mxcsr(boot_config, vendor, system):
    # fpu: both partitions share CPU 0; fpu-smp: the setter runs on an AP, whose CR4.OSXSAVE is its own.
    console = boot_config(vendor, system)
    # Finding 1: the text ps formats CPU seconds with floats ("%.2fs"), so the host's SSE code runs
    # while the setter's MXCSR = 0 would unmask every SIMD exception; the console must keep answering.
    deadline = time.monotonic() + PATIENCE[vendor]
    while "xcr0-set: xcr0=" not in console.command("log setter -n 1", timeout=120):
        assert time.monotonic() < deadline, "the setter never reported"
        time.sleep(0.5)
    for _ in range(3):
        assert re.search(r"setter\s+\S+.*\d+\.\d\ds", console.command("ps", timeout=120)), "ps lost its CPU times"
    rows = wait_for(console, lambda r: all(ended(r[n]) for n in ("setter", "probe")),
                    vendor, "both FPU partitions to end")
    setter, probe = _log(console, "setter"), _log(console, "probe")
    assert len(re.findall(r"xcr0-set: xcr0=0x[37] xmm0=0x5a5a5a5a12345678 mxcsr=0x0 ok", setter)) == 8, setter
    # Finding 13: XCR0 (and XMM0, MXCSR) never leak from the neighbour.
    assert len(re.findall(r"xcr0-probe: xcr0=0x1 xmm0=0x0 mxcsr=0x1f80 ok", probe)) == 8, probe
    for name in ("setter", "probe"):
        assert (rows[name]["state"], rows[name]["exit_code"]) == ("exited", 0), rows
    assert ps_json(console)
