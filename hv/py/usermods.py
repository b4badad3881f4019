# The user's Python from the system description: the modules the signed table lists, loaded from their .mpy bytes, called under a guard.
import gc

import hv
import irqline
import manager

# struct pt_header and struct pt_module (toolchain/ptable.py; tests/test_user_modules.py
# checks these against it).
MODULE_COUNT_AT = 116
MODULES_OFFSET_AT = 120
MODULE_SIZE = 176
MODULE_IRQ_AT = 12
MODULE_PATH_AT = 64
MODULE_PATH_SIZE = 96
MODULE_MMIO_AT = 160
# struct pt_module's irq for a device with no IOAPIC pin.
NO_IRQ = 0xFF
HEADER_FLAGS_AT = 2432
HEADER_FLAG_DEV = 1  # built with --dev: `taipan ctl TARGET push` may replace a policy
KINDS = ("policy", "scheduler", "device")
# struct pt_module's owner for the platform's scheduler module (no partition).
OWNER_PLATFORM = 0xFF
# How often a scheduler module's on_tick and a Device's tick run unless they set PERIOD_MS.
PERIOD_MS_DEFAULT = 1000
DEVICE_PERIOD_MS = 100
# What a policy may answer, beside None (ours decides).
ACTIONS = ("emulate", "deny", "stop")


class UserModule:
    """One module of the table: where it came from, its loaded module, how often it ran and failed."""

    def __init__(self, kind, owner, path, sha256, mpy, failure_limit, budget_ms, ports, irq, mmio):
        self.kind = kind
        self.owner = owner
        self.path = path
        self.sha256 = sha256
        self.mpy = mpy
        self.failure_limit = failure_limit
        self.budget_us = budget_ms * 1000
        self.ports = ports  # a device's (first, last)
        self.irq = irq  # a device's IOAPIC pin, or NO_IRQ
        self.mmio = mmio  # a device's (first, last) guest-physical bytes, or (0, 0)
        self.module = None
        self.device = None  # a device model's Device instance
        self.next_tick = 0  # ms: when its Device.tick is due
        self.runs = 0
        self.failures = 0
        self.last_error = ""
        self.loads = 0
        self.pushed = False  # its bytes came by `taipan ctl push`, not from the signed table


modules = []  # every UserModule, in table order
policies = {}  # partition index -> its policy's UserModule
devices = {}  # partition index -> its device models' UserModules
sched = None  # the platform's scheduler module, if the configuration names one
# (index, why) of partitions whose modules reached their failure limit: stopped
# by enforce() from the idle tick, once the up-call that failed has been answered.
_to_stop = []


def _u16(blob, at):
    return blob[at] | blob[at + 1] << 8


def _u32(blob, at):
    return _u16(blob, at) | _u16(blob, at + 2) << 16


def _u64(blob, at):
    return _u32(blob, at) | _u32(blob, at + 4) << 32


def _records(blob):
    count = _u32(blob, MODULE_COUNT_AT)
    base = _u64(blob, MODULES_OFFSET_AT)
    for number in range(count):
        at = base + number * MODULE_SIZE
        offset, size = _u64(blob, at + 16), _u64(blob, at + 24)
        path = bytes(blob[at + MODULE_PATH_AT:at + MODULE_PATH_AT + MODULE_PATH_SIZE])
        yield UserModule(KINDS[blob[at]], blob[at + 1], path.split(b"\0", 1)[0].decode(),
                         bytes(blob[at + 32:at + 64]).hex(), bytes(blob[offset:offset + size]),
                         _u16(blob, at + 2), _u32(blob, at + 4), (_u16(blob, at + 8), _u16(blob, at + 10)),
                         blob[at + MODULE_IRQ_AT], (_u64(blob, at + MODULE_MMIO_AT), _u64(blob, at + MODULE_MMIO_AT + 8)))


def init():
    """Load every module the (already checked) table lists; a module that fails to load stays unloaded.

    Leaving the raw REPL (Ctrl-B) runs main.py again without a soft reset: the
    modules loaded then, and any pushed since, stay as they are.
    """
    global modules
    if modules:
        return
    modules = list(_records(hv.ptable()))
    global sched
    for mod in modules:
        if mod.owner == OWNER_PLATFORM:
            sched = mod
        elif mod.kind == "device":
            devices.setdefault(mod.owner, []).append(mod)
            # Its ports or MMIO range come up to Python; every other port a guest touches
            # is denied in C, every other address outside its memory stops it.
            if mod.mmio[1]:
                hv.part_claim_mmio(mod.owner, mod.mmio[0], mod.mmio[1])
            else:
                hv.part_claim(mod.owner, mod.ports[0], mod.ports[1])
        else:
            policies[mod.owner] = mod
        load(mod)
    manager.on_started = lambda index: notify(index, "on_start", (hv.part_info(index)["name"],))


