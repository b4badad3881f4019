# The scheduler: round-robin time slices, the next partition chosen here at each slice boundary.
import hv
import manager
import policy

SLICE_US = 10000
# While someone types, 1 ms slices: at 115200 baud about 12 bytes arrive per
# millisecond, and the UART's FIFO holds 16 while a guest runs.
TYPING_SLICE_US = 1000

_next = 0


def _handle(index, event, detail):
    name = hv.part_info(index)["name"]
    if event == "upcall":
        try:
            action, value = policy.decide(name, detail)
        except Exception as e:  # a policy bug must not take the hypervisor down: deny
            manager.event("%s: policy raised %r; denied" % (name, e), show=True)
            action, value = "deny", 0
        hv.part_resolve(index, action, value)
        if action == "stop":
            manager.event("%s stopped by policy (%s exit)" % (name, detail["kind"]), show=True)
    elif event == "exited":
        manager.event("%s exited with code %d" % (name, detail), show=True)
    elif event == "faulted":
        manager.event("%s faulted: %s" % (name, detail))


def tick():
    """Give the next running partition one slice; called while the console waits for a key."""
    global _next
    n = hv.part_count()
    for step in range(n):
        index = (_next + step) % n
        if hv.part_state(index) == "running":
            _next = index + 1
            event, detail = hv.part_run(index, TYPING_SLICE_US if hv.typing() else SLICE_US)
            _handle(index, event, detail)
            return True
    return False


def start():
    hv.set_idle(tick)
