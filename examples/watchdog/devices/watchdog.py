# A port watchdog: the guest writes to its port at least every TIMEOUT_MS, or its partition is restarted.
import time

TIMEOUT_MS = 1000


class Device:
    """One watchdog per partition: OUT kicks it, IN reads how many kicks it has had (low byte)."""

    PERIOD_MS = 100  # how often tick() looks at the deadline

    def __init__(self, name):
        self.name = name
        self.kicks = 0
        self.deadline = time.ticks_add(time.ticks_ms(), TIMEOUT_MS)

    def write(self, port, size, value):
        self.kicks += 1
        self.deadline = time.ticks_add(time.ticks_ms(), TIMEOUT_MS)

    def read(self, port, size):
        return self.kicks & 0xFF

    def tick(self, now_ms):
        if time.ticks_diff(time.ticks_ms(), self.deadline) <= 0:
            return None
        # The restarted guest gets a full timeout to start kicking again.
        self.deadline = time.ticks_add(time.ticks_ms(), TIMEOUT_MS)
        return "restart"
