"""M1 as a user installs it: a wheel built from this checkout, installed into a fresh venv.

Nothing is downloaded. The wheel is built without build isolation from a copy of the sources (the
checkout gets no build/ or egg-info), installed with ``--no-deps``, and the venv sees its
dependencies through a ``.pth`` line naming this (test) venv's site-packages. A path named in a
``.pth`` file is added to ``sys.path`` without its own ``.pth`` files being run, so the editable
install of the checkout stays inert there, and the venv's own site-packages, with the wheel's
packages, comes first.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from m1lib.settings import PROJECT_ROOT

PACKAGES = ("m1lib", "flows", "tasks", "deployments")


@dataclass(frozen=True)
class InstalledM1:
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def m1(self) -> Path:
        return self.venv / "bin" / "m1"

    @property
    def site_packages(self) -> Path:
        found = sorted(self.venv.glob("lib/python*/site-packages"))
        assert len(found) == 1, found
        return found[0]


def _dependencies() -> Path:
    """The site-packages that holds M1's dependencies for these tests (Prefect's)."""
    found = importlib.util.find_spec("prefect")
    assert found is not None
    assert found.origin is not None
    return Path(found.origin).parent.parent


def _run(argv: list[str | Path], cwd: Path) -> None:
    done = subprocess.run(
        [str(part) for part in argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def build_wheel(workdir: Path) -> Path:
    source = workdir / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT_ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package,
            source / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    dist = workdir / "dist"
    _run(
        [
            sys.executable,
            *("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"),
            *("--wheel-dir", dist, source),
        ],
        cwd=workdir,
    )
    (wheel,) = dist.glob("m1-*.whl")
    return wheel


def install_in_fresh_venv(wheel: Path, venv: Path) -> InstalledM1:
    _run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv], venv.parent
    )
    installed = InstalledM1(venv)
    _run(
        [
            sys.executable,
            *("-m", "pip", "--python", installed.python, "install"),
            *("--no-deps", "--no-index", "--no-compile", wheel),
        ],
        cwd=venv.parent,
    )
    (installed.site_packages / "m1_test_dependencies.pth").write_text(f"{_dependencies()}\n")
    return installed
