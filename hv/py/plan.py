# The scheduling plan's rules: a plan per CPU derived from the configuration, and checked, by the same code on the build host and on the metal.
#
# Imported by toolchain/config.py under CPython (to check a configuration and
# derive the plan the partition table carries) and frozen into the image
# (hv/port/manifest.py), where `sched set` checks a plan edited at run time.
# So it stays within what both run: plain functions, dicts, lists and tuples,
# % formatting, no imports.
#
# A plan is a list with one dict per CPU:
#   {"cpu": k, "kind": "idle" | "dedicated" | "round-robin" | "cyclic",
#    "frame_us": int, "windows": [(owner, us), ...]}
# where owner is a partition index or "management" (MicroPython on CPU 0).
#   idle:        no windows, frame_us 0; the CPU halts.
#   dedicated:   one window (partition, 0): it runs with no time slicing.
#   round-robin: each partition's slice in config order, management first on
#                CPU 0; frame_us is one round, the windows summed.
#   cyclic:      fixed windows in order from the frame's start; the rest of
#                the frame idles (ARINC 653 style major frame).
# Errors are (key_path, value, rule) tuples; the caller adds the file name.

KINDS = ("idle", "dedicated", "round-robin", "cyclic")  # PT_PLAN_* in this order
MANAGEMENT = "management"
OWNER_MANAGEMENT = 0xFF  # the table's owner byte for management
CPUS_MAX = 16
# A round-robin CPU 0 holds management's window and one per partition, and
# the table holds up to 16 partitions: 17 windows.
WINDOWS_MAX = 17
VCPUS = 1  # vCPUs per partition today: one CPU each
MANAGEMENT_CPU = 0
# Management's round-robin slice when the configuration names none; raised
# to whatever keeps its minimum share with the slices on CPU 0.
MANAGEMENT_MS_DEFAULT = 10


def _quoted(name):
    return '"%s"' % name


