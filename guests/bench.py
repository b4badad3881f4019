"""The `bench` guest: one multiboot kernel that times a CPUID, compute or APIC timer interrupt loop with RDTSC, under Taipan or bare."""

from __future__ import annotations

import struct

from boot.multiboot import MB1_MAGIC, MB2_ARCH_I386, MB2_MAGIC
from guests.common import (
    DEBUG_EXIT_PORT,
    ELF32_LOAD_ADDR,
    HC_TSC_KHZ,
    INTEL_EBX,
    GuestImage,
    asciz,
    check_memory,
    elf32_kernel,
    halt_forever,
    name_bytes,
    uart_routines,
)
from toolchain.keystone_asm import assemble

# The same ELF runs as a Taipan partition and directly under QEMU (-kernel,
# multiboot1) or Bochs (GRUB's `multiboot2` from toolchain/iso.py), so the bare
# run is the baseline of the very same instructions. Hence both headers.
LOAD_ADDR = ELF32_LOAD_ADDR
MB1_FLAGS = 0               # no page-aligned modules, no memory info: the kernel reads neither
MB1_BYTES = 12
MB2_AT = 16                 # the multiboot2 header must be 8-byte aligned
MB2_BYTES = 24              # magic, arch, length, checksum, end tag
CODE_AT = MB2_AT + MB2_BYTES
IMAGE_SPAN = 0x10000        # code and strings, then a zeroed stack (the segment's bss)
STACK_BYTES = 0x2000

MODES = ("cpuid", "compute", "timer")
COUNT_MAX = 0xFFFFFFFF      # the loop counter is one 32-bit register
DEFAULT_COUNT = {
    "cpuid": 100_000,
    # About 2 s of a register-only loop under QEMU TCG on these machines
    # (scripts/bench prints what it really took).
    "compute": 2_000_000_000,
    "timer": 20_000,
}

# The timer loop: the xAPIC at its RESET address, one-shot on vector 0x40 with
# a count of 1 (divide by 1), so the interrupt is due as soon as it is armed.
APIC = 0xFEE00000
APIC_EOI, APIC_SVR, APIC_LVT_TIMER, APIC_TIMER_INITIAL, APIC_TIMER_DIVIDE = 0xB0, 0xF0, 0x320, 0x380, 0x3E0
TIMER_VECTOR = 0x40

# "TaipanTaipan" in EBX, ECX, EDX of CPUID leaf 0x40000000 (docs/hypercalls.md).
HV_LEAF = 0x40000000
TAIPAN_EBX = int.from_bytes(b"Taip", "little")
TAIPAN_ECX = int.from_bytes(b"anTa", "little")
TAIPAN_EDX = int.from_bytes(b"ipan", "little")

# The PIT calibration arch/x86_64/common/tsc.c does at boot, redone here for
# the bare run: channel 2, gated through port 0x61, counts 10 ms in mode 0.
PIT_HZ = 1193182
PIT_CH2, PIT_CMD, PORT_B = 0x42, 0x43, 0x61
CALIBRATE_MS = 10
PIT_SPINS = 0x4000000       # give up (rate 0, "unknown") if OUT2 never rises



def _timer_setup() -> str:
    """An IDT with one 32-bit interrupt gate (vector 0x40) in the zeroed span below the stack, and the APIC enabled."""
    idt = LOAD_ADDR + IMAGE_SPAN - STACK_BYTES - 8 * (TIMER_VECTOR + 1) - 8
    gate = idt + 8 * TIMER_VECTOR
    return f"""    mov eax, bench_timer_irq
    mov word ptr [{gate:#x}], ax
    shr eax, 16
    mov word ptr [{gate + 6:#x}], ax
    mov ax, cs
    mov word ptr [{gate + 2:#x}], ax
    mov word ptr [{gate + 4:#x}], 0x8e00
    mov word ptr [{idt - 6:#x}], {8 * (TIMER_VECTOR + 1) - 1}
    mov dword ptr [{idt - 4:#x}], {idt:#x}
    lidt [{idt - 6:#x}]
    # Bare, the 8259s would deliver the BIOS's PIT ticks through vectors this IDT has not: masked.
    cmp edi, bench_via_pit
    jne .Lbench_timer_pic_done
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
.Lbench_timer_pic_done:
    mov dword ptr [{APIC + APIC_SVR:#x}], 0x1ff
    mov dword ptr [{APIC + APIC_TIMER_DIVIDE:#x}], 0xb
    mov dword ptr [{APIC + APIC_LVT_TIMER:#x}], {TIMER_VECTOR:#x}
"""