def load(mod):
    """(Re)load mod from its signed bytes: a fresh module, its failures forgiven. True when it loaded."""
    name = mod.path.rsplit("/", 1)[-1].split(".")[0]
    ok, result = hv.run_guarded(hv.load_module, (name, mod.mpy), mod.budget_us)
    mod.loads += 1
    mod.failures = 0
    mod.device = None
    if ok and mod.kind == "device":
        # A model's state is one Device per partition, made as the module loads.
        made, device = hv.run_guarded(getattr(result, "Device", _no_device), (owner_name(mod),), mod.budget_us)
        if not made:
            mod.module = None
            _failed(mod, "Device()", device)
            return False
        if mod.irq != NO_IRQ:
            device.irq = irqline.IrqLine(mod.owner, mod.irq)
        mod.device = device
    if ok:
        mod.module = result
        return True
    mod.module = None
    _failed(mod, "loading", result)
    return False


def dev_image():
    """Whether the image was built with --dev (a flag of the signed table's header)."""
    blob = hv.ptable()
    return len(blob) >= HEADER_FLAGS_AT + 4 and bool(_u32(blob, HEADER_FLAGS_AT) & HEADER_FLAG_DEV)


def push(name, path, mpy, sha256):
    """Replace partition `name`'s policy with `mpy` (the .mpy bytes of `path`), as `taipan ctl push` asks.

    Only in an image built with --dev: any other refuses with ValueError, as it
    does a partition without a policy module or bytes whose sha256 is not
    `sha256` (altered on the line). The new module loads under the guard while
    the old one keeps answering; only if it loaded does one store put it in
    the old one's place. Up-calls are answered on CPU 0 by MicroPython, one at
    a time between bytecodes, so each exit sees the old module or the new,
    never half of either: that is "swapped atomically between exits".
    """
    if not dev_image():
        raise ValueError("this image was built without --dev: replacing a policy at run time is refused "
                         "(build it with 'taipan build --dev' or 'taipan run --dev')")
    import hashlib

    index = manager.find(name)
    old = policies.get(index)
    if old is None:
        raise ValueError("%s has no policy module (its `policy` key): nothing to replace" % name)
    digest = hashlib.sha256(mpy).digest().hex()
    if digest != sha256:
        raise ValueError("%s arrived altered: sha256 %s, not the %s sent" % (path, digest[:12], sha256[:12]))
    new = UserModule("policy", index, path, digest, mpy, old.failure_limit, old.budget_us // 1000, (0, 0),
                     NO_IRQ, (0, 0))
    new.pushed = True
    module = path.rsplit("/", 1)[-1].split(".")[0]
    ok, result = hv.run_guarded(hv.load_module, (module, mpy), new.budget_us)
    if not ok:
        at = where(result)
        why = "%s: push of %s refused: loading raised %s: %s%s; %s stays" % (
            name, path, type(result).__name__, result, (" at " + at) if at else "", old.path)
        manager.last_traceback = "%s (loading):\n%s" % (path, manager.traceback_text(result))
        manager.event(why)
        raise ValueError(why)
    new.module = result
    new.loads = 1
    modules[modules.index(old)] = new
    policies[index] = new
    manager.event("%s: policy replaced by push of %s sha256 %s" % (name, path, digest))
    return digest


def _no_device(name):
    raise TypeError("a device model defines class Device(name) with read and write")


def where(e):
    """'FILE line N' of the innermost frame in the traceback of e, or '' when it has none."""
    found = ""
    for line in manager.traceback_text(e).split("\n"):
        line = line.strip()
        if line.startswith('File "'):
            parts = line.split('"')
            rest = parts[2].split(",")
            found = "%s %s" % (parts[1], rest[1].strip() if len(rest) > 1 else "")
    return found


def owner_name(mod):
    return "platform" if mod.owner == OWNER_PLATFORM else hv.part_info(mod.owner)["name"]


def _failed(mod, what, e):
    mod.failures += 1
    freed = ""
    if isinstance(e, MemoryError):
        # Its globals may hold what filled the heap: let go of them before anything else
        # (this very report needs the heap), and start it again from its signed bytes, its
        # failures still counted. A module that cannot load stays unloaded.
        mod.module = mod.device = None
        gc.collect()
        failures = mod.failures
        freed = "; %s to free the heap" % ("reloaded" if what != "loading" and load(mod) else "unloaded")
        mod.failures = failures
    name = owner_name(mod)
    mod.last_error = "%s raised %s: %s%s" % (what, type(e).__name__, e, (" at " + where(e)) if where(e) else "")
    manager.last_traceback = "%s (%s):\n%s" % (mod.path, what, manager.traceback_text(e))
    manager.event("%s: %s %s (failure %d of %d; answered deny%s)" % (
        name, mod.path, mod.last_error, mod.failures, mod.failure_limit, freed), show=True)
    if mod.failures >= mod.failure_limit and mod.owner == OWNER_PLATFORM:
        # No partition to stop: the plans stay as they are, the module runs no more.
        mod.module = None
        manager.event("platform: scheduler %s failed %d times and is unloaded; the plans in force "
                      "stay ('policy platform reload' loads it again)" % (mod.path, mod.failures), show=True)
    elif mod.failures >= mod.failure_limit:
        _to_stop.append((mod.owner, "its %s %s failed %d times (last: %s)" % (
            mod.kind, mod.path, mod.failures, mod.last_error)))


