"""The dashboard's vendored chart library is the pinned uPlot, file for file (offline check)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "vendor_uplot", ROOT / "scripts" / "vendor_uplot.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vendored_files_are_the_pinned_ones_with_their_licence() -> None:
    script = _script()
    assert script.check() == []
    assert "MIT License" in (script.TARGET / "LICENSE").read_text(encoding="utf-8")
    assert script.VERSION in (script.TARGET / "VERSION").read_text(encoding="utf-8")


def test_an_edited_or_missing_file_is_named(tmp_path: Path) -> None:
    script = _script()
    copy = tmp_path / "uplot"
    shutil.copytree(script.TARGET, copy)
    with (copy / "uPlot.iife.min.js").open("a", encoding="utf-8") as handle:
        handle.write("/* edited */")
    (copy / "uPlot.min.css").unlink()
    problems = script.check(copy)
    assert len(problems) == 2
    assert (
        "uPlot.iife.min.js differs from uplot" in problems[0] or "uPlot.iife.min.js" in problems[0]
    )
    assert any("uPlot.min.css is missing" in problem for problem in problems)
    assert script.main(["--check"]) == 0  # the package's own copy is untouched


def test_the_integrity_is_computed_as_the_registry_writes_it() -> None:
    script = _script()
    # SRI form of sha512(b"") — the registry's `dist.integrity` format
    assert script._sri_sha512(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )
