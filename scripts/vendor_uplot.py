#!/usr/bin/env python3
"""Vendor uPlot (the dashboard's charts) into the package, pinned and hash-checked.

The dashboard works offline and behind strict networks, so its chart code ships inside `m1lib`
rather than coming from a CDN. This script is the only way those files change:

    python scripts/vendor_uplot.py           # fetch the pinned tarball, check it, write the files
    python scripts/vendor_uplot.py --check   # offline: the files on disk are the pinned ones

The tarball is checked against the registry's SRI integrity (sha512) pinned below before anything
is extracted; each vendored file is then checked against its own pinned sha256, so an edit by hand
is caught by `--check` (which the test suite runs).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "1.6.32"
TARBALL = f"https://registry.npmjs.org/uplot/-/uplot-{VERSION}.tgz"
INTEGRITY = "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
# tarball member -> vendored name; their sha256 once written (from the tarball checked above)
FILES = {
    "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "LICENSE",
}
SHA256 = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}
TARGET = Path(__file__).resolve().parent.parent / "m1lib" / "api" / "static" / "vendor" / "uplot"


def _sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(target: Path = TARGET) -> dict[str, str]:
    """Download, check, extract; returns the sha256 of each file written."""
    with urllib.request.urlopen(TARBALL, timeout=60) as response:
        data = response.read()
    if _sri_sha512(data) != INTEGRITY:
        raise SystemExit(
            f"uplot-{VERSION}.tgz does not match its pinned integrity; nothing written"
        )
    target.mkdir(parents=True, exist_ok=True)
    written = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, name in FILES.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise SystemExit(f"{member} is missing from uplot-{VERSION}.tgz")
            content = extracted.read()
            (target / name).write_bytes(content)
            written[name] = hashlib.sha256(content).hexdigest()
    (target / "VERSION").write_text(f"uplot {VERSION} {TARBALL}\n", encoding="utf-8")
    return written


def check(target: Path = TARGET) -> list[str]:
    """What differs from the pins (empty when the vendored files are the pinned ones)."""
    problems = []
    for name, expected in SHA256.items():
        path = target / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            problems.append(f"{path} differs from uplot {VERSION} (sha256 {expected})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="offline: verify the vendored files")
    options = parser.parse_args(argv)
    if options.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for name, digest in fetch().items():
        print(f"{name} {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
