"""taipan hwcheck: run under Linux on a PC to learn, before rebooting it, whether it can run Taipan."""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Statuses: ok (Taipan has what it needs), fail (it cannot run, `fix` says
# what to do), warn (it runs, with a caveat), unknown (this Linux would not
# let us read it: `fix` says how to let it).
OK, FAIL, WARN, UNKNOWN = "ok", "fail", "warn", "unknown"

MSR_FEATURE_CONTROL = 0x3A
MSR_VMX_PINBASED = 0x481
MSR_VMX_PROCBASED = 0x482
MSR_VMX_PROCBASED2 = 0x48B
MSR_VM_CR = 0xC0010114
MIN_RAM_BYTES = 128 << 20   # the image, its heap and the demo's partitions fit with room
COM1 = 0x3F8
READ_MSR_FIX = "load the msr module and run as root: sudo modprobe msr; sudo taipan hwcheck"
HYPERVISORS = {b"KVMKVMKVM\0\0\0": "KVM", b"Microsoft Hv": "Hyper-V", b"VMwareVMware": "VMware",
               b"XenVMMXenVMM": "Xen", b"TCGTCGTCGTCG": "QEMU TCG", b"VBoxVBoxVBox": "VirtualBox"}


@dataclass
class Check:
    item: str
    need: str
    have: str
    status: str
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, item: str, need: str, have: str, status: str, fix: str = "") -> None:
        self.checks.append(Check(item, need, have, status, fix if status != OK else ""))

    @property
    def verdict(self) -> str:
        statuses = {c.status for c in self.checks}
        if FAIL in statuses:
            return "no: this machine cannot run Taipan as it is"
        if UNKNOWN in statuses:
            return "probably: nothing is missing, but some items could not be read"
        return "yes: this machine can run Taipan"

    @property
    def can_run(self) -> bool:
        return all(c.status != FAIL for c in self.checks)


