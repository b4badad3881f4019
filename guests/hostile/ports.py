"""Hostile kinds on I/O ports: every port, the reset and PCI ports, and string I/O."""

from __future__ import annotations

from guests.common import COM1, DEBUG_EXIT_PORT
from guests.hostile.runtime import check, fail_unless

# Ports a partition owns by default: its UART (guests/README.md) and the exit port.
OWN = [(COM1, COM1 + 8), (DEBUG_EXIT_PORT, DEBUG_EXIT_PORT + 4)]
PCI_ADDRESS, PCI_DATA = 0xCF8, 0xCFC


def _join(parts: list[tuple[str, str]]) -> tuple[str, str]:
    return "".join(c for c, _ in parts), "".join(d for _, d in parts)


def port_sweep() -> tuple[str, str]:
    """IN then OUT of a byte at every port it does not own: each IN reads all ones (no device
    there), each OUT is dropped, and neither stops it or resets the machine."""
    skips = "".join(f"""\
    cmp ecx, {lo:#x}
    jb .Lport_sweep_{i}
    cmp ecx, {hi:#x}
    jb .Lport_sweep_skip
.Lport_sweep_{i}:
""" for i, (lo, hi) in enumerate(OWN))
    bad, bad_data = fail_unless("a port read other than 0xff", "jmp")
    code = f"""\
    xor ecx, ecx
    xor r13d, r13d
.Lport_sweep_next:
{skips}
    mov edx, ecx
    in al, dx
    cmp al, 0xff
    je .Lport_sweep_ones
    inc r13
.Lport_sweep_ones:
    xor eax, eax
    out dx, al
.Lport_sweep_skip:
    inc ecx
    cmp ecx, 0x10000
    jb .Lport_sweep_next
    test r13, r13
    jz .Lport_sweep_done
{bad}
.Lport_sweep_done:
"""
    return code, bad_data


def reset_ports() -> tuple[str, str]:
    """The writes that reset a PC (0xCF9, 0x92, the keyboard controller's 0xFE), the PIC's
    mask registers, and PCI configuration space: the machine goes on, PCI reads all ones."""
    code = f"""\
    mov dx, 0xcf9
    mov al, 0x06
    out dx, al
    mov al, 0x0e
    out dx, al
    mov dx, 0x92
    mov al, 0x01
    out dx, al
    mov al, 0xfe
    out 0x64, al
    xor eax, eax
    out 0x21, al
    out 0xa1, al
    mov dx, {PCI_ADDRESS:#x}
    mov eax, 0x80000000
    out dx, eax
    mov dx, {PCI_DATA:#x}
    in eax, dx
    cmp eax, 0xffffffff
"""
    tail, data = fail_unless("PCI configuration space answered", "je")
    return code + tail, data


def string_io(prefix: bytes) -> tuple[str, str]:
    """REP OUTSB to its own UART prints the buffer and leaves RCX = 0 and RSI past it;
    REP INSB from a port it does not own stores all ones and leaves RDI past the buffer."""
    line = prefix + b" string_io: rep outsb reached the console\n"
    values = ", ".join(str(b) for b in line)
    parts = [
        check("rep outsb", f"""\
    mov esi, string_io_line
    mov ecx, {len(line)}
    mov dx, {COM1:#x}
    cld
    rep outsb
    mov r8, rcx
    mov r9, rsi
"""),
    ]
    ok_rcx = fail_unless("rep outsb left RCX nonzero", "je")
    ok_rsi = fail_unless("rep outsb left RSI short of the end", "je")
    parts.append((f"    cmp r8, 0\n{ok_rcx[0]}    mov eax, string_io_line + {len(line)}\n"
                  f"    cmp r9, rax\n{ok_rsi[0]}", ok_rcx[1] + ok_rsi[1]))
    parts.append(check("rep insb", """\
    mov edi, string_io_buffer
    mov dword ptr [rdi], 0
    mov ecx, 4
    mov dx, 0x80
    cld
    rep insb
    mov r8, rdi
"""))
    ok_rdi = fail_unless("rep insb left RDI short of the end", "je")
    ok_ones = fail_unless("rep insb stored other than all ones", "je")
    parts.append(("    mov eax, string_io_buffer + 4\n    cmp r8, rax\n" + ok_rdi[0]
                  + "    mov esi, string_io_buffer\n    cmp dword ptr [rsi], 0xffffffff\n" + ok_ones[0],
                  ok_rdi[1] + ok_ones[1]))
    code, data = _join(parts)
    return code, data + f"string_io_line:\n    .byte {values}\n    .balign 4\nstring_io_buffer:\n    .long 0\n"
