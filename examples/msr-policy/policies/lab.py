# A user policy: partition "lab" may read MSR_CORE_THREAD_COUNT (0x35); every other MSR is logged and denied.
import manager

# MSR 0x35 as a 4-core, 8-thread part reports it: cores in bits 31:16, threads in 15:0.
GRANTED = {("lab", 0x35): (4 << 16) | 8}
_logged = set()


def on_msr(name, exit):
    """Answer a read of a granted MSR; log the rest once each and let the default (deny: #GP) stand."""
    if exit["kind"] == "msr_read" and (name, exit["msr"]) in GRANTED:
        return ("emulate", GRANTED[(name, exit["msr"])])
    key = (name, exit["kind"], exit["msr"])
    if key not in _logged:
        _logged.add(key)
        manager.event("lab.py: %s %s 0x%x at RIP 0x%x denied" % (name, exit["kind"], exit["msr"], exit["rip"]),
                      show=True)
    return ("deny",)