class Machine:
    """The files a check reads, under `root` (/ on the real machine, a fixture tree in tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name.lstrip("/")

    def text(self, name: str) -> str | None:
        try:
            return self.path(name).read_text(errors="replace")
        except OSError:
            return None

    def data(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except OSError:
            return None

    def msr(self, index: int, cpu: int = 0) -> int | None:
        """An MSR through the msr driver (/dev/cpu/N/msr: pread at the MSR's number), or None."""
        try:
            fd = os.open(self.path(f"dev/cpu/{cpu}/msr"), os.O_RDONLY)
        except OSError:
            return None
        try:
            raw = os.pread(fd, 8, index)
        except OSError:   # the MSR does not exist on this CPU (#GP in the kernel: EIO)
            return None
        finally:
            os.close(fd)
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else None

    def cpuid(self, leaf: int, subleaf: int = 0, cpu: int = 0) -> tuple[int, int, int, int] | None:
        """CPUID through the cpuid driver (/dev/cpu/N/cpuid: pread at subleaf << 32 | leaf)."""
        try:
            fd = os.open(self.path(f"dev/cpu/{cpu}/cpuid"), os.O_RDONLY)
        except OSError:
            return None
        try:
            raw = os.pread(fd, 16, subleaf << 32 | leaf)
        except OSError:
            return None
        finally:
            os.close(fd)
        return struct.unpack("<4I", raw) if len(raw) == 16 else None


@dataclass
class CpuInfo:
    vendor: str = ""
    model: str = ""
    flags: frozenset[str] = frozenset()
    vmx_flags: frozenset[str] = frozenset()
    count: int = 0


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first CPU's vendor, model, flags and VMX flags, and how many CPUs Linux lists."""
    info = CpuInfo()
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            info.count += 1
        elif info.count > 1:
            continue
        elif key == "vendor_id":
            info.vendor = value
        elif key == "model name":
            info.model = value
        elif key == "flags":
            info.flags = frozenset(value.split())
        elif key == "vmx flags":
            info.vmx_flags = frozenset(value.split())
    return info


def madt_cpus(table: bytes) -> int:
    """Enabled (or online-capable) processors in an ACPI MADT: local APIC and x2APIC entries."""
    if len(table) < 44 or table[:4] != b"APIC":
        raise ValueError("not an MADT (signature APIC)")
    length = struct.unpack_from("<I", table, 4)[0]
    count, at = 0, 44
    while at + 2 <= min(length, len(table)):
        kind, size = table[at], table[at + 1]
        if size < 2:
            break
        if kind == 0 and size >= 8:       # processor local APIC: flags at +4
            flags = struct.unpack_from("<I", table, at + 4)[0]
        elif kind == 9 and size >= 16:    # processor local x2APIC: flags at +8
            flags = struct.unpack_from("<I", table, at + 8)[0]
        else:
            flags = 0
        count += bool(flags & 0b11)       # enabled, or online capable
        at += size
    return count


def _allowed1(msr: int | None, bit: int) -> bool | None:
    # A VMX capability MSR's high half lists the controls allowed to be 1.
    return None if msr is None else bool(msr >> 32 & (1 << bit))


def _feature(report: Report, item: str, need: str, flag: bool | None, fix: str) -> None:
    if flag is None:
        report.add(item, need, "could not be read", UNKNOWN, READ_MSR_FIX)
    else:
        report.add(item, need, "yes" if flag else "no", OK if flag else FAIL, fix)


def check_intel(m: Machine, cpu: CpuInfo, report: Report) -> None:
    fc = m.msr(MSR_FEATURE_CONTROL)
    locked = fc is not None and bool(fc & 1)
    vmx_on = fc is not None and bool(fc & 4)
    if "vmx" not in cpu.flags:
        # Linux hides the flag when firmware locked VMX off, so the MSR tells the two apart.
        if locked and not vmx_on:
            report.add("VT-x", "VT-x (VMX)", "disabled by firmware", FAIL,
                       "VT-x is disabled in firmware: enable Intel Virtualization Technology "
                       "in the firmware setup")
        else:
            report.add("VT-x", "VT-x (VMX)", "not offered", FAIL,
                       "no VT-x in /proc/cpuinfo: the CPU lacks it, firmware disabled it (enable "
                       "Intel Virtualization Technology in the firmware setup), or a hypervisor "
                       "below Linux does not pass it on (docs/nested.md)")
        return
    report.add("VT-x", "VT-x (VMX)", "yes", OK)
    if fc is None:
        report.add("feature control", "IA32_FEATURE_CONTROL unlocked, or locked with VMX on",
                   "could not be read", UNKNOWN, READ_MSR_FIX)
    elif locked and not vmx_on:
        report.add("feature control", "IA32_FEATURE_CONTROL unlocked, or locked with VMX on",
                   f"{fc:#x}: locked, VMX off", FAIL,
                   "VT-x is disabled in firmware: enable it in the firmware setup")
    else:
        report.add("feature control", "IA32_FEATURE_CONTROL unlocked, or locked with VMX on",
                   f"{fc:#x}: {'locked, VMX on' if locked else 'unlocked (Taipan sets it)'}", OK)
    # Linux 5.8+ lists VMX features as "vmx flags"; older ones need the capability MSRs.
    procbased2 = m.msr(MSR_VMX_PROCBASED2) if _allowed1(m.msr(MSR_VMX_PROCBASED), 31) else None
    pinbased = m.msr(MSR_VMX_PINBASED)

    def has(flag: str, msr: int | None, bit: int) -> bool | None:
        return True if flag in cpu.vmx_flags else (_allowed1(msr, bit) if not cpu.vmx_flags else False)

    _feature(report, "EPT", "extended page tables", has("ept", procbased2, 1),
             "this CPU's VT-x has no EPT: Taipan isolates partitions with EPT and needs a newer CPU")
    _feature(report, "unrestricted guest", "unrestricted guest", has("unrestricted_guest", procbased2, 7),
             "no unrestricted guest: guests must start in protected mode; a newer CPU (Westmere "
             "or later) has it")
    _feature(report, "preemption timer", "VMX preemption timer", has("preemption_timer", pinbased, 6),
             "no VMX preemption timer: Taipan ends a guest's slice with it; a newer CPU has it "
             "(under a hypervisor, it may not pass it on)")


def check_amd(m: Machine, cpu: CpuInfo, report: Report) -> None:
    vm_cr = m.msr(MSR_VM_CR)
    if "svm" not in cpu.flags:
        if vm_cr is not None and vm_cr & (1 << 4):
            report.add("AMD-V", "AMD-V (SVM)", "disabled by firmware", FAIL,
                       "AMD-V is disabled in firmware: enable SVM Mode in the firmware setup")
        else:
            report.add("AMD-V", "AMD-V (SVM)", "not offered", FAIL,
                       "no svm in /proc/cpuinfo: the CPU lacks it, firmware disabled it (enable "
                       "SVM Mode in the firmware setup), or a hypervisor below Linux does not "
                       "pass it on (docs/nested.md)")
        return
    report.add("AMD-V", "AMD-V (SVM)", "yes", OK)
    if vm_cr is None:
        report.add("feature control", "VM_CR.SVMDIS clear or unlocked", "could not be read",
                   UNKNOWN, READ_MSR_FIX)
    elif vm_cr & (1 << 4) and vm_cr & (1 << 3):
        report.add("feature control", "VM_CR.SVMDIS clear or unlocked", f"{vm_cr:#x}: locked off",
                   FAIL, "AMD-V is disabled in firmware: enable SVM Mode in the firmware setup")
    else:
        report.add("feature control", "VM_CR.SVMDIS clear or unlocked", f"{vm_cr:#x}", OK)
    for flag, item, fix in (
            ("npt", "NPT", "this CPU's AMD-V has no nested paging: Taipan isolates partitions "
             "with NPT and needs a newer CPU"),
            ("nrip_save", "next-RIP save", "no next-RIP save: Taipan decodes instruction "
             "lengths itself, as under QEMU; it runs, a little slower")):
        present = flag in cpu.flags
        report.add(item, item, "yes" if present else "no",
                   OK if present else (WARN if flag == "nrip_save" else FAIL), fix)


def check_hypervisor(m: Machine, cpu: CpuInfo, report: Report) -> None:
    if "hypervisor" not in cpu.flags:
        report.add("hypervisor below", "none (bare metal), or one that nests", "none", OK)
        return
    leaf = m.cpuid(0x40000000)
    name = "a hypervisor"
    if leaf is not None:
        signature = struct.pack("<3I", *leaf[1:])
        name = HYPERVISORS.get(signature, f"a hypervisor ({signature.rstrip(bytes(1))!r})")
    nested = "vmx" in cpu.flags or "svm" in cpu.flags
    report.add("hypervisor below", "none (bare metal), or one that nests",
               f"{name}, {'nested virtualization offered' if nested else 'no nested virtualization'}",
               WARN, "this Linux is itself a guest: Taipan would run nested, if at all; see "
               "docs/nested.md")


def check_cpus(m: Machine, cpu: CpuInfo, report: Report) -> None:
    table = m.data("sys/firmware/acpi/tables/APIC")
    if table is None:
        have = f"{cpu.count} in /proc/cpuinfo; MADT not readable"
        fix = "no readable MADT: run as root (the ACPI tables are root-only), or the firmware has no ACPI"
        report.add("CPUs (MADT)", "an ACPI MADT listing at least 1 CPU", have, UNKNOWN, fix)
        return
    try:
        count = madt_cpus(table)
    except ValueError as error:
        report.add("CPUs (MADT)", "an ACPI MADT listing at least 1 CPU", str(error), FAIL,
                   "the firmware's MADT is damaged: update the firmware")
        return
    report.add("CPUs (MADT)", "an ACPI MADT listing at least 1 CPU", f"{count}",
               OK if count else FAIL, "the MADT lists no enabled CPU: update the firmware")


def check_ram(m: Machine, report: Report) -> None:
    text = m.text("proc/meminfo") or ""
    total = next((int(line.split()[1]) << 10 for line in text.splitlines()
                  if line.startswith("MemTotal:")), None)
    need = f"at least {MIN_RAM_BYTES >> 20} MiB"
    if total is None:
        report.add("RAM", need, "/proc/meminfo not readable", UNKNOWN, "run on the machine's Linux")
        return
    report.add("RAM", need, f"{total / (1 << 30):.1f} GiB", OK if total >= MIN_RAM_BYTES else FAIL,
               "too little RAM for the hypervisor, its heap and a partition")


def check_firmware(m: Machine, report: Report) -> None:
    if not m.path("sys/firmware/efi").is_dir():
        report.add("firmware", "UEFI or BIOS", "BIOS (legacy boot)", OK)
        return
    sb = m.data("sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")
    # efivarfs files start with 4 bytes of attributes; the value follows.
    if sb is not None and len(sb) >= 5 and sb[4] == 1:
        report.add("firmware", "UEFI or BIOS (Secure Boot off)", "UEFI, Secure Boot on", FAIL,
                   "Secure Boot is on and Taipan's GRUB is not signed: disable Secure Boot in "
                   "the firmware setup, or enroll your own key (docs/boot.md)")
    else:
        report.add("firmware", "UEFI or BIOS (Secure Boot off)",
                   "UEFI, Secure Boot off" if sb is not None else "UEFI", OK)


def check_serial(m: Machine, report: Report) -> None:
    need = "a 16550 UART at I/O 0x3f8 (COM1)"
    fix = ("no 16550 at 0x3f8: Taipan's console is COM1 only; enable the onboard serial port "
           "in the firmware setup or fit a serial card that decodes 0x3f8")
    driver = m.text("proc/tty/driver/serial")
    if driver is not None:
        for line in driver.splitlines():
            fields = dict(f.split(":", 1) for f in line.split()[1:] if ":" in f)
            if fields.get("port", "").lower().lstrip("0") == f"{COM1:x}":
                uart = fields.get("uart", "unknown")
                report.add("serial", need, f"{uart} at 0x3f8", OK if uart != "unknown" else FAIL, fix)
                return
    for tty in sorted(m.path("sys/class/tty").glob("ttyS*")):
        port = (m.text(f"sys/class/tty/{tty.name}/port") or "").strip()
        if port and int(port, 16) == COM1:
            # `type` 0 is PORT_UNKNOWN: Linux probed and found no UART there.
            kind = (m.text(f"sys/class/tty/{tty.name}/type") or "0").strip()
            report.add("serial", need, f"{tty.name} at 0x3f8, type {kind}",
                       OK if kind not in ("", "0") else FAIL, fix)
            return
    if driver is None and not m.path("sys/class/tty").is_dir():
        report.add("serial", need, "could not be read", UNKNOWN, "run as root on the machine's Linux")
        return
    report.add("serial", need, "none", FAIL, fix)


def check(root: Path = Path("/")) -> Report:
    """Every check, reading only files under `root`."""
    m = Machine(root)
    report = Report()
    cpu = parse_cpuinfo(m.text("proc/cpuinfo") or "")
    report.add("CPU", "x86_64 Intel or AMD", f"{cpu.vendor or 'unknown'} {cpu.model}".strip(),
               OK if cpu.vendor in ("GenuineIntel", "AuthenticAMD") and "lm" in cpu.flags else FAIL,
               "Taipan runs on 64-bit Intel and AMD CPUs only")
    if cpu.vendor == "AuthenticAMD":
        check_amd(m, cpu, report)
    else:
        check_intel(m, cpu, report)
    check_hypervisor(m, cpu, report)
    check_cpus(m, cpu, report)
    check_ram(m, report)
    check_firmware(m, report)
    check_serial(m, report)
    return report


def format_report(report: Report) -> str:
    width = max(len(c.item) for c in report.checks)
    have_w = max(len(c.have) for c in report.checks)
    lines = [f"{'item':<{width}}  {'status':<7}  {'this machine':<{have_w}}  needed"]
    for c in report.checks:
        lines.append(f"{c.item:<{width}}  {c.status:<7}  {c.have:<{have_w}}  {c.need}")
    lines.append("")
    lines.append(f"verdict: {report.verdict}")
    for c in report.checks:
        if c.fix:
            lines.append(f"  {c.item}: {c.fix}")
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps({"verdict": report.verdict, "can_run": report.can_run,
                       "checks": [asdict(c) for c in report.checks]}, indent=2)


def cmd_hwcheck(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        print(f"taipan hwcheck: --root {args.root}: not a folder", file=sys.stderr)
        return 2
    report = check(root)
    print(to_json(report) if args.json else format_report(report))
    return 0 if report.can_run else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hwcheck", help="check, under Linux on the target PC, whether it can run Taipan",
                       description="Reads /proc/cpuinfo, /dev/cpu/*/msr (msr module), "
                       "/sys/firmware/acpi/tables, /sys/firmware/efi and the serial ports; prints "
                       "what Taipan needs, what this machine has, a verdict and the fixes. Exit "
                       "status 0: it can run Taipan (or nothing missing was found), 1: it cannot.")
    p.add_argument("--root", default="/", help="read the machine's files under this folder "
                   "(default /; tests give a fixture tree)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    p.set_defaults(func=cmd_hwcheck)
