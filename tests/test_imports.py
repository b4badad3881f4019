"""The toolchain's import graph runs one way: leaf helpers, then generators, then the pipeline, then the orchestrators."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("toolchain", "boot", "arch", "guests")

# Helpers that import nothing of ours but each other: assembling, constants,
# layout arithmetic, table encodings, host I/O.
LEAVES = {
    "acpi_tables", "apt", "asm_offsets", "bitmaps", "cpuid", "emulator", "fb_font", "hwcheck", "iso", "keystone_asm",
    "layout", "micropython", "msrs", "nested_paging", "placement", "progress", "schema", "serial_line",
    "tables_region", "terminal", "vmcb", "vmcs",
}
GENERATORS = ("boot", "arch", "guests")
# Config validates, layout places, images parse, user modules compile, tables encode.
PIPELINE = ("config", "partition_layout", "guest_image", "linux_boot", "user_modules", "ptable")
# Everything else in toolchain/ (build, cli, verify, ctl, bench...) is an orchestrator.
RANKS = {"leaf": 0, "generator": 1, **{name: 2 + i for i, name in enumerate(PIPELINE)},
         "orchestrator": 2 + len(PIPELINE)}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _layer(module: str) -> str:
    top, _, rest = module.partition(".")
    if top in GENERATORS:
        return "generator"
    if rest in LEAVES:
        return "leaf"
    return rest if rest in PIPELINE else "orchestrator"


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that `path` imports, wherever in the file (lazy imports count too)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        targets.update(name for name in names if name in modules)
    return targets


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_import_points_down_or_sideways() -> None:
    upward = [f"{source} ({_layer(source)}) imports {target} ({_layer(target)})"
              for source, targets in sorted(graph().items()) for target in sorted(targets)
              if RANKS[_layer(target)] > RANKS[_layer(source)]]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checker_sees_what_it_checks() -> None:
    edges = graph()
    # The arrows this test exists for, so a resolver that found nothing would fail here.
    assert "toolchain.partition_layout" in edges["toolchain.ptable"]
    assert "toolchain.layout" in edges["boot.multiboot"]
    assert "boot.multiboot" in edges["toolchain.config"]
    assert _layer("toolchain.build") == "orchestrator" and _layer("guests.hello") == "generator"
