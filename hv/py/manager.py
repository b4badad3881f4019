# The partition manager: checks the generated table, owns partitions' lifecycle, keeps the event log.
import hashlib

import hv

HEADER_SIZE = 128
MAGIC = b"TAIPANPT"
SIGNATURE_AT = 56  # struct pt_header.sha256: 32 bytes
EVENTS_KEPT = 100

events = []  # (ticks, text): what the hypervisor decided, newest last


def event(text, show=False):
    events.append((hv.ticks(), text))
    if len(events) > EVENTS_KEPT:
        events.pop(0)
    if show:
        print("\ntaipan: " + text)


def table_problem():
    """Why the partition table must not be used, or None when its signature checks out."""
    blob = hv.ptable()
    if len(blob) < HEADER_SIZE or blob[:8] != MAGIC:
        return "no partition table in the image"
    if hashlib.sha256(blob[HEADER_SIZE:]).digest() != blob[SIGNATURE_AT:SIGNATURE_AT + 32]:
        return "its sha256 signature does not match its contents"
    return None


def count():
    return hv.part_count()


def info(index):
    return hv.part_info(index)


def find(name):
    for i in range(hv.part_count()):
        if hv.part_info(i)["name"] == name:
            return i
    raise ValueError("no partition named '%s' (see 'ps')" % name)


def names():
    return [hv.part_info(i)["name"] for i in range(hv.part_count())]


def start(index):
    hv.part_start(index)
    event("%s started" % hv.part_info(index)["name"])


def stop(index, why="stopped from the console"):
    hv.part_stop(index, why)
    event("%s stopped: %s" % (hv.part_info(index)["name"], why))


def init():
    """Check the table, then start every partition marked autostart; says what it refused.

    After a soft reset of MicroPython the partitions are still where they were:
    only those never started are started.
    """
    if hv.part_count() == 0:
        return
    problem = table_problem()
    if problem:
        event("partition table refused: " + problem, show=True)
        return
    hv.ptable_trust()
    if hv.backend() is None:
        event("partitions cannot run: this CPU has no usable VT-x+EPT or AMD-V+NPT", show=True)
        return
    for i in range(hv.part_count()):
        part = hv.part_info(i)
        if part["state"] == "unusable":
            event("%s not started: %s" % (part["name"], part["reason"]), show=True)
        elif part["autostart"] and part["state"] == "created":
            try:
                start(i)
            except OSError as e:
                event("%s failed to start: %s" % (part["name"], e), show=True)
