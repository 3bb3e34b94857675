"""The live path stays lean: importing m1lib starts nothing and never pulls in Prefect."""

from __future__ import annotations

import json
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
    "m1lib.process_cache",
    "m1lib.tool_calls",
    "m1lib.alerts",
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


def _m1lib_modules_after(statement: str) -> list[str]:
    code = f"{statement}; import json, sys; print(json.dumps(sorted(m for m in sys.modules if m.startswith('m1lib'))))"
    names: list[str] = json.loads(_run(code))
    return names


def test_the_leaves_import_nothing_of_m1lib_above_them() -> None:
    """The vocabulary of decisions and the error tree sit at the bottom: any layer may name them."""
    assert _m1lib_modules_after("import m1lib.vocabulary") == ["m1lib", "m1lib.vocabulary"]
    assert _m1lib_modules_after("import m1lib.errors") == [
        "m1lib",
        "m1lib.errors",
        "m1lib.vocabulary",
    ]


def test_reading_the_signing_secret_pulls_in_no_database_layer() -> None:
    """Tokens read the secret (m1lib.signing); only bootstrap, which creates it, needs the database."""
    for module in ("m1lib.signing", "m1lib.tokens"):
        loaded = _m1lib_modules_after(f"import {module}")
        assert not [m for m in loaded if m.startswith(("m1lib.db", "m1lib.bootstrap"))], module
        out = _run(f"import {module}, sys; print('sqlalchemy' in sys.modules)")
        assert out == "False", module


def test_only_the_api_builds_a_replica() -> None:
    """The library's own engine (m1lib.verify and friends) never loads the API's runtime."""
    loaded = _m1lib_modules_after("import m1lib.process_engine, m1lib.policy, m1lib.cli")
    assert not [m for m in loaded if m.startswith("m1lib.api")]
