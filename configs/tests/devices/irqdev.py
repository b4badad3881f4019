# A port device that interrupts its guest through IOAPIC pin `irq`: an OUT asks for an edge, a held level or an edge from the next tick; an IN reads how many times it was asked and lowers the line.
PULSE, HOLD, TICK = 1, 2, 3


class Device:
    PERIOD_MS = 20

    def __init__(self, name):
        self.name = name
        self.asked = 0
        self.armed = False

    def write(self, port, size, value):
        self.asked += 1
        if value == PULSE:
            self.irq.pulse()
        elif value == HOLD:
            self.irq.set(True)
        elif value == TICK:
            self.armed = True

    def read(self, port, size):
        # The status register: reading it acknowledges the interrupt, as a driver's handler does.
        self.irq.set(False)
        return self.asked & 0xFF

    def tick(self, now_ms):
        # Raised from CPU 0's tick while the guest waits in HLT on its own CPU.
        if self.armed:
            self.armed = False
            self.irq.pulse()
