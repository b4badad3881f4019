# A policy that allocates without bound until the heap is gone.
def on_msr(name, exit):
    kept = []
    while True:
        kept.append(bytearray(1 << 20))
