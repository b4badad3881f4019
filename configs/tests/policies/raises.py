# A policy with a bug: every MSR it is asked about raises.
def on_msr(name, exit):
    return {}[exit["msr"]]
