# The management shell on the serial console: commands, their errors, and the REPL door.
import sys

import hv

PROMPT = "taipan> "
GIB = 1 << 30
MIB = 1 << 20
KIB = 1 << 10

# Multiboot memory types, as the loader reports them.
MEM_TYPES = {1: "usable", 2: "reserved", 3: "ACPI reclaimable", 4: "ACPI NVS", 5: "bad"}


def _size(nbytes):
    if nbytes >= GIB and nbytes % GIB == 0:
        return "%d GiB" % (nbytes // GIB)
    if nbytes >= MIB and nbytes % MIB == 0:
        return "%d MiB" % (nbytes // MIB)
    if nbytes >= MIB:
        return "%.1f MiB" % (nbytes / MIB)
    return "%d KiB" % (nbytes // KIB)


def usable_ram():
    return sum(length for base, length, kind in hv.memmap() if kind == 1)


def banner():
    cpu = hv.cpu()
    mem = hv.mem()
    print("Taipan %s - static-partitioning hypervisor, MicroPython %s" % (hv.VERSION, _mp_version()))
    print("cpu: %s, %s (family %d, model %d, stepping %d)" % (
        cpu["vendor"], cpu["brand"] or "unnamed", cpu["family"], cpu["model"], cpu["stepping"]))
    print("virtualization: %s (%s)" % (cpu["virt"], cpu["virt_note"]))
    print("memory: %s usable RAM, MicroPython heap %s" % (_size(usable_ram()), _size(mem["heap_total"])))
    print("type 'help' for commands")


def _mp_version():
    return "%d.%d.%d" % sys.implementation.version[:3]


def cmd_help(args):
    for name in sorted(COMMANDS):
        print("  %-8s %s" % (name, COMMANDS[name][1]))


def cmd_info(args):
    cpu = hv.cpu()
    print("cpu:       %s %s" % (cpu["vendor"], cpu["brand"]))
    print("           family %d model %d stepping %d, TSC %d MHz" % (
        cpu["family"], cpu["model"], cpu["stepping"], cpu["tsc_khz"] // 1000))
    print("virt:      %s - %s" % (cpu["virt"], cpu["virt_note"]))
    flags = [name for name in ("vmx", "ept", "unrestricted", "svm", "npt", "nrips", "hypervisor") if cpu[name]]
    print("features:  %s" % (" ".join(flags) or "-"))
    if cpu["vmx"]:
        print("IA32_FEATURE_CONTROL: 0x%x (%s)" % (cpu["feature_control"], _feature_control(cpu["feature_control"])))
    boot = hv.boot()
    print("loader:    %s (%s)" % (boot["loader"] or "-", boot["protocol"]))
    if boot["cmdline"]:
        print("cmdline:   %s" % boot["cmdline"])
    print("memory:    %s usable" % _size(usable_ram()))
    print("memory map:")
    for base, length, kind in hv.memmap():
        print("  %016x-%016x %10s  %s" % (base, base + length - 1, _size(length), MEM_TYPES.get(kind, "type %d" % kind)))


def _feature_control(value):
    # Bit 0 locks the MSR until reset; bit 2 allows VMXON outside SMX.
    if not value & 1:
        return "unlocked: Taipan can enable VMX"
    if value & 4:
        return "locked by firmware with VMX enabled"
    return "locked by firmware with VMX disabled"


def cmd_mem(args):
    import gc

    gc.collect()
    mem = hv.mem()
    page = mem["page_size"]
    print("pages:     %d total, %d free (%s), %d reserved" % (
        mem["total_pages"], mem["free_pages"], _size(mem["free_pages"] * page), mem["reserved_pages"]))
    for owner, addr, pages in mem["owners"]:
        print("  %-18s %016x %10s" % (owner, addr, _size(pages * page)))
    print("heap:      %s total, %s used, %s free" % (
        _size(mem["heap_total"]), _size(gc.mem_alloc()), _size(gc.mem_free())))


def cmd_py(args):
    print("MicroPython REPL; Ctrl-D returns to the taipan shell")
    hv.repl()


def cmd_reboot(args):
    print("rebooting")
    hv.reboot()


# name: (function, what it does) - MicroPython keeps no docstrings.
COMMANDS = {
    "help": (cmd_help, "list the commands"),
    "info": (cmd_info, "CPU, virtualization features and the memory map"),
    "mem": (cmd_mem, "page allocator and MicroPython heap use"),
    "py": (cmd_py, "the MicroPython REPL (Ctrl-D returns here)"),
    "reboot": (cmd_reboot, "reset the machine"),
}


def execute(line):
    words = line.split()
    if not words:
        return
    entry = COMMANDS.get(words[0])
    if entry is None:
        print("error: unknown command '%s' (try 'help')" % words[0])
        return
    entry[0](words[1:])


def run():
    while True:
        try:
            line = input(PROMPT)
        except KeyboardInterrupt:
            print()
            continue
        except EOFError:
            print()
            continue
        try:
            execute(line)
        except KeyboardInterrupt:
            print("interrupted")
        except Exception as e:
            sys.print_exception(e)
