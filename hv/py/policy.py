# Device policy: what happens on the exits the C fast path hands up (rare by design).
import manager

# Seen (partition, kind, port or MSR) keys, so each new one is logged once; bounded, since a
# guest chooses the keys (a sweep would grow it without end). Past the bound nothing is logged
# per key: the C counts (`stats`) still say what was denied.
SEEN_MAX = 64
_seen = set()


def decide(name, exit):
    """The action for one exit: ("emulate", value), ("deny", 0) or ("stop", 0).

    No device beyond the virtual UART and port 0xf4 is given to partitions yet:
    reads of other ports and MSRs see nothing there (all ones, or zero for an
    MSR), writes are dropped, and anything else stops the partition.
    """
    kind = exit["kind"]
    if kind == "io":
        where = exit["port"]
        action = ("deny", 0)
    elif kind in ("msr_read", "msr_write"):
        where = exit["msr"]
        action = ("deny", 0)
    elif kind == "cpuid":
        # Only partitions built with the cpuid_upcall bench knob send these:
        # C then answers as its fast path would (emulate_cpuid).
        where = exit["reason"]
        action = ("emulate", 0)
    else:
        where = exit["reason"]
        action = ("stop", 0)
    key = (name, kind, where)
    if key not in _seen and len(_seen) < SEEN_MAX:
        _seen.add(key)
        manager.event("%s: %s %s at RIP 0x%x -> %s" % (name, kind, hex(where), exit["rip"], action[0]))
    return action
