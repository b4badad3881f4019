"""The boot stub as a whole: lays out, assembles and describes the boot text and boot data regions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from arch.x86_64.svm import entry as svm_entry
from arch.x86_64.vmx import entry as vmx_entry
from boot import ap, entry, gdt, multiboot, paging
from toolchain import layout
from toolchain.keystone_asm import AsmJob, assemble_many

GENERATOR = "boot/stub.py"
_MAX_LAYOUT_PASSES = 8
_TEXT_FILL = b"\xcc"  # int3: a stray jump into padding traps instead of sliding


class StubLayoutError(Exception):
    """The stub does not fit its regions or its layout does not settle."""


@dataclass(frozen=True)
class _Chunk:
    """One separately assembled piece of boot text; sources see every chunk's address."""

    name: str
    mode: int
    align: int
    source: Callable[[Mapping[str, int]], str]
    exact_size: int | None = None


@dataclass
class BootStub:
    text: bytes  # placed at BOOT_TEXT
    data: bytes  # placed at BOOT_DATA
    symbols: dict[str, int]  # absolute addresses
    asm: str  # the whole boot text source, for build/gen/boot.s
    chunks: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (address, mode)

    @property
    def mb1_header_text_offset(self) -> int:
        """Where the multiboot1 header sits inside `text`: add the text segment's file offset."""
        return self.symbols["mb1_header"] - layout.BOOT_TEXT

    @property
    def mb1_load_end_text_offset(self) -> int:
        return self.mb1_header_text_offset + multiboot.MB1_LOAD_END_OFFSET

    @property
    def mb1_bss_end_text_offset(self) -> int:
        return self.mb1_header_text_offset + multiboot.MB1_BSS_END_OFFSET


def _fields_source(label: str, fields: list[multiboot.Field]) -> str:
    directive = {2: ".short", 4: ".long", 8: ".quad"}
    lines = [f"{label}:"]
    lines += [f"    {directive[width]} {value:#x}    # {name}" for name, width, value in fields]
    return "\n".join(lines) + "\n"


def _chunks(offsets: Mapping[str, int]) -> list[_Chunk]:
    stubs_bytes = layout.EXCEPTION_VECTORS * entry.ISR_STUB_BYTES
    return [
        _Chunk("mb1_header", 32, multiboot.MB1_ALIGN, lambda a: _fields_source(
            "mb1_header", multiboot.mb1_fields(header_addr=a["mb1_header"],
                                               entry_addr=a["entry32"])),
               multiboot.MB1_HEADER_BYTES),
        _Chunk("mb2_header", 32, multiboot.MB2_ALIGN, lambda a: _fields_source(
            "mb2_header", multiboot.mb2_fields(entry_addr=a["entry32"]))),
        _Chunk("entry32", 32, 16, lambda a: entry.entry32_source(long_entry=a["long_entry"])),
        _Chunk("long_entry", 64, 16, lambda a: entry.long_entry_source(offsets)),
        _Chunk("isr_stubs", 64, 16, lambda a: entry.isr_stubs_source(
            exception_common=a["exception_common"]), stubs_bytes),
        _Chunk("exception_common", 64, 16, lambda a: entry.exception_common_source(offsets)),
        _Chunk("irq_common", 64, 16, lambda a: entry.irq_common_source(offsets)),
        *(_Chunk(f"irq_stub_{name}", 64, 16, functools.partial(_irq_stub, name))
          for name in entry.IRQ_VECTORS),
        _Chunk("irq_spurious", 64, 16, lambda a: entry.irq_spurious_source()),
        _Chunk("ctx_switch", 64, 16, lambda a: entry.ctx_switch_source()),
        _Chunk("isr_table", 64, 8, lambda a: entry.isr_table_source(isr_stubs=a["isr_stubs"]),
               layout.EXCEPTION_VECTORS * 8),
    ] + [
        # Each backend's VM entry and exit stubs: 64-bit code whose chunk names
        # become BOOT_SYM_<NAME> addresses for its C side.
        _Chunk(name, 64, 16, functools.partial(_backend_source, source, offsets))
        for name, source in (*vmx_entry.CHUNKS, *svm_entry.CHUNKS)
    ]


def _irq_stub(name: str, addresses: Mapping[str, int]) -> str:
    return entry.irq_stub_source(name, irq_common=addresses["irq_common"])


def _backend_source(source: Callable[[Mapping[str, int], Mapping[str, int]], str],
                    offsets: Mapping[str, int], addresses: Mapping[str, int]) -> str:
    return source(offsets, addresses)


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def _place(chunks: list[_Chunk], sizes: Mapping[str, int]) -> dict[str, int]:
    addresses: dict[str, int] = {}
    at = layout.BOOT_TEXT
    for chunk in chunks:
        at = _align(at, chunk.align)
        addresses[chunk.name] = at
        at += sizes.get(chunk.name, 0)
    return addresses


