"""docs/python-api.md is rendered from the code: hv/py's docstrings and the native hv module's comments."""
from __future__ import annotations

from pathlib import Path

from toolchain import python_api

ROOT = Path(__file__).resolve().parent.parent


def test_docs_python_api_md_is_current() -> None:
    current = (ROOT / "docs" / "python-api.md").read_text()
    assert current == python_api.markdown(), (
        "docs/python-api.md is stale: run `python -m toolchain.python_api > docs/python-api.md`")


def test_every_native_function_is_documented_and_classed_once() -> None:
    names = python_api.native_names()
    docs = python_api.native_docs()
    assert len(names) > 30 and {"part_info", "plan_set", "load_module", "run_guarded"} <= set(names)
    assert [n for n in names if n not in docs] == []
    assert sorted(python_api.VIEWS + python_api.ACTIONS) == sorted(names)
    assert not set(python_api.VIEWS) & set(python_api.ACTIONS)


def test_every_callback_a_policy_may_define_is_in_the_reference() -> None:
    text = python_api.markdown()
    for callback in ("on_io", "on_mmio", "on_msr", "on_cpuid", "on_fault", "on_start", "on_stop"):
        assert f"`{callback}(name" in text
    assert set(python_api.callbacks().values()) == {"on_io", "on_msr", "on_cpuid", "on_mmio"}
