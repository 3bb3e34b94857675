"""The live path stays lean: importing m1lib starts nothing and never pulls in Prefect."""

from __future__ import annotations

import subprocess
import sys

LIVE_MODULES = [
    "m1lib",
    "m1lib.settings",
    "m1lib.metrics",
    "m1lib.tokens",
    "m1lib.policy",
    "m1lib.revocation",
    "m1lib.cache",
    "m1lib.control",
    "m1lib.api.replica",
    "m1lib.process_engine",
    "m1lib.signing",
    "m1lib.vocabulary",
    "m1lib.api.app",
    "m1lib.db.session",
    "m1lib.db.migrate",
    "m1lib.bootstrap",
]


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def test_m1lib_never_imports_prefect() -> None:
    imports = "; ".join(f"import {name}" for name in LIVE_MODULES)
    out = _run(
        f"{imports}; import sys; print(sorted(m for m in sys.modules if m.startswith('prefect')))"
    )
    assert out == "[]"


def test_importing_m1lib_starts_no_thread_and_opens_no_connection() -> None:
    imports = "; ".join(f"import {name}" for name in LIVE_MODULES)
    out = _run(f"{imports}; import threading; print(threading.active_count())")
    assert out == "1"