def _ms(us):
    """Microseconds as milliseconds: "10 ms", "2.500 ms"."""
    if us % 1000 == 0:
        return "%d ms" % (us // 1000)
    return "%d.%03d ms" % (us // 1000, us % 1000)


def _beyond(cpu_count):
    return "CPU beyond the platform: platform.cpus = %d gives CPUs 0 to %d" % (
        cpu_count, cpu_count - 1)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def share(plan):
    """(management_us, frame_us) of one CPU's plan: management's time in each frame or round."""
    mine = 0
    for owner, us in plan["windows"]:
        if owner == MANAGEMENT:
            mine += us
    return mine, plan["frame_us"]


def percent(plan):
    """Management's share of this CPU in whole percent, rounded down."""
    mine, frame = share(plan)
    return mine * 100 // frame if frame else 0


def derive(cpu_count, partitions, schedules, scheduler):
    """The plan for every CPU from the configuration, and every rule it breaks.

    partitions: list of {"name", "cpu" (int or None), "cpus" (list or None),
    "slice_us"} in config order; schedules: the [[schedule]] tables as
    {"cpu", "major_frame_ms", "windows": [{"partition", "ms"}, ...]};
    scheduler: {"management_ms" (None: the default, raised as far as the
    minimum share needs), "management_min_percent"}.
    Returns (plans, errors): plans is [] unless errors is [].
    """
    errors = []
    names = [p["name"] for p in partitions]
    index_of = {}
    for i in range(len(names)):
        if names[i] not in index_of:
            index_of[names[i]] = i
    min_percent = scheduler["management_min_percent"]

    # [[schedule]]: one per CPU, windows that exist, last and fit the frame.
    cyclic = {}       # cpu -> schedule index
    named_on = {}     # partition index -> (cpu, schedule index, window index) of its first window
    for s in range(len(schedules)):
        sched = schedules[s]
        at = "schedule[%d]" % s
        cpu = sched["cpu"]
        ok = True
        if cpu < 0 or cpu >= cpu_count:
            errors.append((at + ".cpu", cpu, _beyond(cpu_count)))
            ok = False
        elif cpu in cyclic:
            errors.append((at + ".cpu", cpu, "CPU %d already has a schedule (schedule[%d]); "
                           "one schedule per CPU" % (cpu, cyclic[cpu])))
            ok = False
        frame = sched["major_frame_ms"]
        if frame < 1:
            errors.append((at + ".major_frame_ms", frame, "a major frame lasts at least 1 ms"))
            ok = False
        windows = sched["windows"]
        if not windows:
            errors.append((at + ".windows", "[]", "a schedule needs at least one window"))
            ok = False
        if len(windows) > WINDOWS_MAX:
            errors.append((at + ".windows", "%d windows" % len(windows),
                           "at most %d windows per CPU" % WINDOWS_MAX))
            ok = False
        total = 0
        for w in range(len(windows)):
            window = windows[w]
            wat = "%s.windows[%d]" % (at, w)
            owner, ms = window["partition"], window["ms"]
            total += ms
            if ms < 1:
                errors.append((wat + ".ms", ms, "a window lasts at least 1 ms"))
            if owner == MANAGEMENT:
                if cpu != MANAGEMENT_CPU:
                    errors.append((wat + ".partition", owner, "management runs on CPU 0 only "
                                   "(this schedule is for CPU %d)" % cpu))
                continue
            if owner not in index_of:
                errors.append((wat + ".partition", owner, "no partition named %s (partitions: "
                               "%s; or \"management\")" % (_quoted(owner), ", ".join(names))))
                continue
            i = index_of[owner]
            if partitions[i]["cpu"] is not None:
                errors.append((wat + ".partition", owner, "%s has a dedicated CPU "
                               "(partitions[%d].cpu = %d); it runs there, in no window"
                               % (_quoted(owner), i, partitions[i]["cpu"])))
            elif i in named_on and named_on[i][0] != cpu:
                first = named_on[i]
                errors.append((wat + ".partition", owner, "%s already has a window on CPU %d "
                               "(schedule[%d].windows[%d]); its one vCPU runs on one CPU"
                               % (_quoted(owner), first[0], first[1], first[2])))
            elif i not in named_on:
                named_on[i] = (cpu, s, w)
        if total > frame:
            errors.append((at + ".windows", "%d ms in total" % total, "the windows do not fit "
                           "major_frame_ms = %d: they run one after another in the frame"
                           % frame))
        if ok:
            cyclic[cpu] = s

    # Dedicated CPUs: cpu = K, one partition each, never CPU 0, never scheduled.
    dedicated = {}    # cpu -> partition index
    for i in range(len(partitions)):
        p = partitions[i]
        cpu = p["cpu"]
        if cpu is None:
            continue
        at = "partitions[%d].cpu" % i
        if p["cpus"] is not None:
            errors.append((at, cpu, "give cpu (a dedicated CPU) or cpus (shared CPUs), "
                           "not both"))
        elif cpu == MANAGEMENT_CPU:
            errors.append((at, cpu, "CPU 0 runs management (the console) and cannot be "
                           "dedicated; share it with cpus = [0]"))
        elif cpu < 0 or cpu >= cpu_count:
            errors.append((at, cpu, _beyond(cpu_count)))
        elif cpu in dedicated:
            j = dedicated[cpu]
            errors.append((at, cpu, "CPU %d is already dedicated to partitions[%d] (%s); a "
                           "dedicated CPU runs one partition" % (cpu, j, _quoted(names[j]))))
        elif cpu in cyclic:
            errors.append((at, cpu, "CPU %d has a schedule (schedule[%d]); a dedicated CPU "
                           "runs one partition, in no window" % (cpu, cyclic[cpu])))
        else:
            dedicated[cpu] = i

    # Shared CPUs: cpus = [k] (or where its windows are, or CPU 0).
    home = {}         # partition index -> cpu, for the shared ones
    for i in range(len(partitions)):
        p = partitions[i]
        if p["cpu"] is not None:
            continue
        cpus = p["cpus"]
        at = "partitions[%d].cpus" % i
        if cpus is None:
            cpu = named_on[i][0] if i in named_on else MANAGEMENT_CPU
            if cpu in cyclic and i not in named_on:
                s = cyclic[cpu]
                errors.append((at, "(missing)", "defaults to [%d], but CPU %d runs a cyclic "
                               "schedule (schedule[%d]) with no window for %s: it would never "
                               "run; add a window or give it another CPU"
                               % (cpu, cpu, s, _quoted(names[i]))))
            home[i] = cpu
            continue
        if len(cpus) != VCPUS:
            errors.append((at, list(cpus),
                           "one host CPU per vCPU: the partition has %d vCPU (vcpus = %d), so "
                           "exactly one entry, such as [0]" % (VCPUS, VCPUS)))
            continue
        bad = False
        for j in range(len(cpus)):
            cpu = cpus[j]
            jat = "%s[%d]" % (at, j)
            if cpu < 0 or cpu >= cpu_count:
                errors.append((jat, cpu, _beyond(cpu_count)))
                bad = True
            elif cpu in dedicated:
                d = dedicated[cpu]
                errors.append((jat, cpu, "CPU %d is dedicated to partitions[%d] (%s); a "
                               "dedicated CPU runs one partition" % (cpu, d, _quoted(names[d]))))
                bad = True
        if bad:
            continue
        cpu = cpus[0]
        if i in named_on and named_on[i][0] != cpu:
            first = named_on[i]
            errors.append((at + "[0]", cpu, "%s has a window on CPU %d "
                           "(schedule[%d].windows[%d]), so cpus must be [%d] or absent"
                           % (_quoted(names[i]), first[0], first[1], first[2], first[0])))
            continue
        if cpu in cyclic and i not in named_on:
            errors.append((at + "[0]", cpu, "CPU %d runs a cyclic schedule (schedule[%d]) with "
                           "no window for %s: it would never run"
                           % (cpu, cyclic[cpu], _quoted(names[i]))))
        home[i] = cpu

    # Management's guaranteed share of CPU 0.
    management_ms = scheduler["management_ms"]
    if management_ms is None:
        management_ms = MANAGEMENT_MS_DEFAULT
    management_us = management_ms * 1000
    if MANAGEMENT_CPU in cyclic:
        s = cyclic[MANAGEMENT_CPU]
        sched = schedules[s]
        mine = 0
        for window in sched["windows"]:
            if window["partition"] == MANAGEMENT:
                mine += window["ms"]
        frame = sched["major_frame_ms"]
        if mine == 0:
            errors.append(("schedule[%d].windows" % s, "no management window",
                           "CPU 0's schedule needs a window of \"management\": the console "
                           "would never run"))
        elif frame > 0 and mine * 100 < min_percent * frame:
            errors.append(("schedule[%d].windows" % s, "%d ms of management" % mine,
                           "management gets %d%% of CPU 0 (%d of %d ms), below "
                           "scheduler.management_min_percent = %d"
                           % (mine * 100 // frame, mine, frame, min_percent)))
    elif MANAGEMENT_CPU not in dedicated:
        slices = 0
        for i in home:
            if home[i] == MANAGEMENT_CPU:
                slices += partitions[i]["slice_us"]
        if scheduler["management_ms"] is None and min_percent < 100:
            # The smallest whole ms with ms / (ms + slices) >= min_percent / 100.
            need = (min_percent * slices + (100 - min_percent) * 1000 - 1) // (
                (100 - min_percent) * 1000)
            if need > management_ms:
                management_ms = need
                management_us = need * 1000
        total = management_us + slices
        if management_us * 100 < min_percent * total:
            errors.append(("scheduler.management_ms", management_ms,
                           "management gets %d%% of CPU 0 (%s in each %s round), below "
                           "scheduler.management_min_percent = %d; raise management_ms or "
                           "shorten the slices on CPU 0"
                           % (management_us * 100 // total, _ms(management_us), _ms(total),
                              min_percent)))

    for cpu in range(cpu_count):
        if cpu in cyclic or cpu in dedicated:
            continue
        members = 0
        for i in home:
            if home[i] == cpu:
                members += 1
        count = members + (1 if cpu == MANAGEMENT_CPU else 0)
        if count > WINDOWS_MAX:
            errors.append(("partitions", "%d windows on CPU %d" % (count, cpu),
                           "at most %d windows per CPU" % WINDOWS_MAX))

    if errors:
        return [], errors

    plans = []
    for cpu in range(cpu_count):
        if cpu in dedicated:
            plans.append({"cpu": cpu, "kind": "dedicated", "frame_us": 0,
                          "windows": [(dedicated[cpu], 0)]})
        elif cpu in cyclic:
            sched = schedules[cyclic[cpu]]
            windows = []
            for window in sched["windows"]:
                owner = window["partition"]
                windows.append((owner if owner == MANAGEMENT else index_of[owner],
                                window["ms"] * 1000))
            plans.append({"cpu": cpu, "kind": "cyclic",
                          "frame_us": sched["major_frame_ms"] * 1000, "windows": windows})
        else:
            windows = [(MANAGEMENT, management_us)] if cpu == MANAGEMENT_CPU else []
            for i in range(len(partitions)):
                if home.get(i) == cpu:
                    windows.append((i, partitions[i]["slice_us"]))
            if windows:
                frame = 0
                for _owner, us in windows:
                    frame += us
                plans.append({"cpu": cpu, "kind": "round-robin", "frame_us": frame,
                              "windows": windows})
            else:
                plans.append({"cpu": cpu, "kind": "idle", "frame_us": 0, "windows": []})
    # The run-time rules hold for every derived plan; a miss here is a bug in
    # derive, reported rather than written into an image.
    return plans, check(plans, cpu_count, min_percent, names)


def check(plans, cpu_count, min_percent, names=None):
    """Every rule a plan (e.g. one edited by `sched set`) breaks, as (key_path, value, rule).

    names: the partitions' names by index; when given, owners must be among
    them and each partition must have time somewhere.
    """
    errors = []
    if len(plans) != cpu_count:
        errors.append(("plan", "%d CPUs" % len(plans),
                       "one plan per CPU: the machine has %d" % cpu_count))
    where = {}        # partition index -> (cpu, kind) where it first has time
    for k in range(len(plans)):
        plan = plans[k]
        at = "plan[%d]" % k
        kind, frame, windows = plan["kind"], plan["frame_us"], plan["windows"]
        if plan["cpu"] != k:
            errors.append((at + ".cpu", plan["cpu"], "must be %d, its place in the plan" % k))
        if kind not in KINDS:
            errors.append((at + ".kind", kind, "must be one of " + ", ".join(KINDS)))
            continue
        if not _is_int(frame) or frame < 0:
            errors.append((at + ".frame_us", frame, "must be a whole number of microseconds"))
            continue
        if len(windows) > WINDOWS_MAX:
            errors.append((at + ".windows", "%d windows" % len(windows),
                           "at most %d windows per CPU" % WINDOWS_MAX))
        total = 0
        bad = False
        for w in range(len(windows)):
            owner, us = windows[w]
            wat = "%s.windows[%d]" % (at, w)
            if owner == MANAGEMENT:
                if k != MANAGEMENT_CPU:
                    errors.append((wat, MANAGEMENT, "management runs on CPU 0 only"))
                    bad = True
            elif not _is_int(owner) or owner < 0 or owner >= OWNER_MANAGEMENT or (
                    names is not None and owner >= len(names)):
                errors.append((wat, owner, "no such partition"))
                bad = True
                continue
            else:
                if owner in where and where[owner][0] != k:
                    errors.append((wat, _label(owner, names), "already has time on CPU %d; "
                                   "its one vCPU runs on one CPU" % where[owner][0]))
                    bad = True
                elif owner not in where:
                    where[owner] = (k, kind)
            if not _is_int(us) or us < 0 or (us == 0 and kind != "dedicated"):
                errors.append((wat, us, "a window lasts at least 1 us"))
                bad = True
            else:
                total += us
        if kind == "idle":
            if windows:
                errors.append((at + ".windows", "%d windows" % len(windows),
                               "an idle CPU has no windows"))
        elif kind == "dedicated":
            if len(windows) != 1 or windows[0][0] == MANAGEMENT:
                errors.append((at + ".windows", "%d windows" % len(windows),
                               "a dedicated CPU has one window, of its partition"))
            if k == MANAGEMENT_CPU:
                errors.append((at + ".kind", kind, "CPU 0 runs management (the console) and "
                               "cannot be dedicated"))
        elif not windows:
            errors.append((at + ".windows", "[]", "a %s CPU needs at least one window" % kind))
        elif kind == "round-robin" and not bad and frame != total:
            errors.append((at + ".frame_us", frame, "a round-robin frame is its windows summed "
                           "(%d us)" % total))
        elif kind == "cyclic" and not bad and total > frame:
            errors.append((at + ".windows", "%s in total" % _ms(total),
                           "the windows do not fit the %s frame" % _ms(frame)))
        if k == MANAGEMENT_CPU and kind in ("round-robin", "cyclic", "idle") and not bad:
            mine = share(plan)[0]
            if mine == 0:
                errors.append((at + ".windows", "no management window",
                               "CPU 0 needs a window of management: the console would "
                               "never run"))
            elif mine * 100 < min_percent * frame:
                errors.append((at + ".windows", "%s of management" % _ms(mine),
                               "management gets %d%% of CPU 0 (%s of %s), below the minimum "
                               "of %d%%" % (mine * 100 // frame, _ms(mine), _ms(frame),
                                            min_percent)))
    if names is not None:
        for i in range(len(names)):
            if i not in where:
                errors.append(("plan", _quoted(names[i]), "has no window on any CPU: it "
                               "would never run"))
    return errors


def _homes(plans):
    # partition index -> the first CPU where it has time
    homes = {}
    for plan in plans:
        for owner, _us in plan["windows"]:
            if owner != MANAGEMENT and owner not in homes:
                homes[owner] = plan["cpu"]
    return homes


def check_change(current, proposed, min_percent, names=None):
    """Every rule replacing the plans in force by `proposed` breaks (what `sched set` asks).

    On top of check(): a dedicated CPU stays as it is and a shared CPU stays
    shared, and no partition moves to another CPU (its vCPU's state lives on
    its CPU); slices, windows, frames and round-robin or cyclic may change.
    """
    errors = check(proposed, len(current), min_percent, names)
    for k in range(min(len(current), len(proposed))):
        old, new = current[k], proposed[k]
        at = "plan[%d]" % k
        if old["kind"] == "dedicated" and (new["kind"] != "dedicated"
                                           or new["windows"] != old["windows"]):
            errors.append((at + ".kind", new["kind"], "CPU %d is dedicated to %s: only a "
                           "shared CPU's slices or windows change at run time"
                           % (k, _label(old["windows"][0][0], names))))
        elif old["kind"] != "dedicated" and new["kind"] == "dedicated":
            errors.append((at + ".kind", new["kind"], "CPU %d is shared: only the "
                           "configuration dedicates a CPU" % k))
    before, after = _homes(current), _homes(proposed)
    for owner in after:
        if owner in before and after[owner] != before[owner]:
            errors.append(("plan[%d]" % after[owner], _label(owner, names), "runs on CPU %d: "
                           "a partition stays on its CPU at run time" % before[owner]))
    return errors


def _label(owner, names):
    if owner == MANAGEMENT:
        return MANAGEMENT
    if names is not None and _is_int(owner) and 0 <= owner < len(names):
        return names[owner]
    return "partition %s" % owner


def describe(plans, names=None):
    """One line per CPU: kind, frame, windows with names and ms; CPU 0 with management's share."""
    lines = []
    for plan in plans:
        kind, frame, windows = plan["kind"], plan["frame_us"], plan["windows"]
        head = "cpu %d: %s" % (plan["cpu"], kind)
        if kind == "idle":
            lines.append(head)
            continue
        if kind == "dedicated":
            lines.append("%s: %s" % (head, _label(windows[0][0], names)))
            continue
        parts = []
        used = 0
        for owner, us in windows:
            parts.append("%s %s" % (_label(owner, names), _ms(us)))
            used += us
        if kind == "cyclic" and used < frame:
            parts.append("idle %s" % _ms(frame - used))
        line = "%s, %s %s: %s" % (head, "frame" if kind == "cyclic" else "round", _ms(frame),
                                  ", ".join(parts))
        if plan["cpu"] == MANAGEMENT_CPU:
            line += "; management %d%% of CPU 0" % percent(plan)
        lines.append(line)
    return lines
