# A policy that never answers: it loops until its time budget stops it, and swallows the first stop.
def on_msr(name, exit):
    try:
        while True:
            pass
    except RuntimeError:
        pass
    while True:
        pass
