# The management shell on the serial console: commands, their help and errors, JSON for scripts, the REPL door.
import sys

import hv
import manager
import scheduler
import usermods

PROMPT = "taipan> "
GIB = 1 << 30
MIB = 1 << 20
KIB = 1 << 10
DEFAULT_ESCAPE = 0x1D  # Ctrl-]
LOG_BYTES = 65536
TAIL_LINES = 10
SHOWN_WORD = 40  # the longest word an error message echoes back

# Multiboot memory types, as the loader reports them.
MEM_TYPES = {1: "usable", 2: "reserved", 3: "ACPI reclaimable", 4: "ACPI NVS", 5: "bad"}

debug = False  # print the traceback after an unexpected exception's error line


class UsageError(Exception):
    pass


def _size(nbytes):
    if nbytes >= GIB and nbytes % GIB == 0:
        return "%d GiB" % (nbytes // GIB)
    if nbytes >= MIB and nbytes % MIB == 0:
        return "%d MiB" % (nbytes // MIB)
    if nbytes >= MIB:
        return "%.1f MiB" % (nbytes / MIB)
    return "%d KiB" % (nbytes // KIB)


def _shown(word):
    return word if len(word) <= SHOWN_WORD else word[:SHOWN_WORD] + "..."


def _one_line(text):
    return " ".join(str(text).split())


# Line starts a script reads as the hypervisor's own (docs/console.md, "For scripts").
OWN_LINE_STARTS = (b"taipan:", b"error:")


def _escaped(line):
    # min() is a loop in C: most lines hold no control byte and skip the loop in Python.
    if not line or (min(line) >= 32 and 127 not in line):
        return line
    out = bytearray()
    for b in line:
        if (b < 32 and b != 9) or b == 127:
            out.extend(("\\x%02x" % b).encode())
        else:
            out.append(b)
    return bytes(out)


def _safe(data, line_start=True):
    """Guest-written bytes made safe for a terminal and for a script reading up to the next
    prompt: control bytes but tab and newline (escape sequences, a CR that would overwrite a
    line) are shown as \\xNN, a CR before a newline is dropped, the prompt's text has its space
    escaped, and a line that would start like an announcement or an error has its first byte
    escaped. line_start: data begins a line (False for a chunk that continues one)."""
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if line.endswith(b"\r") and i + 1 < len(lines):
            line = line[:-1]
        line = _escaped(line)
        if (i or line_start) and any(line.startswith(own) for own in OWN_LINE_STARTS):
            line = ("\\x%02x" % line[0]).encode() + line[1:]
        lines[i] = line
    return b"\n".join(lines).replace(PROMPT.encode(), PROMPT[:-1].encode() + b"\\x20")


def _json(doc):
    import json

    print(json.dumps(doc))


def _options(args, usage, flags=(), valued=()):
    """Split args into (positional, {option: value}); options are flags (True) or take one value."""
    words = []
    opts = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in flags:
            opts[arg] = True
        elif arg in valued:
            if i + 1 >= len(args):
                raise UsageError(usage)
            opts[arg] = args[i + 1]
            i += 1
        elif arg.startswith("-") and len(arg) > 1:
            raise UsageError("%s (unknown option '%s')" % (usage, _shown(arg)))
        else:
            words.append(arg)
        i += 1
    return words, opts


def _count(value, usage):
    try:
        n = int(value)
    except ValueError:
        raise UsageError(usage) from None
    if n < 1:
        raise UsageError(usage)
    return n


def _one_name(args, usage):
    if len(args) != 1:
        raise UsageError(usage)
    return manager.find(args[0])


def usable_ram():
    return sum(length for base, length, kind in hv.memmap() if kind == 1)


def _mp_version():
    return "%d.%d.%d" % sys.implementation.version[:3]


def _tsc_khz():
    return hv.cpu()["tsc_khz"]


# ---- the console escape -------------------------------------------------


def _key_code(text):
    """A key as the configuration spells it: "^]", "ctrl-]", "C-]", one character, or a number."""
    text = text.strip()
    low = text.lower()
    for prefix in ("^", "ctrl-", "ctrl+", "c-"):
        if low.startswith(prefix) and len(text) == len(prefix) + 1:
            return ord(text[-1].upper()) & 0x1F
    if len(text) == 1:
        return ord(text)
    return int(text, 0)


def escape_key():
    """The key that takes the line back from a partition: [platform] console_escape, or Ctrl-]."""
    get = getattr(hv, "config_text", None)
    if get is None:
        return DEFAULT_ESCAPE
    try:
        section = None
        for line in get().split("\n"):
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[platform]" and line.split("=")[0].strip() == "console_escape":
                value = line.split("=", 1)[1].split("#")[0].strip()
                if value[:1] in "\"'":
                    value = value[1:-1]
                code = _key_code(value)
                if 0 < code < 0x20 or code == 0x7F:
                    return code
    except Exception:  # a malformed value leaves the default, which always works
        pass
    return DEFAULT_ESCAPE


def key_name(code):
    if code == 0x7F:
        return "DEL"
    return "Ctrl-" + chr(code + 0x40) if code < 0x20 else chr(code)


# ---- startup ------------------------------------------------------------


def banner():
    cpu = hv.cpu()
    mem = hv.mem()
    print("Taipan %s - static-partitioning hypervisor, MicroPython %s" % (hv.VERSION, _mp_version()))
    print("cpu: %s, %s (family %d, model %d, stepping %d)" % (
        cpu["vendor"], cpu["brand"] or "unnamed", cpu["family"], cpu["model"], cpu["stepping"]))
    print("virtualization: %s (%s)" % (cpu["virt"], cpu["virt_note"]))
    if cpu["hypervisor"]:
        print("nested: running under %s - %s" % (cpu["hv_vendor"], cpu["nested_note"]))
    print("memory: %s usable RAM, MicroPython heap %s" % (_size(usable_ram()), _size(mem["heap_total"])))
    cpus = hv.cpus()
    online = [c for c in cpus if c["state"] == "online"]
    failed = ["CPU %d (APIC ID %d): %s" % (c["index"], c["apic_id"], c["problem"])
              for c in cpus if c["state"] == "failed"]
    print("cpus: %d of %d online%s; 'sched' shows what each runs" % (
        len(online), len(cpus), "; " + ", ".join(failed) + " did not come up" if failed else ""))
    print("type 'help' for commands")


def partitions_summary():
    if manager.count() == 0:
        return
    parts = ["%s (%s)" % (p["name"], p["state"]) for p in map(manager.info, range(manager.count()))]
    print("partitions: %s" % ", ".join(parts))
    print("'ps' lists them, 'log' shows their output, 'console NAME' attaches to one")


# ---- help ---------------------------------------------------------------


def cmd_help(args):
    if len(args) > 1:
        raise UsageError("help [COMMAND]")
    if not args:
        for name in sorted(COMMANDS):
            print("  %-8s %s" % (name, COMMANDS[name][2]))
        print("'help COMMAND' explains one; TAB completes commands and partition names")
        return
    entry = COMMANDS.get(args[0])
    if entry is None:
        raise ValueError("no command '%s' (try 'help')" % _shown(args[0]))
    print("usage: %s" % entry[1])
    print("  %s" % entry[2])
    for line in entry[3]:
        print("  " + line)


# ---- the machine --------------------------------------------------------


def _info_doc():
    import gc
    import time

    cpu = hv.cpu()
    clock = hv.clock()
    clock["time"] = time.time()
    boot = hv.boot()
    gc.collect()
    return {
        "version": hv.VERSION,
        "micropython": _mp_version(),
        "cpu": cpu,
        "clock": clock,
        "backend": hv.backend(),
        "boot": {"loader": boot["loader"], "protocol": boot["protocol"], "cmdline": boot["cmdline"],
                 "modules": [{"start": s, "end": e, "cmdline": c} for s, e, c in boot["modules"]],
                 "firmware": "uefi" if boot["efi"] else "bios",
                 "efi_system_table": boot["efi_system_table"], "efi_bits": boot["efi_bits"],
                 "framebuffer": boot["framebuffer"]},
        "acpi": hv.acpi(),
        "cpus": [{"cpu": c["index"], "apic_id": c["apic_id"], "state": c["state"], "problem": c["problem"],
                  "runs": _cpu_runs(c["index"])} for c in hv.cpus()],
        "memory": {"usable": usable_ram(), "source": boot["map_source"],
                   "map": [{"base": b, "length": n, "type": MEM_TYPES.get(k, "type %d" % k)}
                           for b, n, k in hv.memmap()]},
        "heap": {"total": hv.mem()["heap_total"], "used": gc.mem_alloc(), "free": gc.mem_free()},
        "partitions": manager.names(),
        "development": usermods.dev_image(),
    }


def _tsc_text(clock):
    """The TSC's rate, its source, and the other figure when it differs: "2600000 kHz (PIT)"."""
    text = "%d kHz (%s" % (clock["tsc_khz"], clock["tsc_source"])
    if clock["cpuid_khz"] and clock["tsc_source"] == "PIT":
        text += "; %s said %d kHz, not used" % (clock["cpuid_leaf"], clock["cpuid_khz"])
    elif clock["cpuid_khz"] and clock["pit_khz"]:
        text += "; the PIT measured %d kHz" % clock["pit_khz"]
    return text + ")"


def _rtc_text(rtc):
    """The CMOS clock as read at boot: "2030-01-02 03:04:05 at boot (BCD, 24-hour)"."""
    if not rtc["valid"]:
        return "no valid time at boot (status B 0x%02x): the time of day counts from 2000-01-01" % rtc["status_b"]
    return "%04d-%02d-%02d %02d:%02d:%02d at boot (%s, %s)" % (
        rtc["boot"] + ("BCD" if rtc["bcd"] else "binary", "24-hour" if rtc["hour24"] else "12-hour"))


def cmd_info(args):
    import time

    args, opts = _options(args, "info [--json]", flags=("--json",))
    if args:
        raise UsageError("info [--json]")
    if "--json" in opts:
        _json(_info_doc())
        return
    cpu = hv.cpu()
    print("cpu:       %s %s" % (cpu["vendor"], cpu["brand"]))
    print("           family %d model %d stepping %d, TSC %d MHz" % (
        cpu["family"], cpu["model"], cpu["stepping"], cpu["tsc_khz"] // 1000))
    print("virt:      %s - %s" % (cpu["virt"], cpu["virt_note"]))
    flags = [name for name in ("vmx", "ept", "unrestricted", "svm", "npt", "nrips", "hypervisor") if cpu[name]]
    print("features:  %s" % (" ".join(flags) or "-"))
    clock = hv.clock()
    print("tsc:       %s" % _tsc_text(clock))
    print("rtc:       %s" % _rtc_text(clock["rtc"]))
    print("time:      %04d-%02d-%02d %02d:%02d:%02d now (the RTC's reading advanced by the TSC)" % time.localtime()[:6])
    if cpu["vmx"]:
        print("IA32_FEATURE_CONTROL: 0x%x (%s)" % (cpu["feature_control"], _feature_control(cpu["feature_control"])))
    print("paging:    1 GiB pages %s, nested 1 GiB pages %s" % (
        "yes" if cpu["page_1g"] else "no", "yes" if cpu["nested_1g"] else "no"))
    if cpu["hypervisor"]:
        print("hypervisor: %s (CPUID 0x40000000 \"%s\")" % (cpu["hv_vendor"], cpu["hv_signature"]))
        print("nested:    %s" % cpu["nested_note"])
    boot = hv.boot()
    print("loader:    %s (%s)" % (boot["loader"] or "-", boot["protocol"]))
    if boot["efi"]:
        print("firmware:  UEFI, %d-bit system table at 0x%x, boot services %s" % (
            boot["efi_bits"], boot["efi_system_table"],
            "still running" if boot["efi_boot_services"] else "exited"))
    else:
        print("firmware:  BIOS (no EFI system table tag)")
    fb = boot["framebuffer"]
    if fb:
        print("screen:    %s framebuffer %dx%d at 0x%x, %s" % (
            fb["type"], fb["width"], fb["height"], fb["addr"],
            "banner shown" if fb["banner"] else "no banner"))
    if boot["cmdline"]:
        print("cmdline:   %s" % boot["cmdline"])
    acpi = hv.acpi()
    print("acpi:      RSDP from %s%s, MADT: %d CPUs, %d IOAPICs%s" % (
        acpi["rsdp_source"], " at 0x%x" % acpi["rsdp_address"] if acpi["rsdp_address"] else "",
        len(acpi["cpus"]), len(acpi["ioapics"]), " (%s)" % acpi["problem"] if acpi["problem"] else ""))
    for c in hv.cpus():
        runs = ", ".join(_cpu_runs(c["index"])) or "nothing"
        print("cpu %-6d APIC ID %d, %s%s" % (c["index"], c["apic_id"], c["state"],
                                            ": " + c["problem"] if c["problem"] else ": runs " + runs))
    print("memory:    %s usable" % _size(usable_ram()))
    if usermods.dev_image():
        print("image:     development image (built with --dev): 'taipan ctl TARGET push' may replace policies")
    print("memory map: %s, %d entries" % (boot["map_source"], boot["map_entries"]))
    for base, length, kind in hv.memmap():
        print("  %016x-%016x %10s  %s" % (base, base + length - 1, _size(length), MEM_TYPES.get(kind, "type %d" % kind)))


def _cpu_runs(cpu):
    """The owners of a CPU's plan, by name: management and the partitions it runs."""
    if cpu >= len(scheduler.plans):
        return []
    return [_owner_name(owner) for owner, _ in scheduler.plans[cpu]["windows"]]


def _feature_control(value):
    # Bit 0 locks the MSR until reset; bit 2 allows VMXON outside SMX.
    if not value & 1:
        return "unlocked: Taipan can enable VMX"
    if value & 4:
        return "locked by firmware with VMX enabled"
    return "locked by firmware with VMX disabled"


def cmd_mem(args):
    import gc

    if args:
        raise UsageError("mem")
    gc.collect()
    mem = hv.mem()
    page = mem["page_size"]
    print("pages:     %d total, %d free (%s), %d reserved" % (
        mem["total_pages"], mem["free_pages"], _size(mem["free_pages"] * page), mem["reserved_pages"]))
    if mem["high_pages"]:
        print("above 4G:  %s, %s free; identity-mapped to 0x%x (%d 1 GiB pages, %d 2 MiB pages)" % (
            _size(mem["high_pages"] * page), _size(mem["high_free_pages"] * page),
            mem["mapped_top"], mem["map_1g"], mem["map_2m"]))
    for owner, addr, pages in mem["owners"]:
        print("  %-18s %016x %10s" % (owner, addr, _size(pages * page)))
    if manager.count():
        print("partitions (host-physical memory):")
        for rec in map(manager.info, range(manager.count())):
            base, size = rec["host_base"], rec["memory"]
            print("  %-18s %016x-%016x %10s%s" % (rec["name"], base, base + size - 1, _size(size),
                                                 "  above 4 GiB" if base >= 1 << 32 else ""))
    print("heap:      %s total, %s used, %s free" % (
        _size(mem["heap_total"]), _size(gc.mem_alloc()), _size(gc.mem_free())))


def cmd_config(args):
    if args:
        raise UsageError("config")
    get = getattr(hv, "config_text", None)
    if get is None:
        raise ValueError("this image carries no configuration text (built before 'config' was supported)")
    text = get()
    if not text:
        raise ValueError("the image's configuration text is missing or does not match its signed length")
    if isinstance(text, str):
        text = text.encode()
    hv.write(_safe(text))
    if text and not text.endswith(b"\n"):
        hv.write(b"\n")


def cmd_py(args):
    print("MicroPython REPL; Ctrl-D returns to the taipan shell")
    hv.repl()


def cmd_reboot(args):
    print("rebooting")
    hv.reboot()


# ---- partitions ---------------------------------------------------------


def _record(index, tsc_khz):
    """One partition as `ps --json` and `stats --json` give it (docs/console.md)."""
    part = manager.info(index)
    policy, limit = manager.restart_policy(part)
    return {
        "name": part["name"],
        "state": part["state"],
        "exit_code": part["exit_code"] if part["state"] == "exited" else None,
        "reason": part["reason"],
        "kind": part["kind"],
        "memory": part["memory"],
        "autostart": part["autostart"],
        "cpu_us": part["cpu_us"],
        "uptime_us": manager.uptime_us(index, tsc_khz),
        "starts": part["starts"],
        "restarts": manager.restarts.get(index, 0),
        "restart_policy": policy,
        "restart_limit": limit,
        "cpu": part["cpu"],
        "slice_us": part["slice_us"],
        "upcalls": part["upcalls"],
        "denied": part["denied"],
        "denied_ports": [{"port": port, "dir": d, "count": n} for port, d, n in part["denied_ports"]],
        "halts": part["halts"],
        "interrupts": part["interrupts"],
        "console_bytes": part["console_bytes"],
        "console_dropped": part["console_dropped"],
        "exits": part["exits"],
        "python_runs": usermods.counts(index)[0],
        "python_failures": usermods.counts(index)[1],
    }


def _exits(exits):
    return " ".join("%s=%d" % (k, exits[k]) for k in sorted(exits)) or "-"


def _state(rec):
    if rec["state"] == "exited":
        return "exited(%d)" % rec["exit_code"]
    return rec["state"]


def _seconds(us):
    return "-" if us is None else "%.2fs" % (us / 1e6)


def _records(args, usage):
    args, opts = _options(args, usage, flags=("--json",))
    if len(args) > 1:
        raise UsageError(usage)
    khz = _tsc_khz()
    indexes = [manager.find(args[0])] if args else range(manager.count())
    return [_record(i, khz) for i in indexes], "--json" in opts


def cmd_ps(args):
    recs, as_json = _records(args, "ps [NAME] [--json]")
    if as_json:
        _json({"partitions": recs})
        return
    print("%-12s %-12s %3s %8s %9s  %-12s %8s  %s" % (
        "NAME", "STATE", "CPU", "MEMORY", "TIME", "RESTARTS", "DROPPED", "EXITS"))
    for rec in recs:
        restarts = "%d/%d %s" % (rec["restarts"], rec["restart_limit"], rec["restart_policy"])
        print("%-12s %-12s %3d %8s %9s  %-12s %8d  %s" % (
            rec["name"], _state(rec), rec["cpu"], _size(rec["memory"]), _seconds(rec["cpu_us"]),
            restarts, rec["console_dropped"], _exits(rec["exits"])))
        if rec["reason"] and rec["state"] in ("faulted", "stopped", "unusable", "exited"):
            print("%-12s %s" % ("", rec["reason"]))


def cmd_stats(args):
    recs, as_json = _records(args, "stats [NAME] [--json]")
    if as_json:
        _json({"partitions": recs})
        return
    for rec in recs:
        print("%s: %s, %s %s, slice %d us" % (rec["name"], _state(rec), _size(rec["memory"]), rec["kind"],
                                             rec["slice_us"]))
        print("  time      %s in the guest, %s since its last start" % (
            _seconds(rec["cpu_us"]), _seconds(rec["uptime_us"])))
        print("  cpu       %d; %d halts, %d up-calls to policy" % (rec["cpu"], rec["halts"], rec["upcalls"]))
        print("  python    %d calls into its own modules, %d failed" % (
            rec["python_runs"], rec["python_failures"]))
        if rec["denied"]:
            print("  denied    %d port accesses: %s" % (rec["denied"], ", ".join(
                "0x%x %s x%d" % (d["port"], d["dir"], d["count"]) for d in rec["denied_ports"])))
        print("  starts    %d, %d restarted by its policy (%s, limit %d)" % (
            rec["starts"], rec["restarts"], rec["restart_policy"], rec["restart_limit"]))
        print("  console   %d bytes written, %d dropped" % (rec["console_bytes"], rec["console_dropped"]))
        print("  vm exits  %s" % _exits(rec["exits"]))
        if rec["reason"]:
            print("  reason    %s" % rec["reason"])


def _device_ports(mod):
    return list(mod.ports) if mod.kind == "device" and not mod.mmio[1] else None


def cmd_devices(args):
    args, opts = _options(args, "devices [--json]", flags=("--json",))
    if args:
        raise UsageError("devices [--json]")
    recs = [{"partition": usermods.owner_name(m), "kind": m.kind, "path": m.path,
             "sha256": m.sha256, "loaded": m.module is not None, "pushed": m.pushed, "loads": m.loads,
             "runs": m.runs, "failures": m.failures, "failure_limit": m.failure_limit,
             "last_error": m.last_error, "ports": _device_ports(m),
             "mmio": list(m.mmio) if m.mmio[1] else None,
             "irq": m.irq if m.irq != usermods.NO_IRQ else None} for m in usermods.modules]
    if "--json" in opts:
        _json({"modules": recs})
        return
    if not recs:
        print("no user modules: a partition's `policy` in the configuration adds one")
        return
    print("%-12s %-8s %-28s %-12s %-8s %6s %9s" % ("PARTITION", "KIND", "PATH", "SHA256", "STATE", "RUNS", "FAILURES"))
    for rec in recs:
        print("%-12s %-8s %-28s %-12s %-8s %6d %5d/%-3d" % (
            rec["partition"], rec["kind"], rec["path"], rec["sha256"][:12],
            _module_state(rec), rec["runs"], rec["failures"], rec["failure_limit"]))
        if rec["last_error"]:
            print("%-12s %s" % ("", rec["last_error"]))


def _module_state(rec):
    if not rec["loaded"]:
        return "failed"
    return "pushed" if rec["pushed"] else "loaded"


def cmd_policy(args):
    if len(args) != 2 or args[1] != "reload":
        raise UsageError("policy NAME reload")
    if args[0] == "platform":
        mod = usermods.sched
        if mod is None:
            raise ValueError("the platform has no scheduler module ([platform] scheduler)")
    else:
        mod = usermods.policies.get(manager.find(args[0]))
        if mod is None:
            raise ValueError("%s has no policy module (its `policy` key)" % args[0])
    if usermods.load(mod):
        source = "as pushed" if mod.pushed else "from the table"
        manager.event("%s: %s reloaded %s (sha256 %s)" % (args[0], mod.path, source, mod.sha256[:12]))
        print("%s: %s reloaded%s (sha256 %s)" % (args[0], mod.path, " as pushed" if mod.pushed else "",
                                                 mod.sha256[:12]))
    else:
        raise ValueError("%s: %s did not load: %s" % (args[0], mod.path, mod.last_error))


def cmd_start(args):
    index = _one_name(args, "start NAME")
    manager.start(index)
    print("%s started" % args[0])


def cmd_stop(args):
    index = _one_name(args, "stop NAME")
    manager.stop(index)
    print("%s stopped" % args[0])


def cmd_restart(args):
    index = _one_name(args, "restart NAME")
    manager.restart(index)
    print("%s restarted" % args[0])


def _last_lines(data, n):
    # Bytes, not text: a guest may write anything, and the console shows it as it came.
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[-n:]


def cmd_log(args):
    usage = "log [NAME] [-n LINES]"
    args, opts = _options(args, usage, valued=("-n",))
    lines = _count(opts["-n"], usage) if "-n" in opts else 20
    if len(args) > 1:
        raise UsageError(usage)
    if args:
        data = hv.console_tail(manager.find(args[0]), LOG_BYTES)
    else:
        data = hv.journal_tail(LOG_BYTES)
    for line in _last_lines(data, lines):
        hv.write(_safe(line) + b"\n")


def _console_totals(skip):
    """(bytes written, bytes dropped) per partition other than skip."""
    return {i: (p["console_bytes"], p["console_dropped"])
            for i, p in ((i, manager.info(i)) for i in range(manager.count())) if i != skip}


def _follow(read, escape, write_input=None):
    """Copy read() to the console until the escape key (or any key, when write_input is None).

    Meanwhile Ctrl-C belongs to the partition and announcements wait: the
    line is not the shell's.
    """
    import micropython

    micropython.kbd_intr(-1)
    manager.quiet = True
    manager.unseen = 0
    try:
        while True:
            data = read()
            if data:
                hv.write(data)
            key = hv.poll_char()
            if key == escape or (key >= 0 and write_input is None):
                return
            if key >= 0:
                write_input(bytes([key]))
            elif not data:
                scheduler.tick()
                hv.sched_yield()
    finally:
        manager.quiet = False
        micropython.kbd_intr(3)


def _drain(read):
    while read(4096):
        pass


def cmd_tail(args):
    if len(args) > 1:
        raise UsageError("tail [NAME]")
    if args:
        index = manager.find(args[0])
        recent = hv.console_tail(index, LOG_BYTES)

        def read(n):
            return hv.console_read(index, n)
    else:
        recent = hv.journal_tail(LOG_BYTES)
        read = hv.journal_read
    print("following %s; press any key to stop" % (args[0] if args else "all partitions"))
    for line in _last_lines(recent, TAIL_LINES):
        hv.write(_safe(line) + b"\n")
    _drain(read)
    at_start = [True]

    def shown():
        data = read(512)
        safe = _safe(data, at_start[0])
        if data:
            at_start[0] = data.endswith(b"\n")
        return safe
    _follow(shown, None)
    print()


def cmd_console(args):
    index = _one_name(args, "console NAME")
    escape = escape_key()
    before = _console_totals(index)
    print("console %s: the line is the partition's now; %s returns to the shell" % (args[0], key_name(escape)))
    _follow(lambda: hv.console_read(index, 512), escape, lambda data: hv.console_input(index, data))
    after = _console_totals(index)
    wrote = [after[i][0] - before[i][0] for i in after if i in before]
    dropped = sum(after[i][1] - before[i][1] for i in after if i in before)
    note = "\nback at taipan>: %d partition%s wrote %d bytes while attached (%d dropped)" % (
        sum(1 for n in wrote if n), "" if sum(1 for n in wrote if n) == 1 else "s", sum(wrote), dropped)
    if manager.unseen:
        note += "; %d announcement%s held: see 'events'" % (manager.unseen, "" if manager.unseen == 1 else "s")
    print(note)


def cmd_events(args):
    if args:
        raise UsageError("events")
    for _ticks, text in manager.events:
        print(text)


def cmd_debug(args):
    global debug
    if len(args) > 1 or (args and args[0] not in ("on", "off")):
        raise UsageError("debug [on|off]")
    if args:
        debug = args[0] == "on"
        print("tracebacks after errors: %s" % args[0])
    elif manager.last_traceback:
        print(manager.last_traceback.rstrip("\n"))
    else:
        print("no unexpected exception since the shell started")


# name: (function, usage, what it does, details for 'help NAME') - MicroPython keeps no docstrings.
# ---- scheduling -------------------------------------------------------


def _owner_name(owner):
    return "management" if owner == -1 or owner == "management" else manager.info(owner)["name"]


def _sched_doc():
    cpus = []
    for c in hv.cpus():
        doc = {"cpu": c["index"], "apic_id": c["apic_id"], "state": c["state"], "problem": c["problem"],
               "running": None if c["running"] is None else _owner_name(c["running"])}
        if c["state"] == "online":
            got = hv.plan_get(c["index"])
            elapsed = got["elapsed_us"] or 1
            doc.update({"kind": got["kind"], "frame_us": got["frame_us"], "frames": got["frames"],
                        "elapsed_us": got["elapsed_us"], "idle_us": got["idle_us"],
                        "windows": [{"owner": _owner_name(w["owner"]), "us": w["us"], "runs": w["runs"],
                                     "run_us": w["run_us"], "share": w["run_us"] / elapsed,
                                     "preempts": w["preempts"], "halts": w["halts"],
                                     "overruns": w["overruns"], "late_max_us": w["late_max_us"],
                                     "over_max_us": w["over_max_us"]}
                                    for w in got["windows"]]})
        cpus.append(doc)
    return {"cpus": cpus}


def _ms_text(us):
    return "%d ms" % (us // 1000) if us % 1000 == 0 else "%.3f ms" % (us / 1000)


def cmd_sched(args):
    if args and args[0] == "set":
        _sched_set(args[1:])
        return
    args, opts = _options(args, SCHED_USAGE, flags=("--json",))
    if args:
        raise UsageError(SCHED_USAGE)
    doc = _sched_doc()
    if "--json" in opts:
        _json(doc)
        return
    for c in doc["cpus"]:
        head = "cpu %d (APIC ID %d): %s" % (c["cpu"], c["apic_id"], c["state"])
        if c["state"] != "online":
            print("%s - %s" % (head, c["problem"] or "not running"))
            continue
        frame = ", frame %s, %d frames" % (_ms_text(c["frame_us"]), c["frames"]) if c["kind"] == "cyclic" else ""
        print("%s, %s%s, %s measured, %s idle" % (head, c["kind"], frame, _seconds(c["elapsed_us"]),
                                                 _seconds(c["idle_us"])))
        if c["windows"]:
            print("  %-12s %9s %8s %9s %6s %8s %7s %8s %9s %9s" % (
                "OWNER", "WINDOW", "RUNS", "RAN", "SHARE", "PREEMPTS", "HALTS", "OVERRUNS", "LATE-MAX",
                "OVER-MAX"))
        for w in c["windows"]:
            print("  %-12s %9s %8d %9s %5.1f%% %8d %7d %8d %7dus %7dus" % (
                w["owner"], "-" if c["kind"] == "dedicated" else _ms_text(w["us"]), w["runs"],
                _seconds(w["run_us"]), 100 * w["share"], w["preempts"], w["halts"], w["overruns"],
                w["late_max_us"], w["over_max_us"]))


def _ms_arg(text):
    try:
        ms = float(text)
    except ValueError:
        raise ValueError("'%s' is not a number of milliseconds" % _shown(text)) from None
    return int(ms * 1000 + 0.5)


def _owner_arg(name):
    return "management" if name == "management" else manager.find(name)


def _sched_set(args):
    """sched set CPU KIND [FRAME_MS] [OWNER[=MS] ...]: a new plan for one CPU, checked as the config is."""
    import plan

    if len(args) < 2:
        raise UsageError(SCHED_SET_USAGE)
    try:
        cpu = int(args[0])
    except ValueError:
        raise UsageError(SCHED_SET_USAGE) from None
    kind, rest = args[1], args[2:]
    if cpu < 0 or cpu >= len(scheduler.plans):
        raise ValueError("no CPU %d in the plan (CPUs 0 to %d)" % (cpu, len(scheduler.plans) - 1))
    frame_us = 0
    if kind == "cyclic":
        if not rest:
            raise UsageError(SCHED_SET_USAGE)
        frame_us, rest = _ms_arg(rest[0]), rest[1:]
    windows = []
    for word in rest:
        name, _, ms = word.partition("=")
        windows.append((_owner_arg(name), _ms_arg(ms) if ms else 0))
    if kind == "round-robin":
        frame_us = sum(us for _, us in windows)
    new = {"cpu": cpu, "kind": kind, "frame_us": frame_us, "windows": windows}
    scheduler.change(new)
    print(plan.describe([new], manager.names())[0])


SCHED_SET_USAGE = "sched set CPU idle | dedicated NAME | round-robin OWNER=MS... | cyclic FRAME_MS OWNER=MS..."
SCHED_USAGE = "sched [--json] | " + SCHED_SET_USAGE


COMMANDS = {
    "help": (cmd_help, "help [COMMAND]", "list the commands, or explain one", ()),
    "ps": (cmd_ps, "ps [NAME] [--json]", "partitions: state, memory, CPU time, restarts, dropped output, exits", (
        "RESTARTS is restarts made by the partition's policy / its limit, then the policy",
        "(never, on-fault or always); DROPPED counts console bytes lost before anyone read them.",
        "--json: one line {\"partitions\": [...]} (docs/console.md)",
    )),
    "stats": (cmd_stats, "stats [NAME] [--json]", "counters: VM exits by reason, time running, console bytes", (
        "time: CPU time inside the guest and wall time since its last start;",
        "console: bytes the guest wrote and bytes its ring overwrote unread.",
        "--json: the same document as 'ps --json'",
    )),
    "start": (cmd_start, "start NAME", "(re)load a partition's image and start it", (
        "resets the count of restarts its policy has made",
    )),
    "stop": (cmd_stop, "stop NAME", "stop a partition (state 'stopped'; no policy restarts it)", ()),
    "restart": (cmd_restart, "restart NAME", "stop a partition if it runs, then start it from its image", ()),
    "log": (cmd_log, "log [NAME] [-n LINES]", "a partition's console output (all of them merged, without NAME)", (
        "the last LINES lines (20) its console ring still holds; merged lines read '[name] text'",
    )),
    "tail": (cmd_tail, "tail [NAME]", "follow console output until a key is pressed", (
        "shows the last %d lines, then new output as it comes" % TAIL_LINES,
    )),
    "console": (cmd_console, "console NAME", "give the serial line to a partition (input and output)", (
        "first comes what it wrote while nobody was attached (up to its ring's size),",
        "then its live output; keys go to it, Ctrl-C included. The escape key",
        "(Ctrl-] unless [platform] console_escape says otherwise) returns to the shell",
        "with a note of what the other partitions wrote meanwhile.",
    )),
    "events": (cmd_events, "events", "what the hypervisor decided: starts, stops, faults, restarts, policy", ()),
    "info": (cmd_info, "info [--json]", "CPU, virtualization features, clocks, boot loader and the memory map", (
        "--json: one line with version, cpu, clock, backend, boot, memory, heap, partitions",
    )),
    "mem": (cmd_mem, "mem", "page allocator and MicroPython heap use", ()),
    "sched": (cmd_sched, SCHED_USAGE, "each CPU's plan and what its windows did", (
        "per CPU: its plan (dedicated, round-robin or cyclic) and, per window, runs, time,",
        "share of the time measured, preemptions, halts, overruns and the latest start.",
        "sched set changes one CPU's plan; OWNER is a partition on that CPU or 'management'",
        "(CPU 0); it is checked by the configuration's rules (hv/py/plan.py).",
        "--json: one line {\"cpus\": [...]} (docs/console.md)",
    )),
    "config": (cmd_config, "config", "the active configuration, as the hypervisor holds it", ()),
    "devices": (cmd_devices, "devices [--json]", "the user's Python modules: partition, file, sha256, runs, failures", (
        "each module the configuration names (a partition's `policy`, [platform] scheduler), as signed into the",
        "table (or as `taipan ctl push` put it there: state pushed): its sha256, whether it loaded,",
        "calls made into it and failures against its limit.",
        "--json: one line {\"modules\": [...]} (docs/console.md)",
    )),
    "policy": (cmd_policy, "policy NAME reload", "load a partition's policy module again from the table", (
        "NAME 'platform' is the scheduler module ([platform] scheduler).",
        "a fresh module from the signed bytes (a pushed one's: its own), its failures forgiven; between two exits",
        "(MicroPython answers one up-call at a time), so no exit sees half of each",
    )),
    "debug": (cmd_debug, "debug [on|off]", "the last unexpected exception's traceback", (
        "on: also print the traceback after every unexpected exception's error line",
    )),
    "py": (cmd_py, "py", "the MicroPython REPL (Ctrl-D returns here)", ()),
    "reboot": (cmd_reboot, "reboot", "reset the machine", ()),
}


def _report(name, e):
    """One `error:` line for what a command raised; the traceback of the unexpected kept for `debug`."""
    if isinstance(e, KeyboardInterrupt):
        print("error: interrupted")
    elif isinstance(e, UsageError):
        print("error: usage: %s" % e)
    elif isinstance(e, (ValueError, OSError)):
        print("error: %s" % _one_line(e))
    else:
        manager.unexpected("command '%s'" % name, e, show=False)
        print("error: %s: %s (in '%s'; 'debug' shows the traceback)" % (
            type(e).__name__, _shown(_one_line(e)), name))
        if debug:
            print(manager.last_traceback.rstrip("\n"))


def execute(line):
    words = line.split()
    if not words:
        return
    name = words[0]
    entry = COMMANDS.get(name)
    if entry is None:
        print("error: unknown command '%s' (try 'help')" % _shown(name))
        return
    raised = hv.interruptible(entry[0], words[1:])
    if isinstance(raised, SystemExit):  # Ctrl-A in the `py` REPL: on to the raw REPL
        raise raised
    if raised is not None:
        _report(name, raised)


def _read_line():
    """The next line typed, as text; None when there is nothing to run."""
    words = manager.names() + ["json"]  # 'json' completes '--js' to '--json'
    try:
        raw = hv.input(PROMPT, list(COMMANDS), words)
    except (KeyboardInterrupt, EOFError):
        print()
        return None
    except OverflowError as e:
        print("error: %s" % e)
        return None
    try:
        return raw.decode()
    except UnicodeError:
        print("error: the line is not text")
        return None


def run():
    """Read and run lines forever. Ctrl-C is an ordinary key here (main.py
    turned it off) except inside a command, so nothing interrupts this loop."""
    while True:
        try:
            line = _read_line()
            if line is not None:
                execute(line)
        except SystemExit:  # Ctrl-A: the raw REPL takes the line
            raise
        except BaseException as e:  # the shell itself went wrong: say so in one line and go on
            manager.unexpected("the shell", e, show=False)
            print("error: %s: %s ('debug' shows the traceback)" % (type(e).__name__, _shown(_one_line(e))))
