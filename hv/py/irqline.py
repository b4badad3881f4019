# A device model's interrupt line: one pin of its own partition's virtual IOAPIC, named by the config's `irq`.
import hv

LOW, HIGH, PULSE = 0, 1, 2  # hv.part_irq's levels


class IrqLine:
    """The line a Device drives, given to it as `self.irq` when its entry names `irq = PIN`.

    `set(True)` raises the pin and holds it, `set(False)` lowers it: a
    level-triggered pin interrupts while it is held, again after each EOI,
    so a model lowers it when the guest acknowledges (a read of a status
    register, say). `pulse()` is one rising edge, for an edge-triggered pin,
    even if the guest does not run between the rise and the fall. The pin
    belongs to the partition that owns the Device: nothing leaves it, and the
    guest's redirection entry (vector, trigger, mask) decides what it sees.
    The partition's CPU applies the change before its vCPU's next entry and is
    woken now if the vCPU waits in HLT. `level` is the level last set.
    """

    def __init__(self, index, pin):
        self.index = index
        self.pin = pin
        self.level = False

    def set(self, level):
        self.level = bool(level)
        hv.part_irq(self.index, self.pin, HIGH if self.level else LOW)

    def pulse(self):
        hv.part_irq(self.index, self.pin, PULSE)