def limit_reached(index):
    """Why a partition's modules failed too often, taken from the stop list, or None.

    An up-call that failed for the last time is answered "stop" (the C side
    stops the partition before its next entry), so no request has to wait.
    """
    for number, (owner, why) in enumerate(_to_stop):
        if owner == index:
            _to_stop.pop(number)
            return "stopped: " + why
    return None


def enforce():
    """Stop the partitions whose modules reached their failure limit, saying why."""
    while _to_stop:
        index, why = _to_stop.pop(0)
        if hv.part_state(index) == "running":
            manager.stop(index, why, show=True)


def call(mod, callback, args):
    """(True, what mod's callback returned), or (False, None): no such callback, or it failed.

    A device model's callbacks are its Device's methods.
    """
    owner = mod.device if mod.kind == "device" else mod.module
    fn = getattr(owner, callback, None) if mod.module is not None else None
    if fn is None:
        return False, None
    mod.runs += 1
    ok, result = hv.run_guarded(fn, args, mod.budget_us)
    if not ok:
        _failed(mod, callback, result)
        return False, None
    return True, result


# The callback each up-call kind goes to (docs/python-api.md).
CALLBACKS = {"io": "on_io", "msr_read": "on_msr", "msr_write": "on_msr", "cpuid": "on_cpuid",
             "mmio": "on_mmio"}


def device_answer(mod, exit):
    """A device model's answer to an access to its ports or MMIO range, as (action, value).

    A device model (a partition's `devices = [{ model = FILE, ports = RANGE }]`,
    or `mmio = RANGE` instead of `ports`) defines `class Device`, made once per
    partition as `Device(name)` when the module loads. A read calls
    `read(addr, size)`, which answers the int the guest reads; a write calls
    `write(addr, size, value)`, whose answer is ignored. For ports, `addr` is
    the port and an IN or OUT is the access (size 1, 2 or 4); for MMIO, `addr`
    is the guest-physical address and a MOV load or store is the access (size
    1, 2, 4 or 8; `value` is what the guest stores, an immediate sign-extended
    to 64 bits for an 8-byte store). With `irq = PIN` in its entry the Device
    gets `self.irq`, an `irqline.IrqLine` for that pin of its partition's
    IOAPIC, set right after `Device(name)` returns. Its `tick(now_ms)`, if it
    has one, runs every `PERIOD_MS` of the class (100 by default) and may
    raise its line or answer "restart" or "stop" for its partition; timers are
    `time.ticks_ms()` and `time.ticks_diff` against a deadline kept in the
    Device. Failures count against the partition's `python_failures` as a
    policy's do; a failed read reads all ones, a failed write is dropped.
    """
    had = mod.failures
    addr = exit["addr"] if exit["kind"] == "mmio" else exit["port"]
    if exit["input"]:
        ok, value = call(mod, "read", (addr, exit["size"]))
        if ok and isinstance(value, int) and not isinstance(value, bool):
            return ("emulate", value)
        if ok:
            _failed(mod, "read", ValueError("answered %r: not an int" % (value,)))
    else:
        ok, _ = call(mod, "write", (addr, exit["size"], exit["value"]))
        if ok:
            return ("emulate", 0)
    return ("deny", 0) if mod.failures > had or not ok else None


