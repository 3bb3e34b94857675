"""Publish the latest full benchmark results as the README's table.

Reads ``bench/results/<name>.json`` (never ``-smoke`` files: smoke sizes only prove a benchmark
still runs) and rewrites what lies between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in
README.md. Without those markers (or without a README) it prints the table and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
_OPS = {"<=": "≤", ">=": "≥"}
YES_NO = "yes/no"  # the unit of a figure that is a verdict: 1 for yes, 0 for no


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """The full-size result of each benchmark, by name; unreadable files are reported and skipped."""
    results = []
    for path in sorted(results_dir.glob("*.json")):
        if path.stem.endswith("-smoke"):
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            print(f"skipping {path}: {error}", file=sys.stderr)
            continue
        if isinstance(document, dict) and not document.get("smoke", False):
            results.append(document)
    return results


def _number(value: float) -> str:
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _yes(value: float) -> str:
    return "yes" if value else "no"


def _machine(document: dict[str, Any]) -> str:
    machine = document.get("machine") or {}
    parts = [str(machine.get("cpu") or "unknown CPU")]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("memory_bytes"):
        parts.append(f"{machine['memory_bytes'] / 2**30:.0f} GiB")
    if machine.get("python"):
        parts.append(f"Python {machine['python']}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: list[dict[str, Any]]) -> str:
    """The Markdown table, then one line per benchmark saying which commit and when."""
    if not results:
        return "_No full benchmark results yet: run `make bench`._"
    lines = [
        "| benchmark | figure | value | target | met? | machine |",
        "|---|---|---|---|---|---|",
    ]
    for document in results:
        machine = _machine(document)
        for figure in document.get("figures", []):
            unit = figure.get("unit", "")
            if unit == YES_NO:  # a verdict, 1 or 0: shown as a word, its target as "yes"
                cells = [document["benchmark"], figure["name"], _yes(figure["value"]), "yes"]
                met = "yes" if figure.get("meets_target") else "**no**"
                lines.append("| " + " | ".join([*cells, met, machine]) + " |")
                continue
            value = f"{_number(figure['value'])} {unit}".strip()
            if "reference" in figure:
                label = figure.get("reference_label") or "reference"
                value += f" ({label}: {_number(figure['reference'])} {unit})".replace(" )", ")")
            target, met = "", ""
            if "target" in figure:
                op = _OPS.get(figure.get("target_op", "<="), figure.get("target_op", ""))
                target = f"{op} {_number(figure['target'])} {unit}".strip()
                met = "yes" if figure.get("meets_target") else "**no**"
            cells = [document["benchmark"], figure["name"], value, target, met, machine]
            lines.append("| " + " | ".join(_cell(str(cell)) for cell in cells) + " |")
    lines.append("")
    for document in results:
        commit = document.get("commit") or "unknown commit"
        lines.append(
            f"`{document['benchmark']}`: commit {commit}, {document.get('timestamp', '')}."
        )
    return "\n".join(lines)


def rewrite(readme: str, table: str, markers: tuple[str, str] = (START, END)) -> str | None:
    """README text with the section replaced; None when the markers are missing or out of order."""
    opening, closing = markers
    start = readme.find(opening)
    end = readme.find(closing, start + len(opening)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return readme[: start + len(opening)] + "\n" + table + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    options = parser.parse_args(argv)
    table = render(load_results(options.results_dir))
    text = options.readme.read_text(encoding="utf-8") if options.readme.is_file() else ""
    updated = rewrite(text, table)
    if updated is None:
        print(f"{options.readme}: no {START} ... {END} section; the table:\n")
        print(table)
        return 0
    if updated != text:
        options.readme.write_text(updated, encoding="utf-8")
        print(f"updated the benchmark table in {options.readme}")
    else:
        print(f"{options.readme}: benchmark table already current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
