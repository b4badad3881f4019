# A policy that keeps what it allocates: its module's globals hold the whole heap.
kept = []


def on_msr(name, exit):
    while True:
        kept.append(bytearray(1 << 20))
