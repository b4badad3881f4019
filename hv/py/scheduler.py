# The scheduler's Python half: writes each CPU's plan for the C schedulers, and answers what the CPUs post to CPU 0's mailbox.
import hv
import manager
import plan
import policy
import usermods

_failures = 0
FAILURES_SHOWN = 3  # a scheduler bug repeats every tick: announce only the first few

# The plans in force, in hv/py/plan.py's form, one per CPU the table plans.
plans = []


def _handle(index, event, detail):
    if event == "upcall":
        # Deny unless policy answers; answered in `finally`, so that nothing raised on the
        # way (a MemoryError in the handler itself included) leaves the vCPU waiting.
        action, value, why = "deny", 0, None
        try:
            name = hv.part_info(index)["name"]
            # The user's policy first (guarded: its failure is a deny), then ours.
            answer = usermods.answer(index, name, detail)
            action, value = answer if answer is not None else policy.decide(name, detail)
        except MemoryError:
            manager.memory_error()
        except Exception as e:  # a policy bug must not take the hypervisor down: deny
            manager.unexpected("policy for partition %d" % index, e)
        finally:
            try:
                why = usermods.limit_reached(index)
            except MemoryError:
                manager.memory_error()
            if why is not None:
                action, value = "stop", 0
            hv.part_resolve(index, action, value)
        if action == "stop":
            manager.ended(index, True, why or "stopped by policy (%s exit)" % detail["kind"])
        return
    name = hv.part_info(index)["name"]
    if event == "denied":
        # C answered it (all ones, write dropped) and counts the repeats: one line a start.
        for port, direction, _count in detail:
            manager.event("%s: io %s 0x%x denied (no device; repeats counted in 'stats %s')"
                          % (name, direction, port, name))
        return
    if event not in ("exited", "faulted", "timeout"):
        return
    why = ("exited with code %d" % detail if event == "exited" else
           "faulted: %s" % detail if event == "faulted" else "stopped: %s" % detail)
    usermods.notify(index, "on_fault" if event == "faulted" else "on_stop", (name, why))
    manager.ended(index, event != "exited", why)


# Messages taken while a command ran, kept for the prompt: their handling
# announces (a fault, a restart) and must not land inside a command's output.
_later = []


def tick(in_command=False):
    """Answer what the CPUs posted: up-calls for policy, partitions that ended.

    Runs while the console waits for a key, and at the interpreter's next
    bytecode boundary (in_command) when mail arrives while Python is busy:
    then only up-calls are answered, since a vCPU waits for each, and the rest
    waits for the prompt. An exception here is logged in one line, never
    raised: the console must go on.
    """
    global _later
    if not in_command:
        manager.memory_errors_log()
    kept = None
    if _later and not in_command:
        # Before the box is read: with the heap full, a MemoryError here loses no mail.
        kept, _later = _later, []
    # hv.mailbox answers up-calls deny itself when the heap has no room for them.
    mail = hv.mailbox()
    if kept:
        _answer(kept, False)
    _answer(mail, in_command)
    if not in_command:
        # Partitions whose modules failed too often are stopped here, at the
        # prompt, never from inside a command's mail callback.
        usermods.tick()
        if manager.restart_due:
            manager.restarts_run()
            # The console sleeps until a key or mail: wake it for the next restart due.
            if manager.restart_due:
                hv.wake_at(min(due[0] for due in manager.restart_due.values()))
    return False


def _answer(mail, in_command):
    global _failures
    for index, event, detail in mail:
        try:
            if in_command and event != "upcall":
                _later.append((index, event, detail))
            else:
                _handle(index, event, detail)
        except MemoryError:
            manager.memory_error()
        except Exception as e:  # one message's failure loses none of the others
            _failures += 1
            manager.unexpected("the scheduler", e, show=_failures <= FAILURES_SHOWN)


def _owner_id(owner):
    return -1 if owner == plan.MANAGEMENT else owner


def install(cpu_plan):
    """Hand one CPU's plan to its C scheduler, which takes it at its next window."""
    hv.plan_set(cpu_plan["cpu"], cpu_plan["kind"], cpu_plan["frame_us"],
                [(_owner_id(owner), us) for owner, us in cpu_plan["windows"]])
    plans[cpu_plan["cpu"]] = cpu_plan


def change(cpu_plan):
    """Put cpu_plan in place of its CPU's plan, if the configuration's rules allow the change.

    The rules are plan.check_change's, as for `sched set`; ValueError lists
    what the change breaks, and nothing changes then.
    """
    proposed = [cpu_plan if p["cpu"] == cpu_plan["cpu"] else p for p in plans]
    table = hv.plan_table(0)
    errors = plan.check_change(plans, proposed, table["min_percent"] if table else 0, manager.names())
    if errors:
        raise ValueError("; ".join("%s = %s: %s" % e for e in errors))
    install(cpu_plan)


def start():
    """Install the table's plans on the CPUs that came up; say what could not run."""
    global plans
    online = [c["index"] for c in hv.cpus() if c["state"] == "online"]
    plans = []
    cpu = 0
    while True:
        cpu_plan = hv.plan_table(cpu)
        if cpu_plan is None:
            break
        plans.append(cpu_plan)
        cpu += 1
    for cpu_plan in plans:
        if cpu_plan["cpu"] in online:
            install(cpu_plan)
        elif cpu_plan["kind"] != "idle":
            manager.event("CPU %d is planned (%s) but not online: its partitions cannot run"
                          % (cpu_plan["cpu"], cpu_plan["kind"]), show=True)
    hv.set_idle(tick)