def _loop(mode: str) -> str:
    if mode == "timer":
        # Arm, wait in HLT (STI's shadow covers it), and the handler counts
        # down ESI and sends the EOI: one interrupt delivered per iteration.
        return f""".Lbench_loop:
    mov dword ptr [{APIC + APIC_TIMER_INITIAL:#x}], 1
    sti
    hlt
    cli
    test esi, esi
    jnz .Lbench_loop
"""
    if mode == "cpuid":
        # Leaf 0 passes through Taipan to the host CPU: the exit's cost, not
        # the leaf's, is what the loop measures.
        body = "    xor eax, eax\n    xor ecx, ecx\n    cpuid\n"
    else:
        # Registers only, as the spin guest: no exit but the slice timer's.
        body = "    add eax, ecx\n    xor ecx, eax\n"
    setup = "" if mode == "cpuid" else "    xor eax, eax\n    mov ecx, 1\n"
    return f"""{setup}.Lbench_loop:
{body}    dec esi
    jnz .Lbench_loop
"""


def _source(mode: str, count: int) -> str:
    stack_top = LOAD_ADDR + IMAGE_SPAN
    pit_count = PIT_HZ * CALIBRATE_MS // 1000
    prefix = f"bench {mode} count={count} cycles=".encode()
    return f"""\
bench_start:
    cli
    cld
    mov esp, {stack_top:#x}
    # The TSC rate turns cycles into seconds. Under Taipan the PIT is not the
    # guest's (policy denies its ports), so ask the hypervisor's measurement.
    mov eax, {HV_LEAF:#x}
    xor ecx, ecx
    cpuid
    cmp ebx, {TAIPAN_EBX:#x}
    jne .Lbench_pit
    cmp ecx, {TAIPAN_ECX:#x}
    jne .Lbench_pit
    cmp edx, {TAIPAN_EDX:#x}
    jne .Lbench_pit
    call taipan_tsc_khz
    mov edi, bench_via_hypercall
    jmp .Lbench_rate_known
.Lbench_pit:
    call pit_tsc_khz
    mov edi, bench_via_pit
.Lbench_rate_known:
    push eax
    push edi
{_timer_setup() if mode == "timer" else ""}    rdtsc
    push edx
    push eax
    mov esi, {count}
{_loop(mode)}    rdtsc
    sub eax, dword ptr [esp]
    sbb edx, dword ptr [esp + 4]
    add esp, 8
    mov esi, bench_prefix
    call uart_puts
    call uart_put_dec64
    mov esi, bench_khz
    call uart_puts
    pop edi
    pop eax
    call uart_put_dec
    mov esi, bench_tsc
    call uart_puts
    mov esi, edi
    call uart_puts
    mov al, 10
    call uart_putc
    xor eax, eax
    out {DEBUG_EXIT_PORT:#x}, al
{halt_forever("bench_halt")}
bench_timer_irq:
    dec esi
    mov dword ptr [{APIC + APIC_EOI:#x}], 0
    iretd
taipan_tsc_khz:
    # Hypercall 3 (tsc_khz); VMCALL is Intel's, VMMCALL AMD's (CPUID leaf 0).
    push ebx
    push ecx
    push edx
    xor eax, eax
    cpuid
    mov eax, {HC_TSC_KHZ}
    cmp ebx, {INTEL_EBX:#x}
    jne .Ltaipan_tsc_khz_amd
    vmcall
    jmp .Ltaipan_tsc_khz_done
.Ltaipan_tsc_khz_amd:
    vmmcall
.Ltaipan_tsc_khz_done:
    pop edx
    pop ecx
    pop ebx
    ret
pit_tsc_khz:
    # EAX = TSC ticks per millisecond across {CALIBRATE_MS} ms of PIT channel 2, or 0.
    push ebx
    push ecx
    push edx
    push edi
    in al, {PORT_B:#x}
    and al, 0xfd
    or al, 1
    out {PORT_B:#x}, al
    mov al, 0xb0
    out {PIT_CMD:#x}, al
    mov al, {pit_count & 0xFF}
    out {PIT_CH2:#x}, al
    mov al, {pit_count >> 8}
    out {PIT_CH2:#x}, al
    rdtsc
    mov edi, eax
    mov ebx, edx
    mov ecx, {PIT_SPINS:#x}
.Lpit_tsc_khz_wait:
    in al, {PORT_B:#x}
    test al, 0x20
    jnz .Lpit_tsc_khz_done
    dec ecx
    jnz .Lpit_tsc_khz_wait
    xor eax, eax
    jmp .Lpit_tsc_khz_out
.Lpit_tsc_khz_done:
    rdtsc
    sub eax, edi
    sbb edx, ebx
    mov ecx, {CALIBRATE_MS}
    div ecx
.Lpit_tsc_khz_out:
    pop edi
    pop edx
    pop ecx
    pop ebx
    ret
uart_put_dec64:
    # EDX:EAX in decimal. Two 32-bit divisions per digit: the high word's
    # remainder becomes the top of the low word's dividend, so DIV never overflows.
    push eax
    push ebx
    push ecx
    push edx
    push esi
    push edi
    mov ecx, 10
    xor edi, edi
.Luart_put_dec64_split:
    mov ebx, eax
    mov eax, edx
    xor edx, edx
    div ecx
    mov esi, eax
    mov eax, ebx
    div ecx
    push edx
    inc edi
    mov edx, esi
    mov ebx, eax
    or ebx, edx
    jnz .Luart_put_dec64_split
.Luart_put_dec64_emit:
    pop eax
    add al, 0x30
    call uart_putc
    dec edi
    jnz .Luart_put_dec64_emit
    pop edi
    pop esi
    pop edx
    pop ecx
    pop ebx
    pop eax
    ret
{uart_routines(32)}
{asciz("bench_prefix", prefix)}
{asciz("bench_khz", b" tsc_khz=")}
{asciz("bench_tsc", b" tsc=")}
{asciz("bench_via_hypercall", b"hypercall")}
{asciz("bench_via_pit", b"pit")}
"""


