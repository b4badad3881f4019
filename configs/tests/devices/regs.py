# An MMIO device of registers: offset 0 reads an ID, a stored value reads back at its address, any other address reads a pattern of its offset and size.
ID = 0x7A1A9A11


def pattern(offset, size):
    # What the guest computes too (guests/c/longmode/devirq.c).
    return (0x0101010101010101 * (offset & 0xFF) ^ size) & ((1 << (8 * size)) - 1)


class Device:
    def __init__(self, name):
        self.name = name
        self.stored = {}

    def read(self, addr, size):
        offset = addr & 0xFFF
        if offset == 0:
            return ID
        if addr in self.stored:
            return self.stored[addr] & ((1 << (8 * size)) - 1)
        return pattern(offset, size)

    def write(self, addr, size, value):
        self.stored[addr] = value