def _boot_data() -> tuple[bytes, dict[str, int]]:
    pieces = {
        layout.BOOT_PML4: paging.identity_tables(layout.BOOT_PML4, layout.BOOT_PDPT,
                                                 layout.BOOT_PD, layout.IDENTITY_MAP_BYTES),
        layout.BOOT_GDT: gdt.gdt_bytes(layout.BOOT_TSS),
        gdt.GDTR_ADDRESS: gdt.gdtr_bytes(layout.BOOT_GDT),
        layout.BOOT_TSS: gdt.tss_bytes(),
        layout.BOOT_AP_IMAGE: ap.trampoline(gdt.gdtr_bytes(layout.BOOT_GDT)),
    }
    end = max(address + len(blob) for address, blob in pieces.items())
    if end - layout.BOOT_DATA > layout.BOOT_DATA_MAX:
        raise StubLayoutError(f"boot data needs {end - layout.BOOT_DATA:#x} bytes, "
                              f"the region holds {layout.BOOT_DATA_MAX:#x}")
    data = bytearray(end - layout.BOOT_DATA)
    taken = 0
    for address, blob in sorted(pieces.items()):
        offset = address - layout.BOOT_DATA
        if offset < taken:
            raise StubLayoutError(f"boot data at {address:#x} overlaps its predecessor")
        data[offset:offset + len(blob)] = blob
        taken = offset + len(blob)
    symbols = {"boot_pml4": layout.BOOT_PML4, "boot_pdpt": layout.BOOT_PDPT,
               "boot_pd": layout.BOOT_PD, "boot_gdt": layout.BOOT_GDT,
               "boot_gdtr": gdt.GDTR_ADDRESS, "boot_tss": layout.BOOT_TSS,
               "ap_image": layout.BOOT_AP_IMAGE}
    return bytes(data), symbols


def _asm_text(chunks: list[_Chunk], addresses: Mapping[str, int], sources: Mapping[str, str],
              data_symbols: Mapping[str, int]) -> str:
    head = [
        f"# Generated by {GENERATOR} from Python; do not edit.",
        "# Intel syntax, assembled by keystone one chunk at a time at the address shown",
        "# (keystone has no mode switch), so references across chunks are absolute numbers.",
        f"# Boot data at {layout.BOOT_DATA:#x} is emitted as bytes by boot/paging.py and boot/gdt.py:",
    ]
    head += [f"#   {name:<10} {address:#x}" for name, address in data_symbols.items()]
    body = []
    for chunk in chunks:
        body.append(f"\n# ---- {chunk.name}: {chunk.mode}-bit, at {addresses[chunk.name]:#x} ----")
        body.append(sources[chunk.name].rstrip("\n"))
    return "\n".join(head + body) + "\n"


def generate(offsets: Mapping[str, int]) -> BootStub:
    """Build the boot stub from the C structure offsets read by toolchain/asm_offsets.py."""
    entry.check_frame_layout(offsets)
    chunks = _chunks(offsets)
    sizes: dict[str, int] = {}
    addresses = _place(chunks, sizes)
    # Sizes depend on jump distances, which depend on addresses: assemble
    # until the layout stops moving.
    for _ in range(_MAX_LAYOUT_PASSES):
        sources = {c.name: c.source(addresses) for c in chunks}
        blobs = assemble_many([AsmJob(sources[c.name], c.mode, addresses[c.name], c.name)
                               for c in chunks])
        sizes = {c.name: len(b) for c, b in zip(chunks, blobs, strict=True)}
        settled = _place(chunks, sizes)
        if settled == addresses:
            break
        addresses = settled
    else:
        raise StubLayoutError(f"boot text layout did not settle in {_MAX_LAYOUT_PASSES} passes")

    for chunk, blob in zip(chunks, blobs, strict=True):
        if chunk.exact_size is not None and len(blob) != chunk.exact_size:
            raise StubLayoutError(f"{chunk.name} assembled to {len(blob)} bytes, "
                                  f"expected {chunk.exact_size}")
    end = addresses[chunks[-1].name] + sizes[chunks[-1].name]
    if end - layout.BOOT_TEXT > layout.BOOT_TEXT_MAX:
        raise StubLayoutError(f"boot text needs {end - layout.BOOT_TEXT:#x} bytes, "
                              f"the region holds {layout.BOOT_TEXT_MAX:#x}")
    text = bytearray(_TEXT_FILL * (end - layout.BOOT_TEXT))
    for chunk, blob in zip(chunks, blobs, strict=True):
        offset = addresses[chunk.name] - layout.BOOT_TEXT
        text[offset:offset + len(blob)] = blob

    data, data_symbols = _boot_data()
    symbols = dict(addresses)
    for vector in range(layout.EXCEPTION_VECTORS):
        symbols[f"isr_stub_{vector}"] = addresses["isr_stubs"] + vector * entry.ISR_STUB_BYTES
    symbols.update(data_symbols)
    return BootStub(text=bytes(text), data=data, symbols=symbols,
                    asm=_asm_text(chunks, addresses, sources, data_symbols),
                    chunks={c.name: (addresses[c.name], c.mode) for c in chunks})


def c_header(stub: BootStub) -> str:
    """build/gen/boot_symbols.h: the stub's addresses for C (the IDT needs isr_table)."""
    lines = [f"/* Generated by {GENERATOR}; do not edit. */", "#pragma once", ""]
    lines += [f"#define BOOT_SYM_{name.upper()} {address:#x}ULL"
              for name, address in sorted(stub.symbols.items(), key=lambda kv: kv[1])]
    lines += ["", f"#define BOOT_ISR_STUB_BYTES {entry.ISR_STUB_BYTES}",
              f"#define BOOT_ISR_COUNT {layout.EXCEPTION_VECTORS}",
              f"#define BOOT_AP_IMAGE_BYTES {ap.TRAMPOLINE_BYTES}",
              f"#define BOOT_AP_ARGS_OFFSET {ap.ARGS_OFFSET}"]
    return "\n".join(lines) + "\n"
