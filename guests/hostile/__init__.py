"""The hostile guests: kinds of misbehaviour, each with the outcome a correct hypervisor gives
it, built into one raw guest that runs the kinds a partition names (`kinds = "a,b"`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from guests import attacker
from guests.common import (
    GuestImage,
    hypercall_data,
    hypercall_routines,
    name_bytes,
    raw_image,
    uart_routines,
)
from guests.hostile import cpu, events, memory, msrs, ports, runtime

# What the partition shows once a kind has run (docs/security.md):
#   faulted: the hypervisor stopped it, `reason` says where;
#   exited:  every check got its architectural answer (#GP, #UD, all ones), port 0xf4 with 0;
#   running: it goes on forever and its neighbour goes on beside it.
OUTCOMES = ("faulted", "exited", "running")


@dataclass(frozen=True)
class Kind:
    outcome: str
    doc: str
    # memory size, prefix -> (code, data); code of a faulted or running kind never returns
    body: Callable[[int, bytes], tuple[str, str]]
    reason: Callable[[int], str] = lambda memory: ""   # what a faulted kind's reason holds


def _plain(make: Callable[[], str]) -> Callable[[int, bytes], tuple[str, str]]:
    return lambda memory, prefix: (make(), "")


def _memory(kind: str) -> Kind:
    def body(mem: int, prefix: bytes) -> tuple[str, str]:
        return memory.fault_kinds(mem)[kind][0], ""
    return Kind("faulted", f"memory: {kind}", body, lambda mem: memory.fault_kinds(mem)[kind][1])


KINDS: dict[str, Kind] = {name: _memory(name) for name in memory.fault_kinds(1 << 22)}
KINDS.update({
    "triple_fault": Kind("faulted", "IDT limit 0, then INT3", _plain(events.triple_fault),
                         lambda mem: "triple fault"),
    "stack_noncanonical": Kind("faulted", "a push with RSP non-canonical", _plain(events.stack_noncanonical),
                               lambda mem: "triple fault"),
    "ipi_nmi": Kind("exited", "NMIs to all other CPUs by x2APIC MSR (#GP) and the virtual APIC's ICR",
                    lambda mem, prefix: events.ipi_nmi()),
    "lapic": Kind("exited", "a read of the local APIC page: the virtual APIC answers",
                  lambda mem, prefix: memory.answered_read("LAPIC version", memory.LAPIC + 0x30)),
    "ioapic": Kind("exited", "a read of the IOAPIC page: the virtual IOAPIC answers",
                   lambda mem, prefix: memory.answered_read("IOAPIC select", memory.IOAPIC)),
    "port_sweep": Kind("exited", "IN and OUT at every port", lambda mem, prefix: ports.port_sweep()),
    "reset_ports": Kind("exited", "reset writes to 0xcf9, 0x92, 0x64; PIC masks; PCI config",
                        lambda mem, prefix: ports.reset_ports()),
    "string_io": Kind("exited", "REP OUTSB to its UART, REP INSB from a port it lacks",
                      lambda mem, prefix: ports.string_io(prefix)),
    "msr_vmx_svm": Kind("exited", "the VMX and SVM MSRs", lambda mem, prefix: msrs.msr_vmx_svm()),
    "msr_efer": Kind("exited", "EFER reserved bits and SVME", lambda mem, prefix: msrs.msr_efer()),
    "msr_apic": Kind("exited", "the APIC base MSR and an x2APIC MSR", lambda mem, prefix: msrs.msr_apic()),
    "msr_sweep": Kind("exited", "RDMSR and write-back across three MSR ranges",
                      lambda mem, prefix: msrs.msr_sweep()),
    "cr_bad": Kind("exited", "invalid CR0, CR3 and CR4 values", lambda mem, prefix: cpu.cr_bad()),
    "xsetbv_bad": Kind("exited", "XSETBV with bad XCR0 values", lambda mem, prefix: cpu.xsetbv_bad()),
    "vmx_insns": Kind("exited", "every VMX instruction (#UD)", lambda mem, prefix: cpu.vmx_insns()),
    "svm_insns": Kind("exited", "every SVM instruction (#UD)", lambda mem, prefix: cpu.svm_insns()),
    "cpuid_sweep": Kind("exited", "CPUID leaves and subleaves; no host virtualization shows",
                        lambda mem, prefix: cpu.cpuid_sweep()),
    "prefixed_cpuid": Kind("exited", "CPUID behind legacy prefixes", lambda mem, prefix: cpu.prefixed_cpuid()),
    "shared_state": Kind("exited", "WBINVD, SWAPGS, DR0-3/DR7, CR8, MONITOR, RDPMC",
                         lambda mem, prefix: cpu.shared_state()),
    "fake_console": Kind("exited", "escape sequences and lines that look like the hypervisor's",
                         lambda mem, prefix: events.fake_console()),
    "hypercall_random": Kind("exited", "hypercalls with random registers; console_write of 2 MiB",
                             lambda mem, prefix: events.hypercall_random(mem)),
    "cli_spin": Kind("running", "a spin with interrupts off", _plain(events.cli_spin)),
    "cli_hlt": Kind("running", "HLT with interrupts off", _plain(events.cli_hlt)),
    "serial_flood": Kind("running", "the UART written without waiting", _plain(events.serial_flood)),
    "interrupt_storm": Kind("running", "software interrupts on every vector", _plain(events.interrupt_storm)),
})


def build(*, name: str, memory: int, kinds: str = "read_beyond") -> GuestImage:
    """Run each of `kinds` (comma-separated) in turn; only the last may be one that never
    returns (faulted or running). Prints `hostile <name> <kind>: start`, `FAIL ...` lines for
    answers that were not the architecture's, and `... done failures=<n>`; ends with port 0xf4
    and the total of failures."""
    chosen = [k.strip() for k in str(kinds).split(",") if k.strip()]
    if not chosen:
        raise ValueError("hostile: kinds names no kind")
    for kind in chosen:
        if kind not in KINDS:
            raise ValueError(f"hostile: unknown kind {kind!r}; kinds: {', '.join(sorted(KINDS))}")
    for kind in chosen[:-1]:
        if KINDS[kind].outcome != "exited":
            raise ValueError(f"hostile: kind {kind!r} never returns, so it must come last")
    prefix = b"hostile " + name_bytes(name)
    bodies = [(kind, *KINDS[kind].body(memory, prefix)) for kind in chosen]
    extra = (attacker.map_routines("hostile_next_scratch") + uart_routines(64) + hypercall_routines()
             + hypercall_data() + f"    .balign 8\nhostile_next_scratch:\n    .quad {runtime.SCRATCH:#x}\n")
    return raw_image(runtime.program(prefix, bodies, extra), memory=memory, name=name)
