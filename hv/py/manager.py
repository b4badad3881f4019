# The partition manager: checks the generated table, owns partitions' lifecycle and restart policy, keeps the event log.
import hashlib
import sys

import hv

HEADER_MIN = 128  # struct pt_header before its per-CPU plans
MAGIC = b"TAIPANPT"
SIGNATURE_AT = 56  # struct pt_header.sha256: 32 bytes, over the blob with them zeroed
EVENTS_KEPT = 100

# Until the table carries them (hv.part_info's "restart", "restart_limit"):
# what a partition without a policy gets.
DEFAULT_RESTART = "never"
DEFAULT_RESTART_LIMIT = 3
POLICIES = ("never", "on-fault", "always")  # in PT_RESTART_* order

events = []  # (ticks, text): what the hypervisor decided, newest last
last_traceback = ""  # the full text of the last unexpected exception, for `debug`

# While the serial line belongs to a partition (`console NAME`), announcements
# would land in the middle of its output: they are counted instead, and the
# shell says how many there were when it gets the line back.
quiet = False
unseen = 0

# Per partition index: restarts its policy made since an operator last
# started it; the TSC when it last started and when it last ended.
restarts = {}
started_at = {}
ended_at = {}
# Called with a partition's index each time it starts (usermods: a user policy's on_start).
on_started = None

# A restart waits RESTART_BACKOFF_MS, doubled with each restart in a row, at most
# RESTART_BACKOFF_MAX_MS: a guest that dies at once costs a full-memory clear a back-off,
# not a storm of them. Per partition index: (TSC due, ms waited, policy, limit).
RESTART_BACKOFF_MS = 100
RESTART_BACKOFF_MAX_MS = 5000
restart_due = {}


def event(text, show=False):
    """Log one line; with show, also announce it on the console as `taipan: text`.

    Announcements start on a line of their own, so a script reading up to the
    next prompt sees them as lines beginning with `taipan: `.
    """
    global unseen
    events.append((hv.ticks(), text))
    if len(events) > EVENTS_KEPT:
        events.pop(0)
    if show:
        if quiet:
            unseen += 1
        else:
            print("\ntaipan: " + text)


# MemoryErrors met with the heap exhausted: counted without allocating, logged when it can.
memory_errors = 0
_memory_errors_logged = 0


def memory_error():
    """Count a MemoryError (allocation-free: a small int's increment needs no heap)."""
    global memory_errors
    memory_errors += 1


def memory_errors_log():
    """Log the MemoryErrors counted since the last call, if the heap allows it now.

    They are Python's (memory_error) and C's: up-calls hv.mailbox answered deny
    because the heap had no room even for the message (hv.heap_denials).
    """
    global _memory_errors_logged
    total = memory_errors + hv.heap_denials()
    if total != _memory_errors_logged:
        try:
            event("MemoryError: the heap was exhausted %d time(s); the exits met then were denied"
                  % (total - _memory_errors_logged), show=True)
            _memory_errors_logged = total
        except MemoryError:
            pass


def traceback_text(e):
    import io

    buf = io.StringIO()
    sys.print_exception(e, buf)
    return buf.getvalue()


def unexpected(where, e, show=True):
    """An exception nobody meant: one line for the log (and the console), the traceback kept."""
    global last_traceback
    last_traceback = "%s:\n%s" % (where, traceback_text(e))
    event("%s raised %s: %s ('debug' shows the traceback)" % (where, type(e).__name__, e), show=show)


def table_problem():
    """Why the partition table must not be used, or None when its signature checks out."""
    blob = hv.ptable()
    if len(blob) < HEADER_MIN or blob[:8] != MAGIC:
        return "no partition table in the image"
    # The signature covers every byte but its own, the header's plans included.
    view = memoryview(blob)
    digest = hashlib.sha256(view[:SIGNATURE_AT])
    digest.update(bytes(32))
    digest.update(view[SIGNATURE_AT + 32:])
    if digest.digest() != blob[SIGNATURE_AT:SIGNATURE_AT + 32]:
        return "its sha256 signature does not match its contents"
    return None


def count():
    """How many partitions the table holds; they are numbered 0 to count() - 1."""
    return hv.part_count()


def info(index):
    """hv.part_info(index): one partition's state and counters, read-only."""
    return hv.part_info(index)


