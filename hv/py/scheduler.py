# The scheduler: round-robin time slices, the next partition chosen here at each slice boundary.
import hv
import manager
import policy

SLICE_US = 10000
# While someone types, at most 1 ms slices: at 115200 baud about 12 bytes
# arrive per millisecond, and the UART's FIFO holds 16 while a guest runs.
TYPING_SLICE_US = 1000

_next = 0
_slices = []  # per partition: its slice in microseconds, from the table
_failures = 0
FAILURES_SHOWN = 3  # a scheduler bug repeats every tick: announce only the first few


def _handle(index, event, detail):
    name = hv.part_info(index)["name"]
    if event == "upcall":
        try:
            action, value = policy.decide(name, detail)
        except Exception as e:  # a policy bug must not take the hypervisor down: deny
            manager.unexpected("policy for %s" % name, e)
            action, value = "deny", 0
        hv.part_resolve(index, action, value)
        if action == "stop":
            manager.ended(index, True, "stopped by policy (%s exit)" % detail["kind"])
    elif event == "exited":
        manager.ended(index, False, "exited with code %d" % detail)
    elif event == "faulted":
        manager.ended(index, True, "faulted: %s" % detail)


def _slice(index):
    us = _slices[index] if index < len(_slices) else SLICE_US
    return min(us, TYPING_SLICE_US) if hv.typing() else us


def tick():
    """Give the next running partition one slice; called while the console waits for a key.

    An exception here is logged in one line, never raised: the console loop
    that calls tick must go on waiting for keys whatever happened.
    """
    global _next, _failures
    try:
        n = hv.part_count()
        for step in range(n):
            index = (_next + step) % n
            if hv.part_state(index) == "running":
                _next = index + 1
                event, detail = hv.part_run(index, _slice(index))
                _handle(index, event, detail)
                return True
    except Exception as e:
        _failures += 1
        manager.unexpected("the scheduler", e, show=_failures <= FAILURES_SHOWN)
    return False


def start():
    global _slices
    _slices = [hv.part_info(i).get("slice_us", SLICE_US) or SLICE_US for i in range(hv.part_count())]
    hv.set_idle(tick)