def answer(index, name, exit):
    """A user policy's answer to one up-call as (action, value), or None when ours decides.

    The exit goes to the callback CALLBACKS names for its kind, called as
    `callback(name, exit)`: `name` is the partition's, `exit` a dict with `kind`
    ("io", "msr_read", "msr_write", "cpuid"), `reason` (the vendor's exit code),
    `rip`, `port`, `size` and `input` (I/O), `addr` (MMIO's guest-physical
    address), `msr`, and `value` (what an OUT or WRMSR writes, the guest's RAX;
    for MMIO what the store writes). The callback may answer:

    - None: Taipan's own policy decides (deny, logged once);
    - an int: emulate, with that value as what an IN or RDMSR reads;
    - ("emulate", value), ("deny",) or ("stop",): deny reads all ones for an IN,
      drops an OUT, and raises #GP for an MSR, as a CPU without it would; stop
      stops the partition.

    An exception, a MemoryError, a run past `[scheduler] python_budget_ms` or any
    other answer is a failure: logged with the file and line, the exit denied;
    after the partition's `python_failures` it is stopped with the reason.
    MSR exits reach a policy only for MSRs the virtual CPU does not own
    (docs/vcpu.md); CPUID only from partitions built with the cpuid_upcall test
    hook. MMIO exits are handed up only from a device model's `mmio` range and
    go to that Device (device_answer); an access anywhere else outside the
    partition's memory stops it in C, so `on_mmio` is not called today.
    """
    for dev in devices.get(index, ()):
        if exit["kind"] == "io" and not dev.mmio[1] and dev.ports[0] <= exit["port"] <= dev.ports[1] \
                or exit["kind"] == "mmio" and dev.mmio[0] <= exit["addr"] <= dev.mmio[1]:
            return device_answer(dev, exit)
    mod = policies.get(index)
    callback = CALLBACKS.get(exit["kind"])
    if mod is None or callback is None:
        return None
    had = mod.failures
    ok, result = call(mod, callback, (name, exit))
    if not ok:
        # No such callback: ours decides; a failure: the exit is denied.
        return ("deny", 0) if mod.failures > had else None
    if result is None:
        return None
    if isinstance(result, int) and not isinstance(result, bool):
        return ("emulate", result)
    if isinstance(result, tuple) and len(result) in (1, 2) and result[0] in ACTIONS:
        return (result[0], result[1] if len(result) == 2 else 0)
    _failed(mod, callback, ValueError("answered %r: not None, an int or (%s, value)" % (
        result, "|".join(ACTIONS))))
    return ("deny", 0)


def notify(index, callback, args):
    """Tell a partition's policy about a lifecycle event; answers are ignored, failures count.

    `on_start(name)` each time it starts (at boot, by its restart policy, from
    the console); `on_stop(name, why)` when it exits or its up-call times out;
    `on_fault(name, why)` when the hypervisor stops it for a fault. The
    partition's restart policy then applies as usual.
    """
    mod = policies.get(index)
    if mod is not None:
        call(mod, callback, args)


def tick():
    """Run what is due: the scheduler module's on_tick(now_ms), each device's tick(now_ms).

    Called from the scheduler's idle tick, so at most as often as the console
    waits for a key; the idle console is woken for the next one due
    (hv.wake_at). The scheduler module runs every `PERIOD_MS` of the module
    (1000 by default), a Device every `PERIOD_MS` of its class (100), on the
    TSC clock; now_ms is the TSC in milliseconds. on_tick changes plans through
    scheduler.change (a plan the rules refuse raises ValueError there, a
    failure). A Device's tick may answer "restart" or "stop" for its
    partition, or None.
    """
    khz = _khz()
    if not khz:
        return
    now_ms = hv.ticks() // khz
    due = []
    if sched is not None and sched.module is not None:
        due.append((sched, "on_tick", getattr(sched.module, "PERIOD_MS", PERIOD_MS_DEFAULT)))
    for mods in devices.values():
        due += [(m, "tick", getattr(m.device, "PERIOD_MS", DEVICE_PERIOD_MS)) for m in mods
                if m.device is not None and hasattr(m.device, "tick")]
    wake = 0
    for mod, callback, period in due:
        if now_ms >= mod.next_tick:
            mod.next_tick = now_ms + period
            ok, result = call(mod, callback, (now_ms,))
            if ok and mod.kind == "device":
                _device_action(mod, result)
        wake = mod.next_tick if not wake else min(wake, mod.next_tick)
    # An idle console sleeps until a key or mail: wake it for the next one due too.
    if wake:
        hv.wake_at(wake * khz)
    enforce()


def _device_action(mod, action):
    if action is None or hv.part_state(mod.owner) != "running":
        return
    name = owner_name(mod)
    if action == "restart":
        manager.event("%s: %s asks for a restart" % (name, mod.path), show=True)
        manager.restart(mod.owner, "restarted by its device %s" % mod.path)
    elif action == "stop":
        manager.stop(mod.owner, "stopped by its device %s" % mod.path, show=True)
    else:
        _failed(mod, "tick", ValueError("answered %r: not None, \"restart\" or \"stop\"" % (action,)))


_tsc_khz = 0


def _khz():
    global _tsc_khz
    if not _tsc_khz:
        _tsc_khz = hv.clock()["tsc_khz"]
    return _tsc_khz


def counts(index):
    """(runs, failures) of a partition's modules, its policy's and devices', for `stats`."""
    mods = devices.get(index, []) + ([policies[index]] if index in policies else [])
    return sum(m.runs for m in mods), sum(m.failures for m in mods)