def find(name):
    """The index of the partition called name; ValueError naming it if there is none."""
    for i in range(hv.part_count()):
        if hv.part_info(i)["name"] == name:
            return i
    raise ValueError("no partition named '%s' (see 'ps')" % _shown(name))


def _shown(word):
    # A name typed at the console echoed back in an error: bounded, one line.
    return word if len(word) <= 40 else word[:40] + "..."


def names():
    """Every partition's name, in table order."""
    return [hv.part_info(i)["name"] for i in range(hv.part_count())]


def restart_policy(part):
    """(policy, limit) from the table, or the defaults for a table without them."""
    policy = part.get("restart", DEFAULT_RESTART)
    if isinstance(policy, int):  # the table's PT_RESTART_* number
        policy = POLICIES[policy] if 0 <= policy < len(POLICIES) else DEFAULT_RESTART
    return policy, part.get("restart_limit", DEFAULT_RESTART_LIMIT)


def _started(index):
    started_at[index] = hv.ticks()
    ended_at.pop(index, None)
    if on_started is not None:
        on_started(index)


def start(index):
    """An operator's start: the restart count begins again."""
    restart_due.pop(index, None)
    hv.part_start(index)
    restarts[index] = 0
    _started(index)
    event("%s started" % hv.part_info(index)["name"])


def stop(index, why="stopped from the console", show=False):
    restart_due.pop(index, None)
    hv.part_stop(index, why)
    ended_at[index] = hv.ticks()
    event("%s stopped: %s" % (hv.part_info(index)["name"], why), show=show)


def restart(index, why="restarted from the console"):
    """Stop it if it runs, then start it from its image again."""
    if hv.part_state(index) == "running":
        stop(index, why)
    start(index)


def ended(index, fault, text):
    """A partition stopped by itself or by the hypervisor: log it, then apply its restart policy.

    fault is True for what the hypervisor stopped (a fault, a failed entry, a
    policy stop) and False for a partition that exited by itself.
    """
    ended_at[index] = hv.ticks()
    part = hv.part_info(index)
    name = part["name"]
    event("%s %s" % (name, text), show=True)
    policy, limit = restart_policy(part)
    if not (policy == "always" or (policy == "on-fault" and fault)):
        return
    done = restarts.get(index, 0)
    if done >= limit:
        event("%s stays %s: its restart limit (%d) is reached" % (name, part["state"], limit), show=True)
        return
    ms = min(RESTART_BACKOFF_MS << done, RESTART_BACKOFF_MAX_MS)
    restart_due[index] = (hv.ticks() + ms * hv.cpu()["tsc_khz"], ms, policy, limit)


def restarts_run():
    """Restart the partitions whose back-off has passed (the scheduler's tick calls this)."""
    now = hv.ticks()
    for index in [i for i, due in restart_due.items() if due[0] <= now]:
        _, ms, policy, limit = restart_due.pop(index)
        name = hv.part_info(index)["name"]
        try:
            hv.part_start(index)
        except OSError as e:
            event("%s could not be restarted: %s" % (name, e), show=True)
            continue
        done = restarts.get(index, 0) + 1
        restarts[index] = done
        _started(index)
        event("%s restarted (%s, %d of %d) after %d ms" % (name, policy, done, limit, ms), show=True)


def uptime_us(index, tsc_khz):
    """Wall-clock microseconds of its current or last run, or None if unknown."""
    begin = started_at.get(index)
    if begin is None or not tsc_khz:
        return None
    end = ended_at.get(index)
    if end is None:
        end = hv.ticks() if hv.part_state(index) == "running" else begin
    return (end - begin) * 1000 // tsc_khz


def init(before_start=None):
    """Check the table, then start every partition marked autostart; says what it refused.

    before_start runs once the table is trusted, before any partition starts
    (main.py: the user's modules load there).

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
    if before_start is not None:
        before_start()
    for i in range(hv.part_count()):
        part = hv.part_info(i)
        if part["state"] == "unusable":
            event("%s not started: %s" % (part["name"], part["reason"]), show=True)
        elif part["autostart"] and part["state"] == "created":
            try:
                start(i)
            except OSError as e:
                event("%s failed to start: %s" % (part["name"], e), show=True)
