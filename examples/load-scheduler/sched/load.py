# A load-following scheduler: every second, CPU 0's round-robin slices follow the CPU time each partition used.
import hv
import manager
import scheduler

PERIOD_MS = 1000
SLICES_MS = 20  # shared out among the partitions on CPU 0 (each gets MIN_MS at least)
MIN_MS = 2


def on_tick(now_ms):
    """Share SLICES_MS among CPU 0's partitions in proportion to what each ran since the last change."""
    cpu_plan = scheduler.plans[0]
    if cpu_plan["kind"] != "round-robin":
        return
    used = {}
    for window in hv.plan_get(0)["windows"]:
        if window["owner"] != -1:
            used[window["owner"]] = window["run_us"]
    total = sum(used.values())
    if not total:
        return
    windows = []
    for owner, us in cpu_plan["windows"]:
        if owner != "management":
            us = max(MIN_MS, SLICES_MS * used.get(owner, 0) // total) * 1000
        windows.append((owner, us))
    if windows == cpu_plan["windows"]:
        return
    scheduler.change({"cpu": 0, "kind": "round-robin", "frame_us": sum(us for _, us in windows),
                      "windows": windows})
    manager.event("load.py: CPU 0 slices " + ", ".join(
        "%s %d ms" % ("management" if o == "management" else manager.names()[o], us // 1000)
        for o, us in windows))
