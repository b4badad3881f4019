# The management shell on the serial console: commands, their errors, and the REPL door.
import sys

import hv
import manager
import scheduler

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


def partitions_summary():
    if manager.count() == 0:
        return
    parts = ["%s (%s)" % (p["name"], p["state"]) for p in map(manager.info, range(manager.count()))]
    print("partitions: %s" % ", ".join(parts))
    print("'ps' lists them, 'log' shows their output, 'console NAME' attaches to one")


def _one_name(args, usage):
    if len(args) != 1:
        raise UsageError(usage)
    return manager.find(args[0])


class UsageError(Exception):
    pass


def _exits(exits):
    return " ".join("%s=%d" % (k, exits[k]) for k in sorted(exits)) or "-"


def _state(part):
    if part["state"] == "exited":
        return "exited(%d)" % part["exit_code"]
    return part["state"]


def cmd_ps(args):
    print("%-12s %-12s %8s %9s  %s" % ("NAME", "STATE", "MEMORY", "CPU", "EXITS"))
    for i in range(manager.count()):
        part = manager.info(i)
        print("%-12s %-12s %8s %8.2fs  %s" % (
            part["name"], _state(part), _size(part["memory"]), part["cpu_us"] / 1e6, _exits(part["exits"])))
        if part["reason"] and part["state"] in ("faulted", "stopped", "unusable", "exited"):
            print("%-12s %s" % ("", part["reason"]))


def cmd_start(args):
    index = _one_name(args, "start NAME")
    manager.start(index)
    print("%s started" % args[0])


def cmd_stop(args):
    index = _one_name(args, "stop NAME")
    manager.stop(index)
    print("%s stopped" % args[0])


LOG_BYTES = 65536


def _last_lines(data, n):
    # Bytes, not text: a guest may write anything, and the console shows it as it came.
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[-n:]


def cmd_log(args):
    lines = 20
    if "-n" in args:
        at = args.index("-n")
        try:
            lines = int(args[at + 1])
        except (IndexError, ValueError):
            raise UsageError("log [NAME] [-n LINES]") from None
        args = args[:at] + args[at + 2:]
    if len(args) > 1:
        raise UsageError("log [NAME] [-n LINES]")
    if args:
        data = hv.console_tail(manager.find(args[0]), LOG_BYTES)
    else:
        data = hv.journal_tail(LOG_BYTES)
    for line in _last_lines(data, lines):
        hv.write(line + b"\n")


def _follow(read, write_input=None):
    """Copy `read()` to the console until Ctrl-] (or any key when write_input is None)."""
    import micropython

    micropython.kbd_intr(-1)  # Ctrl-C belongs to whoever the console is attached to
    try:
        while True:
            data = read()
            if data:
                hv.write(data)
            key = hv.poll_char()
            if key == ESCAPE or (key >= 0 and write_input is None):
                return
            if key >= 0:
                write_input(bytes([key]))
            elif not data and not scheduler.tick():
                pass
    finally:
        micropython.kbd_intr(3)


ESCAPE = 0x1D  # Ctrl-]


def cmd_tail(args):
    if len(args) > 1:
        raise UsageError("tail [NAME]")
    print("following %s; press any key to stop" % (args[0] if args else "all partitions"))
    if args:
        index = manager.find(args[0])
        while hv.console_read(index, 4096):
            pass
        _follow(lambda: hv.console_read(index, 512))
    else:
        while hv.journal_read(4096):
            pass
        _follow(lambda: hv.journal_read(512))
    print()


def cmd_console(args):
    index = _one_name(args, "console NAME")
    print("console %s: the line is the partition's now; Ctrl-] returns to taipan>" % args[0])
    _follow(lambda: hv.console_read(index, 512), lambda data: hv.console_input(index, data))
    print("\nback at taipan>")


def cmd_events(args):
    for _ticks, text in manager.events:
        print(text)


# name: (function, what it does) - MicroPython keeps no docstrings.
COMMANDS = {
    "help": (cmd_help, "list the commands"),
    "ps": (cmd_ps, "partitions: state, memory, CPU time, exits by reason"),
    "start": (cmd_start, "start NAME: (re)load and start a partition"),
    "stop": (cmd_stop, "stop NAME: stop a partition"),
    "log": (cmd_log, "log [NAME] [-n LINES]: a partition's console output (all, merged, without NAME)"),
    "tail": (cmd_tail, "tail [NAME]: follow console output until a key is pressed"),
    "console": (cmd_console, "console NAME: give the serial line to a partition; Ctrl-] returns"),
    "events": (cmd_events, "what the hypervisor decided: starts, stops, faults, policy"),
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
        except UsageError as e:
            print("error: usage: %s" % e)
        except (ValueError, OSError) as e:
            print("error: %s" % e)
        except Exception as e:
            sys.print_exception(e)