def _headers() -> bytes:
    mb1 = struct.pack("<3I", MB1_MAGIC, MB1_FLAGS, -(MB1_MAGIC + MB1_FLAGS) & 0xFFFFFFFF)
    # Multiboot2 with only the end tag: GRUB loads the ELF32 by its program
    # header and enters it at e_entry.
    mb2 = struct.pack("<4I", MB2_MAGIC, MB2_ARCH_I386, MB2_BYTES,
                      -(MB2_MAGIC + MB2_ARCH_I386 + MB2_BYTES) & 0xFFFFFFFF)
    mb2 += struct.pack("<HHI", 0, 0, 8)
    assert len(mb2) == MB2_BYTES
    return mb1.ljust(MB2_AT, b"\0") + mb2


def check_params(mode: str, count: int | None) -> int:
    """The loop length for `mode` (its default if `count` is None); ValueError for bad values."""
    if mode not in MODES:
        raise ValueError(f"bench: mode must be one of {', '.join(MODES)}, not {mode!r}")
    if count is None:
        return DEFAULT_COUNT[mode]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= COUNT_MAX:
        raise ValueError(f"bench: count must be an integer from 1 to {COUNT_MAX}, not {count!r}")
    return count


def kernel_bytes(*, mode: str = "cpuid", count: int | None = None) -> bytes:
    """The bench kernel as ELF32 bytes; it prints
    `bench <mode> count=<n> cycles=<tsc delta> tsc_khz=<rate> tsc=hypercall|pit` and writes 0 to port 0xf4."""
    count = check_params(mode, count)
    entry = LOAD_ADDR + CODE_AT
    payload = _headers() + assemble(_source(mode, count), mode=32, base=entry)
    if len(payload) > IMAGE_SPAN - STACK_BYTES:
        raise ValueError(f"bench: {len(payload)} bytes of image leave no room for its stack")
    return elf32_kernel(payload, entry=entry, memsz=IMAGE_SPAN)


def build(*, name: str, memory: int, mode: str = "cpuid", count: int | None = None) -> GuestImage:
    """The bench kernel as a multiboot partition guest (the same bytes the bare runs boot)."""
    name_bytes(name)
    check_memory(memory, name=name, image_bytes=IMAGE_SPAN)
    return GuestImage(data=kernel_bytes(mode=mode, count=count), kind="multiboot")

